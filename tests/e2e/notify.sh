# systemd's protocol, without systemd: jitd says READY=1 only once its deny rules are in the
# kernel, pings WATCHDOG=1 from its event loop at half of WATCHDOG_USEC, and says STOPPING=1 on
# SIGTERM. A Python datagram socket plays the service manager.
. "$(dirname "$0")/lib.sh"

setup_net
setup_keys
write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
cat >"$TMP/manager.py" <<'PY'
import os, socket, subprocess, sys, time
jitd, config, sock = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock)
s.settimeout(10)
env = dict(os.environ, NOTIFY_SOCKET=sock, WATCHDOG_USEC="2000000")
env.pop("WATCHDOG_PID", None)
log = open(os.path.join(os.path.dirname(sock), "jitd.log"), "a")
p = subprocess.Popen([jitd, "-c", config], env=env, stdout=log, stderr=log)
try:
    msg = s.recv(256).decode()
    if msg != "READY=1":
        sys.exit("first message: %r" % msg)
    # The moment READY arrives, the table must already be there.
    table = subprocess.run(["nft", "-j", "list", "table", "inet", "jitd"], capture_output=True)
    if table.returncode != 0:
        sys.exit("READY=1 before table inet jitd existed")
    print("READY=1 with the table in the kernel")
    seen, start = [], time.monotonic()
    while time.monotonic() - start < 5.5:
        if s.recv(256).decode() == "WATCHDOG=1":
            seen.append(time.monotonic())
    # Every second: four or more, none 1.8 s or more after the one before (a period of a whole
    # WATCHDOG_USEC would leave 2 s gaps; pings queued before the count began leave none). The
    # margin is for a loaded ASan build's loop.
    gap = max(b - a for a, b in zip(seen, seen[1:])) if len(seen) > 1 else 99
    if len(seen) < 4 or gap >= 1.8:
        sys.exit("%d watchdog pings in 5.5 s, at most %.2f s apart" % (len(seen), gap))
    print("%d watchdog pings in 5.5 s, at most %.2f s apart" % (len(seen), gap))
    p.terminate()
    while True:
        msg = s.recv(256).decode()
        if msg == "STOPPING=1":
            break
    if p.wait(timeout=10) != 0:
        sys.exit("jitd exited with %d" % p.returncode)
    print("STOPPING=1, clean exit")
finally:
    if p.poll() is None:
        p.kill()
        p.wait()
PY
in_ns "$SRV" python3 "$TMP/manager.py" "$JITD_BIN" "$CONFIG" "$TMP/notify.sock" >"$TMP/out" 2>&1 ||
	fail "service manager: $(cat "$TMP/out")"
while read -r line; do pass "$line"; done <"$TMP/out"
kernel_json >/dev/null || fail "table gone after SIGTERM"
pass "table stays after the stop"
