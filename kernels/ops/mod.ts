/**
 * Inference ops, one kernel per module: embedding, RMSNorm, per-head q/k RMSNorm, bias add, RoPE (+ KV
 * append), attention, SiLU·mul (or GELU·mul), soft-capping, sampling, NLL, f16 conversion; the batched
 * path's row bookkeeping, paged RoPE + KV append and paged attention (per row, and tiled for prompt rows).
 */
export { type AttentionArgs, createAttention } from "./attention.ts";
export { createFlashAttention } from "./flash_attention.ts";
export {
  type BatchPrepareArgs,
  createBatchPrepare,
  createDispatchBuffer,
  createGatherRows,
  MAX_ROW_SPLITS,
  ROW_ENTRY_WORDS,
  ROW_NONE,
  SLOT_STATE_WORDS,
  SLOT_STRUCT,
} from "./batch_rows.ts";
export {
  type BatchSampleArgs,
  type BatchSampleSpec,
  createBatchSample,
  GREEDY_SLOT,
  MAX_TOP_LOGPROBS,
  packSlotParams,
  SLOT_PARAMS_BYTES,
  slotProcesses,
  type SlotSettings,
} from "./batch_sample.ts";
export { type BiasAddArgs, createBiasAdd } from "./bias_add.ts";
export { createEmbed } from "./embed.ts";
export { createF16Convert } from "./f16_convert.ts";
export { createFillRandom } from "./fill_random.ts";
export { createHeadNorm, type HeadNormArgs } from "./head_norm.ts";
export { createLogitsProcess, type LogitsProcessArgs, maskWords } from "./logits_process.ts";
export { createLogprobs, LOGPROB_RANK_WORD, LOGPROB_RECORD_WORDS } from "./logprobs.ts";
export { createNll } from "./nll.ts";
export {
  createPagedAttention,
  type PagedAttentionArgs,
  pagedMaxSplits,
  SPLIT_CAP,
  SPLIT_SPAN,
} from "./paged_attention.ts";
export { createPagedFlashAttention } from "./paged_flash_attention.ts";
export {
  createPagedRopeAppend,
  type KvType,
  type PagedLayout,
  type PagedRopeAppendArgs,
  poolBytesPerPosition,
} from "./paged_kv.ts";
export { createRmsNorm, type RmsNormArgs } from "./rms_norm.ts";
export { createRope, type RopeArgs } from "./rope.ts";
export { createSiluMul, type GateActivation, type SiluMulArgs, siluMulFn } from "./silu_mul.ts";
export { createSoftcap, type SoftcapArgs } from "./softcap.ts";
