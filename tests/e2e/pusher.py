#!/usr/bin/env python3
"""A flow whose server speaks first: the end-to-end tests' witness that a revocation with
"terminate" holds when the server, not the client, sends the next segment.

  pusher.py serve ADDR PORT        for every client, "push N" every 200 ms; its lines are read
                                   and dropped; runs until killed
  pusher.py client SRC ADDR PORT SECONDS
                                   connects from SRC; answers each push with "ack N" and prints
                                   "got N"; never sends first. Ends on the first error
                                   ("failed: WHY"), after 3 s without a push ("silent") or after
                                   SECONDS ("done").
"""
import socket
import sys
import threading
import time


def serve(addr, port):
    srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(8)

    def push(conn):
        conn.settimeout(0.2)
        n = 0
        try:
            while True:
                n += 1
                conn.sendall(b"push %d\n" % n)
                deadline = time.monotonic() + 0.2
                while time.monotonic() < deadline:
                    try:
                        if not conn.recv(4096):
                            return
                    except socket.timeout:
                        break
        except OSError:
            pass
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=push, args=(conn,), daemon=True).start()


def client(src, addr, port, seconds):
    sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    sock.bind((src, 0))
    sock.settimeout(3)
    sock.connect((addr, port))
    print("connected", flush=True)
    end = time.monotonic() + seconds
    buf = b""
    try:
        while time.monotonic() < end:
            data = sock.recv(4096)
            if not data:
                print("failed: closed by the server", flush=True)
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                n = line.split()[-1]
                sock.sendall(b"ack " + n + b"\n")
                print("got " + n.decode(), flush=True)
        print("done", flush=True)
    except socket.timeout:
        print("silent", flush=True)
    except OSError as e:
        print("failed: " + e.strerror, flush=True)
    finally:
        sock.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 6 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(__doc__)
