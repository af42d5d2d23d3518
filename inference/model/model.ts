/**
 * The Llama forward pass on WebGPU, as a list of bound kernels (a "plan") that the caller records
 * into one compute pass. Shapes follow llama2.c's vocabulary (see model_config.ts).
 *
 * One forward over `rows` tokens at positions state.pos .. state.pos + rows − 1:
 *   x = embed(ids)
 *   per layer:  xn = rmsnorm(x)·attnNorm;  q,k,v = xn·Wqᵀ, xn·Wkᵀ, xn·Wvᵀ;  rope(q), rope(k)
 *               cache[pos..] = k, v (in rope's dispatch);  a = attention(q, cache);  x += a·Woᵀ
 *               xn = rmsnorm(x)·mlpNorm;  h = silu(xn·Wgateᵀ) · (xn·Wupᵀ);  x += h·Wdownᵀ
 *   logits = rmsnorm(x)·finalNorm · lmHeadᵀ   (the last row only, or every row for perplexity)
 * Positions come from the GPU step state (kernels/step_state.ts), so a decode plan can be recorded
 * many times into one submit. When every linear reading xn can apply the RMSNorm itself (the q8 GEMV of
 * affine weights at decode), the norm's dispatch is dropped and they read x; likewise down applies
 * SiLU·mul to gate and up itself (also the LUT GEMVs) — 96 fewer dispatches per token at 32 layers.
 */
import { createStorage, type Encodable, type Gpu, sequence, uploadStorage } from "../../kernels/core/mod.ts";
import {
  createAttention,
  createEmbed,
  createRmsNorm,
  createRope,
  createSiluMul,
} from "../../kernels/ops/mod.ts";
import {
  bindLinear,
  bindLinears,
  type DenseLinear,
  fusesPrologue,
  type GpuLinear,
  linearBuffers,
  mergesLinears,
} from "./linear.ts";
import type { ModelConfig } from "./model_config.ts";
import { ropeInvFreq } from "./model_config.ts";

/** One decoder layer's weights on the GPU. */
export interface GpuLayer {
  attnNorm: GPUBuffer; // (dim) f32
  wq: GpuLinear; // (nHeads·headDim, dim)
  wk: GpuLinear; // (kvDim, dim)
  wv: GpuLinear; // (kvDim, dim)
  wo: GpuLinear; // (dim, nHeads·headDim)
  mlpNorm: GPUBuffer; // (dim) f32
  wGate: GpuLinear; // (hiddenDim, dim)
  wUp: GpuLinear; // (hiddenDim, dim)
  wDown: GpuLinear; // (dim, hiddenDim)
}

/** All weights on the GPU. */
export interface GpuWeights {
  /** (vocabSize, dim), f32 or f16 pairs as `embeddingType` says */
  tokenEmbedding: GPUBuffer;
  embeddingType: "f32" | "f16";
  layers: GpuLayer[];
  finalNorm: GPUBuffer; // (dim) f32
  lmHead: DenseLinear; // (vocabSize, dim)
}

/** Activation buffers, the KV cache and the step state of one sequence. */
export interface ForwardState {
  /** Most rows one forward may process (prefill is chunked to this). */
  maxRows: number;
  /** Rows of logits the logits buffer holds. */
  maxLogitRows: number;
  /** state: [4] u32 (kernels/step_state.ts) */
  state: GPUBuffer;
  /** logits: (maxLogitRows, vocabSize) f32 */
  logits: GPUBuffer;
  x: GPUBuffer; // (maxRows, dim)
  xn: GPUBuffer; // (maxRows, dim)
  q: GPUBuffer; // (maxRows, nHeads·headDim)
  k: GPUBuffer; // (maxRows, kvDim)
  v: GPUBuffer; // (maxRows, kvDim)
  attn: GPUBuffer; // (maxRows, nHeads·headDim)
  gate: GPUBuffer; // (maxRows, hiddenDim)
  up: GPUBuffer; // (maxRows, hiddenDim)
  act: GPUBuffer; // (maxRows, hiddenDim): silu(gate)·up
  kCache: GPUBuffer[]; // per layer (seqLen, kvDim)
  vCache: GPUBuffer[]; // per layer (seqLen, kvDim)
  invFreq: GPUBuffer; // (headDim/2)
}

