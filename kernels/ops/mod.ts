/**
 * Inference ops, one kernel per module: embedding, RMSNorm, per-head q/k RMSNorm, bias add, RoPE (+ KV
 * append), attention, SiLU·mul (or GELU·mul), soft-capping, sampling, NLL, f16 conversion.
 */
export { type AttentionArgs, createAttention } from "./attention.ts";
export { type BiasAddArgs, createBiasAdd } from "./bias_add.ts";
export { createEmbed } from "./embed.ts";
export { createF16Convert } from "./f16_convert.ts";
export { createFillRandom } from "./fill_random.ts";
export { createHeadNorm, type HeadNormArgs } from "./head_norm.ts";
export { createNll } from "./nll.ts";
export { createRmsNorm, type RmsNormArgs } from "./rms_norm.ts";
export { createRope, type RopeArgs } from "./rope.ts";
export { createSample, SAMPLE_PARAMS_BYTES, writeSampleParams } from "./sample.ts";
export { createSiluMul, type GateActivation, type SiluMulArgs, siluMulFn } from "./silu_mul.ts";
export { createSoftcap, type SoftcapArgs } from "./softcap.ts";
