# A start that fails closes the ports: every start that served and every reload applied keeps
# its configuration, byte for byte, in state_dir/lockdown.json, and a start that fails (a file
# it refuses, a control socket it cannot have) builds the deny table of that configuration when
# the kernel holds no table inet jitd, as after a boot (simulated: the table deleted). A table
# a jitd made is left as it is, grants and all, and one without jitd's mark (a saved ruleset
# loaded at the boot) replaced; a state directory where jitd never served
# gets no table; --check-config touches nothing. The next good start takes the table over and
# restores the grants.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop
RECORD="$TMP/state/lockdown.json"
cmp -s "$CONFIG" "$RECORD" || fail "lockdown.json is not the configuration served"
[ "$(stat -c %a "$RECORD")" = 600 ] || fail "lockdown.json mode $(stat -c %a "$RECORD")"
pass "the start kept its configuration as lockdown.json (0600)"
sign --src 192.0.2.2 --port 22 --for 600 --jti kept | submit - >/dev/null || fail "grant refused"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22

# The control socket's lock is a file: a second jitd in another namespace finds it taken.
log "a start stopped by another jitd's lock touches no kernel"
ip netns add "$B2"
rc=0
timeout 20 ip netns exec "$B2" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "another jitd runs there" "$TMP/fail.log" &&
	! grep -q lockdown "$TMP/fail.log" || fail "second jitd: exit $rc: $(cat "$TMP/fail.log")"
! in_ns "$B2" nft list table inet jitd >/dev/null 2>&1 || fail "a table made in $B2"
pass "a second jitd in another namespace: exit 1, no lockdown, no table there"
# A teardown there, for a configuration naming another socket but this state_dir: no jitd is
# found at that socket or in that namespace, and the running one's record must stay.
jq --arg s "$TMP/run2/jitd.sock" '.control_socket = $s' "$CONFIG" >"$TMP/other.json"
own_run "$B2" "$JITCTL_BIN" -c "$TMP/other.json" teardown >"$TMP/out" 2>&1 ||
	fail "teardown in $B2: $(cat "$TMP/out")"
grep -q "lockdown.json left: a running jitd uses $TMP/state" "$TMP/out" && [ -e "$RECORD" ] ||
	fail "teardown in $B2: $(cat "$TMP/out")"
pass "a teardown elsewhere leaves the running jitd's lockdown.json"
stop_jitd
cp "$CONFIG" "$TMP/good.json"
# Valid JSON that names its state_dir, refused for a key jitd does not know.
jq '. + {"typo": 1}' "$TMP/good.json" >"$CONFIG"

# fails_with PATTERN: a start that exits 1 and says PATTERN ($TMP/fail.log holds all of it).
fails_with() {
	local rc=0
	timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -qF -- "$1" "$TMP/fail.log" ||
		fail "start: exit $rc, wanted 1 and '$1': $(cat "$TMP/fail.log")"
}
# protected: the protected set's elements, "PROTO PORT" lines, sorted.
protected() {
	kernel_json | jq -r '.nftables[] | select(.set? and .set.name == "protected")
		| .set.elem[] | .concat | map(tostring) | join(" ")' | sort
}

log "a refused configuration with the table in the kernel (a restart): left as it is"
before=$(kernel_json | strip_expires)
fails_with "lockdown: table inet jitd is in the kernel: left as it is"
grep -q "typo" "$TMP/fail.log" || fail "the refusal is not said: $(cat "$TMP/fail.log")"
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "the failed start changed the table"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "table and grant untouched"

log "the same after a boot (no table): the ports are closed by the configuration last served"
in_ns "$SRV" nft delete table inet jitd
# Control: without the table port 22 is open to anyone, which is what the lockdown must undo.
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
BUILT="lockdown: table inet jitd built from $RECORD, the configuration last served"
fails_with "$BUILT: 2 protected port(s)"
[ "$(protected)" = "$(printf 'tcp 22\ntcp 3389')" ] || fail "protected set: $(protected)"
no_allow_elems || fail "the lockdown table holds grants: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 3389
expect_connect ok "$C2" -b 198.51.100.3 198.51.100.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 8080
jq -e -s --arg t typo '[.[] | select(.event == "agent.lockdown")] | length == 1 and
	(.[0].message | contains($t) and contains("no grants"))' "$TMP/state/audit.jsonl" \
	>/dev/null || fail "audit: $(grep lockdown "$TMP/state/audit.jsonl")"
