# jitctl teardown: refused while the agent runs (also found without -s, through the
# configuration's control_socket, or at the default socket), even at its connection limit
# where it answers nobody; after a stop (which leaves the ports closed) it
# deletes table inet jitd in one transaction and nothing else, and the state_dir's lockdown.json
# (what a start that fails would close the ports with); a second run is a no-op.
# With --json, each outcome is one JSON object on stdout (agent_running, removed true/false).
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop
# Another tool's table in the same namespace: teardown must not touch it.
in_ns "$SRV" nft add table inet other
in_ns "$SRV" nft add chain inet other keep '{ type filter hook input priority 10; policy accept; }'
other_before=$(in_ns "$SRV" nft -j list table inet other)

rc=0
in_ns "$SRV" "$JITCTL_BIN" -s "$SOCK" teardown >"$TMP/out" 2>&1 || rc=$?
# The stable code: the packages' prerm and preun match this line to keep a running jitd's package.
[ "$rc" -eq 1 ] && grep -q "^jitctl teardown: refused: agent_running: jitd is running" "$TMP/out" ||
	fail "teardown with the agent up: exit $rc: $(cat "$TMP/out")"
kernel_json >/dev/null || fail "table gone after a refused teardown"
pass "refused while jitd runs; table kept"
rc=0
in_ns "$SRV" "$JITCTL_BIN" -s "$SOCK" teardown --json >"$TMP/out" 2>"$TMP/err" || rc=$?
[ "$rc" -eq 1 ] && [ ! -s "$TMP/err" ] && jq -e --arg s "$SOCK" '.error == "agent_running" and
	(.message | startswith("jitd is running (it listens on \($s),"))' "$TMP/out" >/dev/null ||
	fail "teardown --json with the agent up: exit $rc: $(cat "$TMP/out" "$TMP/err")"
kernel_json >/dev/null || fail "table gone after a refused teardown --json"
pass "teardown --json while jitd runs: agent_running, on stdout only; table kept"
# Without -s: the socket jitd's configuration names (-c), not the default path.
rc=0
in_ns "$SRV" "$JITCTL_BIN" -c "$CONFIG" teardown >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "jitd is running (it listens on $SOCK," "$TMP/out" ||
	fail "teardown -c CONFIG with the agent up: exit $rc: $(cat "$TMP/out")"
kernel_json >/dev/null || fail "table gone after a refused teardown"
"$JITCTL_BIN" -c "$CONFIG" status --json | jq -e '.ports | length == 2' >/dev/null ||
	fail "jitctl -c CONFIG status: $("$JITCTL_BIN" -c "$CONFIG" status --json 2>&1)"
pass "jitctl -c CONFIG finds the agent at the configuration's control_socket"

# At its limit of control connections (32 by default, and 4 more that only root may take) jitd
# closes a new one at once: it does not answer, but it runs all the same.
/usr/bin/python3 -c '
import socket, sys, time
held = []
for _ in range(36):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    held.append(s)
print("held", flush=True)
time.sleep(8)' "$SOCK" >"$TMP/held" &
HOLDER=$!
BG_PIDS+=("$HOLDER")
wait_until 5 "36 control connections held" grep -q held "$TMP/held"
! "$JITCTL_BIN" -s "$SOCK" status >/dev/null 2>&1 || fail "status answered beyond the connection limit"
rc=0
in_ns "$SRV" "$JITCTL_BIN" -s "$SOCK" teardown >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "jitd is running" "$TMP/out" ||
	fail "teardown with the agent at its connection limit: exit $rc: $(cat "$TMP/out")"
kernel_json >/dev/null || fail "table gone after a refused teardown"
pass "refused while jitd runs at its connection limit and answers nobody; table kept"
kill "$HOLDER" 2>/dev/null || true
wait "$HOLDER" 2>/dev/null || true

stop_jitd TERM
kernel_json >/dev/null || fail "SIGTERM removed the table"
expect_connect drop "$C1" 192.0.2.1 22
pass "stopped agent: table and deny rule stay"

# The default socket is asked too (a jitd started before its file moved control_socket still
# listens there): a listener at /run/jitd/jitd.sock, in own_run's /run, stands in for it.
rc=0
own_run "$SRV" python3 -c '
import os, socket, subprocess, sys
os.mkdir("/run/jitd")
s = socket.socket(socket.AF_UNIX)
s.bind("/run/jitd/jitd.sock")
s.listen(1)
sys.exit(subprocess.run(sys.argv[1:]).returncode)' "$JITCTL_BIN" -c "$CONFIG" teardown \
	>"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "^jitctl teardown: refused: agent_running: jitd is running (it \
listens on /run/jitd/jitd.sock," "$TMP/out" ||
	fail "teardown with a jitd at the default socket: exit $rc: $(cat "$TMP/out")"
