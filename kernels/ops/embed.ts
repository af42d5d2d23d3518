/**
 * Token embedding gather: out[t, :] = table[ids[t], :] · scale (scale 1 but for Gemma's √hidden, rounded to
 * f32 on the host as Hugging Face casts it to the compute dtype; one f32 multiply, as PyTorch's).
 *
 * The table is stored either as f32 or as IEEE halves packed two per u32 (element 2j in the low
 * half, 2j+1 in the high half, as safetensors' little-endian f16 bytes already are). The f16 path
 * decodes with `unpack2x16float`, so it needs no `shader-f16` feature and halves the table's memory.
 * An id at or past `vocabSize` yields a row of zeros instead of reading past the table.
 */
import {
  bindBuffers,
  ceilDiv,
  dispatch2d,
  type Encodable,
  getPipeline,
  type Gpu,
  type Kernel,
  singleDispatch,
  uniformParams,
} from "../core/mod.ts";

/** One invocation per output element (f32) or per output pair (f16). */
function wgsl(variant: Variant): string {
  return /* wgsl */ `
override WG: u32 = 256u;

// units: elements per row for f32, pairs per row for f16
struct Params { rows: u32, unitsPerRow: u32, vocabSize: u32, scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<${variant.table}>; // (vocabSize, dim)
@group(0) @binding(2) var<storage, read> ids: array<u32>;                // (rows)
@group(0) @binding(3) var<storage, read_write> out: array<${variant.unit}>; // (rows, dim) f32

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.rows * params.unitsPerRow) { return; }
  let row = i / params.unitsPerRow;
  let col = i % params.unitsPerRow;
  let id = ids[row];
  // Out-of-vocabulary ids give zeros rather than an out-of-bounds read.
  var value = ${variant.unit}(0.0);
  if (id < params.vocabSize) {
    value = ${variant.load};
  }
  out[i] = value * params.scale;
}
`;
}

/** What differs between the storage types: the table's element, the output unit and the decode. */
interface Variant {
  table: string;
  unit: string;
  load: string;
}

const VARIANTS: Record<EmbedSpec["weightType"], Variant> = {
  f32: { table: "f32", unit: "f32", load: "table[id * params.unitsPerRow + col]" },
  f16: { table: "u32", unit: "vec2<f32>", load: "unpack2x16float(table[id * params.unitsPerRow + col])" },
};

/** How the embedding table is stored. */
export interface EmbedSpec {
  /** "f32": one f32 per element; "f16": two halves packed per u32 (dim must be even). */
  weightType: "f32" | "f16";
}

export interface EmbedArgs {
  /** table: (vocabSize, dim), f32, or f16 pairs packed in u32 ((vocabSize, dim/2) u32) */
  table: GPUBuffer;
  /** ids: (rows) u32 token ids; ids ≥ vocabSize produce zero rows */
  ids: GPUBuffer;
  /** out: (rows, dim) f32 */
  out: GPUBuffer;
  rows: number;
  dim: number;
  /** every value is multiplied by this (default 1) */
  scale?: number;
}

/** The WGSL source for one storage type. */
export function embedShader(spec: EmbedSpec): string {
  return wgsl(VARIANTS[spec.weightType]);
}

/**
 * Builds the embedding gather.
 * @param gpu the device
 * @param spec table storage type (default f32)
 * @returns a kernel whose `bind` fixes the table, ids, output and sizes
 */
export function createEmbed(gpu: Gpu, spec: EmbedSpec = { weightType: "f32" }): Kernel<EmbedArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const packed = spec.weightType === "f16";
  const pipeline = getPipeline(gpu, {
    name: "embed",
    code: embedShader(spec),
    constants: { WG: wg },
    bindings: ["uniform", "read-only-storage", "read-only-storage", "storage"],
    spec,
  });
  return {
    bind({ table, ids, out, rows, dim, scale = 1 }: EmbedArgs): Encodable {
      if (packed && dim % 2 !== 0) {
        throw new Error(`Cannot embed from an f16 table: dim ${dim} is odd (halves are packed in pairs)`);
      }
      const unitsPerRow = packed ? dim / 2 : dim;
      const vocabSize = Math.floor(table.size / (unitsPerRow * 4));
      const params = uniformParams(
        gpu,
        [["u32", rows], ["u32", unitsPerRow], ["u32", vocabSize], ["f32", scale]],
        "embed params",
      );
      const bindGroup = bindBuffers(gpu, pipeline, [params, table, ids, out]);
      const [gx, gy] = dispatch2d(gpu, ceilDiv(rows * unitsPerRow, wg));
      return singleDispatch(pipeline, bindGroup, [gx, gy]);
    },
  };
}
