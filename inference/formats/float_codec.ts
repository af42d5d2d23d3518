/**
 * Conversions between the checkpoint dtypes and f32: BF16 and F16 widen exactly to f32; f32 narrows with
 * round-to-nearest-even, as PyTorch does.
 */
import type { Dtype } from "./safetensors.ts";

/**
 * Decodes F32, F16 or BF16 little-endian bytes into a fresh Float32Array (hosts are little-endian).
 *
 * @param bytes the raw tensor bytes, as `readTensor` returns them
 * @param dtype their element type
 * @returns the values as f32; BF16 and F16 widen exactly
 */
export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
    throw new Error(`Cannot convert ${dtype} to f32: not a float dtype`);
  }
  const size = dtype === "F32" ? 4 : 2;
  if (bytes.byteLength % size !== 0) {
    throw new Error(`Cannot convert ${dtype} bytes to f32: length ${bytes.byteLength}`);
  }
  const out = new Float32Array(bytes.byteLength / size);
  if (dtype === "F32") {
    new Uint8Array(out.buffer).set(bytes); // a byte copy works at any alignment
    return out;
  }
  const halves = bytes.byteOffset % 2 === 0
    ? new Uint16Array(bytes.buffer, bytes.byteOffset, out.length)
    : new Uint16Array(bytes.slice().buffer);
  const bits = new Uint32Array(out.buffer);
  if (dtype === "BF16") {
    // BF16 is the top half of an f32.
    for (let i = 0; i < out.length; i++) bits[i] = halves[i] << 16;
  } else {
    const table = f16Table();
    for (let i = 0; i < out.length; i++) bits[i] = table[halves[i]];
  }
  return out;
}

/**
 * Encodes f32 values as F32, F16 or BF16 little-endian bytes, rounding to nearest, ties to even (as PyTorch's
 * `.to(torch.bfloat16)` does).
 *
 * @param values the values
 * @param dtype the target float type
 * @returns a fresh byte array ready for `writeSafetensors`
 */
export function fromFloat32(values: Float32Array, dtype: "F32" | "F16" | "BF16"): Uint8Array {
  if (dtype === "F32") return new Uint8Array(values.slice().buffer);
  // The engine's Float16Array conversion is IEEE roundTiesToEven, overflow to ±inf included.
  if (dtype === "F16") return new Uint8Array(new Float16Array(values).buffer);
  const bits = new Uint32Array(values.slice().buffer);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < out.length; i++) {
    const u = bits[i];
    // NaN keeps its sign and stays quiet; others add 0x7fff plus the kept LSB so that ties go to even.
    out[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(out.buffer);
}

/**
 * Maps an IEEE binary16 bit pattern to the bit pattern of the equal f32, subnormals, ±inf and NaN payloads
 * included.
 *
 * @param h a 16-bit pattern
 * @returns the f32 bit pattern as an unsigned 32-bit integer
 */
export function halfBitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  let exp = (h >> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp === 0) {
    if (mant === 0) return sign >>> 0;
    // Subnormal: shift until the leading 1 reaches the implicit bit, lowering the exponent each step.
    exp = 1;
    while ((mant & 0x400) === 0) {
      mant <<= 1;
      exp--;
    }
    mant &= 0x3ff;
  }
  // Rebias the exponent from 15 to 127.
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
}

let f16Bits: Uint32Array | null = null;

/** 256 KiB table of all 65536 conversions, built on first use (not at import). */
function f16Table(): Uint32Array {
  if (!f16Bits) {
    f16Bits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Bits[h] = halfBitsToF32Bits(h);
  }
  return f16Bits;
}
