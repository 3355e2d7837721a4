# Overlapping grants are honoured exactly: jitd keeps disjoint ranges per port, each carrying the
# latest expiry of the grants covering it, and the kernel expires each range at its own time.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop

count_allow4() { allow_elems allow4 | grep -c . || true; }
a_gone() { ! allow_elems allow4 | grep -q '^192\.0\.2\.[03]'; }
b_gone() { lacks_elem allow4 "192.0.2.2 tcp 22"; }
c_gone() { ! allow_elems allow4 | grep -q '^198\.51\.100\.'; }

log "A: 192.0.2.0/24 for 5 s; B: 192.0.2.2 for 11 s (narrow outlives broad)"
log "C: 198.51.100.0/24 for 12 s; D: 198.51.100.2 for 4 s (broad outlives narrow)"
sign --src 192.0.2.0/24 --port 22 --for 5 --jti A | submit - >/dev/null || fail "A refused"
sign --src 192.0.2.2 --port 22 --for 11 --jti B | submit - >/dev/null || fail "B refused"
sign --src 198.51.100.0/24 --port 22 --for 12 --jti C | submit - >/dev/null || fail "C refused"
sign --src 198.51.100.2 --port 22 --for 4 --jti D | submit - >/dev/null || fail "D refused"

# A+B: three ranges (below, the host, above); C+D: one, because D adds nothing C does not cover.
[ "$(count_allow4)" -eq 4 ] || fail "want 4 disjoint allow4 ranges, kernel has: $(allow_elems allow4)"
has_elem allow4 "192.0.2.2 tcp 22" || fail "no range for exactly 192.0.2.2: $(allow_elems allow4)"
b_left=$(elem_expires allow4 192.0.2.2)
[ "$b_left" -ge 7 ] && [ "$b_left" -le 11 ] || fail "B's range expires in $b_left s, want 7..11"
allow_elems allow4 | grep -q '^192\.0\.2\.3.* tcp 22$' || fail "no range starting at 192.0.2.3"
c_elem=$(allow_elems allow4 | awk '/^198\.51\.100\./ {print $1}')
[ "$(echo "$c_elem" | wc -l)" -eq 1 ] || fail "C and D should share one range, got: $c_elem"
c_left=$(elem_expires allow4 "$c_elem")
[ "$c_left" -ge 8 ] && [ "$c_left" -le 12 ] || fail "C's range expires in $c_left s, want 8..12 (the later expiry)"
pass "kernel: disjoint ranges $(allow_elems allow4 | awk '{print $1}' | tr '\n' ' ')"
status_json | jq -e '[.grants[].id] | sort == ["A","B","C","D"]' >/dev/null || fail "status lists other grants"
pass "jitctl status lists A, B, C and D"

expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22

log "after A (5 s) and D (4 s) expire"
wait_until 15 "A's ranges to expire" a_gone
has_elem allow4 "192.0.2.2 tcp 22" || fail "B's range expired with A's"
pass "kernel: A's ranges gone, B's remains"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22	# D expired, C still covers it

log "after B (11 s) and C (12 s) expire"
wait_until 15 "B's range to expire" b_gone
expect_connect drop "$C1" 192.0.2.1 22
wait_until 15 "C's range to expire" c_gone
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
no_allow_elems || fail "allow sets not empty after every grant expired: $(allow_elems allow4)"
pass "kernel: every range expired at its own time"
