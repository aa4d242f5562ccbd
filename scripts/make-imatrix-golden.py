#!/usr/bin/env python3
"""make-imatrix-golden.py — records what llama.cpp's llama-imatrix computes for the tests of
`plumb imatrix` (tests/e2e/test_imatrix.py) into tests/e2e/data/golden_imatrix.json.

llama-imatrix is the one scripts/build-ref-tools.sh builds, run in the reference
configuration of scripts/make-perplexity-golden.py (GGML_CPU_TILED_MM=0, --no-repack, -fa off:
prompt logits that do not depend on batching, plumb's bit for bit), over the GNU GPL version 3
(/usr/share/common-licenses/GPL-3). Recorded per case: the running perplexity it printed,
the SHA-256 of the imatrix GGUF it wrote, its metadata, and per weight a compact summary of
the matrix (tests/e2e/test_imatrix.py's summarize: the shape, the counts, the sum of all
sums and 16 of them at fixed places) — a few KB instead of the half megabyte of sums.

    scripts/build-ref-tools.sh && python3 scripts/make-imatrix-golden.py   (with .venv's python)
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
from test_imatrix import CASES, TEXT, summarize  # noqa: E402

TOOL = os.path.join(ROOT, ".ref-tools", "bin", "llama-imatrix")
MODELS = {"gemma3": "models/gemma-3-270m-q4_k_m.gguf", "qwen2": "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
REF_FLAGS = ["--no-repack", "-fa", "off", "-t", "2"]


def main():
    golden = {"text": TEXT, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, c in CASES.items():
            out = os.path.join(tmp, name + ".gguf")
            args = ["-m", os.path.join(ROOT, MODELS[c["model"]]), "-f", TEXT, "-o", out, *c["args"], *REF_FLAGS]
            p = subprocess.run([TOOL, *args], capture_output=True, text=True, env=dict(os.environ, GGML_CPU_TILED_MM="0"))
            if p.returncode:
                sys.exit(p.stdout + p.stderr)
            with open(out, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            golden["cases"][name] = {
                "ppl": [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", p.stdout + p.stderr)],
                "sha256": digest,
                **summarize(out),
            }
    path = os.path.join(ROOT, "tests", "e2e", "data", "golden_imatrix.json")
    with open(path, "w") as f:
        json.dump(golden, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"{path}: {len(golden['cases'])} cases")


if __name__ == "__main__":
    main()
