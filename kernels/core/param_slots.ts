/**
 * Many small `struct Params` in one uniform buffer, one aligned slot each.
 *
 * A blocked factorisation records hundreds of dispatches whose params differ (the Cholesky has three
 * per 64 columns). One buffer and one writeBuffer for the whole plan, with each dispatch binding its
 * own range, replaces hundreds of tiny buffers that would each need freeing. Slots start at multiples
 * of `minUniformBufferOffsetAlignment` (256 on the H100, 32 on lavapipe), as binding offsets must.
 */
import type { Encodable, Gpu } from "./gpu.ts";
import type { ParamField } from "./buffers.ts";

/** Dispatches bound together; `destroy()` frees the params buffer they share. */
export interface BoundPlan extends Encodable {
  /** Frees the plan's params buffer (call once its last submit is queued; WebGPU keeps it alive). */
  destroy(): void;
}

/** Dispatches bound together but encoded one by one (interleaved with other kernels' steps). */
export interface BoundSteps {
  /** One entry per bound item, in order; an empty item encodes nothing. */
  readonly steps: readonly Encodable[];
  /** Frees the params buffer the steps share. */
  destroy(): void;
}

/** The slots of {@link packParamSlots}, in the order of the lists given. */
export interface ParamSlots {
  /** One buffer range per params list; bind it where the shader has its `var<uniform> params`. */
  readonly slots: readonly GPUBufferBinding[];
  readonly buffer: GPUBuffer;
}

/**
 * Packs each list of scalar fields (in WGSL field order, 4 bytes each) into its own slot of one buffer.
 * @param gpu the device
 * @param lists one field list per dispatch
 * @param label debug label of the buffer
 * @returns the buffer and one binding range per list
 */
export function packParamSlots(
  gpu: Gpu,
  lists: readonly (readonly ParamField[])[],
  label: string,
): ParamSlots {
  const align = Number(gpu.device.limits.minUniformBufferOffsetAlignment);
  // A uniform binding is sized by its struct, rounded up to 16 bytes.
  const size = Math.ceil(Math.max(4, ...lists.map((l) => l.length)) / 4) * 16;
  const stride = Math.ceil(size / align) * align;
  const data = new ArrayBuffer(Math.max(1, lists.length) * stride);
  const view = new DataView(data);
  lists.forEach((fields, slot) => {
    fields.forEach(([type, value], i) => {
      const at = slot * stride + i * 4;
      if (type === "u32") view.setUint32(at, value, true);
      else if (type === "i32") view.setInt32(at, value, true);
      else view.setFloat32(at, value, true);
    });
  });
  const buffer = gpu.device.createBuffer({
    label,
    size: data.byteLength,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  gpu.device.queue.writeBuffer(buffer, 0, data);
  return { buffer, slots: lists.map((_, i) => ({ buffer, offset: i * stride, size })) };
}
