"""--device and --offload (-ngl, --n-gpu-layers) on every subcommand that loads a model (run,
chat, embed, bench, serve): a device that does not exist is one line naming the devices there
are and exit 1; a bad layer count is a usage error; --device cpu with any --offload computes
exactly what no option does; each subcommand shows where its model computes (run's stats
line, bench's outputs, serve's ready line and /props). None of these tests needs an OpenCL
device: where one is named, every outcome plumb allows is accepted and checked."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

from serving import Server, wait_for

MISSING_MODEL = "/nonexistent/model.gguf"  # an error about it would mean the options were accepted
PROMPT = "The capital of France is"


def _load_args(cmd: str, model) -> list:
    """The arguments that make cmd load model and do as little as possible after."""
    return {
        "run": ["run", "-m", model, "-p", "x", "-n", "1", "--no-stats"],
        "chat": ["chat", "-m", model],
        "embed": ["embed", "-m", model, "hello"],
        "bench": ["bench", "-m", model, "-p", "0", "-n", "1", "-r", "1", "-t", "1", "--no-membw"],
        "serve": ["serve", "-m", model, "--port", "0", "-t", "1"],
    }[cmd]


# ---- a device that does not exist -----------------------------------------------------------
@pytest.mark.parametrize("cmd", ["run", "chat", "embed", "bench", "serve"])
@pytest.mark.parametrize("device", ["nosuch", "cpu:3"])
def test_missing_device_is_one_line_naming_the_devices(run, plumb_bin, real_model, cmd, device):
    r = run(plumb_bin, *_load_args(cmd, real_model), "--device", device, timeout=120)
    assert r.rc == 1 and r.stdout == "", r.describe()
    assert len(r.stderr_lines) == 1, r.describe()
    line = r.stderr_lines[0]
    assert line.startswith(f"plumb {cmd}: ") and f'"{device}"' in line, line
    assert re.search(r"devices: .*\bcpu:0 \(", line), line  # the CPU is always there


def test_missing_device_from_serve_environment(run, plumb_bin, real_model, monkeypatch):
    monkeypatch.setenv("PLUMB_ARG_DEVICE", "nosuch")
    r = run(plumb_bin, "serve", "-m", real_model, "--port", "0")
    assert r.rc == 1 and len(r.stderr_lines) == 1 and '"nosuch"' in r.stderr, r.describe()


def test_serve_catalog_checks_the_device_before_listening(run, plumb_bin, real_model, tmp_path):
    """With --models-dir no model loads until a request names one: the device is checked at
    start all the same, before the server listens."""
    (tmp_path / "gemma.gguf").symlink_to(real_model)
    r = run(plumb_bin, "serve", "--models-dir", tmp_path, "--port", "0", "--device", "cpu:1")
    assert r.rc == 1 and len(r.stderr_lines) == 1 and '"cpu:1"' in r.stderr, r.describe()
    assert "listening" not in r.stderr


# ---- bad layer counts -----------------------------------------------------------------------
@pytest.mark.parametrize("cmd", ["run", "chat", "embed", "bench", "serve"])
@pytest.mark.parametrize("opt", ["--offload", "-ngl", "--n-gpu-layers"])
@pytest.mark.parametrize("value", ["-5", "x", "", "1.5", " 3"])
def test_bad_offload_is_a_usage_error(run, plumb_bin, cmd, opt, value):
    r = run(plumb_bin, *_load_args(cmd, MISSING_MODEL), opt, value)
    assert r.rc == 2 and r.stdout == "", r.describe()
    assert len(r.stderr_lines) == 1 and f"'{value}'" in r.stderr and "bad value" in r.stderr, r.describe()
    assert MISSING_MODEL not in r.stderr


@pytest.mark.parametrize("cmd", ["run", "embed", "bench", "serve"])
def test_empty_device_is_a_usage_error(run, plumb_bin, cmd):
    r = run(plumb_bin, *_load_args(cmd, MISSING_MODEL), "--device=")
    assert r.rc == 2 and len(r.stderr_lines) == 1 and "--device" in r.stderr, r.describe()


@pytest.mark.parametrize("cmd", ["run", "chat", "embed", "bench", "serve"])
def test_help_lists_device_and_offload(run, plumb_bin, cmd):
    r = run(plumb_bin, cmd, "--help")
    assert r.rc == 0, r.describe()
    assert re.search(r"^\s+--device D\s+\S", r.stdout, re.M), r.stdout
    assert re.search(r"^\s+-ngl, --offload N\s+\S", r.stdout, re.M), r.stdout
    assert "--n-gpu-layers" in r.stdout


# ---- the CPU: the same results whatever the layer count -------------------------------------
def _stats_device(stderr: str) -> str:
    m = re.search(r"\| device (.+?) \| threads \d+$", stderr, re.M)
    assert m, stderr
    return m.group(1)


def test_cpu_offload_changes_nothing(run, plumb_bin, real_model):
    base = ["run", "-m", real_model, "-p", PROMPT, "-n", "16", "--temp", "0", "-t", "2"]
    plain = run(plumb_bin, *base, timeout=300)
    assert plain.rc == 0 and plain.stdout.strip(), plain.describe()
    assert _stats_device(plain.stderr) == "cpu"
    for extra in (["--device", "cpu", "--offload", "3"], ["--device=cpu", "-ngl", "99"],
                  ["--n-gpu-layers", "0"], ["--device", "cpu:0", "--offload", "-1"]):
        r = run(plumb_bin, *base, *extra, timeout=300)
        assert r.rc == 0, r.describe()
        assert r.stdout == plain.stdout, (extra, r.stdout, plain.stdout)
        assert _stats_device(r.stderr) == "cpu", r.stderr


def test_chat_stats_show_the_device(plumb_bin, real_model, run):
    import subprocess
    p = subprocess.run([str(plumb_bin), "chat", "-m", str(real_model), "--device", "cpu", "-ngl", "2", "--stats",
                        "-n", "2", "-t", "2"], input=b"hi\n", capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert _stats_device(p.stderr.decode()) == "cpu"


def test_embed_on_cpu_is_the_same(run, plumb_bin, real_model):
    plain = run(plumb_bin, "embed", "-m", real_model, "-t", "2", "hello world", timeout=120)
    cpu = run(plumb_bin, "embed", "-m", real_model, "-t", "2", "--device", "cpu", "--offload", "5", "hello world",
              timeout=120)
    assert plain.rc == 0 and cpu.rc == 0, plain.describe() + cpu.describe()
    assert cpu.stdout == plain.stdout and cpu.stderr == "", cpu.describe()


def test_bench_reports_device_and_offload(run, plumb_bin, real_model):
    base = ["bench", "-m", real_model, "-p", "4", "-n", "1", "-t", "1", "-r", "1", "--no-membw",
            "--device", "cpu", "-ngl", "7"]
    r = run(plumb_bin, *base, "-o", "json", timeout=120)
    assert r.rc == 0 and r.stderr == "", r.describe()
    rows = json.loads(r.stdout)
    assert len(rows) == 2
    for x in rows:  # llama-bench's backends and n_gpu_layers: nothing is offloaded to the CPU
        assert (x["backends"], x["device"], x["n_gpu_layers"]) == ("CPU", "cpu", 0), x
    r = run(plumb_bin, *base, "-o", "csv", timeout=120)
    assert r.rc == 0, r.describe()
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["backends"], x["n_gpu_layers"]) for x in rows] == [("CPU", "0")] * 2, r.stdout
    header = r.stdout.splitlines()[0].split(",")
    assert header.index("n_gpu_layers") == header.index("type_v") + 1  # llama-bench's order
    r = run(plumb_bin, *base, timeout=120)
    assert r.rc == 0, r.describe()
    assert r.stdout.splitlines()[-1] == "device: cpu", r.stdout


# ---- a device kind that may or may not be there ---------------------------------------------
def test_opencl_runs_falls_back_or_is_unknown(run, plumb_bin, real_model):
    """--device opencl: runs there (with an OpenCL device), runs on the CPU after one line
    saying why (plumb built with OpenCL, no device here), or, in a plumb built without it, is
    an unknown device."""
    r = run(plumb_bin, "run", "-m", real_model, "-p", PROMPT, "-n", "2", "--temp", "0", "-t", "2",
            "--device", "opencl", timeout=300)
    if r.rc == 1:
        assert len(r.stderr_lines) == 1 and 'unknown device "opencl"' in r.stderr, r.describe()
        return
    assert r.rc == 0, r.describe()
    device = _stats_device(r.stderr)
    fallback = [l for l in r.stderr_lines if l.startswith("plumb run: no opencl device")]
    if device == "cpu":
        assert len(fallback) == 1 and re.fullmatch(r"plumb run: no opencl device \(.+\); running on the CPU",
                                                   fallback[0]), r.describe()
    else:
        assert not fallback and re.fullmatch(r"opencl:0 \(\d+/\d+ layers\)", device), r.describe()


def test_no_opencl_platform_falls_back_to_the_cpu(run, plumb_bin, real_model, monkeypatch):
    """With no OpenCL driver to find (the ICD loader pointed at an empty place), --device opencl
    runs on the CPU after one line saying why, and computes what the CPU computes; plumb info
    says why there is no OpenCL device. A plumb built without OpenCL calls the name unknown."""
    base = ["run", "-m", real_model, "-p", PROMPT, "-n", "8", "--temp", "0", "-t", "2", "--no-stats"]
    cpu = run(plumb_bin, *base, timeout=300)
    assert cpu.rc == 0, cpu.describe()
    monkeypatch.setenv("OCL_ICD_VENDORS", "/nonexistent")
    monkeypatch.setenv("OPENCL_VENDOR_PATH", "/nonexistent")
    for cmd, args in (("run", base), ("bench", _load_args("bench", real_model)), ("embed", _load_args("embed", real_model))):
        r = run(plumb_bin, *args, "--device", "opencl", "-ngl", "4", timeout=300)
        if r.rc == 1:  # no OpenCL in this build
            assert len(r.stderr_lines) == 1 and 'unknown device "opencl"' in r.stderr, r.describe()
            continue
        assert r.rc == 0, r.describe()
        assert re.fullmatch(rf"plumb {cmd}: no opencl device \(.+\); running on the CPU", r.stderr_lines[0]), r.describe()
        if cmd == "run":
            assert r.stdout == cpu.stdout and len(r.stderr_lines) == 1, r.describe()
    info = run(plumb_bin, "info")
    assert info.rc == 0, info.describe()
    none = [l.strip() for l in info.stdout.splitlines() if l.strip().startswith("opencl")]
    assert all(re.fullmatch(r"opencl +none: .+", l) for l in none), info.stdout


# ---- serve ------------------------------------------------------------------------------------
def test_serve_on_cpu_reports_the_device(plumb_bin, real_model):
    with Server(plumb_bin, real_model, "--device", "cpu", "-ngl", "4", "--parallel", "1") as s:
        wait_for(lambda: any("ready:" in l for l in s.lines), 10, "the ready line")
        assert [l for l in s.lines if "ready:" in l] == ["plumb serve: ready: 1 slots, device cpu"], s.stderr
        status, body = s.get("/props")
        assert status == 200, body
        props = json.loads(body)
        assert (props["device"], props["n_offloaded"]) == ("cpu", 0), props
        st, _, out = s.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 2, "temperature": 0})
        assert st == 200 and out["choices"][0]["text"], out


def test_serve_catalog_loads_on_the_device(plumb_bin, real_model, tmp_path):
    """Every model a catalog's server loads uses --device; the log says where it went."""
    (tmp_path / "gemma.gguf").symlink_to(real_model)
    with Server(plumb_bin, None, "--models-dir", tmp_path, "--device", "cpu", "--parallel", "1") as s:
        st, _, out = s.post("/v1/completions", {"model": "gemma", "prompt": PROMPT, "max_tokens": 1})
        assert st == 200, out
        assert any(re.fullmatch(r"plumb serve: loaded model 'gemma' in [\d.]+ s on cpu", l) for l in s.lines), s.stderr
        assert "ready: 1 slots, device cpu (no model loaded yet)" in s.stderr
        status, body = s.get("/props")
        assert status == 200 and json.loads(body)["device"] == "cpu", body