pass "22 and 3389 closed, always_allow and unprotected ports open, no grants; audited with why"

log "--check-config of the refused file touches nothing"
in_ns "$SRV" nft delete table inet jitd
rc=0
in_ns "$SRV" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && ! grep -q lockdown "$TMP/out" ||
	fail "--check-config: exit $rc: $(cat "$TMP/out")"
! kernel_json >/dev/null 2>&1 || fail "--check-config made a table"
pass "--check-config: exit 1, no table"

# The file loaded, and it protects 2222 besides: that is the policy wanted, not the record's.
log "a start that fails past the file (its control socket's path taken) locks down to the file"
READ="lockdown: table inet jitd built from the configuration file just read"
jq '.ports += [{"port": 2222, "protocol": "tcp", "max_duration": "PT10M",
	"allowed_sources": ["*"]}]' "$TMP/good.json" >"$CONFIG"
touch "$SOCK"
fails_with "$READ: 3 protected port(s)"
grep -q "cannot listen on $SOCK" "$TMP/fail.log" || fail "why: $(cat "$TMP/fail.log")"
[ "$(protected)" = "$(printf 'tcp 22\ntcp 2222\ntcp 3389')" ] || fail "protected set: $(protected)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
pass "$(grep -m1 "cannot listen" "$TMP/fail.log"), then $(grep -m1 "lockdown:" "$TMP/fail.log")"
rm -f "$SOCK"

log "where jitd never served (another state_dir, no record): no table"
in_ns "$SRV" nft delete table inet jitd
mkdir -m 0700 "$TMP/state2"
jq --arg d "$TMP/state2" '. + {"typo": 1, "state_dir": $d}' "$TMP/good.json" >"$CONFIG"
fails_with "lockdown: no configuration was served here before (no $TMP/state2/lockdown.json)"
! kernel_json >/dev/null 2>&1 || fail "a table without a record"
pass "no record: exit 1, no table"
# A file that loads is no record either: the start fails past it, and still nothing is made.
jq --arg d "$TMP/state2" '. + {"state_dir": $d}' "$TMP/good.json" >"$CONFIG"
touch "$SOCK"
fails_with "lockdown: no configuration was served here before (no $TMP/state2/lockdown.json)"
! kernel_json >/dev/null 2>&1 || fail "a table without a record, from the file read"
pass "a file that loads, no record: exit 1, no table"
# A damaged record says nothing either, the file that loaded notwithstanding.
cp "$RECORD" "$TMP/record.saved"
echo '{ damaged' >"$RECORD"
cp "$TMP/good.json" "$CONFIG"
fails_with "lockdown: the last configuration served cannot be read, no table made"
! kernel_json >/dev/null 2>&1 || fail "a table from a damaged record's state directory"
cp "$TMP/record.saved" "$RECORD"
rm -f "$SOCK"
pass "a damaged record: exit 1, no table"
if [ ! -e /var/lib/jitd/lockdown.json ]; then
	echo '{ "state_dir": ' >"$CONFIG"
	fails_with "no configuration was served here before (no /var/lib/jitd/lockdown.json)"
	pass "a file that is not JSON: the default state directory is asked"
else
	log "skipped: a file that is not JSON (this host has a /var/lib/jitd/lockdown.json)"
fi

log "the next good start takes the lockdown table over and restores the grant"
cp "$TMP/good.json" "$CONFIG"
touch "$SOCK"
fails_with "$READ: 2 protected port(s)"
rm -f "$SOCK"
start_jitd
grep -q "table inet jitd is in place: left as it is" "$TMP/jitd.log" ||
	fail "the lockdown table was not taken as it is: $(tail -n 20 "$TMP/jitd.log")"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant was not restored: $(host_elems)"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
pass "served again: table kept, grant restored"

