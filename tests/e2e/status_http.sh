# GET /v1/status is written to an unlinked file in state_dir and sent from it a piece at a time
# as the client reads, so that a large document never sits whole in the agent's memory. Over
# plain HTTP on loopback and over mutual TLS, it must still be jitctl status --json's document,
# with its Content-Length; a client that goes away mid-document, or stops reading until
# listen.timeout, must take its spool file with it (four are sent at once at most; a fifth is
# told to retry); in test builds, a spool that cannot be read back must end its connection at
# once, and a status that runs out of memory midway must be answered as an error or cut short,
# over the control socket too, and a status with no spool file to be had is sent from memory,
# still a piece at a time and four at most; and the agent must serve the next status and exit
# clean (under ASan: no leak). A reload that moves state_dir waits for the restart: statuses
# are still spooled in the directory jitd opened. Over the control socket, replies a member of
# control_group does not read are held in memory, two at most at once.
# The server namespace's own TCP buffers are made small, so that a few hundred grants take many
# pieces and turns of the loop.
. "$(dirname "$0")/lib.sh"

N=800
# Test builds: reading a spool back fails while this file exists (agent/http.c, spool_read);
# no spool can be made while the second one does (spool_open).
export JITD_TEST_SPOOL_FAIL_FILE=$TMP/spool-fail JITD_TEST_STATUS_OOM_FILE=$TMP/status-oom
export JITD_TEST_SPOOL_OPEN_FAIL_FILE=$TMP/spool-open-fail
# Test builds: while this file exists, a log query waits on its thread (jitd-log).
export JITD_TEST_LOG_HOLD_FILE=$TMP/log-hold
setup_net
setup_keys
ca fleet-ca
cert fleet-ca jitd-server $'subjectAltName=IP:192.0.2.1\nextendedKeyUsage=serverAuth'
cert fleet-ca controller-1 'extendedKeyUsage=clientAuth'
PORTS='[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
# listen_plain|listen_tls TIMEOUT: the controller endpoint on loopback, or with mutual TLS.
listen_plain() {
	write_config drop '[]' "$PORTS" '"listen": {"address": "127.0.0.1:7080",
	  "insecure_plaintext": true, "rate_limit": 0, "timeout": "'"$1"'"},
	  "control_group": "4242"'
}
listen_tls() {
	write_config drop '[]' "$PORTS" '"listen": {"address": "192.0.2.1:7443",
	  "tls_cert": "'"$PKI/jitd-server.pem"'", "tls_key": "'"$PKI/jitd-server.key"'",
	  "client_ca": "'"$PKI/fleet-ca.pem"'", "rate_limit": 0, "timeout": "'"$1"'"},
	  "control_group": "4242"'
}
listen_plain PT5S
in_ns "$SRV" sysctl -qw net.ipv4.tcp_rmem="4096 4096 4096" net.ipv4.tcp_wmem="4096 4096 4096"
start_jitd
# The spool files jitd holds open: O_TMPFILE files read as "(deleted)".
spools() { find "/proc/$JITD_PID/fd" -lname "$TMP/state/*(deleted)" 2>/dev/null | wc -l; }
no_spool() { [ "$(spools)" = 0 ]; }
four_spools() { [ "$(spools)" = 4 ]; }
# The kernel's one-address sets hold exactly the N grants' sources (st-I: 10.I/200.I%200.1).
all_in_kernel() {
	diff <(for ((i = 0; i < N; i++)); do echo "10.$((i / 200)).$((i % 200)).1 tcp 22"; done |
		sort) <(allow_elems allow4_addr) >/dev/null
}

log "a client that pipelines requests and reads no reply"
# While a reply cannot be written, jitd must stop reading that connection, not keep what comes
# in memory: the client pushes up to 64 MiB of requests for 4 s (listen.timeout is 5 s).
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$JITD_PID/status"; }
before=$(hwm)
in_ns "$SRV" /usr/bin/python3 - >"$TMP/flood" 2>&1 <<'PY' || fail "flood: $(cat "$TMP/flood")"
import select, socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", 7080))
s.setblocking(False)
chunk = b"GET /v1/flood HTTP/1.1\r\nHost: jitd\r\n\r\n" * 1024
sent, end = 0, time.monotonic() + 4
while sent < 64 << 20 and time.monotonic() < end:
    if select.select([], [s], [], 0.2)[1]:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            pass
