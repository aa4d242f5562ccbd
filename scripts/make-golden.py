#!/usr/bin/env python3
"""make-golden.py — regenerates plumb's reference data from llama.cpp (through
llama-cpp-python built from source) and writes:

  tests/e2e/data/golden_gemma3.json
      * tokenization of TOKEN_CASES with the real model (add_bos/special both on and both off
        for every string, the two mixed settings for the strings with markup);
      * for each of PROMPTS: the prompt's ids, the top-10 next-token (id, logit) after it, and
        the greedy continuation (argmax, no penalties) of up to 64 tokens, stopping after an
        end-of-generation token, with the top 5 (id, logit) at every step.
  tests/e2e/data/golden_qwen2.json
      * the same for Qwen2.5-Coder-0.5B-Instruct (qwen2, byte-level BPE with the qwen2
        pre-tokenizer): QWEN_CASES (code, CJK, emoji, ChatML and FIM markup) and QWEN_PROMPTS
        (plain, FIM and ChatML-formatted);
  tests/e2e/data/golden_bpe.json
      * tokenization of BPE_CASES with the synthetic BPE vocabularies that
        tests/e2e/make_bpe_vocab.py writes (deterministically; here into a temporary folder),
        one per pre-tokenizer.
  tests/e2e/data/golden_moe.json
      * for each synthetic mixture-of-experts model that tests/e2e/make_moe_models.py writes
        (deterministically; here into a temporary folder; its SHA-256 recorded) and each of its
        prompts: the greedy continuation of N_MOE_GREEDY tokens and the top-10 (id, logit) at
        every position of prompt + continuation (logits_all: the prompt as one batch, then
        token by token).
  tests/e2e/data/golden_embed.json
      * for each of EMBED_TEXTS: llama.cpp's embedding of the text by the Qwen model
        (Llama(embedding=True)) with mean and with last pooling, L2-normalized, and the token ids
        it embedded.
  tests/e2e/data/golden_split.json
      * the real Gemma model split in three by gguf-py's writer (tests/e2e/ggufsplit.py,
        deterministic; the shards' SHA-256 recorded): llama.cpp's prompt ids and SPLIT_GREEDY
        greedy tokens for SPLIT_PROMPT on the split files (loaded from the first shard) and on
        the whole file.
  tests/e2e/data/golden_arch.json
      * the same for the synthetic qwen3, gemma2 and phi3 models that
        tests/e2e/make_arch_models.py writes (with the real tokenizers of the models in
        models/), over ARCH_PROMPTS tokenized by llama.cpp: prompt ids, N_ARCH_GREEDY greedy
        tokens, the top-10 (id, logit) at every position.

How to rebuild the reference:
  python3 scripts/make-golden.py
      creates .venv-ref (once) with `CMAKE_ARGS=<REF_CMAKE_ARGS> pip install --no-binary llama-cpp-python
      llama-cpp-python==VERSION numpy gguf==0.19.0` — llama.cpp is compiled from source, which
      takes several minutes — then runs itself inside it;
  python3 scripts/make-golden.py --python /path/to/python
      runs with an interpreter that already has llama_cpp, numpy and gguf.
  Options: --only gemma|qwen2|bpe|moe|arch|embed|split, --model PATH (for --only gemma/qwen2; default the file
  `make model` fetches into models/), --ref avx512|avx2 (the reference's instruction sets:
  .venv-ref is built for AVX-512 machines, .venv-ref-avx2 for the others; the golden file
  records which in settings.cmake_args).
The model is run with Llama(n_ctx=2048, n_threads=2, logits_all=False), llama.cpp's extra
weight buffers (AMX, repacking) off and its tiled batch GEMM off (GGML_CPU_TILED_MM=0); token texts that are not valid UTF-8 are stored as hex
("text_hex") instead of "text".
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
REF_VENV = os.path.join(ROOT, ".venv-ref")
# llama.cpp's own CPU kernels for x86-64 with AVX-512, without the llamafile GEMM (whose
# results depend on the batch size, so the reference's prompt and token-by-token logits
# would disagree with each other) and without AMX (it faults where the OS does not grant
# tile state). Built this way, the reference gives the same logits for a prompt evaluated
# as one batch or token by token.
REF_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                  "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON "
                  "-DGGML_LLAMAFILE=OFF -DGGML_OPENMP=OFF "
                  "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
# The same configuration for CPUs without AVX-512 (e.g. AMD Zen 3), in its own environment:
# the reference's AVX2 kernels, which plumb's AVX2 set follows.
REF_CMAKE_ARGS_AVX2 = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                       "-DGGML_LLAMAFILE=OFF -DGGML_OPENMP=OFF "
                       "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
REFS = {"avx512": (REF_CMAKE_ARGS, REF_VENV), "avx2": (REF_CMAKE_ARGS_AVX2, os.path.join(ROOT, ".venv-ref-avx2"))}
CHILD_FLAG = "PLUMB_GOLDEN_CHILD"
# The reference also has a tiled K-quant matrix product that it takes for batches of 8 rows or
# more; it rounds differently from its one-row kernels, so a prompt's logits would depend on
# how the prompt is batched (by up to 9% of the largest logit on this model). Switched off,
# the reference is batch-invariant, as plumb is, and every logit comes from its stock kernels.
REF_ENV = {"GGML_CPU_TILED_MM": "0"}

# ---- inputs ------------------------------------------------------------------------------------

COMMON_CASES = [
    "Hello world", "hello world!", " Hello", "  leading two spaces", "trailing spaces   ",
    "\tTab\tseparated\t\tvalues", "line1\nline2\n\nline4\n\n\n", "CRLF\r\nline\r\n",
    "it's I'm you've they'll we'd she's DON'T I'LL We'Re",
    "12345 1234567 3.14159 1,234,567.89 0x1F 1e-9", "٣٤٥ ½ ² Ⅻ",
    "naïve café résumé Übermaß Straße", "Привет, мир! Γειά σου κόσμε", "日本語のテキスト、東京",
    "中文文本，北京欢迎你。", "한국어 텍스트", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก",
    "🤖 🎉 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️", "\U0001F600\U0001F601",
    "def f(x):\n    return x**2  # comment\n", "int main(void) { return 0; }",
    '{"a": [1, 2.5, null], "b": "c"}', "Hello Hello Hello", "1234 12345 123456", "", " ", "   ",
    "\n", "\n\n", "a  b   c    d", "x \n y", "!!!???...,,,;;;",
    "$5.99 100% (parenthesized) [bracketed] {braced}", "email@example.com https://x.org/p?q=1",
    "word" * 50, "ab" * 200, "mixed123abc456def", "UPPER lower Title MiXeD",
    "\u00a0nbsp\u2003emspace\u3000ideographic", "zero\u200bwidth\u200djoiner", "combining e\u0301 a\u0308",
]

RAW_CASES = [b"\xff\xfe invalid", b"a\x80b", b"\xc3", b"\xe2\x82", b"ok\xed\xa0\x80surrogate",
             b"\xc0\x80overlong", b"nul\x00byte"]

GEMMA_CASES = COMMON_CASES + [
    "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>",
    "<bos>", "<bos><bos>", "<eos>", "text<end_of_turn>more", "<start_of_turn", "<<bos>>",
    "<end_of_turn><end_of_turn>", "<unused0><unused12>", "[multimodal]", "<start_of_image>",
    "<table><tr><td>x</td></tr></table>", "\n" * 40, " " * 40, "\t" * 20 + "x",
    "Supercalifragilisticexpialidocious" * 4, "pneumonoultramicroscopicsilicovolcanoconiosis",
    "The quick brown fox jumps over the lazy dog.",
]

BPE_CASES = COMMON_CASES + [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|im_start|>system\nYou are<|im_end|>\n", "a<tool_call>b", "<|endoftext|>", "<|eot_id",
    "tokenization is unreachable", " tokenization", "supercalifragilistic", "1234",
]

QWEN_CASES = COMMON_CASES + [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>", "text<|im_end|>more", "<|im_start", "<<|im_end|>>",
    "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n    return c<|fim_middle|>",
    "<|repo_name|>plumb\n<|file_sep|>main.c\nint main() {}", "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "import numpy as np\n\nclass Foo(Base):\n    def __init__(self, *args, **kwargs) -> None:\n        "
    "super().__init__(*args)\n        self.x = {k: v for k, v in kwargs.items() if v is not None}\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "#include <stdio.h>\r\n\tif (a != b && c <= d || !e) { x += 0x7fff; }",
    "机器学习是人工智能的一个分支。深度学习使用多层神经网络。", "東京都渋谷区で会いましょう！ありがとうございます。",
    "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.", "中文English混合text测试123",
    "😀😃😄😁😆😅😂🤣🥲☺️😊😇🙂🙃😉😌😍🥰😘", "🔥🔥🔥 great 🚀🚀 launch 🎯", "👩🏽‍💻👨🏿‍🔬🧑‍🚀🏳️‍🌈",
    "    indented    with    tabs\tand   spaces   ",
]

QWEN_CHAT = ("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
             "<|im_start|>assistant\n")
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

QWEN_PROMPTS = [
    {"name": "capital", "text": "The capital of France is", "add_bos": True},
    {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
     "add_bos": True},
    {"name": "quicksort_c", "text": "// quicksort in C\nvoid quicksort(int *a, int n) {\n", "add_bos": True},
    {"name": "fim", "text": "<|fim_prefix|>def is_prime(n):\n    if n < 2:\n        return False\n<|fim_suffix|>\n"
                            "    return True<|fim_middle|>", "add_bos": True},
    {"name": "chat_reverse", "text": QWEN_CHAT.format(system=QWEN_SYSTEM,
                                                      user="Write a Python function that reverses a string."),
     "add_bos": True},
    {"name": "chat_system_sql", "text": QWEN_CHAT.format(system="You are a SQL expert. Answer with one query.",
                                                         user="Count the rows of the table users."),
     "add_bos": True},
    {"name": "chat_chinese", "text": QWEN_CHAT.format(system=QWEN_SYSTEM, user="用一句话解释什么是递归。"),
     "add_bos": True},
    {"name": "chat_multi_turn",
     "text": "<|im_start|>system\n" + QWEN_SYSTEM + "<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
             "Hello! How can I help you today?<|im_end|>\n<|im_start|>user\nList three sorting algorithms."
             "<|im_end|>\n<|im_start|>assistant\n",
     "add_bos": True},
]

GEMMA_CHAT = "<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"

PROMPTS = [
    {"name": "capital", "text": "The capital of France is", "add_bos": True},
    {"name": "story", "text": "Once upon a time, in a small village by the sea,", "add_bos": True},
    {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
     "add_bos": True},
    {"name": "count", "text": "1, 2, 3, 4, 5,", "add_bos": True},
    {"name": "french", "text": "La capitale de l'Italie est", "add_bos": True},
    {"name": "chat_capital", "text": GEMMA_CHAT.format(user="What is the capital of Japan?"),
     "add_bos": False},
    {"name": "chat_system_haiku",
     "text": GEMMA_CHAT.format(user="You are a helpful assistant.\n\nWrite a haiku about the sea."),
     "add_bos": False},
    {"name": "chat_multi_turn",
     "text": "<bos><start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello! How can I help you "
             "today?<end_of_turn>\n<start_of_turn>user\nList three colors.<end_of_turn>\n"
             "<start_of_turn>model\n",
     "add_bos": False},
]

N_GREEDY = 64

# ---- helpers -----------------------------------------------------------------------------------


def text_fields(raw):
    try:
        return {"text": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"text_hex": raw.hex()}


def has_markup(raw):
    return b"<" in raw or b"[" in raw


def tokenize_cases(llm, cases, raw_cases):
    out = []
    for item in [c.encode("utf-8") for c in cases] + raw_cases:
        settings = [(True, True), (False, False)]
        if has_markup(item):
            settings += [(True, False), (False, True)]
        for add_bos, special in settings:
            ids = llm.tokenize(item, add_bos=add_bos, special=special)
            out.append({**text_fields(item), "add_bos": add_bos, "special": special, "ids": list(ids)})
    return out


def version_info():
    import llama_cpp
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    libs = sorted(f for f in os.listdir(libdir) if f.count(".so.") == 1 and f.split(".so.")[1].count(".") == 2) \
        if os.path.isdir(libdir) else []
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "libraries": libs,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
    }


def top_logits(llm, i, k=10):
    """The k largest logits of row i of llm's last batch, as [id, logit], ties to the lowest id."""
    import llama_cpp
    import numpy as np
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, i)
    logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)
    order = np.argsort(-logits, kind="stable")[:k]
    return [[int(t), float(logits[t])] for t in order]


