"""Models as OCI artifacts against a real registry: Debian's docker-registry (the CNCF
distribution server) started on 127.0.0.1 with a free port and a temporary storage directory.
plumb pushes the real model in Docker Model Runner's format and pulls it into a fresh store
(byte-identical); `plumb list` shows it; `plumb rm` frees its blobs; bad references, a
missing tag and a registry serving wrong bytes each give one clear line, and the wrong bytes
never enter the store. The test never skips: a missing docker-registry is a failure (make
test's setup installs it)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
MT_GGUF = "application/vnd.docker.ai.gguf.v3"
MT_LICENSE = "application/vnd.docker.ai.license"
MT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, root: Path, auth: Path | None = None):
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        cfg = root / "config.yml"
        cfg.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            + (f"auth:\n  htpasswd:\n    realm: plumb-test\n    path: {auth}\n" if auth else "")
            + f"http:\n  addr: {self.host}\n")
        self.log = open(root / "registry.log", "wb")
        self.proc = subprocess.Popen([shutil.which("docker-registry"), "serve", str(cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as e:
                if e.code == 401:  # up, and asking for credentials
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def get(self, path: str, accept: str | None = None) -> bytes:
        req = urllib.request.Request(f"http://{self.host}{path}")
        if accept:
            req.add_header("Accept", accept)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/setup.sh test installs it)", pytrace=False)
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


def plumb(binary: Path, home: Path, *args, timeout: float = 300):
    env = dict(os.environ, PLUMB_HOME=str(home))
    env.pop("PLUMB_REGISTRY_USER", None)
    env.pop("PLUMB_REGISTRY_PASSWORD", None)
    p = subprocess.run([str(binary), *map(str, args)], capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def _blobs(home: Path) -> set[str]:
    d = home / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_push_pull_list_rm(registry, plumb_bin, real_model, tmp_path):
    ref = f"{registry.host}/plumb-test/gemma3:270m"
    lic = tmp_path / "LICENSE"
    lic.write_text("Gemma terms of use (test copy)\n")
    tmpl = tmp_path / "template.jinja"
    tmpl.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    rc, out, err = plumb(plumb_bin, tmp_path / "push-home", "push", real_model, ref,
                         "--license", lic, "--chat-template", tmpl)
    assert rc == 0, err
    name, mdigest = out.split()
    assert name == ref and re.fullmatch(r"sha256:[0-9a-f]{64}", mdigest)

    # what the registry holds is DMR's layout
    manifest_bytes = registry.get("/v2/plumb-test/gemma3/manifests/270m", MT_MANIFEST)
    manifest = json.loads(manifest_bytes)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == MT_MANIFEST
    assert manifest["config"]["mediaType"] == MT_CONFIG
    assert [l["mediaType"] for l in manifest["layers"]] == [MT_GGUF, MT_LICENSE, MT_TEMPLATE]
    assert manifest["layers"][0]["size"] == real_model.stat().st_size
    config = json.loads(registry.get(f"/v2/plumb-test/gemma3/blobs/{manifest['config']['digest']}"))
    c = config["config"]
    assert c["format"] == "gguf" and c["architecture"] == "gemma3" and c["quantization"] == "Q4_K_M"
    assert c["parameters"].endswith(" M") and c["size"] == str(real_model.stat().st_size)
    assert c["gguf"]["gemma3.context_length"] == "32768"
    assert config["rootfs"]["diff_ids"] == [l["digest"] for l in manifest["layers"]]

    # pull into a fresh store: byte-identical
    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "pull", ref)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{ref} {mdigest}"
    gguf = Path(lines[1])
    assert gguf.parent == home / "blobs" / "sha256"
    assert gguf.read_bytes() == real_model.read_bytes()
    assert (home / "blobs/sha256" / mdigest[7:]).read_bytes() == manifest_bytes
    assert not list((home / "tmp").iterdir())

    # pulling again downloads nothing and keeps one reference
    rc, out2, err = plumb(plumb_bin, home, "pull", ref)
    assert rc == 0 and out2 == out, err

    rc, out, err = plumb(plumb_bin, home, "list")
    assert rc == 0, err
    row = [l for l in out.splitlines() if l.startswith(ref)]
    assert len(row) == 1, out
    assert mdigest[:19] in row[0] and "gemma3" in row[0] and "Q4_K_M" in row[0]
    total = sum(l["size"] for l in manifest["layers"] if l["mediaType"] == MT_GGUF)  # the model's size
    assert str(total) in row[0].split()

    # the same model by digest shares the blobs; rm of one reference keeps them
    rc, _, err = plumb(plumb_bin, home, "pull", f"{registry.host}/plumb-test/gemma3@{mdigest}")
    assert rc == 0, err
    n_blobs = len(_blobs(home))
    assert n_blobs == 5  # manifest, config, three layers
    rc, out, err = plumb(plumb_bin, home, "rm", ref)
    assert rc == 0 and "freed 0 blobs" in out, out + err
    assert len(_blobs(home)) == n_blobs
    rc, out, err = plumb(plumb_bin, home, "rm", f"{registry.host}/plumb-test/gemma3@{mdigest}")
    assert rc == 0 and "freed 5 blobs" in out, out + err
    assert _blobs(home) == set()
    rc, out, err = plumb(plumb_bin, home, "list")
    assert rc == 0 and len(out.splitlines()) == 1, out

    # rm of what is not there: one line
    rc, out, err = plumb(plumb_bin, home, "rm", ref)
    assert rc == 1 and len(err.splitlines()) == 1 and "not in the store" in err, err


@pytest.mark.parametrize("ref,what", [
    ("127.0.0.1:5000/ns/../etc/x:tag", "'..' is not allowed"),
    ("../../etc/passwd", "'..' is not allowed"),
    ("ns/model/..", "'..' is not allowed"),
    ("ns/model:..", "'..' is not allowed"),
    ("ns/.hidden", "bad path component"),
    ("/etc/passwd", "bad path component"),
    ("ns//model", "bad path component"),
    ("NS/Model", "bad path component"),
    ("ns/model@sha256:abc", "bad digest"),
    ("ns/model@sha256:" + "g" * 64, "bad digest"),
    ("ns/model@md5:" + "0" * 32, "bad digest"),
    ("ns/model:bad/tag", "bad tag"),
    ("ns/model:" + "t" * 200, "bad tag"),
    ("ns/" + "a" * 600, "longer than"),
    ("ns/mo del", "control, space"),
    ("", "empty model reference"),
])
def test_bad_references_are_refused(plumb_bin, tmp_path, ref, what):
    for cmd in ("pull", "rm"):
        rc, out, err = plumb(plumb_bin, tmp_path / "home", cmd, ref, timeout=30)
        assert rc == 1, err
        assert len(err.splitlines()) == 1 and what in err and out == "", err
    assert not (tmp_path / "home" / "index.json").exists()
    assert _blobs(tmp_path / "home") == set()


def test_missing_tag_is_one_line(registry, plumb_bin, tmp_path):
    rc, out, err = plumb(plumb_bin, tmp_path / "home", "pull", f"{registry.host}/plumb-test/none:nope", timeout=60)
    assert rc == 1 and out == "", err
    assert len(err.splitlines()) == 1 and "HTTP 404" in err and "unknown" in err, err
    assert _blobs(tmp_path / "home") == set()


def test_wrong_bytes_from_the_registry_are_not_stored(registry, plumb_bin, real_model, tmp_path):
    ref = f"{registry.host}/plumb-test/tampered:v1"
    rc, out, err = plumb(plumb_bin, tmp_path / "push-home", "push", real_model, ref)
    assert rc == 0, err
    manifest = json.loads(registry.get("/v2/plumb-test/tampered/manifests/v1", MT_MANIFEST))
    gguf_digest = manifest["layers"][0]["digest"]
    blob = registry.blob_file(gguf_digest)
    original = blob.read_bytes()
    try:
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF  # same size, one byte wrong
        blob.write_bytes(bytes(data))
        home = tmp_path / "home"
        rc, out, err = plumb(plumb_bin, home, "pull", ref)
        assert rc == 1 and out == "", err
        assert len(err.splitlines()) == 1 and "digest mismatch" in err and gguf_digest in err, err
        assert gguf_digest[7:] not in _blobs(home)
        assert not (home / "index.json").exists()
        assert not list((home / "tmp").iterdir())
    finally:
        blob.write_bytes(original)


def test_help_options_are_in_the_man_page(plumb_bin):
    page = (REPO / "packaging" / "plumb.1").read_text()
    for cmd in ("pull", "push", "list", "rm"):
        p = subprocess.run([str(plumb_bin), cmd, "--help"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert f".SS plumb {cmd}" in page
        for opt in set(re.findall(r"--[a-z][a-z-]+", p.stdout)) - {"--help"}:
            assert opt.replace("-", r"\-") in page, f"{cmd} {opt} is not in packaging/plumb.1"


def _push(registry, plumb_bin, model, tmp_path, name):
    ref = f"{registry.host}/plumb-test/{name}:v1"
    rc, out, err = plumb(plumb_bin, tmp_path / "push-home", "push", model, ref)
    assert rc == 0, err
    manifest = json.loads(registry.get(f"/v2/plumb-test/{name}/manifests/v1", MT_MANIFEST))
    return ref, manifest["layers"][0]["digest"]


def test_interrupted_download_resumes(registry, plumb_bin, real_model, tmp_path):
    """A partial download left in the store's tmp/ (what an interrupted pull leaves) is
    continued with an HTTP Range request; a partial file with wrong bytes is caught by the
    digest, thrown away, and the next pull starts over."""
    ref, digest = _push(registry, plumb_bin, real_model, tmp_path, "resume")
    data = real_model.read_bytes()
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    partial = home / "tmp" / f"{digest[7:]}.partial"
    partial.write_bytes(data[: len(data) // 3])
    rc, out, err = plumb(plumb_bin, home, "pull", ref)
    assert rc == 0, err
    assert Path(out.splitlines()[1]).read_bytes() == data
    assert not partial.exists()

    home2 = tmp_path / "home2"
    (home2 / "tmp").mkdir(parents=True)
    partial = home2 / "tmp" / f"{digest[7:]}.partial"
    partial.write_bytes(b"\0" * 4096)  # not the blob's first bytes
    rc, out, err = plumb(plumb_bin, home2, "pull", ref)
    assert rc == 1 and len(err.splitlines()) == 1 and "digest mismatch" in err, err
    assert not partial.exists() and digest[7:] not in _blobs(home2)
    rc, out, err = plumb(plumb_bin, home2, "pull", ref)
    assert rc == 0, err
    assert Path(out.splitlines()[1]).read_bytes() == data


def test_concurrent_pulls_share_the_store(registry, plumb_bin, real_model, tmp_path):
    ref, digest = _push(registry, plumb_bin, real_model, tmp_path, "concurrent")
    home = tmp_path / "home"
    env = dict(os.environ, PLUMB_HOME=str(home))
    procs = [subprocess.Popen([str(plumb_bin), "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e.decode()
    assert len({o for o, _ in outs}) == 1
    assert (home / "blobs/sha256" / digest[7:]).read_bytes() == real_model.read_bytes()
    assert not list((home / "tmp").iterdir())
    index = json.loads((home / "index.json").read_text())
    assert list(index["references"]) == [ref]


def _upload(registry, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/blobs/uploads/", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{registry.host}{loc}"
    sep = "&" if "?" in loc else "?"
    req = urllib.request.Request(f"{loc}{sep}digest={digest}", data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    return digest


def test_unknown_media_type_is_one_line(registry, plumb_bin, tmp_path):
    """An artifact with a layer type plumb does not know (written here by speaking the
    distribution API directly) is refused before anything is downloaded."""
    repo = "plumb-test/odd"
    config = json.dumps({"config": {"format": "gguf"}}).encode()
    layer = b"not a model"
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": _upload(registry, repo, config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.example.unknown", "digest": _upload(registry, repo, layer),
                            "size": len(layer)}]}
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/v1", data=json.dumps(manifest).encode(),
                                 method="PUT", headers={"Content-Type": MT_MANIFEST})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "pull", f"{registry.host}/{repo}:v1", timeout=60)
    assert rc == 1 and out == "", err
    assert len(err.splitlines()) == 1 and "unknown media type application/vnd.example.unknown" in err, err
    assert _blobs(home) == set() and not (home / "index.json").exists()


def test_basic_auth(plumb_bin, real_model, tmp_path):
    """An htpasswd-protected registry: no credentials and wrong ones each give one line;
    PLUMB_REGISTRY_USER/PASSWORD push and pull."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt: what htpasswd files hold
        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH))
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    reg = Registry(tmp_path / "reg", auth=tmp_path / "htpasswd")
    try:
        ref = f"{reg.host}/plumb-test/auth:v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUMB_REGISTRY_")}
        rc, out, err = plumb(plumb_bin, tmp_path / "h0", "push", real_model, ref)
        assert rc == 1 and len(err.splitlines()) == 1 and "PLUMB_REGISTRY_USER" in err, err

        def with_creds(password, *args):
            e = dict(env, PLUMB_HOME=str(tmp_path / "h1"), PLUMB_REGISTRY_USER="alice", PLUMB_REGISTRY_PASSWORD=password)
            p = subprocess.run([str(plumb_bin), *map(str, args)], capture_output=True, text=True, timeout=300, env=e)
            return p.returncode, p.stdout, p.stderr

        rc, out, err = with_creds("wrong", "push", real_model, ref)
        assert rc == 1 and len(err.splitlines()) == 1 and "refused" in err, err
        rc, out, err = with_creds("s3cret", "push", real_model, ref)
        assert rc == 0, err
        rc, out, err = with_creds("s3cret", "pull", ref)
        assert rc == 0, err
        assert Path(out.splitlines()[1]).read_bytes() == real_model.read_bytes()

        # the same from Docker's config.json (auths, base64 user:password), as `docker login` writes it
        import base64
        dcfg = tmp_path / "docker"
        dcfg.mkdir()
        token = base64.b64encode(b"alice:s3cret").decode()
        (dcfg / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
        e = dict(env, PLUMB_HOME=str(tmp_path / "h2"), DOCKER_CONFIG=str(dcfg))
        p = subprocess.run([str(plumb_bin), "pull", ref], capture_output=True, text=True, timeout=300, env=e)
        assert p.returncode == 0, p.stderr
        (dcfg / "config.json").write_text(json.dumps(
            {"auths": {f"http://{reg.host}": {"auth": base64.b64encode(b"alice:nope").decode()}}}))
        e["PLUMB_HOME"] = str(tmp_path / "h3")
        p = subprocess.run([str(plumb_bin), "pull", ref], capture_output=True, text=True, timeout=300, env=e)
        assert p.returncode == 1 and len(p.stderr.splitlines()) == 1 and "refused" in p.stderr, p.stderr
    finally:
        reg.stop()


class _FakeRegistry:
    """A registry written here in Python, for what docker-registry cannot show: the Bearer
    token flow (401 + WWW-Authenticate: Bearer realm,service,scope -> GET token), blobs
    redirected to another path, and a download cut in the middle, then resumed with Range."""

    TOKEN = "tok-0123456789"

    def __init__(self, model: bytes):
        import http.server
        import threading

        self.model = model
        self.gguf_digest = "sha256:" + hashlib.sha256(model).hexdigest()
        cfg = {"config": {"format": "gguf", "architecture": "gemma3", "quantization": "Q4_K_M"},
               "descriptor": {}, "rootfs": {"type": "rootfs", "diff_ids": [self.gguf_digest]}}
        self.config = json.dumps(cfg).encode()
        self.config_digest = "sha256:" + hashlib.sha256(self.config).hexdigest()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": self.config_digest, "size": len(self.config)},
            "layers": [{"mediaType": MT_GGUF, "digest": self.gguf_digest, "size": len(model)}]}).encode()
        self.token_queries: list[str] = []
        self.ranges: list[str | None] = []
        self.cut_next = False
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path, _, query = self.path.partition("?")
                if path == "/token":
                    fake.token_queries.append(query)
                    return self._send(200, json.dumps({"token": fake.TOKEN}).encode(),
                                      [("Content-Type", "application/json")])
                if path.startswith("/storage/"):
                    return self._storage()
                if self.headers.get("Authorization") != f"Bearer {fake.TOKEN}":
                    challenge = (f'Bearer realm="http://{fake.host}/token",service="fake-registry",'
                                 f'scope="repository:ns/model:pull"')
                    return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                                      [("WWW-Authenticate", challenge), ("Content-Type", "application/json")])
                if path == "/v2/ns/model/manifests/v1":
                    return self._send(200, fake.manifest, [("Content-Type", MT_MANIFEST)])
                if path == f"/v2/ns/model/blobs/{fake.config_digest}":
                    return self._send(200, fake.config)
                if path == f"/v2/ns/model/blobs/{fake.gguf_digest}":
                    return self._send(307, b"", [("Location", f"/storage/{fake.gguf_digest}")])
                return self._send(404, b'{"errors":[{"code":"NOT_FOUND","message":"not found"}]}')

            def _storage(self):
                rng = self.headers.get("Range")
                fake.ranges.append(rng)
                data = fake.model
                if fake.cut_next:  # promise everything, send a third, hang up
                    fake.cut_next = False
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    return self._send(206, data[start:], [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")])
                return self._send(200, data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_bearer_token_redirect_and_resume(plumb_bin, real_model, tmp_path):
    data = real_model.read_bytes()
    fake = _FakeRegistry(data)
    try:
        ref = f"{fake.host}/ns/model:v1"
        home = tmp_path / "home"
        fake.cut_next = True
        rc, out, err = plumb(plumb_bin, home, "pull", ref, timeout=120)
        assert rc == 1 and out == "" and len(err.splitlines()) == 1, err
        partial = home / "tmp" / f"{fake.gguf_digest[7:]}.partial"
        assert partial.is_file() and 0 < partial.stat().st_size < len(data)
        kept = partial.stat().st_size
        assert fake.gguf_digest[7:] not in _blobs(home)

        rc, out, err = plumb(plumb_bin, home, "pull", ref, timeout=120)
        assert rc == 0, err
        assert Path(out.splitlines()[1]).read_bytes() == data
        assert fake.ranges == [None, f"bytes={kept}-"]
        assert fake.token_queries and all(
            "service=fake-registry" in q and "scope=repository%3Ans%2Fmodel%3Apull" in q for q in fake.token_queries)
    finally:
        fake.stop()
