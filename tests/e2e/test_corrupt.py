"""Corrupt-file matrix for the GGUF reader, run through the ASan+UBSan plumb binary.

Every handcrafted case (built with ggufcraft) must make `plumb inspect FILE` exit with
status 1 within a second, print exactly one line on stderr, "plumb inspect: FILE: ...",
holding the case's key words, and leave no sanitizer report. Two sweeps follow: the small
valid file truncated at every byte offset (each prefix is an error, never a crash), and a
few hundred seeded random byte mutations (exit 0 or 1, never a sanitizer report).
"""
from __future__ import annotations

import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import ggufcraft as gc
from ggufcraft import (ARRAY, BOOL, F32, I16, Q4_K, Q8_0, STRING, U8, U32, U64, Gguf,
                       small_valid)

# A corrupt file must be refused without hanging: every run waits at most WAIT seconds (a
# bounded wait on the exit, not a speed limit, which a busy machine would make flaky).
WAIT = 30


# ---- case builders ---------------------------------------------------------------------------
def base() -> tuple[bytes, gc.Layout]:
    return small_valid().build()


def with_header(**attrs) -> bytes:
    g = small_valid()
    for k, v in attrs.items():
        setattr(g, k, v)
    return g.build()[0]


def cut(where) -> bytes:
    """The base file cut at where(layout)."""
    raw, lay = base()
    return raw[:where(lay)]


def patch(where, data: bytes) -> bytes:
    """The base file with `data` written at where(layout)."""
    raw, lay = base()
    at = where(lay)
    return raw[:at] + data + raw[at + len(data):]


def kv_file(*kvs, tensors=True) -> bytes:
    """architecture + the given (key, vtype, value[, elem_type | payload=]) entries + one tensor."""
    g = Gguf()
    g.kv("general.architecture", STRING, "test")
    for kv in kvs:
        if isinstance(kv, dict):
            g.kv(**kv)
        else:
            g.kv(*kv)
    if tensors:
        g.tensor("a", [8], F32)
    return g.build()[0]


def tensor_file(*tensors, alignment: int | None = None) -> bytes:
    """architecture (+ alignment) + the given tensors (dicts of Gguf.tensor arguments)."""
    g = Gguf()
    g.kv("general.architecture", STRING, "test")
    if alignment is not None:
        g.set_alignment(alignment)
    for t in tensors:
        g.tensor(**t)
    return g.build()[0]


def bigger_tensor_count() -> bytes:
    """A tensor count the bytes after the header could hold but the bytes after the
    (large) metadata cannot."""
    g = Gguf()
    g.kv("general.architecture", STRING, "x" * 2000)
    raw, _ = g.build()
    g.n_tensors = (len(raw) - 24) // 33
    return g.build()[0]


def data_section_past_eof() -> bytes:
    """Tensor infos end unaligned and the file stops there: the data section (here for a
    tensor of zero bytes) would start past the end."""
    g = Gguf()
    g.kv("general.architecture", STRING, "test")
    g.tensor("z", [0], F32)
    raw, lay = g.build()
    assert lay.ti_end % 32 != 0
    return raw[:lay.ti_end]


