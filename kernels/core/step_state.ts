/**
 * The per-sequence step state that lives on the GPU, so that several decode steps fit in one submit
 * without a host round trip (docs/webgpu.md §3).
 *
 * Layout (read-only storage for every kernel except `advance`):
 *   state: [STATE_WORDS] u32
 *     [0] pos   — position of the first token the current forward processes
 *     [1] step  — decode steps taken since the request started (seeds the sampler's RNG stream)
 *     [2], [3] reserved (end of sequence is checked on the host once per chunk of steps)
 * The host writes the whole state before a prefill; `advance` moves it after each forward.
 */
import { type Encodable, getPipeline, type Gpu, type Kernel } from "./gpu.ts";

export const STATE_WORDS = 4;
export const STATE_BYTES = STATE_WORDS * 4;

/** WGSL declaration other kernels paste in to read the state. */
export const STATE_STRUCT = /* wgsl */ `
struct StepState { pos: u32, step: u32, reserved0: u32, reserved1: u32 }
`;

const ADVANCE_WGSL = /* wgsl */ `
${STATE_STRUCT}
override N_TOKENS: u32 = 1u;
override STEP_INC: u32 = 1u;
@group(0) @binding(0) var<storage, read_write> state: StepState;

@compute @workgroup_size(1)
fn main() {
  state.pos = state.pos + N_TOKENS;
  state.step = state.step + STEP_INC;
}
`;

export interface AdvanceArgs {
  /** state: [STATE_WORDS] u32 */
  state: GPUBuffer;
  /** tokens processed by the forward this advances past */
  nTokens: number;
  /** 1 after a forward whose logits were sampled, 0 after an intermediate prefill chunk */
  stepInc: number;
}

/** Builds the WGSL of `advance` (no variants). */
export function advanceShader(): string {
  return ADVANCE_WGSL;
}

/** `advance`: pos += nTokens, step += stepInc. One invocation. */
export function createAdvance(gpu: Gpu): Kernel<AdvanceArgs> {
  return {
    bind({ state, nTokens, stepInc }: AdvanceArgs): Encodable {
      const pipeline = getPipeline(gpu, {
        name: "advance",
        code: ADVANCE_WGSL,
        constants: { N_TOKENS: nTokens, STEP_INC: stepInc },
        bindings: ["storage"],
      });
      const bindGroup = gpu.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: state } }],
      });
      return {
        encode(pass) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(1);
        },
      };
    },
  };
}
