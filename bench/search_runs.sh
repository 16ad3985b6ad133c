#!/usr/bin/env bash
# The runs behind "Search against sampling" in the README, at about 16 samples' worth:
# beam search, DVTS and AB-MCTS at n = 16, then RSA (k = 2, two rounds, n = 4), on GSM8K test
# questions 0-29 with the default model, guided by the SPRM head the runs began with.
#
#   ./scripts/setup.sh && .venv/bin/ttscale models install qwen2.5-coder-1.5b
#   nohup bench/search_runs.sh >> search_runs.log 2>&1 &
#
# Resumable: each question's generations and verifier calls are kept in runs/gsm8k-search as
# they come, so a killed run goes on where it stopped. On a new machine the committed export
# is restored first. Every EXPORT_EVERY seconds (default 600) the store is exported to
# bench/runs/gsm8k-search.jsonl, which is what to commit.
#
# Threads: on a CPU both llama.cpp and the SPRM's torch model are compute-bound, and a
# question alternates between them (generate a round, score it). Two questions at once keep
# both busy at the same time, and two pools of all cores each spin at each other's barriers;
# split 1/1 they left the cores 44% idle (llama.cpp waiting for the SPRM and back). So the
# default is one question at a time with every core for each in turn (CONCURRENCY,
# LLAMA_THREADS and SPRM_THREADS override; on a GPU raise CONCURRENCY).
set -euo pipefail
cd "$(dirname "$0")/.."
TT=.venv/bin/ttscale
RUN=runs/gsm8k-search
EXPORT=bench/runs/gsm8k-search.jsonl
CORES=$(nproc)
CONCURRENCY=${CONCURRENCY:-1}
LLAMA_THREADS=${LLAMA_THREADS:-$CORES}
SPRM_THREADS=${SPRM_THREADS:-$CORES}
HEAD=bench/heads/gsm8k-train-0-99/qwen2.5-coder-1.5b.sprm.safetensors

if [ ! -f "$RUN/run.sqlite" ]; then
  "$TT" eval restore "$EXPORT" --out "$RUN"
fi

export_now() {
  "$TT" eval export --no-logprobs "$RUN" "$EXPORT.tmp" >/dev/null && mv "$EXPORT.tmp" "$EXPORT"
  echo "exported $(date -u +%H:%M)"
}
( while sleep "${EXPORT_EVERY:-600}"; do export_now || true; done ) &
EXPORTER=$!
trap 'kill $EXPORTER 2>/dev/null || true' EXIT

E=("$TT" eval --dataset gsm8k --split test --ids 0-29 --max-tokens 768 --concurrency "$CONCURRENCY"
   --out "$RUN")
echo "search runs: $CONCURRENCY at a time, llama.cpp $LLAMA_THREADS threads, SPRM $SPRM_THREADS; started $(date -u)"
"${E[@]}" --threads "$LLAMA_THREADS" --verifier "sprm:$HEAD,threads=$SPRM_THREADS" \
  --strategies beam:width=4,dvts:width=4,ab_mcts --n 16
"${E[@]}" --threads "$CORES" --verifier "sprm:$HEAD,threads=$SPRM_THREADS" \
  --strategies rsa:k=2,rounds=2 --n 4
export_now
echo "search runs done $(date -u)"
