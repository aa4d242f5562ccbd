"""A small client of the remote backend's protocol, written from docs/remote-protocol.md (not
from plumb's code), for test_remote_netns.py; and a TCP relay that records what a client sends.

Run as a script inside a network namespace; each command prints one JSON object:

    rpc_proto.py hello HOST PORT VERSION           a HELLO of that version: what came back
    rpc_proto.py session HOST PORT KEY_FILE MODE   a handshake, then INFO frames: MODE "good"
                                                   (seq 0, right tag), "bad-tag" (seq 0, one
                                                   bit of the tag flipped), "bad-seq" (seq 1
                                                   first), "replay-frame" (a good INFO, then
                                                   the same bytes again)
    rpc_proto.py replay HOST PORT FILE             sends FILE's bytes (a recorded client) on a
                                                   new connection: what came back
    rpc_proto.py relay LHOST LPORT HOST PORT FILE  relays one connection from LHOST:LPORT to
                                                   HOST:PORT, keeping the first MiB the client
                                                   sent in FILE; prints "ready" when listening
    rpc_proto.py hold HOST PORT N SECONDS          N connections that send nothing: prints
                                                   "open", then when the server closed each
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import select
import socket
import struct
import sys
import threading
import time

MAGIC = b"PLRB"
VERSION = 2
HELLO, CHALLENGE, AUTH, ERROR, OK = 1, 2, 3, 4, 5
INFO = 16
HEADER = struct.Struct("<4sHHIQ")  # magic, version, type, payload length, sequence number
TAG = 32


def mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def frame(ftype: int, payload: bytes = b"", seq: int = 0, version: int = VERSION, session: bytes | None = None,
          direction: bytes = b"C") -> bytes:
    """A frame; tagged under session (handshake frames: session None, a zero tag)."""
    hdr = HEADER.pack(MAGIC, version, ftype, len(payload), seq)
    tag = mac(session, direction, hdr, payload) if session else bytes(TAG)
    return hdr + payload + tag


class Closed(Exception):
    """The peer closed the connection (or reset it)."""


class Conn:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.session: bytes | None = None
        self.send_seq = self.recv_seq = 0

    def read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def recv_frame(self) -> dict:
        magic, version, ftype, length, seq = HEADER.unpack(self.read(HEADER.size))
        assert magic == MAGIC, magic
        payload = self.read(length)
        tag = self.read(TAG)
        f = {"version": version, "type": ftype, "seq": seq, "payload": payload, "tag": tag}
        if self.session is not None:
            want = mac(self.session, b"S", HEADER.pack(magic, version, ftype, length, seq), payload)
            f["tag_ok"] = hmac.compare_digest(want, tag)
        return f

    def closed_within(self, seconds: float) -> bool:
        """True when the peer closes (EOF or reset) within seconds, having sent nothing more."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if data:
            raise AssertionError(f"the server sent more: {data!r}")
        return True

    def handshake(self, key: bytes) -> int:
        """The mutual handshake; returns the server's capabilities. Checks the server's proof."""
        nc = secrets.token_bytes(32)
        self.sock.sendall(frame(HELLO, struct.pack("<H", VERSION) + nc))
        f = self.recv_frame()
        assert f["type"] == CHALLENGE and len(f["payload"]) == 70, f
        version, caps = struct.unpack_from("<HI", f["payload"])
        ns, proof_s = f["payload"][6:38], f["payload"][38:70]
        assert version == VERSION and proof_s == mac(key, b"plumb-rpc server", nc, ns), "the server's proof is wrong"
        self.sock.sendall(frame(AUTH, mac(key, b"plumb-rpc client", ns, nc)))
        self.session = mac(key, b"plumb-rpc session", nc, ns)
        return caps

    def request(self, ftype: int, payload: bytes = b"", seq: int | None = None, flip_tag: bool = False) -> bytes:
        """Sends a tagged frame (seq: this side's next one unless given); returns its bytes."""
        f = bytearray(frame(ftype, payload, self.send_seq if seq is None else seq, session=self.session))
        if flip_tag:
            f[-1] ^= 1
        self.sock.sendall(bytes(f))
        self.send_seq += 1
        return bytes(f)


def read_key(path: str) -> bytes:
    return open(path, "rb").read().rstrip()  # the key file's text, trailing whitespace trimmed