log "a table a saved ruleset brings back at a boot (no jitd mark) is replaced, not trusted"
# `nft list ruleset` saved to /etc/nftables.conf and loaded at the boot brings back the grants
# and ports of the day it was saved, which a start that fails cannot check. The boot is the
# table deleted and put back by nft; the grant stands for one long expired.
stop_jitd
in_ns "$SRV" nft list table inet jitd >"$TMP/saved.nft"
put_back_saved() {
	in_ns "$SRV" nft delete table inet jitd
	in_ns "$SRV" nft -f "$TMP/saved.nft" || fail "nft did not take the saved table back"
	has_elem allow4_addr "192.0.2.2 tcp 22" ||
		fail "the saved table has no grant: $(host_elems)"
}
put_back_saved
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
jq '. + {"typo": 1}' "$TMP/good.json" >"$CONFIG"
n=$(jq -s '[.[] | select(.event == "agent.lockdown")] | length' "$TMP/state/audit.jsonl")
fails_with "lockdown: table inet jitd that no jitd made (no jitd mark: a saved ruleset loaded \
at the boot?) replaced by one built from $RECORD, the configuration last served: 2 protected"
[ "$(protected)" = "$(printf 'tcp 22\ntcp 3389')" ] || fail "protected set: $(protected)"
no_allow_elems || fail "the grant of the saved table is still there: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
jq -e -s --argjson n "$n" '[.[] | select(.event == "agent.lockdown")] | length == $n + 1 and
	(.[-1].message | contains("no jitd mark"))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "audit: $(grep lockdown "$TMP/state/audit.jsonl")"
pass "the saved table's grant gone, 22 and 3389 closed; audited"
# kept_by_a_failing_start: the grant restored, and a start that fails (an unknown key) leaves
# the table as it is, the grant connecting; then jitd serves again.
kept_by_a_failing_start() {
	has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant was not restored: $(host_elems)"
	stop_jitd
	jq '. + {"typo": 1}' "$TMP/good.json" >"$CONFIG"
	fails_with "lockdown: table inet jitd is in the kernel: left as it is"
	expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
	cp "$TMP/good.json" "$CONFIG"
	start_jitd
}
# A start that serves finds the same: it rebuilds the table and restores its own grants, and
# the table it leaves is one a failing start trusts (a restart).
cp "$TMP/good.json" "$CONFIG"
put_back_saved
lines=$(wc -l <"$TMP/jitd.log")
start_jitd
# What it says first is what else differs: nft puts the rules back in another form.
grep -q "or it has no jitd mark (another program made it): rebuilding it from scratch" \
	<(tail -n +"$((lines + 1))" "$TMP/jitd.log") ||
	fail "the start did not rebuild the saved table: $(grep 'table inet' "$TMP/jitd.log")"
kept_by_a_failing_start
pass "a start rebuilds the saved table, restores the grant, and marks the table as a jitd's"
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	# An upgrade: the table an older jitd made has the same sets and rules, only no mark. The
	# start must not take it as in place, or the next start that fails would replace it.
	log "(test build) a table as a jitd before the mark made it: rebuilt, marked, at the start"
	stop_jitd
	in_ns "$SRV" nft delete table inet jitd
	lines=$(wc -l <"$TMP/jitd.log")
	JITD_TEST_NO_MARK=1 start_jitd
	has_elem allow4_addr "192.0.2.2 tcp 22" ||
		fail "no grant in the unmarked table: $(host_elems)"
	# As on a kernel that keeps no table user data (before 5.10): the start says so, and its
	# checks do not rebuild the table for want of the mark (a stray element makes one).
	tail -n +"$((lines + 1))" "$TMP/jitd.log" >"$TMP/start.log"
	grep -q "this kernel keeps no table user data" "$TMP/start.log" ||
		fail "the lost mark is not said: $(cat "$TMP/start.log")"
	in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ 192.0.2.3 . tcp . 22 timeout 1h }'
	wait_until 5 "the stray element removed" lacks_elem allow4_addr "192.0.2.3 tcp 22"
	! tail -n +"$((lines + 1))" "$TMP/jitd.log" | grep "has no jitd mark" ||
		fail "a check rebuilt the table for want of the mark"
	pass "a kernel that loses the mark: said once, the checks do not rebuild for it"
	stop_jitd
	lines=$(wc -l <"$TMP/jitd.log")
	start_jitd
	tail -n +"$((lines + 1))" "$TMP/jitd.log" >"$TMP/start.log"
	grep -q "table inet jitd: table inet jitd has no jitd mark" "$TMP/start.log" ||
		fail "the unmarked table was taken as it is: $(cat "$TMP/start.log")"
	kept_by_a_failing_start
	pass "an older jitd's table is rebuilt with the mark, and kept by a start that fails"
	# A table found in place, then replaced by an unmarked copy before the start claims it (a
	# test build pauses there): that is someone else's table, not a kernel that loses the mark.
	log "(test build) a table replaced between the start's read and its claim"
	stop_jitd
	in_ns "$SRV" nft list table inet jitd >"$TMP/copy.nft"
	lines=$(wc -l <"$TMP/jitd.log")
	replace_with_copy() {
		in_ns "$SRV" nft delete table inet jitd && in_ns "$SRV" nft -f "$TMP/copy.nft"
	}
	start_jitd_in_place_pause replace_with_copy
	copy_rebuilt() {
		local t
		t=$(tail -n +"$((lines + 1))" "$TMP/jitd.log")
		grep -q "rebuilding it from scratch" <<<"$t"
	}
	wait_until 5 "the copy rebuilt" copy_rebuilt
	! tail -n +"$((lines + 1))" "$TMP/jitd.log" | grep "keeps no table user data" ||
		fail "the replaced table was taken for a kernel that loses the mark"
	kept_by_a_failing_start
	pass "the copy is rebuilt with the mark, and the mark still asked for"
