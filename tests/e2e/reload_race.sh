# A reload's one transaction deletes the elements of grants the new policy drops. When one of
# them runs out between the reload's reading of the sets and its commit, the kernel refuses the
# whole batch (ENOENT). The reload reads the sets again and retries, rather than failing with
# "No such file or directory" and leaving the old policy in force. A test build stands in for
# the expiry ($JITD_TEST_RELOAD_RACE_FILE): just before the first commit it deletes those
# elements in a transaction of its own, so the kernel's refusal is real.
# A reload that fails (a test build refuses its batch: $JITD_TEST_RELOAD_FAIL_FILE) puts the
# grants it dropped back with the deadlines they had, not the wall clock's: a clock stepped
# back would lengthen them. A reload whose acks go unread ($JITD_TEST_ACKS_LOST_FILE; the
# kernel took it) fails, and the running policy is put back at once: a port it stopped
# protecting is closed again.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_RELOAD_RACE_FILE JITD_TEST_CLOCK_STEP_FILE JITD_TEST_RELOAD_FAIL_FILE \
	JITD_TEST_ACKS_LOST_FILE
JITD_TEST_ACKS_LOST_FILE=$TMP/ackslost
JITD_TEST_RELOAD_RACE_FILE=$TMP/reloadrace
JITD_TEST_RELOAD_FAIL_FILE=$TMP/reloadfail
JITD_TEST_CLOCK_STEP_FILE=$TMP/step
e2e_default_setup drop
sign --src 192.0.2.2 --port 22 --for 300 --jti keep | submit - >/dev/null || fail "grant refused"
sign --src 2001:db8:2::2 --port 3389 --for 300 --jti gone | submit - >/dev/null || fail "grant refused"
has_elem allow6_addr "2001:db8:2::2 tcp 3389" || fail "the 3389 grant is not in the kernel"
keep_left=$(elem_expires allow4_addr 192.0.2.2)
# Less the seconds gone since (not a guess at how long the test takes), and 2 for rounding.
kept_at=$SECONDS

log "reload dropping port 3389, its grant's element gone just before the commit"
echo 1 >"$JITD_TEST_RELOAD_RACE_FILE"
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
[ ! -e "$JITD_TEST_RELOAD_RACE_FILE" ] || fail "the reload did not meet the race"
grep -q "reload: kernel: .*re-reading the allow sets and retrying" "$TMP/jitd.log" ||
	fail "the first commit was not refused: $(grep reload "$TMP/jitd.log")"
pass "the kernel refused the first batch; jitctl reload succeeded: $(cat "$TMP/out")"
protected=$(kernel_json | jq -c '[.nftables[] | select(.set? and .set.name == "protected")
	| .set.elem[] | .concat[1]] | sort')
[ "$protected" = '[22]' ] || fail "protected ports after the reload: $protected"
lacks_elem allow6_addr "2001:db8:2::2 tcp 3389" || fail "the 3389 grant's element is back"
jq -s -e 'any(.[]; .event == "grant.revoked" and .grant == "gone")' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the dropped grant is not audited"
jq -s -e 'any(.[]; .event == "config.loaded")' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the reload is not audited as loaded"
status_json | jq -e '.grants | map(.id) == ["keep"]' >/dev/null ||
	fail "status: $(status_json | jq -c '.grants | map(.id)')"
left=$(elem_expires allow4_addr 192.0.2.2)
[ "$left" -le "$keep_left" ] && [ "$left" -ge "$(least_left "$keep_left" "$kept_at")" ] ||
	fail "the port 22 grant's timeout changed: $keep_left -> $left"
pass "the new policy is in force: port 22 only, the 3389 grant removed and audited, the other kept"
expect_connect ok "$C2" 2001:db8:2::1 3389
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22

log "a reload the kernel refuses puts back the grants it dropped, with the time they had"
sign --src 192.0.2.3 --port 22 --for 300 --jti back | submit - >/dev/null || fail "grant refused"
# The wall clock stepped back after it was applied: the grant's time left by the clock grows,
# the time it was given does not.
echo -100000 >"$JITD_TEST_CLOCK_STEP_FILE"
wait_until 5 "jitd took the clock step" test ! -e "$JITD_TEST_CLOCK_STEP_FILE"
touch "$JITD_TEST_RELOAD_FAIL_FILE"
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["192.0.2.2/32"]}]'
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "test hook" "$TMP/out" || fail "the refused reload: exit $rc: $(cat "$TMP/out")"
rm -f "$JITD_TEST_RELOAD_FAIL_FILE"
# Said once in the log, as agent.last_error says it.
refusal="test hook: Operation not permitted"
failed="reload failed, the running configuration stays: $refusal"
[ "$(grep -c "$refusal" "$TMP/jitd.log")" -eq 1 ] &&
	grep -qF "$failed" "$TMP/jitd.log" ||
	fail "the refused reload in the log: $(cat "$TMP/jitd.log")"
status_json | jq -e --arg f "$failed" '.agent.last_error == $f' >/dev/null ||
	fail "last_error: $(status_json | jq -c .agent.last_error)"
status_json | jq -e '.grants | map(.id) | sort == ["back", "keep"]' >/dev/null ||
	fail "status: $(status_json | jq -c '.grants | map(.id)')"
pass "refused ($(cat "$TMP/out")); both grants still in the books"
# Its element removed behind jitd's back: the repair writes it again from the books' deadline.
in_ns "$SRV" nft delete element inet jitd allow4_addr_3 '{ 192.0.2.3 . tcp . 22 }'
wait_until 5 "the deleted element repaired" has_elem allow4_addr "192.0.2.3 tcp 22"
left=$(elem_expires allow4_addr 192.0.2.3)
[ "$left" -le 300 ] && [ "$left" -ge 270 ] ||
	fail "the repaired element's timeout is $left s: the grant was given 300 s"
pass "repaired with the time the grant was given ($left s left), not the clock's 100 s more"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22

log "a reload the kernel took without its answer being read"
PORTS2='[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]},
	{"port": 3389, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
write_config drop '["198.51.100.3"]' "$PORTS2"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
protected_ports() {
	kernel_json | jq -c '[.nftables[] | select(.set? and .set.name == "protected")
		| .set.elem[] | .concat[1]] | unique'
}
[ "$(protected_ports)" = '[22,3389]' ] || fail "3389 not protected: $(protected_ports)"
expect_connect drop "$C2" 2001:db8:2::1 3389
echo 1 >"$JITD_TEST_ACKS_LOST_FILE"
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "acks were not read" "$TMP/out" ||
	fail "the unanswered reload: exit $rc: $(cat "$TMP/out")"
# At once: the kernel had taken the file's policy, 3389 unprotected; the running one is back.
[ "$(protected_ports)" = '[22,3389]' ] || fail "after the unanswered reload: $(protected_ports)"
expect_connect drop "$C2" 2001:db8:2::1 3389
grep -q "drift repaired: reload not answered by the kernel" "$TMP/jitd.log" ||
	fail "the repair is not logged: $(grep -i drift "$TMP/jitd.log")"
pass "refused ($(cat "$TMP/out")); port 3389 protected again at once"
