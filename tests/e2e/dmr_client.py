"""An independent client of the OCI distribution API that writes and reads models in Docker
Model Runner's (DMR) artifact format, for interop tests of plumb. It shares no code with plumb
and is written from DMR's own definitions (docker/model-runner, pkg/distribution):

- types/config.go: the media types (config `application/vnd.docker.ai.model.config.v0.1+json`,
  layers `...gguf.v3`, `...license`, `...chat.template.jinja`, `...mmproj`) and `ConfigFile`
  = {"config": Config, "descriptor": {"created"}, "rootfs": {"type", "diff_ids"}} with Config's
  fields in struct order: format, quantization, parameters, architecture, size, gguf (a
  string-to-string map), context_size (int32), all `omitempty`;
- internal/gguf/create.go + format (gguf-parser-go): format "gguf", parameters / size as
  gguf-parser-go prints them ("268.10 M", "241.39 MiB": two decimals, ".00" trimmed), the
  quantization as the file type's name without "MOSTLY_", architecture = general.architecture,
  and `gguf` = every metadata key as text (arrays of more than 10 items left out, the others
  joined with ", ", floats as Go's %f);
- internal/partial/partial.go + layer.go: the manifest (schemaVersion 2, the OCI manifest media
  type, config, layers), each layer's descriptor {mediaType, size, digest, annotations} with
  the `org.cncf.model.filepath`, `org.cncf.model.file.metadata+json` and
  `org.cncf.model.file.mediatype.untested` annotations; layers are not compressed, so each
  diff ID is the layer's digest;
- Go's encoding/json output: compact, struct fields in declaration order, map keys sorted,
  `<`, `>`, `&` written as \\u003c, \\u003e, \\u0026; times in RFC 3339 with nanoseconds.

Only the standard library (http.client) is used. Uploads go the way go-containerregistry
(DMR's registry layer) does them: HEAD, POST, PATCH with the bytes, PUT ?digest=; downloads are
verified against their digest and size while streaming.

    push(registry, repo, tag, gguf_path, license=None, template=None) -> Pushed
    pull(registry, repo, tag_or_digest, dest) -> Pulled
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import os
import struct
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
MT_CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json"
MT_GGUF = "application/vnd.docker.ai.gguf.v3"
MT_LICENSE = "application/vnd.docker.ai.license"
MT_MMPROJ = "application/vnd.docker.ai.mmproj"
MT_CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"

ANN_FILEPATH = "org.cncf.model.filepath"
ANN_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANN_MEDIATYPE_UNTESTED = "org.cncf.model.file.mediatype.untested"

KNOWN_LAYER_TYPES = (MT_GGUF, MT_LICENSE, MT_MMPROJ, MT_CHAT_TEMPLATE)
CHUNK = 1 << 20


class RegistryError(Exception):
    pass


class VerifyError(Exception):
    """Bytes from the registry that do not match what the manifest or the headers promise."""


# ---------------------------------------------------------------- Go-compatible JSON

def go_json(obj) -> bytes:
    """Compact JSON as Go's encoding/json writes it: dict order kept (callers sort maps), raw
    UTF-8, and the HTML characters escaped."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    s = s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    s = s.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return s.encode("utf-8")


def go_time(t: _dt.datetime) -> str:
    """time.Time's MarshalJSON (RFC3339Nano: fraction without trailing zeros, Z for UTC)."""
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}000".rstrip("0")
    off = t.utcoffset()
    if off is None or off == _dt.timedelta(0):
        tz = "Z"
    else:
        mins = int(off.total_seconds() // 60)
        sign = "+" if mins >= 0 else "-"
        tz = f"{sign}{abs(mins) // 60:02d}:{abs(mins) % 60:02d}"
    return base + ("." + frac if frac else "") + tz


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
    return "sha256:" + h.hexdigest(), n


# ---------------------------------------------------------------- GGUF metadata

# ggml type -> (name, block size, bytes per block)
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}

# general.file_type (llama.cpp's llama_ftype, gguf-parser-go's GGUFFileType) -> name
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 5: "Q4_2", 6: "Q4_3", 7: "Q8_0",
    8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 33: "Q4_0_4_4", 34: "Q4_0_4_8",
    35: "Q4_0_8_8", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFInfo:
    version: int
    kv: list  # (key, type, value) where an array value is (elem_type, [items])
    tensors: list  # (name, dims, ggml type)
    file_size: int

    def get(self, key, default=None):
        for k, _, v in self.kv:
            if k == key:
                return v
        return default


