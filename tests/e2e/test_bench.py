"""`plumb bench` on the real model, kept short (small -p/-n/-r): the JSON and markdown
outputs have every field and consistent numbers, -p 0 / -n 0 skip their tests, and bad
arguments give one error line and exit status 2 (1 when the model cannot take them). Speeds
are checked for sanity (positive, finite), never against a threshold: benchmarks print
numbers, tests check behaviour.

The bytes a generated token reads are recomputed here from the file's tensors: every
tensor but the embedding table, one embedding row (the whole table too when it is also the
output head), of a mixture-of-experts model's expert tensors the share of the experts a
token is routed to, plus the F16 K and V of the attended positions averaged over the tokens.
"""
import json
import math
import re
import statistics

import gguf
import pytest

P, N, REPS = 16, 4, 2


def expected_bytes_per_token(plumb_bin, model, run, n_gen, depth=0):
    """From the tensor list of `plumb inspect --json` (gguf-py's reader is too slow on a
    262k-token vocabulary), with every tensor's size recomputed from gguf-py's block sizes."""
    r = run(plumb_bin, "inspect", model, "--json", timeout=60)
    assert r.rc == 0, r.describe()
    info = json.loads(r.stdout)

    def nbytes(t):
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t["type"]]]
        return t["shape"][0] // block * size * math.prod(t["shape"][1:])

    tensors = {t["name"]: t for t in info["tensors"]}
    for t in tensors.values():
        assert t["bytes"] == nbytes(t), t
    arch = info["architecture"]
    meta = {m["key"]: m["value"] for m in info["metadata"] if m["type"] != "array"}
    n_expert, n_used = meta.get(f"{arch}.expert_count", 0), meta.get(f"{arch}.expert_used_count", 0)

    def read(t):  # a token runs n_used of the n_expert experts of an expert tensor
        return nbytes(t) // n_expert * n_used if n_expert and t["name"].endswith("_exps.weight") else nbytes(t)

    embd = tensors["token_embd.weight"]
    total = sum(read(t) for t in tensors.values()) - nbytes(embd) + nbytes(embd) // embd["shape"][1]
    if "output.weight" not in tensors:
        total += nbytes(embd)
    n_layer, n_head_kv = meta[f"{arch}.block_count"], meta[f"{arch}.attention.head_count_kv"]
    head_dim = meta[f"{arch}.attention.key_length"]
    window = meta.get(f"{arch}.attention.sliding_window", 0) if arch == "gemma3" else 0
    sliding = sum(1 for il in range(n_layer) if window and il % 6 < 5)
    per_layer = 2 * n_head_kv * head_dim * 2  # K and V, F16
    kv = 0
    for i in range(depth, depth + n_gen):
        kv += (i + 1) * per_layer * (n_layer - sliding) + min(i + 1, window or i + 1) * per_layer * sliding
    return total + kv / n_gen


@pytest.fixture(scope="module")
def bench_json(plumb_bin, real_model, run):
    r = run(plumb_bin, "bench", "-m", real_model, "-p", P, "-n", N, "-t", "1,2", "-r", REPS, "-o", "json",
            timeout=120)
    assert r.rc == 0, r.describe()
    return json.loads(r.stdout), r


def test_json_fields_and_numbers(bench_json, plumb_bin, real_model, run):
    rows, r = bench_json
    assert [(x["threads"], x["test"]) for x in rows] == [(1, f"pp{P}"), (1, f"tg{N}"), (2, f"pp{P}"), (2, f"tg{N}")]
    for x in rows:
        assert x["model"] == real_model.name
        assert x["arch"] == "gemma3"
        assert x["size"] == real_model.stat().st_size
        assert x["params"] > 0 and x["reps"] == REPS
        samples = x["samples_ts"]
        assert len(samples) == REPS and all(math.isfinite(s) and s > 0 for s in samples), r.describe()
        assert math.isfinite(x["avg_ts"]) and x["avg_ts"] > 0
        assert x["avg_ts"] == pytest.approx(statistics.fmean(samples), rel=1e-6)
        assert x["stddev_ts"] >= 0
        assert x["stddev_ts"] == pytest.approx(statistics.stdev(samples), rel=1e-6, abs=1e-9)
        assert math.isfinite(x["membw_gbs"]) and x["membw_gbs"] > 0
        if x["test"].startswith("pp"):
            assert (x["n_prompt"], x["n_gen"]) == (P, 0)
            for k in ("bytes_per_token", "avg_gbs", "stddev_gbs", "roofline_ts", "roofline_fraction"):
                assert x[k] is None, k
        else:
            assert (x["n_prompt"], x["n_gen"]) == (0, N)
            assert x["bytes_per_token"] == pytest.approx(expected_bytes_per_token(plumb_bin, real_model, run, N), rel=1e-9)
            assert x["avg_gbs"] == pytest.approx(x["bytes_per_token"] * x["avg_ts"] / 1e9, rel=1e-6)
            assert x["stddev_gbs"] == pytest.approx(x["bytes_per_token"] * x["stddev_ts"] / 1e9, rel=1e-6, abs=1e-9)
            assert x["roofline_ts"] == pytest.approx(x["membw_gbs"] * 1e9 / x["bytes_per_token"], rel=1e-6)
            assert x["roofline_fraction"] == pytest.approx(x["avg_ts"] / x["roofline_ts"], rel=1e-6)


