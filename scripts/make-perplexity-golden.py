#!/usr/bin/env python3
"""make-perplexity-golden.py — records what llama.cpp's llama-perplexity prints for the tests
of `plumb perplexity` (tests/e2e/test_perplexity.py) into tests/e2e/data/golden_perplexity.json.

llama-perplexity is the one scripts/build-ref-tools.sh builds (the llama.cpp that
scripts/make-golden.py's reference uses, with its CMake options), run in the same reference
configuration: GGML_CPU_TILED_MM=0, no weight repacking (--no-repack) and no flash attention
(-fa off), whose prompt logits do not depend on how a prompt is batched. The text is the GNU
GPL version 3, which every Debian system has (/usr/share/common-licenses/GPL-3).

Recorded per case: the running perplexity after each chunk and the final estimate as printed;
for KL divergence, the SHA-256 of the base file llama-perplexity wrote and every statistic of
the measured model against it (the model: tests/e2e/perturb.py's copy of Gemma 3 270M); the
perplexity of Gemma 3 270M quantized by llama-quantize to the K types whose kernels plumb has in
the reference's arithmetic (QUANT).

    scripts/build-ref-tools.sh && python3 scripts/make-perplexity-golden.py
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import perturb  # noqa: E402

TOOL = os.path.join(ROOT, ".ref-tools", "bin", "llama-perplexity")
TEXT = "/usr/share/common-licenses/GPL-3"
MODELS = {"gemma3": "models/gemma-3-270m-q4_k_m.gguf", "qwen2": "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
REF_FLAGS = ["--no-repack", "-fa", "off", "-t", "2"]
CASES = [  # name, model, ctx, chunks, batch
    ("gemma3_c128", "gemma3", 128, 6, 512),
    ("gemma3_c512", "gemma3", 512, 2, 2048),
    ("qwen2_c256", "qwen2", 256, 3, 512),
]
KLD = {"model": "gemma3", "ctx": 128, "chunks": 4, "batch": 512}
# Gemma 3 270M dequantized to F16 by llama-quantize, then quantized to TYPE (with the options):
# the types whose x86 kernels follow the reference's own (Q2_K, Q3_K, Q5_K and their Q4_0 and
# Q5_1 fallbacks; Q5_1 alone). plumb quantize writes the same files (tests/e2e/test_quantize.py).
QUANT = {"model": "gemma3", "ctx": 128, "chunks": 4, "batch": 512,
         "types": [["Q2_K", []], ["Q3_K_S", []], ["Q5_K_S", []], ["Q5_1", ["--pure"]]]}
QUANTIZE = os.path.join(ROOT, ".ref-tools", "bin", "llama-quantize")


def run(args):
    env = dict(os.environ, GGML_CPU_TILED_MM="0")
    p = subprocess.run([TOOL, *args, *REF_FLAGS], capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(p.stdout + p.stderr)
    return p.stdout + p.stderr


def quantize(args):
    p = subprocess.run([QUANTIZE, *args], capture_output=True, text=True)
    if p.returncode:
        sys.exit(p.stdout + p.stderr)


def ppl_values(out):
    chunks = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", out)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    return {"chunks": chunks, "ppl": float(m.group(1)), "err": float(m.group(2))}


def kld_values(out):
    stats = {}
    for line in out.splitlines():
        m = re.match(r"^\S*\s*(Mean PPL\(Q\)|Mean PPL\(base\)|Mean    KLD|Maximum KLD|Median  KLD|99\.0%   KLD|"
                     r"Mean    Δp|RMS Δp|Same top p)\s*:\s*(-?[0-9.]+)", line.split(" I ", 1)[-1])
        if m:
            stats[" ".join(m.group(1).split())] = float(m.group(2))
    return stats


def main():
    golden = {"tool": "llama-perplexity (scripts/build-ref-tools.sh)", "env": {"GGML_CPU_TILED_MM": "0"},
              "flags": REF_FLAGS, "text": TEXT, "cases": {}, "kld": {}}
    for name, model, ctx, chunks, batch in CASES:
        out = run(["-m", os.path.join(ROOT, MODELS[model]), "-f", TEXT, "-c", str(ctx), "--chunks", str(chunks), "-b", str(batch)])
        golden["cases"][name] = {"model": model, "ctx": ctx, "n_chunks": chunks, "batch": batch, **ppl_values(out)}
    with tempfile.TemporaryDirectory() as tmp:
        base, other = os.path.join(tmp, "base.kld"), os.path.join(tmp, "perturbed.gguf")
        model = os.path.join(ROOT, MODELS[KLD["model"]])
        common = ["-c", str(KLD["ctx"]), "--chunks", str(KLD["chunks"]), "-b", str(KLD["batch"])]
        out = run(["-m", model, "-f", TEXT, *common, "--kl-divergence-base", base])
        golden["kld"] = {**KLD, "base_ppl": ppl_values(out)["ppl"],
                         "base_sha256": hashlib.sha256(open(base, "rb").read()).hexdigest(),
                         "base_bytes": os.path.getsize(base)}
        perturb.perturb(model, other)
        out = run(["-m", other, *common, "--kl-divergence-base", base, "--kl-divergence"])
        golden["kld"]["stats"] = kld_values(out)
    with tempfile.TemporaryDirectory() as tmp:
        f16 = os.path.join(tmp, "f16.gguf")
        quantize(["--allow-requantize", os.path.join(ROOT, MODELS[QUANT["model"]]), f16, "F16"])
        golden["quantized"] = {**{k: v for k, v in QUANT.items() if k != "types"}, "cases": {}}
        for t, opts in QUANT["types"]:
            out = os.path.join(tmp, t + ".gguf")
            quantize([*opts, f16, out, t])
            res = run(["-m", out, "-f", TEXT, "-c", str(QUANT["ctx"]), "--chunks", str(QUANT["chunks"]),
                       "-b", str(QUANT["batch"])])
            golden["quantized"]["cases"][" ".join([t, *opts])] = {"type": t, "options": opts, **ppl_values(res)}
    path = os.path.join(ROOT, "tests", "e2e", "data", "golden_perplexity.json")
    with open(path, "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(golden, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
