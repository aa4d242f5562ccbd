"""The grammar engine's token masks on the real Qwen vocabulary (151k byte-level BPE tokens):
for a few grammars (llama.cpp's json.gbnf, CJK/emoji literals, an enum of words, a number
grammar), at several states along a sample text (in the middle of multi-byte characters too),
plumb_constraint_mask must equal brute force: token t is allowed exactly when the accepted
text + its piece (plumb_token_to_piece, special=false) is a viable prefix by
plumb_grammar_match; end-of-generation tokens exactly where the grammar may end; other
control tokens and tokens without text never. Also checks accept against the mask."""
import ctypes
import time

import pytest

from plumbffi import declare_grammar, declare_vocab, lib

JSON_GBNF = r'''root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [0-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
'''

# (grammar, sample text, byte offsets of the states to check)
JSON_SAMPLE = '{"name": "日本😀", "n": [1, -2.5e3, true]}'.encode()
CASES = [
    (JSON_GBNF, JSON_SAMPLE, [0, 1, 2, 9, 10, 11, 12, 16, 18, 25, 31, 33, len(JSON_SAMPLE)]),
    ('root ::= ("日本語" | "😀" | "中文") ("、" root)?', "日本語、😀".encode(), [0, 1, 2, 3, 9, 10, 12, 13, 14, 15, 16]),
    ('root ::= "red" | "green" | "blue" | "greenish"', b"greenish", [0, 1, 3, 5, 8]),
    ('root ::= "-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?', b"-12.50e+7", [0, 1, 2, 3, 4, 6, 7, 9]),
]


class _Vocab:
    def __init__(self, path):
        L = lib()
        declare_vocab(L)
        L.plumb_vocab_is_eog.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        L.plumb_vocab_is_eog.restype = ctypes.c_bool
        L.plumb_vocab_is_control.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        L.plumb_vocab_is_control.restype = ctypes.c_bool
        L.plumb_token_to_piece.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t,
                                           ctypes.c_bool]
        L.plumb_token_to_piece.restype = ctypes.c_int
        declare_grammar(L)
        L.plumb_token_index_create.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        L.plumb_token_index_free.argtypes = [ctypes.c_void_p]
        L.plumb_constraint_create.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                              ctypes.POINTER(ctypes.c_void_p)]
        L.plumb_constraint_free.argtypes = [ctypes.c_void_p]
        L.plumb_constraint_start.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        L.plumb_constraint_mask.argtypes = [ctypes.c_void_p, ctypes.c_uint32,
                                            ctypes.POINTER(ctypes.POINTER(ctypes.c_uint32)),
                                            ctypes.POINTER(ctypes.c_int32)]
        L.plumb_constraint_accept.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int32,
                                              ctypes.POINTER(ctypes.c_uint32)]
        L.plumb_constraint_accept_bytes.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p,
                                                    ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint32)]
        L.plumb_constraint_can_end.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        L.plumb_constraint_can_end.restype = ctypes.c_bool
        self.L = L
        g = ctypes.c_void_p()
        assert L.plumb_gguf_open(str(path).encode(), ctypes.byref(g)) == 0, L.plumb_last_error()
        self.v = ctypes.c_void_p()
        st = L.plumb_vocab_create(g, ctypes.byref(self.v))
        L.plumb_gguf_free(g)
        assert st == 0, L.plumb_last_error()
        self.n = L.plumb_vocab_n_tokens(self.v)
        buf = ctypes.create_string_buffer(2048)
        self.eog = set()
        self.control = set()
        self.pieces = []
        for t in range(self.n):
            if L.plumb_vocab_is_eog(self.v, t):
                self.eog.add(t)
            elif L.plumb_vocab_is_control(self.v, t):
                self.control.add(t)
            k = L.plumb_token_to_piece(self.v, t, buf, len(buf), False)
            self.pieces.append(buf.raw[:k] if k > 0 else b"")
        self.ti = ctypes.c_void_p()
        assert L.plumb_token_index_create(self.v, ctypes.byref(self.ti)) == 0, L.plumb_last_error()

    def close(self):
        self.L.plumb_token_index_free(self.ti)
        self.L.plumb_vocab_free(self.v)


