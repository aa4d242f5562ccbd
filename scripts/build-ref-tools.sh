#!/usr/bin/env bash
# build-ref-tools.sh — llama.cpp's own command-line tools (llama-quantize, llama-imatrix,
# llama-perplexity), built from the llama.cpp that llama-cpp-python VERSION vendors (the same
# source as the reference interpreter of scripts/make-golden.py), with the same CMake options.
# They make the golden files of plumb's quantize, imatrix and perplexity tests; `make test`
# never needs them. Output: .ref-tools/bin/. Usage: scripts/build-ref-tools.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=$(sed -n 's/^LLAMA_CPP_PYTHON_VERSION = "\(.*\)"/\1/p' "$ROOT/scripts/make-golden.py")
ARGS=$(python3 - "$ROOT/scripts/make-golden.py" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
m = re.search(r'REF_CMAKE_ARGS = \((.*?)\)\n', src, re.S)
print("".join(re.findall(r'"([^"]*)"', m.group(1))))
PY
)
OUT="$ROOT/.ref-tools"
mkdir -p "$OUT/src"
if [ ! -f "$OUT/src/llama_cpp_python-$VERSION.tar.gz" ]; then
    python3 -m pip download --quiet --no-binary :all: --no-deps -d "$OUT/src" "llama-cpp-python==$VERSION"
fi
rm -rf "$OUT/src/llama_cpp_python-$VERSION"
tar -xzf "$OUT/src/llama_cpp_python-$VERSION.tar.gz" -C "$OUT/src"
LLAMA="$OUT/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
# shellcheck disable=SC2086
cmake -S "$LLAMA" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON $ARGS >/dev/null
cmake --build "$OUT/build" -j "$(nproc)" --target llama-quantize llama-imatrix llama-perplexity
mkdir -p "$OUT/bin"
for t in llama-quantize llama-imatrix llama-perplexity; do cp "$OUT/build/bin/$t" "$OUT/bin/"; done
echo "llama.cpp tools of llama-cpp-python $VERSION in $OUT/bin"