def read_gguf(path: Path) -> GGUFInfo:
    """The header, metadata and tensor table of a GGUF (v2/v3, little-endian)."""
    with open(path, "rb") as f:
        def rd(fmt):
            n = struct.calcsize(fmt)
            b = f.read(n)
            if len(b) != n:
                raise ValueError(f"{path}: truncated GGUF")
            return struct.unpack(fmt, b)[0]

        def rstr():
            n = rd("<Q")
            b = f.read(n)
            if len(b) != n:
                raise ValueError(f"{path}: truncated GGUF string")
            return b.decode("utf-8", "replace")

        def value(t):
            if t == _STRING:
                return rstr()
            if t == _ARRAY:
                et = rd("<I")
                n = rd("<Q")
                return (et, [value(et) for _ in range(n)])
            if t in _SCALAR:
                return rd(_SCALAR[t])
            raise ValueError(f"{path}: unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version = rd("<I")
        n_tensors, n_kv = rd("<Q"), rd("<Q")
        kv = []
        for _ in range(n_kv):
            k = rstr()
            t = rd("<I")
            kv.append((k, t, value(t)))
        tensors = []
        for _ in range(n_tensors):
            name = rstr()
            nd = rd("<I")
            dims = [rd("<Q") for _ in range(nd)]
            tt = rd("<I")
            rd("<Q")  # offset
            tensors.append((name, dims, tt))
    return GGUFInfo(version, kv, tensors, os.path.getsize(path))


def _go_f(v: float) -> str:
    return "%f" % v  # Go's %f: six decimals, like C's


def _kv_text(t: int, v) -> str | None:
    """extractGGUFMetadata: a metadata value as DMR writes it into config.gguf (None: left out)."""
    if t == _STRING:
        return v
    if t == 7:
        return "true" if v else "false"
    if t in (6, 12):
        return _go_f(v)
    if t == _ARRAY:
        et, items = v
        if len(items) > 10:
            return None
        out = []
        for it in items:
            if et == _STRING:
                out.append(it)
            elif et == 7:
                out.append("true" if it else "false")
            elif et in (6, 12):
                out.append(_go_f(it))
            elif et in _SCALAR:
                out.append("%d" % it)
            # nested arrays: nothing, as DMR's handleArray
        return ", ".join(out)
    return "%d" % v


def _scaled(x: float, matrix) -> tuple[str, str]:
    base, unit = 1.0, ""
    for b, u in matrix:
        if x >= b:
            base, unit = b, u
            break
    s = "%.2f" % (x / base)
    if s.endswith(".00"):
        s = s[:-3]
    return s, unit


_NUMBER_UNITS = [(1e15, "Q"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")]
_BYTES_UNITS = [(2.0 ** 50, "Pi"), (1e15, "P"), (2.0 ** 40, "Ti"), (1e12, "T"), (2.0 ** 30, "Gi"), (1e9, "G"),
                (2.0 ** 20, "Mi"), (1e6, "M"), (2.0 ** 10, "Ki"), (1e3, "K")]


def parameters_text(n: int) -> str:
    """gguf-parser-go's GGUFParametersScalar.String()."""
    if n == 0:
        return "0"
    s, u = _scaled(float(n), _NUMBER_UNITS)
    return f"{s} {u}"


def bytes_text(n: int) -> str:
    """gguf-parser-go's GGUFBytesScalar.String()."""
    if n == 0:
        return "0 B"
    s, u = _scaled(float(n), _BYTES_UNITS)
    return f"{s} {u}B"


def tensor_elements(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def model_config(info: GGUFInfo, context_size: int | None = None) -> dict:
    """DMR's types.Config for a GGUF, fields in struct order, empty ones omitted."""
    arch = info.get("general.architecture", "llama")
    ft = info.get("general.file_type")
    if isinstance(ft, int) and ft in FILE_TYPES:
        quant = FILE_TYPES[ft]
    else:  # guess from the tensors, as gguf-parser-go does: the most common type, F32 last
        counts: dict[int, int] = {}
        for _, _, tt in info.tensors:
            counts[tt] = counts.get(tt, 0) + 1
        order = sorted(counts, key=lambda t: -counts[t])
        if order and order[0] == 0 and len(order) > 1:
            order[0] = order[1]
        quant = GGML_TYPES.get(order[0], ("",))[0] if order else ""
    n_params = sum(tensor_elements(d) for _, d, _ in info.tensors)
    n_bytes = 0
    for _, dims, tt in info.tensors:
        if tt in GGML_TYPES:
            _, bs, bb = GGML_TYPES[tt]
            n_bytes += tensor_elements(dims) // bs * bb
    gg = {}
    for k, t, v in info.kv:
        text = _kv_text(t, v)
        if text is not None:
            gg[k] = text
    cfg = {"format": "gguf"}
    if quant:
        cfg["quantization"] = quant
    if n_params:
        cfg["parameters"] = parameters_text(n_params)
    if arch:
        cfg["architecture"] = arch
    cfg["size"] = bytes_text(n_bytes)
    if gg:
        cfg["gguf"] = dict(sorted(gg.items()))
    if context_size is not None:
        cfg["context_size"] = int(context_size)
    return cfg


def layer_descriptor(path: Path, media_type: str) -> dict:
    """partial.NewLayer: digest, size and the CNCF file annotations."""
    digest, size = file_digest(path)
    st = os.stat(path)
    mtime = _dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, _dt.timezone.utc)
    meta = {"name": path.name, "mode": st.st_mode & 0o777, "uid": 0, "gid": 0, "size": st.st_size,
            "mtime": go_time(mtime), "typeflag": 0}
    ann = {ANN_FILEPATH: path.name, ANN_FILE_METADATA: go_json(meta).decode(), ANN_MEDIATYPE_UNTESTED: "false"}
    return {"mediaType": media_type, "size": size, "digest": digest, "annotations": dict(sorted(ann.items()))}


# ---------------------------------------------------------------- HTTP

class _Conn:
    """One keep-alive connection to a registry ("host:port", plain HTTP or HTTPS)."""

    def __init__(self, registry: str, scheme: str = "http", timeout: float = 60):
        self.registry = registry
        self.scheme = scheme
        self.timeout = timeout
        self.c = None

    def _connect(self, netloc=None, scheme=None):
        netloc = netloc or self.registry
        scheme = scheme or self.scheme
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return cls(netloc, timeout=self.timeout)

    def request(self, method, url, body=None, headers=None, redirects=5):
        """Sends a request (url: a path on the registry or an absolute URL) and returns the
        response, its body not yet read. Redirects of GET/HEAD are followed."""
        headers = dict(headers or {})
        headers.setdefault("User-Agent", "dmr-client-test/1")
        for _ in range(redirects + 1):
            u = urllib.parse.urlsplit(url)
            if u.scheme:
                conn = self._connect(u.netloc, u.scheme)
                path = urllib.parse.urlunsplit(("", "", u.path, u.query, ""))
                own = False
            else:
                if self.c is None:
                    self.c = self._connect()
                conn, path, own = self.c, url, True
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
            except (ConnectionError, http.client.HTTPException):
                if not own:
                    raise
                self.c.close()  # a stale keep-alive connection: once more on a new one
                self.c = self._connect()
                if hasattr(body, "seek"):
                    body.seek(0)
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
            if r.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                loc = r.getheader("Location")
                r.read()
                if not own:
                    conn.close()
                if u.scheme:
                    url = urllib.parse.urljoin(url, loc)
                else:
                    url = urllib.parse.urljoin(f"{self.scheme}://{self.registry}{path}", loc)
                continue
            return r
        raise RegistryError(f"{method} {url}: too many redirects")

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def _fail(method, what, r) -> RegistryError:
    body = r.read(4096).decode("utf-8", "replace")
    return RegistryError(f"{method} {what}: HTTP {r.status}: {body.strip()}")


def _location(registry, scheme, loc):
    if loc.startswith("/"):
        return f"{scheme}://{registry}{loc}"
    return loc


# ---------------------------------------------------------------- push

@dataclass
class Pushed:
    manifest: bytes
    manifest_digest: str
    config: bytes
    layers: list  # descriptors


def _has_blob(conn: _Conn, repo: str, digest: str) -> bool:
    r = conn.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    r.read()
    if r.status == 200:
        return True
    if r.status == 404:
        return False
    raise RegistryError(f"HEAD blob {digest}: HTTP {r.status}")


def _upload(conn: _Conn, repo: str, digest: str, size: int, source) -> None:
    """POST (start) + PATCH (the bytes, streamed) + PUT ?digest= (commit), skipped when
    the registry already has the blob."""
    if _has_blob(conn, repo, digest):
        return
    r = conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
    if r.status != 202:
        raise _fail("POST", "blob upload", r)
    r.read()
    loc = _location(conn.registry, conn.scheme, r.getheader("Location"))
    if isinstance(source, (bytes, bytearray)):
        body, close = bytes(source), None
    else:
        body = close = open(source, "rb")
    try:
        r = conn.request("PATCH", loc, body=body,
                         headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if r.status != 202:
            raise _fail("PATCH", digest, r)
        r.read()
    finally:
        if close:
            close.close()
    loc = _location(conn.registry, conn.scheme, r.getheader("Location"))
    sep = "&" if "?" in loc else "?"
    r = conn.request("PUT", f"{loc}{sep}digest={urllib.parse.quote(digest)}", body=b"",
                     headers={"Content-Type": "application/octet-stream", "Content-Length": "0"})
    if r.status != 201:
        raise _fail("PUT", digest, r)
    r.read()
    got = r.getheader("Docker-Content-Digest")
    if got and got != digest:
        raise VerifyError(f"blob {digest}: the registry stored {got}")


def build(gguf_path, license=None, template=None, *, context_size=None, created=None,
          config_overrides=None) -> tuple[bytes, bytes, list]:
    """The artifact DMR's builder makes of a GGUF (+ license, + chat template): config bytes,
    manifest bytes, and the layers as (descriptor, path). config_overrides replaces fields of
    config.config (a test's way to write what a hub model holds, e.g. "IQ2_XXS/Q4_K_M")."""
    gguf_path = Path(gguf_path)
    files = [(gguf_path, MT_GGUF)]
    if license:
        files.append((Path(license), MT_LICENSE))
    if template:
        files.append((Path(template), MT_CHAT_TEMPLATE))
    layers = [(layer_descriptor(p, mt), p) for p, mt in files]
    cfg = model_config(read_gguf(gguf_path), context_size)
    for k, v in (config_overrides or {}).items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    created = created or _dt.datetime.now(_dt.timezone.utc)
    config_file = {"config": cfg, "descriptor": {"created": go_time(created)},
                   "rootfs": {"type": "rootfs", "diff_ids": [d["digest"] for d, _ in layers]}}
    config = go_json(config_file)
    manifest = go_json({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_CONFIG_V01, "size": len(config), "digest": sha256_digest(config)},
        "layers": [d for d, _ in layers],
    })
    return config, manifest, layers


def push(registry: str, repo: str, tag: str, gguf_path, license=None, template=None, *,
         context_size=None, created=None, config_overrides=None, scheme="http") -> Pushed:
    """Packages gguf_path (with an optional license and chat template) as DMR does and pushes
    it to registry/repo:tag. Returns the manifest bytes and digest."""
    config, manifest, layers = build(gguf_path, license, template, context_size=context_size,
                                     created=created, config_overrides=config_overrides)
    conn = _Conn(registry, scheme)
    try:
        for d, p in layers:
            _upload(conn, repo, d["digest"], d["size"], p)
        _upload(conn, repo, sha256_digest(config), len(config), config)
        r = conn.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                         headers={"Content-Type": MT_OCI_MANIFEST, "Content-Length": str(len(manifest))})
        if r.status != 201:
            raise _fail("PUT", "manifest", r)
        r.read()
        digest = sha256_digest(manifest)
        got = r.getheader("Docker-Content-Digest")
        if got and got != digest:
            raise VerifyError(f"manifest: the registry says {got}, the bytes are {digest}")
    finally:
        conn.close()
    return Pushed(manifest, digest, config, [d for d, _ in layers])


# ---------------------------------------------------------------- pull

@dataclass
class Pulled:
    manifest: bytes
    manifest_digest: str
    content_type: str
    manifest_json: dict
    config: bytes
    config_json: dict
    files: list = field(default_factory=list)  # (descriptor, path)

    def paths(self, media_type: str) -> list[Path]:
        return [p for d, p in self.files if d["mediaType"] == media_type]


def get_manifest(registry: str, repo: str, reference: str, scheme="http") -> tuple[bytes, str, str]:
    """(bytes, digest, content type) of a manifest, checked against Docker-Content-Digest
    and against a digest reference."""
    conn = _Conn(registry, scheme)
    try:
        r = conn.request("GET", f"/v2/{repo}/manifests/{reference}",
                         headers={"Accept": ", ".join([MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST])})
        if r.status != 200:
            raise _fail("GET", f"manifest {repo}:{reference}", r)
        body = r.read()
        ctype = r.getheader("Content-Type", "")
        header = r.getheader("Docker-Content-Digest")
    finally:
        conn.close()
    digest = sha256_digest(body)
    if header and header != digest:
        raise VerifyError(f"manifest: the registry says {header}, the bytes are {digest}")
    if reference.startswith("sha256:") and reference != digest:
        raise VerifyError(f"manifest: asked for {reference}, the bytes are {digest}")
    return body, digest, ctype


def _fetch(conn: _Conn, repo: str, d: dict, dest: Path | None, limit: int | None = None) -> bytes | None:
    """GET a blob into dest (or memory), verifying size and sha256 while streaming; a
    mismatch removes what was written."""
    if limit is not None and d["size"] > limit:
        raise VerifyError(f"blob {d['digest']}: {d['size']} bytes is more than {limit}")
    r = conn.request("GET", f"/v2/{repo}/blobs/{d['digest']}")
    if r.status != 200:
        raise _fail("GET", f"blob {d['digest']}", r)
    h = hashlib.sha256()
    n = 0
    chunks = []
    out = open(dest.with_name(dest.name + ".part"), "wb") if dest else None
    try:
        while True:
            b = r.read(CHUNK)
            if not b:
                break
            n += len(b)
            if n > d["size"]:
                raise VerifyError(f"blob {d['digest']}: more than {d['size']} bytes")
            h.update(b)
            if out:
                out.write(b)
            else:
                chunks.append(b)
        got = "sha256:" + h.hexdigest()
        if n != d["size"]:
            raise VerifyError(f"blob {d['digest']}: got {n} of {d['size']} bytes")
        if got != d["digest"]:
            raise VerifyError(f"blob {d['digest']}: digest mismatch (the bytes hash to {got})")
    except BaseException:
        if out:
            out.close()
            os.unlink(out.name)
        raise
    if out:
        out.close()
        os.replace(out.name, dest)
        return None
    return b"".join(chunks)


def parse_manifest(body: bytes) -> dict:
    m = json.loads(body)
    if m.get("schemaVersion") != 2:
        raise VerifyError("manifest: schemaVersion is not 2")
    if m.get("mediaType", MT_OCI_MANIFEST) != MT_OCI_MANIFEST:
        raise VerifyError(f"manifest: media type {m.get('mediaType')} is not {MT_OCI_MANIFEST}")
    if m["config"]["mediaType"] not in (MT_CONFIG_V01, MT_CONFIG_V02):
        raise VerifyError(f"manifest: config media type {m['config']['mediaType']}")
    return m


def pull(registry: str, repo: str, reference: str, dest, scheme="http") -> Pulled:
    """Pulls registry/repo:reference (a tag or sha256 digest) into dest: each layer as
    dest/<filepath annotation, else sha256 hex>, every blob verified. Checks the DMR
    structure: a v0.1/v0.2 config, diff_ids equal to the layers' digests, a GGUF layer."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    body, digest, ctype = get_manifest(registry, repo, reference, scheme)
    m = parse_manifest(body)
    conn = _Conn(registry, scheme)
    try:
        config = _fetch(conn, repo, m["config"], None, limit=1 << 20)
        cfg = json.loads(config)
        diff_ids = cfg.get("rootfs", {}).get("diff_ids")
        if diff_ids != [l["digest"] for l in m["layers"]]:
            raise VerifyError(f"config: rootfs.diff_ids {diff_ids} are not the layers' digests")
        if not any(l["mediaType"] == MT_GGUF for l in m["layers"]):
            raise VerifyError("manifest: no GGUF layer")
        files = []
        for l in m["layers"]:
            name = l.get("annotations", {}).get(ANN_FILEPATH) or l["digest"].split(":", 1)[1]
            name = os.path.basename(name)  # never outside dest
            if name in ("", ".", "..") or any(p.name == name for _, p in files):
                name = l["digest"].split(":", 1)[1]
            p = dest / name
            _fetch(conn, repo, l, p)
            files.append((l, p))
    finally:
        conn.close()
    return Pulled(body, digest, ctype, m, config, cfg, files)


def main(argv=None) -> int:
    """python dmr_client.py push HOST:PORT REPO TAG MODEL.gguf [LICENSE [TEMPLATE]]
       python dmr_client.py pull HOST:PORT REPO TAG|DIGEST DEST"""
    a = list(sys.argv[1:] if argv is None else argv)
    if len(a) >= 5 and a[0] == "push":
        t0 = time.monotonic()
        p = push(a[1], a[2], a[3], a[4], *(a[5:7]))
        print(f"{a[1]}/{a[2]}:{a[3]} {p.manifest_digest} ({time.monotonic() - t0:.2f} s)")
        return 0
    if len(a) == 5 and a[0] == "pull":
        p = pull(a[1], a[2], a[3], a[4])
        print(f"{a[1]}/{a[2]}:{a[3]} {p.manifest_digest}")
        for d, path in p.files:
            print(f"{d['mediaType']} {path}")
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
