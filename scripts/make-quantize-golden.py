#!/usr/bin/env python3
"""make-quantize-golden.py — records what llama.cpp's llama-quantize writes for the cases of
tests/e2e/quantize_inputs.py, into tests/e2e/data/golden_quantize.json: the SHA-256 and size
of each output file, and of each input (so the test can tell a changed input from a changed
quantizer). The test runs `plumb quantize` on the same inputs and must get the same bytes.

Inputs are made as the test makes them: the synthetic models and importance matrices by
quantize_inputs.py, the real models' F16 versions by llama-quantize here (by plumb there; the
"*-f16" golden entries check that those agree).

    .venv/bin/python scripts/make-quantize-golden.py [--llama-quantize PATH] [--threads N]
(needs the models of `make model`; llama-quantize from scripts/build-ref-tools.sh)
"""
import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import quantize_inputs as qi  # noqa: E402


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-quantize", default=str(REPO / ".ref-tools" / "bin" / "llama-quantize"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "tests" / "e2e" / "data" / "golden_quantize.json"))
    args = ap.parse_args()

    def quantize(cwd: Path, inp: Path, out: Path, qtype: str, opts: list[str]) -> None:
        cmd = [args.llama_quantize, *opts, str(inp), str(out), qtype, str(args.threads)]
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")

    golden = {"inputs": {}, "cases": []}
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        inputs = qi.make_synth(work)
        for key, model in qi.MODELS.items():
            p = work / f"{key}-f16.gguf"
            quantize(work, REPO / "models" / model, p, "F16", ["--allow-requantize"])
            inputs[f"{key}-f16"] = p
        qi.make_imatrices(work, inputs)
        for p in sorted(work.glob("imatrix-*")):
            inputs[p.name] = p
        for name, p in sorted(inputs.items()):
            golden["inputs"][name] = {"sha256": sha256(p), "size": p.stat().st_size}
        for cid, inp, qtype, opts in qi.cases():
            out = work / "out.gguf"
            t0 = time.time()
            quantize(work, inputs[inp], out, qtype, opts)
            golden["cases"].append({"id": cid, "input": inp, "type": qtype, "options": opts,
                                    "sha256": sha256(out), "size": out.stat().st_size})
            print(f"{cid:40s} {out.stat().st_size:>11d}  {time.time() - t0:5.1f} s", flush=True)
            out.unlink()
    Path(args.out).write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {args.out}: {len(golden['cases'])} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
