"""ctypes bindings to libplumb.so for tests that call the library directly: load a model,
decode token sequences, read logits."""
import ctypes
import os

import numpy as np

_lib = None


def lib():
    global _lib
    if _lib is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.environ.get("PLUMB_LIB", os.path.join(root, "build", "libplumb.so"))
        if not os.path.isabs(path):
            path = os.path.join(root, path)
        L = ctypes.CDLL(path)
        L.plumb_model_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        L.plumb_model_load_params.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        L.plumb_model_device.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32)]
        L.plumb_model_device.restype = ctypes.c_char_p
        L.plumb_device_count.restype = ctypes.c_int
        L.plumb_device_get.argtypes = [ctypes.c_int, ctypes.c_void_p]
        L.plumb_model_free.argtypes = [ctypes.c_void_p]
        L.plumb_context_create.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        L.plumb_context_free.argtypes = [ctypes.c_void_p]
        L.plumb_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        L.plumb_get_logits.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        L.plumb_get_logits.restype = ctypes.POINTER(ctypes.c_float)
        L.plumb_last_error.restype = ctypes.c_char_p
        L.plumb_seq_truncate.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32]
        _lib = L
    return _lib


class ContextParams(ctypes.Structure):
    _fields_ = [("n_ctx", ctypes.c_int32), ("n_batch", ctypes.c_int32), ("n_threads", ctypes.c_int32),
                ("n_seq", ctypes.c_int32)]


class ModelParams(ctypes.Structure):
    _fields_ = [("use_mmap", ctypes.c_bool), ("device", ctypes.c_char_p), ("n_offload", ctypes.c_int32),
                ("remote_key_file", ctypes.c_char_p)]


class DeviceDesc(ctypes.Structure):
    _fields_ = [("spec", ctypes.c_char * 32), ("name", ctypes.c_char * 128), ("driver", ctypes.c_char * 128),
                ("memory", ctypes.c_uint64)]


def devices():
    """[(spec, name, driver, memory)] of every device, the CPU first."""
    L, out = lib(), []
    for i in range(L.plumb_device_count()):
        d = DeviceDesc()
        if L.plumb_device_get(i, ctypes.byref(d)):
            raise PlumbError(-1)
        out.append((d.spec.decode(), d.name.decode(), d.driver.decode(), d.memory))
    return out


class Batch(ctypes.Structure):
    _fields_ = [("n_tokens", ctypes.c_int32), ("tokens", ctypes.POINTER(ctypes.c_int32)),
                ("pos", ctypes.POINTER(ctypes.c_int32)), ("seq", ctypes.POINTER(ctypes.c_int32)),
                ("logits", ctypes.POINTER(ctypes.c_bool))]


class PlumbError(RuntimeError):
    def __init__(self, status):
        super().__init__("status %d: %s" % (status, lib().plumb_last_error().decode(errors="replace")))
        self.status = status


class Model:
    def __init__(self, path, n_ctx=256, n_batch=512, n_threads=2, n_seq=1, device=None, n_offload=-1):
        """device: None (the CPU) or "opencl[:N]", with n_offload layers there (-1: all)."""
        L = lib()
        self.m = ctypes.c_void_p()
        mp = ModelParams(False, device.encode() if device else None, n_offload, None)
        st = L.plumb_model_load_params(str(path).encode(), ctypes.byref(mp), ctypes.byref(self.m))
        if st:
            raise PlumbError(st)
        self.c = ctypes.c_void_p()
        p = ContextParams(n_ctx, n_batch, n_threads, n_seq)
        st = L.plumb_context_create(self.m, ctypes.byref(p), ctypes.byref(self.c))
        if st:
            L.plumb_model_free(self.m)
            raise PlumbError(st)

    def device(self):
        """(the device's spec, the layers offloaded to it)."""
        n = ctypes.c_int32()
        spec = lib().plumb_model_device(self.m, ctypes.byref(n))
        return spec.decode(), n.value

    def close(self):
        if self.c:
            lib().plumb_context_free(self.c)
            lib().plumb_model_free(self.m)
            self.c = None

    def decode(self, tokens, n_vocab, pos=None, seq=None, all_logits=True):
        """Decodes tokens; returns logits [n_out, n_vocab] (every token, or only the last)."""
        n = len(tokens)
        toks = (ctypes.c_int32 * n)(*tokens)
        flags = (ctypes.c_bool * n)(*([True] * n if all_logits else [False] * (n - 1) + [True]))
        b = Batch(n, toks, None, None, flags)
        if pos is not None:
            b.pos = (ctypes.c_int32 * n)(*pos)
        if seq is not None:
            b.seq = (ctypes.c_int32 * n)(*seq)
        st = lib().plumb_decode(self.c, ctypes.byref(b))
        if st:
            raise PlumbError(st)
        n_out = n if all_logits else 1
        out = np.empty((n_out, n_vocab), dtype=np.float32)
        for j in range(n_out):
            ptr = lib().plumb_get_logits(self.c, j)
            out[j] = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
        return out


def declare_grammar(L):
    """Argument types of the grammar functions (plumb_grammar_*, plumb_json_schema_to_gbnf) on L."""
    P, V = ctypes.POINTER, ctypes.c_void_p
    L.plumb_last_error.restype = ctypes.c_char_p
    L.plumb_json_schema_to_gbnf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, P(V), P(ctypes.c_size_t)]
    L.plumb_grammar_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, V, P(V)]
    L.plumb_grammar_free.argtypes = [V]
    L.plumb_grammar_match.argtypes = [V, ctypes.c_char_p, ctypes.c_size_t, P(ctypes.c_bool), P(ctypes.c_bool)]
    return L


def declare_vocab(L):
    """Argument types of the GGUF-open and vocabulary functions on L."""
    P, V, I32 = ctypes.POINTER, ctypes.c_void_p, ctypes.c_int32
    L.plumb_gguf_open.argtypes = [ctypes.c_char_p, P(V)]
    L.plumb_gguf_free.argtypes = [V]
    L.plumb_vocab_create.argtypes = [V, P(V)]
    L.plumb_vocab_free.argtypes = [V]
    L.plumb_vocab_n_tokens.argtypes = [V]
    L.plumb_vocab_n_tokens.restype = I32
    return L
