"""A cluster of `plumb serve` hosts behind HAProxy, each in a network namespace of its own, for
test_cluster.py; and the load client that runs inside the client namespace.

Topology (every address is inside a namespace; the host's own interfaces and routes are never
touched):

    <tag>-sw   a "switch": the bridge br0, one veth port per namespace below
    <tag>-h1 .. <tag>-hN   plumb hosts, eth0 = 10.201.0.11 ..    (plumb serve :8080, agent :8081)
    <tag>-lb   HAProxy, eth0 = 10.201.0.2 (:8080; its admin socket is a file, reachable from here)
    <tag>-cl   clients, eth0 = 10.201.0.3

<tag> is "plc" and the test process's pid, so two runs never share a name, and namespaces left
by a run that died (its pid gone) are removed by the next one.

The client side is this file run as a script inside <tag>-cl (`ip netns exec <tag>-cl python
cluster.py load ...`): it prints one JSON line per request (when it started and ended, on
CLOCK_MONOTONIC, which all processes of the machine share; whether it completed; which server
answered, from HAProxy's X-Served-By header) so the test can line requests up with the moments
it killed a server or cut a link.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SUBNET = "10.201.0"
LB_ADDR = f"{SUBNET}.2"
CLIENT_ADDR = f"{SUBNET}.3"
GHOST_ADDR = f"{SUBNET}.99"  # on the bridge's subnet, nobody there: connections time out
HTTP_PORT = 8080
AGENT_PORT = 8081
LB_PORT = 8080
BAD_LB_PORT = 8090  # the misconfigured HAProxy of the bad-input test


def host_addr(i: int) -> str:
    """The address of plumb host i (1-based)."""
    return f"{SUBNET}.{10 + i}"


def ip(*args: str, timeout: float = 10.0) -> str:
    """Runs `ip ARGS`, returning its stdout; a failure raises with ip's message."""
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"$ ip {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def remove_stale_namespaces(prefix: str = "plc"):
    """Deletes namespaces named <prefix><pid>-* whose pid no longer runs (left by a run that was
    killed), after killing the processes still inside them (its servers and HAProxy)."""
    try:
        names = ip("netns", "list").split()
    except (RuntimeError, OSError):
        return
    for name in names:
        m = re.fullmatch(rf"{prefix}(\d+)-\w+", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10).stdout
            for pid in pids.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


