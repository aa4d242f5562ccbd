"""The registry protocol beyond the basics of test_oci.py, each against Debian's docker-registry
started here on 127.0.0.1:

- HTTPS with a CA made here (openssl): a registry whose certificate is not trusted gives one
  line naming where the CA goes and is never spoken to in plain HTTP; the CA trusted through
  $PLUMB_HOME/certs.d/<host:port>/ca.crt or PLUMB_REGISTRY_CA gives a byte-identical push and
  pull, with htpasswd credentials over the same TLS.
- chunked uploads: above PLUMB_UPLOAD_CHUNK a blob goes up as POST, PATCH per chunk, PUT
  (the registry's access log shows the PATCHes); small blobs keep POST + PUT.
- cross-repository mounts: a blob the store knows from repository A of the same registry is
  mounted into B (no upload of it in the log); a registry that declines the mount gets the
  upload in the session it opened.
- progress: on a terminal (a pty) a \\r-redrawn line with bytes, rate and ETA that ends at 100%;
  without one, plain lines and no \\r; PLUMB_PROGRESS=0 is silent.
- a llama.cpp split GGUF (written here with gguf-py) is pushed as one GGUF layer per shard, in
  order; a missing shard or a non-first shard gives one line.
The test never skips: docker-registry and openssl are installed by scripts/setup.sh test."""
from __future__ import annotations

import hashlib
import json
import math
import os
import pty
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ggufsplit import split_file
from test_oci import MT_CONFIG, MT_GGUF, MT_LICENSE, MT_MANIFEST, Registry, _free_port, plumb


class Reg(Registry):
    """docker-registry on 127.0.0.1, optionally with TLS (cert, key, ca) and htpasswd; its log
    (the access log among it) in log_path."""

    def __init__(self, root: Path, tls: tuple[Path, Path, Path] | None = None, auth: Path | None = None):
        root.mkdir(parents=True, exist_ok=True)
        self.storage = root / "storage"
        self.storage.mkdir()
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.ctx = ssl.create_default_context(cafile=str(tls[2])) if tls else None
        cfg = root / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            + (f"auth:\n  htpasswd:\n    realm: plumb-test\n    path: {auth}\n" if auth else "")
            + f"http:\n  addr: {self.host}\n"
            + (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else ""))
        self.log_path = root / "registry.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([shutil.which("docker-registry"), "serve", str(cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{self.scheme}://{self.host}/v2/", timeout=2, context=self.ctx) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"docker-registry did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def get(self, path: str, accept: str | None = None, auth: str | None = None) -> bytes:
        req = urllib.request.Request(f"{self.scheme}://{self.host}{path}")
        if accept:
            req.add_header("Accept", accept)
        if auth:
            req.add_header("Authorization", auth)
        with urllib.request.urlopen(req, timeout=10, context=self.ctx) as r:
            return r.read()

    def requests(self, repo: str) -> list[tuple[str, str, int]]:
        """(method, path and query, status) of the access log's requests to repo."""
        self.log.flush()
        out = []
        for m in re.finditer(r'"([A-Z]+) (/v2/[^ ]+) HTTP/[0-9.]+" (\d+)', self.log_path.read_text(errors="replace")):
            if m.group(2).startswith(f"/v2/{repo}/"):
                out.append((m.group(1), m.group(2), int(m.group(3))))
        return out


