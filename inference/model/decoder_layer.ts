/**
 * One decoder layer as bound kernels: the single definition that the serving forward (model.ts) loops over and
 * the quantizer's layer runner (inference/quantize/layer_runner.ts) binds stage by stage. A layer is six
 * segments in two halves; row t of x is the residual stream at position state.pos + t:
 *   attention half
 *     attnNorm   xn = rmsnorm(x)·attnNorm                     (dropped when q, k, v apply it in their kernels)
 *     attention  q, k, v = xn·Wqᵀ (+ bq), xn·Wkᵀ (+ bk), xn·Wvᵀ (+ bv); [q, k = headnorm(q)·qNorm, headnorm(k)·kNorm];
 *                rope(q), rope(k); cache[pos..] = k, v; attn = attention(q, cache) [over the sliding window]
 *     attnOut    x += attn·Woᵀ                                [x += rmsnorm(attn·Woᵀ)·postAttnNorm]
 *   MLP half
 *     mlpNorm    xn = rmsnorm(x)·mlpNorm                      (dropped when gate, up apply it)
 *     mlp        act = silu(xn·Wgateᵀ)·(xn·Wupᵀ)               [gelu_tanh for Gemma] (SiLU·mul inside down's
 *                                                              kernel when it can)
 *     mlpOut     x += act·Wdownᵀ                              [x += rmsnorm(act·Wdownᵀ)·postMlpNorm]
 * The bracketed parts are the architectures' (model_arch.ts): Qwen2's biases, Qwen3's and Gemma's q/k norms,
 * Mistral's and Gemma's sliding layers (Gemma's with their own RoPE table), Gemma's output norms. Gemma's
 * (1 + w) norm weights arrive with the 1 folded in (weights.ts), so every fusion of a norm still applies.
 * The quantizer's stages stop where a group of linears reads its input (docs/quantization.md §5): "qkv" and
 * "o" and "gateUp" run from the start of the attention half, "down" and "out" from the start of the MLP half
 * (the runner stores the post-attention residual in between), each capturing the buffer its group reads.
 * The KV cache is one option (`kv`), so the same layer serves the forward's per-layer cache, the
 * runner's one-window cache and the batched engine's paged pool (rows of many sequences, each at its own
 * position; kernels/ops/paged_kv.ts, paged_attention.ts).
 */
import type { Encodable, Gpu, Kernel } from "../../kernels/core/mod.ts";
import {
  type AttentionArgs,
  type BiasAddArgs,
  createBiasAdd,
  createFlashAttention,
  createHeadNorm,
  createPagedRopeAppend,
  createRmsNorm,
  createRope,
  createSiluMul,
  type HeadNormArgs,
  type PagedAttentionArgs,
  type PagedLayout,
  type PagedRopeAppendArgs,
  type RmsNormArgs,
  type RopeArgs,
  type SiluMulArgs,
} from "../../kernels/ops/mod.ts";
import {
  bindLinear,
  bindLinears,
  fusesPrologue,
  type GpuLinear,
  type LinearPath,
  mergesLinears,
} from "./linear.ts";
import type { ModelConfig } from "./model_config.ts";
import type { LayerVectors } from "./weights.ts";

/**
 * One decoder layer's weights on the GPU: the linears, and norm weights and biases (f32, shapes as in
 * weights.ts `LayerVectors`; norms with Gemma's + 1 folded in) where the architecture has them.
 */
export interface GpuLayer extends LayerVectors<GPUBuffer> {
  /** Its place in the model: picks the layer type (sliding or full) and RoPE from the config. */
  index: number;
  wq: GpuLinear; // (nHeads·headDim, dim)
  wk: GpuLinear; // (kvDim, dim)
  wv: GpuLinear; // (kvDim, dim)
  wo: GpuLinear; // (dim, nHeads·headDim)
  wGate: GpuLinear; // (hiddenDim, dim)
  wUp: GpuLinear; // (hiddenDim, dim)
  wDown: GpuLinear; // (dim, hiddenDim)
}

/** The activations a layer reads and writes, (rows, ·) f32 each, and the step state. */
export interface LayerActivations {
  /** state: [4] u32 (kernels/step_state.ts) */
  state: GPUBuffer;
  x: GPUBuffer; // (rows, dim): the residual stream
  xn: GPUBuffer; // (rows, dim)
  q: GPUBuffer; // (rows, nHeads·headDim)
  k: GPUBuffer; // (rows, kvDim)
  v: GPUBuffer; // (rows, kvDim)
  attn: GPUBuffer; // (rows, nHeads·headDim)
  gate: GPUBuffer; // (rows, hiddenDim)
  up: GPUBuffer; // (rows, hiddenDim)
  act: GPUBuffer; // (rows, hiddenDim): silu(gate)·up
  invFreq: GPUBuffer; // (headDim/2): the RoPE of full-attention layers
  invFreqLocal: GPUBuffer | null; // (headDim/2): sliding layers' own RoPE (Gemma 3), else null
}

