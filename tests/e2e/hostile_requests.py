"""Requests a strict server must refuse, shared by the hardening tests and the soak: raw HTTP
framing cases with the status and error code each must get, and JSON bodies whose strings
would be changed silently if they were accepted, with a word the error must contain."""

COMP = "/v1/completions"
CHAT = "/v1/chat/completions"

FRAMING = [
    # (name, raw request, status, code)
    ("garbage", b"GARBAGE\r\n\r\n", 400, "bad_request"),
    ("two content-lengths", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400, "bad_request"),
    ("negative content-length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    ("word content-length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "bad_request"),
    ("list content-length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", 400,
     "bad_request"),
    ("overflowing content-length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     413, "body_too_large"),
    ("gzip coding", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"),
    ("gzip then chunked", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     501, "not_implemented"),
    ("chunked twice", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
     400, "bad_request"),
    ("length and chunked", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "bad_request"),
    ("chunked in HTTP/1.0", b"POST /v1/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("huge chunk", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
     413, "body_too_large"),
    ("bad chunk size", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     400, "bad_request"),
    ("odd expectation", b"GET /health HTTP/1.1\r\nHost: x\r\nExpect: 200-maybe\r\n\r\n", 417, "expectation_failed"),
    ("no host", b"GET /health HTTP/1.1\r\n\r\n", 400, "bad_request"),
    ("two hosts", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"),
    ("folded field", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n", 400, "bad_request"),
    ("space before colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", 400, "bad_request"),
    ("control byte in a field", b"GET /health HTTP/1.1\r\nHost: x\x01y\r\n\r\n", 400, "bad_request"),
    ("authority target", b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
    ("huge head", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431, "header_too_large"),
    ("many fields", b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(80)) + b"\r\n",
     431, "header_too_large"),
]

JSON_BODIES = [
    ("escaped NUL", b'{"prompt": "a\\u0000b", "max_tokens": 1}', COMP, "u0000"),
    ("raw NUL", b'{"prompt": "a\x00b", "max_tokens": 1}', COMP, "NUL"),
    ("NUL in a message", b'{"messages": [{"role": "user", "content": "x\\u0000y"}]}', CHAT, "u0000"),
    ("NUL to tokenize", b'{"content": "a\\u0000b"}', "/tokenize", "u0000"),
    ("invalid UTF-8", b'{"prompt": "a\xff\xfeb", "max_tokens": 1}', COMP, "UTF-8"),
    ("overlong UTF-8", b'{"prompt": "\xc0\xafb", "max_tokens": 1}', COMP, "UTF-8"),
    ("UTF-8 surrogate", b'{"prompt": "\xed\xa0\x80", "max_tokens": 1}', COMP, "UTF-8"),
    ("truncated UTF-8", b'{"prompt": "ab\xe2\x82", "max_tokens": 1}', COMP, "UTF-8"),
    ("duplicate key", b'{"prompt": "a", "prompt": "b", "max_tokens": 1}', COMP, "twice"),
    ("nested duplicate key", b'{"messages": [{"role": "user", "role": "system", "content": "x"}]}', CHAT, "twice"),
]