def test_markdown_table_and_roofline(plumb_bin, real_model, run):
    r = run(plumb_bin, "bench", "-m", real_model, "-p", "8,0", "-n", "0,2", "-t", "1", "-r", "1", timeout=60)
    assert r.rc == 0, r.describe()
    lines = r.stdout.splitlines()
    assert lines[0] == "| model | size | params | threads | test | t/s | GB/s |"
    rows = [l for l in lines[2:] if l.startswith("| ")]
    assert [row.split(" | ")[4] for row in rows] == ["pp8", "tg2"], r.stdout
    assert rows[0].split(" | ")[0] == f"| {real_model.name}"
    assert rows[0].rstrip().endswith("| - |")  # no GB/s for prompt processing
    bw = [l for l in lines if l.startswith("threads 1: read bandwidth ")]
    assert len(bw) == 1 and "tg2 roofline" in bw[0] and "reached" in bw[0], r.stdout
    # the roofline of a tg test comes from the bandwidth read right around its repetitions
    m = re.search(r"tg2 roofline ([0-9.]+) t/s \(([0-9.]+) MB/token, ([0-9.]+) GB/s read around its repetitions\)", bw[0])
    assert m, bw[0]
    assert float(m[1]) == pytest.approx(float(m[3]) * 1e3 / float(m[2]), rel=0.01)


def test_depth(plumb_bin, real_model, run):
    """-d D: each test after D tokens in the context, named as llama-bench names it; a
    generated token reads the K and V of the positions it attends, up to the sliding window of
    the local layers (depth 600 passes the model's 512)."""
    r = run(plumb_bin, "bench", "-m", real_model, "-p", "8", "-n", "2", "-d", "0,600", "-t", "2", "-r", "1", "-o",
            "json", "--no-membw", timeout=120)
    assert r.rc == 0, r.describe()
    rows = json.loads(r.stdout)
    assert [(x["test"], x["n_prompt"], x["n_gen"], x["n_depth"]) for x in rows] == [
        ("pp8", 8, 0, 0), ("tg2", 0, 2, 0), ("pp8 @ d600", 8, 0, 600), ("tg2 @ d600", 0, 2, 600)]
    assert all(x["avg_ts"] > 0 for x in rows)
    for x in rows[1], rows[3]:
        want = expected_bytes_per_token(plumb_bin, real_model, run, 2, x["n_depth"])
        assert x["bytes_per_token"] == pytest.approx(want, rel=1e-9)
    assert rows[3]["bytes_per_token"] > rows[1]["bytes_per_token"]
    r = run(plumb_bin, "bench", "-m", real_model, "-p", "0", "-n", "1", "-d", "20", "-t", "1", "-r", "1", timeout=60)
    assert r.rc == 0, r.describe()
    assert "| tg1 @ d20 |" in r.stdout and "; tg1 @ d20 roofline " in r.stdout, r.stdout


def test_zero_lengths_skip_and_no_membw(plumb_bin, real_model, run):
    r = run(plumb_bin, "bench", "-m", real_model, "-p", "0", "-n", "2", "-t", "1", "-r", "1", "-o", "json",
            "--no-membw", timeout=60)
    assert r.rc == 0, r.describe()
    rows = json.loads(r.stdout)
    assert [x["test"] for x in rows] == ["tg2"]
    assert rows[0]["membw_gbs"] is None and rows[0]["roofline_ts"] is None
    assert rows[0]["avg_gbs"] > 0


