/**
 * Files and host arrays: safetensors (single and sharded), float codecs, and the packed-code layouts of
 * quantized folders. No GPU, no model types.
 */
export { openSafetensorsModel, type SafetensorsModel } from "./checkpoint.ts";
export { fromFloat32, halfBitsToF32Bits, toFloat32 } from "./float_codec.ts";
export {
  packedWords,
  packQweight,
  packRowCodes,
  packZeros,
  unpackQweight,
  unpackRowCodes,
  unpackZeros,
} from "./quant_pack.ts";
export { type Dtype, type TensorToWrite, writeSafetensors } from "./safetensors.ts";
export {
  type Manifest,
  MANIFEST_FILE,
  readManifest,
  sha256File,
  verifyManifest,
  writeManifest,
} from "./manifest.ts";
