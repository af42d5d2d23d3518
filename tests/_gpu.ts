/**
 * Test-side GPU acquisition and the CI policy (docs/style.md H):
 * with CI=true a missing adapter or feature fails the run; elsewhere GPU tests skip after one clear line.
 */
import { describeGpu, type Gpu, requestGpu } from "../kernels/core/mod.ts";

/** True when running under CI (the one place outside config.ts that reads the environment). */
export const IN_CI = Deno.env.get("CI") === "true";

/**
 * Returns a fresh GPU device for one test file, or null (outside CI only) when none exists.
 * Logs the adapter so every run states whether it used a real GPU or llvmpipe.
 */
export async function testGpu(options: { wantF16?: boolean } = {}): Promise<Gpu | null> {
  try {
    const gpu = await requestGpu(options);
    if (!loggedAdapter) {
      console.log(`[tests] ${describeGpu(gpu)}`);
      loggedAdapter = true;
    }
    return gpu;
  } catch (err) {
    if (IN_CI) throw err;
    console.warn(`[tests] skipping GPU tests: ${(err as Error).message}; install mesa-vulkan-drivers`);
    return null;
  }
}
let loggedAdapter = false;

/** Root of ../shared relative to the repo, or null (outside CI) with a printed reason. */
export function sharedPath(relative: string): string | null {
  const path = new URL(`../../shared/${relative}`, import.meta.url).pathname;
  try {
    Deno.statSync(path);
    return path;
  } catch {
    if (IN_CI) throw new Error(`Cannot find shared fixture "${path}": CI needs ../shared beside the repo`);
    console.warn(`[tests] skipping: missing shared fixture ${path}`);
    return null;
  }
}

/**
 * Runs `fn` with a fresh GPU, the ../shared fixtures named in `fixtures` (resolved by {@link sharedPath}) and a
 * temporary folder, then removes the folder and destroys the device; skips (outside CI) when a fixture or
 * the GPU is missing, as both of those do.
 * @param fixtures name → path under ../shared
 * @param fn the test body
 */
export async function withGpuFixtures<K extends string>(
  fixtures: Record<K, string>,
  fn: (gpu: Gpu, files: Record<K, string>, tmp: string) => Promise<void>,
): Promise<void> {
  const files = {} as Record<K, string>;
  for (const [name, relative] of Object.entries(fixtures) as [K, string][]) {
    const path = sharedPath(relative);
    if (!path) return;
    files[name] = path;
  }
  const gpu = await testGpu();
  if (!gpu) return;
  const tmp = await Deno.makeTempDir();
  try {
    await fn(gpu, files, tmp);
  } finally {
    await Deno.remove(tmp, { recursive: true });
    gpu.device.destroy();
  }
}

/** Seeded PRNG (mulberry32) for reproducible test inputs. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` seeded uniform values in [-scale, scale). */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const rand = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * scale;
  return out;
}

/** Zipf-like logits (p ∝ rank^−1.1, shuffled, with jitter), so a sampler's top-p and min-p really cut. */
export function zipfLogits(n: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  const rank = Array.from({ length: n }, (_, i) => i + 1);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [rank[i], rank[j]] = [rank[j], rank[i]];
  }
  return Float32Array.from(rank, (r) => -1.1 * Math.log(r) + 0.2 * rand());
}
