# "deny_action": "reject" answers with a TCP reset (IPv4 and IPv6) instead of silence: the
# client's connect is refused at once, and the kernel's rule for TCP is a reset.
. "$(dirname "$0")/lib.sh"

e2e_default_setup reject

expect_connect reject "$C1" 192.0.2.1 22
expect_connect reject "$C1" 2001:db8:1::1 22
expect_connect ok "$C1" 192.0.2.1 8080
[ "$(denied_packets)" -gt 0 ] || fail "counter 'denied' did not count the rejected SYNs"
pass "kernel: counter 'denied' counts rejected packets"
# The client sees ECONNREFUSED for a reset and for an ICMP port unreachable alike: the kernel
# says which. The first rejecting rule is TCP's, with a reset; the next one answers with ICMP.
kernel_json | jq -e '[.nftables[] | select(.rule?.chain == "input") | .rule.expr
	| select(any(.[]; .reject?))] | first
	| any(.[]; .match?.left.concat? // [] | any(.[]; .payload?.protocol == "tcp"))
	  and any(.[]; .reject?.type == "tcp reset")' >/dev/null ||
	fail "no 'reject with tcp reset' for TCP in the input chain: $(kernel_json |
		jq -c '[.nftables[] | select(.rule?) | .rule.expr[] | .reject? // empty]')"
pass "kernel: TCP is answered with 'reject with tcp reset'"
sign --src 192.0.2.2,2001:db8:1::2 --port 22 --for 30 | submit - >/dev/null || fail "grant refused"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C1" 2001:db8:1::1 22
expect_connect reject "$C2" -b 198.51.100.2 198.51.100.1 22