else
	log "skipped: a table as a jitd before the mark made it (needs -DJITD_TEST_HOOKS=ON)"
fi

log "a reload applied is the new record; one refused is not"
jq '.ports += [{"port": 2222, "protocol": "tcp", "max_duration": "PT10M",
	"allowed_sources": ["*"]}]' "$TMP/good.json" >"$CONFIG"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
cmp -s "$CONFIG" "$RECORD" || fail "lockdown.json is not the reloaded configuration"
cp "$CONFIG" "$TMP/reloaded.json"
jq '. + {"typo": 1}' "$TMP/reloaded.json" >"$CONFIG"
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a reload with an unknown key applied"
cmp -s "$TMP/reloaded.json" "$RECORD" || fail "a refused reload changed lockdown.json"
pass "lockdown.json follows the reload applied, not the one refused"
stop_jitd
in_ns "$SRV" nft delete table inet jitd
fails_with "$BUILT: 3 protected port(s)"
[ "$(protected)" = "$(printf 'tcp 22\ntcp 2222\ntcp 3389')" ] || fail "protected set: $(protected)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
pass "the boot after the reload closes 22, 2222 and 3389"

log "a reload that moves state_dir (at the next start) keeps the record in the new one too"
cp "$TMP/reloaded.json" "$CONFIG"
start_jitd
# The same directory by another spelling is not a move: no record "ahead", no false alarm.
jq --arg d "$TMP/state/." '.state_dir = $d' "$TMP/reloaded.json" >"$CONFIG"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
! grep -q "state_dir moves to" "$TMP/jitd.log" ||
	fail "the same state_dir taken for a move: $(grep "state_dir moves to" "$TMP/jitd.log")"
jq --arg d "$TMP/state3" '.state_dir = $d' "$TMP/reloaded.json" >"$CONFIG"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
cmp -s "$CONFIG" "$TMP/state3/lockdown.json" && cmp -s "$CONFIG" "$RECORD" ||
	fail "the moved record: $(ls -l "$TMP/state3" 2>&1)"
[ "$(stat -c %a "$TMP/state3")" = 700 ] || fail "state3 made $(stat -c %a "$TMP/state3")"
# Nothing else follows: the log says what to move before the restart.
grep -q "state_dir moves to $TMP/state3 at the next start: stop jitd and move" "$TMP/jitd.log" ||
	fail "no warning of what the move leaves behind"
pass "the record in both directories, the new one made 0700; the log says what to move"
stop_jitd
in_ns "$SRV" nft delete table inet jitd
touch "$SOCK"
fails_with "$READ: 3 protected port(s)"
[ "$(protected)" = "$(printf 'tcp 22\ntcp 2222\ntcp 3389')" ] || fail "protected set: $(protected)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
rm -f "$SOCK"
pass "a start there that fails after a boot closes 22, 2222 and 3389"