def teacher_forced(llm, ids, n_greedy):
    """Evaluates ids as one batch, then n_greedy argmax tokens one at a time: (the greedy ids,
    the top-10 logits at every position, prompt and greedy alike)."""
    llm.reset()
    llm.eval(ids)
    rows = [top_logits(llm, i) for i in range(len(ids))]
    greedy = []
    for _ in range(n_greedy):
        greedy.append(rows[-1][0][0])
        llm.eval([greedy[-1]])
        rows.append(top_logits(llm, 0))
    return greedy, rows


def plain_cpu_kernels():
    """Turns off llama.cpp's extra CPU weight buffers (AMX tiles, repacked layouts): the
    reference then runs the generic quantized kernels, which any x86-64 machine can execute
    (AMX faults where the kernel does not grant tile state, as in some VMs)."""
    import llama_cpp.llama_cpp as C
    default = C.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params


def make_real(model_path, cases, prompts, cmake_args):
    os.environ.update(REF_ENV)  # read by the reference on its first matrix product
    import llama_cpp
    import numpy as np

    plain_cpu_kernels()
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=2048, n_threads=2, logits_all=False, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    result = {
        "generator": "scripts/make-golden.py",
        "reference": version_info(),
        "model": os.path.basename(model_path),
        "settings": {"n_ctx": 2048, "n_threads": 2, "use_extra_bufts": False, "cmake_args": cmake_args,
                     "environment": REF_ENV,
                     "greedy": "argmax, ties to the lowest id",
                     "max_new_tokens": N_GREEDY},
        "tokenize": tokenize_cases(llm, cases, RAW_CASES),
        "prompts": [],
    }

    def last_logits():
        # Llama.eval no longer keeps logits unless logits_all: read the context's last row.
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)

    def top(logits, k):
        order = np.argsort(-logits, kind="stable")[:k]
        return [[int(i), float(logits[i])] for i in order]

    for p in prompts:
        ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=p["add_bos"], special=True)
        llm.reset()
        llm.eval(ids)
        logits = last_logits()
        entry = {"name": p["name"], "text": p["text"], "add_bos": p["add_bos"], "special": True,
                 "prompt_ids": list(ids), "top10": top(logits, 10), "greedy_ids": [], "steps": []}
        stop = "length"
        for _ in range(N_GREEDY):
            tok = int(np.argmax(logits))
            entry["steps"].append({"top5": top(logits, 5)})
            entry["greedy_ids"].append(tok)
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                stop = "eog"
                break
            llm.eval([tok])
            logits = last_logits()
        entry["stop"] = stop
        entry["greedy_text"] = llm.detokenize(entry["greedy_ids"]).decode("utf-8", "replace")
        result["prompts"].append(entry)
    return result


