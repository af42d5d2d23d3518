/** Golden tensors exported from PyTorch into ../shared (`{dtype, byteorder, shape, b64}`, little-endian f32). */
import {
  checkPipelines,
  createStorage,
  type Gpu,
  readF32,
  runPass,
  writeBuffer,
} from "../kernels/core/mod.ts";
import {
  bindForward,
  createForwardState,
  forwardStateBuffers,
  type GpuWeights,
  type ModelConfig,
} from "../inference/model/mod.ts";

/** A packed f32 tensor as the golden JSON files store it. */
export interface PackedTensor {
  shape: number[];
  b64: string;
}

/** Decodes a packed golden tensor. */
export function unpackTensor(p: PackedTensor): Float32Array {
  const bin = atob(p.b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

/**
 * Runs one plain forward over `ids` from position 0 and reads back every row's logits: the simplest path
 * from token ids to logits, for comparisons.
 * @returns logits (ids.length, vocabSize)
 */
export async function forwardLogits(
  gpu: Gpu,
  config: ModelConfig,
  weights: GpuWeights,
  ids: ArrayLike<number>,
): Promise<Float32Array> {
  const rows = ids.length;
  const s = createForwardState(gpu, config, { maxRows: rows, maxLogitRows: rows });
  const idBuf = createStorage(gpu, rows * 4, "ids");
  try {
    writeBuffer(gpu, idBuf, Uint32Array.from(ids));
    writeBuffer(gpu, s.state, new Uint32Array(4));
    const plan = bindForward(gpu, config, weights, s, { ids: idBuf, rows, logits: "all" });
    await checkPipelines(gpu);
    runPass(gpu, (pass) => plan.encode(pass));
    return await readF32(gpu, s.logits, rows * config.vocabSize);
  } finally {
    [idBuf, ...forwardStateBuffers(s)].forEach((b) => b.destroy());
  }
}
