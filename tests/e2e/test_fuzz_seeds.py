"""Checks the fuzzer's committed seed corpus: fuzz/corpus/seed-*.gguf is exactly what
make_fuzz_seeds.py writes, every seed is under 4 KiB, the seed-ok-* files are accepted and
the seed-bad-* files rejected (cleanly, under the sanitizers) by `plumb inspect`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import make_fuzz_seeds

CORPUS = make_fuzz_seeds.REPO / "fuzz" / "corpus"
SEEDS = make_fuzz_seeds.seeds()


def test_corpus_is_up_to_date():
    on_disk = {p.name[len("seed-"):-len(".gguf")]: p.read_bytes() for p in CORPUS.glob("seed-*.gguf")}
    assert set(on_disk) == set(SEEDS), "run: .venv/bin/python tests/e2e/make_fuzz_seeds.py"
    for name, raw in SEEDS.items():
        assert on_disk[name] == raw, f"seed-{name}.gguf is stale; rerun make_fuzz_seeds.py"


def test_seed_count_and_sizes():
    assert len(SEEDS) >= 15
    assert all(len(raw) < 4096 for raw in SEEDS.values())
    assert any(n.startswith("ok-") for n in SEEDS) and any(n.startswith("bad-") for n in SEEDS)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_verdict(plumb_san_bin, run, tmp_path: Path, name):
    p = tmp_path / f"seed-{name}.gguf"
    p.write_bytes(SEEDS[name])
    r = run(plumb_san_bin, "inspect", "--json", p)
    assert not r.sanitizer_report, r.describe()
    if name.startswith("ok-"):
        assert r.rc == 0 and r.stderr == "", r.describe()
    else:
        assert r.rc == 1 and len(r.stderr_lines) == 1 and r.stderr.startswith(f"plumb inspect: {p}: "), r.describe()
