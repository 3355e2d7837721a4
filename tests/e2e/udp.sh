# UDP to protected ports, real datagrams both ways (tcpprobe udp-listen in SRV, udp-ask from the
# clients): 5353 is protected for UDP alone, 51820 for both protocols ("*"). Without a grant a
# datagram is dropped (IPv4 and IPv6) and counted as 'denied', while an unprotected UDP port
# echoes and TCP to 5353 is not jitd's; a grant for 5353/tcp or 5353/* is refused
# (port_not_protected: the port is not protected for TCP); a TCP grant on 51820 opens TCP only;
# a UDP grant opens UDP (nft -j: elements with protocol udp); a "*" grant opens both; a short
# grant's element expires by itself and a new flow is dropped again, while a flow that had its
# reply goes on (ct state established); with deny_action reject a datagram gets an ICMP port
# unreachable (IPv4 and IPv6), the granted ones still echoing.
. "$(dirname "$0")/lib.sh"

# UDP echo listeners in SRV on every address, each answering on loopback before jitd starts
# (once it runs, loopback to a protected port is dropped like any other source).
start_udp_listeners() {
	local port
	for port in "$@"; do
		ip netns exec "$SRV" "$TCPPROBE_BIN" udp-listen :: "$port" >/dev/null &
		BG_PIDS+=($!)
	done
	for port in "$@"; do
		wait_until 5 "UDP listener on port $port" \
			in_ns "$SRV" "$TCPPROBE_BIN" udp-ask -t 200 127.0.0.1 "$port"
	done
}

# refused_as CODE WHAT: the token on stdin is refused by jitd with error CODE. Fed by process
# substitution, not a pipe, so that a failure ends the test from this shell.
refused_as() {
	local out rc=0
	out=$(submit - --json) || rc=$?
	[ "$rc" -eq 1 ] && [ "$(jq -r .error <<<"$out")" = "$1" ] ||
		fail "$2: jitctl submit exit $rc, $out; want exit 1, $1"
}

setup_net
setup_keys
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]},
	  {"port": 5353, "protocol": "udp", "max_duration": "PT10M", "allowed_sources": ["*"]},
	  {"port": 51820, "protocol": "*", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
start_listeners 22 5353 51820
start_udp_listeners 5353 51820 9999
start_jitd

log "before any grant"
kernel_json | jq -e '[.nftables[] | select(.set?.name == "protected") | .set.elem[]? | .concat]
	| (index([["tcp", 22]]) != null) and (index([["udp", 5353]]) != null)
	  and (index([["tcp", 51820]]) != null) and (index([["udp", 51820]]) != null)
	  and (index([["tcp", 5353]]) == null) and length == 4' >/dev/null ||
	fail "set protected is not {tcp 22, udp 5353, tcp 51820, udp 51820}: $(kernel_json |
		jq -c '[.nftables[] | select(.set?.name == "protected") | .set.elem[]?]')"
pass "kernel: protected holds udp . 5353 and both protocols of 51820, not tcp . 5353"
no_allow_elems || fail "allow sets are not empty before any grant: $(host_elems)"
denied_before=$(denied_packets)
expect_udp drop "$C1" 192.0.2.1 5353
expect_udp drop "$C1" 2001:db8:1::1 5353
expect_udp drop "$C1" 192.0.2.1 51820
# One datagram each (udp-ask sends once), each counted once.
denied=$(denied_packets)
[ "$denied" -eq $((denied_before + 3)) ] ||
	fail "counter 'denied' went from $denied_before to $denied over 3 dropped datagrams"
pass "kernel: counter 'denied' counts the 3 dropped datagrams"
# The path works: the same client, the same listener program, a port jitd does not protect.
expect_udp ok "$C1" 192.0.2.1 9999
expect_udp ok "$C1" 2001:db8:1::1 9999
# 5353 is protected for UDP only: TCP to it is not jitd's (the set is keyed on the protocol).
expect_connect ok "$C1" 192.0.2.1 5353
expect_connect drop "$C1" 192.0.2.1 51820

