#!/usr/bin/env bash
# The issue-9 serving measurements on a GPU machine in one call (about 5 minutes on an H100 or H200; random
# weights at the Llama-3-8B shape, so the figures must be labelled "random weights"):
#   bash bench/serve_suite.sh            # everything below
#   bash bench/serve_suite.sh decode     # only the decode-dominated table (affine4, lut4, lut4f32, dense)
#   bash bench/serve_suite.sh sweep [variants [lut variants]]   # the batched kernels: profiles, lane variants
#   [BASE=<dir>] [HTTP_TOKENIZER=<dir>] bash bench/serve_suite.sh http   # main.ts (engine in its Worker) under load
#   [BASE=<dir>] bash bench/serve_suite.sh prefill   # the engine's prompt kernels: 2,048-id prefill per format
#   bash bench/serve_suite.sh staged   # decode attention with and without staged K rows (--staged-keys)
#   [BASE=<dir>] bash bench/serve_suite.sh score   # an evaluation harness's load: prompts scored (echo)
#   PREFILL_BASE=<dir> SCORE_BASE=<dir> bash bench/serve_suite.sh pending   # everything untimed, in one call
# Writes, under $OUT (default ./serve_suite_out): runner.txt (the single-sequence baseline, `deno task
# bench`), decode_<format>.md (16-id prompts, 64 output ids, 1/2/16/64 streams: ITL p50 is one decode step),
# issue.md (the issue's 512 + 256 requests at 1/16/64 streams), long_<format>.md (a 2,048-id prompt arriving
# while 16 streams decode), ttft.md (one 2,048-id prompt), runner_engine_<n>.txt (`deno task bench` timing an n-id
# prompt on the engine's kernels) and profile_<format>.txt (one 64-row engine decode step, kernel by kernel).
# `sweep` writes profile_<format>_b<B>.txt (one decode step of B rows on the batched kernels, kernel by
# kernel) and gemm_<variant>.txt (bench:gemm's affine4 layer linears at 16, 32, 64 and 512 rows per lane
# variant, one process each: timings drifted within long single-process sweeps; variant names in
# bench/gemm.ts: mm, then n<outputs per lane> u<unroll> w<workgroup> k<K split> r<rows per dispatch> l<rows
# per lane>, in that order).
# Pack $OUT into one archive before fetching it: the device tool returns at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-serve_suite_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd) # absolute: some modes run from a BASE tree
export DENO_WEBGPU_BACKEND=vulkan
# DENO_RUN overrides how scripts run, e.g. "deno run -A --cached-only" on a machine without the registry.
R=${DENO_RUN:-deno run -A}
S="$R bench/serve.ts --random llama3-8b --waves 1"
what=${1:-all}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>/dev/null
date -u >"$OUT/date.txt"
if [ "$what" = sweep ]; then
  P="$R bench/profile.ts --random llama3-8b --context 64 --batch-invariant"
  for b in 1 16 64; do timeout 60 $P --format affine4 --batch $b >"$OUT/profile_affine4_b$b.txt" 2>&1; done
  for f in lut4 dense; do timeout 60 $P --format $f --batch 64 >"$OUT/profile_${f}_b64.txt" 2>&1; done
  for v in ${2:-mm mml8 mmn8l8 mmn4l8 mmn8 mmk16}; do
    timeout 40 $R bench/gemm.ts --formats affine4 --rows 16,32,64,512 --reps 20 --variants $v \
      >"$OUT/gemm_$v.txt" 2>&1
  done
  # LUT weights: the f32 batched kernel (mm) against the int8 path, chunk tables (mqc) or byte-shifted (mqs)
  for v in ${3:-mm mq mqc mqs mqcl8 mqcu2}; do
    timeout 40 $R bench/gemm.ts --formats lut4 --rows 16,32,64,512 --reps 20 --variants $v \
      >"$OUT/gemm_lut4_$v.txt" 2>&1
  done
  exit 0
fi
# `prefill`: issue 12's prefill on the engine's kernels (`deno task bench --prompt-kernels engine`, 2,048 ids
# in one forward) for 4-bit LUT and affine, then the int8 batched kernels alone at prompt-piece row counts
# (bench:gemm mq / mm at 96, 128 and 512 rows; one dispatch holds up to 128 rows since the eighteenth
# session, 64 before). With BASE=<dir> (a `git archive` of an older commit beside the tree) each runs on both,
# alternately, one process each: prefill_<format>_<tree>_<run>.txt, gemm_<format>_<tree>.txt.
if [ "$what" = prefill ]; then
  trees=(".:head")
  [ -n "${BASE:-}" ] && trees=("$BASE:base" ".:head")
  for run in 1 2; do
    for f in lut4 affine4; do
      for t in "${trees[@]}"; do
        (cd "${t%%:*}" && timeout 90 $R bench/bench.ts --random llama3-8b --format $f --prompt 2048 --decode 16 \
          --runs 2 --prompt-kernels engine) >"$OUT/prefill_${f}_${t##*:}_$run.txt" 2>&1
      done
    done
  done
  for t in "${trees[@]}"; do
    (cd "${t%%:*}" && timeout 60 $R bench/gemm.ts --formats lut4 --rows 96,128,512 --reps 20 --variants mq) \
      >"$OUT/gemm_lut4_${t##*:}.txt" 2>&1
    (cd "${t%%:*}" && timeout 60 $R bench/gemm.ts --formats affine4 --rows 96,128,512 --reps 20 --variants mm) \
      >"$OUT/gemm_affine4_${t##*:}.txt" 2>&1
  done
  exit 0
