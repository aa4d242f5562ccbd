"""End-to-end tests of `plumb inspect` on valid files.

(a) Files written by gguf-py's GGUFWriter with every metadata value type (scalars at their
    extremes, arrays of each type, empty arrays, unicode and invalid UTF-8 strings) and
    tensors of every type plumb knows: `plumb inspect --json` must agree with gguf-py's
    GGUFReader on every key, type, value, shape, tensor type, offset and byte count.
(b) The text output shows the key lines.
(c) Usage errors: no file, a missing file, an unknown option.
(d) The real model (Gemma 3 270M Q4_K_M) against the table in data/gemma3_270m_tensors.json,
    generated once with gguf-py from the same file.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import quantize

import ggufcraft as gc

E2E = Path(__file__).resolve().parent

# gguf-py value type -> plumb's name for it
TYPE_NAME = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32",
             V.INT32: "i32", V.FLOAT32: "f32", V.BOOL: "bool", V.STRING: "string", V.ARRAY: "array",
             V.UINT64: "u64", V.INT64: "i64", V.FLOAT64: "f64"}
INT_TYPES = {V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.UINT64, V.INT64}
FLOAT_TYPES = {V.FLOAT32, V.FLOAT64}

INVALID_UTF8 = b"ab\xff\xfecd\xc3(\x00z\xed\xa0\x80!"  # stray bytes, a cut sequence, NUL, a surrogate
UNICODE = "h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e \U0001f999"
LONG_STRING = "0123456789" * 30


class Writer(gguf.GGUFWriter):
    """GGUFWriter that also writes empty arrays (stock gguf-py refuses them)."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if vtype == V.ARRAY and len(val) == 0 and sub_type is not None:
            return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def sanitize(b: bytes) -> str:
    """What plumb promises for strings in JSON (cli.h): valid UTF-8 kept, each byte of an
    invalid sequence and each NUL replaced by U+FFFD. Written independently of plumb."""
    out, i = [], 0
    while i < len(b):
        for n in (1, 2, 3, 4):
            try:
                ch = b[i:i + n].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(ch) == 1:
                out.append("\ufffd" if ch == "\0" else ch)
                i += n
                break
        else:
            out.append("\ufffd")
            i += 1
    return "".join(out)


