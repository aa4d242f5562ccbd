"""Shared fixtures of the end-to-end tests: the plumb binaries and library named by the
PLUMB_BIN, PLUMB_SAN_BIN and PLUMB_LIB environment variables (paths relative to the
repository root; the Makefile's e2e-test target sets them), a helper that runs a binary and
collects what it did, and the real model (fetched with scripts/get-model.sh when absent).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent
MODEL = REPO / "models" / "gemma-3-270m-q4_k_m.gguf"
QWEN_MODEL = REPO / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

sys.path.insert(0, str(E2E))  # so tests can `import ggufcraft`

# Sanitizer settings: leaks are reported, errors give a recognisable exit status.
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
}
SAN_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")


def _artifact(var: str, default: str) -> Path:
    value = os.environ.get(var, default)
    p = Path(value)
    if not p.is_absolute():
        p = REPO / p
    if not p.is_file():
        pytest.fail(f"{var}={value!r}: {p} does not exist; build it first (make build sanitize) "
                    f"or run the tests with `make e2e-test`", pytrace=False)
    return p


@pytest.fixture(scope="session")
def plumb_bin() -> Path:
    """The release plumb command (PLUMB_BIN, default build/plumb)."""
    return _artifact("PLUMB_BIN", "build/plumb")


@pytest.fixture(scope="session")
def plumb_san_bin() -> Path:
    """The ASan+UBSan plumb command (PLUMB_SAN_BIN, default build-san/plumb)."""
    return _artifact("PLUMB_SAN_BIN", "build-san/plumb")


@pytest.fixture(scope="session")
def plumb_lib() -> Path:
    """The shared library (PLUMB_LIB, default build/libplumb.so)."""
    return _artifact("PLUMB_LIB", "build/libplumb.so")


@dataclass
class Run:
    args: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def sanitizer_report(self) -> bool:
        return any(m in self.stderr for m in SAN_MARKERS)

    def describe(self) -> str:
        return (f"$ {' '.join(self.args)}\nexit {self.rc} after {self.seconds:.3f} s\n"
                f"--- stdout (first 2000 chars)\n{self.stdout[:2000]}\n--- stderr\n{self.stderr[:4000]}")


def run_plumb(binary: Path, *args, timeout: float = 60.0) -> Run:
    """Runs binary with args (sanitizer options set), returns what happened. A timeout is a
    test failure, not an exception to catch."""
    argv = [str(binary), *[str(a) for a in args]]
    env = dict(os.environ, **SAN_ENV)
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"$ {' '.join(argv)} did not finish within {timeout} s; stderr so far: "
                    f"{(e.stderr or b'')[:2000]!r}")
    dt = time.monotonic() - t0
    return Run(argv, p.returncode, p.stdout.decode("utf-8", "replace"),
               p.stderr.decode("utf-8", "replace"), dt)


@pytest.fixture(scope="session")
def run():
    """run(binary, *args, timeout=60) -> Run."""
    return run_plumb


@pytest.fixture
def gguf_dir(tmp_path: Path) -> Path:
    """A fresh directory for the test's files."""
    d = tmp_path / "gguf"
    d.mkdir()
    return d


def _fetched(model: Path) -> Path:
    """model (under models/), downloaded with scripts/get-model.sh when absent. Failing to get
    it fails the test (it is never skipped)."""
    if model.is_file():
        return model
    script = REPO / "scripts" / "get-model.sh"
    try:
        p = subprocess.run(["bash", str(script), model.name], cwd=REPO, capture_output=True, timeout=1800)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        ok = p.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as e:
        out, ok = f"{script}: {e}", False
    if not ok or not model.is_file():
        pytest.fail(f"the real model {model} is missing and scripts/get-model.sh could not fetch it:\n{out}",
                    pytrace=False)
    return model


@pytest.fixture(scope="session")
def real_model() -> Path:
    """models/gemma-3-270m-q4_k_m.gguf (Gemma 3 270M, pretrained)."""
    return _fetched(MODEL)


@pytest.fixture(scope="session")
def qwen_model() -> Path:
    """models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf (qwen2, instruction-tuned)."""
    return _fetched(QWEN_MODEL)


@pytest.fixture(scope="module")
def qwen_server(plumb_bin, qwen_model):
    """A `plumb serve` of the Qwen model (4 slots, 1024 positions each) for one test module."""
    from serving import Server
    s = Server(plumb_bin, qwen_model, "--parallel", "4", "-c", "1024")
    yield s
    s.stop()
