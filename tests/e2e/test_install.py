"""`make install` and `make uninstall` (CMake's install rules) into a temporary DESTDIR with a
PREFIX of the test's choosing, no root needed: the exact list of installed files, the shared
library's soname and version links, the man page (rendered by man -l, or groff without man;
every option of every subcommand's --help is in it), the installed command, a C program built
against the staged tree with nothing but `pkg-config --cflags --libs plumb` (shared, and
`--static` against libplumb.a), and an uninstall that leaves no file behind.

The build directory is the one the other tests use (PLUMB_BUILD, else the folder of
PLUMB_BIN, else build/); `make install` builds first, which is a no-op when it is up to date.
pkg-config, a C compiler, readelf and man/groff are installed by `make test`'s set-up
(scripts/setup.sh test): a missing tool fails the test, it never skips.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/opt/plumb"  # under DESTDIR; the uninstall test uses make's default (/usr/local)


def _project_version() -> str:
    m = re.search(r"project\(plumb\s+VERSION\s+([0-9]+\.[0-9]+\.[0-9]+)", (REPO / "CMakeLists.txt").read_text())
    assert m, "CMakeLists.txt: no `project(plumb VERSION x.y.z` line"
    return m.group(1)


VERSION = _project_version()
MAJOR = VERSION.split(".")[0]
SUBCOMMANDS = ["run", "chat", "serve", "template", "tokenize", "inspect", "bench", "info", "embed", "perplexity", "imatrix", "quantize", "pull", "push",
               "list", "rm", "cluster-config", "rpc-server"]


def _build_dir() -> str:
    if os.environ.get("PLUMB_BUILD"):
        return os.environ["PLUMB_BUILD"]
    return str(Path(os.environ.get("PLUMB_BIN", "build/plumb")).parent)


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (make test installs it: scripts/setup.sh test)"
    return path


def _make(target: str, destdir: Path, prefix: str | None) -> subprocess.CompletedProcess:
    # a clean make: no jobserver or variables inherited from the make that runs the tests
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    args = ["make", "--no-print-directory", "-C", str(REPO), target, f"BUILD={_build_dir()}", f"DESTDIR={destdir}"]
    if prefix is not None:
        args.append(f"PREFIX={prefix}")
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"$ {shlex.join(args)}\nexit {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


def _files(root: Path) -> set[str]:
    """Every file and link under root (directories left out), relative to root."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_symlink() or not p.is_dir()}


EXPECTED = {
    "bin/plumb",
    "include/plumb.h",
    "lib/libplumb.a",
    "lib/libplumb.so",
    f"lib/libplumb.so.{MAJOR}",
    f"lib/libplumb.so.{VERSION}",
    "lib/pkgconfig/plumb.pc",
    "share/man/man1/plumb.1",
}

PROGRAM = r"""
#include <plumb.h>
#include <stdio.h>

int main(void) {
    printf("version %s\n", plumb_version());
    printf("header %s\n", PLUMB_VERSION_STRING);
    printf("ok %s\n", plumb_status_message(PLUMB_OK));
    printf("format %s\n", plumb_status_message(PLUMB_E_FORMAT));
    return 0;
}
"""


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """make install DESTDIR=<tmp> PREFIX=/opt/plumb; returns <tmp>/opt/plumb."""
    destdir = tmp_path_factory.mktemp("destdir")
    _make("install", destdir, PREFIX)
    stage = destdir / PREFIX.lstrip("/")
    outside = _files(destdir) - {f"{PREFIX.lstrip('/')}/{f}" for f in _files(stage)}
    assert not outside, f"make install wrote outside DESTDIR/PREFIX: {sorted(outside)}"
    return stage


def test_installed_files(staged: Path):
    assert _files(staged) == EXPECTED
    lib = staged / "lib"
    assert (lib / f"libplumb.so.{VERSION}").is_file() and not (lib / f"libplumb.so.{VERSION}").is_symlink()
    assert os.readlink(lib / f"libplumb.so.{MAJOR}") == f"libplumb.so.{VERSION}"
    assert os.readlink(lib / "libplumb.so") == f"libplumb.so.{MAJOR}"
    assert os.access(staged / "bin" / "plumb", os.X_OK)
    assert (staged / "include" / "plumb.h").read_bytes() == (REPO / "include" / "plumb.h").read_bytes()


def test_soname(staged: Path):
    lib = staged / "lib" / f"libplumb.so.{VERSION}"
    if shutil.which("readelf"):
        out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
        assert f"Library soname: [libplumb.so.{MAJOR}]" in out, out
    else:
        out = subprocess.run([_tool("objdump"), "-p", str(lib)], capture_output=True, text=True, check=True).stdout
        assert re.search(rf"SONAME\s+libplumb\.so\.{MAJOR}\n", out), out


def test_installed_command(staged: Path):
    plumb = staged / "bin" / "plumb"
    v = subprocess.run([str(plumb), "--version"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    assert v.stdout.splitlines()[0] == f"plumb {VERSION}", v.stdout
    i = subprocess.run([str(plumb), "info"], capture_output=True, text=True, timeout=60)
    assert i.returncode == 0, i.stderr
    assert i.stdout.splitlines()[0] == f"plumb {VERSION}" and "features:" in i.stdout, i.stdout


def test_man_page_renders(staged: Path):
    page = staged / "share" / "man" / "man1" / "plumb.1"
    env = dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="100", LC_ALL="C.UTF-8")
    if shutil.which("man"):
        args = ["man", "--warnings", "-l", str(page)]
    else:
        args = [_tool("groff"), "-man", "-Tutf8", "-ww", str(page)]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr.lower(), p.stderr
    text = re.sub(r".\x08", "", p.stdout)  # overstrike bold/underline, if any
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.M), f"no {heading} section in:\n{text[:3000]}"
    for cmd in SUBCOMMANDS:
        assert re.search(rf"^\s+plumb {cmd}$", text, re.M), f"no subsection for plumb {cmd}"
    assert "plumb - run large language models" in text
    assert re.search(rf"^plumb {re.escape(VERSION)}\s", text, re.M), "the page's .TH names another version"


