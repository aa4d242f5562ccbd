"""Stored models in use: every command that takes `-m` also takes a model reference, pulled
into the store on first use (`plumb run REF`, `inspect`, `tokenize`, `template`); an
artifact's chat template and context size stand in for options not given; `plumb list` says
when each model was pulled; artifacts written in Docker Model Runner's v0.2 layout and in
the CNCF ModelPack format (written here through the distribution API, as their tools lay
them out) are pulled and run; split GGUFs travel as several layers and load from the store;
a model the disk cannot hold is refused before anything is downloaded. Against Debian's
docker-registry on loopback, as test_oci.py."""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import urllib.request
from pathlib import Path

import pytest

from ggufsplit import split_file
from test_serve_models import CatalogServer
from test_oci import MT_CONFIG, MT_GGUF, MT_MANIFEST, _blobs, _upload, plumb, registry  # noqa: F401

PROMPT = "The ocean is"
MT_MP_CONFIG = "application/vnd.cncf.model.config.v1+json"
MT_MP_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
MT_MP_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
MT_V02_CONFIG = "application/vnd.docker.ai.model.config.v0.2+json"


def _put_manifest(registry, repo: str, tag: str, manifest: dict) -> str:
    body = json.dumps(manifest).encode()
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{tag}", data=body, method="PUT",
                                 headers={"Content-Type": MT_MANIFEST})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    return f"{registry.host}/{repo}:{tag}"


def _desc(mt: str, digest: str, size: int, path: str | None = None) -> dict:
    d = {"mediaType": mt, "digest": digest, "size": size}
    if path:
        d["annotations"] = {"org.cncf.model.filepath": path}
    return d


def _run(plumb_bin, home, model, *extra):
    return plumb(plumb_bin, home, "run", "-m", model, "-p", PROMPT, "-n", "12", "--temp", "0", "--no-stats", *extra,
                 timeout=300)


@pytest.fixture(scope="module")
def pushed(registry, plumb_bin, real_model, tmp_path_factory):
    """The real model pushed once, with a chat template layer."""
    d = tmp_path_factory.mktemp("pushed")
    tmpl = d / "t.jinja"
    tmpl.write_text("{% for m in messages %}<<{{ m.role }}|{{ m.content }}>>{% endfor %}")
    ref = f"{registry.host}/plumb-test/gemma-run:v1"
    rc, out, err = plumb(plumb_bin, d / "home", "push", real_model, ref, "--chat-template", tmpl)
    assert rc == 0, err
    return ref, out.split()[1]


def test_run_from_a_reference_pulls_on_first_use(plumb_bin, real_model, pushed, tmp_path):
    ref, mdigest = pushed
    home = tmp_path / "home"
    rc, want, err = _run(plumb_bin, home, real_model)
    assert rc == 0, err
    rc, got, err = _run(plumb_bin, home, ref)
    assert rc == 0, err
    assert f"plumb run: pulling {ref}" in err
    assert got == want and want  # the same greedy text as the file gives
    # the second use finds it in the store: no pull
    rc, again, err = _run(plumb_bin, home, ref)
    assert rc == 0 and again == want and "pulling" not in err, err
    # by digest too
    repo = ref.rsplit(":", 1)[0]
    rc, by_digest, err = _run(plumb_bin, home, f"{repo}@{mdigest}")
    assert rc == 0 and by_digest == want, err

    rc, out, err = plumb(plumb_bin, home, "list")
    assert rc == 0, err
    row = next(l for l in out.splitlines() if l.startswith(ref + " "))
    assert re.search(r"\s20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ\s*$", row), row  # pulled at
    assert "PULLED" in out.splitlines()[0]


def test_other_commands_take_references(plumb_bin, real_model, pushed, tmp_path):
    ref, mdigest = pushed
    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "inspect", ref)
    assert rc == 0, err
    assert f"reference:    {ref}" in out and f"manifest:     {mdigest}" in out and "gemma3" in out
    rc, out, err = plumb(plumb_bin, home, "inspect", ref, "--json")
    j = json.loads(out)
    assert rc == 0 and j["reference"] == ref and j["manifest"] == mdigest and j["architecture"] == "gemma3"
    rc, by_ref, err = plumb(plumb_bin, home, "tokenize", "-m", ref, "--ids", "Hello world")
    assert rc == 0, err
    rc, by_file, err = plumb(plumb_bin, home, "tokenize", "-m", real_model, "--ids", "Hello world")
    assert rc == 0 and by_ref == by_file, err
    # the artifact's chat template renders when no template is given
    msgs = tmp_path / "m.json"
    msgs.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    rc, out, err = plumb(plumb_bin, home, "template", "-m", ref, "--messages", msgs)
    assert rc == 0, err
    assert "<<user|hi>>" in out
    rc, out, err = plumb(plumb_bin, home, "template", "-m", real_model, "--messages", msgs)
    assert rc == 0 and "<<user|hi>>" not in out  # the file's own template