log "an owned table (table_owner) stays after the lockdown's process exits"
jq '. + {"table_owner": true}' "$TMP/good.json" >"$CONFIG"
start_jitd
cmp -s "$CONFIG" "$RECORD" || fail "lockdown.json is not the owner configuration"
stop_jitd
in_ns "$SRV" nft delete table inet jitd
jq '. + {"typo": 1}' "$TMP/good.json" >"$CONFIG"
fails_with "lockdown: table inet jitd built from $RECORD"
kernel_json >/dev/null || fail "the owned lockdown table went with its process"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
pass "the owned lockdown table stays after its process exits (PERSIST, or unowned before 6.9)"
jq '. + {"table_owner": true}' "$TMP/good.json" >"$CONFIG"
: >"$TMP/jitd.log"
start_jitd
grep -q "table inet jitd is in place: left as it is" "$TMP/jitd.log" ||
	fail "the owned lockdown table was not taken as it is: $(tail -n 20 "$TMP/jitd.log")"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
stop_jitd
pass "an owning jitd takes the lockdown table over and restores the grant"

# A start that fails once it enforces: its enforcer holds the state directory, so the lockdown's
# audit line goes into the trail it has open. The table deleted during its pause (a test build
# pauses after the restore, $JITD_TEST_START_PAUSE_FILE; a test build's control socket then
# fails to listen, $JITD_TEST_ATTACH_FAIL_FILE) stands for one gone in between.
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	log "a start failing after it enforces, its table gone: closed, audited in its own trail"
	in_ns "$SRV" nft delete table inet jitd
	cp "$TMP/good.json" "$CONFIG"
	lines=$(jq -s '[.[] | select(.event == "agent.lockdown")] | length' \
		"$TMP/state/audit.jsonl")
	export JITD_TEST_START_PAUSE_FILE=$TMP/startpause JITD_TEST_ATTACH_FAIL_FILE=$TMP/attachfail
	echo 3000 >"$JITD_TEST_START_PAUSE_FILE"
	touch "$JITD_TEST_ATTACH_FAIL_FILE"
	rc=0
	timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 &
	late=$!
	wait_until 5 "jitd to take the pause" test ! -e "$JITD_TEST_START_PAUSE_FILE"
	in_ns "$SRV" nft delete table inet jitd
	wait "$late" || rc=$?
	rm -f "$JITD_TEST_ATTACH_FAIL_FILE"
	unset JITD_TEST_START_PAUSE_FILE JITD_TEST_ATTACH_FAIL_FILE
	[ "$rc" -eq 1 ] && grep -qF "$READ" "$TMP/fail.log" ||
		fail "start: exit $rc: $(cat "$TMP/fail.log")"
	! grep -q "cannot record" "$TMP/fail.log" || fail "not audited: $(cat "$TMP/fail.log")"
	[ "$(protected)" = "$(printf 'tcp 22\ntcp 3389')" ] || fail "protected set: $(protected)"
	expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
	# One line more than before, and it is this start's.
	jq -e -s --argjson n "$lines" '[.[] | select(.event == "agent.lockdown")] | .[$n:]
		| length == 1 and (.[0].message | contains("cannot listen on") and
		contains("no grants"))' "$TMP/state/audit.jsonl" >/dev/null ||
		fail "audit: $(grep lockdown "$TMP/state/audit.jsonl")"
	pass "22 and 3389 closed; the line is in the trail the failed start held"
else
	log "skipped: a start failing after it enforces (needs -DJITD_TEST_HOOKS=ON)"
fi

# A record without host_id (the host name stands in) still closes the ports at a boot whose
# host name jitd cannot use (the kernel's "(none)", a name given with a space): the deny table
# does not need it. Its own UTS namespace gives this jitd such a name.
log "a record without host_id, a boot with a host name jitd cannot use: closed all the same"
jq 'del(.host_id)' "$TMP/good.json" >"$CONFIG"
start_jitd
stop_jitd
cmp -s "$CONFIG" "$RECORD" || fail "lockdown.json is not the configuration without host_id"
in_ns "$SRV" nft delete table inet jitd
rc=0
timeout 20 ip netns exec "$SRV" unshare --uts sh -c 'echo "bad name" >/proc/sys/kernel/hostname &&
	exec "$0" -c "$1"' "$JITD_BIN" "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -qF "the host name 'bad name' is not usable" "$TMP/fail.log" &&
	grep -qF "lockdown: table inet jitd built from $RECORD" "$TMP/fail.log" ||
	fail "start: exit $rc: $(cat "$TMP/fail.log")"
