"""Interop of plumb's OCI artifacts with an independent implementation of Docker Model Runner's
format and with skopeo, against Debian's docker-registry on loopback (test_oci.Registry).

(a) An artifact written by tests/e2e/dmr_client.py (written from DMR's definitions, sharing no
    code with plumb: layer annotations, Go's JSON escaping, the full `gguf` metadata map, RFC
    3339 times with nanoseconds and an offset) is pulled by `plumb pull`, by tag and by digest:
    the printed digest is the manifest's, the GGUF, license and chat template are
    byte-identical, and `plumb list` shows the architecture and quantization of the config
    (also a hub-style "IQ2_XXS/Q4_K_M" that plumb could not have computed from the GGUF).
(b) An artifact pushed by `plumb push` is pulled and verified by dmr_client: media types, the
    config's fields and their JSON types (DMR's Go struct: strings, a string map, an int32
    context_size, an RFC 3339 `created`), diff_ids = the layers' digests, byte-identical
    layers; the values agree with what DMR derives from the same GGUF.
(c) `skopeo inspect --raw` returns plumb's manifest byte for byte (its SHA-256 is the digest
    plumb printed) and `--config --raw` its config; `skopeo copy` to another repository gives
    an artifact plumb pulls, byte-identical.

The models are small synthetic GGUFs written here with gguf-py (file type Q8_0, a chat
template with '<', '>' and '&', arrays short and long). Nothing is skipped: a missing
docker-registry or skopeo is a failure (scripts/setup.sh test installs both)."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import dmr_client as dmr
from test_oci import Registry, plumb

CTX = 2048


def write_gguf(path: Path, seed: int = 0, name: str = "interop-test") -> Path:
    """A small llama GGUF (one block, Q8_0 matrices) with the metadata DMR copies into its config."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_file_type(7)  # MOSTLY_Q8_0
    w.add_context_length(CTX)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_bool("test.flag", True)
    w.add_array("test.small_array", [1, 2, 3])
    w.add_chat_template("{% for m in messages %}<|{{ m.role }}|>{{ m.content }} & done{% endfor %}")
    toks = ["<pad>", "<eos>", "<bos>", "<unk>"] + ["<0x%02X>" % b for b in range(256)]
    toks += ["\u2581w%d" % i for i in range(300 - len(toks))]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * len(toks))
    w.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * (len(toks) - 260))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)

    def add(tname, shape, q8):
        a = rng.standard_normal(shape[::-1]).astype(np.float32)
        if q8:
            w.add_tensor(tname, gguf.quants.quantize(a, QT.Q8_0), raw_dtype=QT.Q8_0)
        else:
            w.add_tensor(tname, a)

    add("token_embd.weight", (64, 300), True)
    add("output_norm.weight", (64,), False)
    for t, shape, q8 in [("attn_norm", (64,), False), ("attn_q", (64, 64), True), ("attn_k", (64, 32), True),
                         ("attn_v", (64, 32), True), ("attn_output", (64, 64), True), ("ffn_norm", (64,), False),
                         ("ffn_gate", (64, 96), True), ("ffn_up", (64, 96), True), ("ffn_down", (96, 64), True)]:
        add(f"blk.0.{t}.weight", shape, q8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/setup.sh test installs it)", pytrace=False)
    reg = Registry(tmp_path_factory.mktemp("interop-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("interop-files")
    lic = d / "LICENSE"
    lic.write_text("Interop test license \u00a9 <none> & nothing else\n")
    tmpl = d / "template.jinja"
    tmpl.write_text("{% for m in messages %}<start>{{ m.role }}\n{{ m.content }}<end>\n{% endfor %}")
    return {"gguf": write_gguf(d / "model.gguf"), "gguf2": write_gguf(d / "model2.gguf", seed=1, name="second"),
            "license": lic, "template": tmpl}


def _skopeo() -> str:
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.fail("skopeo is not installed (scripts/setup.sh test installs it)", pytrace=False)
    return exe


def skopeo(*args, timeout: float = 60) -> bytes:
    p = subprocess.run([_skopeo(), *map(str, args)], capture_output=True, timeout=timeout)
    assert p.returncode == 0, f"skopeo {' '.join(map(str, args))}: {p.stderr.decode(errors='replace')}"
    return p.stdout


def _blob(home: Path, digest: str) -> Path:
    return home / "blobs" / "sha256" / digest.split(":", 1)[1]


def _list_row(plumb_bin, home: Path, ref: str) -> list[str]:
    rc, out, err = plumb(plumb_bin, home, "list")
    assert rc == 0, err
    rows = [l for l in out.splitlines() if l.split()[:1] == [ref]]
    assert len(rows) == 1, out
    return rows[0].split()


# ---------------------------------------------------------------- (a) DMR's artifact -> plumb

def test_dmr_artifact_is_pulled_by_plumb(registry, plumb_bin, files, tmp_path):
    repo, tag = "dmr-interop/model", "v1"
    ref = f"{registry.host}/{repo}:{tag}"
    pushed = dmr.push(registry.host, repo, tag, files["gguf"], license=files["license"], template=files["template"])
    # the registry holds exactly what the client wrote, in DMR's shape
    body, digest, ctype = dmr.get_manifest(registry.host, repo, tag)
    assert body == pushed.manifest and digest == pushed.manifest_digest
    m = json.loads(body)
    assert [l["mediaType"] for l in m["layers"]] == [dmr.MT_GGUF, dmr.MT_LICENSE, dmr.MT_CHAT_TEMPLATE]
    assert all(set(l["annotations"]) == {dmr.ANN_FILEPATH, dmr.ANN_FILE_METADATA, dmr.ANN_MEDIATYPE_UNTESTED}
               for l in m["layers"])
    assert b"\\u003c" in pushed.config and b"<" not in pushed.config  # Go's HTML escaping

    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "pull", ref)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{ref} {pushed.manifest_digest}"
    assert Path(lines[1]) == _blob(home, m["layers"][0]["digest"])
    assert Path(lines[1]).read_bytes() == files["gguf"].read_bytes()
    assert _blob(home, m["layers"][1]["digest"]).read_bytes() == files["license"].read_bytes()
    assert _blob(home, m["layers"][2]["digest"]).read_bytes() == files["template"].read_bytes()
    assert _blob(home, pushed.manifest_digest).read_bytes() == pushed.manifest
    assert _blob(home, m["config"]["digest"]).read_bytes() == pushed.config

    row = _list_row(plumb_bin, home, ref)
    assert row[1] == pushed.manifest_digest[:19]
    assert row[2] == str(files["gguf"].stat().st_size)  # the model's size: its GGUF layers
    assert row[3:5] == ["llama", "Q8_0"], row

    # by digest: the same manifest, no new blobs
    n_blobs = len(list((home / "blobs" / "sha256").iterdir()))
    dref = f"{registry.host}/{repo}@{pushed.manifest_digest}"
    rc, out, err = plumb(plumb_bin, home, "pull", dref)
    assert rc == 0, err
    assert out.splitlines() == [f"{dref} {pushed.manifest_digest}", lines[1]]
    assert len(list((home / "blobs" / "sha256").iterdir())) == n_blobs == 5


def test_plumb_lists_what_the_dmr_config_says(registry, plumb_bin, files, tmp_path):
    """Values only the config holds (a hub-style quantization, another architecture name, a
    context_size, a `created` with nanoseconds and an offset, no license or template layer)."""
    repo, tag = "dmr-interop/hub-style", "q4"
    ref = f"{registry.host}/{repo}:{tag}"
    created = dt.datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    pushed = dmr.push(registry.host, repo, tag, files["gguf2"], context_size=8192, created=created,
                      config_overrides={"quantization": "IQ2_XXS/Q4_K_M", "architecture": "gemma3"})
    cfg = json.loads(pushed.config)
    assert cfg["descriptor"]["created"] == "2025-03-04T05:06:07.123456+02:00"
    assert cfg["config"]["context_size"] == 8192
    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "pull", ref)
    assert rc == 0, err
    assert out.splitlines()[0] == f"{ref} {pushed.manifest_digest}"
    assert Path(out.splitlines()[1]).read_bytes() == files["gguf2"].read_bytes()
    row = _list_row(plumb_bin, home, ref)
    assert row[3:5] == ["gemma3", "IQ2_XXS/Q4_K_M"], row
    assert row[2] == str(files["gguf2"].stat().st_size)