print(sent)
PY
sent=$(cat "$TMP/flood") grown=$(($(hwm) - before))
[ "$sent" -lt $((8 << 20)) ] || fail "jitd read $sent bytes it could not answer"
[ "$grown" -lt $((16 << 10)) ] || fail "jitd's peak memory grew by $grown KiB"
pass "jitd took $sent bytes from a client that reads nothing; its peak memory grew by $grown KiB"
"$JITCTL_BIN" -s "$SOCK" status >/dev/null || fail "jitd no longer answers"

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
all_in_kernel || fail "the kernel does not hold exactly the $N grants' elements"
pass "$N grants applied, their $N elements in the kernel"
no_spool || fail "a spool file open before any status"

log "replies over the control socket that a member of control_group does not read"
# Each holds its rest in jitd's memory until it is read or its client's 10 s end: at most two
# at once for users other than root (made-up ids, as in e2e perms); then their next status or
# log query is told busy; root's are not counted; once one is read whole, the member is served
# again. Each status here (800 grants) is larger than the socket can take, which the script
# checks, so that jitd cannot hand it over whole.
chmod 0711 "$TMP" "$TMP/run"
# The member's scripts, in a directory it may list (Python's import does).
mkdir -m 0755 "$TMP/py"
# ask(path, op): a control-socket request, its reply left to the caller to read, or not.
cat >"$TMP/py/ctlask.py" <<'PY'
import json, socket
def ask(path, op, timeout=8):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(timeout)
    s.sendall(json.dumps({"op": op}).encode() + b"\n")
    return s
PY
cat >"$TMP/py/unread.py" <<'PY'
import functools, json, os, sys, time
import ctlask
path, release, sndbuf = sys.argv[1], sys.argv[2], int(sys.argv[3])
ask = functools.partial(ctlask.ask, path)
def busy(op):
    r = json.loads(ask(op).makefile("rb").readline())
    if r.get("error") != "busy" or "waiting to be read" not in r.get("message", ""):
        sys.exit("a %s while two statuses were unread: %.80s" % (op, json.dumps(r)))
    return r["message"]
held = [ask("status"), ask("status")]
time.sleep(1.5)
busy("status")
print("a third status and a log query busy (%s)" % busy("log"), flush=True)
for _ in range(60):
    if os.path.exists(release):
        break
    time.sleep(0.1)
line = held[0].makefile("rb").readline()
if not json.loads(line).get("ok") or len(line) < sndbuf + 32768:
    sys.exit("an unread status, read at last: %d bytes, not whole or too small" % len(line))
held[0].close()
time.sleep(0.3)
for op in ("status", "log"):
    if not json.loads(ask(op).makefile("rb").readline()).get("ok"):
        sys.exit("no %s once one was read" % op)
print("served again (%d bytes each)" % len(line), flush=True)
PY
setpriv --reuid=4243 --regid=4243 --groups=4242 -- /usr/bin/python3 "$TMP/py/unread.py" "$SOCK" \
	"$TMP/release" "$(cat /proc/sys/net/core/wmem_default)" >"$TMP/member" 2>&1 &
MEMBER=$!
BG_PIDS+=("$MEMBER")
member_busy() { grep -q "busy" "$TMP/member" || ! kill -0 "$MEMBER" 2>/dev/null; }
wait_until 8 "the member's third status answered" member_busy
grep -q "busy" "$TMP/member" || fail "the member's statuses: $(cat "$TMP/member")"
# jitctl as the member meanwhile: the refusal on stdout as JSON with --json, else on stderr.
install -m 0755 "$JITCTL_BIN" "$TMP/jitctl"
as_member() { setpriv --reuid=4243 --regid=4243 --groups=4242 -- "$TMP/jitctl" -s "$SOCK" "$@"; }
rc=0
as_member status --json >"$TMP/out" 2>"$TMP/err" || rc=$?
[ "$rc" = 1 ] && [ ! -s "$TMP/err" ] && jq -e '.error == "busy" and
	(.message | test("waiting to be read"))' "$TMP/out" >/dev/null ||
	fail "jitctl status --json while busy: exit $rc, $(cat "$TMP/out" "$TMP/err")"
