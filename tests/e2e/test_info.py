"""Tests of `plumb --version` / `plumb info`: the version line, and a features line that lists
AVX2, AVX512F and AVX512VNNI exactly when /proc/cpuinfo says the CPU has them. Also checks
that the shared library reports the same version through its C interface.
"""
from __future__ import annotations

import ctypes
import platform
import re
from pathlib import Path

import pytest

# /proc/cpuinfo flag -> the name plumb prints
FLAGS = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI"}


def cpuinfo_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    assert m, "/proc/cpuinfo has no flags line"
    return set(m.group(1).split())


@pytest.mark.parametrize("args", [["--version"], ["info"], ["version"]])
def test_version_and_features(plumb_bin, run, args):
    r = run(plumb_bin, *args)
    assert r.rc == 0 and r.stderr == "", r.describe()
    lines = r.stdout.splitlines()
    assert lines[0] == "plumb 0.1.0", r.describe()
    feat = [l for l in lines if l.startswith("features:")]
    assert len(feat) == 1, r.describe()
    listed = set(feat[0].split(":", 1)[1].split())
    if platform.machine() not in ("x86_64", "AMD64"):
        assert not listed & set(FLAGS.values())
        return
    have = cpuinfo_flags()
    for flag, name in FLAGS.items():
        assert (name in listed) == (flag in have), f"{name}: plumb says {name in listed}, /proc/cpuinfo {flag in have}\n{r.stdout}"
    if "avx2" in have:  # anything with AVX2 has these too
        assert {"AVX", "FMA", "F16C"} <= listed, r.stdout


def test_sanitizer_build_info(plumb_san_bin, run):
    r = run(plumb_san_bin, "info")
    assert r.rc == 0 and not r.sanitizer_report and r.stdout.startswith("plumb 0.1.0\n"), r.describe()


def test_library_version(plumb_lib):
    lib = ctypes.CDLL(str(plumb_lib))
    lib.plumb_version.restype = ctypes.c_char_p
    assert lib.plumb_version() == b"0.1.0"
    lib.plumb_cpu_describe.restype = ctypes.c_char_p
    lib.plumb_cpu_describe.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    buf = ctypes.create_string_buffer(512)
    text = lib.plumb_cpu_describe(buf, 512).decode()
    if platform.machine() == "x86_64":
        assert ("AVX2" in text.split()) == ("avx2" in cpuinfo_flags())