# ---------------------------------------------------------------- (b) plumb's artifact -> DMR

DMR_CONFIG_FIELDS = {"format", "quantization", "parameters", "architecture", "size", "gguf", "safetensors",
                     "diffusers", "context_size"}


@pytest.fixture(scope="module")
def plumb_pushed(registry, plumb_bin, files, tmp_path_factory):
    """plumb push of the synthetic model with a license, a chat template and --context-size."""
    ref = f"{registry.host}/plumb-interop/model:v1"
    rc, out, err = plumb(plumb_bin, tmp_path_factory.mktemp("push-home"), "push", files["gguf"], ref,
                         "--license", files["license"], "--chat-template", files["template"], "--context-size", "4096")
    assert rc == 0, err
    name, digest = out.split()
    assert name == ref and re.fullmatch(r"sha256:[0-9a-f]{64}", digest), out
    return {"ref": ref, "repo": "plumb-interop/model", "tag": "v1", "digest": digest}


def test_plumb_artifact_is_read_by_dmr_client(registry, files, plumb_pushed, tmp_path):
    pulled = dmr.pull(registry.host, plumb_pushed["repo"], plumb_pushed["tag"], tmp_path / "dmr")
    assert pulled.manifest_digest == plumb_pushed["digest"]
    assert pulled.content_type == dmr.MT_OCI_MANIFEST
    m = pulled.manifest_json
    assert m["schemaVersion"] == 2 and m["mediaType"] == dmr.MT_OCI_MANIFEST
    assert m["config"]["mediaType"] == dmr.MT_CONFIG_V01
    assert m["config"]["size"] == len(pulled.config)
    assert [l["mediaType"] for l in m["layers"]] == [dmr.MT_GGUF, dmr.MT_LICENSE, dmr.MT_CHAT_TEMPLATE]
    for (d, path), src in zip(pulled.files, [files["gguf"], files["license"], files["template"]]):
        assert type(d["size"]) is int and d["size"] == src.stat().st_size
        assert path.read_bytes() == src.read_bytes()

    cf = pulled.config_json
    assert set(cf) <= {"config", "descriptor", "rootfs"} and {"config", "rootfs"} <= set(cf)
    c = cf["config"]
    assert set(c) <= DMR_CONFIG_FIELDS, set(c) - DMR_CONFIG_FIELDS
    for k in ("format", "quantization", "parameters", "architecture", "size"):
        assert type(c[k]) is str and c[k], (k, c.get(k))
    assert c["format"] == "gguf"
    assert type(c["gguf"]) is dict and all(type(k) is str and type(v) is str for k, v in c["gguf"].items())
    assert type(c["context_size"]) is int and c["context_size"] == 4096  # *int32 in Go
    created = cf["descriptor"]["created"]
    assert type(created) is str and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", created)
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert dt.timedelta(minutes=-5) < age < dt.timedelta(hours=1), created
    assert cf["rootfs"] == {"type": "rootfs", "diff_ids": [l["digest"] for l in m["layers"]]}