kernel_json >/dev/null || fail "table gone after a refused teardown"
pass "a jitd at the default socket: -c teardown refused; table kept"
# -c: the record removed is the test's own (with -s alone, jitctl would read the host's
# /etc/jitd/jitd.json for its state_dir).
[ -e "$TMP/state/lockdown.json" ] || fail "no lockdown.json before the teardown"
# Test builds: its agent.teardown record, not copied to syslog (the file's audit.syslog false).
[ "${JITD_TEST_HOOKS:-0}" = 0 ] || syslog_standin
own_run "$SRV" "$JITCTL_BIN" -c "$CONFIG" teardown --json >"$TMP/out" 2>&1 ||
	fail "teardown: $(cat "$TMP/out")"
jq -e '. == {"table": "inet jitd", "removed": true, "lockdown_removed": true}' "$TMP/out" \
	>/dev/null || fail "teardown --json said: $(cat "$TMP/out")"
[ ! -e "$TMP/state/lockdown.json" ] || fail "lockdown.json still there after teardown"
! kernel_json >/dev/null 2>&1 || fail "table inet jitd still there after teardown"
[ "$(in_ns "$SRV" nft -j list table inet other)" = "$other_before" ] || fail "teardown changed table inet other"
pass "table inet jitd and lockdown.json deleted, table inet other untouched"
# The trail's last word was agent.stopped ("ports remain closed"): the teardown says otherwise.
tail -n 1 "$TMP/state/audit.jsonl" | jq -e '.event == "agent.teardown" and
	(.peer | startswith("uid=0 pid=")) and
	(.message | startswith("jitctl teardown: table inet jitd deleted"))' >/dev/null ||
	fail "the trail's last line: $(tail -n 2 "$TMP/state/audit.jsonl")"
pass "the teardown audited as agent.teardown, after agent.stopped"
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	syslog_read_up_to mark
	[ "$(cat "$TMP/syslog.txt")" = mark ] ||
		fail "copied to syslog with audit.syslog false: $(cat "$TMP/syslog.txt")"
	pass "with audit.syslog false, agent.teardown is not copied to syslog"
fi
expect_connect ok "$C1" 192.0.2.1 22
pass "port 22 no longer closed by jitd"
# -s alone, naming a socket the default configuration does not: no record of that file's.
in_ns "$SRV" "$JITCTL_BIN" -s "$SOCK" teardown >"$TMP/out" 2>&1 ||
	fail "second teardown: $(cat "$TMP/out")"
grep -q "nothing to remove" "$TMP/out" && grep -q "left: -s names another jitd than" "$TMP/out" ||
	fail "second teardown said: $(cat "$TMP/out")"
pass "second teardown: nothing to remove, another jitd's record left, exit 0"
own_run "$SRV" "$JITCTL_BIN" -c "$CONFIG" teardown --json >"$TMP/out" 2>&1 ||
	fail "third teardown: $(cat "$TMP/out")"
jq -e '. == {"table": "inet jitd", "removed": false, "lockdown_removed": false}' "$TMP/out" \
	>/dev/null ||
	fail "third teardown --json said: $(cat "$TMP/out")"
[ "$(grep -c '"agent.teardown"' "$TMP/state/audit.jsonl")" -eq 1 ] ||
	fail "a teardown with no table audited: $(grep agent.teardown "$TMP/state/audit.jsonl")"
pass "teardown --json without the table: removed false, exit 0, nothing audited"
# A table whose state_dir is gone (removed by hand, or purged first): deleted all the same, and
# the line it cannot write said.
in_ns "$SRV" nft add table inet jitd
jq --arg d "$TMP/gone" '.state_dir = $d' "$CONFIG" >"$TMP/gone.json"
own_run "$SRV" "$JITCTL_BIN" -c "$TMP/gone.json" teardown >"$TMP/out" 2>&1 ||
	fail "teardown without a state_dir: $(cat "$TMP/out")"
grep -q "cannot record agent.teardown in $TMP/gone/audit.jsonl: No such file or directory" \
	"$TMP/out" && ! kernel_json >/dev/null 2>&1 && [ ! -e "$TMP/gone" ] ||
	fail "teardown without a state_dir said: $(cat "$TMP/out")"
pass "a state_dir that is gone: the table deleted, the line it cannot write said"
