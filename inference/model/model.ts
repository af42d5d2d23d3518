/**
 * The forward pass on WebGPU, as a list of bound kernels (a "plan") that the caller records into one compute
 * pass. Shapes follow llama2.c's vocabulary (see model_config.ts).
 *
 * One forward over `rows` tokens at positions state.pos .. state.pos + rows − 1:
 *   x = embed(ids) · embedScale                  (1, or Gemma's √dim)
 *   per layer:  the decoder layer of decoder_layer.ts (attention then MLP, each added onto x)
 *   logits = rmsnorm(x)·finalNorm · lmHeadᵀ       (the last row only, or every row for perplexity),
 *            then c·tanh(logits / c) when the model soft-caps them
 * Positions come from the GPU step state (kernels/step_state.ts), so a decode plan can be recorded
 * many times into one submit. When every linear reading xn can apply the RMSNorm itself (the q8 GEMV of
 * affine weights at decode), the norm's dispatch is dropped and they read x; likewise down applies
 * SiLU·mul to gate and up itself (also the LUT GEMVs) — 96 fewer dispatches per token at 32 layers.
 */
import { createStorage, type Encodable, type Gpu, sequence, uploadStorage } from "../../kernels/core/mod.ts";
import { createEmbed, createGatherRows, createSoftcap } from "../../kernels/ops/mod.ts";
import {
  bindDecoderLayer,
  createLayerKernels,
  type ForwardStep,
  type GpuLayer,
  type LayerActivations,
  type LayerKv,
  type PagedKv,
  step,
} from "./decoder_layer.ts";
import { bindLinear, type GpuLinear, type LinearCall, type LinearPath } from "./linear.ts";
import type { ModelConfig } from "./model_config.ts";
import { ropeInvFreq } from "./model_config.ts";

export type { ForwardStep, GpuLayer, PagedKv } from "./decoder_layer.ts";

/** All weights on the GPU. */
export interface GpuWeights {
  /** (vocabSize, dim), f32 or f16 pairs as `embeddingType` says */
  tokenEmbedding: GPUBuffer;
  embeddingType: "f32" | "f16";
  layers: GpuLayer[];
  finalNorm: GPUBuffer; // (dim) f32
  lmHead: GpuLinear; // (vocabSize, dim): dense, or affine when the folder quantized it
}

/** Activation buffers, the KV cache and the step state of one sequence. */
export interface ForwardState extends LayerActivations {
  /** Most rows one forward may process (prefill is chunked to this). */
  maxRows: number;
  /** Rows of logits the logits buffer holds. */
  maxLogitRows: number;
  /** logits: (maxLogitRows, vocabSize) f32 */
  logits: GPUBuffer;
  kCache: GPUBuffer[]; // per layer (seqLen, kvDim); empty for a paged state (the pool lives elsewhere)
  vCache: GPUBuffer[]; // per layer (seqLen, kvDim)
  /** paged state only: (maxLogitRows, dim), the rows whose logits are wanted, gathered */
  xg?: GPUBuffer;
}

/**
 * Allocates the activations and KV cache for one sequence; with `paged`, no KV cache (forwards bind a
 * {@link PagedKv}) but a buffer for the gathered logit rows.
 */
export function createForwardState(
  gpu: Gpu,
  c: ModelConfig,
  { maxRows, maxLogitRows = 1, paged = false }: { maxRows: number; maxLogitRows?: number; paged?: boolean },
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
    kCache: paged ? [] : Array.from({ length: c.nLayers }, (_, l) => buf(c.seqLen * c.kvDim, `kCache ${l}`)),
    vCache: paged ? [] : Array.from({ length: c.nLayers }, (_, l) => buf(c.seqLen * c.kvDim, `vCache ${l}`)),
    ...(paged ? { xg: buf(maxLogitRows * c.dim, "xg") } : {}),
    invFreq: uploadStorage(gpu, ropeInvFreq(c), "rope invFreq"),
    invFreqLocal: c.localRope
      ? uploadStorage(
        gpu,
        ropeInvFreq({ headDim: c.headDim, ropeTheta: c.localRope.theta, ropeScaling: c.localRope.scaling }),
        "rope invFreq local",
      )
      : null,
  };
}

/** Every buffer of a forward state (to size or destroy it). */
export function forwardStateBuffers(s: ForwardState): GPUBuffer[] {
  const { state, logits, x, xn, q, k, v, attn, gate, up, act, invFreq, invFreqLocal } = s;
  const rope = invFreqLocal ? [invFreq, invFreqLocal] : [invFreq];
  const out = [state, logits, x, xn, q, k, v, attn, gate, up, act, ...rope, ...s.kCache, ...s.vCache];
  return s.xg ? [...out, s.xg] : out;
}