@pytest.mark.parametrize("args,rc", [
    ([], 2),
    (["-m"], 2),
    (["-p", "x"], 2),
    (["-p", "1,,2"], 2),
    (["-p", "-1"], 2),
    (["-p", "65537"], 2),
    (["-p", ",".join(["1"] * 17)], 2),
    (["-n", "2.5"], 2),
    (["-t", "0"], 2),
    (["-t", ""], 2),
    (["-r", "0"], 2),
    (["-o", "tsv"], 2),
    (["--frobnicate"], 2),
    (["-p", "0", "-n", "0"], 2),
    # usage is fine; the model's context is too short: found once it is loaded
    (["-p", "40000"], 1),
    (["-d", "-1"], 2),
    (["-d", "x"], 2),
    (["-p", "16", "-d", "32760"], 1),
], ids=lambda a: " ".join(a) or "no-args" if isinstance(a, list) else None)
def test_bad_arguments(plumb_bin, real_model, run, args, rc):
    argv = ["bench"] + (["-m", real_model] if args and args != ["-m"] else []) + args
    r = run(plumb_bin, *argv, timeout=30)
    assert r.rc == rc, r.describe()
    assert r.stdout == ""
    assert len(r.stderr_lines) == 1 and r.stderr_lines[0].startswith("plumb bench: "), r.describe()


def test_missing_model_file(plumb_bin, tmp_path, run):
    r = run(plumb_bin, "bench", "-m", tmp_path / "absent.gguf", timeout=30)
    assert r.rc == 1 and len(r.stderr_lines) == 1 and "absent.gguf" in r.stderr, r.describe()


def _profile_rows(stderr):
    lines = stderr.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("plumb profile: CPU backend"))
    rows = []
    for l in lines[start + 2:]:
        if not l.strip().endswith(("token", "batch", "2-7")) and "%" not in l:
            break
        f = l.split()
        row = {"share": float(f[0].rstrip("%")), "ms": float(f[1]), "calls": int(f[2]), "op": f[3]}
        if row["op"] == "mul_mat":
            row.update(type=f[4], k=int(f[5]), n=int(f[7]), tokens=" ".join(f[8:]))
        elif row["op"] == "attn":
            row.update(tokens=" ".join(f[4:]))
        rows.append(row)
    return lines[start], rows


def test_profile_counts_every_node(plumb_bin, real_model):
    """PLUMB_PROFILE=1: the per-op table on stderr counts each kind of node exactly as often as
    the bench runs it, its shares add up, and without the variable nothing is printed."""
    import os
    import subprocess
    argv = [str(plumb_bin), "bench", "-m", str(real_model), "-p", "16", "-n", "4", "-t", "2", "-r", "1",
            "--no-membw", "-o", "json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=dict(os.environ, PLUMB_PROFILE="1"))
    assert r.returncode == 0, r.stderr
    head, rows = _profile_rows(r.stderr)
    assert head.startswith("plumb profile: CPU backend, 2 threads")
    assert abs(sum(x["share"] for x in rows) - 100.0) < 0.5
    assert all(x["ms"] >= 0 and x["calls"] > 0 for x in rows)
    mm = {(x["type"], x["k"], x["n"], x["tokens"]): x["calls"] for x in rows if x["op"] == "mul_mat"}
    # pp16 twice (warm-up + 1 repetition): 18 layers x (gate, up) as a batch, the head for the
    # last position only; tg: a 1-token warm-up and 4 tokens, one decode each
    assert mm[("Q5_0", 640, 2048, "batch")] == 2 * 18 * 2
    assert mm[("Q5_0", 640, 2048, "1 token")] == 5 * 18 * 2
    assert mm[("Q8_0", 640, 262144, "1 token")] == 2 + 5
    assert ("Q8_0", 640, 262144, "batch") not in mm
    attn = {x["tokens"]: x["calls"] for x in rows if x["op"] == "attn"}
    assert attn == {"batch": 2 * 18, "1 token": 5 * 18}
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "PLUMB_PROFILE"})
    assert plain.returncode == 0 and "plumb profile" not in plain.stderr


def test_model_load_modes(plumb_bin, real_model, run):
    """By default the file is read into memory; --mmap keeps the weights in the file's mapping.
    Both say so and how long the load took."""
    for extra, want in (([], "file read into memory"), (["--mmap"], "weights in a mapping of the file (--mmap)")):
        r = run(plumb_bin, "bench", "-m", real_model, "-p", "0", "-n", "2", "-t", "1", "-r", "1", "--no-membw",
                *extra, timeout=60)
        assert r.rc == 0, r.describe()
        load = [l for l in r.stdout.splitlines() if l.startswith("model load: ")]
        assert len(load) == 1 and load[0].endswith(want), r.stdout
        assert 0 <= float(load[0].split()[2]) < 60