def cmd_hello(host, port, version):
    c = Conn(host, int(port))
    version = int(version)
    c.sock.sendall(frame(HELLO, struct.pack("<H", version) + secrets.token_bytes(32), version=version))
    f = c.recv_frame()
    out = {"type": f["type"], "version": f["version"], "seq": f["seq"], "zero_tag": f["tag"] == bytes(TAG)}
    if f["type"] == ERROR:
        out["code"] = struct.unpack_from("<i", f["payload"])[0]
        out["text"] = f["payload"][4:].decode("utf-8", "replace")
    out["closed"] = c.closed_within(5)
    return out


def cmd_session(host, port, key_file, mode):
    c = Conn(host, int(port))
    out = {"caps": c.handshake(read_key(key_file)), "replies": []}

    def reply():
        f = c.recv_frame()
        out["replies"].append({"type": f["type"], "seq": f["seq"], "len": len(f["payload"]), "tag_ok": f["tag_ok"]})

    if mode == "good":  # two requests, two replies, and the connection stays open
        for _ in range(2):
            c.request(INFO)
            reply()
        out["closed"] = c.closed_within(0.5)
        return out
    if mode == "bad-tag":
        c.request(INFO, flip_tag=True)
    elif mode == "bad-seq":
        c.request(INFO, seq=1)
    elif mode == "replay-frame":
        sent = c.request(INFO)
        reply()
        c.sock.sendall(sent)
    else:
        raise SystemExit(f"unknown mode {mode}")
    c.sock.settimeout(5)
    try:
        while True:
            reply()
    except Closed:
        out["closed"] = True
    except socket.timeout:
        out["closed"] = False
    return out


def cmd_replay(host, port, path):
    """Sends the recorded HELLO, reads the answer, then sends the rest (the recorded AUTH and
    what followed it) as the recorded client did; returns the frames that came back."""
    data = open(path, "rb").read()
    hello = HEADER.size + HEADER.unpack_from(data)[3] + TAG
    c = Conn(host, int(port))
    c.sock.sendall(data[:hello])
    frames = [c.recv_frame()]
    sender = threading.Thread(target=_send_quietly, args=(c.sock, data[hello:]), daemon=True)
    sender.start()
    c.sock.settimeout(10)
    try:
        while True:
            frames.append(c.recv_frame())
    except Closed:
        closed = True
    except socket.timeout:
        closed = False
    return {"sent": len(data), "frames": [{"type": f["type"], "seq": f["seq"], "len": len(f["payload"])} for f in frames],
            "closed": closed}


def cmd_hold(host, port, n, seconds):
    """Opens n connections that send nothing; returns, for each, the seconds from its connect
    until the server closed it (None: still open after the given seconds)."""
    conns, t_open = [], []
    for _ in range(int(n)):
        conns.append(socket.create_connection((host, int(port)), timeout=10))
        t_open.append(time.monotonic())
    print("open", flush=True)
    closed = [None] * len(conns)
    deadline = time.monotonic() + float(seconds)
    while None in closed and time.monotonic() < deadline:
        live = [i for i, t in enumerate(closed) if t is None]
        ready, _, _ = select.select([conns[i] for i in live], [], [], 0.05)
        for i in live:
            if conns[i] in ready:
                try:
                    data = conns[i].recv(1)
                except ConnectionResetError:
                    data = b""
                if data:
                    raise SystemExit(f"the server sent {data!r} to a silent connection")
                closed[i] = round(time.monotonic() - t_open[i], 3)
    return {"closed_after": closed}


def _send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server hung up mid-way: what the test expects


def cmd_relay(lhost, lport, host, port, path, keep=1 << 20):
    srv = socket.create_server((lhost, int(lport)))
    print("ready", flush=True)
    a, _ = srv.accept()
    b = socket.create_connection((host, int(port)))
    kept = bytearray()

    def pump(src, dst, record):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if record and len(kept) < keep:
                    kept.extend(data[: keep - len(kept)])
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(b, a, False), daemon=True)
    t.start()
    pump(a, b, True)
    t.join(10)
    open(path, "wb").write(bytes(kept))
    return {"recorded": len(kept)}


if __name__ == "__main__":
    cmds = {"hello": cmd_hello, "session": cmd_session, "replay": cmd_replay, "relay": cmd_relay, "hold": cmd_hold}
    print(json.dumps(cmds[sys.argv[1]](*sys.argv[2:])), flush=True)
