#!/usr/bin/env bash
# quants.sh — the quality table: the reference model quantized into every preset by
# `plumb quantize`, each measured for size, perplexity, KL divergence against the F16 model
# (`plumb perplexity --kl-divergence`) and speed (`plumb bench`, pp512 and tg128), printed as
# one markdown table (the README's). The F16 model is the Q4_K_M file dequantized
# (`plumb quantize --allow-requantize ... F16`). The text is the GNU GPL version 3, which every
# Debian system has.
#
#   bench/quants.sh [MODEL.gguf] [THREADS]        (default: the Qwen2.5-Coder model, all CPUs)
#   PRESETS="Q4_K_M Q8_0" CHUNKS=8 bench/quants.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLUMB=${PLUMB:-$ROOT/build/plumb}
MODEL=${1:-$ROOT/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
THREADS=${2:-$(nproc)}
TEXT=${TEXT:-/usr/share/common-licenses/GPL-3}
CHUNKS=${CHUNKS:-4}
CTX=${CTX:-256}
PRESETS=${PRESETS:-"F16 Q8_0 Q6_K Q5_K_M Q5_K_S Q5_1 Q5_0 Q4_K_M Q4_K_S Q4_1 Q4_0 Q3_K_L Q3_K_M Q3_K_S Q2_K"}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

F16="$WORK/f16.gguf"
"$PLUMB" quantize --allow-requantize "$MODEL" "$F16" F16 "$THREADS" > "$WORK/f16.log" 2>&1
"$PLUMB" perplexity -m "$F16" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" \
    --kl-divergence-base "$WORK/base.kld" > "$WORK/base.log" 2>&1
BASE_PPL=$(sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p' "$WORK/base.log")

echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $THREADS threads; $(basename "$MODEL") dequantized to F16;"
echo "text: $TEXT, $CHUNKS chunks of $CTX tokens; F16 perplexity $BASE_PPL"
echo
echo "| type | size MiB | bits/weight | quantize s | PPL | ln(PPL/PPL(F16)) | mean KLD | 99% KLD | same top % | pp512 t/s | tg128 t/s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for p in $PRESETS; do
    out="$WORK/$p.gguf"
    t0=$(date +%s.%N)
    "$PLUMB" quantize "$F16" "$out" "$p" "$THREADS" > "$WORK/$p.qlog" 2>&1
    t1=$(date +%s.%N)
    "$PLUMB" perplexity -m "$out" -t "$THREADS" --kl-divergence-base "$WORK/base.kld" --kl-divergence > "$WORK/$p.klog" 2>&1
    "$PLUMB" bench -m "$out" -p 512 -n 128 -r "${REPS:-1}" -t "$THREADS" --no-membw -o json > "$WORK/$p.bench" 2>/dev/null
    python3 - "$p" "$out" "$t0" "$t1" "$WORK/$p.klog" "$WORK/$p.bench" <<'PY'
import json, os, re, sys
preset, path, t0, t1, klog, bench = sys.argv[1:]
text = open(klog, encoding="utf-8").read()
def stat(name):
    m = re.search(r"^" + re.escape(name) + r"\s*:\s*(-?[0-9.]+)", text, re.M)
    return float(m.group(1)) if m else float("nan")
rows = json.load(open(bench))
pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
params = rows[0]["params"]
size = os.path.getsize(path)
print(f"| {preset} | {size / 2**20:.1f} | {8 * size / params:.2f} | {float(t1) - float(t0):.1f} | {stat('Mean PPL(Q)'):.4f} "
      f"| {stat('Mean ln(PPL(Q)/PPL(base))'):.5f} | {stat('Mean    KLD'):.6f} | {stat('99.0%   KLD'):.5f} "
      f"| {stat('Same top p'):.2f} | {pp:.1f} | {tg:.2f} |")
PY
    rm -f "$out"
done