[ "$(protected)" = "$(printf 'tcp 22\ntcp 3389')" ] || fail "protected set: $(protected)"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
pass "22 and 3389 closed by the record, whatever the host name"

# The unit's ExecStopPost: a jitd killed before its own failure path could run (a read fault in
# a mapped state file is a SIGBUS; the OOM killer) leaves no table after a boot.
log "jitd --lockdown (the unit runs it after every stop): a boot's missing table is built"
cp "$TMP/good.json" "$CONFIG"
in_ns "$SRV" nft delete table inet jitd
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
lockdowns() {
	jq -s '[.[] | select(.event == "agent.lockdown")] | length' "$TMP/state/audit.jsonl"
}
n=$(lockdowns)
# after_stop RESULT CODE STATUS: jitd --lockdown as systemd runs it; its exit status in rc.
after_stop() {
	rc=0
	SERVICE_RESULT=$1 EXIT_CODE=$2 EXIT_STATUS=$3 timeout 20 \
		ip netns exec "$SRV" "$JITD_BIN" --lockdown -c "$CONFIG" >"$TMP/out" 2>&1 || rc=$?
}
# A jitd that ended by itself (a start that failed, or found another jitd) did what it had to.
after_stop exit-code exited 1
[ "$rc" -eq 0 ] && grep -qF "jitd ended by itself (systemd: exit-code, exited 1): nothing" \
	"$TMP/out" && ! kernel_json >/dev/null 2>&1 && [ "$(lockdowns)" = "$n" ] ||
	fail "jitd --lockdown after jitd exited 1: exit $rc: $(cat "$TMP/out")"
pass "after a jitd that exited by itself: nothing made, nothing audited"
# Nor while another process holds the state directory's lock, as a running jitd does.
exec {held}<"$TMP/state"
flock -x -n "$held" || fail "cannot lock $TMP/state"
after_stop signal killed KILL
exec {held}<&-
[ "$rc" -eq 0 ] && grep -qF "lockdown: a running jitd uses $TMP/state: nothing made" "$TMP/out" &&
	! kernel_json >/dev/null 2>&1 && [ "$(lockdowns)" = "$n" ] ||
	fail "jitd --lockdown with the state directory held: exit $rc: $(cat "$TMP/out")"
pass "with the state directory held by another: nothing made, nothing audited"
after_stop signal killed BUS
[ "$rc" -eq 0 ] && grep -qF "${READ#lockdown: }: 2 protected port(s)" "$TMP/out" ||
	fail "jitd --lockdown: exit $rc: $(cat "$TMP/out")"
[ "$(protected)" = "$(printf 'tcp 22\ntcp 3389')" ] || fail "protected set: $(protected)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C2" -b 198.51.100.3 198.51.100.1 22
jq -e -s --argjson n "$n" '[.[] | select(.event == "agent.lockdown")] | length == $n + 1 and
	(.[-1].message | startswith("jitd ended (systemd: signal, killed BUS) with no table"))' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "audit: $(grep lockdown "$TMP/state/audit.jsonl")"
pass "after a jitd killed by SIGBUS: 22 and 3389 closed, always_allow open; audited how it ended"
# Over the table (a jitd killed while it served), whatever the record: nothing changes.
before=$(kernel_json | strip_expires)
mv "$RECORD" "$RECORD.saved"
echo '{ damaged' >"$RECORD"
after_stop core-dump dumped ABRT
mv "$RECORD.saved" "$RECORD"
[ "$rc" -eq 0 ] && grep -qF "lockdown: table inet jitd is in the kernel: left as it is" \
	"$TMP/out" && [ "$(kernel_json | strip_expires)" = "$before" ] &&
	[ "$(lockdowns)" = "$((n + 1))" ] ||
	fail "jitd --lockdown over the table: exit $rc: $(cat "$TMP/out")"
pass "over jitd's table, a damaged record notwithstanding: left as it is, exit 0, nothing audited"
rc=0
in_ns "$SRV" "$JITD_BIN" --lockdown --check-config -c "$CONFIG" >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "--lockdown with --check-config: exit $rc: $(cat "$TMP/out")"
pass "--lockdown with --check-config is a usage error"
