# The wall-clock backstop. nftables element timeouts stand still while a machine is suspended;
# jitd notices the resume (CLOCK_BOOTTIME jumps ahead of CLOCK_MONOTONIC) and makes the kernel
# match real time: grants whose time has passed are removed, the others' timeouts shortened.
# A test cannot suspend the machine: a test build (-DJITD_TEST_HOOKS=ON) lets it tell jitd that
# N ms passed while suspended, which moves jitd's wall clock and CLOCK_BOOTTIME, not the kernel's
# timeouts, exactly as a real suspend would.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_SUSPEND_FILE
JITD_TEST_SUSPEND_FILE=$TMP/suspend
e2e_default_setup drop
sign --src 192.0.2.2 --port 22 --for 300 --jti short | submit - >/dev/null || fail "grant refused"
sign --src 192.0.2.3 --port 22 --for 590 --jti long | submit - >/dev/null || fail "grant refused"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
left=$(elem_expires allow4_addr 192.0.2.3)
[ "$left" -gt 580 ] || fail "long grant has only $left s in the kernel before the suspend"

log "a 400 s suspend"
echo 400000 >"$JITD_TEST_SUSPEND_FILE"
wait_until 5 "the 300 s grant removed after 400 s suspended" lacks_elem allow4_addr "192.0.2.2 tcp 22"
pass "the grant whose time passed during the suspend is gone from the kernel"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
left=$(elem_expires allow4_addr 192.0.2.3)
[ -n "$left" ] && [ "$left" -le 195 ] && [ "$left" -ge 150 ] ||
	fail "the 590 s grant has $left s left in the kernel after 400 s suspended (want ~190)"
pass "the other grant's kernel timeout shortened to its real time left ($left s)"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
jq -s -e 'any(.[]; .event == "drift.repaired" and (.message | test("resume after 40[0-9] s suspended")))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "no drift.repaired record for the resume"
jq -s -e 'any(.[]; .event == "grant.expired" and .grant == "short")' "$TMP/state/audit.jsonl" \
	>/dev/null || fail "the short grant's expiry is not audited"
pass "resume repair and expiry audited"
status_json | jq -e '[.grants[].id] == ["long"] and .kernel.in_sync' >/dev/null ||
	fail "status after the resume: $(status_json | jq -c '[.grants[].id], .kernel.in_sync')"
pass "status: only the long grant, in sync"

log "short suspends add up"
# Each under the 2 s that marks a resume, so that none alone calls for a read: together (3 s)
# they put the kernel's timeouts past the grants' ends by more than its tolerance (1.5 s).
for k in 1 2; do
	echo 1500 >"$JITD_TEST_SUSPEND_FILE"
	wait_until 5 "suspend $k taken" test ! -e "$JITD_TEST_SUSPEND_FILE"
done
resumed() {
	jq -s -e 'any(.[]; .event == "drift.repaired" and
		(.message | test("resume after 3 s suspended")))' "$TMP/state/audit.jsonl" \
		>/dev/null
}
wait_until 5 "the two suspends found together" resumed
status_json | jq -e '[.grants[].id] == ["long"] and .kernel.in_sync' >/dev/null ||
	fail "status after the short suspends: $(status_json | jq -c '.kernel.in_sync')"
pass "two 1.5 s suspends: the kernel read again once they add up to 3 s, the timeout mended"