EMBED_TEXTS = ["The cat sat on the mat.", "A cat was sitting on a rug.", "Quantum chromodynamics describes quarks.",
               "def add(a, b):\n    return a + b", "日本語のテキストです。"]


def make_embed(model_path, cmake_args):
    os.environ.update(REF_ENV)
    import llama_cpp
    import numpy as np

    plain_cpu_kernels()
    out = {"generator": "scripts/make-golden.py", "reference": version_info(), "model": os.path.basename(model_path),
           "settings": {"n_ctx": 512, "n_threads": 2, "cmake_args": cmake_args, "environment": REF_ENV,
                        "normalize": "L2"}, "texts": []}
    for pooling, code in (("mean", llama_cpp.LLAMA_POOLING_TYPE_MEAN), ("last", llama_cpp.LLAMA_POOLING_TYPE_LAST)):
        llm = llama_cpp.Llama(model_path=model_path, n_ctx=512, n_threads=2, embedding=True, pooling_type=code,
                              verbose=False)
        for i, t in enumerate(EMBED_TEXTS):
            v = np.asarray(llm.embed(t, normalize=False), dtype=np.float64)
            v = v / np.linalg.norm(v)
            if pooling == "mean":
                out["texts"].append({"text": t, "ids": list(llm.tokenize(t.encode(), add_bos=True, special=False))})
            out["texts"][i][pooling] = [float(x) for x in v]
        del llm
    return out