def test_man_page_has_every_option(staged: Path):
    """Every long option a subcommand's --help prints is in the page."""
    source = (staged / "share" / "man" / "man1" / "plumb.1").read_text().replace("\\-", "-")
    plumb = staged / "bin" / "plumb"
    missing = []
    for cmd in SUBCOMMANDS:
        p = subprocess.run([str(plumb), cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"plumb {cmd} --help: exit {p.returncode}\n{p.stderr}"
        # (an option followed by '=' is the --name=VALUE form the help explains, not an option)
        for opt in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w=-])", p.stdout))):
            if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", source):
                missing.append(f"plumb {cmd} {opt}")
    assert not missing, f"options missing from plumb.1: {missing}"


def _pkg_config(pc_dir: Path, *args: str) -> list[str]:
    env = dict(os.environ, PKG_CONFIG_PATH=str(pc_dir))
    env.pop("PKG_CONFIG_LIBDIR", None)
    env.pop("PKG_CONFIG_SYSROOT_DIR", None)
    p = subprocess.run([_tool("pkg-config"), *args, "plumb"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, f"pkg-config {' '.join(args)} plumb: {p.stderr}"
    return shlex.split(p.stdout)


def _compile(tmp_path: Path, flags: list[str], name: str) -> Path:
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = tmp_path / name
    cc = os.environ.get("CC", "cc")
    _tool(cc)
    args = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src), *flags]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"$ {shlex.join(args)}\n{p.stderr}"
    return exe


def _needed(exe: Path) -> list[str]:
    out = subprocess.run([_tool("readelf"), "-d", str(exe)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _check_output(out: str):
    assert out.splitlines() == [f"version {VERSION}", f"header {VERSION}", "ok success", "format malformed file"], out


def test_program_against_shared_library(staged: Path, tmp_path: Path):
    flags = _pkg_config(staged / "lib" / "pkgconfig", "--cflags", "--libs")
    assert "-lplumb" in flags, flags
    exe = _compile(tmp_path, flags, "prog_shared")
    assert f"libplumb.so.{MAJOR}" in _needed(exe)
    env = dict(os.environ, LD_LIBRARY_PATH=str(staged / "lib"))
    p = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    _check_output(p.stdout)
    # the library that ran is the staged one
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, env=env).stdout
    assert str(staged / "lib" / f"libplumb.so.{MAJOR}") in ldd, ldd


def test_program_against_static_library(staged: Path, tmp_path: Path):
    """pkg-config --static against libplumb.a: the linker takes a library's .so over its .a in
    the same folder, so the program is built against a copy of the staged tree that holds the
    archive only (the tree a static-only install leaves), which also proves that plumb.pc's
    Libs.private / Requires.private name everything the archive needs."""
    prefix = tmp_path / "static-prefix"
    shutil.copytree(staged, prefix, symlinks=True)
    for so in (prefix / "lib").glob("libplumb.so*"):
        so.unlink()
    flags = _pkg_config(prefix / "lib" / "pkgconfig", "--static", "--cflags", "--libs")
    for lib in ("-lplumb", "-lpcre2-8", "-lcjson", "-lm"):
        assert lib in flags, f"{lib} missing from pkg-config --static --libs: {flags}"
    exe = _compile(tmp_path, flags, "prog_static")
    assert not [n for n in _needed(exe) if n.startswith("libplumb")], _needed(exe)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    p = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    _check_output(p.stdout)


def test_uninstall_leaves_nothing(tmp_path: Path):
    """make install then make uninstall with the same DESTDIR and make's default PREFIX:
    install puts the expected files there and uninstall removes every one, and only those."""
    destdir = tmp_path / "destdir"
    stage = destdir / "usr" / "local"
    _make("install", destdir, None)
    assert _files(stage) == EXPECTED
    bystander = stage / "lib" / "libother.so.1"
    bystander.write_text("not plumb's")
    _make("uninstall", destdir, None)
    assert _files(destdir) == {"usr/local/lib/libother.so.1"}


def test_build_sets_up_only_the_build():
    """`make` installs only what the build needs; the test tools come with `make test` (and
    fuzzing with `make fuzz`): the set-up's package sets and the targets that ask for them."""
    def packages(*sets):
        r = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--list", *sets], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        return set(r.stdout.split())
    build = packages("build")
    assert {"cmake", "gcc", "pkg-config", "libcjson-dev", "libpcre2-dev"} <= build
    tools = {"clang", "chromium", "python3-venv", "docker-registry", "groff-base", "man-db"}
    assert not build & tools, build & tools
    assert tools <= packages("build", "fuzz", "model", "test")
    def setup_calls(target):
        r = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60)
        return [ln for ln in r.stdout.splitlines() if "scripts/setup.sh" in ln]
    assert setup_calls("build") == ["bash scripts/setup.sh build"], setup_calls("build")
    assert any(ln.endswith("setup.sh build fuzz model test") for ln in setup_calls("test")), setup_calls("test")