@pytest.fixture(scope="module")
def vocab(qwen_model):
    v = _Vocab(qwen_model)
    yield v
    v.close()


def _viable(L, g, text):
    viable, complete = ctypes.c_bool(), ctypes.c_bool()
    st = L.plumb_grammar_match(g, text, len(text), ctypes.byref(viable), ctypes.byref(complete))
    assert st == 0, L.plumb_last_error()
    return viable.value, complete.value


def _brute_force(L, g, vocab, prefix):
    """The set of tokens allowed after prefix, by plumb_grammar_match alone. A token whose
    first byte is already dead is dead (viability is prefix-closed), which saves most calls."""
    here_viable, here_complete = _viable(L, g, prefix)
    assert here_viable
    first = {}
    allowed = set()
    for t, p in enumerate(vocab.pieces):
        if t in vocab.eog:
            if here_complete:
                allowed.add(t)
            continue
        if t in vocab.control or not p:
            continue
        b = p[:1]
        if b not in first:
            first[b] = _viable(L, g, prefix + b)[0]
        if not first[b]:
            continue
        if len(p) == 1 or _viable(L, g, prefix + p)[0]:
            allowed.add(t)
    return allowed, here_complete


@pytest.mark.parametrize("case", range(len(CASES)), ids=["json", "cjk-emoji", "enum", "number"])
def test_mask_equals_brute_force(vocab, case):
    grammar, sample, offsets = CASES[case]
    L = vocab.L
    g = ctypes.c_void_p()
    gb = grammar.encode()
    assert L.plumb_grammar_parse(gb, len(gb), None, None, ctypes.byref(g)) == 0, L.plumb_last_error()
    c = ctypes.c_void_p()
    assert L.plumb_constraint_create(g, vocab.ti, 0, ctypes.byref(c)) == 0, L.plumb_last_error()
    try:
        t0 = time.monotonic()
        start = ctypes.c_uint32()
        assert L.plumb_constraint_start(c, ctypes.byref(start)) == 0
        for off in offsets:
            prefix = sample[:off]
            state = ctypes.c_uint32()
            assert L.plumb_constraint_accept_bytes(c, start, prefix, len(prefix), ctypes.byref(state)) == 0, \
                (off, L.plumb_last_error())
            bits = ctypes.POINTER(ctypes.c_uint32)()
            n_allowed = ctypes.c_int32()
            assert L.plumb_constraint_mask(c, state, ctypes.byref(bits), ctypes.byref(n_allowed)) == 0, \
                L.plumb_last_error()
            words = (vocab.n + 31) // 32
            got = set()
            for w in range(words):
                x = bits[w]
                while x:
                    low = x & -x
                    got.add(w * 32 + low.bit_length() - 1)
                    x ^= low
            want, complete = _brute_force(L, g, vocab, prefix)
            where = "%s at byte %d (%r)" % (["json", "cjk", "enum", "number"][case], off, prefix[-8:])
            assert n_allowed.value == len(got), where
            assert got, where  # every state of these samples goes on
            missing, extra = sorted(want - got)[:10], sorted(got - want)[:10]
            assert not missing and not extra, "%s: missing %s, extra %s" % (
                where, [(t, vocab.pieces[t]) for t in missing], [(t, vocab.pieces[t]) for t in extra])
            assert L.plumb_constraint_can_end(c, state) == complete, where
            assert not (got & vocab.control), where
            # accept agrees with the mask on a few allowed and disallowed tokens
            nxt = ctypes.c_uint32()
            for t in sorted(got)[:20] + sorted(got)[-5:]:
                assert L.plumb_constraint_accept(c, state, t, ctypes.byref(nxt)) == 0, (where, t)
            refused = [t for t in range(0, vocab.n, 997) if t not in got][:50] + sorted(vocab.control)[:5]
            for t in refused:
                assert L.plumb_constraint_accept(c, state, t, ctypes.byref(nxt)) != 0, (where, t)
        assert time.monotonic() - t0 < 60
    finally:
        L.plumb_constraint_free(c)
        L.plumb_grammar_free(g)