rc=0
as_member status >"$TMP/out" 2>"$TMP/err" || rc=$?
[ "$rc" = 1 ] && [ ! -s "$TMP/out" ] && grep -q "^jitctl status: refused: busy: " "$TMP/err" ||
	fail "jitctl status while busy: exit $rc, $(cat "$TMP/out" "$TMP/err")"
"$JITCTL_BIN" -s "$SOCK" status --json | jq -e ".grants | length == $N" >/dev/null ||
	fail "root's status while the member's two were unread"
"$JITCTL_BIN" -s "$SOCK" log --json >/dev/null || fail "root's log while the member's two were unread"
touch "$TMP/release"
wait "$MEMBER" || fail "the member's statuses: $(cat "$TMP/member")"
pass "unread replies held at two for a member, root served: $(paste -sd, "$TMP/member")"
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	# A member's log query counts from when it starts: two on their threads (held there by
	# the test build), and its status is busy, as it would be once their answers sat unread.
	# It also needs the unread status the script above left to have been let go when its
	# client went, not at the client's 10 s deadline: else the second query is refused.
	cat >"$TMP/py/logs.py" <<'PY'
import functools, json, os, sys, time
import ctlask
path, go = sys.argv[1], sys.argv[2]
ask = functools.partial(ctlask.ask, path)
logs = [ask("log"), ask("log")]
for _ in range(80):
    if os.path.exists(go):
        break
    time.sleep(0.1)
r = json.loads(ask("status").makefile("rb").readline())
if r.get("error") != "busy" or "waiting to be read" not in r.get("message", ""):
    sys.exit("a status while two log queries ran: %.80s" % json.dumps(r))
print("a status while two log queries run: busy", flush=True)
for s in logs:
    if not json.loads(s.makefile("rb").readline()).get("ok"):
        sys.exit("a log query let go did not answer")
