/**
 * RoPE parameters from config.json and the inverse frequencies they give, following transformers'
 * `modeling_rope_utils.py` ("default", "linear" and "llama3"). Models with local and global layers (Gemma 3)
 * carry one set per layer type.
 */
import { type Fail, isObject, type Json, positiveNumber } from "./config_fields.ts";

/** Llama 3.1 style frequency-dependent RoPE scaling (`rope_type: "llama3"`). */
export interface Llama3RopeScaling {
  readonly type: "llama3";
  readonly factor: number;
  readonly lowFreqFactor: number;
  readonly highFreqFactor: number;
  readonly originalMaxPositionEmbeddings: number;
}

/** Position interpolation (`rope_type: "linear"`, Gemma 3's global layers): every frequency ÷ factor. */
export interface LinearRopeScaling {
  readonly type: "linear";
  readonly factor: number;
}

/** A RoPE scaling rule; null for plain RoPE ("default"). */
export type RopeScaling = Llama3RopeScaling | LinearRopeScaling;

/** One RoPE: its base and scaling. */
export interface RopeParams {
  readonly theta: number;
  readonly scaling: RopeScaling | null;
}

/**
 * The global RoPE and, for models whose sliding layers use their own (Gemma 3), the local one.
 * transformers 5 writes `rope_parameters: { rope_type, rope_theta, ... }`, or one such object per layer type
 * (`full_attention`, `sliding_attention`); older versions a top-level `rope_theta` plus `rope_scaling:
 * { rope_type | type, ... }` (null for plain RoPE) and Gemma 3's `rope_local_base_freq`.
 * @param raw the (text) config
 * @param defaultTheta the base when none is given
 * @param fail the caller's error
 * @returns global, and local or null
 */
export function parseRopes(
  raw: Json,
  defaultTheta: number,
  fail: Fail,
): { global: RopeParams; local: RopeParams | null } {
  const rp = raw.rope_parameters;
  if (isObject(rp) && (isObject(rp.full_attention) || isObject(rp.sliding_attention))) {
    const one = (type: string) =>
      isObject(rp[type])
        ? parseRope(rp[type] as Json, `rope_parameters.${type}`, raw.rope_theta ?? defaultTheta, fail)
        : null;
    return {
      global: one("full_attention") ?? parseRope(null, "", defaultTheta, fail),
      local: one("sliding_attention"),
    };
  }
  const params = rp ?? raw.rope_scaling ?? null;
  const key = rp != null ? "rope_parameters" : "rope_scaling";
  if (params !== null && !isObject(params)) fail(`${key} is not an object`);
  const theta = raw.rope_theta ?? (params as Json | null)?.rope_theta ?? defaultTheta;
  const global = parseRope(params as Json | null, key, theta, fail);
  const localBase = raw.rope_local_base_freq;
  const local = localBase == null
    ? null
    : { theta: positiveNumber(localBase, "rope_local_base_freq", fail), scaling: null };
  return { global, local };
}

function parseRope(params: Json | null, key: string, thetaIn: unknown, fail: Fail): RopeParams {
  const theta = positiveNumber(params?.rope_theta ?? thetaIn, "rope_theta", fail);
  const type = params?.rope_type ?? params?.type ?? "default";
  const num = (k: string) => positiveNumber(params![k], `${key}.${k}`, fail);
  if (type === "default") return { theta, scaling: null };
  if (type === "linear") return { theta, scaling: Object.freeze({ type: "linear", factor: num("factor") }) };
  if (type !== "llama3") {
    fail(`unsupported ${key}.rope_type ${JSON.stringify(type)} (expected "default", "linear" or "llama3")`);
  }
  const scaling: Llama3RopeScaling = Object.freeze({
    type: "llama3",
    factor: num("factor"),
    lowFreqFactor: num("low_freq_factor"),
    highFreqFactor: num("high_freq_factor"),
    originalMaxPositionEmbeddings: num("original_max_position_embeddings"),
  });
  if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
    fail(`${key}.high_freq_factor must exceed low_freq_factor`);
  }
  return { theta, scaling };
}

/**
 * RoPE inverse frequencies, computed step by step in f32 as transformers does:
 * `1 / (theta ** (arange(0, headDim, 2) / headDim))`, then the scaling rule (`_compute_linear_scaling_rope_
 * parameters` divides by factor; `_compute_llama3_parameters` as below).
 * Every step here is correctly rounded to f32; torch's CPU `pow` (SLEEF, ≤ 1 ulp) and numpy's differ from that
 * by one ulp on some entries (13 of 64 for headDim 128, theta 5e5), so bit equality with torch is not promised.
 *
 * @param config headDim, the base and the scaling
 * @returns inverse frequencies, length headDim / 2
 */
export function ropeInvFreq(
  config: { headDim: number; ropeTheta: number; ropeScaling: RopeScaling | null },
): Float32Array {
  const f = Math.fround;
  const { headDim, ropeTheta, ropeScaling: s } = config;
  const inv = new Float32Array(headDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = f(1 / f(f(ropeTheta) ** f((2 * i) / headDim)));
  if (!s) return inv;
  if (s.type === "linear") return inv.map((v) => f(v / f(s.factor)));
  // Python scalars meet f32 tensors, so each is rounded to f32 before the f32 op.
  const oldLen = f(s.originalMaxPositionEmbeddings);
  const lowWavelen = f(s.originalMaxPositionEmbeddings / s.lowFreqFactor);
  const highWavelen = f(s.originalMaxPositionEmbeddings / s.highFreqFactor);
  const span = f(s.highFreqFactor - s.lowFreqFactor);
  const factor = f(s.factor);
  for (let i = 0; i < inv.length; i++) {
    const wavelen = f(f(2 * Math.PI) / inv[i]);
    // Long wavelengths (low frequencies) are divided by factor, short ones kept, the middle band blended.
    const scaled = wavelen > lowWavelen ? f(inv[i] / factor) : inv[i];
    if (wavelen < highWavelen || wavelen > lowWavelen) {
      inv[i] = scaled;
      continue;
    }
    const smooth = f(f(f(oldLen / wavelen) - f(s.lowFreqFactor)) / span);
    inv[i] = f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
  }
  return inv;
}
