/**
 * A row-major f32 matrix in one storage buffer or, past one binding, in two (issue 12; docs/webgpu.md §2):
 * one binding holds at most ~2 GiB while a buffer holds ~4 GiB, so Llama-3-70B's 28,672-column Hessian
 * (3.29 GB) fits no single binding. Rows [0, rowsPerPart) live in parts[0], rows [rowsPerPart, rows) in
 * parts[1]; each part is a separate buffer, so no binding offset has to meet the 256-byte alignment.
 *
 * Kernels that bind such a matrix have two builds of one WGSL source: the unsplit build reads `M[i]` exactly
 * as before, and the split build reads through `ld_M(i)` (and writes through `st_M(i, v)`), which pick the
 * part by comparing the GLOBAL element index with the override `M_SPLIT` = rowsPerPart·cols. Indices stay
 * u32: two parts hold at most 32,768² elements < 2^32.
 */
import { createStorage, readF32, writeBuffer } from "./buffers.ts";
import type { Gpu } from "./gpu.ts";

/** A row-major f32 matrix in one buffer, or in two row ranges when it exceeds one binding. */
export interface MatrixParts {
  /** One buffer, or two: rows [0, rowsPerPart) and [rowsPerPart, rows). */
  readonly parts: readonly GPUBuffer[];
  readonly rows: number;
  readonly cols: number;
  /** Rows in parts[0] (= rows when there is one part). */
  readonly rowsPerPart: number;
}

/** What a kernel accepts for a large matrix: a plain buffer (one binding) or {@link MatrixParts}. */
export type MatrixBuffer = GPUBuffer | MatrixParts;

/** Rows per part for a (rows, cols) f32 matrix under `maxBindingBytes` (rows when it fits one binding). */
export function rowsPerPartFor(gpu: Pick<Gpu, "maxBindingBytes">, rows: number, cols: number): number {
  const fit = Math.floor(gpu.maxBindingBytes / (cols * 4));
  if (rows <= fit) return rows;
  // A multiple of 128 keeps GPTQ's 128-column blocks inside one part (gptq_block/gptq_update stay unsplit).
  let first = fit >= 128 ? fit - (fit % 128) : fit - (fit % 4);
  if (rows - first > fit) first = fit; // the alignment must not cost the split
  if (first < 1 || rows - first > fit) {
    throw new Error(
      `Cannot allocate a ${rows}×${cols} f32 matrix: it needs more than two bindings of ` +
        `${gpu.maxBindingBytes} bytes; two hold at most ${Math.floor(Math.sqrt(gpu.maxBindingBytes / 2))} ` +
        `columns of a square matrix (enough for Llama-3-70B's 28,672)`,
    );
  }
  return first;
}

/**
 * Allocates a zero (rows, cols) f32 matrix in one buffer, or two when it exceeds one binding.
 * @param gpu the device (its maxBindingBytes decides the split)
 * @param rows rows
 * @param cols columns (row length)
 * @param label debug label; parts get " [0]" and " [1]"
 */
export function createMatrixParts(gpu: Gpu, rows: number, cols: number, label: string): MatrixParts {
  const rowsPerPart = rowsPerPartFor(gpu, rows, cols);
  if (rowsPerPart === rows) {
    return { parts: [createStorage(gpu, rows * cols * 4, label)], rows, cols, rowsPerPart };
  }
  const first = createStorage(gpu, rowsPerPart * cols * 4, `${label} [0]`);
  const second = createStorage(gpu, (rows - rowsPerPart) * cols * 4, `${label} [1]`);
  return { parts: [first, second], rows, cols, rowsPerPart };
}

/** Wraps a plain buffer as one part; passes {@link MatrixParts} through. */
export function asParts(m: MatrixBuffer, rows: number, cols: number): MatrixParts {
  return m instanceof GPUBuffer ? { parts: [m], rows, cols, rowsPerPart: rows } : m;
}

/** True when the matrix spans two buffers (the kernels' split build). */
export function isSplit(m: MatrixBuffer): m is MatrixParts & { parts: [GPUBuffer, GPUBuffer] } {
  return !(m instanceof GPUBuffer) && m.parts.length > 1;
}

/** The split build's `M_SPLIT`: global element index of parts[1]'s first element (2^32 − 1 when unsplit). */
export function splitElement(m: MatrixBuffer): number {
  return isSplit(m) ? m.rowsPerPart * m.cols : 0xffffffff;
}

