"""test_quant_oracle.py — checks libplumb's tensor type layer against gguf-py (gguf.quants),
the numpy implementation of the GGUF tensor types.

* plumb_dequantize_row must be bit-identical to gguf.quants.dequantize for every type gguf-py
  has (F32, F16, BF16, Q4_0 .. Q8_0, Q2_K .. Q6_K) on random block bytes whose f16 scale
  fields are overwritten with a mix of normal, extreme, subnormal, zero and negative values;
  Q8_K (not in gguf-py) against the numpy reference d * qs in float32.
* plumb_quantize_row of the legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and BF16 / F16 must
  give the same bytes as gguf.quants.quantize (gguf-py mirrors the classic reference
  quantizers, and so does plumb).
* The K quantizers (gguf-py has none) are checked through gguf-py's dequantizer: the bytes
  they write decode identically in both, every element is within the per-sub-block error
  bound derived in tests/unit/test_quant.c, and the squared error is no worse than that of
  the plain round-to-nearest encoding's bound.

The library is PLUMB_LIB, default build/libplumb.so under the repository root (the
plumb_lib fixture of conftest.py).
"""

import ctypes

import numpy as np
import pytest

from gguf import quants  # the oracle: a pinned test requirement (tests/requirements.txt)
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

# gguf-py's numpy code warns on the infinite/NaN scales and huge values these tests feed it
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

PLUMB_OK = 0
PLUMB_E_INVALID_ARG = -1
PLUMB_E_UNSUPPORTED = -5
PLUMB_E_RANGE = -8

# name: (id, block size, block bytes, offsets of the f16 scale fields)
TYPES = {
    "F32": (0, 1, 4, ()),
    "F16": (1, 1, 2, ()),
    "BF16": (30, 1, 2, ()),
    "Q4_0": (2, 32, 18, (0,)),
    "Q4_1": (3, 32, 20, (0, 2)),
    "Q5_0": (6, 32, 22, (0,)),
    "Q5_1": (7, 32, 24, (0, 2)),
    "Q8_0": (8, 32, 34, (0,)),
    "Q2_K": (10, 256, 84, (80, 82)),
    "Q3_K": (11, 256, 110, (108,)),
    "Q4_K": (12, 256, 144, (0, 2)),
    "Q5_K": (13, 256, 176, (0, 2)),
    "Q6_K": (14, 256, 210, (208,)),
    "Q8_K": (15, 256, 292, ()),
}
BLOCK_TYPES = [n for n, t in TYPES.items() if t[1] > 1 and n != "Q8_K"]
LEGACY_QUANT = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
K_QUANT = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]

# f16 scale patterns besides random finite ones: the extremes, subnormals, zeros, units.
SPECIAL_F16 = np.array(
    [0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x8001, 0x83FF, 0x0000, 0x8000, 0x0400, 0x8400,
     0x3C00, 0xBC00, 0x0200, 0x7800],
    dtype=np.uint16,
)
NONFINITE_F16 = np.array([0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7FFF], dtype=np.uint16)


@pytest.fixture(scope="module")
def lib(plumb_lib):
    """libplumb through ctypes; plumb_lib (conftest.py) resolves PLUMB_LIB, default
    build/libplumb.so under the repository root, and fails when it is missing."""
    L = ctypes.CDLL(str(plumb_lib))
    L.plumb_dequantize_row.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    L.plumb_dequantize_row.restype = ctypes.c_int
    L.plumb_quantize_row.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    L.plumb_quantize_row.restype = ctypes.c_int
    L.plumb_type_row_bytes.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.POINTER(ctypes.c_uint64)]
    L.plumb_type_row_bytes.restype = ctypes.c_int
    L.plumb_last_error.restype = ctypes.c_char_p
    return L


def plumb_dequant(lib, name, raw):
    tid, bs, bb, _ = TYPES[name]
    raw = np.ascontiguousarray(raw, dtype=np.uint8).ravel()
    assert raw.size % bb == 0
    n = raw.size // bb * bs
    out = np.empty(n, dtype=np.float32)
    st = lib.plumb_dequantize_row(tid, raw.ctypes.data, out.ctypes.data, n)
    assert st == PLUMB_OK, lib.plumb_last_error()
    return out