/**
 * Where the layer appends its K and V rows and attention reads them back: one sequence's cache, (seqLen,
 * kvDim) f32 each, at the step state's position; or layer `layer` of a paged pool.
 */
export type LayerKv = { kCache: GPUBuffer; vCache: GPUBuffer; seqLen: number } | {
  paged: PagedKv;
  layer: number;
};

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
   * Prompt rows: every layer linear runs one kernel family whatever the row count (and fuses no prologue),
   * the tiled GEMM or, for q8 affine and f16 dense weights, their batched decode kernel (linear.ts
   * `pinnedPath`), so a row's numbers do not depend on how a prompt was chunked or what shared its forward.
   */
  prefill: boolean;
  /**
   * The linears' path for prompt rows: "gemm" (`--batch-invariant`) as above; "prompt" lets small pieces
   * of LUT weights take the batched LUT kernel (faster; their sums then depend on the piece's size).
   */
  promptPath: "gemm" | "prompt";
  /**
   * The linears' path for decode rows (LinearCall.path), the LM head's too: "gemv" (`--batch-invariant`)
   * takes the batched kernels at every row count, so a row's sums never depend on its batch; "decode"
   * takes the format's GEMV for few rows (linear.ts `gemvRows`), faster but summing in another order.
   */
  decodePath: "gemv" | "decode";
}

/** One bound step of a forward, labelled by what it computes (for profiles). */
export interface ForwardStep {
  /** "norm", "q", "attention", "down", "lm_head", … */
  label: string;
  step: Encodable;
}

/** Where a quantizer run stops; every stage but "out" captures the input of a group of linears. */
export type LayerStage = "qkv" | "o" | "gateUp" | "down" | "out";

/** The stages in forward order. */
export const LAYER_STAGES: readonly LayerStage[] = ["qkv", "o", "gateUp", "down", "out"];

/** The non-linear kernels of a layer, built once per forward or runner (attention keeps split scratch). */
export interface LayerKernels {
  norm: Kernel<RmsNormArgs>;
  headNorm: Kernel<HeadNormArgs>;
  biasAdd: Kernel<BiasAddArgs>;
  rope: Kernel<RopeArgs>;
  attention: Kernel<AttentionArgs>;
  /** RoPE + append into a paged pool (the paged attention kernel comes with the {@link PagedKv}) */
  pagedRope: Kernel<PagedRopeAppendArgs>;
  /** act(gate)·up with the model's activation */
  gatedAct: Kernel<SiluMulArgs>;
}

/**
 * Prompt chunks of at least this many rows take the tiled attention (kernels/ops/flash_attention.ts: each K/V
 * row read once per block of query rows); shorter forwards keep attention.ts, whose per-row workgroups and
 * splits fill the GPU where a few blocks of rows cannot (`deno task bench:attention`, BENCHMARKS.md).
 */
export const TILED_ATTENTION_MIN_ROWS = 128;

/** Builds the kernels {@link bindDecoderLayer} binds for model `c`. */
export function createLayerKernels(gpu: Gpu, c: ModelConfig): LayerKernels {
  return {
    norm: createRmsNorm(gpu),
    headNorm: createHeadNorm(gpu),
    biasAdd: createBiasAdd(gpu),
    rope: createRope(gpu),
    attention: createFlashAttention(gpu, { minRows: TILED_ATTENTION_MIN_ROWS }),
    pagedRope: createPagedRopeAppend(gpu),
    gatedAct: createSiluMul(gpu, { activation: c.activation }),
  };
}

/** Options of {@link bindDecoderLayer}. */
export interface DecoderLayerOptions {
  rows: number;
  kv: LayerKv;
  /** Bind only up to this quantizer stage, from the start of its half (default: the whole layer). */
  stage?: LayerStage;
  /**
   * Let linears apply the preceding RMSNorm or SiLU·mul in their kernels and share dispatches where they can
   * (default: true for the whole layer; a stage needs its capture materialised, so never with `stage`).
   */
  fuse?: boolean;
  /** Steps between the attention half's residual add and the MLP norm when both halves run. */
  betweenHalves?: readonly Encodable[];
  /** Attention's workgroups per (row, KV head) along the positions (default: the kernel's choice). */
  attentionSplits?: number;
  /**
   * Pin every linear to one kernel family (batched forwards: GEMM for prompt rows, GEMVs for decode rows),
   * so a row's sums do not depend on what shares its forward (see PagedKv.prefill).
   */
  path?: LinearPath;
}

/** A layer bound whole or up to a stage. */
export interface BoundDecoderLayer {
  steps: ForwardStep[];
  /** The stage's captured input, (rows, cols) f32 after the steps ran; null for "out" and the whole layer. */
  capture: { buffer: GPUBuffer; cols: number } | null;
}

