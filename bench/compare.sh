#!/usr/bin/env bash
# compare.sh — plumb against llama.cpp, side by side on one model and the same thread counts.
#
#   bench/compare.sh [-m MODEL] [-p 512] [-n 128] [-t 1,2] [-r 3] [--plumb PATH] [--extra-bufts]
#
# Both engines are measured the llama-bench way (pp = one batch of -p prompt tokens, tg = -n
# single-token decodes from an empty sequence), repetitions interleaved (llama.cpp, plumb,
# llama.cpp, plumb, ...); the result is one markdown table: threads, test, llama.cpp t/s and
# plumb t/s (mean ± sd), and the ratio plumb/llama. -p/-n/-t take comma-separated lists.
#
# llama.cpp is the reference build that scripts/make-golden.py keeps in .venv-ref
# (llama-cpp-python built from source; created on first use, which takes minutes), driven
# through its low-level API by bench/compare.py. It runs with its default kernels:
# GGML_CPU_TILED_MM is NOT set to 0 here (it is removed from the environment) — the golden
# data switches that path off for batch-invariant logits, but it is llama.cpp's fast path for
# prompt batches and belongs in a speed comparison. Its extra weight buffers (repacked
# layouts) stay off as in make-golden.py unless --extra-bufts is given.
#
# plumb is build/plumb (or --plumb PATH, or $PLUMB_BIN): `make` builds it; `make model`
# fetches the default model, models/gemma-3-270m-q4_k_m.gguf.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unset GGML_CPU_TILED_MM
exec python3 "$ROOT/bench/compare.py" "$@"
