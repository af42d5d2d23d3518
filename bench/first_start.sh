#!/bin/bash
# The default model's first start (quantizing at startup) and second start (the cached artifact), timed to a
# 200 from /health (issue 11). Random weights at SmolLM2-360M-Instruct's shape, written as the cached snapshot of
# that repo id in a scratch Hugging Face cache, then served with the README's first command (no --model),
# offline. Run from the repository root:
#   bash bench/first_start.sh [tokenizer dir, default ../shared/models/lq-49m] [timeout per start in s, default 600]
#     [extra server flags…]
# Scratch files go to ${SCRATCH:-/tmp/leanserve-first-start} (removed first); one JSON line per start.
set -u
tok=${1:-../shared/models/lq-49m}
limit=${2:-600}
shift $(($# < 2 ? $# : 2))
T=${SCRATCH:-/tmp/leanserve-first-start}
rm -rf "$T" && mkdir -p "$T"
deno run -A --cached-only bench/random_folder.ts --shape smollm2-360m --hf-cache "$T/hub" --tokenizer "$tok" || exit 1
export HF_HUB_CACHE=$T/hub HF_HUB_OFFLINE=1
first=$(deno run -A --cached-only bench/first_start.ts --timeout "$limit" --label "first start" -- \
  --artifacts-dir "$T/art" "$@")
echo "$first"
case $first in
*ready_seconds*)
  deno run -A --cached-only bench/first_start.ts --timeout 120 --label "second start (cached artifact)" -- \
    --artifacts-dir "$T/art" "$@"
  ;;
*) echo '{"label":"second start (cached artifact)","skipped":"the first start did not finish"}' ;;
esac