type Segment = "attnNorm" | "attention" | "attnOut" | "mlpNorm" | "mlp" | "mlpOut";
const SEGMENTS: readonly Segment[] = ["attnNorm", "attention", "attnOut", "mlpNorm", "mlp", "mlpOut"];

/** Each stage: its first and last segment, and the buffer it captures. */
const STAGE_SPAN: Record<LayerStage, [Segment, Segment, "xn" | "attn" | "act" | null]> = {
  qkv: ["attnNorm", "attnNorm", "xn"],
  o: ["attnNorm", "attention", "attn"],
  gateUp: ["attnNorm", "mlpNorm", "xn"],
  down: ["mlpNorm", "mlp", "act"],
  out: ["mlpNorm", "mlpOut", null],
};

/**
 * Binds one decoder layer over `rows` rows of `s`, whole (the forward) or up to a quantizer stage.
 * @param gpu the device
 * @param c the model
 * @param kernels from {@link createLayerKernels}
 * @param L the layer's weights
 * @param s the activations
 * @param options rows, the KV cache, the stage, fusions
 * @returns the steps in order and the stage's capture
 */
export function bindDecoderLayer(
  gpu: Gpu,
  c: ModelConfig,
  kernels: LayerKernels,
  L: GpuLayer,
  s: LayerActivations,
  options: DecoderLayerOptions,
): BoundDecoderLayer {
  const { stage } = options;
  const fuse = options.fuse ?? stage === undefined;
  if (stage !== undefined && fuse) throw new Error(`Cannot fuse kernels when stopping at stage "${stage}"`);
  const [first, last, captured] = stage ? STAGE_SPAN[stage] : ["attnNorm", "mlpOut", null] as const;
  const bind = segmentBinders(gpu, c, kernels, L, s, { ...options, fuse });
  const steps: ForwardStep[] = [];
  const from = SEGMENTS.indexOf(first);
  for (let i = from; i <= SEGMENTS.indexOf(last); i++) {
    if (SEGMENTS[i] === "mlpNorm" && i > from) {
      steps.push(...(options.betweenHalves ?? []).map((step) => ({ label: "between", step })));
    }
    steps.push(...bind[SEGMENTS[i]]());
  }
  const cols = { xn: c.dim, attn: c.nHeads * c.headDim, act: c.hiddenDim };
  return { steps, capture: captured ? { buffer: s[captured], cols: cols[captured] } : null };
}

/** Each segment's steps, bound on demand (binding allocates params). */
function segmentBinders(
  gpu: Gpu,
  c: ModelConfig,
  k: LayerKernels,
  L: GpuLayer,
  s: LayerActivations,
  { rows, kv, fuse, attentionSplits, path }: DecoderLayerOptions & { fuse: boolean },
): Record<Segment, () => ForwardStep[]> {
  const eps = c.normEps;
  const pin = path ? { path } : {};
  const fused = (ls: GpuLinear[]) => fuse && ls.every((l) => fusesPrologue(l, rows, "norm", path));
  // The norm step, unless every consumer applies it itself; then the consumers read s.x.
  const normed = (weight: GPUBuffer, ls: GpuLinear[]): ForwardStep[] =>
    fused(ls) ? [] : [step("norm", k.norm.bind({ x: s.x, weight, y: s.xn, rows, dim: c.dim, eps }))];
  const input = (weight: GPUBuffer, ls: GpuLinear[]) =>
    fused(ls) ? { x: s.x, norm: { weight, eps } } : { x: s.xn };
  // Linears reading the same input: one step when they can share a dispatch (q8 GEMV), else one each.
  const group = (labels: string[], pairs: [GpuLinear, GPUBuffer][], normWeight: GPUBuffer): ForwardStep[] => {
    const ls = pairs.map(([l]) => l);
    const inp = { ...input(normWeight, ls), rows, ...pin };
    return fuse && mergesLinears(ls, rows, path)
      ? [step(labels.join("_"), bindLinears(gpu, pairs.map(([linear, y]) => ({ linear, y })), inp))]
      : pairs.map(([linear, y], i) => step(labels[i], bindLinear(gpu, linear, { ...inp, y })));
  };
  // A residual branch: added onto x by the linear's epilogue, or (Gemma) normed first and then added.
  const residual = (label: string, linear: GpuLinear, x: LinearInput, postNorm: GPUBuffer | undefined) =>
    postNorm
      ? [
        step(label, bindLinear(gpu, linear, { ...x, y: s.xn, rows, ...pin })),
        step(
          "post_norm",
          k.norm.bind({ x: s.xn, weight: postNorm, y: s.x, rows, dim: c.dim, eps, accumulate: true }),
        ),
      ]
      : [step(label, bindLinear(gpu, linear, { ...x, y: s.x, rows, accumulate: true, ...pin }))];
  const qkv = [L.wq, L.wk, L.wv];
  const siluInDown = fuse && c.activation === "silu" && fusesPrologue(L.wDown, rows, "siluMul", path);
  return {
    attnNorm: () => normed(L.attnNorm, qkv),
    attention: () => [
      ...group(["q", "k", "v"], [[L.wq, s.q], [L.wk, s.k], [L.wv, s.v]], L.attnNorm),
      ...biases(k, L, s, c, rows),
      ...(L.qNorm && L.kNorm
        ? [
          step(
            "qk_norm",
            k.headNorm.bind({ q: s.q, k: s.k, qWeight: L.qNorm, kWeight: L.kNorm, rows, ...heads(c), eps }),
          ),
        ]
        : []),
      ...ropeAndAttention(c, k, L, s, { rows, kv, attentionSplits }),
    ],
    attnOut: () => residual("o", L.wo, { x: s.attn }, L.postAttnNorm),
    mlpNorm: () => normed(L.mlpNorm, [L.wGate, L.wUp]),
    mlp: () => [
      ...group(["gate", "up"], [[L.wGate, s.gate], [L.wUp, s.up]], L.mlpNorm),
      ...(siluInDown ? [] : [
        step("silu_mul", k.gatedAct.bind({ gate: s.gate, up: s.up, out: s.act, n: rows * c.hiddenDim })),
      ]),
    ],
    mlpOut: () =>
      residual("down", L.wDown, siluInDown ? { x: s.gate, siluMulUp: s.up } : { x: s.act }, L.postMlpNorm),
  };
}