# (id, bytes-producing function, key words the message must contain)
CASES = [
    # -- header
    ("empty-file", lambda: b"", ["offset 0", "file is empty"]),
    ("truncated-magic", lambda: b"GG", ["truncated", "magic"]),
    ("bad-magic", lambda: with_header(magic=b"GGML"), ["offset 0", "bad magic", "not a GGUF file"]),
    ("version-0", lambda: with_header(version=0), ["offset 4", "version 0", "not supported"]),
    ("version-1", lambda: with_header(version=1), ["offset 4", "version 1", "not supported"]),
    ("version-4", lambda: with_header(version=4), ["offset 4", "version 4", "not supported"]),
    ("byte-swapped", lambda: with_header(version=0x03000000), ["offset 4", "byte-swapped", "big-endian"]),
    ("byte-swapped-v2", lambda: with_header(version=0x02000000), ["0x02000000", "byte-swapped"]),
    ("truncated-header-version", lambda: cut(lambda l: 6), ["offset 4", "truncated", "version"]),
    ("truncated-header-tensor-count", lambda: cut(lambda l: 12), ["offset 8", "truncated", "tensor count"]),
    ("truncated-header-kv-count", lambda: cut(lambda l: 20), ["offset 16", "truncated", "metadata count"]),
    ("absurd-kv-count", lambda: with_header(n_kv=2**64 - 1),
     ["offset 16", "metadata count 18446744073709551615", "remaining bytes"]),
    ("absurd-tensor-count", lambda: with_header(n_tensors=2**62),
     ["offset 8", "tensor count 4611686018427387904", "remaining bytes"]),
    ("tensor-count-past-metadata", bigger_tensor_count, ["tensor count", "after the metadata"]),
    # -- metadata keys
    ("truncated-in-key-length", lambda: cut(lambda l: l.kv_start[2] + 3), ["truncated", "metadata key 2"]),
    ("truncated-in-key", lambda: cut(lambda l: l.kv_start[2] + 8 + 4),
     ["metadata key 2", "string length 10", "past the end"]),
    ("key-length-past-end", lambda: kv_file(dict(key="k", vtype=U8, value=1, key_len=2**40)),
     ["metadata key 1", "string length 1099511627776", "past the end"]),
    ("empty-key", lambda: kv_file(("", U8, 1)), ["metadata key 1 is empty"]),
    ("key-with-nul", lambda: kv_file(("a\0b", U8, 1)), ["metadata key 1 contains a NUL byte"]),
    ("duplicate-key", lambda: kv_file(("test.x", U32, 1), ("test.x", U32, 2)),
     ["metadata key 'test.x' appears twice", "entries 1 and 2"]),
    # -- metadata values
    ("truncated-in-value-type", lambda: cut(lambda l: l.kv_type_at[2] + 2), ["truncated", "value type"]),
    ("truncated-in-value", lambda: cut(lambda l: l.kv_value_at[2] + 2), ["truncated", "metadata value", "needs 4 bytes"]),
    ("truncated-in-string-value", lambda: cut(lambda l: l.kv_value_at[1] + 8 + 50),
     ["offset 99", "string value", "string length 87", "past the end", "50 bytes remain"]),
    ("string-length-past-end", lambda: kv_file(dict(key="s", vtype=STRING, payload=gc.gstr("abc", 2**63))),
     ["string value", "string length 9223372036854775808", "past the end"]),
    ("unknown-value-type", lambda: kv_file(dict(key="t", vtype=13, payload=b"\0" * 8)), ["key 't'", "unknown value type 13"]),
    ("unknown-value-type-max", lambda: kv_file(dict(key="t", vtype=0xFFFFFFFF, payload=b"")),
     ["key 't'", "unknown value type 4294967295"]),
    ("bool-value-2", lambda: patch(lambda l: l.kv_value_at[3], b"\x02"),
     ["key 'test.flag'", "bool value 2", "neither 0 nor 1"]),
    # -- arrays
    ("truncated-in-array-header", lambda: cut(lambda l: l.kv_value_at[4] + 6), ["truncated", "array length"]),
    ("truncated-in-array", lambda: cut(lambda l: l.kv_value_at[4] + 12 + 3),
     ["key 'test.list'", "array of 3 i16 values", "past the end"]),
    ("truncated-in-string-array", lambda: cut(lambda l: l.kv_value_at[5] + 12 + 9 + 4),
     ["test.names", "strings cannot fit"]),
    ("truncated-in-array-string", lambda: cut(lambda l: l.kv_value_at[5] + 12 + 9 + 8 + 1),
     ["an array string", "string length 2", "past the end"]),
    ("absurd-array-count", lambda: kv_file(dict(key="arr", vtype=ARRAY, payload=gc.array(U32, [1, 2], count=2**61))),
     ["key 'arr'", "array of 2305843009213693952 u32 values", "past the end"]),
    ("absurd-string-array-count", lambda: kv_file(dict(key="arr", vtype=ARRAY, payload=gc.array(STRING, ["x"], count=2**60))),
     ["key 'arr'", "array of 1152921504606846976 strings cannot fit"]),
    ("array-string-length-past-end",
     lambda: kv_file(dict(key="arr", vtype=ARRAY, payload=gc.u32(STRING) + gc.u64(1) + gc.gstr("x", 2**50))),
     ["an array string", "string length 1125899906842624", "past the end"]),
    ("unknown-array-element-type", lambda: kv_file(dict(key="arr", vtype=ARRAY, payload=gc.u32(13) + gc.u64(0))),
     ["key 'arr'", "unknown array element type 13"]),
    ("array-of-arrays", lambda: kv_file(dict(key="arr", vtype=ARRAY, payload=gc.u32(ARRAY) + gc.u64(1) + gc.array(U8, [1]))),
     ["key 'arr'", "arrays of arrays"]),
    ("bool-array-element-255", lambda: kv_file(("flags", ARRAY, [0, 255, 1], BOOL)),
     ["key 'flags'", "bool element 1 is 255", "neither 0 nor 1"]),
    # -- alignment
    ("alignment-0", lambda: kv_file(("general.alignment", U32, 0), tensors=False),
     ["general.alignment is 0", "non-zero power of two"]),
    ("alignment-48", lambda: kv_file(("general.alignment", U32, 48)), ["general.alignment is 48", "power of two"]),
    ("alignment-u64", lambda: kv_file(("general.alignment", U64, 32)), ["general.alignment has type u64", "must be u32"]),
    ("alignment-string", lambda: kv_file(("general.alignment", STRING, "32")),
     ["general.alignment has type string", "must be u32"]),
    # -- tensor infos
    ("truncated-in-tensor-name-length", lambda: cut(lambda l: l.ti_start[1] + 4), ["truncated", "name of tensor 1"]),
    ("truncated-in-tensor-name", lambda: cut(lambda l: l.ti_start[1] + 8),
     ["name of tensor 1", "string length 1", "past the end"]),
    ("truncated-in-tensor-n-dims", lambda: cut(lambda l: l.ti_ndims_at[1] + 1), ["truncated", "n_dims"]),
    ("truncated-in-tensor-dims", lambda: cut(lambda l: l.ti_dims_at[1] + 12), ["truncated", "tensor dimension"]),
    ("truncated-in-tensor-type", lambda: cut(lambda l: l.ti_type_at[1] + 1), ["truncated", "tensor type"]),
    ("truncated-in-tensor-offset", lambda: cut(lambda l: l.ti_offset_at[2] + 7), ["truncated", "tensor offset"]),
    ("tensor-name-past-end", lambda: tensor_file(dict(name="a", ne=[8], ttype=F32, name_len=2**63)),
     ["name of tensor 0", "past the end"]),
    ("tensor-name-too-long", lambda: tensor_file(dict(name="n" * 64, ne=[8], ttype=F32)),
     ["name of tensor 0", "64 bytes long", "at most 63"]),
    ("empty-tensor-name", lambda: tensor_file(dict(name="", ne=[8], ttype=F32)), ["name of tensor 0 is empty"]),
    ("duplicate-tensor-name", lambda: tensor_file(dict(name="w", ne=[8], ttype=F32), dict(name="w", ne=[8], ttype=F32)),
     ["tensor name 'w' appears twice", "tensors 0 and 1"]),
    ("n-dims-0", lambda: tensor_file(dict(name="w", ne=[8], ttype=F32, n_dims=0)), ["tensor 'w'", "n_dims is 0"]),
    ("n-dims-5", lambda: tensor_file(dict(name="w", ne=[1, 1, 1, 1, 1], ttype=F32)), ["tensor 'w'", "n_dims is 5"]),
    ("dims-product-overflow", lambda: tensor_file(dict(name="w", ne=[2**32, 2**32], ttype=F32)),
     ["tensor 'w'", "element count overflows"]),
    ("dims-product-overflow-4d", lambda: tensor_file(dict(name="w", ne=[2**16, 2**16, 2**16, 2**16], ttype=F32)),
     ["tensor 'w'", "element count overflows"]),
    ("dim-negative", lambda: tensor_file(dict(name="w", ne=[8, 2**63], ttype=F32)),
     ["tensor 'w'", "dimension 1", "negative"]),
    ("byte-size-overflow", lambda: tensor_file(dict(name="w", ne=[2**62], ttype=F32)), ["tensor 'w'", "byte size overflows"]),
    ("unknown-tensor-type-4", lambda: tensor_file(dict(name="w", ne=[32], ttype=4, data=b"")),
     ["tensor 'w'", "unknown tensor type id 4"]),
    ("unknown-tensor-type-1000", lambda: tensor_file(dict(name="w", ne=[32], ttype=1000, data=b"")),
     ["tensor 'w'", "unknown tensor type id 1000"]),
    ("ne0-not-block-multiple-q8_0", lambda: tensor_file(dict(name="w", ne=[40, 2], ttype=Q8_0, data=bytes(68))),
     ["tensor 'w'", "ne[0] = 40", "not a multiple", "Q8_0", "block size 32"]),
    ("ne0-not-block-multiple-q4_k", lambda: tensor_file(dict(name="w", ne=[32], ttype=Q4_K, data=bytes(144))),
     ["tensor 'w'", "ne[0] = 32", "not a multiple", "block size 256"]),
    ("misaligned-offset", lambda: tensor_file(dict(name="a", ne=[8], ttype=F32), dict(name="b", ne=[8], ttype=F32, offset=36)),
     ["tensor 'b'", "data offset 36", "not a multiple of the alignment 32"]),
    ("misaligned-offset-custom-alignment",
     lambda: tensor_file(dict(name="a", ne=[8], ttype=F32), dict(name="b", ne=[8], ttype=F32, offset=32), alignment=64),
     ["tensor 'b'", "data offset 32", "alignment 64"]),
    # -- data
    ("truncated-in-data", lambda: base()[0][:-5], ["tensor 'c'", "runs past the end"]),
    ("truncated-at-data-start", lambda: cut(lambda l: l.data_start), [f"tensor '{gc.LONG_TENSOR_NAME}'", "runs past the end"]),
    ("data-section-past-eof", data_section_past_eof, ["data section would start", "past the end"]),
    ("data-offset-past-eof", lambda: tensor_file(dict(name="w", ne=[8], ttype=F32, offset=2**40)),
     ["tensor 'w'", "offset 1099511627776", "past the end"]),
    ("data-offset-near-u64-max", lambda: tensor_file(dict(name="w", ne=[8], ttype=F32, offset=2**64 - 32)),
     ["tensor 'w'", "past the end"]),
    ("data-size-past-eof", lambda: tensor_file(dict(name="w", ne=[4096, 4096], ttype=F32, data=bytes(64))),
     ["tensor 'w'", "67108864 bytes", "past the end"]),
    ("overlapping-tensors-same-offset",
     lambda: tensor_file(dict(name="a", ne=[8], ttype=F32), dict(name="b", ne=[8], ttype=F32, offset=0)),
     ["overlap"]),
    ("overlapping-tensors-partial",
     lambda: tensor_file(dict(name="a", ne=[16], ttype=F32), dict(name="b", ne=[8], ttype=F32, offset=32)),
     ["tensors 'a'", "'b'", "overlap"]),
]


