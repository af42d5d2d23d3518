#!/usr/bin/env bash
# Where batched decode time goes, in one GPU call (random weights at the Llama-3-8B shape; label figures so):
#   bash bench/decode_sweep.sh [variants]
# Writes under $OUT (default ./decode_sweep_out): profile_<format>_b<B>.txt (`deno task bench:profile
# --batch B`: one engine decode step, kernel by kernel) and gemm_<variant>.txt (bench:gemm's layer linears
# of 4-bit affine at 16, 32, 64 and 512 rows for each batched-path variant, one process per variant:
# timings drifted within long single-process sweeps). DENO_RUN overrides the deno command, e.g.
# "deno run -A --cached-only" on a machine without the registry. Variant names: bench/gemm.ts (mm, then
# n<outputs per lane> u<unroll> w<workgroup> k<K split> r<rows per dispatch> l<rows per lane>, in that order).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-decode_sweep_out}
mkdir -p "$OUT"
export DENO_WEBGPU_BACKEND=vulkan
R=${DENO_RUN:-deno run -A}
variants=${1:-mm mml8 mml16 mmn8l8 mmn2l16 mmn2l8 mmn8 mmw512l16 mmn8w512l8 mmk16}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>/dev/null
date -u >"$OUT/date.txt"
for b in 1 16 64; do
  timeout 60 $R bench/profile.ts --random llama3-8b --format affine4 --batch $b --context 64 \
    >"$OUT/profile_affine4_b$b.txt" 2>&1
done
for f in lut4 dense; do
  timeout 60 $R bench/profile.ts --random llama3-8b --format $f --batch 64 --context 64 \
    >"$OUT/profile_${f}_b64.txt" 2>&1
done
for v in $variants; do
  timeout 40 $R bench/gemm.ts --formats affine4 --rows 16,32,64,512 --reps 20 --variants $v \
    >"$OUT/gemm_$v.txt" 2>&1
done
