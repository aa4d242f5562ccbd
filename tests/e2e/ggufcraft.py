"""ggufcraft — builds raw GGUF bytes field by field, for tests that need valid files and
precisely corrupted ones.

Nothing here checks what it writes: every count, length, type id, n_dims, dimension and
offset can be given explicitly (and so wrongly). Values left as None are filled in the way
a correct writer would. The builder also records where each field starts (Layout), so a
test can cut or patch the file at an exact place.

    g = Gguf()
    g.kv("general.architecture", STRING, "test")
    g.tensor("a", [8], F32, data=b"\\0" * 32)
    raw, lay = g.build()          # bytes and Layout
    raw[: lay.ti_start[0] + 5]    # truncated inside the first tensor info
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

# ---- metadata value types (GGUF ids) -------------------------------------------------------
U8, I8, U16, I16, U32, I32, F32_V, BOOL, STRING, ARRAY, U64, I64, F64_V = range(13)
VALUE_TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                    "u64", "i64", "f64"]
_SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32_V: "<f",
               BOOL: "<B", U64: "<Q", I64: "<q", F64_V: "<d"}

# ---- tensor types (GGML ids): id -> (name, elements per block, bytes per block) -------------
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, BF16 = 10, 11, 12, 13, 14, 15, 30
TENSOR_TYPES = {
    F32: ("F32", 1, 4), F16: ("F16", 1, 2), Q4_0: ("Q4_0", 32, 18), Q4_1: ("Q4_1", 32, 20),
    Q5_0: ("Q5_0", 32, 22), Q5_1: ("Q5_1", 32, 24), Q8_0: ("Q8_0", 32, 34),
    Q2_K: ("Q2_K", 256, 84), Q3_K: ("Q3_K", 256, 110), Q4_K: ("Q4_K", 256, 144),
    Q5_K: ("Q5_K", 256, 176), Q6_K: ("Q6_K", 256, 210), Q8_K: ("Q8_K", 256, 292),
    BF16: ("BF16", 1, 2),
}

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32


# ---- field encoders ------------------------------------------------------------------------
def u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def gstr(s: bytes | str, length: int | None = None) -> bytes:
    """A GGUF string: u64 length (the real one unless `length` is given) and the bytes."""
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return u64(len(b) if length is None else length) + b


def scalar(vtype: int, v) -> bytes:
    """The encoding of one scalar value of type vtype (no type id in front)."""
    if vtype == STRING:
        return gstr(v)
    if vtype == BOOL and isinstance(v, bool):
        v = int(v)
    return struct.pack(_SCALAR_FMT[vtype], v)


def array(elem_type: int, items, count: int | None = None) -> bytes:
    """An array value: u32 element type, u64 count (len(items) unless given), elements."""
    n = len(items) if count is None else count
    return u32(elem_type) + u64(n) + b"".join(scalar(elem_type, x) for x in items)


def row_bytes(ttype: int, ne: list[int]) -> int:
    """Bytes a tensor of type ttype and shape ne occupies (ne[0] a multiple of the block)."""
    _, bs, bb = TENSOR_TYPES[ttype]
    n = 1
    for d in ne:
        n *= d
    return n // bs * bb


def pad_to(n: int, align: int) -> int:
    return (n + align - 1) // align * align


# ---- the builder ---------------------------------------------------------------------------
@dataclass
class KV:
    key: bytes
    vtype: int
    payload: bytes  # the encoded value, after the u32 type
    key_len: int | None = None  # override of the key's length field


@dataclass
class TensorInfo:
    name: bytes
    ne: list[int]
    ttype: int
    offset: int | None = None  # None: next aligned offset
    n_dims: int | None = None  # None: len(ne)
    name_len: int | None = None
    data: bytes | None = None  # None: zeros of the right size (when the type is known)


@dataclass
class Layout:
    """Absolute offsets of the parts of a built file."""
    kv_start: list[int] = field(default_factory=list)        # each entry's key length field
    kv_type_at: list[int] = field(default_factory=list)      # each entry's u32 value type
    kv_value_at: list[int] = field(default_factory=list)     # each entry's value
    kv_end: int = 0
    ti_start: list[int] = field(default_factory=list)        # each tensor info's name length
    ti_ndims_at: list[int] = field(default_factory=list)
    ti_dims_at: list[int] = field(default_factory=list)
    ti_type_at: list[int] = field(default_factory=list)
    ti_offset_at: list[int] = field(default_factory=list)
    ti_end: int = 0
    data_start: int = 0
    tensor_offsets: list[int] = field(default_factory=list)  # relative to data_start
    tensor_nbytes: list[int] = field(default_factory=list)
    size: int = 0


class Gguf:
    """A GGUF file under construction. Header fields may be overridden as attributes."""

    def __init__(self, version: int = 3, magic: bytes = MAGIC):
        self.magic = magic
        self.version = version
        self.n_tensors: int | None = None  # None: the real count
        self.n_kv: int | None = None
        self.alignment = DEFAULT_ALIGNMENT  # used for padding and automatic offsets
        self.kvs: list[KV] = []
        self.tensors: list[TensorInfo] = []
        self.pad_data_end = False  # pad the file after the last tensor's data
        self.trailing = b""        # raw bytes appended at the very end

    # -- metadata
    def kv(self, key: bytes | str, vtype: int, value=None, elem_type: int | None = None,
           payload: bytes | None = None, key_len: int | None = None) -> "Gguf":
        """Adds an entry. For ARRAY give elem_type and a list; `payload` replaces the encoded
        value entirely (for raw, wrong encodings)."""
        k = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if payload is None:
            payload = array(elem_type, value) if vtype == ARRAY else scalar(vtype, value)
        self.kvs.append(KV(k, vtype, payload, key_len))
        return self

    def set_alignment(self, a: int) -> "Gguf":
        self.alignment = a
        return self.kv("general.alignment", U32, a)

    # -- tensors
    def tensor(self, name: bytes | str, ne: list[int], ttype: int, data: bytes | None = None,
               offset: int | None = None, n_dims: int | None = None,
               name_len: int | None = None) -> "Gguf":
        n = name.encode("utf-8") if isinstance(name, str) else bytes(name)
        self.tensors.append(TensorInfo(n, list(ne), ttype, offset, n_dims, name_len, data))
        return self

    # -- output
    def build(self) -> tuple[bytes, Layout]:
        lay = Layout()
        out = bytearray()
        out += self.magic
        out += u32(self.version)
        out += u64(len(self.tensors) if self.n_tensors is None else self.n_tensors)
        out += u64(len(self.kvs) if self.n_kv is None else self.n_kv)
        for kv in self.kvs:
            lay.kv_start.append(len(out))
            out += gstr(kv.key, kv.key_len)
            lay.kv_type_at.append(len(out))
            out += u32(kv.vtype)
            lay.kv_value_at.append(len(out))
            out += kv.payload
        lay.kv_end = len(out)

        align = self.alignment if self.alignment > 0 else 1
        blobs = []
        next_off = 0
        for t in self.tensors:
            size = 0
            if t.ttype in TENSOR_TYPES and t.ne and t.ne[0] % TENSOR_TYPES[t.ttype][1] == 0:
                size = row_bytes(t.ttype, t.ne)
            data = t.data if t.data is not None else bytes(size if size < (1 << 20) else 0)
            off = next_off if t.offset is None else t.offset
            next_off = pad_to(max(next_off, off + len(data)), align)
            blobs.append((off, data))
            lay.tensor_offsets.append(off)
            lay.tensor_nbytes.append(size)
            lay.ti_start.append(len(out))
            out += gstr(t.name, t.name_len)
            lay.ti_ndims_at.append(len(out))
            out += u32(len(t.ne) if t.n_dims is None else t.n_dims)
            lay.ti_dims_at.append(len(out))
            for d in t.ne:
                out += u64(d)
            lay.ti_type_at.append(len(out))
            out += u32(t.ttype)
            lay.ti_offset_at.append(len(out))
            out += u64(off)
        lay.ti_end = len(out)

        if self.tensors:
            out += bytes(pad_to(len(out), align) - len(out))
            lay.data_start = len(out)
            data = bytearray()
            for off, blob in blobs:
                if off + len(blob) > (1 << 20):
                    continue  # an absurd offset: the data is simply not there
                if len(data) < off + len(blob):
                    data += bytes(off + len(blob) - len(data))
                data[off:off + len(blob)] = blob
            if self.pad_data_end:
                data += bytes(pad_to(len(data), align) - len(data))
            out += data
        else:
            lay.data_start = len(out)
        out += self.trailing
        lay.size = len(out)
        return bytes(out), lay


LONG_TENSOR_NAME = "blk.0.first_tensor_with_a_long_name.weight"


def small_valid() -> Gguf:
    """A small valid file used as the base of most corruptions: metadata entries of several
    types and three tensors (F32, Q8_0, F16); the last tensor ends the file. Entry 1 and
    tensor 0 are long on purpose: the reader first rejects counts the remaining bytes cannot
    hold, and the padding lets a cut inside a later entry reach the entry's own check."""
    g = Gguf()
    g.kv("general.architecture", STRING, "test")
    g.kv("general.description", STRING, "a small GGUF file written field by field by ggufcraft "
         "for the end-to-end tests of plumb")
    g.kv("test.count", U32, 7)
    g.kv("test.flag", BOOL, True)
    g.kv("test.list", ARRAY, [1, 2, 3], elem_type=I16)
    g.kv("test.names", ARRAY, ["a", "bc"], elem_type=STRING)
    g.tensor(LONG_TENSOR_NAME, [8, 1, 1, 1], F32, data=struct.pack("<8f", *range(8)))
    g.tensor("b", [32, 2], Q8_0)
    g.tensor("c", [4, 2], F16)
    return g


def tiny_valid() -> Gguf:
    """The smallest useful valid file (about 300 bytes): one entry of each kind (string, u32,
    bool, numeric array, string array), alignment 8, and an F32 and a Q4_0 tensor; the last
    tensor ends the file, so every proper prefix of it is invalid."""
    g = Gguf()
    g.kv("general.architecture", STRING, "t")
    g.set_alignment(8)
    g.kv("f", BOOL, False)
    g.kv("l", ARRAY, [1, -2], elem_type=I16)
    g.kv("s", ARRAY, ["a"], elem_type=STRING)
    g.tensor("a", [4], F32, data=struct.pack("<4f", 1, 2, 3, 4))
    g.tensor("q", [32], Q4_0, data=bytes(range(18)))
    return g
