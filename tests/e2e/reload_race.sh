# A reload's one transaction deletes the elements of grants the new policy drops. When one of
# them runs out between the reload's reading of the sets and its commit, the kernel refuses the
# whole batch (ENOENT). The reload reads the sets again and retries, rather than failing with
# "No such file or directory" and leaving the old policy in force. A test build stands in for
# the expiry ($JITD_TEST_RELOAD_RACE_FILE): just before the first commit it deletes those
# elements in a transaction of its own, so the kernel's refusal is real.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_RELOAD_RACE_FILE
JITD_TEST_RELOAD_RACE_FILE=$TMP/reloadrace
e2e_default_setup drop
sign --src 192.0.2.2 --port 22 --for 300 --jti keep | submit - >/dev/null || fail "grant refused"
sign --src 2001:db8:2::2 --port 3389 --for 300 --jti gone | submit - >/dev/null || fail "grant refused"
has_elem allow6_addr "2001:db8:2::2 tcp 3389" || fail "the 3389 grant is not in the kernel"
keep_left=$(elem_expires allow4_addr 192.0.2.2)

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
[ "$left" -le "$keep_left" ] && [ "$left" -ge $((keep_left - 10)) ] ||
	fail "the port 22 grant's timeout changed: $keep_left -> $left"
pass "the new policy is in force: port 22 only, the 3389 grant removed and audited, the other kept"
expect_connect ok "$C2" 2001:db8:2::1 3389
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