def _sha(p: Path) -> str:
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUMB_REGISTRY_", "PLUMB_UPLOAD_", "PLUMB_PROGRESS"))}
    env["PLUMB_HOME"] = str(home)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(binary: Path, home: Path, *args, timeout: float = 300, **env):
    p = subprocess.run([str(binary), *map(str, args)], capture_output=True, timeout=timeout, env=_env(home, **env))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def run_pty(binary: Path, home: Path, *args, timeout: float = 300, **env) -> tuple[int, str]:
    """Runs binary with stdout and stderr on a pseudo-terminal; its exit status and output."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(str(binary), [str(binary), *map(str, args)], _env(home, **env))
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


# ---- HTTPS ----

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (scripts/setup.sh test installs it)", pytrace=False)
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def ossl(*a):
        p = subprocess.run([openssl, *a], cwd=d, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr

    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=plumb test CA")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return d


@pytest.fixture(scope="module")
def tls_registry(pki, tmp_path_factory):
    """docker-registry over TLS with htpasswd (alice / s3cret)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt: what htpasswd files hold
        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH))
    root = tmp_path_factory.mktemp("tls-registry")
    (root / "htpasswd").write_text(f"alice:{hashed}\n")
    reg = Reg(root / "reg", tls=(pki / "server.crt", pki / "server.key", pki / "ca.crt"), auth=root / "htpasswd")
    yield reg
    reg.stop()


CREDS = {"PLUMB_REGISTRY_USER": "alice", "PLUMB_REGISTRY_PASSWORD": "s3cret"}


def test_https_untrusted_certificate_is_one_line(tls_registry, plumb_bin, real_model, tmp_path):
    ref = f"{tls_registry.host}/plumb-test/tls:v1"
    home = tmp_path / "home"
    before = len(tls_registry.requests("plumb-test/tls"))
    for args in (("push", real_model, ref), ("pull", ref)):
        rc, out, err = run(plumb_bin, home, *args, timeout=60, **CREDS)
        assert rc == 1 and out == "", err
        assert len(err.splitlines()) == 1, err
        assert "not trusted" in err and f"{home}/certs.d/{tls_registry.host}/ca.crt" in err, err
        assert "PLUMB_REGISTRY_CA" in err, err
    # nothing reached the API: no fallback to plain HTTP after a certificate error
    assert len(tls_registry.requests("plumb-test/tls")) == before
    assert not (home / "index.json").exists()

    # a CA file that is not PEM: one line naming it
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    rc, out, err = run(plumb_bin, home, "pull", ref, timeout=60, PLUMB_REGISTRY_CA=bad, **CREDS)
    assert rc == 1 and len(err.splitlines()) == 1 and "PLUMB_REGISTRY_CA=" in err and "not a PEM" in err, err
    rc, out, err = run(plumb_bin, home, "pull", ref, timeout=60, PLUMB_REGISTRY_CA=tmp_path / "none.crt", **CREDS)
    assert rc == 1 and len(err.splitlines()) == 1 and "none.crt" in err, err


def test_https_round_trip(tls_registry, pki, plumb_bin, real_model, tmp_path):
    """certs.d trusts the CA for the push, PLUMB_REGISTRY_CA for the pull; htpasswd over TLS."""
    ref = f"{tls_registry.host}/plumb-test/tls:v1"
    push_home = tmp_path / "push-home"
    certs = push_home / "certs.d" / tls_registry.host
    certs.mkdir(parents=True)
    shutil.copy(pki / "ca.crt", certs / "ca.crt")
    rc, out, err = run(plumb_bin, push_home, "push", real_model, ref, **CREDS)
    assert rc == 0, err
    name, mdigest = out.split()
    assert name == ref

    # wrong credentials over TLS: one line
    rc, out, err = run(plumb_bin, push_home, "pull", ref, PLUMB_REGISTRY_USER="alice", PLUMB_REGISTRY_PASSWORD="no")
    assert rc == 1 and len(err.splitlines()) == 1 and "refused" in err, err

    home = tmp_path / "home"
    rc, out, err = run(plumb_bin, home, "pull", ref, PLUMB_REGISTRY_CA=pki / "ca.crt", **CREDS)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{ref} {mdigest}"
    assert Path(lines[1]).read_bytes() == real_model.read_bytes()
    # everything went over TLS: the registry (TLS only) logged the API calls
    reqs = tls_registry.requests("plumb-test/tls")
    assert ("GET", "/v2/plumb-test/tls/manifests/v1", 200) in reqs


# ---- plain loopback registry for the rest ----

