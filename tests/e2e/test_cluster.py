"""`plumb cluster-config` and several `plumb serve` behind HAProxy, with real processes and real
network hops: three plumb hosts, HAProxy and the clients each in a network namespace of their
own, joined by a bridge in a sixth ("switch") namespace (tests/e2e/cluster.py builds it, and
tears it down even when a test fails). Every scenario counts the requests sent, completed
and failed, prints them, and writes them to tests/e2e/artifacts/cluster_scenarios.json:

- load above the cluster's slots: every request completes (HAProxy queues the excess);
- `kill -9` of a server under load: only requests that were streaming from it fail, every later
  one completes on the others, and HAProxy marks it down within its check interval;
- a rolling restart (SIGTERM each server in turn, wait for it to drain and exit, start it
  again, wait until HAProxy has it up): no request fails;
- affinity: the second turn of 20 conversations (X-Session-Id), and of 6 keyed by the OpenAI
  "user" field, goes to the server that answered the first, whose /metrics counts the
  conversation's prompt as found in its KV cache;
- a server's link cut (its veth down): failover as for kill -9;
- a misconfigured cluster (an unreachable server, a wrong agent port, an agent port given as
  the HTTP port) shows as clear HAProxy states and clear lines of `cluster-config --check`.

The generator's own tests (arguments, `haproxy -c` of what it writes, deploy/haproxy's example
kept in step) need neither root nor namespaces. The cluster needs root (ip netns), iproute2 and
haproxy (make test installs them: scripts/setup.sh test); a missing one fails, never skips.
The servers are small (2 slots, 1 thread, 512 positions, the 270M model mapped) since the
machine may have two cores for all of it; the checks run every 500 ms.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from cluster import (AGENT_PORT, BAD_LB_PORT, GHOST_ADDR, HTTP_PORT, LB_ADDR, Cluster, Load, host_addr)

REPO = Path(__file__).resolve().parents[2]
CHECK_MS = 500
SLOTS = 2
RESULTS: dict[str, dict] = {}


# ---------------------------------------------------------------------------------------------
# The generator: no network needed.

def cluster_config(plumb_bin, *args, timeout=30):
    return subprocess.run([str(plumb_bin), "cluster-config", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def haproxy_check(cfg: str, tmp_path: Path) -> subprocess.CompletedProcess:
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed (make test installs it: scripts/setup.sh test)"
    f = tmp_path / f"cfg{len(list(tmp_path.iterdir()))}.cfg"
    f.write_text(cfg)
    return subprocess.run([haproxy, "-c", "-f", str(f)], capture_output=True, text=True, timeout=30)


VALID = [
    ["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081"],
    ["--listen", "10.0.0.1:80", "--server", "10.0.0.2:8080,agent=8081,slots=8", "--server", "10.0.0.3:8080,slots=2,agent=9000",
     "--server", "10.0.0.4:8080"],
    ["--listen", "*:8080", "--server", "[::1]:8081,agent=8082", "--server", "gpu-box.example:8080", "--no-affinity"],
    ["--listen=[::]:8080", "--server=plumb-a:8080,slots=1", "--session-header", "X-Conversation",
     "--queue-timeout=5", "--check-interval", "250", "--timeout", "30", "--stats-socket", "/tmp/x.sock"],
]


@pytest.mark.parametrize("args", VALID, ids=lambda a: " ".join(a)[:60])
def test_config_passes_haproxy_check(plumb_bin, tmp_path, args):
    p = cluster_config(plumb_bin, *args)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    c = haproxy_check(p.stdout, tmp_path)
    assert c.returncode == 0, f"haproxy -c: {c.stdout}{c.stderr}\n{p.stdout}"
    assert "Configuration file is valid" in c.stdout + c.stderr


def test_config_says_what_was_asked(plumb_bin):
    p = cluster_config(plumb_bin, "--listen", "10.0.0.1:80", "--server", "10.0.0.2:8080,agent=8081,slots=8",
                       "--server", "10.0.0.3:8080", "--session-header", "X-Conv", "--queue-timeout", "7",
                       "--check-interval", "300", "--timeout", "42")
    assert p.returncode == 0, p.stderr
    cfg = p.stdout
    directives = [ln.strip() for ln in cfg.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for want in ["bind 10.0.0.1:80", "balance leastconn", "timeout queue 7s", "timeout server 42s",
                 "timeout client 42s", "option httpchk", "http-check expect status 200",
                 "retry-on conn-failure empty-response response-timeout 503", "option redispatch 1",
                 "http-reuse never", "http-request set-var(txn.conversation) req.hdr(X-Conv)",
                 "stick on var(txn.conversation)",
                 "server plumb1 10.0.0.2:8080 maxconn 8 agent-check agent-port 8081 agent-inter 300",
                 "server plumb2 10.0.0.3:8080 maxconn 4"]:
        assert any(d == want or d.startswith(want + " ") for d in directives), f"no '{want}' in:\n{cfg}"
    assert not any("maxqueue" in d for d in directives), "a full server queue turns a failover into 503s"
    assert any(d.startswith("default-server check inter 300 ") and "observe layer4 error-limit 1 on-error mark-down" in d
               and "tcp-ut 4s" in d
               for d in directives), cfg
    assert not any("compression" in d for d in directives), "compression would hold streamed events back"
    assert cfg.count("\n    # ") >= 40, "the configuration explains its directives"
    no_aff = cluster_config(plumb_bin, "--listen", "10.0.0.1:80", "--server", "10.0.0.2:8080", "--no-affinity").stdout
    no_aff_directives = [ln.strip() for ln in no_aff.splitlines() if not ln.lstrip().startswith("#")]
    assert not [d for d in no_aff_directives if d.startswith(("stick", "http-request set-var")) or "maxqueue" in d]
    assert "option http-buffer-request" in no_aff_directives


BAD = [
    ([], "needs --listen"),
    (["--listen", "127.0.0.1:8080"], "needs --listen HOST:PORT and at least one --server"),
    (["--server", "127.0.0.1:8081"], "needs --listen"),
    (["--listen", "127.0.0.1", "--server", "127.0.0.1:8081"], "--listen '127.0.0.1': needs HOST:PORT"),
    (["--listen", "127.0.0.1:0", "--server", "127.0.0.1:8081"], "the port must be a number from 1 to 65535"),
    (["--listen", "127.0.0.1:65536", "--server", "127.0.0.1:8081"], "the port must be a number"),
    (["--listen", "127.0.0.1:8080", "--server", ":8081"], "needs a host before the port"),
    (["--listen", "127.0.0.1:8080", "--server", "::1:8081"], "an IPv6 address goes in brackets"),
    (["--listen", "127.0.0.1:8080", "--server", "[::1:8081"], "no closing ']'"),
    (["--listen", "127.0.0.1:8080", "--server", "[zz]:8081"], "not an IPv6 address"),
    (["--listen", "127.0.0.1:8080", "--server", "bad_host!:8081"], "neither an address nor a host name"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081,agent=0"], "agent= must be a port number"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081,agent=8081"], "the agent port must differ"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081,slots=0"], "slots= must be a number from 1 to 1024"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081,slots=x"], "slots= must be a number"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081,weight=3"], "unknown setting 'weight=3'"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081,slots=2,slots=3"], "given twice"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--server", "127.0.0.1:8081"],
     "127.0.0.1:8081 is named by two --server options"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081,agent=9000", "--server", "127.0.0.1:9000"],
     "127.0.0.1:9000 is named by two --server options"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8080"], "is where --listen takes requests"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--queue-timeout", "0"],
     "bad value '0' for --queue-timeout"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--check-interval=50"],
     "bad value '50' for --check-interval"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--timeout", "1e3"], "bad value '1e3' for --timeout"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--session-header", "X Session"],
     "a header name of letters, digits"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--session-header", "X#S"],
     "a header name of letters, digits"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--session-header", "X-S", "--no-affinity"],
     "cannot be used together"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--stats-socket", "relative.sock"],
     "needs an absolute path"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--stats-socket", "/tmp/a b"],
     "needs an absolute path"),
    (["--listen", "127.0.0.1:8080", "--server", "127.0.0.1:8081", "--bogus"], "unknown option '--bogus'"),
    (["--listen", "127.0.0.1:8080", "--server"], "--server needs a value"),
]


@pytest.mark.parametrize("args,message", BAD, ids=lambda x: x if isinstance(x, str) else " ".join(x)[:50])
def test_bad_arguments_exit_2_with_one_line(plumb_bin, args, message):
    p = cluster_config(plumb_bin, *args)
    assert p.returncode == 2, (p.returncode, p.stdout[:300], p.stderr)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("plumb cluster-config: "), p.stderr
    assert message in lines[0], lines[0]


def test_help_and_man_page(plumb_bin):
    p = cluster_config(plumb_bin, "--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: plumb cluster-config"), p.stderr
    top = subprocess.run([str(plumb_bin), "help"], capture_output=True, text=True, timeout=30).stdout
    assert "cluster-config" in top


def test_deploy_example_is_what_the_generator_writes(plumb_bin):
    """deploy/haproxy/haproxy.cfg is the generator's output for the command in its header."""
    example = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    header = []
    for ln in example.splitlines()[1:]:
        header.append(ln.lstrip("#").strip().rstrip("\\").strip())
        if not ln.rstrip().endswith("\\"):
            break
    argv = shlex.split(" ".join(header))
    assert argv[:2] == ["plumb", "cluster-config"], header
    p = cluster_config(plumb_bin, *argv[2:])
    assert p.returncode == 0, p.stderr
    assert p.stdout == example, "deploy/haproxy/haproxy.cfg is stale: regenerate it with the command in its header"