/** Allocates the activations and KV cache for one sequence. */
export function createForwardState(
  gpu: Gpu,
  c: ModelConfig,
  { maxRows, maxLogitRows = 1 }: { maxRows: number; maxLogitRows?: number },
): ForwardState {
  const f = 4;
  const qDim = c.nHeads * c.headDim;
  const buf = (elems: number, label: string) => createStorage(gpu, elems * f, label);
  return {
    maxRows,
    maxLogitRows,
    state: createStorage(gpu, 16, "step state"),
    logits: buf(maxLogitRows * c.vocabSize, "logits"),
    x: buf(maxRows * c.dim, "x"),
    xn: buf(maxRows * c.dim, "xn"),
    q: buf(maxRows * qDim, "q"),
    k: buf(maxRows * c.kvDim, "k"),
    v: buf(maxRows * c.kvDim, "v"),
    attn: buf(maxRows * qDim, "attn"),
    gate: buf(maxRows * c.hiddenDim, "gate"),
    up: buf(maxRows * c.hiddenDim, "up"),
    act: buf(maxRows * c.hiddenDim, "act"),
    kCache: Array.from({ length: c.nLayers }, (_, l) => buf(c.seqLen * c.kvDim, `kCache ${l}`)),
    vCache: Array.from({ length: c.nLayers }, (_, l) => buf(c.seqLen * c.kvDim, `vCache ${l}`)),
    invFreq: uploadStorage(gpu, ropeInvFreq(c), "rope invFreq"),
  };
}

/** Every buffer of a forward state (to size or destroy it). */
export function forwardStateBuffers(s: ForwardState): GPUBuffer[] {
  const { state, logits, x, xn, q, k, v, attn, gate, up, act, invFreq } = s;
  return [state, logits, x, xn, q, k, v, attn, gate, up, act, invFreq, ...s.kCache, ...s.vCache];
}

/** Every GPU buffer of a model's weights, each once (act-order permutations are shared), to free them. */
export function gpuWeightsBuffers(w: GpuWeights): GPUBuffer[] {
  const all = [w.tokenEmbedding, w.finalNorm, ...w.lmHead.panels.map((p) => p.buffer)];
  for (const l of w.layers) {
    all.push(l.attnNorm, l.mlpNorm);
    for (const f of [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]) all.push(...linearBuffers(f));
  }
  return [...new Set(all)];
}

/** What one forward computes logits for. */
export type LogitsMode = "last" | "all" | "none";

/**
 * Binds one forward over `rows` tokens read from `ids` (u32, rows), writing logits rows
 * [0, rows) for "all" or row 0 for "last".
 */
export function bindForward(
  gpu: Gpu,
  c: ModelConfig,
  w: GpuWeights,
  s: ForwardState,
  options: { ids: GPUBuffer; rows: number; logits: LogitsMode },
): Encodable {
  const steps = bindForwardSteps(gpu, c, w, s, options);
  return sequence(steps.map(({ step }) => step));
}

/** One bound step of a forward, labelled by what it computes (for profiles). */
export interface ForwardStep {
  /** "norm", "q", "attention", "down", "lm_head", … */
  label: string;
  step: Encodable;
}