def test_repacked_weights_are_the_kept_weights_size(plumb_bin, real_model, run):
    """`repacked weights:` is the memory the context keeps in the GEMM's interleaved layout: on a
    CPU whose kernels keep a layout (AVX-512 VNNI: Q4_0, Q5_0, Q8_0, as large as the file's rows,
    Q6_K the same, and Q4_K, 148 bytes a super-block), the bytes of those matmul weights (here the
    tied Q8_0 embeddings, which are the output head, and the layers' Q5_0/Q8_0/Q4_K/Q6_K), rows rounded up to
    groups of 16, recomputed from gguf-py's block sizes; elsewhere, and always with --no-repack,
    none."""
    r = run(plumb_bin, "inspect", real_model, "--json", timeout=60)
    assert r.rc == 0, r.describe()
    kept = 0
    for t in json.loads(r.stdout)["tensors"]:
        if t["type"] in ("Q4_0", "Q5_0", "Q8_0", "Q4_K", "Q6_K") and len(t["shape"]) == 2:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t["type"]]]
            if t["type"] == "Q4_K":  # its scales and mins a byte each: 148 bytes a super-block instead of 144
                size += 4
            kept += t["shape"][0] // block * size * ((t["shape"][1] + 15) // 16 * 16)
    info = run(plumb_bin, "info", timeout=60)
    assert info.rc == 0, info.describe()
    vnni = "avx512vnni kernels" in info.stdout
    for extra, want in (([], kept if vnni else 0), (["--no-repack"], 0)):
        b = run(plumb_bin, "bench", "-m", real_model, "-p", "8", "-n", "0", "-t", "1", "-r", "1", "--no-membw", *extra,
                timeout=120)
        assert b.rc == 0, b.describe()
        line = [l for l in b.stdout.splitlines() if l.startswith("repacked weights: ")]
        assert len(line) == 1, b.stdout
        assert abs(float(line[0].split()[2]) - want / 1048576) < 0.006, (line, want)
    assert kept > 150 * 1048576  # the tied head alone is 178 MB


def test_kernel_bench_covers_every_type_and_setting(plumb_bin):
    """build/plumb_kernel_bench (next to plumb): one row per SIMD set in use, model weight type
    and setting (l1, matmul, and the register-tiled GEMM and its block-sum variant where the set
    has them: AVX-512 for all five shapes' types, and for the K types the GEMM two packed groups
    at a time; AVX2 the GEMM of all five, without block sums), with a positive
    finite rate, then the core's int8 peak where the CPU has AVX-512 VNNI; with
    PLUMB_KERNELS=generic it says there is no SIMD set instead."""
    import os
    import re
    import subprocess
    exe = plumb_bin.parent / "plumb_kernel_bench"
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:] if l.startswith("|")]

    def setting(cell):
        return ("gemm-sums" if cell.startswith("gemm, block sums") else "gemm-two" if cell.startswith("gemm, two groups")
                else "gemm" if cell.startswith("gemm") else cell)

    sets = sorted({row[0] for row in rows})
    assert sets and set(sets) <= {"avx2", "avx512vnni"}, r.stdout
    shapes = (("Q5_0", "640"), ("Q8_0", "640"), ("Q4_K", "1024"), ("Q4_K", "2048"), ("Q6_K", "2048"))
    for s in sets:
        got = {(row[1], row[2], setting(row[3])) for row in rows if row[0] == s}
        want = {(t, k, m) for t, k in shapes for m in ("l1", "matmul")}
        if s == "avx512vnni":
            want |= {(t, k, m) for t, k in shapes for m in ("gemm", "gemm-sums")}
            want |= {(t, k, "gemm-two") for t, k in shapes[2:]}
        else:
            want |= {(t, k, "gemm") for t, k in shapes}
        assert got == want, r.stdout
    assert all(0 < float(row[5]) < 1e5 and "NaN" not in row[-1] for row in rows), r.stdout
    peak = [l for l in lines if l.startswith("int8 peak")]
    assert len(peak) == 1, r.stdout
    if "avx512vnni" in sets:
        m = re.fullmatch(r"int8 peak of this core \(512-bit vpdpbusd, 12 independent chains\): ([0-9.]+) G MAC/s", peak[0])
        assert m and 0 < float(m.group(1)) < 1e5, peak
    else:
        assert peak[0] == "int8 peak: not measured (the AVX-512 VNNI set is not in use)"
    g = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PLUMB_KERNELS="generic"))
    assert g.returncode == 0 and "no SIMD kernel set in use (generic)" in g.stdout