def test_plumb_config_values_agree_with_dmr(registry, files, plumb_pushed, tmp_path):
    """What plumb writes into the config is what DMR derives from the same GGUF (DMR's
    `size` is a human-readable model size and plumb's the file's byte count, as docs/oci.md
    says; both are text, so only that one is left out). `parameters` must be printed as
    gguf-parser-go prints it ("50.11 K", "268.10 M", "1 B"), which DMR shows as is."""
    pulled = dmr.pull(registry.host, plumb_pushed["repo"], plumb_pushed["tag"], tmp_path / "dmr")
    c = pulled.config_json["config"]
    want = dmr.model_config(dmr.read_gguf(files["gguf"]), context_size=4096)
    assert c["architecture"] == want["architecture"] == "llama"
    assert c["quantization"] == want["quantization"] == "Q8_0"
    for k, v in c["gguf"].items():  # plumb writes a subset of the metadata DMR copies
        assert want["gguf"].get(k) == v, (k, v, want["gguf"].get(k))
    assert c["gguf"]["llama.context_length"] == str(CTX)
    assert c["parameters"] == want["parameters"], (c["parameters"], want["parameters"])


# ---------------------------------------------------------------- (c) skopeo

def test_skopeo_inspect_raw_is_plumbs_manifest(registry, plumb_pushed):
    url = f"docker://{plumb_pushed['ref']}"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", url)
    assert dmr.sha256_digest(raw) == plumb_pushed["digest"]
    body, digest, _ = dmr.get_manifest(registry.host, plumb_pushed["repo"], plumb_pushed["tag"])
    assert raw == body
    m = json.loads(raw)
    cfg = skopeo("inspect", "--config", "--raw", "--tls-verify=false", url)
    assert dmr.sha256_digest(cfg) == m["config"]["digest"] and len(cfg) == m["config"]["size"]
    assert json.loads(cfg)["config"]["format"] == "gguf"
    # by digest too
    raw2 = skopeo("inspect", "--raw", "--tls-verify=false",
                  f"docker://{registry.host}/{plumb_pushed['repo']}@{plumb_pushed['digest']}")
    assert raw2 == raw


def test_skopeo_inspect_raw_is_dmr_clients_manifest(registry, files):
    pushed = dmr.push(registry.host, "dmr-interop/skopeo", "v1", files["gguf"], license=files["license"])
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/dmr-interop/skopeo:v1")
    assert raw == pushed.manifest
    cfg = skopeo("inspect", "--config", "--raw", "--tls-verify=false", f"docker://{registry.host}/dmr-interop/skopeo:v1")
    assert cfg == pushed.config


def test_skopeo_copy_is_pulled_by_plumb(registry, plumb_bin, files, plumb_pushed, tmp_path):
    src = f"docker://{plumb_pushed['ref']}"
    dst_ref = f"{registry.host}/plumb-interop/copied:v2"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", src, f"docker://{dst_ref}")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dst_ref}")
    assert dmr.sha256_digest(raw) == plumb_pushed["digest"]  # copied as is, no conversion
    home = tmp_path / "home"
    rc, out, err = plumb(plumb_bin, home, "pull", dst_ref)
    assert rc == 0, err
    assert out.splitlines()[0] == f"{dst_ref} {plumb_pushed['digest']}"
    assert Path(out.splitlines()[1]).read_bytes() == files["gguf"].read_bytes()
    row = _list_row(plumb_bin, home, dst_ref)
    assert row[3:5] == ["llama", "Q8_0"], row
    # and the copy reads back through the independent client as well
    pulled = dmr.pull(registry.host, "plumb-interop/copied", "v2", tmp_path / "dmr")
    assert pulled.paths(dmr.MT_LICENSE)[0].read_bytes() == files["license"].read_bytes()
    assert pulled.paths(dmr.MT_CHAT_TEMPLATE)[0].read_bytes() == files["template"].read_bytes()
