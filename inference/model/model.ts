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
import {
  createStorage,
  type Encodable,
  type Gpu,
  type Kernel,
  sequence,
  uploadStorage,
} from "../../kernels/core/mod.ts";
import {
  type AttentionArgs,
  createAttention,
  createEmbed,
  createGatherRows,
  createPagedRopeAppend,
  createRmsNorm,
  createRope,
  createSiluMul,
  type PagedAttentionArgs,
  type PagedLayout,
  type PagedRopeAppendArgs,
  type RopeArgs,
} from "../../kernels/ops/mod.ts";
import {
  bindLinear,
  bindLinears,
  type DenseLinear,
  fusesPrologue,
  type GpuLinear,
  type LinearPath,
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
  kCache: GPUBuffer[]; // per layer (seqLen, kvDim); empty for a paged state (the pool lives elsewhere)
  vCache: GPUBuffer[]; // per layer (seqLen, kvDim)
  invFreq: GPUBuffer; // (headDim/2)
  /** paged state only: (maxLogitRows, dim), the rows whose logits are wanted, gathered */
  xg?: GPUBuffer;
}

/**
 * A forward over rows of many sequences (continuous batching) binds to a paged KV cache instead of the
 * state's own: row t is at position rowPos[t] of sequence slot rowSlot[t] (kernels/ops/batch_rows.ts),
 * and logits are computed for the x rows listed in `gather` only.
 */
export interface PagedKv {
  rowPos: GPUBuffer;
  rowSlot: GPUBuffer;
  /** (slots, layout.maxBlocks) u32 */
  blockTable: GPUBuffer;
  /** per layer: the pool of blocks (kernels/ops/paged_kv.ts) */
  kPool: GPUBuffer[];
  vPool: GPUBuffer[];
  layout: PagedLayout;
  /** (rows) attention splits per row and the attention's indirect grid (kernels/ops/batch_rows.ts) */
  rowSplits: GPUBuffer;
  dispatch: GPUBuffer;
  /** the largest split count a row can have */
  maxSplits: number;
  /** one attention kernel for every forward of a runner, so they share its split scratch */
  attention: Kernel<PagedAttentionArgs>;
  /** (logitRows) u32 row indices; the logits buffer gets one row each, in this order */
  gather: GPUBuffer;
  logitRows: number;
  /**
   * Prompt rows: every layer linear runs the tiled GEMM whatever the row count (and fuses no prologue),
   * so a row's numbers do not depend on how a prompt was chunked or what shared its forward.
   */
  prefill: boolean;
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
    invFreq: uploadStorage(gpu, ropeInvFreq(c), "rope invFreq"),
    ...(paged ? { xg: buf(maxLogitRows * c.dim, "xg") } : {}),
  };
}

/** Every buffer of a forward state (to size or destroy it). */
export function forwardStateBuffers(s: ForwardState): GPUBuffer[] {
  const { state, logits, x, xn, q, k, v, attn, gate, up, act, invFreq } = s;
  const out = [state, logits, x, xn, q, k, v, attn, gate, up, act, invFreq, ...s.kCache, ...s.vCache];
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
  { ids, rows, logits, paged }: ForwardOptions,
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
  const norm = createRmsNorm(gpu);
  // One attention kernel per forward, so its split scratch is shared by the layers.
  const kv = paged
    ? { rope: createPagedRopeAppend(gpu), attention: paged.attention, paged }
    : { rope: createRope(gpu), attention: createAttention(gpu) };
  // Batched forwards pin the kernel family (GEMM for prompt rows, GEMVs for decode rows), so a row's sums
  // do not depend on the batch (see PagedKv.prefill).
  const path: LinearPath | undefined = paged ? (paged.prefill ? "gemm" : "gemv") : undefined;
  const pin = path ? { path } : {};
  const siluMul = createSiluMul(gpu);
  const eps = c.normEps;
  const fused = (ls: GpuLinear[]) => ls.every((l) => fusesPrologue(l, rows, "norm", path));
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
    mergesLinears(pairs.map(([l]) => l), rows, path)
      ? [
        step(
          labels.join("_"),
          bindLinears(gpu, pairs.map(([linear, y]) => ({ linear, y })), { ...inp, rows, ...pin }),
        ),
      ]
      : pairs.map(([linear, y], i) => step(labels[i], bindLinear(gpu, linear, { ...inp, y, rows, ...pin })));
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
      // q and k rotated, and k and v appended to the cache, in one dispatch; then attention
      ...bindKvAttention(c, s, l, rows, kv),
      step("o", bindLinear(gpu, L.wo, { x: s.attn, y: s.x, rows, accumulate: true, ...pin })),
      // MLP block
      ...normed(L.mlpNorm, [L.wGate, L.wUp]),
      ...group(["gate", "up"], [[L.wGate, s.gate], [L.wUp, s.up]], input(L.mlpNorm, [L.wGate, L.wUp])),
      // SiLU·mul runs inside down's kernel when it can (q8 GEMV), else as its own step
      ...(fusesPrologue(L.wDown, rows, "siluMul", path) ? [] : [
        step("silu_mul", siluMul.bind({ gate: s.gate, up: s.up, out: s.act, n: rows * c.hiddenDim })),
      ]),
      step(
        "down",
        bindLinear(gpu, L.wDown, {
          ...(fusesPrologue(L.wDown, rows, "siluMul", path) ? { x: s.gate, siluMulUp: s.up } : { x: s.act }),
          y: s.x,
          rows,
          accumulate: true,
          ...pin,
        }),
      ),
    );
  }
  if (paged) {
    const n = paged.logitRows;
    steps.push(
      step(
        "gather",
        createGatherRows(gpu).bind({ gather: paged.gather, x: s.x, out: s.xg!, rows: n, dim: c.dim }),
      ),
      step("norm", norm.bind({ x: s.xg!, weight: w.finalNorm, y: s.xn, rows: n, dim: c.dim, eps })),
      step("lm_head", bindLinear(gpu, w.lmHead, { x: s.xn, y: s.logits, rows: n })),
    );
  } else if (logits !== "none") {
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

/** Layer l's RoPE + KV append and attention: over the state's own cache, or over a paged one. */
function bindKvAttention(
  c: ModelConfig,
  s: ForwardState,
  l: number,
  rows: number,
  kv:
    | { rope: Kernel<PagedRopeAppendArgs>; attention: Kernel<PagedAttentionArgs>; paged: PagedKv }
    | { rope: Kernel<RopeArgs>; attention: Kernel<AttentionArgs> },
): ForwardStep[] {
  const heads = { nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim };
  if ("paged" in kv) {
    const { paged } = kv;
    const { rowPos, rowSlot, blockTable, layout, rowSplits, dispatch, maxSplits } = paged;
    const pool = { kPool: paged.kPool[l], vPool: paged.vPool[l], rowPos, rowSlot, blockTable, layout, rows };
    return [
      step(
        "rope_append",
        kv.rope.bind({ q: s.q, k: s.k, v: s.v, invFreq: s.invFreq, ...pool, ...heads }),
      ),
      step(
        "attention",
        kv.attention.bind({ q: s.q, out: s.attn, rowSplits, dispatch, maxSplits, ...pool, ...heads }),
      ),
    ];
  }
  return [
    step(
      "rope_append",
      kv.rope.bind({
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
      kv.attention.bind({
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
  ];
}

function step(label: string, step: Encodable): ForwardStep {
  return { label, step };
}
