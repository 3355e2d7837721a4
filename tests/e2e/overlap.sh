# Overlapping grants are honoured exactly. Prefix grants become disjoint ranges in allow4, each
# carrying the latest expiry of the grants covering it; one-address grants are elements of their
# own in allow4_addr beside any range covering them. The kernel expires each at its own time.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop

elems() { allow_elems "$1" | awk '{print $1}' | tr '\n' ' '; }
a_gone() { lacks_match allow4 '^192\.0\.2\.4-'; }
e_gone() { lacks_match allow4 '^192\.0\.2\.'; }
b_gone() { lacks_elem allow4_addr "192.0.2.2 tcp 22"; }
c_gone() { lacks_match allow4 '^198\.51\.100\.'; }
# in_range SET SOURCE MIN MAX: the element's seconds left are within [MIN, MAX].
in_range() {
	local left
	left=$(elem_expires "$1" "$2")
	[ -n "$left" ] && [ "$left" -ge "$3" ] && [ "$left" -le "$4" ] ||
		fail "$1 $2 expires in '${left}' s, want $3..$4: $(host_elems | tr '\n' ';')"
}

# Six seconds between one expiry and the next check that needs the following grant alive: room
# for a loaded parallel ctest (each check forks nft and jq).
log "A: 192.0.2.0/24 for 8 s; E: 192.0.2.0/30 for 14 s; B: 192.0.2.2 for 20 s"
log "C: 198.51.100.0/24 for 22 s; D: 198.51.100.2 for 6 s"
sign --src 192.0.2.0/24 --port 22 --for 8 --jti A | submit - >/dev/null || fail "A refused"
sign --src 192.0.2.0/30 --port 22 --for 14 --jti E | submit - >/dev/null || fail "E refused"
sign --src 192.0.2.2 --port 22 --for 20 --jti B | submit - >/dev/null || fail "B refused"
sign --src 198.51.100.0/24 --port 22 --for 22 --jti C | submit - >/dev/null || fail "C refused"
sign --src 198.51.100.2 --port 22 --for 6 --jti D | submit - >/dev/null || fail "D refused"

# A+E: the narrow prefix outlives the broad one, so A keeps only what E does not cover.
[ "$(elems allow4)" = "192.0.2.0/30 192.0.2.4-192.0.2.255 198.51.100.0/24 " ] ||
	fail "want 3 disjoint allow4 ranges, kernel has: $(elems allow4)"
[ "$(elems allow4_addr)" = "192.0.2.2 198.51.100.2 " ] ||
	fail "want B and D alone in allow4_addr, kernel has: $(elems allow4_addr)"
in_range allow4 192.0.2.0/30 8 14
in_range allow4 192.0.2.4-192.0.2.255 1 8
in_range allow4 198.51.100.0/24 16 22
in_range allow4_addr 192.0.2.2 14 20
in_range allow4_addr 198.51.100.2 0 6
pass "kernel: ranges $(elems allow4)and addresses $(elems allow4_addr)with their own expiries"
status_json | jq -e '[.grants[].id] | sort == ["A","B","C","D","E"]' >/dev/null ||
	fail "status lists other grants"
pass "jitctl status lists A to E"

expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22
expect_connect ok "$C2" -b 198.51.100.3 198.51.100.1 22

log "after A (8 s) and D (6 s) expire"
wait_until 15 "A's range to expire" a_gone
wait_until 5 "D's element to expire" lacks_elem allow4_addr "198.51.100.2 tcp 22"
has_elem allow4 "192.0.2.0/30 tcp 22" || fail "E's range expired with A's: $(elems allow4)"
pass "kernel: A's range and D's element gone, E's range remains"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22	# E still covers it
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22	# D expired, C still covers it

log "after E (14 s) expires"
wait_until 15 "E's range to expire" e_gone
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" 192.0.2.1 22	# B's own element

log "after B (20 s) and C (22 s) expire"
wait_until 15 "B's element to expire" b_gone
expect_connect drop "$C1" 192.0.2.1 22
wait_until 15 "C's range to expire" c_gone
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
no_allow_elems || fail "allow sets not empty after every grant expired: $(host_elems)"
pass "kernel: every range and element expired at its own time"

log "IPv6: A6: 2001:db8:1::/64 for 8 s; E6: 2001:db8:1::/96 inside it for 14 s"
# The same split over IPv6 (allow6), with sources at the edges of the two ranges: the /96's
# last address, and the first and last of what the /64 keeps beyond it. Added to C1 here.
IN_LAST=2001:db8:1::ffff:ffff
OUT_FIRST=2001:db8:1::1:0:0
OUT_LAST=2001:db8:1:0:ffff:ffff:ffff:ffff
OUTER="$OUT_FIRST-$OUT_LAST"	# A6's /64 less E6's /96, as nft prints the interval
for a in "$IN_LAST" "$OUT_FIRST" "$OUT_LAST"; do
	ip -n "$C1" addr add "$a/64" dev eth0 nodad
done
a6_gone() { lacks_match allow6 "^$OUTER "; }
e6_gone() { lacks_match allow6 '^2001:db8:1:'; }
sign --src 2001:db8:1::/64 --port 22 --for 8 --jti A6 | submit - >/dev/null || fail "A6 refused"
sign --src 2001:db8:1::/96 --port 22 --for 14 --jti E6 | submit - >/dev/null || fail "E6 refused"
[ "$(elems allow6)" = "2001:db8:1::/96 $OUTER " ] ||
	fail "want 2 disjoint allow6 ranges, kernel has: $(elems allow6)"
[ -z "$(elems allow6_addr)$(elems allow4)$(elems allow4_addr)" ] ||
	fail "IPv6 prefix grants put elements in other sets: $(host_elems | tr '\n' ';')"
in_range allow6 2001:db8:1::/96 8 14
in_range allow6 "$OUTER" 1 8
pass "kernel: allow6 ranges $(elems allow6)with their own expiries"
expect_connect ok "$C1" -b "$IN_LAST" 2001:db8:1::1 22
expect_connect ok "$C1" -b "$OUT_FIRST" 2001:db8:1::1 22
expect_connect ok "$C1" -b "$OUT_LAST" 2001:db8:1::1 22

log "IPv6: after A6 (8 s) expires"
wait_until 15 "A6's range to expire" a6_gone
has_elem allow6 "2001:db8:1::/96 tcp 22" || fail "E6's range expired with A6's: $(elems allow6)"
pass "kernel: A6's range gone, E6's range remains"
expect_connect ok "$C1" -b "$IN_LAST" 2001:db8:1::1 22	# E6 still covers it
expect_connect drop "$C1" -b "$OUT_FIRST" 2001:db8:1::1 22
expect_connect drop "$C1" -b "$OUT_LAST" 2001:db8:1::1 22

log "IPv6: after E6 (14 s) expires"
wait_until 15 "E6's range to expire" e6_gone
expect_connect drop "$C1" -b "$IN_LAST" 2001:db8:1::1 22
no_allow_elems || fail "allow sets not empty after every grant expired: $(host_elems)"
pass "kernel: both IPv6 ranges expired at their own times"
