# The other path of table ownership: a kernel without NFT_TABLE_F_PERSIST (before 6.9, such as
# Debian 12's 6.1). A test build ($JITD_TEST_NO_PERSIST) answers the owned-table transaction as
# such a kernel does (EOPNOTSUPP): jitd must say so, keep an unowned table, never own it without
# PERSIST, and defend it by repairing what others change.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_NO_PERSIST=1
e2e_owner_setup
grep -q "cannot keep an owned table" "$TMP/jitd.log" || fail "no warning about the fallback"
status_json | jq -e '.kernel.owned == false and .kernel.present' >/dev/null ||
	fail "status: $(status_json | jq -c .kernel.owned)"
table=$(in_ns "$SRV" nft list table inet jitd)
grep -q "flags.*owner" <<<"$table" && fail "the table is owned"
pass "no PERSIST: jitd warns, and its table is present and not owned"
sign --src 192.0.2.2 --port 22 --for 120 --jti fb-1 | submit - >/dev/null || fail "grant refused"
in_ns "$SRV" nft delete table inet jitd
wait_until 5 "repair of the deleted table" has_elem allow4_addr "192.0.2.2 tcp 22"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
pass "the unowned table is defended by repair instead"
