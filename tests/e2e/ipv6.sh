# The same promise over IPv6: allow6, an IPv6 prefix grant, expiry, and a surviving session.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop

expect_connect drop "$C1" 2001:db8:1::1 22
expect_connect drop "$C2" 2001:db8:2::1 22
expect_connect ok "$C1" 2001:db8:1::1 8080

log "grant 2001:db8:1::/64 -> 22/tcp for 10 s"
# 10 s: the grants must still be active at the flow count, a dozen processes later on a loaded
# machine; their expiry is what is waited for below.
sign --src 2001:db8:1::/64 --port 22 --for 10 --jti v6-1 | submit - >/dev/null || fail "submit refused"
holds_match allow6 "tcp 22" || fail "kernel has no allow6 element"
[ -z "$(allow_elems allow4)$(allow_elems allow4_addr)" ] || fail "an IPv6 grant put something in an IPv4 set"
pass "kernel: allow6 holds $(allow_elems allow6 | head -n1)"
expect_connect ok "$C1" 2001:db8:1::1 22
session_open "$C1" 2001:db8:1::1 22	# before the refused connects' timeouts use up the grant
session_say v6-before-expiry
# The session's flow is counted for the prefix grant and for a grant of the one address (found
# through the index of one-address sources), not for another address's. Asked before the
# refused connects below, whose timeouts could outlast v6-1 on a loaded machine.
sign --src 2001:db8:1::2 --port 22 --for 10 --jti v6-host | submit - >/dev/null || fail "v6-host refused"
sign --src 2001:db8:1::9 --port 22 --for 10 --jti v6-other | submit - >/dev/null || fail "v6-other refused"
counts=$(status_json | jq -cS '[.grants[] | {(.id): .flows}] | add')
[ "$counts" = '{"v6-1":1,"v6-host":1,"v6-other":0}' ] ||
	fail "status flow counts: $counts, want v6-1 1, v6-host 1, v6-other 0"
pass "status counts the IPv6 session for the prefix and for its address, not for another"
expect_connect drop "$C2" 2001:db8:2::1 22
expect_connect drop "$C1" 192.0.2.1 22	# an IPv6 grant says nothing about the client's IPv4

wait_until 20 "allow6 element to expire" no_allow_elems
pass "kernel removed the IPv6 element by itself"
session_say v6-after-expiry
expect_connect drop "$C1" 2001:db8:1::1 22

log "port 3389 allows only 2001:db8:2::/48 and 10.0.0.0/8"
# An IPv6 source outside the port's IPv6 prefix, and one prefix wider than it, are refused.
before=$(kernel_json | strip_expires)
for src in 2001:db8:1::2 2001:db8::/47; do
	rc=0
	sign --src "$src" --port 3389 --for 30 | submit - --json >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && [ "$(jq -r .error "$TMP/out")" = source_not_allowed ] ||
		fail "a grant from $src for 3389: exit $rc, $(cat "$TMP/out")"
done
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "a refused IPv6 grant changed the kernel"
pass "2001:db8:1::2 and 2001:db8::/47 refused for 3389 (source_not_allowed), the kernel unchanged"
sign --src 2001:db8:2::2 --port 3389 --for 30 --jti v6-2 | submit - >/dev/null || fail "submit refused"
has_elem "$(addr_set 2001:db8:2::2)" "2001:db8:2::2 tcp 3389" ||
	fail "2001:db8:2::2 is not in $(addr_set 2001:db8:2::2): $(host_elems)"
expect_connect ok "$C2" 2001:db8:2::1 3389
expect_connect drop "$C2" 2001:db8:2::1 22

log "an IPv6 always_allow source reaches the protected ports without a grant"
# 2001:db8:1::2 (C1) added to always_allow beside 198.51.100.3, at a start; it holds no grant
# (v6-1 and the grants of its address expired above).
expect_connect drop "$C1" 2001:db8:1::1 22
stop_jitd TERM
config_edit '.always_allow += ["2001:db8:1::2"]'
start_jitd
# always_elems SET: the elements of always4 or always6 as nft prints them, one a line.
always_elems() {
	kernel_json | jq -r --arg set "$1" '.nftables[] | select(.set? and .set.name == $set)
		| (.set.elem // [])[] | if type == "string" then .
		elif has("prefix") then "\(.prefix.addr)/\(.prefix.len)"
		elif has("range") then "\(.range[0])-\(.range[1])" else tostring end'
}
[ "$(always_elems always6)" = 2001:db8:1::2 ] ||
	fail "always6 holds '$(always_elems always6 | tr '\n' ' ')', want 2001:db8:1::2 alone"
[ "$(always_elems always4)" = 198.51.100.3 ] ||
	fail "always4 holds '$(always_elems always4 | tr '\n' ' ')', want 198.51.100.3 alone"
lacks_source "$(addr_set 2001:db8:1::2)" 2001:db8:1::2 && [ -z "$(allow_elems allow6)" ] ||
	fail "a grant element covers 2001:db8:1::2: $(host_elems)"
pass "kernel: always6 holds 2001:db8:1::2, always4 only 198.51.100.3, no grant element for it"
expect_connect ok "$C1" 2001:db8:1::1 22
expect_connect ok "$C1" 2001:db8:1::1 3389
expect_connect drop "$C2" 2001:db8:2::1 22	# another IPv6 source, its grant for 3389 only
expect_connect drop "$C1" 192.0.2.1 22	# the same client's IPv4 is not always allowed
