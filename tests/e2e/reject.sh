# "deny_action": "reject" answers with a TCP reset (IPv4 and IPv6) instead of silence.
. "$(dirname "$0")/lib.sh"

e2e_default_setup reject

expect_connect reject "$C1" 192.0.2.1 22
expect_connect reject "$C1" 2001:db8:1::1 22
expect_connect ok "$C1" 192.0.2.1 8080
[ "$(denied_packets)" -gt 0 ] || fail "counter 'denied' did not count the rejected SYNs"
pass "kernel: counter 'denied' counts rejected packets"
sign --src 192.0.2.2,2001:db8:1::2 --port 22 --for 30 | submit - >/dev/null || fail "grant refused"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C1" 2001:db8:1::1 22
expect_connect reject "$C2" -b 198.51.100.2 198.51.100.1 22
