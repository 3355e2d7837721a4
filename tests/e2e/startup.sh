# A start that cannot have its sockets stops before it touches the kernel: with the controller
# endpoint's port taken, or the control socket's path held by a file that is not a socket,
# jitd exits 1 saying why and leaves no table inet jitd, so that no agent that never served
# closed a port. When the control socket's directory does not exist (jitd run by hand,
# without the unit's RuntimeDirectory), jitd makes it, 0750, and starts. A second jitd with
# its own control socket but the same state_dir stops before it touches that directory; one
# with its own state_dir too stops at the network namespace's lock, before the kernel, and
# teardown asked at another socket still finds the running jitd.
. "$(dirname "$0")/lib.sh"

setup_net
setup_keys
PORTS='[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
no_table() { ! in_ns "$SRV" nft list table inet jitd >/dev/null 2>&1; }
# start_fails WHAT PATTERN: jitd exits 1 with PATTERN in its output, and made no table.
start_fails() {
	local rc=0
	timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -q "$2" "$TMP/fail.log" ||
		fail "$1: exit $rc: $(cat "$TMP/fail.log")"
	no_table || fail "$1: jitd left table inet jitd behind"
	pass "$1: exit 1 ($(grep -m1 "$2" "$TMP/fail.log")), no table"
}

log "the controller endpoint's port taken"
start_listeners 7080
write_config drop '[]' "$PORTS" '"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
start_fails "port 7080 taken" "cannot open the controller endpoint on 127.0.0.1:7080"
[ ! -e "$SOCK" ] || fail "the failed start left its control socket behind"

log "the control socket's path is a regular file"
write_config drop '[]' "$PORTS"
touch "$SOCK"
start_fails "control socket path held" "cannot listen on $SOCK"
rm -f "$SOCK"

log "the control socket's directory does not exist"
rm -rf "$TMP/run"
start_jitd
[ "$(stat -c '%a %u' "$TMP/run")" = "750 0" ] ||
	fail "the socket's directory: $(stat -c '%a %u' "$TMP/run")"
status_json | jq -e '[.ports[].port] == [22]' >/dev/null ||
	fail "status: $(status_json | jq -c .ports)"
in_ns "$SRV" nft list table inet jitd >/dev/null || fail "no table after the start"
pass "made $TMP/run (0750, root's) and started: table in place, status answers"

# Its own control socket, so that the socket's lock does not stop it: the state directory's does,
# before it reads or writes a byte there (the first one's audit trail is unchanged).
log "a second jitd for the same state_dir"
sed "s|\"control_socket\": \"$SOCK\"|\"control_socket\": \"$TMP/run2/jitd.sock\"|" "$CONFIG" \
	>"$TMP/second.json"
chmod 0600 "$TMP/second.json"
grep -q "$TMP/run2/jitd.sock" "$TMP/second.json" || fail "no second configuration"
trail=$(sha256sum <"$TMP/state/audit.jsonl")
rc=0
timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$TMP/second.json" >"$TMP/second" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "cannot open state directory $TMP/state: another jitd uses it" \
	"$TMP/second" || fail "a second jitd on the same state_dir: exit $rc: $(cat "$TMP/second")"
[ ! -e "$TMP/run2/jitd.sock" ] || fail "the second jitd left its control socket behind"
[ "$(sha256sum <"$TMP/state/audit.jsonl")" = "$trail" ] ||
	fail "the second jitd wrote to the first one's audit trail"
status_json | jq -e '[.ports[].port] == [22]' >/dev/null || fail "the first jitd stopped serving"
said=$(grep -m1 "another jitd" "$TMP/second")
pass "a second jitd on the same state_dir: exit 1 ($said), nothing written there"

# Its own control socket and state_dir too (a copied configuration run by hand): it would take
# the first one's grants for strays. The network namespace's lock stops it before the kernel.
log "a second jitd in the same network namespace, with its own socket and state_dir"
sign --src 192.0.2.9 --port 22 --for 300 --jti ns-1 | submit - >/dev/null || fail "grant ns-1"
has_elem allow4_addr "192.0.2.9 tcp 22" || fail "ns-1 not in the kernel"
jq --arg s "$TMP/state2" '.state_dir = $s' "$TMP/second.json" >"$TMP/third.json"
chmod 0600 "$TMP/third.json"
elems=$(allow_elems allow4_addr)
rc=0
timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$TMP/third.json" >"$TMP/second" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "another jitd (pid $JITD_PID) runs in this network namespace" \
	"$TMP/second" || fail "a second jitd in the namespace: exit $rc: $(cat "$TMP/second")"
