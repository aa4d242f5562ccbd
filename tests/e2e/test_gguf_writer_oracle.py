"""Files written by plumb's GGUF writer (through the shared library) read back by gguf-py, the
format's reference reader, which no one here wrote: every scalar type, arrays of each type and
of strings, non-ASCII and empty strings, the default and a custom alignment, and tensors of
several types and shapes whose bytes and offsets must come back exactly."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFValueType

import plumbffi

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)

SCALARS = [
    ("t.u8", U8, ctypes.c_uint8, 250, GGUFValueType.UINT8),
    ("t.i8", I8, ctypes.c_int8, -100, GGUFValueType.INT8),
    ("t.u16", U16, ctypes.c_uint16, 65000, GGUFValueType.UINT16),
    ("t.i16", I16, ctypes.c_int16, -32000, GGUFValueType.INT16),
    ("t.u32", U32, ctypes.c_uint32, 4000000000, GGUFValueType.UINT32),
    ("t.i32", I32, ctypes.c_int32, -2000000000, GGUFValueType.INT32),
    ("t.f32", F32, ctypes.c_float, 1.5, GGUFValueType.FLOAT32),
    ("t.bool", BOOL, ctypes.c_uint8, 1, GGUFValueType.BOOL),
    ("t.u64", U64, ctypes.c_uint64, 2**63 + 5, GGUFValueType.UINT64),
    ("t.i64", I64, ctypes.c_int64, -(2**62), GGUFValueType.INT64),
    ("t.f64", F64, ctypes.c_double, -2.25e300, GGUFValueType.FLOAT64),
]

ARRAYS = [
    ("a.u8", U8, np.uint8, [0, 1, 255]),
    ("a.i16", I16, np.int16, [-3, 0, 3, 32767]),
    ("a.i32", I32, np.int32, list(range(-5, 6))),
    ("a.f32", F32, np.float32, [0.5, -1.25, 3e38]),
    ("a.u64", U64, np.uint64, [0, 2**64 - 1]),
    ("a.f64", F64, np.float64, [1e-300, -0.0]),
    ("a.bool", BOOL, np.uint8, [1, 0, 1]),
    ("a.empty", I32, np.int32, []),
]

STRINGS = ["", "hello", "caf\u00e9 \u2581 \U0001f600", "a\nb\tc"]

TENSORS = [  # name, plumb type id (ggml's), shape ne (fastest first), numpy source
    ("w.f32", QT.F32, (7, 3), lambda: np.arange(21, dtype=np.float32) - 10),
    ("w.f16", QT.F16, (16,), lambda: np.linspace(-2, 2, 16).astype(np.float16)),
    ("w.q8_0", QT.Q8_0, (64, 2), lambda: np.frombuffer(bytes(range(256))[:68] * 2, dtype=np.uint8).copy()),
    ("w.q4_k", QT.Q4_K, (256, 2), lambda: np.frombuffer(bytes((i * 7) % 251 for i in range(288)), dtype=np.uint8).copy()),
]


def _lib():
    L = plumbffi.lib()
    vp = ctypes.c_void_p
    L.plumb_gguf_writer_create.argtypes = [ctypes.POINTER(vp)]
    L.plumb_gguf_writer_free.argtypes = [vp]
    L.plumb_gguf_writer_set.argtypes = [vp, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    L.plumb_gguf_writer_set_str.argtypes = [vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    L.plumb_gguf_writer_set_arr.argtypes = [vp, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64]
    L.plumb_gguf_writer_set_arr_str.argtypes = [vp, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint64]
    L.plumb_gguf_writer_set_alignment.argtypes = [vp, ctypes.c_uint32]
    L.plumb_gguf_writer_add_tensor.argtypes = [vp, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                               ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p]
    L.plumb_gguf_writer_write.argtypes = [vp, ctypes.c_char_p]
    return L


class Str(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("len", ctypes.c_uint64)]


def write(path, alignment=None):
    L = _lib()
    w = ctypes.c_void_p()
    assert L.plumb_gguf_writer_create(ctypes.byref(w)) == 0
    keep = []  # tensor data is borrowed until the write

    def ok(st):
        assert st == 0, L.plumb_last_error()

    try:
        ok(L.plumb_gguf_writer_set_str(w, b"general.architecture", b"llama", 5))
        if alignment:
            ok(L.plumb_gguf_writer_set_alignment(w, alignment))
        for key, t, ctype, value, _ in SCALARS:
            v = ctype(value)
            ok(L.plumb_gguf_writer_set(w, key.encode(), t, ctypes.byref(v)))
        for key, t, dtype, values in ARRAYS:
            a = np.array(values, dtype=dtype)
            ok(L.plumb_gguf_writer_set_arr(w, key.encode(), t, a.ctypes.data if len(a) else None, len(a)))
        for i, text in enumerate(STRINGS):
            b = text.encode()
            ok(L.plumb_gguf_writer_set_str(w, f"s.{i}".encode(), b, len(b)))
        enc = [t.encode() for t in STRINGS]
        items = (Str * len(enc))(*[Str(b, len(b)) for b in enc])
        ok(L.plumb_gguf_writer_set_arr_str(w, b"a.strings", items, len(enc)))
        for name, qt, ne, make in TENSORS:
            data = make()
            keep.append(data)
            shape = (ctypes.c_int64 * len(ne))(*ne)
            ok(L.plumb_gguf_writer_add_tensor(w, name.encode(), int(qt), len(ne), shape, data.ctypes.data))
        ok(L.plumb_gguf_writer_write(w, str(path).encode()))
    finally:
        L.plumb_gguf_writer_free(w)
    return keep


@pytest.mark.parametrize("alignment", [None, 64, 256])
def test_gguf_py_reads_what_plumb_writes(tmp_path, alignment):
    path = tmp_path / "w.gguf"
    datas = write(path, alignment)
    r = GGUFReader(str(path))
    f = r.fields
    for key, _, _, value, vtype in SCALARS:
        assert f[key].types == [vtype], key
        got = f[key].parts[f[key].data[0]][0]
        assert got == pytest.approx(value, rel=1e-7) if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64) \
            else int(got) == value, (key, got)
    for key, _, dtype, values in ARRAYS:
        assert f[key].types[0] == GGUFValueType.ARRAY, key
        got = [f[key].parts[i][0] for i in f[key].data]
        assert np.array_equal(np.array(got, dtype=dtype), np.array(values, dtype=dtype)), (key, got)
    for i, text in enumerate(STRINGS):
        fld = f[f"s.{i}"]
        assert bytes(fld.parts[fld.data[0]]).decode() == text
    fld = f["a.strings"]
    assert [bytes(fld.parts[i]).decode() for i in fld.data] == STRINGS
    align = alignment or 32
    if alignment:
        assert int(f["general.alignment"].parts[f["general.alignment"].data[0]][0]) == alignment
    assert r.alignment == align
    assert [t.name for t in r.tensors] == [t[0] for t in TENSORS]
    for t, (name, qt, ne, _), data in zip(r.tensors, TENSORS, datas):
        assert t.tensor_type == qt, name
        assert list(t.shape) == list(ne), (name, list(t.shape))
        assert t.data_offset % align == 0, (name, t.data_offset)
        assert bytes(np.asarray(t.data).tobytes()) == data.tobytes(), name