SPLIT_PROMPT = "The capital of France is"
SPLIT_GREEDY = 16


def make_split(model_path, cmake_args):
    """llama.cpp on the real model split in three (see the module docstring)."""
    os.environ.update(REF_ENV)
    import hashlib
    import tempfile

    import gguf
    import llama_cpp
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    from ggufsplit import split_with_gguf_py

    plain_cpu_kernels()
    out = {"generator": "scripts/make-golden.py", "reference": version_info(), "model": os.path.basename(model_path),
           "settings": {"n_ctx": 512, "n_threads": 2, "cmake_args": cmake_args, "environment": REF_ENV},
           "prompt": SPLIT_PROMPT}
    with tempfile.TemporaryDirectory() as d:
        n = len(gguf.GGUFReader(model_path).tensors)
        shards = split_with_gguf_py(model_path, os.path.join(d, "gemma.gguf"), (n + 2) // 3)
        out["shards_sha256"] = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in shards]
        for key, path in (("whole", model_path), ("split", str(shards[0]))):
            llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
            ids = llm.tokenize(SPLIT_PROMPT.encode(), add_bos=True, special=True)
            llm.reset()
            llm.eval(ids)
            toks = []
            for _ in range(SPLIT_GREEDY):
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
                toks.append(int(np.argmax(row)))
                llm.eval([toks[-1]])
            out[key] = {"prompt_ids": [int(i) for i in ids], "greedy": toks}
            del llm
    return out


