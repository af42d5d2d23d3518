/**
 * The GPU handle every kernel is built from: adapter, device, limits, features and a pipeline cache.
 *
 * Facts that shape this module are in docs/webgpu.md: request every limit explicitly (the
 * WebGPU defaults cap a binding at 128 MiB), coerce limits with Number(), detect a null adapter and
 * name the likely causes, and create pipelines inside a validation error scope.
 */

/** A device plus what we learned about it at startup. */
export interface Gpu {
  readonly device: GPUDevice;
  readonly adapterInfo: GPUAdapterInfo;
  /** True when the device was created with `shader-f16`. */
  readonly hasF16: boolean;
  /** True when the device was created with `timestamp-query`. */
  readonly hasTimestamps: boolean;
  /** True on a CPU adapter (llvmpipe/lavapipe): fine for tests, slow for serving. */
  readonly isCpu: boolean;
  /** Largest storage binding in bytes; tensors above it are split by the caller. */
  readonly maxBindingBytes: number;
  readonly maxBufferBytes: number;
  readonly maxWorkgroupStorageBytes: number;
  readonly maxInvocationsPerWorkgroup: number;
  readonly maxWorkgroupsPerDimension: number;
  /** Set once the device is lost; the engine reports it through /health. */
  lostReason: string | null;
  readonly pipelineCache: Map<string, GPUComputePipeline>;
  /** Validation results of pipelines built so far; {@link checkPipelines} awaits them. */
  readonly pendingChecks: Promise<void>[];
}

export interface RequestGpuOptions {
  /** Ask for `shader-f16` when the adapter has it (default true). */
  wantF16?: boolean;
}

/**
 * Acquires a high-performance adapter and a device with the adapter's maximum limits.
 * @param options feature wishes
 * @returns the GPU handle
 * @throws Error with a diagnosis when no adapter exists
 */
export async function requestGpu({ wantF16 = true }: RequestGpuOptions = {}): Promise<Gpu> {
  if (!("gpu" in navigator)) {
    throw new Error("Cannot use WebGPU: navigator.gpu is missing; run Deno with --unstable-webgpu");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (adapter === null) {
    throw new Error(
      "Cannot find a WebGPU adapter: Vulkan found no driver. Install the Vulkan loader (libvulkan1) and a " +
        "driver: on NVIDIA the ICD comes with the driver (in Docker: --gpus all with NVIDIA_DRIVER_CAPABILITIES " +
        "including graphics, or VK_DRIVER_FILES pointing at nvidia_icd.json); without a GPU, mesa-vulkan-drivers " +
        "runs everything on the CPU (lavapipe: correct, slow)",
    );
  }
  const limits = adapter.limits;
  const features: GPUFeatureName[] = [];
  const hasF16 = wantF16 && adapter.features.has("shader-f16");
  if (hasF16) features.push("shader-f16");
  const hasTimestamps = adapter.features.has("timestamp-query");
  if (hasTimestamps) features.push("timestamp-query");
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: Number(limits.maxStorageBufferBindingSize),
    maxBufferSize: Number(limits.maxBufferSize),
    maxComputeWorkgroupStorageSize: Number(limits.maxComputeWorkgroupStorageSize),
    maxComputeInvocationsPerWorkgroup: Number(limits.maxComputeInvocationsPerWorkgroup),
    maxComputeWorkgroupSizeX: Number(limits.maxComputeWorkgroupSizeX),
    maxComputeWorkgroupSizeY: Number(limits.maxComputeWorkgroupSizeY),
    maxComputeWorkgroupsPerDimension: Number(limits.maxComputeWorkgroupsPerDimension),
    maxStorageBuffersPerShaderStage: Math.min(Number(limits.maxStorageBuffersPerShaderStage), 16),
  };
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  const info = adapter.info;
  const gpu: Gpu = {
    device,
    adapterInfo: info,
    hasF16,
    hasTimestamps,
    isCpu: /llvmpipe|lavapipe|swiftshader/i.test(info.description) || info.isFallbackAdapter === true,
    // wgpu caps one binding at i32::MAX; keep a 4-byte-aligned margin.
    maxBindingBytes: Math.min(Number(limits.maxStorageBufferBindingSize), 2147483644),
    maxBufferBytes: Number(limits.maxBufferSize),
    maxWorkgroupStorageBytes: Number(limits.maxComputeWorkgroupStorageSize),
    maxInvocationsPerWorkgroup: Number(limits.maxComputeInvocationsPerWorkgroup),
    maxWorkgroupsPerDimension: Number(limits.maxComputeWorkgroupsPerDimension),
    lostReason: null,
    pipelineCache: new Map(),
    pendingChecks: [],
  };
  device.lost.then((lost) => {
    gpu.lostReason = `GPU device lost (${lost.reason}): ${lost.message}`;
  });
  return gpu;
}

