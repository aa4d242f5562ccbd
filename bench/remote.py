#!/usr/bin/env python3
"""bench/remote.py — what the remote device costs, next to this machine's CPU: `plumb bench
-p 512 -n 128 -r 3 -o json` on the local CPU, then against `plumb rpc-server` over loopback and
across two network namespaces (a veth pair through a bridge: tests/e2e/netns.py, needs root),
each fully remote and split (--offload half the layers, the last ones remote). For each:
pp512 and tg128 t/s; the per-token overhead, 1000/remote_tg - 1000/local_tg ms; bytes sent and
received and round trips per token; and the model load: the server keeps weights by content
(--cache-dir, fresh for each transport), so the first fully remote run uploads them and the
second finds them cached (load_s and load_bytes_sent of each).

The server and the client run on this machine and share its CPUs: use the same thread count
for both (-t, default 1), and read the overhead as the protocol's and the network stack's cost,
not a real network's latency.

  bench/remote.py [--model models/gemma-3-270m-q4_k_m.gguf] [-t 1] [--plumb build/plumb] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORT = 50052


def load_netns():
    spec = importlib.util.spec_from_file_location("netns", REPO / "tests" / "e2e" / "netns.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def n_layers(plumb: Path, model: Path) -> int:
    out = subprocess.run([str(plumb), "inspect", str(model)], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"\.block_count\s+\S+\s+(\d+)", out)
    if not m:
        raise SystemExit(f"cannot find the block count in `plumb inspect {model}`")
    return int(m[1])


class Server:
    """plumb rpc-server (in a namespace when net is given), its log in a file."""

    def __init__(self, plumb, key, threads, cache, log: Path, net=None, host="srv"):
        addr = net.addr(host) if net else "127.0.0.1"
        argv = [str(plumb), "rpc-server", "--key-file", str(key), "--host", addr, "--port", str(PORT if net else 0),
                "-t", str(threads), "--cache-dir", str(cache)]
        self.log = log
        with open(log, "ab") as f:
            self.proc = (net.popen(host, argv, stderr=f, stdin=subprocess.DEVNULL) if net
                         else subprocess.Popen(argv, stderr=f, stdin=subprocess.DEVNULL))
        t0 = time.monotonic()
        while not (m := re.search(r"listening on (\S+):(\d+)", log.read_text(errors="replace"))):
            if self.proc.poll() is not None or time.monotonic() - t0 > 30:
                raise SystemExit(f"rpc-server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        self.device = f"remote:{m[1]}:{m[2]}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench(plumb, model, threads, args, extra=(), net=None, host="cli") -> dict[str, dict]:
    """plumb bench's JSON rows, by test name (pp512, tg128)."""
    argv = [str(plumb), "bench", "-m", str(model), "-p", str(args.n_prompt), "-n", str(args.n_gen), "-r", str(args.reps),
            "-t", str(threads), "-o", "json", "--no-membw", *map(str, extra)]
    if net:
        argv = net.cmd(host, argv)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"$ {' '.join(argv)}\nexit {p.returncode}: {p.stderr[-2000:]}")
    return {row["test"]: row for row in json.loads(p.stdout)}


def fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default=str(REPO / "models" / "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--threads", "-t", type=int, default=1, help="threads of the client and of the server (default 1)")
    ap.add_argument("--plumb", default=str(REPO / "build" / "plumb"))
    ap.add_argument("--n-prompt", "-p", type=int, default=512)
    ap.add_argument("--n-gen", "-n", type=int, default=128)
    ap.add_argument("--reps", "-r", type=int, default=3)
    ap.add_argument("--json", help="also write every run's rows here")
    args = ap.parse_args()
    plumb, model = Path(args.plumb).resolve(), Path(args.model).resolve()
    layers = n_layers(plumb, model)
    half = (layers + 1) // 2
    pp, tg = f"pp{args.n_prompt}", f"tg{args.n_gen}"

    print(f"CPU:     {cpu_model()} ({os.cpu_count()} CPUs; client and server each -t {args.threads})")
    print(f"plumb:   {plumb}")
    print(f"model:   {model.name} ({layers} blocks + the output head; split: --offload {half})")
    print(f"bench:   plumb bench -p {args.n_prompt} -n {args.n_gen} -r {args.reps} -o json\n", flush=True)

    work = Path(tempfile.mkdtemp(prefix="plumb-remote-bench-"))
    key = work / "key"
    key.write_text("YmVuY2gtcmVtb3RlLWtleS0wMTIzNDU2Nzg5YWJjZGVm\n")
    key.chmod(0o600)
    os.environ["PLUMB_REMOTE_KEY_FILE"] = str(key)
    runs: list[tuple[str, dict]] = []
    try:
        runs.append(("local cpu", bench(plumb, model, args.threads, args)))
        transports = [("loopback", None)]
        try:
            netns = load_netns()
            net = netns.Net(("srv", "cli"))
            transports.append(("veth", net))
        except Exception as e:  # noqa: BLE001 — the bench goes on without the namespaces
            net = None
            print(f"(veth: skipped: {e})\n")
        try:
            for name, n in transports:
                srv = Server(plumb, key, args.threads, work / f"cache-{name}", work / f"{name}.log", net=n)
                try:
                    dev = ["--device", srv.device]
                    runs.append((f"{name} full, 1st", bench(plumb, model, args.threads, args, dev, net=n)))
                    runs.append((f"{name} full, cached", bench(plumb, model, args.threads, args, dev, net=n)))
                    runs.append((f"{name} split {half}/{layers + 1}",
                                 bench(plumb, model, args.threads, args, dev + ["--offload", half], net=n)))
                finally:
                    srv.stop()
        finally:
            if net:
                net.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    local_tg = runs[0][1][tg]["avg_ts"]
    head = ["run", f"{pp} t/s", f"{tg} t/s", "overhead ms/tok", "sent B/tok", "recv B/tok", "round trips/tok",
            "load s", "load MiB sent"]
    rows = []
    for name, r in runs:
        t = r[tg]
        remote = t["net_round_trips_per_token"] is not None
        over = 1000 / t["avg_ts"] - 1000 / local_tg if remote else None
        rows.append([name, f"{r[pp]['avg_ts']:.1f} ± {r[pp]['stddev_ts']:.1f}", f"{t['avg_ts']:.2f} ± {t['stddev_ts']:.2f}",
                     fmt(over, "+.2f"), fmt(t["net_bytes_sent_per_token"], ".0f"),
                     fmt(t["net_bytes_received_per_token"], ".0f"), fmt(t["net_round_trips_per_token"], ".3f"),
                     fmt(t["load_s"], ".3f"),
                     fmt(None if t["load_bytes_sent"] is None else t["load_bytes_sent"] / 1048576, ".2f")])
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    print(f"{tg} per token (the network columns) and the model load:")
    print(line(head))
    print("|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(line(r))
    print(f"\n{pp}, per prompt token:")
    for name, r in runs[1:]:
        p = r[pp]
        print(f"  {name:<22} {p['net_bytes_sent_per_token']:10.0f} B sent  {p['net_bytes_received_per_token']:9.0f} B received"
              f"  {p['net_round_trips_per_token']:.4f} round trips")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "runs": dict(runs)}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