print("both answered once let go", flush=True)
PY
	log_threads_are() { [ "$(grep -lx jitd-log /proc/"$JITD_PID"/task/*/comm 2>/dev/null |
		grep -c .)" -eq "$1" ]; }
	touch "$JITD_TEST_LOG_HOLD_FILE"
	setpriv --reuid=4243 --regid=4243 --groups=4242 -- /usr/bin/python3 "$TMP/py/logs.py" "$SOCK" \
		"$TMP/go" >"$TMP/member-logs" 2>&1 &
	MEMBER=$!
	BG_PIDS+=("$MEMBER")
	two_or_gone() { log_threads_are 2 || ! kill -0 "$MEMBER" 2>/dev/null; }
	wait_until 10 "the member's two log queries on their threads" two_or_gone
	log_threads_are 2 || fail "the member's log queries: $(cat "$TMP/member-logs")"
	# Root's query is not kept out by the member's two: it runs on the one kept for root.
	"$JITCTL_BIN" -s "$SOCK" log --json >"$TMP/root-log" 2>"$TMP/root-log.err" &
	ROOTLOG=$!
	BG_PIDS+=("$ROOTLOG")
	wait_until 10 "root's log query on a third thread" log_threads_are 3
	touch "$TMP/go"
	member_told() { grep -q "busy" "$TMP/member-logs" || ! kill -0 "$MEMBER" 2>/dev/null; }
	wait_until 8 "the member's status answered" member_told
	rm -f "$JITD_TEST_LOG_HOLD_FILE"
	wait "$MEMBER" || fail "the member's log queries: $(cat "$TMP/member-logs")"
	pass "$(paste -sd, "$TMP/member-logs")"
	wait "$ROOTLOG" && jq -e 'type == "array"' "$TMP/root-log" >/dev/null ||
		fail "root's log query beside the member's two: $(head -c 300 "$TMP/root-log" \
			"$TMP/root-log.err")"
	pass "root's log query ran beside the member's two and was answered"
fi

# client.py MODE OUT HOST PORT [CA CERT KEY]: asks for the status and reads 16 KiB of it, then
# goes away (abandon), or reads 4 KiB (then OUT.started exists), stops reading for 8 s, then
# reads what is left until the connection ends, and writes how many bytes it got to OUT (stall).
cat >"$TMP/client.py" <<'PY'
import socket, ssl, sys, time
mode, out, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.create_connection((host, port), timeout=20)
if len(sys.argv) > 5:
    ctx = ssl.create_default_context(cafile=sys.argv[5])
    ctx.load_cert_chain(sys.argv[6], sys.argv[7])
    s = ctx.wrap_socket(s, server_hostname=host)
s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: jitd\r\n\r\n")
got = s.recv(4096)
assert got.startswith(b"HTTP/1.1 200"), got[:80]
if mode == "stall":
    open(out + ".started", "w").close()
if mode == "abandon":
    while len(got) < 16384:
        b = s.recv(4096)
        if not b:
            sys.exit("closed after %d bytes, before the client left" % len(got))
        got += b
    s.close()
    sys.exit(0)
# Well past listen.timeout (5 s): the same figure would race jitd's own timer.
time.sleep(8)
while True:
    try:
        b = s.recv(65536)
    except (OSError, ssl.SSLError):
        break
    if not b:
        break
    got += b
open(out, "w").write("%d\n" % len(got))
PY

# spool_fail_checks (test builds, listen.timeout far above curl's --max-time): the spool cannot
# be read back from its first byte (inside the request's own callback), then from its second
# piece (inside evhttp's write callback); jitd ends the connection at once (not listen.timeout),
# with nothing of the body or exactly the one 64 KiB piece sent, and closes the spool file.
spool_fail_checks() {
	local pieces rc got ok logged
	local said='status: reading the spooled document back: Input/output error'
	log "a spool that cannot be read back (test builds): the connection is cut short"
	logged=$(grep -c "$said" "$TMP/jitd.log" || true)
	for pieces in 0 1; do
		echo "$pieces" >"$JITD_TEST_SPOOL_FAIL_FILE"
		rm -f "$TMP/body"
		rc=0
		in_ns "$SRV" curl -sS --max-time 20 "${CURL_TLS[@]}" -o "$TMP/body" \
			"$URL/v1/status" 2>"$TMP/curl.err" || rc=$?
		got=$(stat -c %s "$TMP/body" 2>/dev/null || echo 0)
		if [ "$pieces" = 0 ]; then
			ok=$((got == 0))
		else
			ok=$((got == 64 * 1024))
		fi
		# 52: an empty reply, 18: the body cut short (28, curl's own timeout: jitd waited).
		[ "$rc" = 52 ] || [ "$rc" = 18 ] && [ "$ok" = 1 ] ||
			fail "spool failing after $pieces piece(s): curl exit $rc, $got bytes"
		wait_until 5 "the failed spool file closed" no_spool
		pass "spool failing after $pieces piece(s): cut short at $got bytes" \
			"(curl: $(head -c 60 "$TMP/curl.err"))"
	done
	rm -f "$JITD_TEST_SPOOL_FAIL_FILE"
	[ "$(grep -c "$said" "$TMP/jitd.log")" = $((logged + 2)) ] ||
		fail "the two failed reads are not logged"
	pass "each failed read logged"
	next_status_whole
}

# status_oom_checks (test builds): the next status runs out of memory once 0, then 1, 64 KiB
# pieces have gone out. Over the control socket, before anything has gone jitctl gets the error
# (exit 1), after it the line is cut short (exit 3) and nothing of it is printed; over HTTP the
# document is spooled before it is sent, so both are a JSON 500 and the spool file is closed.
# Each is logged, and the next status over both is whole.
status_oom_checks() {
	local pieces rc code logged
	log "a status that runs out of memory midway (test builds)"
	logged=$(grep -c 'out of memory writing the status' "$TMP/jitd.log" || true)
	for pieces in 0 1; do
		echo "$pieces" >"$JITD_TEST_STATUS_OOM_FILE"
		rc=0
		"$JITCTL_BIN" -s "$SOCK" status --json >"$TMP/out" 2>"$TMP/err" || rc=$?
		[ ! -e "$JITD_TEST_STATUS_OOM_FILE" ] || fail "the hook's file was not read"
		# Refused at once: the refusal, as JSON on stdout. Cut short: nothing of it printed.
		if [ "$pieces" = 0 ]; then
			[ "$rc" = 1 ] && [ ! -s "$TMP/err" ] && jq -e '.error == "internal"
				and .message == "out of memory writing the status"' "$TMP/out" \
				>/dev/null
		else
			[ "$rc" = 3 ] && [ ! -s "$TMP/out" ] &&
				grep -q 'the agent sent no valid reply' "$TMP/err"
		fi || fail "control socket, out of memory after $pieces piece(s): exit $rc," \
			"$(cat "$TMP/out" "$TMP/err")"
		pass "control socket, out of memory after $pieces piece(s): exit $rc" \
			"($(cat "$TMP/out" "$TMP/err" | jq -c . 2>/dev/null || cat "$TMP/err"))"
		echo "$pieces" >"$JITD_TEST_STATUS_OOM_FILE"
		code=$(in_ns "$SRV" curl -sS --max-time 20 "${CURL_TLS[@]}" -o "$TMP/body" \
			-w '%{http_code}' "$URL/v1/status")
		[ "$code" = 500 ] && [ "$(jq -r .error "$TMP/body")" = internal ] ||
			fail "HTTP, out of memory after $pieces piece(s): HTTP $code $(cat "$TMP/body")"
		wait_until 5 "the failed status's spool file closed" no_spool
		pass "HTTP, out of memory after $pieces piece(s): 500 $(jq -c . "$TMP/body")"
	done
	grep 'out of memory writing the status' "$TMP/jitd.log" | tail -n 4 >"$TMP/oom.log"
	[ "$(grep -c 'out of memory writing the status' "$TMP/jitd.log")" = $((logged + 4)) ] &&
		grep -q 'control: .*; cut short' "$TMP/oom.log" ||
		fail "the four failures are not logged: $(cat "$TMP/oom.log")"
	pass "each logged, the control socket's cut-short one as such"
	[ "$(status_json | jq '.grants | length')" = "$N" ] ||
		fail "jitctl status after them is not whole"
	pass "the next status over the control socket is whole"
	next_status_whole
}

# start_stalled NAME: four clients that stop reading (client.py stall), their pids in the
# caller's stalled[1..4], what each got in $TMP/NAME.1..4.
start_stalled() {
	local i
	for i in 1 2 3 4; do
		ip netns exec "$SRV" /usr/bin/python3 "$TMP/client.py" stall "$TMP/$1.$i" \
			"${PY_TLS[@]}" &
		stalled[i]=$!
		BG_PIDS+=($!)
	done
}

# memory_checks (test builds, listen.timeout 60 s): with no spool file to be had (a test hook,
# as on a file system without O_TMPFILE), the document is sent from memory, still a piece at a
# time: whole, with its Content-Length, warned of once; four at most at once (each held in
# memory until read), a fifth is told to retry; the four stalled ones get all of it.
memory_checks() {
	local code len size i started stalled=()
	log "no spool file (test builds): sent from memory, a piece at a time, four at most"
	touch "$JITD_TEST_SPOOL_OPEN_FAIL_FILE"
	code=$(in_ns "$SRV" curl -sS --max-time 20 "${CURL_TLS[@]}" -D "$TMP/hdr" -o "$TMP/body" \
		-w '%{http_code}' "$URL/v1/status")
	len=$(tr -d '\r' <"$TMP/hdr" | sed -n 's/^[Cc]ontent-[Ll]ength: //p')
	size=$(stat -c %s "$TMP/body")
	[ "$code" = 200 ] && [ "$len" = "$size" ] &&
		[ "$(jq '.grants | length' "$TMP/body")" = "$N" ] ||
		fail "from memory: HTTP $code, Content-Length $len, $size bytes"
	grep -q "cannot spool the status in $TMP/state (Operation not supported)" "$TMP/jitd.log" ||
		fail "not warned that the status is built in memory"
	pass "whole from memory: Content-Length $len, warned"
	rm -f "$TMP"/memstall.*
	start_stalled memstall
	started() { [ "$(find "$TMP" -maxdepth 1 -name 'memstall.*.started' | wc -l)" = 4 ]; }
	wait_until 10 "four statuses from memory started" started
	code=$(in_ns "$SRV" curl -sS --max-time 10 "${CURL_TLS[@]}" -o "$TMP/body" \
		-w '%{http_code}' "$URL/v1/status")
	[ "$code" = 503 ] && [ "$(jq -r .error "$TMP/body")" = busy ] ||
		fail "a fifth status while four are sent from memory: HTTP $code" \
			"$(head -c 200 "$TMP/body")"
	pass "a fifth at once: 503 busy"
	for i in 1 2 3 4; do
		wait "${stalled[i]}" || fail "stalled client $i"
		[ "$(cat "$TMP/memstall.$i")" -gt "$size" ] ||
			fail "stalled client $i got $(cat "$TMP/memstall.$i") bytes," \
				"the body is $size"
	done
	pass "the stalled clients got it all once they read:" \
		"$(cat "$TMP"/memstall.[1-4] | tr '\n' ' ')"
	rm -f "$JITD_TEST_SPOOL_OPEN_FAIL_FILE"
	next_status_whole
}

next_status_whole() {
	local code
	code=$(in_ns "$SRV" curl -sS --max-time 20 "${CURL_TLS[@]}" -o "$TMP/body" \
		-w '%{http_code}' "$URL/v1/status")
	[ "$code" = 200 ] && [ "$(jq '.grants | length' "$TMP/body")" = "$N" ] ||
		fail "GET /v1/status after them: HTTP $code"
	pass "the next status is whole"
}

# streaming_checks: everything above the first line says, over $URL ($CURL_TLS, $PY_TLS).
streaming_checks() {
	local code len size i stalled=()
	log "the whole document"
	code=$(in_ns "$SRV" curl -sS --max-time 20 "${CURL_TLS[@]}" -D "$TMP/hdr" -o "$TMP/body" \
		-w '%{http_code}' "$URL/v1/status")
	[ "$code" = 200 ] || fail "GET /v1/status: HTTP $code"
	len=$(tr -d '\r' <"$TMP/hdr" | sed -n 's/^[Cc]ontent-[Ll]ength: //p')
	size=$(stat -c %s "$TMP/body")
	[ "$len" = "$size" ] || fail "Content-Length $len, body $size bytes"
	[ "$size" -gt $((3 * 64 * 1024)) ] || fail "only $size bytes: not enough for several pieces"
	pass "Content-Length $len is the body's size (more than three 64 KiB pieces)"
	# What moves between two reads: the time left, and the flows counted at that moment.
	same() { jq -S "del(.time, .agent, .endpoint.connections) | walk(if type == \"object\" then
		del(.expires_in, .expires_in_ms, .kernel_expires_in, .expires, .flows) else . end)"; }
	[ "$(same <"$TMP/body")" = "$(status_json | same)" ] ||
		fail "GET /v1/status and jitctl status --json disagree"
	pass "the same document as jitctl status --json"
	wait_until 5 "the spool file closed after the reply" no_spool
	pass "its spool file is closed once it is sent"

	log "clients that go away mid-document"
	for i in 1 2 3; do
		in_ns "$SRV" /usr/bin/python3 "$TMP/client.py" abandon - "${PY_TLS[@]}" ||
			fail "the abandoning client"
	done
	wait_until 10 "the abandoned spool files closed" no_spool
	pass "three abandoned statuses left no spool file open"

	log "clients that stop reading until listen.timeout (5 s): four at most at once"
	start_stalled stalled
	wait_until 5 "four stalled statuses' spool files open" four_spools
	pass "the stalled statuses are sent from their spool files"
	code=$(in_ns "$SRV" curl -sS --max-time 10 "${CURL_TLS[@]}" -D "$TMP/hdr" -o "$TMP/body" \
		-w '%{http_code}' "$URL/v1/status")
	[ "$code" = 503 ] && [ "$(jq -r .error "$TMP/body")" = busy ] &&
		tr -d '\r' <"$TMP/hdr" | grep -qx 'Retry-After: 1' ||
		fail "a fifth status at once: HTTP $code $(cat "$TMP/body")"
	pass "a fifth at once: 503 busy, Retry-After: 1 ($(jq -r .message "$TMP/body"))"
	wait_until 10 "the stalled statuses' spool files closed" no_spool
	pass "all closed once listen.timeout ended their connections"
	for i in 1 2 3 4; do
		wait "${stalled[i]}" || fail "stalled client $i"
		[ "$(cat "$TMP/stalled.$i")" -lt "$size" ] ||
			fail "stalled client $i got the whole document"
	done
	pass "the stalled clients got $(cat "$TMP/stalled."[1-4] | tr '\n' ' ')of $size bytes"

	log "the agent goes on"
	next_status_whole
}

# over LISTEN: streaming_checks with listen.timeout 5 s (room for four stalled clients to start on
# a busy machine before the first times out), then (test builds) spool_fail_checks and
# status_oom_checks with 60 s; each jitd exits clean (under ASan: no leak). The grants are
# restored at each start.
over() {
	streaming_checks
	stop_jitd TERM
	pass "clean exit (under ASan: no leak)"
	[ "${JITD_TEST_HOOKS:-0}" = 1 ] || return 0
	"$1" PT60S
	start_jitd
	spool_fail_checks
	status_oom_checks
	memory_checks
	stop_jitd TERM
	pass "clean exit (under ASan: no leak)"
}

log "plain HTTP on loopback"
status_json | jq -e '.endpoint | .transport == "http" and .address == "127.0.0.1:7080" and
	.client_certificates == false and .certificate == null and .max_connections > 0' >/dev/null ||
	fail "status's endpoint: $(status_json | jq -c .endpoint)"
pass "status: the endpoint, plain HTTP on 127.0.0.1:7080, no certificate"
log "a reload that moves state_dir: it waits for the restart, and statuses are spooled as before"
jq --arg d "$TMP/elsewhere" '.state_dir = $d' "$CONFIG" >"$TMP/moved.json"
cat "$TMP/moved.json" >"$CONFIG"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
grep -q "applied only at the next start: state_dir" "$TMP/jitd.log" ||
	fail "no warning that state_dir waits for a restart"
code=$(in_ns "$SRV" curl -sS --max-time 20 -o "$TMP/body" -w '%{http_code}' \
	http://127.0.0.1:7080/v1/status)
[ "$code" = 200 ] && [ "$(jq '.grants | length' "$TMP/body")" = "$N" ] ||
	fail "GET /v1/status after the reload: HTTP $code"
! grep -q "cannot spool the status" "$TMP/jitd.log" ||
	fail "the status was spooled in the new state_dir: $(grep "cannot spool" "$TMP/jitd.log")"
pass "warned; the status is still spooled in the state_dir jitd opened"
listen_plain PT5S
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
URL=http://127.0.0.1:7080 CURL_TLS=() PY_TLS=(127.0.0.1 7080)
over listen_plain

log "HTTPS with mutual TLS, the grants restored into an empty table"
in_ns "$SRV" nft delete table inet jitd
listen_tls PT5S
start_jitd
all_in_kernel || fail "the restore did not put exactly the $N grants' elements back"
pass "all $N elements restored in one set (test builds: in chunks of 64)"
status_json | jq -e --arg f "$PKI/jitd-server.pem" '.endpoint | .transport == "https" and
	.address == "192.0.2.1:7443" and .client_certificates and .certificate.file == $f' \
	>/dev/null || fail "status's endpoint: $(status_json | jq -c .endpoint)"
pass "status: the endpoint, HTTPS on 192.0.2.1:7443 with client certificates, its certificate"
URL=https://192.0.2.1:7443
CURL_TLS=(--cacert "$PKI/fleet-ca.pem" --cert "$PKI/controller-1.pem" --key "$PKI/controller-1.key")
PY_TLS=(192.0.2.1 7443 "$PKI/fleet-ca.pem" "$PKI/controller-1.pem" "$PKI/controller-1.key")
over listen_tls