class Cluster:
    """N plumb hosts, HAProxy and a client namespace on one bridge. start() builds it and starts
    everything; close() (always call it: in a finally) kills what it started and deletes the
    namespaces, whatever state they are in."""

    def __init__(self, plumb_bin: Path, model: Path, n_hosts: int = 3, check_ms: int = 500, slots: int = 2,
                 agent: bool = True, server_args: tuple = ()):
        self.plumb = Path(plumb_bin)
        self.model = Path(model)
        self.n = n_hosts
        self.check_ms = check_ms
        self.slots = slots
        self.agent = agent
        self.server_args = tuple(str(a) for a in server_args)
        self.tag = f"plc{os.getpid()}"
        # a short path: a unix socket's name has 108 bytes at most
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.sock = self.dir / "haproxy.sock"
        self.bad_sock = self.dir / "bad.sock"
        self.namespaces: list[str] = []
        self.servers: dict[int, subprocess.Popen] = {}
        self.server_logs: dict[int, list[Path]] = {}
        self.haproxy: subprocess.Popen | None = None
        self.others: list[subprocess.Popen] = []
        self.config = ""

    # names
    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def host_ns(self, i: int) -> str:
        return self.ns(f"h{i}")

    @property
    def url(self) -> str:
        return f"http://{LB_ADDR}:{LB_PORT}"

    def server_url(self, i: int) -> str:
        return f"http://{host_addr(i)}:{HTTP_PORT}"

    # building and tearing down
    def start(self):
        remove_stale_namespaces()
        self._network()
        for i in range(1, self.n + 1):
            self.start_server(i, wait=False)
        self.config = self.generate_config()
        (self.dir / "haproxy.cfg").write_text(self.config)
        self.haproxy = self._spawn(self.ns("lb"), ["haproxy", "-db", "-f", str(self.dir / "haproxy.cfg")],
                                   self.dir / "haproxy.log")
        deadline = time.monotonic() + 60
        while not self.sock.exists():
            if self.haproxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not start:\n" + self.haproxy_log())
            time.sleep(0.05)
        for i in range(1, self.n + 1):
            self.wait_state(i, "UP", 90, checked=True)

    def _network(self):
        sw = self.ns("sw")
        roles = [f"h{i}" for i in range(1, self.n + 1)] + ["lb", "cl"]
        addrs = {f"h{i}": host_addr(i) for i in range(1, self.n + 1)} | {"lb": LB_ADDR, "cl": CLIENT_ADDR}
        for name in [sw] + [self.ns(r) for r in roles]:
            ip("netns", "add", name)
            self.namespaces.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        for r in roles:
            # the switch's port "p-<role>", and the namespace's end of it, "eth0"
            ip("-n", sw, "link", "add", f"p-{r}", "type", "veth", "peer", "name", "eth0", "netns", self.ns(r))
            ip("-n", sw, "link", "set", f"p-{r}", "master", "br0", "up")
            ip("-n", self.ns(r), "addr", "add", f"{addrs[r]}/24", "dev", "eth0")
            ip("-n", self.ns(r), "link", "set", "eth0", "up")

    def close(self):
        procs = list(self.servers.values()) + self.others + ([self.haproxy] if self.haproxy else [])
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.namespaces.clear()
        if os.environ.get("PLUMB_CLUSTER_KEEP"):  # the logs and configurations, to look at a failure
            print(f"cluster files kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, ns: str, argv: list[str], log: Path, **kw) -> subprocess.Popen:
        f = open(log, "ab")
        try:
            return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kw)
        finally:
            f.close()

    # the servers
    def start_server(self, i: int, wait: bool = True):
        """Starts plumb serve on host i (its log: a new file for each start); with wait, until
        HAProxy has it UP again."""
        logs = self.server_logs.setdefault(i, [])
        log = self.dir / f"h{i}-{len(logs)}.log"
        logs.append(log)
        argv = [str(self.plumb), "serve", "-m", str(self.model), "--mmap", "-np", str(self.slots), "-t", "1",
                "-c", "512", "--host", host_addr(i), "--port", str(HTTP_PORT), "--log", *self.server_args]
        if self.agent:
            argv += ["--agent-port", str(AGENT_PORT), "--drain-delay", str(self.check_ms // 1000 + 2)]
        self.servers[i] = self._spawn(self.host_ns(i), argv, log)
        if wait:
            self.wait_state(i, "UP", 60, checked=True)

    def server_log(self, i: int) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in self.server_logs.get(i, []))

    def haproxy_log(self) -> str:
        p = self.dir / "haproxy.log"
        return p.read_text(errors="replace")[-6000:] if p.exists() else ""

    def link(self, i: int, up: bool):
        ip("-n", self.host_ns(i), "link", "set", "eth0", "up" if up else "down")

    # the configuration
    def server_spec(self, i: int, agent_port: int | None = None) -> str:
        spec = f"{host_addr(i)}:{HTTP_PORT},slots={self.slots}"
        if agent_port or self.agent:
            spec += f",agent={agent_port or AGENT_PORT}"
        return spec

    def generate_config(self, *extra: str, servers: list[str] | None = None, listen: str | None = None,
                        sock: Path | None = None) -> str:
        args = [str(self.plumb), "cluster-config", "--listen", listen or f"{LB_ADDR}:{LB_PORT}",
                "--check-interval", str(self.check_ms), "--queue-timeout", "60", "--stats-socket", str(sock or self.sock)]
        for s in servers or [self.server_spec(i) for i in range(1, self.n + 1)]:
            args += ["--server", s]
        p = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"plumb cluster-config failed ({p.returncode}): {p.stderr}")
        return p.stdout

    # HAProxy's view
    def stat(self, sock: Path | None = None) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers, by server name (plumb1 ...), and BACKEND."""
        text = admin(sock or self.sock, "show stat")
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# "):
            raise RuntimeError(f"show stat answered {text[:300]!r}")
        head = lines[0][2:].split(",")
        out = {}
        for line in lines[1:]:
            if line:
                row = dict(zip(head, line.split(",")))
                if row.get("pxname") == "plumb_servers":
                    out[row["svname"]] = row
        return out

    def state(self, i: int) -> str:
        return self.stat()[f"plumb{i}"]["status"]

    def wait_state(self, i: int, status: str, timeout: float, checked: bool = False) -> float:
        """Waits until HAProxy shows server i with status (exactly: "UP" is not "UP 1/2"), and
        with checked, its last health check passed (HAProxy starts servers UP before checking
        them); returns the seconds it took. A timeout raises with HAProxy's and the server's view."""
        t0 = time.monotonic()
        while True:
            try:
                row = self.stat()[f"plumb{i}"]
                if row["status"] == status and (not checked or row["check_status"] == "L7OK"):
                    return time.monotonic() - t0
            except (OSError, RuntimeError):
                row = {}
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"plumb{i} is not {status} after {timeout} s: HAProxy says {row.get('status')} "
                                     f"({row.get('check_status')} {row.get('last_chk')}; agent {row.get('agent_status')} "
                                     f"{row.get('last_agt')})\n{self.server_log(i)}\n--- haproxy\n{self.haproxy_log()}")
            time.sleep(0.02)

    # clients
    def client(self, *args: str, timeout: float = 120.0) -> list[dict]:
        """Runs this file as `cluster.py ARGS` in the client namespace and returns its JSON lines."""
        p = self.client_start(*args)
        return self.client_wait(p, timeout)

    def client_start(self, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns("cl"), sys.executable, __file__, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.others.append(p)
        return p

    def client_wait(self, p: subprocess.Popen, timeout: float = 120.0) -> list[dict]:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"the client did not finish within {timeout} s; stderr: {err[-3000:]}")
        if p.returncode != 0:
            raise AssertionError(f"the client failed ({p.returncode}): {err[-3000:]}")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


class Load:
    """A load client running in the background in the client namespace: CONCURRENCY workers
    sending streamed chat requests back to back until stop() (or LIMIT seconds)."""
    _n = 0

    def __init__(self, cluster: Cluster, concurrency: int, max_tokens: int = 24, stream: bool = True,
                 limit: float = 120.0, url: str | None = None):
        Load._n += 1
        self.cluster = cluster
        self.stop_file = cluster.dir / f"stop-{Load._n}"
        args = ["load", "--url", url or cluster.url, "--concurrency", str(concurrency), "--duration", str(limit),
                "--max-tokens", str(max_tokens), "--stop-file", str(self.stop_file)]
        self.proc = cluster.client_start(*args, *(["--stream"] if stream else []))
        self.t0 = time.monotonic()

    def stop(self, timeout: float = 60.0) -> list[dict]:
        """Lets each worker finish the request it is on; the records of every request."""
        self.stop_file.touch()
        return self.cluster.client_wait(self.proc, timeout)


def admin(sock: Path, command: str, timeout: float = 5.0) -> str:
    """One command on HAProxy's admin socket; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# The client side: run inside the client namespace.