@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/setup.sh test installs it)", pytrace=False)
    r = Reg(tmp_path_factory.mktemp("plain-registry"))
    yield r
    r.stop()


def test_chunked_upload(reg, plumb_bin, real_model, tmp_path):
    chunk = 32 << 20
    ref = f"{reg.host}/plumb-test/chunked:v1"
    lic = tmp_path / "LICENSE"
    lic.write_text("license text\n")
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", real_model, ref, "--license", lic,
                       PLUMB_UPLOAD_CHUNK="32m")
    assert rc == 0, err
    reqs = reg.requests("plumb-test/chunked")
    patches = [r for r in reqs if r[0] == "PATCH"]
    n_chunks = math.ceil(real_model.stat().st_size / chunk)
    assert len(patches) == n_chunks and all(s == 202 for _, _, s in patches), reqs
    # the GGUF's upload is closed by a PUT ?digest= on the last PATCH's session; the license and
    # the config go up whole (POST + PUT)
    puts = [p for m, p, s in reqs if m == "PUT" and "/blobs/uploads/" in p and s == 201]
    assert len(puts) == 3, reqs
    assert any(_sha(real_model) in p for p in puts)
    assert len([r for r in reqs if r[0] == "POST"]) == 3

    home = tmp_path / "home"
    rc, out, err = run(plumb_bin, home, "pull", ref)
    assert rc == 0, err
    assert Path(out.splitlines()[1]).read_bytes() == real_model.read_bytes()


def test_bad_chunk_size_is_one_line(reg, plumb_bin, real_model, tmp_path):
    for bad in ("12x", "0", "-5", "100", "5g", "m"):
        rc, out, err = run(plumb_bin, tmp_path / "home", "push", real_model, f"{reg.host}/plumb-test/badchunk:v1",
                           timeout=60, PLUMB_UPLOAD_CHUNK=bad)
        assert rc == 1 and out == "" and len(err.splitlines()) == 1 and "PLUMB_UPLOAD_CHUNK" in err, (bad, err)
    assert reg.requests("plumb-test/badchunk") == []


def test_cross_repository_mount(reg, plumb_bin, real_model, tmp_path):
    gguf = _sha(real_model)
    lic = tmp_path / "LICENSE"
    lic.write_text("license text\n")
    ref_a = f"{reg.host}/plumb-test/mount-a:v1"
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", real_model, ref_a, "--license", lic)
    assert rc == 0, err
    home = tmp_path / "home"
    rc, out, err = run(plumb_bin, home, "pull", ref_a)
    assert rc == 0, err

    # the store knows the GGUF and the license from mount-a: both are mounted into mount-b
    ref_b = f"{reg.host}/plumb-test/mount-b:v1"
    rc, out, err = run(plumb_bin, home, "push", real_model, ref_b, "--license", lic)
    assert rc == 0, err
    assert re.search(r"^gguf +[0-9a-f]{12} mounted from plumb-test/mount-a$", err, re.M), err
    assert re.search(r"^license +[0-9a-f]{12} mounted from plumb-test/mount-a$", err, re.M), err
    assert re.search(r"^config +[0-9a-f]{12} pushed \d+ B$", err, re.M), err
    reqs = reg.requests("plumb-test/mount-b")
    mounts = [(p, s) for m, p, s in reqs if m == "POST" and "mount=" in p]
    assert (f"/v2/plumb-test/mount-b/blobs/uploads/?mount={gguf}&from=plumb-test%2Fmount-a", 201) in mounts, reqs
    assert not [r for r in reqs if r[0] == "PATCH"], reqs
    uploads = [r for r in reqs if r[0] == "PUT" and "/blobs/uploads/" in r[1]]
    assert len(uploads) == 1 and gguf not in uploads[0][1], reqs  # only the config

    home2 = tmp_path / "home2"
    rc, out, err = run(plumb_bin, home2, "pull", ref_b)
    assert rc == 0, err
    assert Path(out.splitlines()[1]).read_bytes() == real_model.read_bytes()

    # pushing again: everything is there
    rc, out, err = run(plumb_bin, home, "push", real_model, ref_b, "--license", lic)
    assert rc == 0, err
    assert re.search(r"^gguf +[0-9a-f]{12} exists, skipped$", err, re.M), err


