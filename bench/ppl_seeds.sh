#!/usr/bin/env bash
# The issue-12 three-seed perplexity table on a GPU machine, one command per model (each well inside a
# 10-minute limit on an H100; about 3 and 8 minutes expected, not yet measured):
#   bash bench/ppl_seeds.sh stories     # stories260K, context 512, TinyStories eval half
#   bash bench/ppl_seeds.sh lq49m       # lq-49m, context 1024, held-out books
#   bash bench/ppl_seeds.sh all         # both, one after the other
# Each runs `deno task bench:ppl --seeds 0,1,2` (leanquant-nu, leanquant-aff row-wise and g128, gptq at 4, 3
# and 2 bits; 128 calibration windows of the model's context per seed; the BENCHMARKS.md protocol) in one
# process, and writes <model>.json (every row, then mean/min/max/σ per run), <model>.md (the markdown table
# for BENCHMARKS.md) and <model>.log under $OUT (default ./ppl_seeds_out). Set LQ_WINDOWS to cap lq-49m's
# evaluation windows if time is short (default: the whole held-out text, 460 windows).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-ppl_seeds_out}
SHARED=${SHARED:-../shared}
mkdir -p "$OUT"
export DENO_WEBGPU_BACKEND=vulkan

run() { # name, then bench:ppl arguments
  local name=$1
  shift
  local t0=$SECONDS
  deno run -A bench/ppl_table.ts --seeds 0,1,2 --json "$OUT/$name.json" --md "$OUT/$name.md" "$@" 2>&1 |
    grep -v "XDG_RUNTIME_DIR" | tee "$OUT/$name.log"
  echo "[ppl_seeds] $name took $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
}

case "${1:-all}" in
stories | all)
  run stories260K --model "$SHARED/models/stories260K" --ctx 512 \
    --calib "$SHARED/data/calib/tinystories_calib_second_half.txt" \
    --text "$SHARED/data/tinystories/tinystories_eval_first_half.txt"
  ;;&
lq49m | all)
  run lq-49m --model "$SHARED/models/lq-49m" --ctx 1024 \
    --calib "$SHARED/data/calib/gutenberg_calib.txt" \
    --text "$SHARED/data/lq-49m/val_heldout.txt" ${LQ_WINDOWS:+--max-windows "$LQ_WINDOWS"}
  ;;
stories) ;;
*)
  echo "usage: bash bench/ppl_seeds.sh stories|lq49m|all" >&2
  exit 2
  ;;
esac