def write_case(directory: Path, name: str, raw: bytes) -> Path:
    p = directory / f"{name}.gguf"
    p.write_bytes(raw)
    return p


def check_error_run(r, path: Path, needles=()) -> None:
    """The run failed cleanly: status 1, one stderr line about the file, no sanitizer report."""
    assert not r.sanitizer_report, r.describe()
    assert r.rc == 1, r.describe()
    lines = r.stderr_lines
    assert len(lines) == 1, r.describe()
    prefix = f"plumb inspect: {path}: "
    assert lines[0].startswith(prefix), r.describe()
    for w in needles:
        assert w in lines[0], f"missing {w!r} in the message\n" + r.describe()


def test_matrix_is_large_enough():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30


@pytest.mark.parametrize("name,make,needles", CASES, ids=[c[0] for c in CASES])
def test_corrupt_case(plumb_san_bin, run, gguf_dir, name, make, needles):
    path = write_case(gguf_dir, name, make())
    r = run(plumb_san_bin, "inspect", path, timeout=WAIT)
    check_error_run(r, path, needles)


def test_base_file_is_valid(plumb_san_bin, run, gguf_dir):
    """The file every corruption starts from is itself accepted, so each case tests its own fault."""
    raw, lay = base()
    assert lay.size == len(raw) and lay.size < 1024
    path = write_case(gguf_dir, "base", raw)
    r = run(plumb_san_bin, "inspect", path)
    assert r.rc == 0 and not r.sanitizer_report and r.stderr == "", r.describe()
    assert "tensors: 3" in r.stdout and "test.names" in r.stdout, r.describe()


