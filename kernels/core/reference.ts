/**
 * Plain-TypeScript f64 references for every inference op. These are the spec the WGSL kernels are
 * tested against: simple loops, numerically safe, never optimised. Layouts are row-major and match
 * the kernels' bindings exactly.
 */

/**
 * RMSNorm (Llama): y = x / sqrt(mean(x²) + eps) · w.
 * @param x (rows, dim)
 * @param weight (dim)
 * @returns (rows, dim)
 */
export function rmsNormRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  rows: number,
  eps: number,
): Float64Array {
  const dim = weight.length;
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] * x[r * dim + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * inv * weight[i];
  }
  return out;
}

/**
 * y = x · Wᵀ (a Linear layer without bias), optionally added onto `acc` (residual epilogue).
 * @param x (rows, inDim)
 * @param w (outDim, inDim), as Hugging Face stores Linear weights
 * @param acc (rows, outDim) or undefined
 * @returns (rows, outDim)
 */
export function matmulRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  rows: number,
  inDim: number,
  outDim: number,
  acc?: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = acc ? acc[r * outDim + o] : 0;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i] * w[o * inDim + i];
      out[r * outDim + o] = s;
    }
  }
  return out;
}

/**
 * Rotary embedding in the Hugging Face rotate-half layout: for pair (i, i + headDim/2) of each head,
 * θ = pos · base^(−2i/headDim), and (a, b) → (a cos θ − b sin θ, b cos θ + a sin θ).
 * @param x (rows, nHeads · headDim), row t is at position pos0 + t
 * @returns the rotated copy
 */
export function ropeRef(
  x: ArrayLike<number>,
  rows: number,
  nHeads: number,
  headDim: number,
  pos0: number,
  theta: number,
): Float64Array {
  const out = Float64Array.from(x);
  const half = headDim / 2;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < nHeads; h++) {
      const base = t * nHeads * headDim + h * headDim;
      for (let i = 0; i < half; i++) {
        const freq = 1 / Math.pow(theta, (2 * i) / headDim);
        const angle = (pos0 + t) * freq;
        const a = x[base + i];
        const b = x[base + i + half];
        out[base + i] = a * Math.cos(angle) - b * Math.sin(angle);
        out[base + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
      }
    }
  }
  return out;
}

/**
 * Causal grouped-query attention over a KV cache.
 * Query row t (position P = pos0 + t) attends to cache positions 0..P, or with a sliding `window` W to
 * P − W + 1..P (Hugging Face's `kv_idx > q_idx − W`). Query head h reads KV head h / (nHeads / nKvHeads).
 * Scores are q·k · scale (default 1/sqrt(headDim)), then with `softcap` c squashed to c·tanh(s / c) (Gemma);
 * softmax subtracts the max.
 * @param q (rows, nHeads · headDim)
 * @param kCache (seqLen, nKvHeads · headDim), filled up to pos0 + rows
 * @param vCache (seqLen, nKvHeads · headDim)
 * @returns (rows, nHeads · headDim)
 */
export function attentionRef(
  q: ArrayLike<number>,
  kCache: ArrayLike<number>,
  vCache: ArrayLike<number>,
  { rows, nHeads, nKvHeads, headDim, pos0, window = 0, softcap = 0, scale = 1 / Math.sqrt(headDim) }: {
    rows: number;
    nHeads: number;
    nKvHeads: number;
    headDim: number;
    pos0: number;
    window?: number;
    softcap?: number;
    scale?: number;
  },
): Float64Array {
  const kvDim = nKvHeads * headDim;
  const group = nHeads / nKvHeads;
  const out = new Float64Array(rows * nHeads * headDim);
  for (let t = 0; t < rows; t++) {
    const len = pos0 + t + 1;
    const lo = window > 0 ? Math.max(0, len - window) : 0;
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / group);
      const scores = new Float64Array(len);
      let max = -Infinity;
      for (let p = lo; p < len; p++) {
        let s = 0;
        for (let i = 0; i < headDim; i++) {
          s += q[t * nHeads * headDim + h * headDim + i] * kCache[p * kvDim + kvh * headDim + i];
        }
        scores[p] = softcap > 0 ? softcap * Math.tanh((s * scale) / softcap) : s * scale;
        max = Math.max(max, scores[p]);
      }
      let sum = 0;
      for (let p = lo; p < len; p++) {
        scores[p] = Math.exp(scores[p] - max);
        sum += scores[p];
      }
      for (let i = 0; i < headDim; i++) {
        let acc = 0;
        for (let p = lo; p < len; p++) acc += scores[p] * vCache[p * kvDim + kvh * headDim + i];
        out[t * nHeads * headDim + h * headDim + i] = acc / sum;
      }
    }
  }
  return out;
}

