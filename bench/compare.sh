#!/usr/bin/env bash
# compare.sh — plumb against llama.cpp, side by side on one model and the same thread counts.
#
#   bench/compare.sh [-m MODEL] [-p 512] [-n 128] [-d 0] [-t 1,2] [-r 3] [--plumb PATH] [--no-extra-bufts] [--fast-gemm]
#                    [--load default|mmap|read]
#
# Both engines are measured the llama-bench way (pp = one batch of -p prompt tokens, tg = -n
# single-token decodes, after -d tokens already decoded into the sequence, 0 by default),
# repetitions interleaved (llama.cpp, plumb, llama.cpp, plumb, ...); the result is one markdown
# table: threads, test, llama.cpp t/s and plumb t/s (mean ± sd), and the ratio plumb/llama.
# -p/-n/-d/-t take comma-separated lists.
#
# llama.cpp is llama-cpp-python built from source on this machine (.venv-peer, created on
# first use, which takes minutes) with llama.cpp's default CPU configuration: native
# instruction sets, its llamafile GEMM, OpenMP, repacked weight buffers (--no-extra-bufts
# turns those off), GGML_CPU_TILED_MM removed from the environment. That is what a user of
# llama.cpp runs; the golden data's build (.venv-ref) is fixed to the golden machine's
# instruction sets and slow paths. bench/compare.py drives it through its low-level API.
#
# plumb is build/plumb (or --plumb PATH, or $PLUMB_BIN): `make` builds it; `make model`
# fetches the default model, models/gemma-3-270m-q4_k_m.gguf.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unset GGML_CPU_TILED_MM
exec python3 "$ROOT/bench/compare.py" "$@"
