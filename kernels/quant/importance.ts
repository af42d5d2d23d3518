/**
 * LeanQuant's per-column importance (docs/quantization.md §2.1, pitfall 4):
 *   a_k = U_kk^(−p) / max_j U_jj^(−p) = (min_j U_jj / U_kk)^p,
 * with U the upper Cholesky factor of the damped, act-order-permuted H⁻¹ (the code's weight, not
 * diag(H⁻¹)^(−p)). The ratio form never overflows f32: U_kk^(−4) alone can exceed 1e20 on layers with
 * massive activations, while (min U / U_kk) lies in (0, 1]. Requires p ≥ 0 (then the maximum of U^(−p)
 * sits at the smallest diagonal entry).
 *
 * One workgroup reads the diagonal twice (a min-reduction, then the write); U is only touched at its
 * `cols` diagonal entries, so this costs nothing next to the factorisation that produced it.
 */
import {
  type Encodable,
  getPipeline,
  type Gpu,
  isSplit,
  type Kernel,
  type MatrixAccess,
  matrixAccess,
  matrixBindings,
  type MatrixBuffer,
  matrixBytes,
  splitElement,
  uniformParams,
} from "../core/mod.ts";

function wgsl(U: MatrixAccess): string {
  return U.wgsl + /* wgsl */ `
override WG: u32 = 256u;

struct Params { cols: u32, exponent: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> U: array<f32>;                // (cols, cols) upper factor, row-major
@group(0) @binding(2) var<storage, read_write> importance: array<f32>; // (cols) a_k, max 1

var<workgroup> red: array<f32, WG>;

// r^p by squaring for integer p: a few correctly rounded products, where pow(r, p) = exp2(p·log2 r)
// loses ~p·|log2 r| ulps on the tiny ratios of a wide diagonal.
fn powInt(r: f32, p: u32) -> f32 {
  var result = 1.0;
  var b = r;
  var e = p;
  loop {
    if ((e & 1u) != 0u) { result *= b; }
    e = e >> 1u;
    if (e == 0u) { break; }
    b *= b;
  }
  return result;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = params.cols;
  var m = 3.40282347e38;
  for (var k = lid; k < n; k += WG) { m = min(m, ${U.ld("k * (n + 1u)")}); }
  red[lid] = m;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid < s) { red[lid] = min(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let uMin = red[0];
  let p = params.exponent;
  let integral = p == floor(p) && p <= 64.0;
  for (var k = lid; k < n; k += WG) {
    let u = ${U.ld("k * (n + 1u)")};
    // f32 division may be off by ~2.5 ulp (NVIDIA); one Newton step on the residual makes it ~exact.
    let r0 = uMin / u;
    let r = r0 + fma(-r0, u, uMin) / u;
    var a: f32;
    if (integral) { a = powInt(r, u32(p)); } else { a = pow(r, p); }
    // The maximum is exactly 1 whatever the division's and pow's accuracy.
    importance[k] = select(a, 1.0, u == uMin);
  }
}
`;
}

/** Buffers and sizes of one importance computation. */
export interface ImportanceArgs {
  /** U: (cols, cols) f32, the upper Cholesky factor of H⁻¹ in permuted column order; two parts past one binding */
  U: MatrixBuffer;
  /** importance: (cols) f32 output, a_k normalised so that max a = 1 */
  importance: GPUBuffer;
  cols: number;
  /** p ≥ 0 (LeanQuant default 4) */
  exponent: number;
}

/**
 * The WGSL source (variants only through the WG override).
 * @param spec `split`: U in two parts (matrix_parts.ts)
 * @returns the shader text
 */
export function importanceShader({ split = false }: { split?: boolean } = {}): string {
  return wgsl(matrixAccess("U", split ? { binding: 3, access: "read" } : null));
}

/**
 * Builds the importance kernel: one workgroup, so one dispatch of (1, 1, 1).
 * @param gpu the device
 * @returns a kernel whose `bind` fixes U, the output and p
 * @example
 * ```ts ignore
 * createImportance(gpu).bind({ U, importance, cols, exponent: 4 }).encode(pass);
 * ```
 */
export function createImportance(gpu: Gpu): Kernel<ImportanceArgs> {
  const wg = Math.min(256, gpu.maxInvocationsPerWorkgroup);
  const pipelineFor = (U?: MatrixBuffer) =>
    U && isSplit(U)
      ? getPipeline(gpu, {
        name: "importance",
        code: importanceShader({ split: true }),
        constants: { WG: wg, U_SPLIT: splitElement(U) },
        spec: { split: true },
        bindings: ["uniform", "read-only-storage", "storage", "read-only-storage"],
      })
      : getPipeline(gpu, {
        name: "importance",
        code: importanceShader(),
        constants: { WG: wg },
        bindings: ["uniform", "read-only-storage", "storage"],
      });
  pipelineFor();
  return {
    bind({ U, importance, cols, exponent }: ImportanceArgs): Encodable {
      const pipeline = pipelineFor(U);
      const [U0, ...U1] = matrixBindings(U);
      const what = `Cannot bind importance with exponent ${exponent} and cols ${cols}`;
      if (!(exponent >= 0) || !(cols >= 1)) throw new Error(`${what}: expected exponent ≥ 0 and cols ≥ 1`);
      if (matrixBytes(U) < cols * cols * 4 || importance.size < cols * 4) {
        throw new Error(
          `${what}: U has ${
            matrixBytes(U)
          } bytes and importance ${importance.size}, expected (cols, cols) and (cols) f32`,
        );
      }
      const params = uniformParams(gpu, [["u32", cols], ["f32", exponent]], "importance params");
      const bindGroup = gpu.device.createBindGroup({
        label: "importance",
        layout: pipeline.getBindGroupLayout(0),
        entries: [params, U0, importance, ...U1].map((buffer, binding) => ({
          binding,
          resource: { buffer },
        })),
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
