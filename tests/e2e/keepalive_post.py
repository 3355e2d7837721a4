#!/usr/bin/python3
# One HTTPS keep-alive connection with a client certificate that posts grants one after another:
# the first at once, each next one when its go file appears (20 s at most each). Prints one line
# per grant, "STATUS ERROR-CODE", and last "closed" or "open": whether the server said it closes
# the connection with the last answer (Connection: close) or ended it, or kept it open for 1 s.
# Usage: keepalive_post.py HOST:PORT CA CERT KEY GRANT [GO GRANT]...
import http.client
import json
import os
import socket
import ssl
import sys
import time

target, ca, cert, key = sys.argv[1:5]
steps = sys.argv[5:]
host, port = target.rsplit(":", 1)
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
conn.connect()
sock = conn.sock
closing = False
for i, arg in enumerate(steps):
    if i % 2:
        deadline = time.monotonic() + 20
        while not os.path.exists(arg) and time.monotonic() < deadline:
            time.sleep(0.05)
        continue
    if conn.sock is not sock:
        print("reconnected")  # http.client would open a new connection: not this test's
        sys.exit(1)
    with open(arg, "rb") as f:
        conn.request("POST", "/v1/grants", f.read(), {"Content-Type": "application/jwt"})
    r = conn.getresponse()
    body = r.read()
    code = json.loads(body).get("error", "-") if r.status >= 400 else "-"
    closing = (r.getheader("Connection") or "").lower() == "close"
    print(r.status, code, flush=True)
# The server's close, seen as the end of the stream.
gone = closing
if not gone:
    try:
        sock.settimeout(1)
        gone = sock.recv(1) == b""
    except (socket.timeout, TimeoutError):
        gone = False
    except OSError:
        gone = True
print("closed" if gone else "open", flush=True)
