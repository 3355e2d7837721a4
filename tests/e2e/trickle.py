#!/usr/bin/python3
# A client that sends a byte every EVERY seconds, for UPTO seconds at most, and says how long the
# server kept it: it fails when that was more than LIMIT. The bytes begin a TLS ClientHello and
# hold no newline, so neither a TLS endpoint nor the control socket ever sees a whole request.
# Usage: trickle.py UNIX_PATH|HOST:PORT EVERY UPTO LIMIT
import socket
import sys
import time

target, every, upto, limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
if target.startswith("/"):
    s = socket.socket(socket.AF_UNIX)
    s.connect(target)
else:
    host, port = target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)
start = time.monotonic()
for b in hello:
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
