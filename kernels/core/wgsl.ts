/**
 * Helpers for kernels whose WGSL TypeScript writes out (unrolled GEMVs and GEMMs).
 */

/**
 * Straight-line WGSL, one line per index: WGSL has no unroll directive, and register arrays stay in
 * registers on NVIDIA only under constant indices.
 * @param count lines to write
 * @param line the line for index i
 * @param sep what joins them (a newline and the caller's indentation)
 */
export function unroll(count: number, line: (i: number) => string, sep = "\n  "): string {
  return Array.from({ length: count }, (_, i) => line(i)).join(sep);
}
