"""Models as OCI artifacts against a real registry: Debian's docker-registry (the CNCF
distribution server) started on 127.0.0.1 with a free port and a temporary storage directory.
plumb pushes the real model in Docker Model Runner's format and pulls it into a fresh store
(byte-identical); `plumb list` shows it; `plumb rm` frees its blobs; bad references, a
missing tag and a registry serving wrong bytes each give one clear line, and the wrong bytes
never enter the store. The test never skips: a missing docker-registry is a failure (make
test's setup installs it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
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
    def __init__(self, root: Path):
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        cfg = root / "config.yml"
        cfg.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n")
        self.log = open(root / "registry.log", "wb")
        self.proc = subprocess.Popen([shutil.which("docker-registry"), "serve", str(cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as r:
                    if r.status == 200:
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
    total = sum(l["size"] for l in manifest["layers"])
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