def _run_many(run, binary, paths, extra_args=lambda i: []):
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        return list(ex.map(lambda ip: run(binary, "inspect", ip[1], *extra_args(ip[0]), timeout=30),
                           enumerate(paths)))


def test_truncated_at_every_offset(plumb_san_bin, run, gguf_dir):
    """Every proper prefix of a valid file is rejected with exit 1 and a message."""
    raw, _ = gc.tiny_valid().build()
    assert len(raw) < 400  # one sanitizer run per byte
    ok = run(plumb_san_bin, "inspect", write_case(gguf_dir, "whole", raw))
    assert ok.rc == 0 and ok.stderr == "", ok.describe()
    paths = []
    for n in range(len(raw)):
        p = gguf_dir / f"prefix-{n:04d}.gguf"
        p.write_bytes(raw[:n])
        paths.append(p)
    runs = _run_many(run, plumb_san_bin, paths)
    assert len(runs) == len(raw)
    for p, r in zip(paths, runs):
        check_error_run(r, p)


def test_random_byte_flips(plumb_san_bin, run, gguf_dir):
    """Seeded random mutations of a valid file: exit 0 (with output) or 1 (with one message
    line), and never a sanitizer report. Half the runs use --json."""
    raw, lay = base()
    rng = random.Random(20240611)
    paths = []
    for i in range(300):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            # bias half the mutations towards the header and tensor infos, where they bite
            at = rng.randrange(len(b)) if rng.random() < 0.5 else rng.randrange(lay.data_start)
            kind = rng.random()
            if kind < 0.5:
                b[at] ^= 1 << rng.randrange(8)
            elif kind < 0.8:
                b[at] = rng.choice([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF])
            else:
                b[at] = rng.randrange(256)
        p = gguf_dir / f"flip-{i:03d}.gguf"
        p.write_bytes(bytes(b))
        paths.append(p)
    runs = _run_many(run, plumb_san_bin, paths, lambda i: ["--json"] if i % 2 else [])
    outcomes = {0: 0, 1: 0}
    for p, r in zip(paths, runs):
        assert not r.sanitizer_report, r.describe()
        assert r.rc in (0, 1), r.describe()
        outcomes[r.rc] += 1
        if r.rc == 0:
            assert r.stdout and r.stderr == "", r.describe()
        else:
            check_error_run(r, p)
    # the mutations must exercise both paths, or the test proves little
    assert outcomes[0] > 10 and outcomes[1] > 10, outcomes


def test_one_message_per_failure_mode():
    """Sanity of the matrix itself: cases that should differ do produce different files."""
    blobs = [make() for _, make, _ in CASES]
    assert len(set(blobs)) == len(blobs)


def test_struct_helpers_roundtrip():
    """ggufcraft encodes what it claims to (guards the matrix against builder bugs)."""
    assert gc.gstr("ab") == struct.pack("<Q", 2) + b"ab"
    assert gc.array(I16, [1, -1]) == struct.pack("<IQhh", I16, 2, 1, -1)
    raw, lay = base()
    assert raw[:4] == b"GGUF" and struct.unpack_from("<IQQ", raw, 4) == (3, 3, 6)
    assert struct.unpack_from("<Q", raw, lay.kv_start[0])[0] == len("general.architecture")
    assert raw[lay.kv_value_at[3]] == 1  # test.flag
    assert lay.data_start % 32 == 0
    assert lay.size == lay.data_start + lay.tensor_offsets[2] + 16