def test_moe_tokens_read_their_routed_experts(plumb_bin, run, tmp_path):
    """A mixture-of-experts model (synthetic qwen3moe: 20 Q4_K experts a layer, 4 used): a
    generated token reads 4/20 of every expert tensor, not all of them."""
    import make_moe_models

    path = tmp_path / "qwen3moe-q4k.gguf"
    make_moe_models.write_model(path, "qwen3moe-q4k")
    r = run(plumb_bin, "bench", "-m", path, "-p", "0", "-n", "4", "-t", "1", "-r", "1", "-o", "json", "--no-membw",
            timeout=60)
    assert r.rc == 0, r.describe()
    (x,) = json.loads(r.stdout)
    want = expected_bytes_per_token(plumb_bin, path, run, 4)
    assert x["bytes_per_token"] == pytest.approx(want, rel=1e-9)
    r = run(plumb_bin, "inspect", path, "--json")
    experts = sum(t["bytes"] for t in json.loads(r.stdout)["tensors"] if t["name"].endswith("_exps.weight"))
    # below the whole file less the 16 of every 20 experts a token leaves alone (the file's
    # embedding table, read one row a token, is larger than the KV cache of 4 positions)
    assert experts > 0 and x["bytes_per_token"] < path.stat().st_size - experts // 20 * 16


def test_csv_has_llama_bench_columns(plumb_bin, real_model, run):
    """-o csv: llama-bench's header names for the columns plumb has, every field quoted as
    llama-bench quotes it, one row per test; the numbers agree with -o json's meaning."""
    import csv
    import io
    r = run(plumb_bin, "bench", "-m", real_model, "-p", "8", "-n", "2", "-t", "1,2", "-r", "2", "--no-membw",
            "-o", "csv", timeout=120)
    assert r.rc == 0 and r.stderr == "", r.describe()
    lines = r.stdout.splitlines()
    header = lines[0].split(",")
    assert header == ["cpu_info", "backends", "model_filename", "model_type", "model_size", "model_n_params",
                      "n_batch", "n_threads", "type_k", "type_v", "n_gpu_layers", "use_mmap", "n_prompt", "n_gen",
                      "n_depth",
                      "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts"]
    assert all(l.startswith('"') and l.endswith('"') for l in lines[1:]), r.stdout
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["n_threads"], x["n_prompt"], x["n_gen"], x["n_depth"]) for x in rows] == [
        ("1", "8", "0", "0"), ("1", "0", "2", "0"), ("2", "8", "0", "0"), ("2", "0", "2", "0")]
    for x in rows:
        assert x["model_filename"] == str(real_model)
        assert x["model_type"] == "gemma3 268M Q4_K_M"
        assert int(x["model_size"]) == real_model.stat().st_size
        assert int(x["model_n_params"]) == 268098176
        assert x["backends"] == "CPU" and x["type_k"] == x["type_v"] == "f16" and x["use_mmap"] == "0"
        assert x["n_gpu_layers"] == "0"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", x["test_time"])
        n = int(x["n_prompt"]) or int(x["n_gen"])
        avg_ts, avg_ns = float(x["avg_ts"]), float(x["avg_ns"])
        assert avg_ts > 0 and float(x["stddev_ts"]) >= 0 and float(x["stddev_ns"]) >= 0
        # the mean of the rates is at least the rate of the mean duration (Jensen)
        assert avg_ts >= n * 1e9 / avg_ns * (1 - 1e-6)
        # and it is the mean of the two repetitions' rates, whose durations the ns columns give:
        # their mean and sample deviation (mean -+ sd / sqrt(2)), whatever the machine's load
        d = float(x["stddev_ns"]) / math.sqrt(2)
        rates = [n * 1e9 / (avg_ns - d), n * 1e9 / (avg_ns + d)]
        assert avg_ts == pytest.approx(sum(rates) / 2, rel=1e-4)
        assert float(x["stddev_ts"]) == pytest.approx(abs(rates[0] - rates[1]) / math.sqrt(2), rel=1e-3, abs=1e-3)