/**
 * The buffer holding elements [first, last] of `m` (global indices) whole, with `first` rebased into it, or
 * null when the range crosses the split. Kernels bind such a range with their unsplit build.
 */
export function partHolding(
  m: MatrixBuffer,
  first: number,
  last: number,
): { buffer: GPUBuffer; first: number } | null {
  if (!isSplit(m)) return { buffer: m instanceof GPUBuffer ? m : m.parts[0], first };
  const split = splitElement(m);
  if (last < split) return { buffer: m.parts[0], first };
  if (first >= split) return { buffer: m.parts[1], first: first - split };
  return null;
}

/** Bytes the matrix holds in all its parts. */
export function matrixBytes(m: MatrixBuffer): number {
  return m instanceof GPUBuffer ? m.size : m.parts.reduce((s, b) => s + b.size, 0);
}

/** Frees every part. */
export function destroyMatrix(m: MatrixBuffer): void {
  if (m instanceof GPUBuffer) m.destroy();
  else for (const part of m.parts) part.destroy();
}

/** The buffers a kernel binds for `m`: [whole] unsplit, [part 0, part 1] split. */
export function matrixBindings(m: MatrixBuffer): GPUBuffer[] {
  return m instanceof GPUBuffer ? [m] : [...m.parts];
}

/**
 * Uploads a host (rows, cols) f32 matrix, split like {@link createMatrixParts}.
 * @returns the matrix on the GPU
 */
export function uploadMatrix(
  gpu: Gpu,
  data: Float32Array,
  rows: number,
  cols: number,
  label: string,
): MatrixParts {
  const m = createMatrixParts(gpu, rows, cols, label);
  const first = m.rowsPerPart * cols;
  writeBuffer(gpu, m.parts[0], data.subarray(0, first));
  if (m.parts.length > 1) writeBuffer(gpu, m.parts[1], data.subarray(first, rows * cols));
  return m;
}

/**
 * Reads the first `count` elements (default all) back to the host, across parts (one round trip per part).
 * @returns a fresh Float32Array
 */
export async function readMatrix(gpu: Gpu, m: MatrixParts, count = m.rows * m.cols): Promise<Float32Array> {
  const out = new Float32Array(count);
  const first = Math.min(count, m.rowsPerPart * m.cols);
  out.set(await readF32(gpu, m.parts[0], first));
  if (count > first) out.set(await readF32(gpu, m.parts[1], count - first), first);
  return out;
}

/** How a kernel's WGSL reads and writes one matrix binding. */
export interface MatrixAccess {
  /**
   * WGSL to PREPEND to the module: nothing unsplit; the second binding, `M_SPLIT` and the accessors split.
   * First, because naga 29 panics (handlevec.rs) on an initializer-less override declared after an
   * override-sized workgroup array.
   */
  readonly wgsl: string;
  /** Expression reading element `i` (a u32 WGSL expression, the global index). */
  ld(i: string): string;
  /** Statement (without `;`) writing `v` to element `i`. */
  st(i: string, v: string): string;
}

/**
 * The WGSL access to matrix `name`, declared by the kernel at its usual binding (part 0 when split).
 * @param name the WGSL variable (`array<f32>`), declared by the kernel
 * @param split null for the unsplit build (text unchanged: `name[i]`); else the binding of part 1 and its access
 * @returns the snippet to append and the load/store spellings
 */
export function matrixAccess(
  name: string,
  split: { binding: number; access: "read" | "read_write" } | null,
): MatrixAccess {
  if (!split) return { wgsl: "", ld: (i) => `${name}[${i}]`, st: (i, v) => `${name}[${i}] = ${v}` };
  const store = split.access === "read_write"
    ? `
fn st_${name}(i: u32, v: f32) {
  if (i < ${name}_SPLIT) { ${name}[i] = v; } else { ${name}_1[i - ${name}_SPLIT] = v; }
}`
    : "";
  return {
    wgsl: /* wgsl */ `
// ${name} in two buffers: elements [0, ${name}_SPLIT) in ${name}, the rest in ${name}_1 (kernels/core/matrix_parts.ts).
override ${name}_SPLIT: u32;
@group(0) @binding(${split.binding}) var<storage, ${split.access}> ${name}_1: array<f32>;
fn ld_${name}(i: u32) -> f32 {
  if (i < ${name}_SPLIT) { return ${name}[i]; }
  return ${name}_1[i - ${name}_SPLIT];
}${store}
`,
    ld: (i) => `ld_${name}(${i})`,
    st: (i, v) => `st_${name}(${i}, ${v})`,
  };
}
