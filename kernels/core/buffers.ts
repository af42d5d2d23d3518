/**
 * Storage, uniform and readback helpers.
 *
 * Alignment rules (WebGPU): buffer sizes and writeBuffer sizes must be multiples of 4 bytes; binding
 * offsets must be multiples of `minStorageBufferOffsetAlignment` (256 on every adapter we target).
 * Uploads use queue.writeBuffer, never mappedAtCreation (a live mapped buffer hangs destroy in Deno,
 * denoland/deno#24798). Readbacks cost at least 10 ms in Deno (docs/webgpu.md §3): read in batches.
 */
import type { Gpu } from "./gpu.ts";

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

/** Rounds a byte size up to a multiple of 4 (and at least 4). */
export function align4(bytes: number): number {
  return Math.max(4, Math.ceil(bytes / 4) * 4);
}

/**
 * Creates a zero-filled storage buffer.
 * @param gpu the device
 * @param bytes size in bytes (rounded up to 4)
 * @param label debug label shown in validation errors
 */
export function createStorage(gpu: Gpu, bytes: number, label: string): GPUBuffer {
  const size = align4(bytes);
  if (size > gpu.maxBufferBytes) {
    throw new Error(
      `Cannot allocate buffer "${label}": ${size} bytes exceeds the adapter's maxBufferSize ${gpu.maxBufferBytes}`,
    );
  }
  return gpu.device.createBuffer({ label, size, usage: STORAGE });
}

const SHARED_SCRATCH = new WeakMap<GPUDevice, Map<string, GPUBuffer>>();

/**
 * A storage buffer of at least `bytes` shared by every caller that asks for `name` on this device: scratch
 * that a kernel writes and then reads within its own dispatches (one queue runs dispatches in order, so its
 * users never overlap), instead of one buffer per bound kernel. Sizes round up to a power of two of at
 * least 1 MiB; a larger request replaces the buffer, and the replaced one stays with the binds that hold it
 * until they are garbage-collected (destroying it would break them).
 */
export function sharedScratch(gpu: Gpu, name: string, bytes: number): GPUBuffer {
  let byName = SHARED_SCRATCH.get(gpu.device);
  if (!byName) SHARED_SCRATCH.set(gpu.device, byName = new Map());
  const have = byName.get(name);
  if (have && have.size >= bytes) return have;
  const size = Math.max(2 ** 20, 2 ** Math.ceil(Math.log2(Math.max(bytes, 1))));
  const buffer = createStorage(gpu, Math.min(size, Math.max(bytes, gpu.maxBindingBytes)), name);
  byName.set(name, buffer);
  return buffer;
}

/** Creates a storage buffer holding `data`. */
export function uploadStorage(gpu: Gpu, data: ArrayBufferView, label: string): GPUBuffer {
  const buffer = createStorage(gpu, data.byteLength, label);
  writeBuffer(gpu, buffer, data);
  return buffer;
}

/** Writes `data` at `byteOffset`, padding the tail to 4 bytes as writeBuffer requires. */
export function writeBuffer(gpu: Gpu, buffer: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
  const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength % 4 === 0) {
    gpu.device.queue.writeBuffer(buffer, byteOffset, bytes);
  } else {
    const padded = new Uint8Array(align4(bytes.byteLength));
    padded.set(bytes);
    gpu.device.queue.writeBuffer(buffer, byteOffset, padded);
  }
}

/** Creates a uniform buffer of `bytes` (for a kernel's `struct Params`). */
export function createUniform(gpu: Gpu, bytes: number, label: string): GPUBuffer {
  return gpu.device.createBuffer({
    label,
    size: Math.ceil(Math.max(bytes, 16) / 16) * 16,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
}

/**
 * Packs a params struct of u32/i32/f32 scalars in WGSL field order into a uniform buffer.
 * Every field is 4 bytes, so offsets are field index × 4 (keep structs free of vec3 padding).
 */
export function uniformParams(
  gpu: Gpu,
  fields: readonly ParamField[],
  label: string,
): GPUBuffer {
  const buffer = createUniform(gpu, fields.length * 4, label);
  writeParams(gpu, buffer, fields);
  return buffer;
}

/** A scalar for a params struct: `["u32", 7]`, `["f32", 1e-5]`, `["i32", -1]`. */
export type ParamField = readonly ["u32" | "i32" | "f32", number];

/** Rewrites a params buffer made by {@link uniformParams}. */
export function writeParams(gpu: Gpu, buffer: GPUBuffer, fields: readonly ParamField[]): void {
  const data = new ArrayBuffer(Math.ceil(Math.max(fields.length * 4, 16) / 16) * 16);
  const view = new DataView(data);
  fields.forEach(([type, value], i) => {
    if (type === "u32") view.setUint32(i * 4, value, true);
    else if (type === "i32") view.setInt32(i * 4, value, true);
    else view.setFloat32(i * 4, value, true);
  });
  gpu.device.queue.writeBuffer(buffer, 0, data);
}

/**
 * Copies `bytes` from `buffer` to the host. Costs one GPU round trip (≥ 10 ms in Deno).
 * @returns a fresh ArrayBuffer
 */
export async function readBuffer(
  gpu: Gpu,
  buffer: GPUBuffer,
  bytes = buffer.size,
  offset = 0,
): Promise<ArrayBuffer> {
  const size = align4(bytes);
  const staging = gpu.device.createBuffer({
    label: `readback ${buffer.label}`,
    size,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    const encoder = gpu.device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, offset, staging, 0, size);
    gpu.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const copy = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    return copy;
  } finally {
    staging.destroy();
  }
}

/** Reads `count` f32 values. */
export async function readF32(gpu: Gpu, buffer: GPUBuffer, count: number, offset = 0): Promise<Float32Array> {
  return new Float32Array(await readBuffer(gpu, buffer, count * 4, offset));
}

/** Reads `count` u32 values. */
export async function readU32(gpu: Gpu, buffer: GPUBuffer, count: number, offset = 0): Promise<Uint32Array> {
  return new Uint32Array(await readBuffer(gpu, buffer, count * 4, offset));
}

/** Records `fn` into one compute pass and submits it. For tests and one-off work. */
export function runPass(gpu: Gpu, fn: (pass: GPUComputePassEncoder) => void): void {
  const encoder = gpu.device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  fn(pass);
  pass.end();
  gpu.device.queue.submit([encoder.finish()]);
}

/** f32 → IEEE half bits (round to nearest even), for f16 storage without shader-f16 on the host. */
export function f32ToF16Bits(value: number): number {
  F32[0] = value;
  const x = U32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half++;
  e = half >>> 10;
  return sign | half;
}

/** IEEE half bits → f32 value. */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