fi
# `staged`: the eighteenth session's staged-keys decode attention (BatchOptions.stagedKeys, the same bits),
# untimed when written: one decode step profiled at 16 and 64 rows, 512 and 2,048 positions, each without and
# with it (profile_b<B>_c<ctx>[_staged].txt), then the issue's 512 + 256 load at 1/16/64 streams both ways
# (issue[_staged].md).
if [ "$what" = staged ]; then
  for ctx in 512 2048; do
    for b in 16 64; do
      for k in "" --staged-keys; do
        timeout 60 $R bench/profile.ts --random llama3-8b --format affine4 --batch $b --context $ctx $k \
          >"$OUT/profile_b${b}_c${ctx}${k:+_staged}.txt" 2>&1
      done
    done
  done
  for k in "" --staged-keys; do
    timeout 150 $S --formats affine4 --prompt 512 --output 256 --concurrency 1,16,64 $k \
      --md "$OUT/issue${k:+_staged}.md" >"$OUT/issue${k:+_staged}.txt" 2>&1
  done
  exit 0
fi
# `score`: requests that score their prompts (echo, logprobs 1, max_tokens 1: lm-evaluation-harness's
# loglikelihood requests), 128-id prompts at 1 and 16 concurrent requests (score[_<tree>].md). With BASE=<dir>,
# that tree's engine runs the same load first (this tree's bench/serve.ts, which has --score, is copied in).
if [ "$what" = score ]; then
  trees=(".:head")
  [ -n "${BASE:-}" ] && trees=("$BASE:base" ".:head") && cp bench/serve.ts "$BASE/bench/serve.ts"
  for t in "${trees[@]}"; do
    (cd "${t%%:*}" && timeout 120 $S --formats affine4 --prompt 128 --concurrency 1,16 --requests 64 --score \
      --md "$OUT/score_${t##*:}.md") >"$OUT/score_${t##*:}.txt" 2>&1
  done
  exit 0
fi
# `pending`: what the eighteenth and nineteenth sessions left untimed, most important first, each step bounded
# so one device call (10 minutes) holds it, and $OUT/pending.tgz rewritten after each stage (a call cut short
# still brings back what ran): staged keys at 16 rows / 512 positions and 64 / 2,048, the LUT prefill on
# PREFILL_BASE (a `git archive` of 1a1c56d: 64-row dispatches) and this tree, the issue's load at 16 and 64
# streams both ways, the other staged profiles, int8 KV profiles, and the harness's scoring load on SCORE_BASE
# (of b0dc796: one prompt at a time, scored and then prefilled) and this tree (scored in the prefill since the
# twentieth session), then embeddings (`--embed`).
if [ "$what" = pending ]; then
  P="$R bench/profile.ts --random llama3-8b --format affine4"
  pack() { (cd "$OUT/.." && tar czf "$OUT/pending.tgz" --exclude pending.tgz "$(basename "$OUT")"); }
  prof() {
    for k in "" --staged-keys; do
      timeout 45 $P --batch "$1" --context "$2" $k >"$OUT/profile_b$1_c$2${k:+_staged}.txt" 2>&1
    done
    echo "profile $1 $2 $(date -u +%T)" >>"$OUT/progress.txt"
  }
  prof 16 512
  prof 64 2048
  for t in "${PREFILL_BASE:-}:base" ".:head"; do
    [ "${t%%:*}" = "" ] && continue
    (cd "${t%%:*}" && timeout 60 $R bench/bench.ts --random llama3-8b --format lut4 --prompt 2048 --decode 16 \
      --runs 2 --prompt-kernels engine) >"$OUT/prefill_lut4_${t##*:}.txt" 2>&1
    echo "prefill $t $(date -u +%T)" >>"$OUT/progress.txt"
  done
  pack
  for k in "" --staged-keys; do
    timeout 90 $S --formats affine4 --prompt 512 --output 256 --concurrency 16,64 $k \
      --md "$OUT/issue${k:+_staged}.md" >"$OUT/issue${k:+_staged}.txt" 2>&1
    echo "issue $k $(date -u +%T)" >>"$OUT/progress.txt"
  done
  pack
  prof 16 2048
  prof 64 512
  for bc in "64 2048" "16 512"; do
    set -- $bc
    timeout 45 $P --batch "$1" --context "$2" --kv-cache-dtype int8 >"$OUT/profile_b$1_c$2_int8.txt" 2>&1
  done
  pack
  [ -n "${SCORE_BASE:-}" ] && cp bench/serve.ts "$SCORE_BASE/bench/serve.ts"
  for t in "${SCORE_BASE:-}:base" ".:head"; do
    [ "${t%%:*}" = "" ] && continue
    (cd "${t%%:*}" && timeout 50 $S --formats affine4 --prompt 128 --concurrency 1,16 --requests 48 --score \
      --md "$OUT/score_${t##*:}.md") >"$OUT/score_${t##*:}.txt" 2>&1
  done
  pack
  timeout 40 $S --formats affine4 --prompt 128 --concurrency 1,16 --requests 48 --embed --md "$OUT/embed.md" \
    >"$OUT/embed.txt" 2>&1
  pack
  exit 0