/** One line describing the adapter, for logs. */
export function describeGpu(gpu: Gpu): string {
  const i = gpu.adapterInfo;
  const kind = gpu.isCpu ? "CPU adapter" : "GPU adapter";
  return `${kind}: ${i.description || i.device || "unknown"} (vendor ${i.vendor}); ` +
    `shader-f16 ${gpu.hasF16 ? "on" : "off"}, max binding ${(gpu.maxBindingBytes / 2 ** 20).toFixed(0)} MiB`;
}

/** What a kernel module hands to {@link getPipeline}. */
export interface PipelineSpec {
  /** Kernel name, e.g. "rms_norm". */
  name: string;
  /** Full WGSL source (already specialised for f16/f32 where `override` cannot). */
  code: string;
  /** Values for WGSL `override` constants. */
  constants?: Record<string, number>;
  /** Binding types in binding-index order, all in group 0. */
  bindings: readonly BindingKind[];
  /** Any stable JSON-able description of the variant; part of the cache key. */
  spec?: unknown;
}

/** The kinds of binding our kernels use. */
export type BindingKind = "uniform" | "storage" | "read-only-storage";

/**
 * Returns a cached compute pipeline with an explicit bind-group layout (not "auto"; gfx-rs/wgpu#5196).
 * Compilation errors throw with the kernel name and spec.
 */
export function getPipeline(gpu: Gpu, p: PipelineSpec): GPUComputePipeline {
  const key = `${p.name}:${JSON.stringify(p.spec ?? null)}:${JSON.stringify(p.constants ?? {})}`;
  const cached = gpu.pipelineCache.get(key);
  if (cached) return cached;
  const device = gpu.device;
  const bindGroupLayout = device.createBindGroupLayout({
    label: p.name,
    entries: p.bindings.map((type, binding) => ({
      binding,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type },
    })),
  });
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ label: p.name, code: p.code });
  const pipeline = device.createComputePipeline({
    label: p.name,
    layout: device.createPipelineLayout({ bindGroupLayouts: [bindGroupLayout] }),
    compute: { module, entryPoint: "main", constants: p.constants ?? {} },
  });
  // The error scope resolves asynchronously; record it so callers can await checkPipelines().
  gpu.pendingChecks.push(
    device.popErrorScope().then(async (err) => {
      if (!err) return;
      const info = await module.getCompilationInfo();
      const msgs = info.messages.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ");
      throw new Error(
        `Cannot build kernel "${p.name}" ${JSON.stringify(p.spec ?? {})}: ${err.message}${
          msgs ? ` (${msgs})` : ""
        }`,
      );
    }),
  );
  gpu.pipelineCache.set(key, pipeline);
  return pipeline;
}

/** Awaits the validation of every pipeline built so far; throws the first compile error. */
export async function checkPipelines(gpu: Gpu): Promise<void> {
  const checks = gpu.pendingChecks.splice(0);
  await Promise.all(checks);
}

/** Builds a bind group for `pipeline` from buffers in binding order. */
export function bindBuffers(
  gpu: Gpu,
  pipeline: GPUComputePipeline,
  buffers: readonly (GPUBuffer | GPUBufferBinding)[],
  label = "",
): GPUBindGroup {
  return gpu.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((b, binding) => ({
      binding,
      resource: b instanceof GPUBuffer ? { buffer: b } : b,
    })),
  });
}

/**
 * Splits a 1-D workgroup count into a 2-D grid within `maxComputeWorkgroupsPerDimension`.
 * Shaders recover the flat index as `wid.x + wid.y * nwg.x` (with `@builtin(num_workgroups) nwg`)
 * and must ignore indices at or past the real count.
 */
export function dispatch2d(gpu: Gpu, count: number): [number, number] {
  const max = gpu.maxWorkgroupsPerDimension;
  if (count <= max) return [Math.max(count, 1), 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y];
}

/** Integer ceil-division for dispatch sizes. */
export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

/** A kernel after `bind`: its pipeline, bind group and dispatch size are fixed; encoding is cheap. */
export interface Encodable {
  /** Records this kernel's dispatches into `pass`. Never begins a pass or submits. */
  encode(pass: GPUComputePassEncoder): void;
}

/** A built kernel: `bind` fixes its buffers and sizes (done once per plan, not per dispatch). */
export interface Kernel<Args> {
  bind(args: Args): Encodable;
}

/** Several encodables recorded one after another into the same pass. */
export function sequence(steps: readonly Encodable[]): Encodable {
  return { encode: (pass) => steps.forEach((step) => step.encode(pass)) };
}

/** An Encodable that runs `pipeline` once with one bind group over a (gx, gy) grid of workgroups. */
export function singleDispatch(
  pipeline: GPUComputePipeline,
  bindGroup: GPUBindGroup,
  [gx, gy]: readonly [number, number],
): Encodable {
  return {
    encode(pass) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(gx, gy);
    },
  };
}