def test_bad_model_arguments_are_one_line(plumb_bin, tmp_path):
    home = tmp_path / "home"
    # a missing path is a file error, never a registry lookup
    rc, out, err = plumb(plumb_bin, home, "run", "-m", "missing-model.gguf", "-p", "x")
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "missing-model.gguf" in err, err
    assert not (home / "index.json").exists()
    rc, out, err = plumb(plumb_bin, home, "run", "-m", "Bad..Name", "-p", "x")
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
    assert "neither a file nor a model reference" in err
    # a loopback registry with nothing there: one line naming the reference
    rc, out, err = plumb(plumb_bin, home, "tokenize", "-m", "127.0.0.1:9/none/such:v1", "x")
    assert rc == 1 and "127.0.0.1:9/none/such:v1" in err, err
    assert [l for l in err.splitlines() if not l.startswith("plumb tokenize: pulling")] and \
        len(err.strip().splitlines()) == 2, err


def test_context_size_of_the_artifact(registry, plumb_bin, real_model, tmp_path):
    ref = f"{registry.host}/plumb-test/gemma-ctx:16"
    rc, out, err = plumb(plumb_bin, tmp_path / "push", "push", real_model, ref, "--context-size", "16")
    assert rc == 0, err
    home = tmp_path / "home"
    long_prompt = " ".join(["word"] * 40)
    rc, out, err = plumb(plumb_bin, home, "run", "-m", ref, "-p", long_prompt, "-n", "2", "--no-stats")
    assert rc != 0 and "16" in err, err  # the artifact's 16 positions cannot hold the prompt
    rc, out, err = plumb(plumb_bin, home, "run", "-m", ref, "-p", long_prompt, "-n", "2", "-c", "128", "--no-stats")
    assert rc == 0, err  # an explicit -c wins


def test_modelpack_artifact(registry, plumb_bin, real_model, tmp_path):
    """A CNCF ModelPack artifact, laid out as modctl builds one with raw layers: a GGUF weight
    layer named by org.cncf.model.filepath, a LICENSE doc, a tokenizer config plumb does not
    need (not downloaded)."""
    repo = "plumb-test/modelpack"
    data, lic, tok = real_model.read_bytes(), b"Apache-2.0\n", b'{"unused": true}'
    weight, lic_d, tok_d = (_upload(registry, repo, b) for b in (data, lic, tok))
    config = json.dumps({"descriptor": {"createdAt": "2026-01-01T00:00:00Z", "name": "gemma-3-270m",
                                        "family": "gemma3", "licenses": ["Gemma"]},
                         "config": {"architecture": "transformer", "format": "gguf", "paramSize": "270m",
                                    "quantization": "Q4_K_M"},
                         "modelfs": {"type": "layers", "diff_ids": [weight, lic_d, tok_d]}}).encode()
    ref = _put_manifest(registry, repo, "v1", {
        "schemaVersion": 2, "mediaType": MT_MANIFEST, "artifactType": MT_MP_MANIFEST,
        "config": _desc(MT_MP_CONFIG, _upload(registry, repo, config), len(config)),
        "layers": [_desc(MT_MP_WEIGHT, weight, len(data), "gemma-3-270m-q4_k_m.gguf"),
                   _desc("application/vnd.cncf.model.doc.v1.raw", lic_d, len(lic), "LICENSE"),
                   _desc("application/vnd.cncf.model.weight.config.v1.raw", tok_d, len(tok), "tokenizer.json")]})
    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "pull", ref)
    assert rc == 0, err
    gguf_path = Path(out.splitlines()[1])
    assert gguf_path.read_bytes() == data
    assert tok_d.split(":")[1] not in _blobs(home)  # not needed, not downloaded
    assert lic_d.split(":")[1] in _blobs(home)
    rc, out, err = plumb(plumb_bin, home, "list")
    row = next(l for l in out.splitlines() if l.startswith(ref + " "))
    assert "Q4_K_M" in row and str(len(data)) in row, row
    rc, want, err = _run(plumb_bin, home, real_model)
    rc, got, err = _run(plumb_bin, home, ref)
    assert rc == 0 and got == want, err

    # GGUF weights inside a tar archive: refused with one line before downloading
    ref2 = _put_manifest(registry, repo, "tarred", {
        "schemaVersion": 2, "mediaType": MT_MANIFEST, "artifactType": MT_MP_MANIFEST,
        "config": _desc(MT_MP_CONFIG, _upload(registry, repo, config), len(config)),
        "layers": [_desc("application/vnd.cncf.model.weight.v1.tar+gzip", weight, len(data), "model.gguf")]})
    home2 = tmp_path / "home2"
    rc, out, err = plumb(plumb_bin, home2, "pull", ref2)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "archived" in err, err
    assert _blobs(home2) == set()
    # a ModelPack model in another format
    cfg3 = json.dumps({"descriptor": {}, "config": {"format": "safetensors"}, "modelfs": {"type": "layers",
                                                                                          "diff_ids": []}}).encode()
    ref3 = _put_manifest(registry, repo, "safetensors", {
        "schemaVersion": 2, "mediaType": MT_MANIFEST, "artifactType": MT_MP_MANIFEST,
        "config": _desc(MT_MP_CONFIG, _upload(registry, repo, cfg3), len(cfg3)),
        "layers": [_desc(MT_MP_WEIGHT, weight, len(data), "model.gguf")]})
    rc, out, err = plumb(plumb_bin, home2, "pull", ref3)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "safetensors" in err, err


