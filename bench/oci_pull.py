#!/usr/bin/env python3
"""oci_pull.py — how fast `plumb pull` fetches a model from an OCI registry, against `curl`
fetching the same GGUF blob. Starts Debian's docker-registry on 127.0.0.1 (a free port, the
storage in a temporary directory; tests/e2e/test_oci.py's helper), pushes MODEL with
`plumb push`, then, R times each, interleaved:

  curl        curl -s -f -o FILE http://127.0.0.1:PORT/v2/<repo>/blobs/<GGUF digest>
  plumb pull  plumb pull REF into a fresh PLUMB_HOME (manifest, config and GGUF, each blob
              verified: SHA-256 once, on a second thread while the bytes arrive)
  re-pull     plumb pull REF again into that store: the blobs are there, nothing to download
  sha256      sha256sum FILE and Python's hashlib over the GGUF (what one verification costs)

The registry's storage and the files written are on the same disk; one warm-up download
puts the blob in the page cache first, so the numbers are loopback + CPU + page cache, not
network. Prints the CPU, a table (median and min seconds, MB/s with MB = 10^6 bytes) and the
ratio plumb/curl. Needs docker-registry, curl, sha256sum and a built plumb.

  .venv/bin/python bench/oci_pull.py [-m MODEL] [-r 3] [--plumb build/plumb]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_GGUF = "application/vnd.docker.ai.gguf.v3"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def timed(argv, env=None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"oci_pull: {' '.join(map(str, argv))} failed ({p.returncode}): "
                 f"{p.stderr.decode(errors='replace').strip()}")
    return dt, p


def plumb_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUMB_REGISTRY_")}
    env["PLUMB_HOME"] = str(home)
    return env


def hashlib_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="models/gemma-3-270m-q4_k_m.gguf", help="the GGUF to push and pull")
    ap.add_argument("-r", "--repetitions", type=int, default=3, help="runs of each measurement")
    ap.add_argument("--plumb", default=os.environ.get("PLUMB_BIN", "build/plumb"),
                    help="the plumb binary (default $PLUMB_BIN or build/plumb)")
    args = ap.parse_args()
    model = Path(args.model)
    if not model.is_absolute():
        model = REPO / model
    plumb = Path(args.plumb)
    if not plumb.is_absolute():
        plumb = REPO / plumb
    for what, ok in [(f"model {model}", model.is_file()), (f"plumb {plumb}", plumb.is_file()),
                     ("docker-registry", shutil.which("docker-registry")), ("curl", shutil.which("curl")),
                     ("sha256sum", shutil.which("sha256sum"))]:
        if not ok:
            sys.exit(f"oci_pull: {what} is missing (scripts/setup.sh test installs docker-registry; "
                     f"make builds plumb; make model fetches the model)")
    r = max(1, args.repetitions)

    from test_oci import Registry  # the tests' helper: docker-registry on a free loopback port

    work = Path(tempfile.mkdtemp(prefix="plumb-oci-bench-"))
    reg = None
    try:
        reg = Registry(work / "registry")
        repo = "bench/model"
        ref = f"{reg.host}/{repo}:v1"
        size = model.stat().st_size
        t_push, p = timed([plumb, "push", model, ref], env=plumb_env(work / "push-home"))
        mdigest = p.stdout.decode().split()[1]
        req = urllib.request.Request(f"http://{reg.host}/v2/{repo}/manifests/v1", headers={"Accept": MT_MANIFEST})
        with urllib.request.urlopen(req, timeout=30) as resp:
            manifest = json.loads(resp.read())
        gguf = next(l for l in manifest["layers"] if l["mediaType"] == MT_GGUF)
        url = f"http://{reg.host}/v2/{repo}/blobs/{gguf['digest']}"
        out = work / "curl.gguf"
        curl = ["curl", "-s", "-f", "-o", str(out), url]

        timed(curl)  # warm-up: the registry's copy into the page cache
        if out.stat().st_size != size:
            sys.exit("oci_pull: curl got a different size than the model's")
        if "sha256:" + hashlib_sha256(out) != gguf["digest"]:
            sys.exit("oci_pull: curl's download does not hash to the layer's digest")

        t_curl, t_pull, t_repull, t_sum, t_hashlib = [], [], [], [], []
        for i in range(r):
            def run_curl():
                out.unlink(missing_ok=True)
                t_curl.append(timed(curl)[0])

            def run_plumb():
                home = work / f"home-{i}"
                dt, p = timed([plumb, "pull", ref], env=plumb_env(home))
                lines = p.stdout.decode().split("\n")
                if lines[0] != f"{ref} {mdigest}" or Path(lines[1]).stat().st_size != size:
                    sys.exit(f"oci_pull: unexpected plumb pull output {p.stdout!r}")
                t_pull.append(dt)
                t_repull.append(timed([plumb, "pull", ref], env=plumb_env(home))[0])
                shutil.rmtree(home)

            for f in ((run_curl, run_plumb) if i % 2 == 0 else (run_plumb, run_curl)):
                f()
            t_sum.append(timed(["sha256sum", str(out)])[0])
            t0 = time.perf_counter()
            hashlib_sha256(out)
            t_hashlib.append(time.perf_counter() - t0)
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    mb = size / 1e6
    print(f"CPU: {cpu_model()} ({os.cpu_count()} CPUs)")
    print(f"model: {model.relative_to(REPO) if model.is_relative_to(REPO) else model} "
          f"({size} bytes, {mb:.1f} MB), layer {gguf['digest'][:19]}; plumb push took {t_push:.2f} s")
    print(f"registry: docker-registry on {reg.host}, filesystem storage, page cache warm; {r} runs each\n")
    rows = [
        ("curl GET of the GGUF blob", t_curl, True),
        ("plumb pull, fresh store", t_pull, True),
        ("plumb pull, blobs present", t_repull, False),
        ("sha256sum of the GGUF", t_sum, True),
        ("Python hashlib sha256", t_hashlib, True),
    ]
    print(f"{'what':<28} {'median s':>9} {'min s':>8} {'MB/s':>8} {'x curl':>7} {'/ pull':>7}")
    for name, ts, rate in rows:
        m = med(ts)
        mbs = f"{mb / m:8.0f}" if rate else f"{'-':>8}"
        print(f"{name:<28} {m:9.3f} {min(ts):8.3f} {mbs} {m / med(t_curl):7.2f} {m / med(t_pull):7.2f}")
    extra = med(t_pull) - med(t_curl)
    print(f"\nplumb/curl: {med(t_pull) / med(t_curl):.2f} (median), {min(t_pull) / min(t_curl):.2f} (min); "
          f"plumb - curl = {extra:.3f} s")
    print(f"verification: one SHA-256 pass over the GGUF with OpenSSL (hashlib; plumb uses OpenSSL's EVP "
          f"too) = {med(t_hashlib):.3f} s, {med(t_hashlib) / med(t_pull):.0%} of the pull; plumb hashes the "
          f"GGUF once, on a second thread while it downloads, so it costs {extra:.3f} s beyond curl "
          f"instead of {med(t_hashlib):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