/** {@link bindForward}'s steps in order, each with its label; `deno task bench --profile` times them. */
export function bindForwardSteps(
  gpu: Gpu,
  c: ModelConfig,
  w: GpuWeights,
  s: ForwardState,
  { ids, rows, logits }: { ids: GPUBuffer; rows: number; logits: LogitsMode },
): ForwardStep[] {
  if (rows < 1 || rows > s.maxRows) {
    throw new Error(`Cannot run a forward over ${rows} rows (max ${s.maxRows})`);
  }
  if (logits === "all" && rows > s.maxLogitRows) {
    throw new Error(`Cannot compute logits for ${rows} rows (logits buffer holds ${s.maxLogitRows})`);
  }
  const norm = createRmsNorm(gpu);
  const rope = createRope(gpu);
  const attention = createAttention(gpu);
  const siluMul = createSiluMul(gpu);
  const eps = c.normEps;
  const heads = { nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim };
  const fused = (ls: GpuLinear[]) => ls.every((l) => fusesPrologue(l, rows));
  // The norm step, unless every consumer applies it itself; then the consumers read s.x.
  const normed = (weight: GPUBuffer, ls: GpuLinear[]): ForwardStep[] =>
    fused(ls) ? [] : [step("norm", norm.bind({ x: s.x, weight, y: s.xn, rows, dim: c.dim, eps }))];
  const input = (weight: GPUBuffer, ls: GpuLinear[]) =>
    fused(ls) ? { x: s.x, norm: { weight, eps } } : { x: s.xn };
  // Linears reading the same input: one step when they can share a dispatch (q8 GEMV), else one each.
  const group = (
    labels: string[],
    pairs: [GpuLinear, GPUBuffer][],
    inp: { x: GPUBuffer; norm?: { weight: GPUBuffer; eps: number } },
  ): ForwardStep[] =>
    mergesLinears(pairs.map(([l]) => l), rows)
      ? [
        step(
          labels.join("_"),
          bindLinears(gpu, pairs.map(([linear, y]) => ({ linear, y })), { ...inp, rows }),
        ),
      ]
      : pairs.map(([linear, y], i) => step(labels[i], bindLinear(gpu, linear, { ...inp, y, rows })));
  const steps: ForwardStep[] = [
    step(
      "embed",
      createEmbed(gpu, { weightType: w.embeddingType }).bind({
        table: w.tokenEmbedding,
        ids,
        out: s.x,
        rows,
        dim: c.dim,
      }),
    ),
  ];
  for (let l = 0; l < c.nLayers; l++) {
    const L = w.layers[l];
    steps.push(
      // attention block; the norm runs inside q/k/v's kernels when they all can take it (q8 GEMVs)
      ...normed(L.attnNorm, [L.wq, L.wk, L.wv]),
      ...group(
        ["q", "k", "v"],
        [[L.wq, s.q], [L.wk, s.k], [L.wv, s.v]],
        input(L.attnNorm, [L.wq, L.wk, L.wv]),
      ),
      // q and k rotated, and k and v appended to the cache, in one dispatch
      step(
        "rope_append",
        rope.bind({
          x: s.q,
          k: s.k,
          invFreq: s.invFreq,
          state: s.state,
          rows,
          ...heads,
          append: { v: s.v, kCache: s.kCache[l], vCache: s.vCache[l], seqLen: c.seqLen },
        }),
      ),
      step(
        "attention",
        attention.bind({
          q: s.q,
          kCache: s.kCache[l],
          vCache: s.vCache[l],
          out: s.attn,
          state: s.state,
          rows,
          seqLen: c.seqLen,
          ...heads,
        }),
      ),
      step("o", bindLinear(gpu, L.wo, { x: s.attn, y: s.x, rows, accumulate: true })),
      // MLP block
      ...normed(L.mlpNorm, [L.wGate, L.wUp]),
      ...group(["gate", "up"], [[L.wGate, s.gate], [L.wUp, s.up]], input(L.mlpNorm, [L.wGate, L.wUp])),
      // SiLU·mul runs inside down's kernel when it can (q8 GEMV), else as its own step
      ...(fusesPrologue(L.wDown, rows, "siluMul") ? [] : [
        step("silu_mul", siluMul.bind({ gate: s.gate, up: s.up, out: s.act, n: rows * c.hiddenDim })),
      ]),
      step(
        "down",
        bindLinear(gpu, L.wDown, {
          ...(fusesPrologue(L.wDown, rows, "siluMul") ? { x: s.gate, siluMulUp: s.up } : { x: s.act }),
          y: s.x,
          rows,
          accumulate: true,
        }),
      ),
    );
  }
  if (logits !== "none") {
    steps.push(step("norm", norm.bind({ x: s.x, weight: w.finalNorm, y: s.xn, rows, dim: c.dim, eps })));
    const last = logits === "last";
    steps.push(step(
      "lm_head",
      bindLinear(gpu, w.lmHead, {
        x: s.xn,
        y: s.logits,
        rows: last ? 1 : rows,
        xRowOffset: last ? rows - 1 : 0,
      }),
    ));
  }
  return steps;
}

function step(label: string, step: Encodable): ForwardStep {
  return { label, step };
}