[ "$(allow_elems allow4_addr)" = "$elems" ] && has_elem allow4_addr "192.0.2.9 tcp 22" ||
	fail "the second jitd changed the grants in the kernel: $(allow_elems allow4_addr)"
[ ! -e "$TMP/run2/jitd.sock" ] || fail "the second jitd left its control socket behind"
status_json | jq -e '[.grants[].id] == ["ns-1"]' >/dev/null || fail "the first jitd lost ns-1"
said=$(grep -m1 "another jitd" "$TMP/second")
pass "a second jitd in the namespace: exit 1 ($said), the grants untouched"
# teardown asked at a socket where nothing runs (a configuration moved since the start) still
# finds the namespace's jitd.
rc=0
in_ns "$SRV" "$JITCTL_BIN" -s "$TMP/run2/jitd.sock" teardown --json >"$TMP/out" 2>&1 || rc=$?
want="running in this network namespace (pid $JITD_PID, holding @jitd.netns.lock)"
[ "$rc" -eq 1 ] && jq -e --arg w "$want" '.error == "agent_running" and
	(.message | contains($w))' "$TMP/out" >/dev/null ||
	fail "teardown at another socket: exit $rc: $(cat "$TMP/out")"
has_elem allow4_addr "192.0.2.9 tcp 22" || fail "teardown at another socket removed the table"
pass "teardown at a socket where nothing listens: agent_running, the namespace's jitd named"

# Bound, not listened on, until jitd serves: a client during the start is refused at once
# rather than left in the backlog, its request applied after it gave up. A test build pauses
# after its restore ($JITD_TEST_START_PAUSE_FILE), with the table in place.
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	log "a client during the start"
	stop_jitd
	export JITD_TEST_START_PAUSE_FILE=$TMP/startpause
	# Long enough for all that follows under a loaded ASan build (a second jitd starts in it).
	echo 8000 >"$JITD_TEST_START_PAUSE_FILE"
	restored=$(grep -c "restored " "$TMP/jitd.log")
	ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >>"$TMP/jitd.log" 2>&1 &
	JITD_PID=$!
	paused() { [ "$(grep -c "restored " "$TMP/jitd.log")" -gt "$restored" ]; }
	wait_until 10 "the restore, then the pause" paused
	# The file edited after jitd read it, and a SIGHUP sent before it serves: held, not lost.
	write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M",
	  "allowed_sources": ["*"]}, {"port": 2222, "protocol": "tcp", "max_duration": "PT10M",
	  "allowed_sources": ["*"]}]'
	kill -HUP "$JITD_PID"
	rc=0
	timeout 10 "$JITCTL_BIN" -s "$SOCK" status >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 3 ] && grep -q "Connection refused" "$TMP/out" ||
		fail "a client during the start: exit $rc: $(cat "$TMP/out")"
	[ -e "$JITD_TEST_START_PAUSE_FILE" ] && fail "jitd did not take the pause"
	pass "refused at once during the start: $(cat "$TMP/out")"
	# Not listening yet, but running: its lock says so to a second jitd and to teardown.
	rc=0
	timeout 10 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/second" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -q "cannot listen on $SOCK: another jitd runs there" "$TMP/second" ||
		fail "a second jitd during the start: exit $rc: $(cat "$TMP/second")"
	rc=0
	in_ns "$SRV" "$JITCTL_BIN" -s "$SOCK" teardown >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -q "jitd is running" "$TMP/out" ||
		fail "teardown during the start: exit $rc: $(cat "$TMP/out")"
	no_table && fail "teardown during the start removed the table"
	pass "a second jitd and teardown during the start both find it running"
	wait_until 20 "jitd serving after the pause" status_json
	pass "served once started"
	reloaded() { status_json | jq -e '[.ports[].port] == [22, 2222]' >/dev/null; }
	wait_until 5 "the reload asked for during the start" reloaded
	kill -0 "$JITD_PID" || fail "the SIGHUP during the start ended jitd"
	pass "a SIGHUP during the start is a reload once jitd serves: ports $(status_json |
		jq -c '[.ports[].port]')"
fi
