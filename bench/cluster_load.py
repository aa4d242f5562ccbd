#!/usr/bin/env python3
"""cluster_load.py — streamed chat requests through HAProxy (a configuration from `plumb
cluster-config`) to 1, 2 and 3 `plumb serve` instances, and the same load straight to one
server: requests/s, generated tokens/s, time to first token (TTFT) and inter-token latency
(ITL) percentiles, and the deepest HAProxy queue. Everything runs on 127.0.0.1: the servers
(each --parallel SLOTS, --threads THREADS, --agent-port), HAProxy (`haproxy` on PATH, 2.6 or
later) and the clients, which are threads of this script. Standard library only.

  bench/cluster_load.py --model models/gemma-3-270m-q4_k_m.gguf

What the rows say:
- "direct" vs "haproxy" with one server and the same clients is the routing overhead: HAProxy
  adds a local connection and a copy of each event, well under a millisecond to TTFT, nothing
  measurable to ITL (it passes events on as they come: `option http-no-delay`, no compression).
- With more clients than slots, "direct" queues inside plumb (--queue) and "haproxy" queues in
  HAProxy (maxconn = slots): TTFT grows by the wait either way; the queue column shows HAProxy's.
- 2 and 3 servers: on one machine the servers share its cores and memory bandwidth, so adding
  servers adds slots but hardly any compute — throughput stays near one server's once its
  threads use the cores. On separate machines each server brings its own cores and memory
  bandwidth: throughput grows about linearly with the servers (N servers of S slots answer
  N*S requests at once, each at one server's speed) while HAProxy's cost stays the same small
  per-request constant — it forwards tens of thousands of requests per second, far above what
  a few LLM servers answer — and TTFT under load drops because fewer requests wait for a slot.
  Conversations with a session key keep their prompt cache on one server (affinity), so their
  later turns skip most of the prefill wherever they run.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serve_load import pct, sse_events

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Tell me about the history of the printing press.", "How do I grow tomatoes on a balcony?",
           "Why is the sky blue?", "Explain the rules of chess briefly.", "How are suspension bridges built?",
           "Write a short story about a lighthouse keeper.", "Describe the life cycle of a star.",
           "What makes rivers change course?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def stream_chat(port: int, n: int, max_tokens: int, timeout: float, tag: str = "") -> dict:
    """One streamed chat request: TTFT, the gaps between content events, the tokens, ok. tag
    opens the prompt, so that no row finds another row's prompts in a slot's cache."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body = json.dumps({"messages": [{"role": "user", "content": f"[{tag}] {PROMPTS[n % len(PROMPTS)]} ({n})"}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": True})
    t0 = time.monotonic()
    out = {"ok": False, "ttft": None, "itl": [], "tokens": 0, "server": None}
    try:
        c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out["server"] = r.getheader("X-Served-By")
        if r.status != 200:
            out["error"] = f"HTTP {r.status}"
            return out
        last = None
        events = sse_events(r)
        while True:
            try:
                ev = next(events)
            except StopIteration as done:
                out["ok"] = bool(done.value)
                break
            if ev["choices"] and (ev["choices"][0].get("delta") or {}).get("content"):
                now = time.monotonic()
                if last is None:
                    out["ttft"] = now - t0
                else:
                    out["itl"].append(now - last)
                last = now
                out["tokens"] += 1
    except (OSError, http.client.HTTPException, ValueError) as e:
        out["error"] = str(e)
    finally:
        c.close()
    return out


def run_load(port: int, clients: int, requests: int, max_tokens: int, timeout: float, tag: str) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    counter = [0]

    def client():
        while True:
            with lock:
                if counter[0] >= requests:
                    return
                n = counter[0]
                counter[0] += 1
            r = stream_chat(port, n, max_tokens, timeout, tag)
            with lock:
                results.append(r)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = [r for r in results if r["ok"]]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    itl = [x for r in ok for x in r["itl"]]
    return {"requests": len(results), "ok": len(ok), "wall": wall, "rps": len(ok) / wall,
            "tps": sum(r["tokens"] for r in ok) / wall, "ttft": ttft, "itl": itl,
            "servers": sorted({r["server"] for r in ok if r["server"]})}