def test_declined_mount_continues_the_upload(reg, plumb_bin, real_model, tmp_path):
    """The store says the GGUF is in 'ghost', but the registry no longer has that repository:
    it declines the mount (202) and the upload goes on in the session the POST opened."""
    ref_g = f"{reg.host}/plumb-test/ghost:v1"
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", real_model, ref_g)
    assert rc == 0, err
    home = tmp_path / "home"
    rc, out, err = run(plumb_bin, home, "pull", ref_g)
    assert rc == 0, err
    shutil.rmtree(reg.storage / "docker/registry/v2/repositories/plumb-test/ghost")

    ref_b = f"{reg.host}/plumb-test/after-ghost:v1"
    rc, out, err = run(plumb_bin, home, "push", real_model, ref_b, PLUMB_UPLOAD_CHUNK="100m")
    assert rc == 0, err
    assert re.search(r"^gguf +[0-9a-f]{12} pushed .*100%", err, re.M), err
    reqs = reg.requests("plumb-test/after-ghost")
    posts = [r for r in reqs if r[0] == "POST"]
    assert posts[0][1].startswith(f"/v2/plumb-test/after-ghost/blobs/uploads/?mount={_sha(real_model)}&from=")
    assert posts[0][2] == 202, reqs
    assert len([r for r in reqs if r[0] == "PATCH"]) == 3, reqs  # 241 MiB in 100 MiB chunks, same session
    rc, out, err = run(plumb_bin, tmp_path / "home2", "pull", ref_b)
    assert rc == 0, err
    assert Path(out.splitlines()[1]).read_bytes() == real_model.read_bytes()


# ---- progress ----

class _Throttle:
    """A TCP proxy on loopback passing bytes both ways at about `rate` bytes a second, so that a
    transfer lasts long enough to be watched whatever the machine's speed."""

    def __init__(self, upstream_port: int, rate: float):
        self.rate = rate
        self.up = upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.up))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        t0, sent = time.monotonic(), 0
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                sent += len(data)
                ahead = sent / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        except OSError:
            pass
        finally:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def test_progress_on_a_terminal(reg, plumb_bin, real_model, tmp_path):
    slow = _Throttle(reg.port, 100e6)  # ~2.5 s for the model each way
    ref = f"127.0.0.1:{slow.port}/plumb-test/progress:v1"
    size = real_model.stat().st_size
    total = f"{size / 2**20:.1f} MiB"
    for args in (("push", real_model, ref), ("pull", ref)):
        t0 = time.monotonic()
        rc, shown = run_pty(plumb_bin, tmp_path / ("home-" + args[0]), *args, PLUMB_UPLOAD_CHUNK="16m")
        elapsed = time.monotonic() - t0
        assert rc == 0, shown
        verb = args[0]
        frames = [f for f in re.split(r"[\r\n]", shown) if f.startswith("gguf")]
        running = [f for f in frames if f"{verb}ing" in f]
        assert running, shown
        # bytes done / total, a percent, a rate and an ETA
        assert any(re.search(rf"{verb}ing \d+(\.\d)? [KM]i?B / {re.escape(total)} +\d+% [\d.]+ [KM]iB/s ETA \d+:\d\d",
                             f) for f in running), running
        last = frames[-1]
        assert re.search(rf"{verb}ed {re.escape(total)} / {re.escape(total)} 100% [\d.]+ [KMG]?i?B/s in \d+:\d\d", last), last
        assert re.search(r"\r(?!\n)", shown)  # redrawn in place (the pty itself turns \n into \r\n)
        assert len(running) <= 10 * elapsed + 2, (len(running), elapsed)  # at most ~10 redraws a second
    slow.close()