log "grants for a protocol the port is not protected for are refused"
before=$(kernel_json | strip_expires)
refused_as port_not_protected "5353/tcp" < <(sign --src 192.0.2.2 --port 5353/tcp --for 60)
pass "a grant for 5353/tcp is refused: port_not_protected"
# "*" asks for both protocols, and 5353 is not protected for TCP: never half of it.
refused_as port_not_protected "5353/*" < <(sign --src 192.0.2.2 --port '5353/*' --for 60)
pass "a grant for 5353/* is refused: port_not_protected"
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "a refused grant changed the kernel"
pass "kernel unchanged by the refusals"

log "a TCP grant on a port protected for both protocols opens TCP only"
sign --src 192.0.2.2,2001:db8:1::2 --port 51820/tcp --for 120 --jti udp-tcp-only |
	submit - >/dev/null || fail "the 51820/tcp grant was refused"
has_elem allow4_addr "192.0.2.2 tcp 51820" && has_elem allow6_addr "2001:db8:1::2 tcp 51820" ||
	fail "no tcp . 51820 elements for C1: $(host_elems)"
lacks_elem allow4_addr "192.0.2.2 udp 51820" && lacks_elem allow6_addr "2001:db8:1::2 udp 51820" ||
	fail "a TCP grant put in UDP elements: $(host_elems)"
pass "kernel: tcp . 51820 elements for C1 (IPv4 and IPv6), no udp ones"
expect_connect ok "$C1" 192.0.2.1 51820
expect_udp drop "$C1" 192.0.2.1 51820
expect_udp drop "$C1" 2001:db8:1::1 51820

log "a UDP grant opens UDP"
out=$(sign --src 192.0.2.2,2001:db8:1::2 --port 5353/udp --for 120 --jti udp-5353 |
	submit - --json) || fail "the 5353/udp grant was refused: $out"
jq -e '.elements | length == 2 and all(.[]; .protocol == "udp" and .port == 5353)' \
	<<<"$out" >/dev/null || fail "the reply's elements are not 2 x udp 5353: $out"
pass "jitctl submit: the grant's elements are udp . 5353"
# allow_elems prints the protocol as nft -j gives it: "udp", never a number or "tcp".
has_elem allow4_addr_2 "192.0.2.2 udp 5353" || fail "no udp . 5353 for 192.0.2.2: $(host_elems)"
has_elem allow6_addr "2001:db8:1::2 udp 5353" ||
	fail "no udp . 5353 for 2001:db8:1::2: $(host_elems)"
lacks_match allow4_addr ' tcp 5353$' && lacks_match allow6_addr ' tcp 5353$' ||
	fail "a UDP grant put in TCP elements: $(host_elems)"
pass "kernel: allow4_addr_2 and allow6_addr hold C1 . udp . 5353, no tcp . 5353"
expect_udp ok "$C1" 192.0.2.1 5353
expect_udp ok "$C1" 2001:db8:1::1 5353
expect_udp drop "$C1" -b 192.0.2.3 192.0.2.1 5353	# same client, other address
expect_udp drop "$C2" -b 198.51.100.2 198.51.100.1 5353	# other client
has_elem allow4_addr "192.0.2.2 udp 5353" ||
	fail "the grant ran out during the checks of what it does not open (a loaded machine?)"

log "a grant for both protocols (*) on a port protected for both"
out=$(sign --src 192.0.2.3 --port '51820/*' --for 120 --jti udp-both | submit - --json) ||
	fail "the 51820/* grant was refused: $out"
jq -e '[.elements[] | "\(.protocol) \(.port)"] | sort == ["tcp 51820", "udp 51820"]' \
	<<<"$out" >/dev/null || fail "the reply's elements are not tcp and udp 51820: $out"
has_elem allow4_addr_3 "192.0.2.3 tcp 51820" && has_elem allow4_addr_3 "192.0.2.3 udp 51820" ||
	fail "no tcp and udp . 51820 elements for 192.0.2.3: $(host_elems)"
pass "kernel: a * grant is two elements, tcp . 51820 and udp . 51820"
expect_udp ok "$C1" -b 192.0.2.3 192.0.2.1 51820
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 51820

