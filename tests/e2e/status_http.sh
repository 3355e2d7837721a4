# GET /v1/status is written to an unlinked file in state_dir and sent from it a piece at a time
# as the client reads, so that a large document never sits whole in the agent's memory. It must
# still be jitctl status --json's document, with its Content-Length; a client that goes away
# mid-document, or stops reading until listen.timeout, must take its spool file with it (four
# are sent at once at most; a fifth is told to retry), and the agent must serve the next status
# and exit clean (under ASan: no leak). The server namespace's
# own TCP buffers are made small, so that a few hundred grants take many pieces and turns.
. "$(dirname "$0")/lib.sh"

N=800
setup_net
setup_keys
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true, "rate_limit": 0,
    "timeout": "PT2S"}'
in_ns "$SRV" sysctl -qw net.ipv4.tcp_rmem="4096 4096 4096" net.ipv4.tcp_wmem="4096 4096 4096"
start_jitd
# The spool files jitd holds open: O_TMPFILE files read as "(deleted)".
spools() { find "/proc/$JITD_PID/fd" -lname "$TMP/state/*(deleted)" 2>/dev/null | wc -l; }
no_spool() { [ "$(spools)" = 0 ]; }

log "$N grants, signed with PyJWT, in batches over HTTP"
in_ns "$SRV" /usr/bin/python3 - "$TMP/signer/ctl.key" "$HOST_ID" "$N" <<'PY' || fail "loading the grants"
import http.client, json, sys, time
import jwt
key, host, n = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
now = int(time.time())
tokens = [jwt.encode({"iss": "e2e", "aud": host, "sub": "alice", "jti": "st-%d" % i, "iat": now,
                      "exp": now + 300, "src": ["10.%d.%d.1" % (i // 200, i % 200)],
                      "ports": [{"port": 22, "protocol": "tcp"}]},
                     key, algorithm="EdDSA", headers={"typ": "jit-grant+jwt", "kid": "ctl"})
          for i in range(n)]
c = http.client.HTTPConnection("127.0.0.1", 7080, timeout=30)
for b in range(0, n, 64):
    c.request("POST", "/v1/grants/batch", json.dumps({"grants": tokens[b:b + 64]}),
              {"Content-Type": "application/json"})
    bad = [r for r in json.loads(c.getresponse().read())["results"] if r["status"] != 201]
    if bad:
        sys.exit("refused: %s" % bad[0])
PY
[ "$(status_json | jq '.grants | length')" = "$N" ] || fail "status does not show $N grants"
has_elem allow4_addr "10.3.199.1 tcp 22" || fail "grant st-799 is not in the kernel"
pass "$N grants applied"
no_spool || fail "a spool file open before any status"

log "the whole document"
code=$(in_ns "$SRV" curl -sS --max-time 20 -D "$TMP/hdr" -o "$TMP/body" -w '%{http_code}' \
	http://127.0.0.1:7080/v1/status)
[ "$code" = 200 ] || fail "GET /v1/status: HTTP $code"
len=$(tr -d '\r' <"$TMP/hdr" | sed -n 's/^[Cc]ontent-[Ll]ength: //p')
size=$(stat -c %s "$TMP/body")
[ "$len" = "$size" ] || fail "Content-Length $len, body $size bytes"
[ "$size" -gt $((3 * 64 * 1024)) ] || fail "only $size bytes: not enough for several pieces"
pass "Content-Length $len is the body's size (more than three 64 KiB pieces)"
# What moves between two reads: the seconds left, and the flows counted at that moment.
same() { jq -S "$1 | del(.time, .agent) | walk(if type == \"object\" then
	del(.expires_in, .expires_in_ms, .kernel_expires_in, .expires, .flows) else . end)"; }
[ "$(same . <"$TMP/body")" = "$(status_json | same .)" ] ||
	fail "GET /v1/status and jitctl status --json disagree"
pass "the same document as jitctl status --json"
wait_until 5 "the spool file closed after the reply" no_spool
pass "its spool file is closed once it is sent"

log "a client that goes away mid-document"
for i in 1 2 3; do
	in_ns "$SRV" /usr/bin/python3 - <<'PY' || fail "the abandoning client"
import socket
s = socket.create_connection(("127.0.0.1", 7080), timeout=10)
s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: jitd\r\n\r\n")
got = b""
while len(got) < 16384:
    got += s.recv(4096)
assert got.startswith(b"HTTP/1.1 200"), got[:80]
s.close()
PY
done
wait_until 10 "the abandoned spool files closed" no_spool
pass "three abandoned statuses left no spool file open"

log "clients that stop reading until listen.timeout (2 s): four at most at once"
for i in 1 2 3 4; do
	ip netns exec "$SRV" /usr/bin/python3 - "$TMP/stalled.$i" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 7080), timeout=20)
s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: jitd\r\n\r\n")
got = s.recv(4096)
time.sleep(5)
# jitd cut it: the rest of the document never comes, the connection ends.
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
open(sys.argv[1], "w").write("%d\n" % len(got))
PY
	BG_PIDS+=($!)
done
four_spools() { [ "$(spools)" = 4 ]; }
wait_until 5 "four stalled statuses' spool files open" four_spools
pass "the stalled statuses are sent from their spool files"
code=$(in_ns "$SRV" curl -sS --max-time 10 -D "$TMP/hdr" -o "$TMP/body" -w '%{http_code}' \
	http://127.0.0.1:7080/v1/status)
[ "$code" = 503 ] && [ "$(jq -r .error "$TMP/body")" = busy ] &&
	tr -d '\r' <"$TMP/hdr" | grep -qx 'Retry-After: 1' ||
	fail "a fifth status at once: HTTP $code $(cat "$TMP/body")"
pass "a fifth at once: 503 busy, Retry-After: 1 ($(jq -r .message "$TMP/body"))"
wait_until 10 "the stalled statuses' spool files closed" no_spool
pass "all closed once listen.timeout ended their connections"
for i in 1 2 3 4; do
	wait "${BG_PIDS[-$i]}" || fail "stalled client $i"
	[ "$(cat "$TMP/stalled.$i")" -lt "$size" ] || fail "stalled client $i got the whole document"
done
pass "the stalled clients got $(cat "$TMP/stalled."[1-4] | tr '\n' ' ')of about $size bytes"

log "the agent goes on"
code=$(in_ns "$SRV" curl -sS --max-time 20 -o "$TMP/body" -w '%{http_code}' \
	http://127.0.0.1:7080/v1/status)
[ "$code" = 200 ] && [ "$(jq '.grants | length' "$TMP/body")" = "$N" ] ||
	fail "GET /v1/status after them: HTTP $code"
pass "the next status is whole"
stop_jitd TERM
pass "clean exit (under ASan: no leak)"