/** What one forward computes logits for. */
export type LogitsMode = "last" | "all" | "none";

/** What one forward reads and writes besides the state's activations. */
export interface ForwardOptions {
  /** (rows) u32 token ids */
  ids: GPUBuffer;
  rows: number;
  /** Ignored with `paged`, which computes logits for its gathered rows. */
  logits: LogitsMode;
  /** Bind to a paged KV cache with per-row positions instead of the state's cache and step state. */
  paged?: PagedKv;
  /** Pin the linears' kernel family (see LinearCall.path); `paged` pins its own (prompt or decode). */
  path?: LinearPath;
}

/**
 * Binds one forward over `rows` tokens read from `ids` (u32, rows), writing logits rows
 * [0, rows) for "all" or row 0 for "last" (with `paged`: row i for gathered row i).
 */
export function bindForward(
  gpu: Gpu,
  c: ModelConfig,
  w: GpuWeights,
  s: ForwardState,
  options: ForwardOptions,
): Encodable {
  const steps = bindForwardSteps(gpu, c, w, s, options);
  return sequence(steps.map(({ step }) => step));
}

/** {@link bindForward}'s steps in order, each with its label; `deno task bench --profile` times them. */
export function bindForwardSteps(
  gpu: Gpu,
  c: ModelConfig,
  w: GpuWeights,
  s: ForwardState,
  { ids, rows, logits, paged, path: pinned }: ForwardOptions,
): ForwardStep[] {
  if (rows < 1 || rows > s.maxRows) {
    throw new Error(`Cannot run a forward over ${rows} rows (max ${s.maxRows})`);
  }
  if (paged && (!s.xg || paged.logitRows > s.maxLogitRows)) {
    throw new Error(
      `Cannot bind a paged forward: the state was not made paged or holds < ${paged.logitRows} logit rows`,
    );
  }
  if (!paged && logits === "all" && rows > s.maxLogitRows) {
    throw new Error(`Cannot compute logits for ${rows} rows (logits buffer holds ${s.maxLogitRows})`);
  }
  const kernels = createLayerKernels(gpu, c);
  const embed = createEmbed(gpu, { weightType: w.embeddingType });
  const steps: ForwardStep[] = [
    step(
      "embed",
      embed.bind({ table: w.tokenEmbedding, ids, out: s.x, rows, dim: c.dim, scale: c.embedScale }),
    ),
  ];
  // Batched forwards pin the kernel family of prompt rows (PagedKv.prefill, promptPath) and choose the decode
  // rows' (PagedKv.decodePath); linear.ts maps each to the format's kernels.
  const path: LinearPath | undefined = paged ? (paged.prefill ? paged.promptPath : paged.decodePath) : pinned;
  for (let l = 0; l < c.nLayers; l++) {
    const kv: LayerKv = paged
      ? { paged, layer: l }
      : { kCache: s.kCache[l], vCache: s.vCache[l], seqLen: c.seqLen };
    steps.push(
      ...bindDecoderLayer(gpu, c, kernels, w.layers[l], s, { rows, kv, ...(path ? { path } : {}) }).steps,
    );
  }
  const eps = c.normEps;
  if (paged) {
    const n = paged.logitRows;
    steps.push(
      step(
        "gather",
        createGatherRows(gpu).bind({ gather: paged.gather, x: s.x, out: s.xg!, rows: n, dim: c.dim }),
      ),
      step("norm", kernels.norm.bind({ x: s.xg!, weight: w.finalNorm, y: s.xn, rows: n, dim: c.dim, eps })),
      ...bindLmHead(gpu, c, w, { x: s.xn, y: s.logits, rows: n }),
    );
  } else if (logits !== "none") {
    steps.push(
      step("norm", kernels.norm.bind({ x: s.x, weight: w.finalNorm, y: s.xn, rows, dim: c.dim, eps })),
    );
    const last = logits === "last";
    const head = { x: s.xn, y: s.logits, rows: last ? 1 : rows, xRowOffset: last ? rows - 1 : 0 };
    steps.push(...bindLmHead(gpu, c, w, head));
  }
  return steps;
}

/**
 * The LM head over normed rows, then the model's logit soft-cap if it has one.
 * @param call x: the final-normed rows; y: (rows, vocabSize) logits
 */
export function bindLmHead(
  gpu: Gpu,
  c: ModelConfig,
  w: GpuWeights,
  call: Pick<LinearCall, "x" | "y" | "rows" | "xRowOffset" | "path">,
): ForwardStep[] {
  const head = step("lm_head", bindLinear(gpu, w.lmHead, call));
  if (c.finalSoftcap === null) return [head];
  const cap = createSoftcap(gpu).bind({ x: call.y, n: call.rows * c.vocabSize, cap: c.finalSoftcap });
  return [head, step("softcap", cap)];
}
