#!/usr/bin/env python3
"""make_bpe_vocab.py — writes small synthetic byte-level BPE tokenizers as GGUF files, one per
pre-tokenizer plumb implements (llama-bpe, gpt-2, qwen2, smollm, and one with no
tokenizer.ggml.pre, i.e. "default"). Only tokenizer metadata and the few llama
hyperparameters llama.cpp reads before a vocab_only load; no tensors.

The vocabulary is learned here, deterministically, from the corpus below: a plain BPE
trainer (most frequent adjacent pair first, ties broken by the pair's text) over words split
with a GPT-2-like regex, on the GPT-2 byte-level alphabet. On top of the 256 byte tokens and
MERGES merged tokens come a few whole-word tokens no merge produces (so llama3's
ignore_merges shows), control tokens (<|begin_of_text|>, <|eot_id|>, ...) and one
user-defined token.

Usage: make_bpe_vocab.py OUTDIR   -> OUTDIR/bpe-<name>.gguf for every name in PRE_NAMES.
scripts/make-golden.py and tests/e2e/test_tokenize.py import build_all().
"""
import collections
import heapq
import os
import re
import sys

import gguf

MERGES = 2000
PRE_NAMES = ["llama-bpe", "gpt-2", "qwen2", "smollm", "default"]

CONTROL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|eot_id|>", "<|eom_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
USER_DEFINED = ["<tool_call>"]
# Whole words that are tokens without a merge path to them (byte-level: U+0120 is a space).
EXTRA_WORDS = ["\u0120tokenization", "\u0120unreachable", "supercalifragilistic", "\u0120Hello", "1234"]

CORPUS = """
The quick brown fox jumps over the lazy dog. The dog wasn't amused; it's been a long day and
they'll say we're late again. I'm sure you've heard this before, but I'd rather be early.
Hello world! Hello, World. HELLO WORLD? hello-world_hello.world
Tokenization splits text into pieces: words, numbers, punctuation and whitespace.
In 1969, 12 astronauts (well, 24 in total flew) went to the Moon; 3.14159 is pi, 2.71828 is e.
Prices: $5.99, EUR 12,50, 100%, 0x1F, 1e-9, 42nd street, 1,234,567 people, 2024-01-31 12:30:45.
def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)

int main(int argc, char **argv) {
\tfor (int i = 0; i < argc; i++) printf("%s\\n", argv[i]);
\treturn 0;
}
{"name": "plumb", "version": "0.1.0", "tags": ["llm", "gguf"], "ok": true, "n": null}
<html><body><div class="main">Text &amp; more</div></body></html>
Café, naïve, résumé, façade, jalapeño, Übermaß, Straße, smørrebrød, crème brûlée.
El niño comió piñata. Ça va? Où est la bibliothèque? Grüß Gott! ¿Qué tal? ¡Hola!
Привет, мир! Как дела? Ελληνικά γράμματα. Γειά σου κόσμε.
日本語のテキスト、東京は大きい都市です。中文文本，北京欢迎你。한국어 텍스트입니다.
مرحبا بالعالم، كيف حالك؟ שלום עולם. नमस्ते दुनिया, आप कैसे हैं? สวัสดีชาวโลก
Emoji: 🤖 🎉 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨ 🚀🚀🚀 :-) ;-) <3
Whitespace:   three spaces,\ttab,\t\ttwo tabs,
newlines

and blank lines\r\nwith CRLF   \n  trailing spaces   
Markdown: # Title\n## Subtitle\n- item one\n- item two\n* bold **text** and _italic_ `code`
URLs: https://example.com/path?query=1&b=2#frag, mailto:someone@example.org
Contractions: don't, can't, won't, shouldn't, I'll, you'd, we've, they're, it's, he's, she's
UPPER CASE CONTRACTIONS: DON'T, I'LL, WE'VE, THEY'RE, IT'S
Repeated words words words and more more more text text text for frequent merges.
the the the the of of of and and and to to to in in in is is is that that that
Numbers 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000 10000 100000 1000000
""" + " ".join(f"word{i} item_{i * 7 % 13} value={i * 31 % 97}" for i in range(60)) + "\n"


