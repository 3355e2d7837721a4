# Table ownership (Linux 6.9+, "table_owner": true): while jitd runs, no other process can change
# inet jitd — `nft delete table` is refused, `nft flush ruleset` passes it by, a stray element
# cannot be added — and when jitd dies the table stays (PERSIST), unowned, still closing the
# ports; a restart claims it again. On an older kernel jitd falls back to an unowned table (the
# path e2e heal covers) and this test checks only that it says so.
. "$(dirname "$0")/lib.sh"

e2e_owner_setup
if ! status_json | jq -e '.kernel.owned' >/dev/null; then
	# The fallback is for kernels without NFT_TABLE_F_PERSIST (6.9): on a newer one it would
	# mean ownership broke, and this test must say so, not pass on the fallback.
	IFS=.- read -r major minor _ <<<"$(uname -r)"
	[ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 9 ]; } ||
		fail "kernel $(uname -r) has PERSIST, yet jitd does not own its table"
	grep -q "cannot keep an owned table" "$TMP/jitd.log" || fail "not owned, and jitd did not say why"
	pass "kernel $(uname -r) has no PERSIST: jitd fell back to an unowned table and said so"
	exit 0
fi
pass "jitd owns table inet jitd (kernel $(uname -r))"
sign --src 192.0.2.2 --port 22 --for 300 --jti owned-1 | submit - >/dev/null || fail "grant refused"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "grant not in the kernel"

log "other processes cannot change it"
in_ns "$SRV" nft delete table inet jitd 2>/dev/null && fail "nft delete table succeeded"
pass "nft delete table inet jitd: refused"
in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ 192.0.2.3 . tcp . 22 timeout 1h }' 2>/dev/null &&
	fail "nft add element succeeded"
pass "nft add element: refused"
in_ns "$SRV" nft flush ruleset
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "nft flush ruleset removed the grant"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "nft flush ruleset passes the owned table by"

log "jitd dies: the table stays, unowned"
stop_jitd KILL
# Text, not JSON: nft before 1.1 misprints the flags of an unowned persistent table in JSON.
in_ns "$SRV" nft list table inet jitd >/dev/null || fail "the table died with its owner"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "after SIGKILL the table outlives jitd and keeps enforcing"
start_jitd
status_json | jq -e '.kernel.owned and ([.grants[].id] == ["owned-1"])' >/dev/null ||
	fail "restart: $(status_json | jq -c '.kernel.owned, [.grants[].id]')"
in_ns "$SRV" nft delete table inet jitd 2>/dev/null && fail "nft delete table succeeded after restart"
pass "restarted jitd claims the table again, grant restored"

log "ownership given up: table_owner false after an owned run"
# The table stays persistent when its owner goes, and no message can take that flag off: the
# start rebuilds it unowned, in one transaction, and restores the grant; no repair follows.
stop_jitd TERM
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
start_jitd
# Text, as above: the flags of a persistent table do not print in nft 1.0's JSON.
flags=$(in_ns "$SRV" nft list table inet jitd | sed -n 2p)
grep -q persist <<<"$flags" && fail "the unowned table is still persistent: $flags"
status_json | jq -e '(.kernel.owned | not) and .kernel.in_sync and
	([.grants[].id] == ["owned-1"])' >/dev/null ||
	fail "unowned start: $(status_json | jq -c '.kernel')"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant's element is not back: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
grep -q "rebuilding it from scratch" "$TMP/jitd.log" || fail "the start does not say it rebuilt"
pass "the start rebuilds the table unowned and not persistent, the grant restored"

log "ownership taken again: table_owner true after an unowned run"
# The unowned table is not persistent and no orphan: it cannot be claimed in place, so the
# start rebuilds it owned, in one transaction, and restores the grant.
stop_jitd TERM
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"table_owner": true'
start_jitd
status_json | jq -e '.kernel.owned and .kernel.in_sync and ([.grants[].id] == ["owned-1"])' \
	>/dev/null || fail "owned start after an unowned run: $(status_json | jq -c '.kernel')"
grep -q "cannot keep an owned table" "$TMP/jitd.log" && fail "jitd fell back to an unowned table"
in_ns "$SRV" nft delete table inet jitd 2>/dev/null && fail "nft delete table succeeded"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant's element is not back: $(host_elems)"
pass "the start rebuilds the table owned, the grant restored"