def make_bpe():
    import llama_cpp
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import make_bpe_vocab

    result = {"generator": "scripts/make-golden.py", "reference": version_info(),
              "vocab_generator": "tests/e2e/make_bpe_vocab.py", "vocabs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for pre, path in make_bpe_vocab.build_all(tmp).items():
            llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            result["vocabs"][pre] = {"file": os.path.basename(path), "n_tokens": llm.n_vocab(),
                                     "tokenize": tokenize_cases(llm, BPE_CASES, RAW_CASES)}
            del llm
    return result


N_MOE_GREEDY = 20


def make_moe(cmake_args):
    os.environ.update(REF_ENV)
    import llama_cpp
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import make_moe_models

    plain_cpu_kernels()
    result = {"generator": "scripts/make-golden.py", "reference": version_info(),
              "model_generator": "tests/e2e/make_moe_models.py",
              "settings": {"n_ctx": 256, "n_threads": 2, "use_extra_bufts": False, "logits_all": True,
                           "cmake_args": cmake_args, "environment": REF_ENV,
                           "greedy": "argmax, ties to the lowest id", "n_greedy": N_MOE_GREEDY},
              "models": {}}

    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_moe_models.build_all(tmp).items():
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
            entry = {"file": path.name, "sha256": make_moe_models.sha256(path), "prompts": []}
            for ids in make_moe_models.PROMPTS:
                greedy, rows = teacher_forced(llm, ids, N_MOE_GREEDY)
                entry["prompts"].append({"prompt_ids": list(ids), "greedy_ids": greedy, "top10": rows})
            result["models"][name] = entry
            del llm
    return result


N_ARCH_GREEDY = 20
ARCH_N_CTX = 2048  # > the phi3 model's original_context_length 1024: its long RoPE factors
ARCH_PROMPTS = {  # by the vocabulary the model carries (make_arch_models.MODELS[...]["vocab"])
    "qwen": [
        {"name": "capital", "text": "The capital of France is", "add_bos": True},
        {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
         "add_bos": True},
        {"name": "chatml", "text": QWEN_CHAT.format(system="You are a helpful assistant.",
                                                    user="Write a haiku about the sea."), "add_bos": True},
        {"name": "chinese", "text": "机器学习是人工智能的一个分支。深度学习使用多层神经网络。", "add_bos": True},
    ],
    "gemma": [
        {"name": "capital", "text": "The capital of France is", "add_bos": True},
        {"name": "story", "text": "Once upon a time, in a small village by the sea,", "add_bos": True},
        {"name": "chat", "text": GEMMA_CHAT.format(user="What is the capital of Japan?"), "add_bos": False},
        {"name": "count", "text": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "add_bos": True},
    ],
}


def make_arch(cmake_args):
    os.environ.update(REF_ENV)
    import hashlib
    import llama_cpp
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import make_arch_models

    plain_cpu_kernels()
    result = {"generator": "scripts/make-golden.py", "reference": version_info(),
              "model_generator": "tests/e2e/make_arch_models.py",
              "settings": {"n_ctx": ARCH_N_CTX, "n_threads": 2, "use_extra_bufts": False, "logits_all": True,
                           "cmake_args": cmake_args, "environment": REF_ENV,
                           "greedy": "argmax, ties to the lowest id", "n_greedy": N_ARCH_GREEDY},
              "models": {}}

    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_arch_models.build_all(tmp).items():
            spec = make_arch_models.MODELS[name]
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            llm = llama_cpp.Llama(model_path=path, n_ctx=ARCH_N_CTX, n_threads=2, logits_all=True, verbose=False)
            entry = {"file": os.path.basename(path), "sha256": digest, "arch": spec["arch"],
                     "n_vocab": llm.n_vocab(), "prompts": []}
            for p in ARCH_PROMPTS[spec["vocab"]]:
                ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=p["add_bos"], special=True)
                greedy, rows = teacher_forced(llm, ids, N_ARCH_GREEDY)
                entry["prompts"].append({**p, "prompt_ids": list(ids), "greedy_ids": greedy, "top10": rows})
            result["models"][name] = entry
            del llm
    return result