def _pseudo_words(n, seed=12345):
    """n made-up words from syllables (a fixed linear congruential sequence), for enough
    distinct words to learn MERGES merges."""
    syll = ["ka", "ri", "to", "men", "sa", "lo", "ve", "dra", "qui", "zen", "bor", "th", "ing", "er",
            "ion", "st", "pla", "mu", "ne", "ol", "ex", "cha", "wy", "ssi", "tor", "al", "ue", "ph"]
    out, x = [], seed
    for _ in range(n):
        k = 2 + x % 3
        w = ""
        for _ in range(k):
            x = (x * 1103515245 + 12345) % (1 << 31)
            w += syll[(x >> 8) % len(syll)]
        x = (x * 1103515245 + 12345) % (1 << 31)
        out.append(w.capitalize() if x % 5 == 0 else w)
    return out


CORPUS += " ".join(_pseudo_words(1500)) + "\n"

# Training split: close to GPT-2's pre-tokenizer; only the learned merges depend on it.
TRAIN_SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")


def byte_to_unicode():
    """GPT-2's byte -> printable code point map."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


B2U = byte_to_unicode()


def train(text, n_merges):
    """Returns the list of merges (a, b), most frequent pair first, ties by text."""
    freq = collections.Counter(TRAIN_SPLIT.findall(text))
    words = [[B2U[b] for b in w.encode("utf-8")] for w in sorted(freq)]
    counts = [freq[w] for w in sorted(freq)]
    pair_count = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += counts[i]
            where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale entry
        merges.append(pair)
        a, b = pair
        touched = collections.Counter()
        for i in sorted(where.pop(pair, ())):
            w = words[i]
            if len(w) < 2:
                continue
            for x, y in zip(w, w[1:]):
                touched[(x, y)] -= counts[i]
            merged, k = [], 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    merged.append(a + b)
                    k += 2
                else:
                    merged.append(w[k])
                    k += 1
            words[i] = merged
            for x, y in zip(merged, merged[1:]):
                touched[(x, y)] += counts[i]
                where[(x, y)].add(i)
        for p, d in touched.items():
            if d == 0:
                continue
            pair_count[p] += d
            if pair_count[p] <= 0:
                del pair_count[p]
            else:
                heapq.heappush(heap, (-pair_count[p], p))
    return merges


def build_vocab():
    """(tokens, token_types, merges as "a b" strings), the same on every run."""
    merges = train(CORPUS, MERGES)
    tokens = [B2U[b] for b in range(256)]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for w in EXTRA_WORDS:
        if w not in seen:
            seen.add(w)
            tokens.append(w)
            types.append(gguf.TokenType.NORMAL)
    for t in CONTROL:
        tokens.append(t)
        types.append(gguf.TokenType.CONTROL)
    for t in USER_DEFINED:
        tokens.append(t)
        types.append(gguf.TokenType.USER_DEFINED)
    return tokens, types, [f"{a} {b}" for a, b in merges]


def write_vocab(path, pre, tokens, types, merges):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"synthetic BPE vocabulary ({pre})")
    # The hyperparameters llama.cpp reads before it stops at vocab_only.
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    if pre != "default":
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|begin_of_text|>"))
    w.add_eos_token_id(tokens.index("<|end_of_text|>"))
    w.add_add_bos_token(pre == "llama-bpe")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_all(outdir):
    """Writes every vocabulary into outdir; returns {pre name: path}."""
    os.makedirs(outdir, exist_ok=True)
    tokens, types, merges = build_vocab()
    paths = {}
    for pre in PRE_NAMES:
        path = os.path.join(outdir, f"bpe-{pre}.gguf")
        write_vocab(path, pre, tokens, types, merges)
        paths[pre] = path
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_bpe_vocab.py OUTDIR")
    for pre, path in build_all(sys.argv[1]).items():
        print(f"{pre}: {path}")