def test_dmr_v02_artifact(registry, plumb_bin, real_model, tmp_path):
    """DMR's layer-per-file layout (config v0.2): file names as annotations, an mmproj
    layer plumb does not use (not downloaded), a chat template layer (used)."""
    repo = "plumb-test/dmr-v02"
    data, mmproj = real_model.read_bytes(), b"GGUF projector stand-in"
    tmpl = b"{% for m in messages %}[v02 {{ m.content }}]{% endfor %}"
    weight, mm_d, t_d = (_upload(registry, repo, b) for b in (data, mmproj, tmpl))
    config = json.dumps({"config": {"format": "gguf", "architecture": "gemma3", "quantization": "Q4_K_M",
                                    "parameters": "268.10 M", "size": str(len(data))},
                         "descriptor": {"created": "2026-01-01T00:00:00Z"},
                         "rootfs": {"type": "layers", "diff_ids": [weight, mm_d, t_d]}}).encode()
    ref = _put_manifest(registry, repo, "v1", {
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": _desc(MT_V02_CONFIG, _upload(registry, repo, config), len(config)),
        "layers": [_desc(MT_GGUF, weight, len(data), "model.gguf"),
                   _desc("application/vnd.docker.ai.mmproj", mm_d, len(mmproj), "mmproj.gguf"),
                   _desc("application/vnd.docker.ai.chat.template.jinja", t_d, len(tmpl), "template.jinja")]})
    home = tmp_path / "home"
    msgs = tmp_path / "m.json"
    msgs.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    rc, out, err = plumb(plumb_bin, home, "template", "-m", ref, "--messages", msgs)
    assert rc == 0 and "[v02 hi]" in out, err
    assert mm_d.split(":")[1] not in _blobs(home)


def test_split_model_as_layers(registry, plumb_bin, real_model, tmp_path):
    """A split GGUF travels as one gguf layer per shard, in order; pulled, its shards are
    linked under llama.cpp's names so the loader finds them, and it generates what the
    single file does; rm removes the links with the blobs."""
    shards = split_file(real_model, tmp_path, 3)
    repo = "plumb-test/split"
    layers, diff_ids = [], []
    for p in shards:
        b = p.read_bytes()
        d = _upload(registry, repo, b)
        layers.append(_desc(MT_GGUF, d, len(b)))
        diff_ids.append(d)
    config = json.dumps({"config": {"format": "gguf", "architecture": "gemma3", "quantization": "Q4_K_M"},
                         "descriptor": {"created": "2026-01-01T00:00:00Z"},
                         "rootfs": {"type": "rootfs", "diff_ids": diff_ids}}).encode()
    ref = _put_manifest(registry, repo, "v1", {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                                               "config": _desc(MT_CONFIG, _upload(registry, repo, config),
                                                               len(config)),
                                               "layers": layers})
    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "pull", ref)
    assert rc == 0, err
    first = Path(out.splitlines()[1])
    assert first.name == "model-00001-of-00003.gguf" and first.parent.parent.name == "models"
    rc, want, err = _run(plumb_bin, home, real_model)
    assert rc == 0, err
    rc, got, err = _run(plumb_bin, home, ref)
    assert rc == 0 and got == want, err
    rc, out, err = plumb(plumb_bin, home, "rm", ref)
    assert rc == 0, err
    assert _blobs(home) == set() and not first.parent.exists()


