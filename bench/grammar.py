#!/usr/bin/env python3
"""grammar.py — what constraining the output to a grammar costs per generated token, in plumb
and in llama.cpp, on the same model, prompt and schemas, in one run; prints one markdown table.

    bench/grammar.py [-m MODEL] [-n 128] [-t 2] [-r 3]

For each engine and each case (no grammar; any JSON object; a moderately complex JSON Schema)
it feeds the same chat prompt, then generates greedily up to -n tokens (fewer when the
grammar is complete or the model ends), timing each step's two parts apart: choosing the
token from the logits (sampling, with the grammar's mask where there is one) and decoding it.
Per-token times are means over the steps of -r repetitions; the overhead of a grammar is the
difference of its sampling time to the no-grammar case, in microseconds and in percent of a
whole no-grammar step (sampling + decode).

plumb: libplumb through ctypes: plumb_constraint_mask + plumb_sampler_sample_masked +
plumb_constraint_accept (greedy). The first repetition of each case runs on a fresh
constraint ("cold": its masks are computed as states are first met); later repetitions reuse
it, as the server reuses a grammar across requests ("warm"); both are reported.
llama.cpp: llama-cpp-python (.venv-peer, built from source by bench/compare.sh) with
LlamaGrammar.from_json_schema, sampling with Llama.sample(temp=0, grammar=...); its grammar
is rebuilt for each repetition (it keeps no state between generations to reuse).
"""
import argparse
import ctypes
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 60},
                                                     "city": {"type": "string", "maxLength": 40},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["street", "city", "zip"], "additionalProperties": False},
        "projects": {"type": "array", "maxItems": 4, "items": {
            "type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                             "stars": {"type": "integer", "minimum": 0, "maximum": 100000},
                                             "active": {"type": "boolean"}},
            "required": ["title", "stars", "active"], "additionalProperties": False}},
    },
    "required": ["name", "age", "email", "role", "address", "projects"],
    "additionalProperties": False,
}
CASES = [("none", None), ("json object", {"type": "object"}), ("schema", SCHEMA)]
PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nInvent a user profile "
          "for a software developer with an address and a few projects, as JSON.<|im_end|>\n<|im_start|>assistant\n")


class Batch(ctypes.Structure):
    _fields_ = [("n_tokens", ctypes.c_int32), ("tokens", ctypes.POINTER(ctypes.c_int32)),
                ("pos", ctypes.POINTER(ctypes.c_int32)), ("seq", ctypes.POINTER(ctypes.c_int32)),
                ("logits", ctypes.POINTER(ctypes.c_bool))]


class CtxParams(ctypes.Structure):
    _fields_ = [("n_ctx", ctypes.c_int32), ("n_batch", ctypes.c_int32), ("n_threads", ctypes.c_int32),
                ("n_seq", ctypes.c_int32)]


class SamplerParams(ctypes.Structure):
    _fields_ = [("temperature", ctypes.c_float), ("top_k", ctypes.c_int32), ("top_p", ctypes.c_float),
                ("min_p", ctypes.c_float), ("repeat_penalty", ctypes.c_float), ("repeat_last_n", ctypes.c_int32),
                ("presence_penalty", ctypes.c_float), ("frequency_penalty", ctypes.c_float), ("seed", ctypes.c_uint64)]


