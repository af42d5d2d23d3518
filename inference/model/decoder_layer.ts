/**
 * One decoder layer as bound kernels: the single definition that the serving forward (model.ts) loops over and
 * the quantizer's layer runner (inference/quantize/layer_runner.ts) binds stage by stage. A layer is six
 * segments in two halves; row t of x is the residual stream at position state.pos + t:
 *   attention half
 *     attnNorm   xn = rmsnorm(x)·attnNorm                     (dropped when q, k, v apply it in their kernels)
 *     attention  q, k, v = xn·Wqᵀ, xn·Wkᵀ, xn·Wvᵀ; rope(q), rope(k); cache[pos..] = k, v;
 *                attn = attention(q, cache)
 *     attnOut    x += attn·Woᵀ
 *   MLP half
 *     mlpNorm    xn = rmsnorm(x)·mlpNorm                      (dropped when gate, up apply it)
 *     mlp        act = silu(xn·Wgateᵀ)·(xn·Wupᵀ)               (SiLU·mul inside down's kernel when it can)
 *     mlpOut     x += act·Wdownᵀ
 * The quantizer's stages stop where a group of linears reads its input (docs/quantization.md §5): "qkv" and
 * "o" and "gateUp" run from the start of the attention half, "down" and "out" from the start of the MLP half
 * (the runner stores the post-attention residual in between), each capturing the buffer its group reads.
 * The KV cache is one option (`kv`), so the same layer serves the forward's per-layer cache and the
 * runner's one-window cache.
 */
import type { Encodable, Gpu, Kernel } from "../../kernels/core/mod.ts";
import {
  type AttentionArgs,
  createAttention,
  createRmsNorm,
  createRope,
  createSiluMul,
  type RmsNormArgs,
  type RopeArgs,
  type SiluMulArgs,
} from "../../kernels/ops/mod.ts";
import { bindLinear, bindLinears, fusesPrologue, type GpuLinear, mergesLinears } from "./linear.ts";
import type { ModelConfig } from "./model_config.ts";

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
  invFreq: GPUBuffer; // (headDim/2)
}

/** Where the layer appends its K and V rows and attention reads them back. */
export interface LayerKv {
  /** kCache, vCache: (seqLen, kvDim) f32 */
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  seqLen: number;
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
  rope: Kernel<RopeArgs>;
  attention: Kernel<AttentionArgs>;
  siluMul: Kernel<SiluMulArgs>;
}

/** Builds the kernels {@link bindDecoderLayer} binds. */
export function createLayerKernels(gpu: Gpu): LayerKernels {
  return {
    norm: createRmsNorm(gpu),
    rope: createRope(gpu),
    attention: createAttention(gpu),
    siluMul: createSiluMul(gpu),
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
const STAGE_SPAN: Record<LayerStage, [Segment, Segment, keyof LayerActivations | null]> = {
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
  const cols: Partial<Record<keyof LayerActivations, number>> = {
    xn: c.dim,
    attn: c.nHeads * c.headDim,
    act: c.hiddenDim,
  };
  return { steps, capture: captured ? { buffer: s[captured], cols: cols[captured]! } : null };
}

/** Each segment's steps, bound on demand (binding allocates params). */
function segmentBinders(
  gpu: Gpu,
  c: ModelConfig,
  { norm, rope, attention, siluMul }: LayerKernels,
  L: GpuLayer,
  s: LayerActivations,
  { rows, kv, fuse, attentionSplits }: DecoderLayerOptions & { fuse: boolean },
): Record<Segment, () => ForwardStep[]> {
  const eps = c.normEps;
  const heads = { nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim };
  const fused = (ls: GpuLinear[]) => fuse && ls.every((l) => fusesPrologue(l, rows));
  // The norm step, unless every consumer applies it itself; then the consumers read s.x.
  const normed = (weight: GPUBuffer, ls: GpuLinear[]): ForwardStep[] =>
    fused(ls) ? [] : [step("norm", norm.bind({ x: s.x, weight, y: s.xn, rows, dim: c.dim, eps }))];
  const input = (weight: GPUBuffer, ls: GpuLinear[]) =>
    fused(ls) ? { x: s.x, norm: { weight, eps } } : { x: s.xn };
  // Linears reading the same input: one step when they can share a dispatch (q8 GEMV), else one each.
  const group = (labels: string[], pairs: [GpuLinear, GPUBuffer][], normWeight: GPUBuffer): ForwardStep[] => {
    const ls = pairs.map(([l]) => l);
    const inp = { ...input(normWeight, ls), rows };
    return fuse && mergesLinears(ls, rows)
      ? [step(labels.join("_"), bindLinears(gpu, pairs.map(([linear, y]) => ({ linear, y })), inp))]
      : pairs.map(([linear, y], i) => step(labels[i], bindLinear(gpu, linear, { ...inp, y })));
  };
  const qkv = [L.wq, L.wk, L.wv];
  const siluInDown = fuse && fusesPrologue(L.wDown, rows, "siluMul");
  return {
    attnNorm: () => normed(L.attnNorm, qkv),
    attention: () => [
      ...group(["q", "k", "v"], [[L.wq, s.q], [L.wk, s.k], [L.wv, s.v]], L.attnNorm),
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
          append: { v: s.v, ...kv },
        }),
      ),
      step(
        "attention",
        attention.bind({
          q: s.q,
          kCache: kv.kCache,
          vCache: kv.vCache,
          out: s.attn,
          state: s.state,
          rows,
          seqLen: kv.seqLen,
          ...heads,
          ...(attentionSplits === undefined ? {} : { splits: attentionSplits }),
        }),
      ),
    ],
    attnOut: () => [step("o", bindLinear(gpu, L.wo, { x: s.attn, y: s.x, rows, accumulate: true }))],
    mlpNorm: () => normed(L.mlpNorm, [L.wGate, L.wUp]),
    mlp: () => [
      ...group(["gate", "up"], [[L.wGate, s.gate], [L.wUp, s.up]], L.mlpNorm),
      ...(siluInDown ? [] : [
        step("silu_mul", siluMul.bind({ gate: s.gate, up: s.up, out: s.act, n: rows * c.hiddenDim })),
      ]),
    ],
    mlpOut: () => [
      step(
        "down",
        bindLinear(gpu, L.wDown, {
          ...(siluInDown ? { x: s.gate, siluMulUp: s.up } : { x: s.act }),
          y: s.x,
          rows,
          accumulate: true,
        }),
      ),
    ],
  };
}

function step(label: string, step: Encodable): ForwardStep {
  return { label, step };
}