def test_model_too_large_for_the_disk_is_refused_first(plumb_bin, tmp_path):
    """A manifest announcing a 900 GB GGUF is refused before any download (a registry written
    here: a real one will not accept a manifest whose blobs it does not hold)."""
    config = json.dumps({"config": {"format": "gguf"}}).encode()
    config_d = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                           "config": _desc(MT_CONFIG, config_d, len(config)),
                           "layers": [_desc(MT_GGUF, "sha256:" + "0" * 64, 900 * 10**9)]}).encode()
    blob_requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path.endswith("/manifests/v1"):
                body, ctype = manifest, MT_MANIFEST
            elif self.path == "/v2/":
                body, ctype = b"{}", "application/json"
            else:
                blob_requests.append(self.path)
                body, ctype = (config, "application/octet-stream") if config_d in self.path else (b"", "x")
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        home = tmp_path / "home"
        rc, out, err = plumb(plumb_bin, home, "pull", f"127.0.0.1:{srv.server_address[1]}/plumb-test/huge:v1",
                             timeout=60)
    finally:
        srv.shutdown()
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "needs" in err and "free" in err
    assert blob_requests == [] and _blobs(home) == set() and not (home / "index.json").exists()


def test_serve_from_the_store(registry, plumb_bin, real_model, qwen_model, pushed, tmp_path):
    """`plumb serve -m REF` pulls and serves the model under its reference; `--store` serves
    every stored model, chosen by a request's model field in any reference form."""
    ref, mdigest = pushed
    home = tmp_path / "home"
    qref = f"{registry.host}/plumb-test/qwen:v1"
    rc, out, err = plumb(plumb_bin, tmp_path / "push", "push", qwen_model, qref)
    assert rc == 0, err
    env = {"PLUMB_HOME": str(home)}
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    with CatalogServer(plumb_bin, None, "--mmap", model=ref, env=env) as s:  # pulls on first use
        assert f"plumb serve: pulling {ref}" in s.stderr
        assert [m["id"] for m in json.loads(s.get("/v1/models")[1])["data"]] == [ref]
        st, _, j = s.post("/v1/completions", body)
        assert st == 200 and j["model"] == ref, j
        want_gemma = j["choices"][0]["text"]
    with CatalogServer(plumb_bin, None, "--mmap", model=real_model) as s:  # the same file, named by path
        st, _, j = s.post("/v1/completions", body)
        assert st == 200 and j["choices"][0]["text"] == want_gemma, j
    rc, out, err = plumb(plumb_bin, home, "pull", qref)
    assert rc == 0, err
    with CatalogServer(plumb_bin, None, "--store", "--mmap", env=env) as s:
        assert set(s.models()) == {ref, qref} and not any(s.models().values())
        short = ref.replace(":v1", "")  # no tag: ":latest", which the store does not hold
        st, _, j = s.post("/v1/completions", dict(body, model=short))
        assert st == 404, j
        by_digest = ref.rsplit(":", 1)[0] + "@" + mdigest
        for name, want in ((ref, want_gemma), (qref, None), (by_digest, want_gemma)):
            st, _, j = s.post("/v1/completions", dict(body, model=name))
            assert st == 200 and j["model"] == (ref if name == by_digest else name), j
            if want is not None:
                assert j["choices"][0]["text"] == want
        assert s.models()[ref] is True
        # a model pulled while serving is listed by the next GET /v1/models
        late = f"{registry.host}/plumb-test/late:v1"
        rc, out, err = plumb(plumb_bin, tmp_path / "push", "push", real_model, late)
        assert rc == 0, err
        rc, out, err = plumb(plumb_bin, home, "pull", late)
        assert rc == 0 and late in s.models(), err