def write_every_type(path: Path, alignment: int | None = None) -> None:
    """A GGUFWriter file with every metadata value type and tensors of every plumb type."""
    rng = np.random.default_rng(1234)
    w = Writer(str(path), "test")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_name("every type")
    # scalars, at their extremes where that matters
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4294967295)
    w.add_int32("t.i32", -2147483648)
    w.add_float32("t.f32", 3.14159)
    w.add_float32("t.f32_tiny", 1e-45)
    w.add_float32("t.f32_inf", math.inf)
    w.add_float32("t.f32_ninf", -math.inf)
    w.add_float32("t.f32_nan", math.nan)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.string", "hello")
    w.add_key_value("t.string_empty", "", V.STRING)
    w.add_string("t.string_unicode", UNICODE)
    w.add_key_value("t.string_invalid_utf8", INVALID_UTF8, V.STRING)
    w.add_string("t.string_long", LONG_STRING)
    w.add_string("t.string_escapes", 'quote " backslash \\ newline \n tab \t')
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_uint64("t.u64_2p53", 2**53)
    w.add_uint64("t.u64_2p53_1", 2**53 + 1)
    w.add_int64("t.i64", -2**63)
    w.add_int64("t.i64_max", 2**63 - 1)
    w.add_int64("t.i64_small", -7)
    w.add_float64("t.f64", 2.718281828459045)
    w.add_float64("t.f64_denormal", 5e-324)
    w.add_float64("t.f64_big", 1.7976931348623157e308)
    # arrays of every element type
    arrays = {
        V.UINT8: [0, 1, 255], V.INT8: [-128, 0, 127], V.UINT16: [0, 65535],
        V.INT16: [-32768, 32767, -1], V.UINT32: [0, 4294967295], V.INT32: [-2147483648, 2147483647],
        V.FLOAT32: [0.5, -1.25, 1e-3, 3.0e38], V.BOOL: [True, False, True],
        V.STRING: ["a", "", UNICODE, "x" * 200], V.UINT64: [0, 2**53 + 1, 2**64 - 1],
        V.INT64: [-2**63, 2**53, -1], V.FLOAT64: [1e308, -2.5, 1e-300],
    }
    for vt, items in arrays.items():
        w.add_key_value(f"a.{TYPE_NAME[vt]}", items, V.ARRAY, sub_type=vt)
    w.add_key_value("a.string_invalid_utf8", [b"ok", INVALID_UTF8], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("a.empty_u32", [], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("a.empty_string", [], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("a.long_i32", list(range(-10, 30)), V.ARRAY, sub_type=V.INT32)

    # tensors: plain floats of 1 to 4 dims, a zero-size one, and every quantized type
    w.add_tensor("f32.matrix", rng.standard_normal((3, 8)).astype(np.float32))
    w.add_tensor("f32.vector", rng.standard_normal(5).astype(np.float32))
    w.add_tensor("f32.empty", np.zeros((0,), np.float32))  # 0 bytes, shares the next offset
    w.add_tensor("f32.3d", rng.standard_normal((2, 3, 4)).astype(np.float32))
    w.add_tensor("f32.4d", rng.standard_normal((2, 1, 3, 4)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((4, 8)).astype(np.float16))
    x = rng.standard_normal((4, 256)).astype(np.float32)
    for qt in (Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):
        w.add_tensor(qt.name.lower(), quantize(x, qt), raw_dtype=qt)
    for qt in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K):
        # gguf-py cannot quantize these; inspect reads only the header, so random blocks do
        bs, ts = GGML_QUANT_SIZES[qt]
        w.add_tensor(qt.name.lower(), rng.integers(0, 256, (2, 512 // bs * ts), dtype=np.uint8), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module", params=[None, 64], ids=["align-default", "align-64"])
def every_type_file(request, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("every") / f"every-type-{request.param or 32}.gguf"
    write_every_type(p, request.param)
    return p


def inspect_json(run, binary, path, *extra) -> dict:
    r = run(binary, "inspect", "--json", *extra, path)
    assert r.rc == 0 and r.stderr == "", r.describe()
    assert not r.sanitizer_report, r.describe()
    assert r.stdout.count("\n") == 1, "--json prints one line"
    return json.loads(r.stdout)


# ---- expectations from gguf-py's reader ---------------------------------------------------------
def reader_value(vt: int, part: np.ndarray):
    if vt == V.STRING:
        return sanitize(bytes(part))
    v = part.tolist()[0]
    return bool(v) if vt == V.BOOL else v


def json_value(vt: int, v):
    """Undo plumb's JSON encodings: big integers as strings, non-finite floats as strings."""
    if vt in INT_TYPES and isinstance(v, str):
        return int(v)
    if vt in FLOAT_TYPES and isinstance(v, str):
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[v]
    return v


def same(vt: int, got, want) -> bool:
    if vt in FLOAT_TYPES:
        return (math.isnan(got) and math.isnan(want)) or got == want
    if vt == V.BOOL:
        return got is want
    if vt in INT_TYPES:
        return isinstance(got, int) and not isinstance(got, bool) and got == want
    return got == want


def expected_metadata(r: gguf.GGUFReader) -> list[dict]:
    out = []
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        vt = V(int(f.parts[2][0]))
        e = {"key": key, "type": TYPE_NAME[vt]}
        if vt == V.ARRAY:
            et = V(int(f.parts[3][0]))  # f.types lacks it for empty arrays
            e.update(element_type=TYPE_NAME[et], length=int(f.parts[4][0]),
                     items=[reader_value(et, f.parts[i]) for i in f.data], vt=et)
        else:
            e.update(value=reader_value(vt, f.parts[f.data[0]]), vt=vt)
        out.append(e)
    return out


# ---- (a) JSON against gguf-py ---------------------------------------------------------------
def test_json_matches_gguf_py(plumb_san_bin, run, every_type_file):
    r = gguf.GGUFReader(str(every_type_file))
    doc = inspect_json(run, plumb_san_bin, every_type_file, "--array-items", "1000")

    assert doc["file"] == str(every_type_file)
    assert doc["file_size"] == every_type_file.stat().st_size
    assert doc["gguf_version"] == int(r.fields["GGUF.version"].parts[-1][0]) == 3
    assert doc["architecture"] == "test"
    assert doc["alignment"] == r.alignment
    assert doc["data_offset"] == r.data_offset
    assert doc["kv_count"] == int(r.fields["GGUF.kv_count"].parts[-1][0]) == len(doc["metadata"])
    assert doc["tensor_count"] == len(r.tensors) == len(doc["tensors"])

    want = expected_metadata(r)
    assert [m["key"] for m in doc["metadata"]] == [w["key"] for w in want]
    for got, w in zip(doc["metadata"], want):
        ctx = f"key {w['key']}: plumb {got!r}, gguf-py {w!r}"
        assert got["type"] == w["type"], ctx
        if w["type"] == "array":
            assert got["element_type"] == w["element_type"], ctx
            assert got["length"] == w["length"] == len(got["items"]), ctx
            assert got["truncated"] is False, ctx
            for gi, wi in zip(got["items"], w["items"]):
                assert same(w["vt"], json_value(w["vt"], gi), wi), ctx
        else:
            assert same(w["vt"], json_value(w["vt"], got["value"]), w["value"]), ctx

    for got, t in zip(doc["tensors"], r.tensors):
        ctx = f"tensor {t.name}: plumb {got!r}"
        assert got["name"] == t.name, ctx
        assert got["type"] == t.tensor_type.name, ctx
        assert got["shape"] == [int(d) for d in t.shape], ctx
        assert got["elements"] == int(t.n_elements), ctx
        assert got["bytes"] == int(t.n_bytes), ctx
        assert got["offset"] == t.data_offset - r.data_offset, ctx
        assert got["offset"] % r.alignment == 0, ctx

    totals = defaultdict(lambda: {"tensors": 0, "parameters": 0, "bytes": 0})
    for t in r.tensors:
        e = totals[t.tensor_type.name]
        e["tensors"] += 1
        e["parameters"] += int(t.n_elements)
        e["bytes"] += int(t.n_bytes)
    assert doc["totals_by_type"] == dict(totals)
    assert doc["parameters"] == sum(int(t.n_elements) for t in r.tensors)
    assert doc["tensor_bytes"] == sum(int(t.n_bytes) for t in r.tensors)


def test_json_covers_every_type(plumb_san_bin, run, every_type_file):
    """The file really holds every value type, array element type and plumb tensor type."""
    doc = inspect_json(run, plumb_san_bin, every_type_file)
    names = set(TYPE_NAME.values())
    assert {m["type"] for m in doc["metadata"]} == names
    assert {m["element_type"] for m in doc["metadata"] if m["type"] == "array"} == names - {"array"}
    assert {t["type"] for t in doc["tensors"]} == {
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"}
    by_key = {m["key"]: m for m in doc["metadata"]}
    # spot checks of the encodings, independent of gguf-py
    assert by_key["t.u64"]["value"] == "18446744073709551615"
    assert by_key["t.u64_2p53"]["value"] == 2**53
    assert by_key["t.i64"]["value"] == "-9223372036854775808"
    assert by_key["t.f32_nan"]["value"] == "nan" and by_key["t.f32_ninf"]["value"] == "-inf"
    assert by_key["t.string_unicode"]["value"] == UNICODE
    assert by_key["t.string_invalid_utf8"]["value"] == "ab\ufffd\ufffdcd\ufffd(\ufffdz\ufffd\ufffd\ufffd!"
    assert by_key["a.empty_string"]["items"] == [] and by_key["a.empty_string"]["length"] == 0
    assert by_key["t.bool_false"]["value"] is False


def test_json_array_items_limit(plumb_san_bin, run, every_type_file):
    doc = inspect_json(run, plumb_san_bin, every_type_file)  # default: 8 items
    arr = {m["key"]: m for m in doc["metadata"]}["a.long_i32"]
    assert arr["length"] == 40 and arr["items"] == list(range(-10, -2)) and arr["truncated"] is True
    doc = inspect_json(run, plumb_san_bin, every_type_file, "--array-items", "0")
    arr = {m["key"]: m for m in doc["metadata"]}["a.long_i32"]
    assert arr["length"] == 40 and arr["items"] == [] and arr["truncated"] is True


def test_release_and_sanitizer_builds_agree(plumb_bin, plumb_san_bin, run, every_type_file):
    a = run(plumb_bin, "inspect", "--json", "--array-items", "1000", every_type_file)
    b = run(plumb_san_bin, "inspect", "--json", "--array-items", "1000", every_type_file)
    assert a.rc == 0 and b.rc == 0, a.describe() + b.describe()
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_version_2_file(plumb_san_bin, run, gguf_dir):
    """GGUF v2 shares v3's layout and is accepted."""
    g = gc.small_valid()
    g.version = 2
    p = gguf_dir / "v2.gguf"
    p.write_bytes(g.build()[0])
    doc = inspect_json(run, plumb_san_bin, p)
    assert doc["gguf_version"] == 2 and doc["tensor_count"] == 3 and doc["kv_count"] == 6


def test_zero_size_tensor_sharing_an_offset(plumb_san_bin, run, gguf_dir):
    """A tensor of zero bytes at the offset of a non-empty one (in either order) overlaps
    nothing; the reader once reported an overlap depending on sort order."""
    g = gc.Gguf()
    g.kv("general.architecture", gc.STRING, "t")
    g.tensor("x", [8], gc.F32)
    g.tensor("after", [8], gc.F32)
    g.tensor("empty", [0, 4], gc.F32, offset=32)  # same offset as "after", listed after it
    g.tensor("empty2", [4, 0], gc.F32, offset=0)   # same offset as "x"
    p = gguf_dir / "zero.gguf"
    p.write_bytes(g.build()[0])
    doc = inspect_json(run, plumb_san_bin, p)
    assert [(t["name"], t["offset"], t["bytes"]) for t in doc["tensors"]] == [
        ("x", 0, 32), ("after", 32, 32), ("empty", 32, 0), ("empty2", 0, 0)]


def test_no_metadata_no_tensors(plumb_san_bin, run, gguf_dir):
    p = gguf_dir / "bare.gguf"
    p.write_bytes(gc.Gguf().build()[0])
    doc = inspect_json(run, plumb_san_bin, p)
    assert doc["kv_count"] == 0 and doc["tensor_count"] == 0 and doc["architecture"] == "(none)"
    assert doc["file_size"] == 24 and doc["parameters"] == 0


# ---- (b) text output ----------------------------------------------------------------------
def test_text_output(plumb_san_bin, run, every_type_file):
    r = run(plumb_san_bin, "inspect", every_type_file)
    assert r.rc == 0 and r.stderr == "", r.describe()
    out = r.stdout
    n_kv = len(gguf.GGUFReader(str(every_type_file)).fields) - 3  # less GGUF.version/tensor_count/kv_count
    expect = [
        rf"^file: +{re.escape(str(every_type_file))}$",
        rf"^file size: +{every_type_file.stat().st_size} bytes",
        r"^gguf version: 3$",
        r'^architecture: "test"$',
        r"^alignment: +(32|64)$",
        rf"^metadata: {n_kv} keys$",
        r"^  general\.architecture +string +\"test\"$",
        r"^  t\.u8 +u8 +255$",
        r"^  t\.i8 +i8 +-128$",
        r"^  t\.u32 +u32 +4294967295$",
        r"^  t\.i32 +i32 +-2147483648$",
        r"^  t\.u64 +u64 +18446744073709551615$",
        r"^  t\.i64 +i64 +-9223372036854775808$",
        r"^  t\.f32 +f32 +3\.14159",
        r"^  t\.f64 +f64 +2\.718281828459045",
        r"^  t\.bool_true +bool +true$",
        r"^  t\.bool_false +bool +false$",
        r'^  t\.string_invalid_utf8 +string +"ab\\xff\\xfecd\\xc3\(\\x00z\\xed\\xa0\\x80!"$',
        r'^  t\.string_escapes +string +"quote \\" backslash \\\\ newline \\n tab \\t"$',
        rf'^  t\.string_unicode +string +"{re.escape(UNICODE)}"$',
        r'^  t\.string_long +string +"(0123456789){12}"\.\.\. \(300 bytes\)$',
        r"^  a\.i16 +array\[i16\] +len 3 \[-32768, 32767, -1\]$",
        r"^  a\.bool +array\[bool\] +len 3 \[true, false, true\]$",
        r'^  a\.string +array\[string\] +len 4 \["a", "", ',
        r"^  a\.empty_u32 +array\[u32\] +len 0 \[\]$",
        r"^  a\.long_i32 +array\[i32\] +len 40 \[-10, -9, -8, -7, -6, -5, -4, -3, \.\.\.\]$",
        r"^tensors: 18$",
        r"^ +0  f32\.matrix +F32 +8 x 3 +96 +0$",
        r"^ +\d+  f32\.4d +F32 +4 x 3 x 1 x 2 +96 +\d+$",
        r"^ +\d+  q8_0 +Q8_0 +256 x 4 +1088 +\d+$",
        r"^ +\d+  q4_k +Q4_K +512 x 2 +576 +\d+$",
        r"^  Q6_K +1 +1024 +840$",
        r"^  total +18 +\d+ +\d+$",
    ]
    for pat in expect:
        assert re.search(pat, out, re.M), f"no line matches {pat!r}\n{out}"


# ---- (c) usage errors ---------------------------------------------------------------------
def test_no_file_is_a_usage_error(plumb_san_bin, run):
    r = run(plumb_san_bin, "inspect")
    assert r.rc == 2 and "usage: plumb inspect" in r.stderr and r.stdout == "", r.describe()


def test_missing_file(plumb_san_bin, run, gguf_dir):
    p = gguf_dir / "does-not-exist.gguf"
    r = run(plumb_san_bin, "inspect", p)
    assert r.rc == 1 and not r.sanitizer_report, r.describe()
    assert r.stderr_lines == [f"plumb inspect: {p}: cannot open: No such file or directory"], r.describe()


def test_directory_is_not_a_file(plumb_san_bin, run, gguf_dir):
    r = run(plumb_san_bin, "inspect", gguf_dir)
    assert r.rc == 1 and r.stderr_lines == [f"plumb inspect: {gguf_dir}: not a regular file"], r.describe()


@pytest.mark.parametrize("args,needle", [
    (["--bogus"], "unknown option '--bogus'"),
    (["-x", "FILE"], "unknown option '-x'"),
    (["FILE", "--jsn"], "unknown option '--jsn'"),
    (["FILE", "--array-items", "many"], "--array-items needs a number"),
    (["FILE", "FILE"], "more than one file"),
])
def test_bad_options_exit_2(plumb_san_bin, run, gguf_dir, args, needle):
    p = gguf_dir / "ok.gguf"
    p.write_bytes(gc.small_valid().build()[0])
    r = run(plumb_san_bin, "inspect", *[str(p) if a == "FILE" else a for a in args])
    assert r.rc == 2 and needle in r.stderr and r.stdout == "", r.describe()


def test_help(plumb_san_bin, run):
    r = run(plumb_san_bin, "inspect", "--help")
    assert r.rc == 0 and "usage: plumb inspect" in r.stdout, r.describe()


def test_unknown_command_and_no_command(plumb_san_bin, run):
    r = run(plumb_san_bin, "frobnicate")
    assert r.rc == 2 and "unknown command 'frobnicate'" in r.stderr, r.describe()
    r = run(plumb_san_bin)
    assert r.rc == 2 and "usage: plumb" in r.stderr, r.describe()


# ---- (d) the real model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma_table() -> dict:
    return json.loads((E2E / "data" / "gemma3_270m_tensors.json").read_text())


@pytest.fixture(scope="module")
def gemma_doc(real_model, plumb_bin, run) -> dict:
    r = run(plumb_bin, "inspect", "--json", real_model)
    assert r.rc == 0 and r.stderr == "", r.describe()
    return json.loads(r.stdout)


def test_real_model_header(gemma_doc, gemma_table, real_model):
    d = gemma_doc
    assert d["architecture"] == "gemma3"
    assert d["gguf_version"] == 3
    assert d["tensor_count"] == 236 == len(d["tensors"])
    assert d["kv_count"] == 33 == len(d["metadata"])
    assert d["file_size"] == real_model.stat().st_size == 253113024
    assert d["alignment"] == gemma_table["alignment"] == 32
    assert d["data_offset"] == gemma_table["data_offset"]
    assert [(m["key"], m["type"], m.get("element_type"), m.get("length")) for m in d["metadata"]] == [
        (m["key"], m["type"], m.get("element_type"), m.get("length")) for m in gemma_table["metadata"]]
    by_key = {m["key"]: m for m in d["metadata"]}
    assert by_key["gemma3.block_count"]["value"] == 18
    assert by_key["gemma3.embedding_length"]["value"] == 640
    assert by_key["tokenizer.ggml.tokens"]["items"][:3] == ["<pad>", "<eos>", "<bos>"]


def test_real_model_tensors_match_table(gemma_doc, gemma_table):
    got = [{k: t[k] for k in ("name", "type", "shape", "elements", "bytes", "offset")} for t in gemma_doc["tensors"]]
    assert len(got) == len(gemma_table["tensors"]) == 236
    for g, w in zip(got, gemma_table["tensors"]):
        assert g == w


def expected_type(name: str) -> set[str]:
    if name == "token_embd.weight":
        return {"Q8_0"}
    if name.endswith("norm.weight"):
        return {"F32"}
    role = name.split(".")[2]
    return {"attn_q": {"Q5_0"}, "attn_k": {"Q5_0"}, "ffn_gate": {"Q5_0"}, "ffn_up": {"Q5_0"},
            "attn_v": {"Q8_0", "Q5_0"}, "attn_output": {"Q4_K"}, "ffn_down": {"Q6_K", "Q4_K"}}[role]


def test_real_model_tensor_types(gemma_doc):
    seen = defaultdict(set)
    for t in gemma_doc["tensors"]:
        assert t["type"] in expected_type(t["name"]), t
        if t["name"].startswith("blk."):
            seen[t["name"].split(".")[2]].add(t["type"])
    assert len([t for t in gemma_doc["tensors"] if t["name"].startswith("blk.0.")]) == 13
    assert seen["attn_v"] == {"Q8_0", "Q5_0"} and seen["ffn_down"] == {"Q6_K", "Q4_K"}


def test_real_model_totals(gemma_doc, gemma_table):
    """Totals by type and the parameter count equal sums over gguf-py's table."""
    want = defaultdict(lambda: {"tensors": 0, "parameters": 0, "bytes": 0})
    for t in gemma_table["tensors"]:
        e = want[t["type"]]
        e["tensors"] += 1
        e["parameters"] += t["elements"]
        e["bytes"] += t["bytes"]
    assert gemma_doc["totals_by_type"] == dict(want)
    assert gemma_doc["parameters"] == sum(t["elements"] for t in gemma_table["tensors"]) == 268098176
    assert gemma_doc["tensor_bytes"] == sum(t["bytes"] for t in gemma_table["tensors"])
    assert set(want) == {"F32", "Q8_0", "Q5_0", "Q4_K", "Q6_K"}


def test_real_model_text(real_model, plumb_san_bin, run):
    r = run(plumb_san_bin, "inspect", real_model, timeout=120)
    assert r.rc == 0 and r.stderr == "" and not r.sanitizer_report, r.describe()
    for pat in [r"^gguf version: 3$", r'^architecture: "gemma3"$', r"^metadata: 33 keys$", r"^tensors: 236$",
                r"^  tokenizer\.ggml\.tokens +array\[string\] +len 262144 \[\"<pad>\"",
                r"^ +1  token_embd\.weight +Q8_0 +640 x 262144 +178257920 +2560$",
                r"^parameters: +268098176 "]:
        assert re.search(pat, r.stdout, re.M), f"no line matches {pat!r}\n{r.stdout[:3000]}"


# ---- the file type by name -------------------------------------------------------------------
def test_real_model_file_type(real_model, plumb_san_bin, run):
    """general.file_type 15 is llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M, shown by its name."""
    r = run(plumb_san_bin, "inspect", real_model, timeout=120)
    assert r.rc == 0 and not r.sanitizer_report, r.describe()
    assert re.search(r"^file type: +Q4_K_M \(general\.file_type 15\)$", r.stdout, re.M), r.stdout[:600]
    doc = inspect_json(run, plumb_san_bin, real_model)
    assert doc["file_type"] == "Q4_K_M" and doc["file_type_id"] == 15


@pytest.mark.parametrize("value, name", [(0, "F32"), (1, "F16"), (2, "Q4_0"), (7, "Q8_0"), (10, "Q2_K"),
                                         (12, "Q3_K_M"), (14, "Q4_K_S"), (17, "Q5_K_M"), (18, "Q6_K"),
                                         (32, "BF16"), (4, None), (99, None), (None, None)])
def test_file_type_names(plumb_san_bin, run, gguf_dir, value, name):
    g = gc.Gguf()
    g.kv("general.architecture", gc.STRING, "test")
    if value is not None:
        g.kv("general.file_type", gc.U32, value)
    p = gguf_dir / "ftype.gguf"
    p.write_bytes(g.build()[0])
    r = run(plumb_san_bin, "inspect", p)
    assert r.rc == 0 and not r.sanitizer_report, r.describe()
    lines = [l for l in r.stdout.splitlines() if l.startswith("file type:")]
    if value is None:
        assert lines == [], r.stdout
    else:
        assert lines == [f"file type:    {name or 'unknown'} (general.file_type {value})"], r.stdout
    doc = inspect_json(run, plumb_san_bin, p)
    assert doc["file_type"] == name and doc["file_type_id"] == value
