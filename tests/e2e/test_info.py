"""Tests of `plumb --version` / `plumb info`: the version line, a features line that lists
AVX2, AVX512F and AVX512VNNI exactly when /proc/cpuinfo says the CPU has them, and the devices
section (the CPU first, with its name and the machine's memory; a kind of device with none
here says why). Also checks that the shared library reports the same version and devices
through its C interface.
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


def _devices(stdout: str) -> list[str]:
    """The lines of the "devices:" section, without their indentation."""
    lines = stdout.splitlines()
    assert "devices:" in lines, stdout
    out = []
    for l in lines[lines.index("devices:") + 1:]:
        if not l.startswith("  "):
            break
        out.append(l.strip())
    return out


def test_devices_list_the_cpu(plumb_bin, run):
    r = run(plumb_bin, "info")
    assert r.rc == 0 and r.stderr == "", r.describe()
    devices = _devices(r.stdout)
    assert devices, r.stdout
    # the CPU comes first, under the name the cpu: line gives it (its brand string)
    brand = next(l for l in r.stdout.splitlines() if l.startswith("cpu: "))[len("cpu: "):].split(" / ")[0]
    m = re.fullmatch(r"cpu +(.+) \((.+)\), ([\d.]+) (MiB|GiB)", devices[0])
    assert m, devices
    assert "kernels" in m.group(2) and (m.group(1) == brand or brand == "unknown"), devices[0]
    shown = float(m.group(3)) * (1 << (20 if m.group(4) == "MiB" else 30))
    mem_total = int(re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M).group(1)) * 1024
    assert shown == pytest.approx(mem_total, rel=0.05), (devices[0], mem_total)
    for line in devices[1:]:  # other devices ("opencl:0 NAME (DRIVER), N GiB"), or why a kind has none
        assert re.fullmatch(r"[a-z]+:\d+ +.+ \(.+\), .+", line) or re.fullmatch(r"[a-z]+ +none: .+", line), line


def test_library_lists_the_same_devices(plumb_lib, plumb_bin, run):
    class Desc(ctypes.Structure):
        _fields_ = [("spec", ctypes.c_char * 32), ("name", ctypes.c_char * 128), ("driver", ctypes.c_char * 128),
                    ("memory", ctypes.c_uint64)]
    lib = ctypes.CDLL(str(plumb_lib))
    n = lib.plumb_device_count()
    assert n >= 1
    specs = []
    for i in range(n):
        d = Desc()
        assert lib.plumb_device_get(i, ctypes.byref(d)) == 0
        specs.append(d.spec.decode())
    assert specs[0] == "cpu"
    assert lib.plumb_device_get(n, ctypes.byref(Desc())) != 0
    listed = [l.split()[0] for l in _devices(run(plumb_bin, "info").stdout) if " none: " not in l]
    assert listed == specs