def test_progress_without_a_terminal(reg, plumb_bin, real_model, tmp_path):
    ref = f"{reg.host}/plumb-test/plainprogress:v1"
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", real_model, ref)
    assert rc == 0, err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert len(lines) == 2, err  # the GGUF's summary and the config's
    assert re.fullmatch(r"gguf +[0-9a-f]{12} pushed [\d.]+ MiB / [\d.]+ MiB 100% .*/s in \d+:\d\d", lines[0]), lines
    rc, out, err = run(plumb_bin, tmp_path / "home", "pull", ref)
    assert rc == 0, err
    assert "\r" not in err and re.fullmatch(r"gguf +[0-9a-f]{12} pulled .* 100% .*", err.strip()), err
    # silenced
    rc, out, err = run(plumb_bin, tmp_path / "home2", "pull", ref, PLUMB_PROGRESS="0")
    assert rc == 0 and err == "", err
    rc, shown = run_pty(plumb_bin, tmp_path / "home3", "pull", ref, PLUMB_PROGRESS="0")
    assert rc == 0 and not re.search(r"\r(?!\n)", shown) and "pulled" not in shown, shown


# ---- split GGUFs ----

@pytest.fixture
def split_model(tmp_path):
    from synth import write_model
    src = tmp_path / "whole.gguf"
    write_model(str(src), "llama", n_layer=3)
    d = tmp_path / "split"
    d.mkdir()
    return src, split_file(src, d, 3)


def test_split_gguf_push(reg, plumb_bin, split_model, tmp_path):
    import gguf
    src, shards = split_model
    ref = f"{reg.host}/plumb-test/split:v1"
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", shards[0], ref)
    assert rc == 0, err
    manifest = json.loads(reg.get("/v2/plumb-test/split/manifests/v1", MT_MANIFEST))
    layers = manifest["layers"]
    assert [l["mediaType"] for l in layers] == [MT_GGUF] * 3
    assert [l["digest"] for l in layers] == [_sha(p) for p in shards]
    assert [l["size"] for l in layers] == [p.stat().st_size for p in shards]
    for l, p in zip(layers, shards):
        assert reg.get(f"/v2/plumb-test/split/blobs/{l['digest']}") == p.read_bytes()
    assert manifest["config"]["mediaType"] == MT_CONFIG
    config = json.loads(reg.get(f"/v2/plumb-test/split/blobs/{manifest['config']['digest']}"))
    c = config["config"]
    assert c["size"] == str(sum(p.stat().st_size for p in shards))
    n_params = sum(int(np.prod(t.shape)) for t in gguf.GGUFReader(src).tensors)
    assert c["parameters"] == f"{n_params / 1e3:.2f} K"  # all shards' tensors, as gguf-parser-go prints them
    assert c["architecture"] == "llama" and c["gguf"]["llama.context_length"] == "256"
    assert config["rootfs"]["diff_ids"] == [l["digest"] for l in layers]

    # a shard other than the first, and a missing shard: one line each, nothing pushed
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", shards[1], f"{reg.host}/plumb-test/split2:v1")
    assert rc == 1 and len(err.splitlines()) == 1 and "push its first shard" in err and "-00001-of-00003.gguf" in err, err
    shards[2].unlink()
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", shards[0], f"{reg.host}/plumb-test/split2:v1")
    assert rc == 1 and len(err.splitlines()) == 1 and "shard 3 of 3 is missing" in err and str(shards[2]) in err, err
    renamed = shards[0].with_name("model.gguf")
    shards[0].rename(renamed)
    rc, out, err = run(plumb_bin, tmp_path / "push-home", "push", renamed, f"{reg.host}/plumb-test/split2:v1")
    assert rc == 1 and len(err.splitlines()) == 1 and "<prefix>-00001-of-00003.gguf" in err, err
    assert reg.requests("plumb-test/split2") == []
