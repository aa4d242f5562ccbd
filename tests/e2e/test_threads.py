"""The default thread count is the number of CPUs the process may use — its affinity mask,
limited by a cgroup v2 CPU quota — not every online CPU: `plumb info` says what it found,
`plumb run` reports the count it used on its stats line, and `plumb bench` measures with it
unless -t says otherwise. taskset pins the process to one CPU to make the difference visible
on any machine with more than one. (The quota parser's cases are unit tests:
tests/unit/test_cpu_count.c.)"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil


TASKSET = shutil.which("taskset")  # util-linux, an essential Debian package


def needs_taskset(test):
    """The test runs under taskset; a machine without it fails the test rather than skipping it."""
    def run_it(*args, **kwargs):
        assert TASKSET is not None, "taskset (util-linux) is not installed"
        return test(*args, **kwargs)
    return functools.wraps(test)(run_it)


def info_threads(run, plumb_bin, *prefix) -> re.Match:
    r = run(prefix[0], *prefix[1:], plumb_bin, "info") if prefix else run(plumb_bin, "info")
    assert r.rc == 0, r.describe()
    m = re.search(r"^threads: (\d+) \(online CPUs (\d+), affinity (\d+), cgroup quota (none|\d+)\)$", r.stdout, re.M)
    assert m, r.describe()
    return m


def stats_threads(r) -> int:
    m = re.search(r"\| threads (\d+)$", r.stderr, re.M)
    assert r.rc == 0 and m, r.describe()
    return int(m.group(1))


def test_info_reports_the_affinity_mask(plumb_bin, run):
    m = info_threads(run, plumb_bin)
    n, online, affinity, quota = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    assert online == os.cpu_count()
    assert affinity == len(os.sched_getaffinity(0))
    assert n == (min(affinity, int(quota)) if quota != "none" else affinity)


@needs_taskset
def test_info_under_taskset(plumb_bin, run):
    m = info_threads(run, plumb_bin, TASKSET, "-c", "0")
    assert m.group(1) == "1" and m.group(3) == "1", m.group(0)


@needs_taskset
def test_run_defaults_to_the_allowed_cpus(plumb_bin, run, real_model):
    args = ["run", "-m", real_model, "-p", "The capital of France is", "-n", "4", "--temp", "0"]
    pinned = run(TASKSET, "-c", "0", plumb_bin, *args, timeout=120)
    assert stats_threads(pinned) == 1
    free = run(plumb_bin, *args, timeout=120)
    assert stats_threads(free) == int(info_threads(run, plumb_bin).group(1))
    # the thread count does not change greedy output
    assert pinned.stdout == free.stdout
    # an explicit -t is taken as given, even above the allowed CPUs
    explicit = run(TASKSET, "-c", "0", plumb_bin, *args, "-t", "2", timeout=120)
    assert stats_threads(explicit) == 2


@needs_taskset
def test_bench_defaults_to_the_allowed_cpus(plumb_bin, run, real_model):
    r = run(TASKSET, "-c", "0", plumb_bin, "bench", "-m", real_model, "-p", "16", "-n", "4", "-r", "1",
            "--no-membw", "-o", "json", timeout=120)
    assert r.rc == 0, r.describe()
    rows = json.loads(r.stdout)
    assert [(x["threads"], x["test"]) for x in rows] == [(1, "pp16"), (1, "tg4")]