fi
# `http`: main.ts serving a random-weight folder at SmolLM2-360M's shape (bench/random_folder.ts; HTTP_SHAPE
# changes it) to `bench:serve --server`, which also probes GET /health during each load (http_<tree>.md; the
# server's log in http_server_<tree>.txt). With BASE=<dir>, a `git archive` of an older commit carried beside
# the tree, that tree's main.ts is measured first, on the same folder. HTTP_ARGS replaces the load's flags;
# HTTP_TOKENIZER is the folder the tokenizer files come from (default ../shared/models/lq-49m, which a GPU
# host without ../shared lacks: carry a copy).
if [ "$what" = http ]; then
  dir=$(mktemp -d)
  $R bench/random_folder.ts --shape "${HTTP_SHAPE:-smollm2-360m}" --out "$dir/m" \
    --tokenizer "${HTTP_TOKENIZER:-../shared/models/lq-49m}" >"$OUT/http_folder.txt" 2>&1
  health='const r = await fetch("http://127.0.0.1:8177/health").catch(() => null); Deno.exit(r?.ok ? 0 : 1)'
  serve_http() { # <tree> <label>
    (cd "$1" && exec $R main.ts --model "$dir/m" --port 8177 >"$OUT/http_server_$2.txt" 2>&1) &
    for _ in $(seq 1 300); do deno eval --no-config "$health" 2>/dev/null && break; sleep 1; done
    # shellcheck disable=SC2086 # HTTP_ARGS is a list of flags
    timeout 300 $R bench/serve.ts --server http://127.0.0.1:8177 \
      ${HTTP_ARGS:---concurrency 1,16,64 --prompt 512 --output 128 --waves 1} --md "$OUT/http_$2.md" \
      >"$OUT/http_$2.txt" 2>&1
    pkill -f "main.ts --model $dir/m"
    sleep 2
  }
  [ -n "${BASE:-}" ] && serve_http "$BASE" base
  serve_http . head
  rm -rf "$dir"
  exit 0
fi
timeout 60 $R bench/bench.ts --random llama3-8b --format affine4 --prompt 512 --decode 128 >"$OUT/runner.txt" 2>&1
for p in 512 2048; do
  timeout 60 $R bench/bench.ts --random llama3-8b --format affine4 --prompt $p --decode 16 --prompt-kernels engine \
    >"$OUT/runner_engine_$p.txt" 2>&1
done
# lut4 runs the engine's LUT rows on int8 dot products (the default), lut4f32 on the exact f32 kernels
for f in affine4 lut4 lut4f32 dense; do
  timeout 90 $S --formats $f --prompt 16 --output 64 --concurrency 1,2,16,64 --md "$OUT/decode_$f.md" \
    >"$OUT/decode_$f.txt" 2>&1
done
[ "$what" = decode ] && exit 0
timeout 120 $S --formats affine4 --prompt 512 --output 256 --concurrency 1,16,64 --md "$OUT/issue.md" \
  >"$OUT/issue.txt" 2>&1
for f in affine4 lut4; do
  timeout 90 $S --formats $f --prompt 512 --output 128 --long-prompt 2048 --concurrency 16 \
    --md "$OUT/long_$f.md" >"$OUT/long_$f.txt" 2>&1
done
timeout 40 $S --formats affine4 --prompt 2048 --output 16 --concurrency 1 --md "$OUT/ttft.md" >"$OUT/ttft.txt" 2>&1
for f in affine4 lut4 dense; do
  timeout 60 $R bench/profile.ts --random llama3-8b --format $f --batch 64 --context 64 >"$OUT/profile_$f.txt" 2>&1
done
