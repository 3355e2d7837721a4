# Bounded resources: at each limit jitd refuses with a clear code and stays healthy.
. "$(dirname "$0")/lib.sh"

setup_net
setup_keys
# limits_config MAX_GRANTS CONTROL_CONNECTIONS: the test's configuration, with those limits.
limits_config() {
	local port='{"port": 22, "protocol": "*", "max_duration": "PT10M",
	  "allowed_sources": ["*"]}'
	write_config drop '[]' "[$port]" "\"limits\": {\"max_grants\": $1,
	  \"max_sources_per_grant\": 2, \"max_ports_per_grant\": 1,
	  \"control_connections\": $2}, \"control_group\": \"4242\""
}
limits_config 2 3
start_listeners 22
start_jitd
# refused CODE ARGS...: a grant signed with ARGS is refused with CODE and changes nothing.
refused() {
	local code=$1 rc=0 before
	shift
	before=$(host_elems)
	sign "$@" | submit - --json >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && [ "$(jq -r .error "$TMP/out")" = "$code" ] ||
		fail "wanted $code: exit $rc, $(cat "$TMP/out")"
	[ "$(host_elems)" = "$before" ] || fail "a refused grant changed the kernel"
	pass "refused with $code: $(jq -r .message "$TMP/out")"
}
refused too_large --src 192.0.2.2,192.0.2.3,192.0.2.4 --port 22 --for 60
refused too_large --src 192.0.2.2 --port '22/*' --for 60
sign --src 192.0.2.2 --port 22 --for 60 | submit - >/dev/null || fail "first grant refused"
sign --src 192.0.2.3 --port 22 --for 60 | submit - >/dev/null || fail "second grant refused"
refused busy --src 192.0.2.4 --port 22 --for 60
"$JITCTL_BIN" -s "$SOCK" revoke "$(status_json | jq -r '.grants[0].id')" >/dev/null ||
	fail "revoke failed"
sign --src 192.0.2.4 --port 22 --for 60 | submit - >/dev/null || fail "grant refused below the limit"
pass "below the limit again, a grant applies"

log "control connections"
# A member of control_group (made-up ids, as in e2e perms) fills the table: one more of its
# clients is closed at once, but root still gets in, on places only root may take (4).
chmod 0711 "$TMP" "$TMP/run"
cat >"$TMP/clients.py" <<'PY'
import os, socket, sys, time
path, n, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3]
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX); s.connect(path); held.append(s)
time.sleep(0.3)
extra = socket.socket(socket.AF_UNIX); extra.connect(path); extra.settimeout(3)
try:
    got = extra.recv(1)
except socket.timeout:
    sys.exit("client %d was kept waiting instead of refused" % (n + 1))
if got != b"":
    sys.exit("client %d got data" % (n + 1))
print("uid %d: %d held, the next refused" % (os.getuid(), n), flush=True)
# Held until the test says (at most 8 s: the agent closes an idle client at 10 s).
for _ in range(80):
    if hold == "-" or os.path.exists(hold):
        break
    time.sleep(0.1)
for s in held:
    s.close()
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX); s.connect(path); s.settimeout(5)
s.sendall(b'{"op":"status"}\n')
if b'"ok":true' not in s.recv(65536).replace(b" ", b""):
    sys.exit("no status once the clients left")
print("uid %d: served again" % os.getuid())
PY
setpriv --reuid=4243 --regid=4243 --groups=4242 -- /usr/bin/python3 "$TMP/clients.py" "$SOCK" 3 \
	"$TMP/release" >"$TMP/member" 2>&1 &
MEMBER=$!
BG_PIDS+=("$MEMBER")
member_full() { grep -q "held, the next refused" "$TMP/member"; }
wait_until 5 "the member's clients in place" member_full
"$JITCTL_BIN" -s "$SOCK" status --json >/dev/null || fail "root shut out by the member's clients"
/usr/bin/python3 "$TMP/clients.py" "$SOCK" 4 - >"$TMP/root" 2>&1 ||
	fail "root's places beyond the limit: $(cat "$TMP/root")"
touch "$TMP/release"
wait "$MEMBER" || fail "the member's clients: $(cat "$TMP/member")"
pass "control_connections holds for a member, root gets in: $(cat "$TMP/member" "$TMP/root" | paste -sd,)"
# A client sending its request a byte every 2 s restarts the idle timeout with each byte; the
# whole exchange must still end within the protocol's 10 s (jitctl gives up then too).
/usr/bin/python3 "$(dirname "$0")/trickle.py" "$SOCK" 2 16 12 >"$TMP/out" 2>&1 ||
	fail "trickling control client: $(cat "$TMP/out")"