log "a short UDP grant expires by itself"
# A flow of its own in C1, one socket throughout: "before" while the grant holds, then, once the
# test has seen the element expire (the file $1), "after". Each line: WORD ok|timeout|refused.
flow_py='
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.3", 0))
s.connect(("192.0.2.1", 5353))
s.settimeout(1.5)
def ask(word):
    s.send(word.encode() + b"\n")
    try:
        got = s.recv(100)
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    return "ok" if got == word.encode() + b"\n" else "wrong"
print("before", ask("before"), flush=True)
for _ in range(300):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)
else:
    sys.exit("never told that the grant expired")
print("after", ask("after"), flush=True)
'
sign --src 192.0.2.3 --port 5353/udp --for 4 --jti udp-short | submit - >/dev/null ||
	fail "the short grant was refused"
ip netns exec "$C1" python3 -c "$flow_py" "$TMP/expired" >"$TMP/flow.out" 2>&1 &
flow_pid=$!
BG_PIDS+=("$flow_pid")
wait_until 5 "the flow's first exchange" grep -q '^before ' "$TMP/flow.out"
grep -qx "before ok" "$TMP/flow.out" ||
	fail "the short grant did not open the flow (ran out first on a loaded machine?): $(
		cat "$TMP/flow.out")"
pass "the short grant opens a UDP flow from 192.0.2.3"
wait_until 15 "the udp . 5353 element of 192.0.2.3 to expire" \
	lacks_elem allow4_addr "192.0.2.3 udp 5353"
pass "kernel removed the short grant's element by itself"
# udp-ask binds a new source port (the flow's socket still holds its own): a new flow, dropped.
expect_udp drop "$C1" -b 192.0.2.3 192.0.2.1 5353
# The flow that had its reply is conntrack's established one, which jitd accepts ahead of the
# grants (as a TCP session opened during a grant outlives it): it still gets its echo.
touch "$TMP/expired"
wait_until 5 "the flow's second exchange" grep -q '^after ' "$TMP/flow.out"
grep -qx "after ok" "$TMP/flow.out" ||
	fail "the established UDP flow was cut at expiry: $(cat "$TMP/flow.out")"
wait "$flow_pid" || fail "the flow's script failed: $(cat "$TMP/flow.out")"
pass "the established UDP flow (same socket) still gets its echo after expiry"

log "deny_action reject answers UDP with ICMP port unreachable"
config_edit '.deny_action = "reject"'
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
pass "jitctl reload: $(cat "$TMP/out")"
kernel_json | jq -e '[.nftables[] | select(.rule?.chain == "input") | .rule.expr
	| select(any(.[]; .reject?))] | last | any(.[]; .reject? == {"type": "icmpx",
	"expr": "port-unreachable"})' >/dev/null ||
	fail "the last rejecting rule is not 'reject with icmpx port-unreachable': $(kernel_json |
		jq -c '[.nftables[] | select(.rule?) | .rule.expr[] | .reject? // empty]')"
pass "kernel: the rule for what is not TCP rejects with icmpx port-unreachable"
denied_before=$(denied_packets)
expect_udp reject "$C1" -b 192.0.2.3 192.0.2.1 5353		# its grant expired
expect_udp reject "$C1" 2001:db8:1::1 51820			# a TCP grant only
expect_udp reject "$C2" -b 198.51.100.2 198.51.100.1 5353
expect_udp reject "$C2" 2001:db8:2::1 5353
denied=$(denied_packets)
[ "$denied" -eq $((denied_before + 4)) ] ||
	fail "counter 'denied' went from $denied_before to $denied over 4 rejected datagrams"
pass "kernel: counter 'denied' counts the 4 rejected datagrams"
# The grants live on through the reload.
expect_udp ok "$C1" 192.0.2.1 5353
expect_udp ok "$C1" 2001:db8:1::1 5353
expect_udp ok "$C1" -b 192.0.2.3 192.0.2.1 51820
expect_udp ok "$C2" 2001:db8:2::1 9999
