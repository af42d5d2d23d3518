/**
 * The row counts batched forwards run at (inference/engine/batch_runner.ts): few and bounded, so the
 * runner can bind every one when a model is installed; a forward's rows are padded up to the next one.
 */

/** Fewest rows of a prefill bucket (the prompt GEMMs tile 32 rows or more anyway). */
const PREFILL_MIN_ROWS = 16;

/**
 * Row counts of decode forwards: 1, even counts up to 16, then multiples of 4 (of 16 from 64, 64 from 256,
 * 256 from 1024: the plan count stays bounded) up to `maxSlots`, which is always one. A padding row costs
 * what a real one does: the batched decode kernels (kernels/matmul, row_lanes_wgsl.ts) read the weights
 * once per dispatch of up to 64 rows, and their time grows with the rows.
 */
export function decodeBuckets(maxSlots: number): number[] {
  const out = [1];
  for (let b = 2; b < Math.min(maxSlots, 17); b += 2) out.push(b);
  for (let b = 20; b < maxSlots; b += b < 64 ? 4 : b < 256 ? 16 : b < 1024 ? 64 : 256) out.push(b);
  return [...out.filter((b) => b < maxSlots), maxSlots];
}

/**
 * Row counts of prefill forwards: powers of two from 16 to 512, then four per octave (512, 640, 768, 896,
 * 1,024, 1,280, …) below `maxRows`, and `maxRows`. A prompt of 600 ids that an idle server reads in one
 * forward then pads 40 rows, not the 424 of the next power of two; the plan count stays bounded.
 */
export function prefillBuckets(maxRows: number): number[] {
  const out: number[] = [];
  const next = (b: number) => b < 512 ? 2 * b : b + 2 ** Math.floor(Math.log2(b)) / 4;
  for (let b = PREFILL_MIN_ROWS; b < maxRows; b = next(b)) out.push(b);
  return [...out, maxRows];
}

/** Logit rows of a forward: powers of two below `maxSlots`, and `maxSlots`. */
export function logitBuckets(maxSlots: number): number[] {
  const out: number[] = [];
  for (let b = 1; b < maxSlots; b *= 2) out.push(b);
  return [...out, maxSlots];
}

/** The smallest bucket that holds `n` rows. */
export function bucketOf(n: number, buckets: readonly number[]): number {
  const b = buckets.find((x) => x >= n);
  if (b === undefined) throw new Error(`Cannot fit ${n} rows: the largest bucket holds ${buckets.at(-1)}`);
  return b;
}