# ---------------------------------------------------------------------------------------------
# The cluster

def _require_cluster_tools(plumb_bin):
    if os.geteuid() != 0:
        pytest.fail("the cluster tests need root for network namespaces (ip netns)", pytrace=False)
    for tool in ("ip", "haproxy"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (make test installs it: scripts/setup.sh test)", pytrace=False)
    helptext = subprocess.run([str(plumb_bin), "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    if "--agent-port" not in helptext:
        pytest.fail("plumb serve has no --agent-port", pytrace=False)


@pytest.fixture(scope="module")
def cluster(plumb_bin, real_model):
    _require_cluster_tools(plumb_bin)
    c = Cluster(plumb_bin, real_model, n_hosts=3, check_ms=CHECK_MS, slots=SLOTS)
    try:
        c.start()
        yield c
    finally:
        c.close()
        if RESULTS:
            out = REPO / "tests" / "e2e" / "artifacts"
            out.mkdir(exist_ok=True)
            (out / "cluster_scenarios.json").write_text(json.dumps(RESULTS, indent=2) + "\n")


def ready(c: Cluster):
    """Every host's link up, every server running and UP in HAProxy, HAProxy's counters cleared."""
    for i in range(1, c.n + 1):
        c.link(i, True)
        if c.servers[i].poll() is not None:
            c.start_server(i, wait=False)
    for i in range(1, c.n + 1):
        c.wait_state(i, "UP", 60, checked=True)
    from cluster import admin
    admin(c.sock, "clear counters")


def tally(name: str, recs: list[dict], **extra) -> dict:
    failed = [r for r in recs if not r["ok"]]
    res = {"sent": len(recs), "completed": len(recs) - len(failed), "failed": len(failed),
           "by_server": dict(sorted(Counter(r["server"] for r in recs if r["ok"]).items())), **extra}
    RESULTS[name] = res
    print(f"\n[{name}] " + " ".join(f"{k}={v}" for k, v in res.items()))
    return res


def describe(recs: list[dict], limit: int = 8) -> str:
    bad = [r for r in recs if not r["ok"]][:limit]
    return "\n".join(f"  request {r.get('id')} t0={r['t0']:.3f} server={r['server']} status={r['status']}: {r['error']}"
                     for r in bad)


def test_load_above_capacity_is_queued_not_refused(cluster):
    c = cluster
    ready(c)
    capacity = c.n * SLOTS
    load = Load(c, concurrency=2 * capacity, max_tokens=16)
    time.sleep(8)
    recs = load.stop()
    st = c.stat()
    queued = max(int(st[k]["qmax"] or 0) for k in st)
    res = tally("overload", recs, concurrency=2 * capacity, capacity=capacity, haproxy_queue_max=queued,
                per_server_max_in_flight={k: int(st[k]["smax"] or 0) for k in st if k != "BACKEND"})
    assert res["sent"] >= 2 * capacity, res
    # on a failure, HAProxy's log says why (its termination state and which servers were down)
    assert res["failed"] == 0, describe(recs) + "\n--- haproxy\n" + "\n".join(c.haproxy_log().splitlines()[-60:])
    assert queued > 0, f"HAProxy never queued a request: {st}"
    for i in range(1, c.n + 1):
        assert int(st[f"plumb{i}"]["smax"]) <= SLOTS, f"plumb{i} got more requests at once than its slots: {st}"
        assert res["by_server"].get(f"plumb{i}", 0) > 0, res


def _failover(c: Cluster, name: str, victim: int, cut):
    """Load; at 3 s, cut(victim); watch HAProxy mark it DOWN; 4 s more load. Only requests that
    were streaming from the victim when it went may fail."""
    ready(c)
    load = Load(c, concurrency=9, max_tokens=32)
    time.sleep(3)
    t_cut = time.monotonic()
    cut()
    try:
        down_s = c.wait_state(victim, "DOWN", 15)
    finally:
        time.sleep(4)
        recs = load.stop()
    failed = [r for r in recs if not r["ok"]]
    after = [r for r in recs if r["t0"] > t_cut]
    st = c.stat()
    res = tally(name, recs, failed_streaming_from_victim=sum(r["server"] == f"plumb{victim}" for r in failed),
                sent_after=len(after), completed_after=sum(r["ok"] for r in after),
                marked_down_after_s=round(down_s, 3), retries=int(st["BACKEND"]["wretr"] or 0),
                redispatches=int(st["BACKEND"]["wredis"] or 0))
    for r in failed:
        assert r["server"] == f"plumb{victim}" and r["t0"] < t_cut, \
            f"a request failed that was not streaming from plumb{victim} when it went:\n{describe(recs)}"
        # the answer is chunked end to end: one cut short is an incomplete body, not a clean end
        assert r["error"].startswith("IncompleteRead"), describe(recs)
    assert after and all(r["ok"] for r in after), describe(after)
    assert res["completed"] > 0
    return down_s


def test_kill9_fails_only_what_streamed_from_it(cluster):
    c = cluster
    down_s = _failover(c, "kill -9", 2, lambda: c.servers[2].kill())
    # a refused health check fails at once: down after the next check and one fast recheck
    bound = (CHECK_MS + CHECK_MS / 2) / 1000 + 0.75
    assert down_s <= bound, f"HAProxy marked the killed server down after {down_s:.2f} s (bound {bound:.2f} s)"
    c.start_server(2)


def test_link_cut_fails_over_like_kill9(cluster):
    c = cluster
    down_s = _failover(c, "link cut", 3, lambda: c.link(3, False))
    # unanswered checks time out after min(timeout connect, inter) each
    bound = (CHECK_MS + 2 * CHECK_MS + CHECK_MS / 2) / 1000 + 1.0
    assert down_s <= bound, f"HAProxy marked the cut-off server down after {down_s:.2f} s (bound {bound:.2f} s)"
    c.link(3, True)
    c.wait_state(3, "UP", 30)


def test_rolling_restart_loses_nothing(cluster):
    c = cluster
    ready(c)
    load = Load(c, concurrency=6, max_tokens=48)
    seen: dict[int, list[str]] = {}
    drain_s = {}
    sigterm_at = {}
    try:
        time.sleep(1.5)
        for i in range(1, c.n + 1):
            proc = c.servers[i]
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            sigterm_at[i] = t0
            states = []
            while proc.poll() is None:
                assert time.monotonic() - t0 < 60, f"plumb{i} did not exit within 60 s of SIGTERM\n{c.server_log(i)}"
                s = c.state(i)
                if not states or states[-1] != s:
                    states.append(s)
                time.sleep(0.02)
            drain_s[i] = round(time.monotonic() - t0, 2)
            seen[i] = states
            assert proc.returncode == 0, f"plumb{i} exited {proc.returncode} after SIGTERM\n{c.server_log(i)}"
            c.start_server(i)  # waits until HAProxy has it UP again
            time.sleep(1)
    finally:
        recs = load.stop()
    st = c.stat()
    # requests a server was answering when its SIGTERM came, finished while it drained
    finished = {f"plumb{i}": sum(1 for r in recs if r["ok"] and r["server"] == f"plumb{i}" and r["t0"] < t < r["t1"])
                for i, t in sigterm_at.items()}
    res = tally("rolling restart", recs, drain_seconds=drain_s, finished_while_draining=finished,
                haproxy_states_while_draining=seen, retries=int(st["BACKEND"]["wretr"] or 0),
                redispatches=int(st["BACKEND"]["wredis"] or 0))
    assert res["failed"] == 0, describe(recs)
    assert len(drain_s) == c.n and sum(finished.values()) > 0, "no request was in flight at a SIGTERM"


def _affinity(c: Cluster, name: str, n: int, *extra: str):
    ready(c)
    urls = ",".join(c.server_url(i) for i in range(1, c.n + 1))
    out = c.client("affinity", "--url", c.url, "--servers", urls, "--conversations", str(n), "--round", str(c.n), *extra,
                   timeout=180)
    convs, summary = out[:-1], out[-1]["cached_during_second_turns"]
    assert len(convs) == n
    recs = [x for cv in convs for x in (cv["first"], cv["second"]) if x]
    same = sum(1 for cv in convs if cv["second"] and cv["second"]["server"] == cv["first"]["server"])
    by_server: dict[str, list] = {}
    for cv in convs:
        if cv["second"]:
            by_server.setdefault(cv["first"]["server"], []).append(cv)
    cached_reported = {s: sum(cv["second"]["usage"]["prompt_tokens_details"]["cached_tokens"] for cv in cs)
                       for s, cs in by_server.items()}
    first_prompts = {s: sum(cv["first"]["usage"]["prompt_tokens"] for cv in cs) for s, cs in by_server.items()}
    metric = {f"plumb{i}": int(summary[c.server_url(i)]) for i in range(1, c.n + 1)}
    res = tally(name, recs, conversations=n, second_turn_on_first_server=same,
                first_turn_prompt_tokens=first_prompts, cached_tokens_reported=cached_reported,
                metrics_cached_tokens_during_second_turns=metric)
    assert res["failed"] == 0, describe(recs)
    for cv in convs:
        assert cv["second"]["server"] == cv["first"]["server"], \
            f"conversation {cv['conversation']}: first turn on {cv['first']['server']}, second on {cv['second']['server']}"
    assert len(by_server) == c.n, f"the conversations did not spread over the servers: {list(by_server)}"
    for s, cs in by_server.items():
        # the second turn's prompt starts with the whole first one: found in the slot's cache
        for cv in cs:
            got = cv["second"]["usage"]["prompt_tokens_details"]["cached_tokens"]
            want = cv["first"]["usage"]["prompt_tokens"]
            assert got >= want - 1, f"conversation {cv['conversation']} on {s}: {got} cached of its first {want} tokens"
        assert metric[s] == cached_reported[s], (s, metric, cached_reported)


def test_affinity_by_session_header(cluster):
    _affinity(cluster, "affinity (X-Session-Id)", 20)


def test_affinity_by_user_field(cluster):
    _affinity(cluster, "affinity (user field)", 6, "--by-user", "--key-prefix", "u")


def test_misconfigured_cluster_shows_clearly(cluster):
    """An agent port nothing listens on, a server nobody answers at, and a server given by its
    agent port: HAProxy's states say which; so does `cluster-config --check`, line by line."""
    c = cluster
    ready(c)
    servers = [f"{host_addr(1)}:{HTTP_PORT},agent=9999", f"{GHOST_ADDR}:{HTTP_PORT}", f"{host_addr(2)}:{AGENT_PORT}"]
    cfg = c.generate_config(servers=servers, listen=f"{LB_ADDR}:{BAD_LB_PORT}", sock=c.bad_sock)
    (c.dir / "bad.cfg").write_text(cfg)
    hp = c._spawn(c.ns("lb"), ["haproxy", "-db", "-f", str(c.dir / "bad.cfg")], c.dir / "bad-haproxy.log")
    c.others.append(hp)
    want = {"plumb1": ("UP", None, "L4CON"), "plumb2": ("DOWN", "L4TOUT", None), "plumb3": ("DOWN", None, None)}
    deadline = time.monotonic() + 15
    st = {}
    while time.monotonic() < deadline:
        try:
            st = c.stat(c.bad_sock)
        except (OSError, RuntimeError):
            st = {}
        if st and all(st[k]["status"] == s and (cs is None or st[k]["check_status"] == cs)
                      and (ag is None or st[k]["agent_status"] == ag) for k, (s, cs, ag) in want.items()):
            break
        time.sleep(0.1)
    shown = {k: (v["status"], v["check_status"], v["last_chk"], v["agent_status"], v["last_agt"]) for k, v in st.items()}
    hp.kill()
    hp.wait(10)
    for k, (s, cs, ag) in want.items():
        assert k in st and st[k]["status"] == s, shown
        assert cs is None or st[k]["check_status"] == cs, shown
        assert ag is None or st[k]["agent_status"] == ag, shown
    assert "not a plumb serve port" in st["plumb3"]["last_chk"], shown
    RESULTS["misconfigured"] = {k: {"status": v[0], "check": v[1], "check_info": v[2], "agent": v[3]}
                                for k, v in shown.items() if k != "BACKEND"}
    # the generator's probe, from the clients' namespace
    args = ["ip", "netns", "exec", c.ns("cl"), str(c.plumb), "cluster-config", "--check", "--listen",
            f"{LB_ADDR}:{BAD_LB_PORT}"] + [x for s in servers for x in ("--server", s)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "backend plumb_servers" in p.stdout, "the configuration is printed all the same"
    lines = p.stderr.splitlines()
    assert len(lines) == 3, p.stderr
    assert lines[0].startswith(f"plumb cluster-config: plumb1 {host_addr(1)}:{HTTP_PORT}: healthy"), lines[0]
    assert "agent port 9999: cannot connect: Connection refused" in lines[0], lines[0]
    assert lines[1] == f"plumb cluster-config: plumb2 {GHOST_ADDR}:{HTTP_PORT}: no answer to a connection within 2 s" \
        or "No route to host" in lines[1], lines[1]
    assert "not HTTP: is it a plumb serve port?" in lines[2], lines[2]
    # and with the right ports, every line says so
    good = ["--server", c.server_spec(1), "--server", c.server_spec(2)]
    p = subprocess.run(args[:8] + [f"{LB_ADDR}:{BAD_LB_PORT}"] + good, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert all(re.search(r": healthy .*; agent port \d+: 'up", ln) for ln in p.stderr.splitlines()), p.stderr