/** Soft-capping (Gemma 2/3 logits): c · tanh(x / c), elementwise. */
export function softcapRef(x: ArrayLike<number>, cap: number): Float64Array {
  return Float64Array.from(x, (v) => cap * Math.tanh(v / cap));
}

/** GeGLU activation: gelu_tanh(gate) · up, gelu_tanh(x) = x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))). */
export function geluTanhMulRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const k = Math.sqrt(2 / Math.PI);
  return Float64Array.from(gate, (g, i) => 0.5 * g * (1 + Math.tanh(k * (g + 0.044715 * g ** 3))) * up[i]);
}

/** Bias add: y[r, c] + bias[c] for y (rows, bias.length). */
export function biasAddRef(y: ArrayLike<number>, bias: ArrayLike<number>): Float64Array {
  return Float64Array.from(y, (v, i) => v + bias[i % bias.length]);
}

/** SwiGLU activation: silu(gate) · up, with silu(x) = x / (1 + e^−x). */
export function siluMulRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
  return out;
}

/**
 * Embedding gather: row t of the output is row ids[t] of the table.
 * @param table (vocabSize, dim)
 * @returns (ids.length, dim)
 */
export function embedRef(table: ArrayLike<number>, ids: ArrayLike<number>, dim: number): Float64Array {
  const out = new Float64Array(ids.length * dim);
  for (let t = 0; t < ids.length; t++) {
    for (let i = 0; i < dim; i++) out[t * dim + i] = table[ids[t] * dim + i];
  }
  return out;
}

/** Numerically safe log-softmax of one row. */
export function logSoftmaxRef(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - lse;
  return out;
}

/**
 * The sampler's RNG: h = pcg(pcg(seed) + step), with pcg the PCG-RXS-M-XS output permutation (a
 * bijection of u32). kernels/ops/batch_sample.wgsl computes the identical integer hash in WGSL.
 * @returns h as a u32
 */
export function sampleHashRef(seed: number, step: number): number {
  return pcgRef((pcgRef(seed >>> 0) + (step >>> 0)) >>> 0);
}

/** uniform(seed, step) = (h >> 8) / 2^24 in [0, 1): exactly representable in f32 and f64. */
export function sampleUniformRef(seed: number, step: number): number {
  return (sampleHashRef(seed, step) >>> 8) / 16777216;
}