class Plumb:
    def __init__(self, model, threads):
        L = ctypes.CDLL(os.environ.get("PLUMB_LIB", os.path.join(ROOT, "build", "libplumb.so")))
        L.plumb_last_error.restype = ctypes.c_char_p
        L.plumb_get_logits.restype = ctypes.POINTER(ctypes.c_float)
        L.plumb_get_logits.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        L.plumb_model_vocab.restype = ctypes.c_void_p
        L.plumb_model_vocab.argtypes = [ctypes.c_void_p]
        L.plumb_sampler_default_params.restype = SamplerParams
        for f in ("plumb_decode", "plumb_seq_truncate", "plumb_tokenize", "plumb_constraint_mask", "plumb_constraint_accept",
                  "plumb_constraint_start", "plumb_grammar_parse", "plumb_constraint_create", "plumb_token_index_create",
                  "plumb_json_schema_to_gbnf", "plumb_sampler_create"):
            getattr(L, f).restype = ctypes.c_int
        L.plumb_sampler_sample.restype = L.plumb_sampler_sample_masked.restype = ctypes.c_int32
        L.plumb_constraint_must_end.restype = L.plumb_vocab_is_eog.restype = ctypes.c_bool
        self.L = L
        self.m, self.c = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(L.plumb_model_load(model.encode(), ctypes.byref(self.m)))
        self.check(L.plumb_context_create(self.m, ctypes.byref(CtxParams(2048, 512, threads, 1)), ctypes.byref(self.c)))
        self.vocab = ctypes.c_void_p(L.plumb_model_vocab(self.m))
        self.n_vocab = L.plumb_vocab_n_tokens(self.vocab)
        self.ti = ctypes.c_void_p()
        self.check(L.plumb_token_index_create(self.vocab, ctypes.byref(self.ti)))
        ids = (ctypes.c_int32 * 4096)()
        n = ctypes.c_size_t()
        p = PROMPT.encode()
        self.check(L.plumb_tokenize(self.vocab, p, ctypes.c_size_t(len(p)), ctypes.c_bool(False), ctypes.c_bool(True),
                                    ids, ctypes.c_size_t(4096), ctypes.byref(n)))
        self.prompt = list(ids[:n.value])
        sp = L.plumb_sampler_default_params()
        sp.temperature = 0.0
        self.sampler = ctypes.c_void_p()
        self.check(L.plumb_sampler_create(ctypes.byref(sp), self.n_vocab, ctypes.byref(self.sampler)))
        self.constraints = {}

    def check(self, st):
        if st:
            raise RuntimeError("plumb: " + self.L.plumb_last_error().decode())

    def constraint(self, schema):
        key = json.dumps(schema)
        if key not in self.constraints:
            L = self.L
            gbnf, n = ctypes.c_char_p(), ctypes.c_size_t()
            self.check(L.plumb_json_schema_to_gbnf(key.encode(), ctypes.c_size_t(len(key)), ctypes.byref(gbnf), ctypes.byref(n)))
            g, c = ctypes.c_void_p(), ctypes.c_void_p()
            self.check(L.plumb_grammar_parse(gbnf, n, None, None, ctypes.byref(g)))
            self.check(L.plumb_constraint_create(g, self.ti, ctypes.c_size_t(0), ctypes.byref(c)))
            self.constraints[key] = (g, c)
        return self.constraints[key][1]

    def decode(self, toks, pos0):
        n = len(toks)
        arr = (ctypes.c_int32 * n)(*toks)
        pos = (ctypes.c_int32 * n)(*range(pos0, pos0 + n))
        self.check(self.L.plumb_decode(self.c, ctypes.byref(Batch(n, arr, pos, None, None))))

    def run(self, schema, n_max):
        """(seconds per step list, text length) for one generation."""
        L = self.L
        L.plumb_seq_truncate(self.c, 0, 0)
        self.decode(self.prompt, 0)
        c = self.constraint(schema) if schema is not None else None
        state = ctypes.c_uint32()
        if c:
            self.check(L.plumb_constraint_start(c, ctypes.byref(state)))
        bits, na = ctypes.POINTER(ctypes.c_uint32)(), ctypes.c_int32()
        steps, pos, out = [], len(self.prompt), []
        for _ in range(n_max):
            t = time.perf_counter()
            logits = L.plumb_get_logits(self.c, 0)
            if c:
                self.check(L.plumb_constraint_mask(c, state, ctypes.byref(bits), ctypes.byref(na)))
                tok = L.plumb_sampler_sample_masked(self.sampler, logits, bits)
                self.check(L.plumb_constraint_accept(c, state, tok, ctypes.byref(state)))
            else:
                tok = L.plumb_sampler_sample(self.sampler, logits)
            out.append(tok)
            t_sampled = time.perf_counter()
            if L.plumb_vocab_is_eog(self.vocab, tok) or (c and L.plumb_constraint_must_end(c, state)):
                break
            self.decode([tok], pos)
            pos += 1
            steps.append((t_sampled - t, time.perf_counter() - t_sampled))
        return steps, len(out)


class Llama:
    def __init__(self, model, threads):
        import llama_cpp
        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                                   verbose=False)
        self.prompt = self.llm.tokenize(PROMPT.encode(), add_bos=False, special=True)

    def run(self, schema, n_max):
        llm = self.llm
        grammar = self.llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False) if schema else None
        llm.reset()
        llm.eval(self.prompt)
        steps, n = [], 0
        end = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
        for _ in range(n_max):
            t = time.perf_counter()
            tok = llm.sample(temp=0.0, grammar=grammar)
            n += 1
            t_sampled = time.perf_counter()
            if llm.token_eos() == tok or tok in end:
                break
            llm.eval([tok])
            steps.append((t_sampled - t, time.perf_counter() - t_sampled))
        return steps, n


def main():
    if not os.environ.get("PLUMB_GRAMMAR_CHILD"):  # run under .venv-peer, which has llama_cpp
        import importlib.util
        spec = importlib.util.spec_from_file_location("compare", os.path.join(ROOT, "bench", "compare.py"))
        compare = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compare)
        env = dict(os.environ, PLUMB_GRAMMAR_CHILD="1")
        sys.exit(os.spawnve(os.P_WAIT, compare.peer_python(), [compare.peer_python(), os.path.abspath(__file__)] + sys.argv[1:], env))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    a = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    engines = [("plumb", Plumb(a.model, a.threads)), ("llama.cpp", Llama(a.model, a.threads))]
    res = {}
    for rep in range(a.repetitions):
        for name, eng in engines:
            for case, schema in CASES:
                steps, _ = eng.run(schema, a.n)
                res.setdefault((name, case), []).append(steps)
        print(f"grammar: repetition {rep + 1}/{a.repetitions} done", file=sys.stderr)
    print(f"model: {a.model}\nCPU: {cpu}, {a.threads} threads; greedy, up to {a.n} tokens, {a.repetitions} repetitions\n")
    print("| engine | case | tokens | sampling us/token | decode ms/token | overhead us/token | overhead % of a step |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in engines:
        base_steps = [st for run in res[(name, "none")] for st in run]
        base_sample = statistics.mean(a for a, _ in base_steps)
        base_step = statistics.mean(a + b for a, b in base_steps)
        for case, _ in CASES:
            runs = res[(name, case)]
            views = [("", runs)]
            if name == "plumb" and case != "none" and len(runs) > 1:
                views = [(" (cold)", runs[:1]), (" (warm)", runs[1:])]
            for tag, rs in views:
                steps = [st for run in rs for st in run]
                sample = statistics.mean(a for a, _ in steps)
                decode = statistics.mean(b for _, b in steps)
                over = (sample - base_sample) * 1e6
                print(f"| {name} | {case}{tag} | {len(steps) // len(rs)} | {sample * 1e6:.0f} | {decode * 1e3:.2f} | "
                      f"{'-' if case == 'none' else f'{over:.0f}'} | "
                      f"{'-' if case == 'none' else f'{100 * over / (base_step * 1e6):.1f}'} |")


if __name__ == "__main__":
    main()
