#!/usr/bin/python3
# A client that sends a byte every EVERY seconds, for UPTO seconds at most, and says how long the
# server kept it: it fails when that was more than LIMIT. The bytes begin a TLS ClientHello and
# hold no newline, so neither a TLS endpoint nor the control socket ever sees a whole request.
# With CA CERT KEY it first makes one whole request over TLS with that client certificate (a GET
# answered 404), then trickles the next request on the same keep-alive connection: the time is
# counted from the first reply.
# Usage: trickle.py UNIX_PATH|HOST:PORT EVERY UPTO LIMIT [CA CERT KEY]
import socket
import ssl
import sys
import time

target, every, upto, limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
if target.startswith("/"):
    s = socket.socket(socket.AF_UNIX)
    s.connect(target)
else:
    host, port = target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
payload = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)
if len(sys.argv) == 8:
    ctx = ssl.create_default_context(cafile=sys.argv[5])
    ctx.load_cert_chain(sys.argv[6], sys.argv[7])
    s = ctx.wrap_socket(s, server_hostname=host)
    s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        got = s.recv(4096)
        if not got:
            sys.exit("closed before the first reply: %r" % reply)
        reply += got
    if not reply.startswith(b"HTTP/1.1 404"):
        sys.exit("first reply: %r" % reply[:80])
    payload = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
start = time.monotonic()
for b in payload:
    if time.monotonic() - start > upto:
        break
    try:
        s.send(bytes([b]))
        s.settimeout(every)
        if s.recv(1) == b"":
            break
    except socket.timeout:
        continue
    except OSError:
        break
lived = time.monotonic() - start
if lived > limit:
    sys.exit("a client sending a byte every %g s lived %.1f s" % (every, lived))
print("closed after %.1f s" % lived)
