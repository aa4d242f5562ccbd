"""End-to-end tests of `plumb tokenize` against llama.cpp's tokenization, recorded by
scripts/make-golden.py:

* tests/e2e/data/golden_gemma3.json — the real Gemma 3 model (SPM): every recorded string,
  under every recorded add_bos/special setting, must give the same ids from
  `plumb tokenize --ids`;
* tests/e2e/data/golden_bpe.json — synthetic byte-level BPE vocabularies, one per
  pre-tokenizer, rebuilt here with make_bpe_vocab.py (deterministic) and compared the same way;
* the default `id<TAB>'piece'` output, errors, and loading the real vocabulary.

Texts go to plumb on standard input (`-`), so any bytes can be tested.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import json
import subprocess
from pathlib import Path

import pytest

import make_bpe_vocab
from plumbffi import declare_vocab

DATA = Path(__file__).resolve().parent / "data"


def load(name: str) -> dict:
    with open(DATA / name, encoding="utf-8") as f:
        return json.load(f)


def case_bytes(case: dict) -> bytes:
    return bytes.fromhex(case["text_hex"]) if "text_hex" in case else case["text"].encode("utf-8")


def tokenize(binary: Path, model: Path, text: bytes, add_bos: bool = True, special: bool = True,
             ids: bool = True, extra: tuple = ()) -> subprocess.CompletedProcess:
    args = [str(binary), "tokenize", "-m", str(model)]
    if ids:
        args.append("--ids")
    if not add_bos:
        args.append("--no-bos")
    if not special:
        args.append("--no-special")
    args += list(extra) + ["-"]
    return subprocess.run(args, input=text, capture_output=True, timeout=60)


def parse_ids(p: subprocess.CompletedProcess) -> list[int] | str:
    if p.returncode != 0:
        return f"exit {p.returncode}: {p.stderr.decode('utf-8', 'replace')}"
    return json.loads(p.stdout)


def compare_all(binary: Path, model: Path, cases: list[dict]) -> tuple[int, list[str]]:
    """Runs every case (in parallel); returns (number identical, descriptions of the others)."""
    def one(case):
        got = parse_ids(tokenize(binary, model, case_bytes(case), case["add_bos"], case["special"]))
        return case, got

    same, diffs = 0, []
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for case, got in pool.map(one, cases):
            if got == case["ids"]:
                same += 1
            else:
                text = case.get("text", case.get("text_hex"))
                diffs.append(f"{text!r:.80} add_bos={case['add_bos']} special={case['special']}:\n"
                             f"    llama.cpp {case['ids']}\n    plumb     {got}")
    return same, diffs


def test_gemma_tokenization_matches_llama_cpp(plumb_bin, real_model):
    golden = load("golden_gemma3.json")
    cases = golden["tokenize"]
    assert len({c.get("text", c.get("text_hex")) for c in cases}) >= 40
    same, diffs = compare_all(plumb_bin, real_model, cases)
    assert not diffs, f"{len(diffs)} of {len(cases)} tokenizations differ:\n" + "\n".join(diffs[:20])
    assert same == len(cases)


def test_gemma_prompt_ids_match_llama_cpp(plumb_bin, real_model):
    for p in load("golden_gemma3.json")["prompts"]:
        got = parse_ids(tokenize(plumb_bin, real_model, p["text"].encode("utf-8"), p["add_bos"], p["special"]))
        assert got == p["prompt_ids"], p["name"]


@pytest.fixture(scope="module")
def bpe_vocabs(tmp_path_factory) -> dict[str, Path]:
    paths = make_bpe_vocab.build_all(str(tmp_path_factory.mktemp("bpe")))
    return {k: Path(v) for k, v in paths.items()}


@pytest.mark.parametrize("pre", make_bpe_vocab.PRE_NAMES)
def test_bpe_tokenization_matches_llama_cpp(plumb_bin, bpe_vocabs, pre):
    golden = load("golden_bpe.json")["vocabs"][pre]
    # The vocabulary generator must still give the file the goldens were recorded with.
    from gguf import GGUFReader
    n_tokens = len(GGUFReader(bpe_vocabs[pre]).fields["tokenizer.ggml.tokens"].data)
    assert n_tokens == golden["n_tokens"], "make_bpe_vocab.py changed: rerun scripts/make-golden.py"
    cases = golden["tokenize"]
    same, diffs = compare_all(plumb_bin, bpe_vocabs[pre], cases)
    assert not diffs, f"{pre}: {len(diffs)} of {len(cases)} tokenizations differ:\n" + "\n".join(diffs[:20])


def test_text_output_shows_escaped_pieces(plumb_bin, real_model):
    p = tokenize(plumb_bin, real_model, "Hi <start_of_turn>\n\tx \xe9".encode("utf-8") + b"\xff", ids=False)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode("utf-8").splitlines()
    assert lines[0] == "2\t'<bos>'"
    assert "105\t'<start_of_turn>'" in lines
    assert "107\t'\\n'" in lines
    assert any(line.endswith("'\\xff'") for line in lines), lines  # a byte token
    for line in lines:
        tid, piece = line.split("\t")
        assert tid.isdigit() and piece.startswith("'") and piece.endswith("'")


def test_argument_text_equals_stdin(plumb_bin, real_model):
    text = "The <end_of_turn> café 🤖"
    a = subprocess.run([str(plumb_bin), "tokenize", "-m", str(real_model), "--ids", text],
                       capture_output=True, timeout=60)
    b = tokenize(plumb_bin, real_model, text.encode("utf-8"))
    assert a.returncode == 0 and a.stdout == b.stdout
    assert parse_ids(a)[0] == 2


def test_flags(plumb_bin, real_model):
    text = b"<start_of_turn>hi"
    assert parse_ids(tokenize(plumb_bin, real_model, text)) [:2] == [2, 105]
    assert parse_ids(tokenize(plumb_bin, real_model, text, add_bos=False))[0] == 105
    no_special = parse_ids(tokenize(plumb_bin, real_model, text, special=False))
    assert no_special[0] == 2 and 105 not in no_special


def test_errors(plumb_bin, tmp_path):
    p = subprocess.run([str(plumb_bin), "tokenize"], capture_output=True, timeout=60)
    assert p.returncode == 2 and b"usage" in p.stderr
    p = subprocess.run([str(plumb_bin), "tokenize", "-m", str(tmp_path / "none.gguf"), "x"],
                       capture_output=True, timeout=60)
    assert p.returncode == 1 and b"plumb tokenize:" in p.stderr
    # A GGUF without a tokenizer.
    import gguf
    path = tmp_path / "no-vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    p = subprocess.run([str(plumb_bin), "tokenize", "-m", str(path), "x"], capture_output=True, timeout=60)
    assert p.returncode == 1 and b"tokenizer.ggml.model" in p.stderr, p.stderr


def test_sanitized_binary_on_tricky_inputs(plumb_san_bin, real_model, bpe_vocabs):
    texts = [b"", b"\xff\xfe\xc3", b"<start_of_turn" * 50, b"\n" * 100 + b" " * 100,
             "👨‍👩‍👧‍👦 日本語".encode("utf-8") * 20, b"<bos><eos><end_of_turn>" * 30]
    for model in [real_model, bpe_vocabs["llama-bpe"], bpe_vocabs["default"]]:
        for t in texts:
            for ids in (True, False):
                p = tokenize(plumb_san_bin, model, t, ids=ids)
                err = p.stderr.decode("utf-8", "replace")
                assert p.returncode == 0 and "Sanitizer" not in err and "runtime error" not in err, err[:3000]


def test_vocab_loads(plumb_lib, real_model):
    """The real vocabulary loads, repeatedly, with every token (its speed is measured by
    bench/vocab_load.py, not here: a time limit would fail on a busy machine)."""
    L = ctypes.CDLL(str(plumb_lib))
    declare_vocab(L)
    g = ctypes.c_void_p()
    assert L.plumb_gguf_open(str(real_model).encode(), ctypes.byref(g)) == 0
    try:
        for _ in range(3):
            v = ctypes.c_void_p()
            assert L.plumb_vocab_create(g, ctypes.byref(v)) == 0
            assert L.plumb_vocab_n_tokens(v) == 262144
            L.plumb_vocab_free(v)
    finally:
        L.plumb_gguf_free(g)


def test_qwen_tokenization_matches_llama_cpp(plumb_bin, qwen_model):
    """The real Qwen2.5 vocabulary (byte-level BPE, qwen2 pre-tokenizer, 151,936 tokens) on
    the corpus plus code, CJK, emoji, ChatML and FIM markup (golden_qwen2.json)."""
    golden = load("golden_qwen2.json")
    assert golden["model"] == qwen_model.name
    same, diffs = compare_all(plumb_bin, qwen_model, golden["tokenize"])
    assert not diffs, f"{len(diffs)} of {same + len(diffs)} differ:\n" + "\n".join(diffs[:10])