def write_json(name, data):
    path = os.path.join(ROOT, "tests", "e2e", "data", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"make-golden: wrote {os.path.relpath(path, ROOT)}")


# ---- interpreter selection ---------------------------------------------------------------------


def ensure_ref_venv(ref):
    cmake_args, venv = REFS[ref]
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        print(f"make-golden: creating {venv} (builds llama.cpp from source; this takes minutes)")
        subprocess.check_call([sys.executable, "-m", "venv", venv])
    probe = subprocess.run([py, "-c", "import llama_cpp, numpy, gguf; print(llama_cpp.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != LLAMA_CPP_PYTHON_VERSION:
        env = dict(os.environ, CMAKE_ARGS=cmake_args)
        subprocess.check_call([py, "-m", "pip", "install", "--no-cache-dir", "--no-binary", "llama-cpp-python",
                               f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "numpy", "gguf==0.19.0"], env=env)
    return py


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", help="interpreter with llama_cpp, numpy and gguf (default: the --ref environment)")
    ap.add_argument("--model", help="the model of --only gemma or qwen2 (default: models/<its file>)")
    ap.add_argument("--only", choices=["gemma", "qwen2", "bpe", "moe", "arch", "embed", "split"])
    ap.add_argument("--ref", choices=sorted(REFS), default="avx512",
                    help="the reference build: avx512 (.venv-ref) or, on CPUs without AVX-512, avx2 (.venv-ref-avx2)")
    args = ap.parse_args()

    if not os.environ.get(CHILD_FLAG):
        py = args.python or ensure_ref_venv(args.ref)
        env = dict(os.environ, **{CHILD_FLAG: "1"}, **REF_ENV)
        argv = [py, os.path.abspath(__file__), "--ref", args.ref] + (["--model", args.model] if args.model else []) + \
            (["--only", args.only] if args.only else [])
        sys.exit(subprocess.call(argv, env=env))

    cmake_args = REFS[args.ref][0]
    real = {"gemma": ("gemma-3-270m-q4_k_m.gguf", "golden_gemma3.json", GEMMA_CASES, PROMPTS),
            "qwen2": ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "golden_qwen2.json", QWEN_CASES, QWEN_PROMPTS)}
    for name, (file, out, cases, prompts) in real.items():
        if args.only not in (None, name):
            continue
        path = args.model or os.path.join(ROOT, "models", file)
        if not os.path.exists(path):
            sys.exit(f"make-golden: {path} not found (run `make model`)")
        write_json(out, make_real(path, cases, prompts, cmake_args))
    if args.only in (None, "embed"):
        write_json("golden_embed.json", make_embed(os.path.join(ROOT, "models", real["qwen2"][0]), cmake_args))
    if args.only in (None, "split"):
        write_json("golden_split.json", make_split(os.path.join(ROOT, "models", real["gemma"][0]), cmake_args))
    if args.only in (None, "bpe"):
        write_json("golden_bpe.json", make_bpe())
    if args.only in (None, "moe"):
        write_json("golden_moe.json", make_moe(cmake_args))
    if args.only in (None, "arch"):
        write_json("golden_arch.json", make_arch(cmake_args))


if __name__ == "__main__":
    main()