grep -q "not done within 10 s; closing" "$TMP/jitd.log" || fail "the cut is not logged"
pass "a control client trickling its request is cut at 10 s: $(cat "$TMP/out")"
# One request per connection: a second line sent with the first is refused, and neither done.
id=$(status_json | jq -r '.grants[0].id')
/usr/bin/python3 - "$SOCK" "$id" >"$TMP/out" 2>&1 <<'PY' || fail "$(cat "$TMP/out")"
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
s.sendall(json.dumps({"op": "revoke", "id": sys.argv[2]}).encode() + b'\n{"op":"status"}\n')
reply = json.loads(s.makefile().readline())
if reply.get("error") != "bad_request":
    sys.exit("two lines at once: %s" % reply)
print(reply["message"])
PY
status_json | jq -e --arg id "$id" '[.grants[].id] | index($id) != null' >/dev/null ||
	fail "the revocation sent with a second line was done"
pass "two requests on one connection: bad_request, the revocation not done ($(cat "$TMP/out"))"
status_json | jq -e '(.grants | length) == 2' >/dev/null || fail "status after the limits"
pass "agent healthy"

log "a reload raising limits.max_grants beyond the running replay cache"
# The cache holds 4 (twice the limit at the start) until a restart; 5 grants cannot fit it.
cp "$CONFIG" "$TMP/config.before"
limits_config 5 3
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/reload" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "bad_config: .*limits.max_grants 5 is more than the running replay cache holds (4" \
	"$TMP/reload" || fail "the reload raising max_grants: exit $rc: $(cat "$TMP/reload")"
refused busy --src 192.0.2.5 --port 22 --for 60
pass "$(cat "$TMP/reload"); the running limit stays"
cp "$TMP/config.before" "$CONFIG"

log "descriptors: a configuration that needs more than the process may open"
rc=0
out=$(in_ns "$SRV" prlimit --nofile=100 "$JITD_BIN" -c "$CONFIG" --check-config 2>&1) || rc=$?
[ "$rc" -eq 1 ] && grep -q "need 170 file descriptors with jitd's own, and this process may open 100" \
	<<<"$out" || fail "check-config under 100 descriptors: exit $rc: $out"
in_ns "$SRV" prlimit --nofile=200 "$JITD_BIN" -c "$CONFIG" --check-config >/dev/null 2>&1 ||
	fail "check-config refused under 200 descriptors"
pass "refused under 100 descriptors (3 control connections, 4 for root, 128 of jitd's own," \
	"5 readers of 6 trail files and one more each), accepted under 200"

log "descriptors: a reload asking for more than the running jitd may open"
# control_connections applies at a reload (the endpoint's max_connections waits for a restart).
soft=$(prlimit --pid "$JITD_PID" --nofile --raw --noheadings -o SOFT)
prlimit --pid "$JITD_PID" --nofile=200: || fail "cannot lower jitd's descriptor limit"
limits_config 2 100
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/reload" 2>&1 || rc=$?
want="need 267 file descriptors with jitd's own, and this process may open 200"
[ "$rc" -eq 1 ] && grep -q "bad_config: .*$want" "$TMP/reload" ||
	fail "the reload under 200 descriptors: exit $rc: $(cat "$TMP/reload")"
status_json | jq -e '.agent.reload_refused.error | test("need 267 file descriptors")' >/dev/null ||
	fail "status does not show the refused reload: $(status_json | jq -c .agent)"
pass "$(cat "$TMP/reload")"
prlimit --pid "$JITD_PID" --nofile="$soft": || fail "cannot restore jitd's descriptor limit"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/reload" 2>&1 ||
	fail "the same reload under $soft descriptors: $(cat "$TMP/reload")"
pass "applied under $soft descriptors"
# Out of descriptors, the control socket's accept fails: the listener pauses (1 s) and says so
# once a pause, rather than spin on the connection waiting, a log line each time round the
# loop; given descriptors again, it accepts again. The limit is the lowest descriptor free, so
# that the accept's cannot be had.
lines=$(wc -l <"$TMP/jitd.log")
free=0
while [ -e "/proc/$JITD_PID/fd/$free" ] && [ "$free" -lt 100000 ]; do
	free=$((free + 1))
done
prlimit --pid "$JITD_PID" --nofile="$free": || fail "cannot lower jitd's descriptor limit to $free"
rc=0
timeout 3 "$JITCTL_BIN" -s "$SOCK" status >/dev/null 2>&1 || rc=$?
prlimit --pid "$JITD_PID" --nofile="$soft": || fail "cannot restore jitd's descriptor limit"
said=$(tail -n +"$((lines + 1))" "$TMP/jitd.log" |
	grep -c "control: accept: Too many open files") || true
[ "$rc" -ne 0 ] && [ "$said" -ge 1 ] && [ "$said" -le 10 ] ||
	fail "out of descriptors for 3 s: jitctl exit $rc, accept failures logged $said times"
wait_until 5 "jitctl status once descriptors are back" "$JITCTL_BIN" -s "$SOCK" status
pass "out of descriptors, the control socket paused ($said failed accepts in 3 s), then served"