class Server:
    def __init__(self, binary: str, model: str, slots: int, threads: int, logdir: Path, i: int):
        self.port, self.agent = free_port(), free_port()
        self.log = open(logdir / f"server{i}.log", "wb")
        self.proc = subprocess.Popen([binary, "serve", "-m", model, "--mmap", "-np", str(slots), "-t", str(threads),
                                      "-c", "512", "--port", str(self.port), "--agent-port", str(self.agent)],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"plumb serve exited {self.proc.returncode}; see {self.log.name}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit(f"plumb serve on :{self.port} was not ready in {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def stat(sock: Path) -> dict[str, dict[str, str]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    head = lines[0][2:].split(",")
    rows = [dict(zip(head, ln.split(","))) for ln in lines[1:] if ln]
    return {r["svname"]: r for r in rows if r["pxname"] == "plumb_servers"}


class HAProxy:
    def __init__(self, binary: str, servers: list[Server], slots: int, workdir: Path, n: int):
        self.port = free_port()
        self.sock = workdir / f"haproxy{n}.sock"
        args = [binary, "cluster-config", "--listen", f"127.0.0.1:{self.port}", "--stats-socket", str(self.sock),
                "--check-interval", "500"]
        for s in servers:
            args += ["--server", f"127.0.0.1:{s.port},agent={s.agent},slots={slots}"]
        cfg = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        path = workdir / f"haproxy{n}.cfg"
        path.write_text(cfg)
        self.log = open(workdir / f"haproxy{n}.log", "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                st = stat(self.sock)
                if all(st.get(f"plumb{i + 1}", {}).get("check_status") == "L7OK" and st[f"plumb{i + 1}"]["status"] == "UP"
                       for i in range(len(servers))):
                    break
            except (OSError, IndexError, KeyError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                sys.exit(f"haproxy did not get its servers up; see {self.log.name}")
            time.sleep(0.1)

    def queue_max(self) -> int:
        return max(int(r["qmax"] or 0) for r in stat(self.sock).values())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def cpu_line(binary: str) -> str:
    try:
        info = subprocess.run([binary, "info"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"^cpu: (.*)$", info, re.M)
        cpu = m.group(1) if m else "unknown"
    except OSError:
        cpu = "unknown"
    hv = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"cpu: {cpu}, {os.cpu_count()} logical CPUs; {hv}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--binary", default=str(REPO / "build" / "plumb"))
    ap.add_argument("--slots", type=int, default=2, help="--parallel of each server")
    ap.add_argument("--threads", type=int, default=1, help="--threads of each server")
    ap.add_argument("--clients", type=int, default=6, help="concurrent clients of the loaded rows")
    ap.add_argument("--requests", type=int, default=24, help="requests of each row")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    if not shutil.which("haproxy"):
        sys.exit("haproxy is not installed (apt-get install haproxy; scripts/setup.sh test installs it)")
    workdir = Path(tempfile.mkdtemp(prefix="plumb-cluster-bench-"))
    servers = [Server(a.binary, a.model, a.slots, a.threads, workdir, i + 1) for i in range(3)]
    rows = []
    try:
        for s in servers:
            s.wait_ready()
            stream_chat(s.port, 0, 4, a.timeout)  # warm-up: first-touch of the mapped weights
        light = a.slots
        plan = [("direct", 1, light, a.requests), ("haproxy", 1, light, a.requests),
                ("direct", 1, a.clients, a.requests), ("haproxy", 1, a.clients, a.requests),
                ("haproxy", 2, a.clients, a.requests), ("haproxy", 3, a.clients, a.requests)]
        for how, n, clients, requests in plan:
            hp = HAProxy(a.binary, servers[:n], a.slots, workdir, len(rows)) if how == "haproxy" else None
            try:
                r = run_load(hp.port if hp else servers[0].port, clients, requests, a.max_tokens, a.timeout,
                             f"row {len(rows) + 1}")
                r["queue"] = hp.queue_max() if hp else None
            finally:
                if hp:
                    hp.stop()
            rows.append((how, n, clients, r))
            print(f"  {how} x{n}, {clients} clients: {r['ok']}/{r['requests']} in {r['wall']:.1f} s", file=sys.stderr)
    finally:
        for s in servers:
            s.stop()
    print(cpu_line(a.binary))
    print(f"each server: --parallel {a.slots} --threads {a.threads} -c 512, {Path(a.model).name}; "
          f"streamed chat, max_tokens {a.max_tokens}; times in ms")
    head = (f"{'route':<8} {'srv':>3} {'slots':>5} {'clients':>7} {'ok/sent':>8} {'req/s':>6} {'tok/s':>6} "
            f"{'TTFT p50':>8} {'p95':>6} {'p99':>6} {'ITL p50':>7} {'p95':>5} {'p99':>5} {'HAProxy queue max':>17}")
    print(head)
    print("-" * len(head))
    for how, n, clients, r in rows:
        ms = lambda xs, p: pct(xs, p) * 1000  # noqa: E731
        q = "-" if r["queue"] is None else str(r["queue"])
        print(f"{how:<8} {n:>3} {n * a.slots:>5} {clients:>7} {str(r['ok']) + '/' + str(r['requests']):>8} {r['rps']:>6.2f} "
              f"{r['tps']:>6.1f} {ms(r['ttft'], 50):>8.1f} {ms(r['ttft'], 95):>6.1f} {ms(r['ttft'], 99):>6.1f} "
              f"{ms(r['itl'], 50):>7.1f} {ms(r['itl'], 95):>5.1f} {ms(r['itl'], 99):>5.1f} {q:>17}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