/** What a linear reads: x, with SiLU·mul applied in its kernel when `siluMulUp` is given. */
type LinearInput = { x: GPUBuffer; siluMulUp?: GPUBuffer };

function heads(c: ModelConfig) {
  return { nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim };
}

/** q/k/v biases added in place (full precision whatever the weights' format). */
function biases(
  k: LayerKernels,
  L: GpuLayer,
  s: LayerActivations,
  c: ModelConfig,
  rows: number,
): ForwardStep[] {
  const qDim = c.nHeads * c.headDim;
  const items: [GPUBuffer | undefined, GPUBuffer, number][] = [[L.bq, s.q, qDim], [L.bk, s.k, c.kvDim], [
    L.bv,
    s.v,
    c.kvDim,
  ]];
  return items.flatMap(([bias, y, n]) => bias ? [step("bias", k.biasAdd.bind({ bias, y, rows, n }))] : []);
}

/** RoPE (the layer type's table) with the cache append, then attention (the layer type's window). */
function ropeAndAttention(
  c: ModelConfig,
  k: LayerKernels,
  L: GpuLayer,
  s: LayerActivations,
  { rows, kv, attentionSplits }: { rows: number; kv: LayerKv; attentionSplits: number | undefined },
): ForwardStep[] {
  const sliding = c.layerTypes[L.index] === "sliding";
  const invFreq = sliding && s.invFreqLocal ? s.invFreqLocal : s.invFreq;
  const scores = { scale: c.attnScale, window: sliding ? c.slidingWindow : null, softcap: c.attnSoftcap };
  if ("paged" in kv) {
    const { paged, layer } = kv;
    const { rowPos, rowSlot, blockTable, layout, rowSplits, dispatch, maxSplits } = paged;
    const pool = {
      kPool: paged.kPool[layer],
      vPool: paged.vPool[layer],
      rowPos,
      rowSlot,
      blockTable,
      layout,
    };
    return [
      step("rope_append", k.pagedRope.bind({ q: s.q, k: s.k, v: s.v, invFreq, rows, ...pool, ...heads(c) })),
      step(
        "attention",
        paged.attention.bind({
          q: s.q,
          out: s.attn,
          rowSplits,
          dispatch,
          maxSplits,
          rows,
          ...pool,
          ...heads(c),
          ...scores,
        }),
      ),
    ];
  }
  return [
    // q and k rotated, and k and v appended to the cache, in one dispatch
    step(
      "rope_append",
      k.rope.bind({ x: s.q, k: s.k, invFreq, state: s.state, rows, ...heads(c), append: { v: s.v, ...kv } }),
    ),
    step(
      "attention",
      k.attention.bind({
        q: s.q,
        kCache: kv.kCache,
        vCache: kv.vCache,
        out: s.attn,
        state: s.state,
        rows,
        seqLen: kv.seqLen,
        ...heads(c),
        ...scores,
        ...(attentionSplits === undefined ? {} : { splits: attentionSplits }),
      }),
    ),
  ];
}

/** A step labelled for profiles. */
export function step(label: string, step: Encodable): ForwardStep {
  return { label, step };
}