function pcgRef(v: number): number {
  const s = (Math.imul(v, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
}

/** Sampling settings as the sampler kernel reads them (see kernels/ops/batch_sample.ts `SlotSettings`). */
export interface SampleRefParams {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  seed: number;
}

/**
 * The sampler's kept weights: p_i = exp((l_i − max)/T) if token i passes top-k, top-p and min-p, else
 * 0; −inf logits are never kept. Top-k/top-p use the kernel's threshold search (see
 * {@link sampleThresholdRef}): token i passes iff l_i ≥ the threshold, so ties with the boundary
 * logit are all kept. Greedy (T = 0) gives a one-hot argmax (lowest index on ties).
 * @param logits (vocabSize) values, read as f32
 * @returns (vocabSize) unnormalised weights
 */
export function sampleWeightsRef(logits: ArrayLike<number>, params: SampleRefParams): Float64Array {
  const n = logits.length;
  const l = Float32Array.from(logits);
  let argmax = -1;
  for (let i = 0; i < n; i++) if (l[i] > -Infinity && (argmax < 0 || l[i] > l[argmax])) argmax = i;
  const w = new Float64Array(n);
  const { temperature: t, minP } = params;
  if (argmax < 0 || t <= 0) {
    w[Math.max(argmax, 0)] = 1;
    return w;
  }
  const mx = l[argmax];
  const p = Float64Array.from(l, (x) => Math.exp((x - mx) / t));
  const tMin = minP > 0 ? mx + t * Math.log(Math.min(minP, 1)) : -Infinity;
  const thr = Math.max(sampleThresholdRef(l, p, params), tMin);
  for (let i = 0; i < n; i++) if (l[i] >= thr) w[i] = p[i];
  return w;
}

/**
 * The top-k/top-p threshold, exactly as the kernel searches it: a 4-way bisection over f32 logit
 * values for the largest threshold lo that an enabled filter accepts (count(l ≥ lo) ≥ topK, or
 * mass(l ≥ lo) ≥ topP · Z, with count ≥ 1). The bracket [lo, hi) starts at [min, max] and the first
 * step tests max itself; each step tests mid(lo, c2), c2 = mid(lo, hi), mid(c2, hi) with
 * mid(a, b) = fl32(a/2 + b/2). It stops once ≤ 1 token lies in [lo, hi), when no candidate falls
 * strictly inside the bracket, or after 24 steps.
 * @param l (vocabSize) f32 logits
 * @param p (vocabSize) their weights exp((l − max)/T)
 * @returns lo (the smallest finite logit when both filters are off)
 */
export function sampleThresholdRef(l: Float32Array, p: Float64Array, params: SampleRefParams): number {
  const n = l.length;
  const { topK, topP } = params;
  const kOn = topK > 0 && topK < n;
  const pOn = topP < 1;
  let lo = Infinity;
  let hi = -Infinity;
  let z = 0;
  for (let i = 0; i < n; i++) {
    if (l[i] === -Infinity) continue;
    lo = Math.min(lo, l[i]);
    hi = Math.max(hi, l[i]);
    z += p[i];
  }
  const mid = (a: number, b: number) => Math.fround(a * 0.5 + b * 0.5);
  const passes = (t: number) => {
    let count = 0;
    let mass = 0;
    for (let i = 0; i < n; i++) {
      if (l[i] >= t) {
        count++;
        mass += p[i];
      }
    }
    return { count, ok: count > 0 && ((kOn && count >= topK) || (pOn && mass >= topP * z)) };
  };
  let hiFails = false;
  let cK = n;
  let cHi = 0;
  for (let step = 0; step < 24 && (kOn || pOn) && cK - cHi > 1 && lo < hi; step++) {
    const c2 = mid(lo, hi);
    const t: number[] = [mid(lo, c2), c2, hiFails ? mid(c2, hi) : hi];
    if (hiFails && !t.some((c) => c > lo && c < hi)) break;
    const r = t.map(passes);
    let j = 3;
    while (j > 0 && !r[j - 1].ok) j--;
    if (j > 0) [lo, cK] = [t[j - 1], r[j - 1].count];
    if (j < 3) [hi, cHi, hiFails] = [t[j], r[j].count, true];
  }
  return lo;
}

/**
 * The token the GPU sampler picks at `step`: the first index whose cumulative kept weight exceeds
 * uniform(seed, step) · Σ kept (see {@link sampleWeightsRef}). Math in f64.
 * @param logits (vocabSize) values, read as f32
 * @returns the token id
 */
export function sampleRef(logits: ArrayLike<number>, params: SampleRefParams, step: number): number {
  const w = sampleWeightsRef(logits, params);
  const u = sampleUniformRef(params.seed, step) * w.reduce((a, b) => a + b, 0);
  let cum = 0;
  let last = 0;
  for (let i = 0; i < w.length; i++) {
    if (w[i] === 0) continue;
    cum += w[i];
    last = i;
    if (cum > u) return i;
  }
  return last;
}

/**
 * Rotary embedding from precomputed inverse frequencies, rounding the angle the way Hugging Face
 * does: `freqs = inv_freq ⊗ position` is formed in f32, so θ = fl32(fl32(pos) · invFreq[i]); cos and
 * sin of that f32 angle are then taken in f64. Same rotate-half layout as {@link ropeRef}.
 * @param x (rows, nHeads · headDim), row t is at position pos0 + t
 * @param invFreq (headDim/2) f32 values (llama3 scaling etc. already applied by the host)
 * @returns the rotated copy
 */
export function ropeFreqRef(
  x: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  { rows, nHeads, headDim, pos0 }: { rows: number; nHeads: number; headDim: number; pos0: number },
): Float64Array {
  const out = Float64Array.from(x);
  const half = headDim / 2;
  for (let t = 0; t < rows; t++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(Math.fround(pos0 + t) * Math.fround(invFreq[i]));
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      for (let h = 0; h < nHeads; h++) {
        const base = (t * nHeads + h) * headDim;
        const a = x[base + i];
        const b = x[base + i + half];
        out[base + i] = a * cos - b * sin;
        out[base + i + half] = b * cos + a * sin;
      }
    }
  }
  return out;
}

/** An affine-quantized weight as the reference reads it, everything in original column order. */
export interface AffineRefWeight {
  outDim: number;
  inDim: number;
  /** (outDim, inDim) codes */
  codes: ArrayLike<number>;
  /** (outDim, nGroups) scale and zero-point: Q[o, c] = scale[o, g] · (codes[o, c] − zero[o, g]) */
  scale: ArrayLike<number>;
  zero: ArrayLike<number>;
  /** Columns per group (group of column c = floor(c / groupSize)); 0 means one group per row. */
  groupSize: number;
  /** (inDim) group of each column, overriding groupSize (act-order with non-static groups) */
  gIdx?: ArrayLike<number>;
}

/**
 * y = x · Qᵀ for an affine-quantized weight (the spec of kernels/matmul_affine.ts), optionally added
 * onto `acc` (residual epilogue).
 * @param x (rows, inDim)
 * @param w the quantized weight, dequantized on the fly in f64
 * @param options acc: (rows, outDim) or undefined
 * @returns (rows, outDim)
 */
export function matmulAffineRef(
  x: ArrayLike<number>,
  w: AffineRefWeight,
  { acc }: { acc?: ArrayLike<number> } = {},
): Float64Array {
  return matmulRef(x, dequantAffineRef(w), x.length / w.inDim, w.inDim, w.outDim, acc);
}

/** The dense (outDim, inDim) f64 matrix of an affine-quantized weight, in original column order. */
export function dequantAffineRef(w: AffineRefWeight): Float64Array {
  const { outDim, inDim, groupSize } = w;
  const nGroups = w.scale.length / outDim;
  const group = (c: number) => w.gIdx ? w.gIdx[c] : groupSize ? Math.floor(c / groupSize) : 0;
  const q = new Float64Array(outDim * inDim);
  for (let o = 0; o < outDim; o++) {
    for (let c = 0; c < inDim; c++) {
      const g = o * nGroups + group(c);
      q[o * inDim + c] = w.scale[g] * (w.codes[o * inDim + c] - w.zero[g]);
    }
  }
  return q;
}

/**
 * The activations the q8 GEMV actually multiplies (matmul_affine_q8_wgsl.ts): per row, each 32-column piece
 * of kernel columns (original column perm[j] for kernel column j) is scaled by d = max|x|/127 and rounded
 * half to even to int8, with the kernel's f32 arithmetic; returns d·q in the original column positions.
 * @param x (rows, inDim)
 * @param inDim columns
 * @param perm kernel order (original column of kernel column j), or undefined for the identity
 * @returns (rows, inDim) dequantized activations
 */
export function q8ActivationsRef(
  x: ArrayLike<number>,
  inDim: number,
  perm?: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(x.length);
  const f = Math.fround;
  for (let base = 0; base < x.length; base += inDim) {
    for (let p = 0; p < inDim; p += 32) {
      const cols = Array.from({ length: Math.min(32, inDim - p) }, (_, k) => perm ? perm[p + k] : p + k);
      const amax = Math.max(...cols.map((c) => Math.abs(x[base + c])));
      const d = f(amax / 127);
      const inv = amax > 0 ? f(127 / amax) : 0;
      for (const c of cols) {
        out[base + c] = d * roundHalfEven(f(x[base + c] * inv));
      }
    }
  }
  return out;
}

/** Rounds half to even, as WGSL round(). */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The tables the int8 LUT path multiplies (matmul_lut_q8mm_wgsl.ts): each row's 2^bits levels quantized to
 * int8 with s = max|level| / 127, round half to even, in the kernel's f32 arithmetic; returns s·l8.
 * @param lut (rows, 2^bits) levels, as the kernel reads them (f16 values)
 * @param levels 2^bits
 * @returns (rows, 2^bits) dequantized int8 levels
 */
export function lutQ8TablesRef(lut: ArrayLike<number>, levels: number): Float64Array {
  const out = new Float64Array(lut.length);
  const f = Math.fround;
  for (let base = 0; base < lut.length; base += levels) {
    let amax = 0;
    for (let c = 0; c < levels; c++) amax = Math.max(amax, Math.abs(lut[base + c]));
    const s = f(amax / 127);
    const inv = amax > 0 ? f(127 / amax) : 0;
    for (let c = 0; c < levels; c++) out[base + c] = s * roundHalfEven(f(lut[base + c] * inv));
  }
  return out;
}

/**
 * Merge of flash-decoding splits: with M = max_s m_s, out = Σ_s e^(m_s − M) acc_s / Σ_s e^(m_s − M) l_s.
 * @param partAcc (cells, splits, headDim) unnormalised outputs, cells = rows · nHeads
 * @param partMl (cells, splits, 2) running max m and softmax sum l per split
 * @returns (cells, headDim)
 */
export function attentionCombineRef(
  partAcc: ArrayLike<number>,
  partMl: ArrayLike<number>,
  { cells, splits, headDim }: { cells: number; splits: number; headDim: number },
): Float64Array {
  const out = new Float64Array(cells * headDim);
  for (let c = 0; c < cells; c++) {
    let max = -Infinity;
    for (let s = 0; s < splits; s++) max = Math.max(max, partMl[(c * splits + s) * 2]);
    let sum = 0;
    for (let s = 0; s < splits; s++) {
      const w = Math.exp(partMl[(c * splits + s) * 2] - max);
      sum += w * partMl[(c * splits + s) * 2 + 1];
      for (let d = 0; d < headDim; d++) out[c * headDim + d] += w * partAcc[(c * splits + s) * headDim + d];
    }
    for (let d = 0; d < headDim; d++) out[c * headDim + d] /= sum;
  }
  return out;
}

/** A LUT-quantized (LeanQuant nu) weight as the reference reads it, in original column order. */
export interface LutRefWeight {
  outDim: number;
  inDim: number;
  bits: number;
  /** (outDim, inDim) codes in [0, 2^bits) */
  codes: ArrayLike<number>;
  /** (outDim, 2^bits) per-row table: Q[o, c] = lut[o, codes[o, c]] */
  lut: ArrayLike<number>;
}

/**
 * y = x · Qᵀ for a LUT-quantized weight (the spec of kernels/matmul_lut.ts), optionally added onto
 * `acc` (residual epilogue).
 * @param x (rows, inDim)
 * @param w the quantized weight, dequantized in f64
 * @param options acc: (rows, outDim) or undefined
 * @returns (rows, outDim)
 */
export function matmulLutRef(
  x: ArrayLike<number>,
  w: LutRefWeight,
  { acc }: { acc?: ArrayLike<number> } = {},
): Float64Array {
  return matmulRef(x, dequantLutRef(w), x.length / w.inDim, w.inDim, w.outDim, acc);
}

/** The dense (outDim, inDim) f64 matrix of a LUT-quantized weight, in original column order. */
export function dequantLutRef(w: LutRefWeight): Float64Array {
  const { outDim, inDim } = w;
  const levels = 2 ** w.bits;
  const q = new Float64Array(outDim * inDim);
  for (let o = 0; o < outDim; o++) {
    for (let c = 0; c < inDim; c++) q[o * inDim + c] = w.lut[o * levels + w.codes[o * inDim + c]];
  }
  return q;
}