def plumb_quant(lib, name, x):
    tid, bs, bb, _ = TYPES[name]
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    assert x.size % bs == 0
    out = np.empty(x.size // bs * bb, dtype=np.uint8)
    st = lib.plumb_quantize_row(tid, x.ctypes.data, out.ctypes.data, x.size)
    assert st == PLUMB_OK, lib.plumb_last_error()
    return out


def gguf_dequant(name, raw):
    qt = GGMLQuantizationType[name]
    bb = TYPES[name][2]
    return np.asarray(quants.dequantize(raw.reshape(-1, bb), qt), dtype=np.float32).ravel()


def assert_bits_equal(got, want, what):
    """Bit-identical float32 arrays; two NaNs count as equal whatever their payloads."""
    assert got.shape == want.shape, what
    g, w = got.view(np.uint32), want.view(np.uint32)
    both_nan = np.isnan(got) & np.isnan(want)
    bad = (g != w) & ~both_nan
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        pytest.fail(f"{what}: {int(bad.sum())} of {got.size} differ; first at {i}: "
                    f"plumb {got[i]!r} ({g[i]:#010x}) vs oracle {want[i]!r} ({w[i]:#010x})")


def random_finite_f16(rng, n):
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    nonfinite = (h & 0x7C00) == 0x7C00
    h[nonfinite] &= np.uint16(0xBFFF)  # clear the top exponent bit: finite
    return h


def scale_mix(rng, n, allow_nonfinite=False):
    """f16 bits: 1/2 random finite, 1/4 special values, 1/4 'typical' small scales."""
    kind = rng.integers(0, 4, size=n)
    h = random_finite_f16(rng, n)
    sp = SPECIAL_F16[rng.integers(0, SPECIAL_F16.size, size=n)]
    typical = (rng.standard_normal(n).astype(np.float32) * np.float32(0.01)).astype(np.float16).view(np.uint16)
    h = np.where(kind == 1, sp, np.where(kind == 2, typical, h))
    if allow_nonfinite:
        nf = NONFINITE_F16[rng.integers(0, NONFINITE_F16.size, size=n)]
        h = np.where(rng.random(n) < 0.2, nf, h)
    return h.astype(np.uint16)


def random_blocks(rng, name, n_blocks, allow_nonfinite=False):
    _, _, bb, offs = TYPES[name]
    raw = rng.integers(0, 256, size=(n_blocks, bb), dtype=np.uint8)
    for off in offs:
        h = scale_mix(rng, n_blocks, allow_nonfinite)
        raw[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return raw


# ---------------------------------------------------------------------------------------------
# Dequantization: bit-exact against gguf-py
# ---------------------------------------------------------------------------------------------

N_BLOCKS = {32: 40000, 256: 8000}


@pytest.mark.parametrize("name", BLOCK_TYPES)
def test_dequant_bit_exact(lib, name):
    rng = np.random.default_rng(1000 + TYPES[name][0])
    n_blocks = N_BLOCKS[TYPES[name][1]]
    raw = random_blocks(rng, name, n_blocks)
    got = plumb_dequant(lib, name, raw)
    want = gguf_dequant(name, raw)
    assert not np.isnan(want).any()
    assert_bits_equal(got, want, f"{name} ({n_blocks} blocks)")


@pytest.mark.parametrize("name", BLOCK_TYPES)
def test_dequant_nonfinite_scales(lib, name):
    """Infinite and NaN scales: the same infinities, and NaN exactly where gguf-py has NaN."""
    rng = np.random.default_rng(2000 + TYPES[name][0])
    raw = random_blocks(rng, name, 2000, allow_nonfinite=True)
    got = plumb_dequant(lib, name, raw)
    want = gguf_dequant(name, raw)
    assert np.isnan(want).any() and np.isinf(want).any()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert_bits_equal(got, want, f"{name} with non-finite scales")


def test_dequant_q8_k(lib):
    rng = np.random.default_rng(15)
    n_blocks = 8000
    raw = rng.integers(0, 256, size=(n_blocks, 292), dtype=np.uint8)
    # f32 scales: typical, huge, subnormal, zero, negative
    d = np.concatenate([
        rng.standard_normal(n_blocks // 2).astype(np.float32) * np.float32(0.01),
        rng.choice(np.array([3.0e38, -3.0e38, 1e-45, -1e-45, 1e-40, 0.0, -0.0, 1.0, -1.0],
                            dtype=np.float32), n_blocks - n_blocks // 2),
    ])
    raw[:, 0:4] = d.astype(np.float32).view(np.uint8).reshape(n_blocks, 4)
    got = plumb_dequant(lib, "Q8_K", raw)
    want = (d.reshape(-1, 1) * raw[:, 4:260].view(np.int8).astype(np.float32)).ravel()
    assert want.dtype == np.float32
    assert_bits_equal(got, want, "Q8_K")


def test_dequant_f32_f16_bf16(lib):
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, size=4 << 20, dtype=np.uint8)
    got = plumb_dequant(lib, "F32", raw)
    assert np.array_equal(got.view(np.uint32), raw.view(np.uint32))  # exact, NaNs included

    every = np.arange(1 << 16, dtype=np.uint16)
    got = plumb_dequant(lib, "F16", every.view(np.uint8))
    want = gguf_dequant("F16", every.view(np.uint8))
    # numpy widens half NaNs keeping the payload bit for bit; so does plumb
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))

    got = plumb_dequant(lib, "BF16", every.view(np.uint8))
    want = gguf_dequant("BF16", every.view(np.uint8))
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# ---------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------

def make_data(rng, n_blocks, bs):
    """Blocks of many shapes (each block one kind): gaussian, uniform, heavy-tailed, one
    outlier, constant, zero, all-negative, all-positive, tiny, large (within f16 range)."""
    kinds = 10
    x = np.empty((n_blocks, bs), dtype=np.float64)
    k = np.arange(n_blocks) % kinds
    scale = 10.0 ** rng.uniform(-3, 1, size=(n_blocks, 1))
    g = rng.standard_normal((n_blocks, bs))
    x[:] = g * scale
    x[k == 1] = (rng.uniform(-1, 1, (n_blocks, bs)) * scale)[k == 1]
    x[k == 2] = (rng.standard_t(2, (n_blocks, bs)) * scale)[k == 2]
    out = g * scale * 0.01
    out[:, 0] = rng.choice([-1, 1], n_blocks) * scale[:, 0] * 50
    x[k == 3] = rng.permuted(out, axis=1)[k == 3]
    x[k == 4] = np.broadcast_to(rng.uniform(-5, 5, (n_blocks, 1)), (n_blocks, bs))[k == 4]
    x[k == 5] = 0.0
    x[k == 6] = -np.abs(g * scale)[k == 6] - 0.5 * scale[k == 6]
    x[k == 7] = np.abs(g * scale)[k == 7] + 0.5 * scale[k == 7]
    x[k == 8] = (g * 1e-3)[k == 8]  # small values, scales still normal f16
    x[k == 9] = np.clip(g * 20000, -65000, 65000)[k == 9]
    return x.astype(np.float32)


# Half-integer grids whose scale comes out as exactly 1, so that x / d lands exactly on the
# rounding ties: (extreme that fixes d = 1, low, high) per type.
TIE_GRID = {"Q8_0": (127, -127, 127), "Q4_0": (-8, -8, 8), "Q5_0": (-16, -16, 16),
            "Q4_1": (15, 0, 15), "Q5_1": (31, 0, 31)}


def tie_data(rng, name, n_blocks):
    ext, lo, hi = TIE_GRID[name]
    x = rng.integers(2 * lo, 2 * hi + 1, size=(n_blocks, 32)) / 2
    x[:, 0] = ext
    if lo == 0:
        x[:, 1] = 0  # min 0, max ext: d = 1
    return x.astype(np.float32)


@pytest.mark.parametrize("name", LEGACY_QUANT)
def test_quantize_legacy_matches_gguf(lib, name):
    rng = np.random.default_rng(3000 + TYPES[name][0])
    x = np.concatenate([make_data(rng, 18000, 32), tie_data(rng, name, 2000)])
    got = plumb_quant(lib, name, x)
    want = np.asarray(quants.quantize(x, GGMLQuantizationType[name]), dtype=np.uint8).ravel()
    bb = TYPES[name][2]
    bad = np.flatnonzero((got.reshape(-1, bb) != want.reshape(-1, bb)).any(axis=1))
    assert bad.size == 0, f"{name}: {bad.size} of 20000 blocks differ, first block {bad[0]}"
    # and both decode the same
    assert_bits_equal(plumb_dequant(lib, name, got), gguf_dequant(name, want), name)


def test_quantize_bf16_f16_match_numpy(lib):
    rng = np.random.default_rng(30)
    bits = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    bits[:8] = [0x7F800001, 0xFF800001, 0x7FC00000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x00000001, 0x80000000]
    x = bits.view(np.float32)
    got = plumb_quant(lib, "BF16", x).view(np.uint16)
    want = np.asarray(quants.quantize(x, GGMLQuantizationType.BF16)).view(np.uint16).ravel()
    assert np.array_equal(got, want)  # NaNs included: both force them quiet the same way

    got = plumb_quant(lib, "F16", x).view(np.uint16)
    want = x.astype(np.float16).view(np.uint16)
    gnan = (got & 0x7C00) == 0x7C00
    gnan &= (got & 0x03FF) != 0
    wnan = np.isnan(x)
    assert np.array_equal(gnan, wnan)
    # numpy keeps signaling NaNs signaling; plumb makes them quiet: compare the rest exactly
    assert np.array_equal(got[~wnan], want[~wnan])
    # plumb's NaN: quiet bit set, sign and top payload bits kept
    exp_nan = ((bits[wnan] >> 16) & 0x8000) | 0x7E00 | ((bits[wnan] >> 13) & 0x3FF)
    assert np.array_equal(got[wnan], exp_nan.astype(np.uint16))


def q8_0_bound(x):
    """Derived in tests/unit/test_quant.c: d = amax/127, |err| <= d/2 + 127 delta(d) + slack,
    delta(d) = max(d 2^-11, 2^-25) being the f16 rounding of d."""
    amax = np.abs(x.astype(np.float64)).max(axis=1, keepdims=True)
    d = amax / 127
    delta = np.maximum(d * 2.0**-11, 2.0**-25)
    return d * (0.5 + 2.0**-16) + 127 * delta + amax * 2.0**-20


def test_quantize_q8_0_error_bound(lib):
    rng = np.random.default_rng(8)
    x = make_data(rng, 20000, 32)
    y = plumb_dequant(lib, "Q8_0", plumb_quant(lib, "Q8_0", x)).reshape(x.shape)
    err = np.abs(y.astype(np.float64) - x)
    assert (err <= q8_0_bound(x)).all()


def kmin_bound(x, nsub, L, scmax):
    """Per sub-block bound of the scale+min K types (derivation in tests/unit/test_quant.c)."""
    xs = x.astype(np.float64).reshape(x.shape[0], nsub, -1)
    lo = np.minimum(xs.min(axis=2), 0.0)
    rng_ = xs.max(axis=2) - lo
    dA = rng_.max(axis=1, keepdims=True) / (L * scmax)
    dminA = (-lo).max(axis=1, keepdims=True) / scmax
    amax = np.abs(xs).max(axis=(1, 2))[:, None]
    B = (rng_ / (2 * L) + (L / 2 + 0.25) * dA + dminA / 2) * (1 + 1 / 256) \
        + (L + 1) * scmax * 2.0**-24 + amax * 2.0**-20
    return B[:, :, None]


def ksym_bound(x, nsub, qn, qp, scn):
    """Per sub-block bound of the symmetric K types (derivation in tests/unit/test_quant.c)."""
    xs = x.astype(np.float64).reshape(x.shape[0], nsub, -1)
    am = np.abs(xs).max(axis=2)
    dA = am.max(axis=1, keepdims=True) / (qn * scn)
    amax = am.max(axis=1, keepdims=True)
    B = (am / qn + qn * dA) * (1 + 1 / 256) + (qn + qp + 2) * scn * 2.0**-24 + amax * 2.0**-20
    return B[:, :, None]


K_BOUNDS = {
    "Q2_K": lambda x: (kmin_bound(x, 16, 3, 15), 16),
    "Q4_K": lambda x: (kmin_bound(x, 8, 15, 63), 8),
    "Q5_K": lambda x: (kmin_bound(x, 8, 31, 63), 8),
    "Q3_K": lambda x: (ksym_bound(x, 16, 4, 3, 32), 16),
    "Q6_K": lambda x: (ksym_bound(x, 16, 32, 31, 128), 16),
}

# Root-mean-square error relative to the standard deviation on gaussian blocks. plumb's
# quantizer measures about 0.261 / 0.144 / 0.0697 / 0.0341 / 0.0165 for Q2_K..Q6_K; the plain
# round-to-nearest encoding alone (its first candidate) gives 0.281 / 0.149 / 0.0722 /
# 0.0350 / 0.0181, and a continuous (unquantized-scale) exhaustive search about 0.252 / - /
# 0.0683 / 0.0328 / -. The ceilings sit between the first two columns, so a quantizer that
# silently falls back to the plain encoding fails here.
K_GAUSS_RMSE = {"Q2_K": 0.270, "Q3_K": 0.1465, "Q4_K": 0.0710, "Q5_K": 0.0346, "Q6_K": 0.0173}


@pytest.mark.parametrize("name", K_QUANT)
def test_quantize_k(lib, name):
    rng = np.random.default_rng(4000 + TYPES[name][0])
    x = make_data(rng, 3000, 256)
    q = plumb_quant(lib, name, x)
    y = plumb_dequant(lib, name, q)
    # the bytes plumb writes decode the same way in gguf-py
    assert_bits_equal(y, gguf_dequant(name, q), f"{name} quantized blocks")
    assert np.isfinite(y).all()
    B, nsub = K_BOUNDS[name](x)
    err = np.abs(y.reshape(x.shape).astype(np.float64) - x).reshape(x.shape[0], nsub, -1)
    over = err > B
    assert not over.any(), f"{name}: {int(over.sum())} elements over the bound, worst ratio {np.max(err / B)}"

    g = rng.standard_normal((2000, 256)).astype(np.float32)
    yg = plumb_dequant(lib, name, plumb_quant(lib, name, g)).reshape(g.shape)
    rel = np.sqrt(np.mean((yg - g) ** 2)) / np.std(g)
    assert rel < K_GAUSS_RMSE[name], f"{name}: relative rmse {rel}"


def test_quantize_q8_k(lib):
    rng = np.random.default_rng(150)
    x = make_data(rng, 3000, 256)
    q = plumb_quant(lib, "Q8_K", x).reshape(-1, 292)
    d = q[:, 0:4].copy().view(np.float32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    assert np.array_equal(d, amax / np.float32(127))
    qs = q[:, 4:260].view(np.int8).astype(np.int32)
    bsums = q[:, 260:292].copy().view(np.int16).astype(np.int32)
    assert np.array_equal(bsums, qs.reshape(-1, 16, 16).sum(axis=2))
    y = plumb_dequant(lib, "Q8_K", q).reshape(x.shape)
    err = np.abs(y.astype(np.float64) - x)
    # q = round(x * 127 / amax): |err| <= d/2 plus float rounding
    assert (err <= d.astype(np.float64) * (0.5 + 2.0**-16) + amax * 2.0**-22).all()


# ---------------------------------------------------------------------------------------------
# Traits and argument checks through the C ABI
# ---------------------------------------------------------------------------------------------

def test_traits_match_gguf(lib):
    lib.plumb_type_block_size.argtypes = [ctypes.c_int]
    lib.plumb_type_block_size.restype = ctypes.c_int64
    lib.plumb_type_block_bytes.argtypes = [ctypes.c_int]
    lib.plumb_type_block_bytes.restype = ctypes.c_size_t
    lib.plumb_type_name.argtypes = [ctypes.c_int]
    lib.plumb_type_name.restype = ctypes.c_char_p
    for name, (tid, bs, bb, _) in TYPES.items():
        qt = GGMLQuantizationType[name]
        assert int(qt) == tid
        assert GGML_QUANT_SIZES[qt] == (bs, bb)
        assert lib.plumb_type_block_size(tid) == bs
        assert lib.plumb_type_block_bytes(tid) == bb
        assert lib.plumb_type_name(tid) == name.encode()


# ---------------------------------------------------------------------------------------------
# Argument checks through the C ABI
# ---------------------------------------------------------------------------------------------

def test_argument_errors(lib):
    out = ctypes.c_uint64(0)
    assert lib.plumb_type_row_bytes(12, 512, ctypes.byref(out)) == PLUMB_OK and out.value == 288
    assert lib.plumb_type_row_bytes(4, 32, ctypes.byref(out)) == PLUMB_E_UNSUPPORTED
    assert lib.plumb_type_row_bytes(12, 100, ctypes.byref(out)) == PLUMB_E_RANGE
    assert lib.plumb_type_row_bytes(0, -4, ctypes.byref(out)) == PLUMB_E_RANGE
    assert lib.plumb_type_row_bytes(0, (1 << 63) - 1, ctypes.byref(out)) == PLUMB_E_RANGE
    buf = np.zeros(1024, dtype=np.float32)
    assert lib.plumb_dequantize_row(8, None, buf.ctypes.data, 32) == PLUMB_E_INVALID_ARG
    assert lib.plumb_quantize_row(8, buf.ctypes.data, None, 32) == PLUMB_E_INVALID_ARG
    assert lib.plumb_quantize_row(99, buf.ctypes.data, buf.ctypes.data, 32) == PLUMB_E_UNSUPPORTED
    assert lib.plumb_dequantize_row(8, buf.ctypes.data, buf.ctypes.data, 33) == PLUMB_E_RANGE
    assert b"block size" in lib.plumb_last_error()