def _split_url(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"http://([^:/]+):(\d+)/?", url)
    assert m, url
    return m.group(1), int(m.group(2))


def chat(url: str, body: dict, headers: dict | None = None, timeout: float = 30.0) -> dict:
    """One POST /v1/chat/completions: a record of what happened. Streamed (body["stream"]) it
    completes when the events end with [DONE] after a finish_reason; whole when a 200 JSON
    answer with a choice arrives."""
    host, port = _split_url(url)
    rec = {"t0": time.monotonic(), "ok": False, "status": 0, "server": None, "error": None, "tokens": 0,
           "t_first": None, "itl": []}
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        rec["status"] = r.status
        rec["server"] = r.getheader("X-Served-By")
        if r.status != 200:
            rec["error"] = f"HTTP {r.status}: {r.read()[:300].decode(errors='replace')}"
            return rec
        if not body.get("stream"):
            j = json.loads(r.read())
            rec["usage"] = j.get("usage")
            rec["text"] = j["choices"][0]["message"]["content"]
            rec["ok"] = bool(j["choices"]) and j["choices"][0].get("finish_reason") is not None
            if not rec["ok"]:
                rec["error"] = "no finish_reason"
            return rec
        finish, done, last = None, False, None
        text = []
        buf = b""
        while True:
            chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                data = event.decode(errors="replace")
                if not data.startswith("data: "):
                    continue
                data = data[6:]
                if data == "[DONE]":
                    done = True
                    continue
                j = json.loads(data)
                for ch in j.get("choices", []):
                    piece = (ch.get("delta") or {}).get("content")
                    if piece:
                        now = time.monotonic()
                        if rec["t_first"] is None:
                            rec["t_first"] = now
                        elif last is not None:
                            rec["itl"].append(now - last)
                        last = now
                        rec["tokens"] += 1
                        text.append(piece)
                    finish = ch.get("finish_reason") or finish
        rec["text"] = "".join(text)
        rec["finish"] = finish
        rec["ok"] = done and finish is not None
        if not rec["ok"]:
            rec["error"] = f"stream ended without {'[DONE]' if finish else 'a finish_reason'} after {rec['tokens']} tokens"
    except (OSError, http.client.HTTPException, ValueError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        rec["t1"] = time.monotonic()
        conn.close()
    return rec


PROMPTS = ["Name a colour.", "Count to five.", "Say hello.", "What is two plus two?", "Name a fruit.",
           "Name an ocean.", "Give me a word that rhymes with cat.", "Name a planet."]


def load(args) -> None:
    """`load`: CONCURRENCY workers send requests back to back for DURATION seconds, or until
    REQUESTS were sent, or until STOP_FILE exists (then each finishes the request it is on);
    one JSON line per request, in the order they ended."""
    stop_at = time.monotonic() + args.duration
    lock = threading.Lock()
    sent = [0]

    def worker(w: int):
        rnd = random.Random(w)
        while time.monotonic() < stop_at and not (args.stop_file and os.path.exists(args.stop_file)):
            with lock:
                if args.requests and sent[0] >= args.requests:
                    return
                n = sent[0]
                sent[0] += 1
            body = {"messages": [{"role": "user", "content": f"{rnd.choice(PROMPTS)} (request {n})"}],
                    "max_tokens": args.max_tokens, "temperature": 0, "stream": args.stream}
            rec = chat(args.url, body, timeout=args.timeout)
            rec["id"] = n
            rec["worker"] = w
            with lock:
                print(json.dumps(rec), flush=True)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def metrics(url: str) -> dict[str, float]:
    host, port = _split_url(url)
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode()
    finally:
        c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


SYSTEM = ("You are a patient assistant for a museum of old machines. Visitors ask about steam engines, looms, "
          "printing presses, clocks and calculating machines; answer in one short sentence, plainly, and never "
          "make up dates. Conversation {k}: the visitor's name is {name} and they like {topic}.")
NAMES = ["Ada", "Blaise", "Charles", "Dorothy", "Edsger", "Frances", "Grace", "Herman", "Ida", "John"]
TOPICS = ["clocks", "looms", "engines", "presses", "calculators"]


def affinity(args) -> None:
    """`affinity`: CONVERSATIONS two-turn conversations, keyed by the X-Session-Id header (or,
    with --by-user, by the body's "user" field), in rounds of ROUND: the first turns of a round
    together, then their second turns one at a time in shuffled order (so leastconn alone would
    not put them back where they were). Prints one line per conversation (both turns' records)
    and a last line with how much each server's plumb_prompt_tokens_cached_total grew during the
    second turns (prompt tokens found in a slot's KV cache)."""
    servers = args.servers.split(",")
    rnd = random.Random(7)
    convs = list(range(args.conversations))
    cached = {u: 0.0 for u in servers}  # plumb_prompt_tokens_cached_total gained during second turns
    results = []
    tag = f"{os.getpid()}-{args.key_prefix}"
    for r0 in range(0, len(convs), args.round):
        batch = convs[r0:r0 + args.round]
        first: dict[int, dict] = {}

        def turn1(k: int):
            msgs = [{"role": "system", "content": SYSTEM.format(k=k, name=NAMES[k % len(NAMES)],
                                                                 topic=TOPICS[k % len(TOPICS)])},
                    {"role": "user", "content": f"Which machine should I see first? ({k})"}]
            body = {"messages": msgs, "max_tokens": args.max_tokens, "temperature": 0}
            key = f"conv-{tag}-{k}"
            headers = {}
            if args.by_user:
                body["user"] = key
            else:
                headers["X-Session-Id"] = key
            rec = chat(args.url, body, headers)
            first[k] = {"rec": rec, "msgs": msgs, "headers": headers, "body": body}

        ts = [threading.Thread(target=turn1, args=(k,)) for k in batch]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        before = {u: metrics(u).get("plumb_prompt_tokens_cached_total", 0.0) for u in servers}
        order = list(batch)
        rnd.shuffle(order)
        for k in order:
            f = first[k]
            rec2 = None
            if f["rec"]["ok"]:
                body = dict(f["body"])
                body["messages"] = f["msgs"] + [{"role": "assistant", "content": f["rec"]["text"]},
                                               {"role": "user", "content": "And after that one?"}]
                rec2 = chat(args.url, body, f["headers"])
            results.append({"conversation": k, "first": f["rec"], "second": rec2})
        for u in servers:
            cached[u] += metrics(u).get("plumb_prompt_tokens_cached_total", 0.0) - before[u]
    for r in results:
        print(json.dumps(r), flush=True)
    print(json.dumps({"cached_during_second_turns": cached}), flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="cluster.py", description="load clients for test_cluster.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--url", required=True)
    lp.add_argument("--concurrency", type=int, default=4)
    lp.add_argument("--duration", type=float, default=5.0)
    lp.add_argument("--requests", type=int, default=0)
    lp.add_argument("--max-tokens", type=int, default=16)
    lp.add_argument("--timeout", type=float, default=30.0)
    lp.add_argument("--stream", action="store_true")
    lp.add_argument("--stop-file", default="")
    ap_aff = sub.add_parser("affinity")
    ap_aff.add_argument("--url", required=True)
    ap_aff.add_argument("--servers", required=True, help="comma-separated server URLs, for /metrics")
    ap_aff.add_argument("--conversations", type=int, default=20)
    ap_aff.add_argument("--round", type=int, default=3)
    ap_aff.add_argument("--max-tokens", type=int, default=12)
    ap_aff.add_argument("--by-user", action="store_true")
    ap_aff.add_argument("--key-prefix", default="h")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.cmd == "load":
        load(args)
    else:
        affinity(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
