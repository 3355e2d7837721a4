# Gateway mode ("mode": "gateway", targets behind SRV: C2 = 10.1.0.5, B2 = 10.1.0.6), what
# gateway.sh leaves out: always_allow sources reach every target's protected ports without a grant
# (IPv4 and IPv6, TCP and UDP), nothing in the forward sets for them; a UDP target (10.1.0.5) and
# a "*" one (2001:db8:10::5), real datagrams: dropped without a grant, echoed with a UDP grant,
# which opens UDP only; drift in the gateway's own sets: an element nobody granted added to fwd4,
# fwd6 or the DNAT map dnat4 while jitd is held (SIGSTOP), shown to let the ungranted traffic
# through to the machine behind, is removed from the event stream once jitd runs (bounded wait),
# audited as drift.repaired, and the same traffic is dropped (or, for the gateway port, no longer
# reaches the machine) afterwards, the grants' elements kept; and "deny_action": "reject" (a
# reload) for targets: the forward chain rejects instead of dropping (nft -j) and an ungranted
# TCP connection through the gateway is refused at once (IPv4 and IPv6), a UDP datagram answered
# with an ICMP port unreachable, granted traffic still passing.
. "$(dirname "$0")/lib.sh"

setup_gateway_net
# The always_allow sources: addresses of C1's own, beside the ones the grants name. Every
# connection below binds its source (-b): with two IPv6 addresses C1 would pick either.
ip -n "$C1" addr add 192.0.2.4/24 dev eth0
ip -n "$C1" addr add 2001:db8:1::4/64 dev eth0 nodad
setup_keys
write_config drop '["192.0.2.4", "2001:db8:1::4"]' "" '"mode": "gateway",
  "targets": [
    {"address": "10.1.0.0/24", "port": 22, "max_duration": "PT10M",
     "allowed_sources": ["192.0.2.0/24"]},
    {"address": "2001:db8:10::/64", "port": 22, "max_duration": "PT10M"},
    {"address": "10.1.0.5", "port": 5353, "protocol": "udp", "max_duration": "PT10M"},
    {"address": "2001:db8:10::5", "port": 5353, "protocol": "*", "max_duration": "PT10M"},
    {"address": "10.1.0.6", "port": 22, "max_duration": "PT5M",
     "allowed_sources": ["192.0.2.0/24"],
     "dnat": {"listen_port_range": "50000-50001", "address": "192.0.2.1"}}]'
for ns in "$C2" "$B2"; do
	ip netns exec "$ns" "$TCPPROBE_BIN" listen :: 22 >/dev/null &
	BG_PIDS+=($!)
done
ip netns exec "$C2" "$TCPPROBE_BIN" udp-listen :: 5353 >/dev/null &
BG_PIDS+=($!)
wait_until 5 "listener on 10.1.0.5" in_ns "$C2" "$TCPPROBE_BIN" connect 127.0.0.1 22
wait_until 5 "listener on 10.1.0.6" in_ns "$B2" "$TCPPROBE_BIN" connect 127.0.0.1 22
wait_until 5 "UDP listener on 10.1.0.5" in_ns "$C2" "$TCPPROBE_BIN" udp-ask -t 200 127.0.0.1 5353
start_jitd

# For wait_until, which runs its command again each time.
set_is() { [ "$(set_elems "$1")" = "$2" ]; }
set_lacks() {
	local elems
	elems=$(set_elems "$1")
	[ "$elems" != "$NO_SET" ] && ! grep -qxF "$2" <<<"$elems"
}

# Repairs made from the nftables event stream, as heal.sh reads them: the periodic check (every
# 30 s by default) is not what repairs within the waits here.
event_repairs() {
	jq -s '[.[] | select(.event == "drift.repaired" and
		(.message | startswith("nftables event")))] | length' "$TMP/state/audit.jsonl"
}
more_repairs() { [ "$(event_repairs)" -gt "$1" ]; }
# audited_stray WHAT N: the event-stream repairs beyond the first N removed one element nobody
# granted between them, restored none, and left the table's structure as it was.
audited_stray() {
	local got
	wait_until 10 "$1 audited as drift.repaired" more_repairs "$2"
	got=$(jq -s --argjson n "$2" '[.[] | select(.event == "drift.repaired" and
		(.message | startswith("nftables event")))] | .[$n:]' "$TMP/state/audit.jsonl")
	jq -e 'all(.[]; .message | test("^nftables event: table intact; [0-9]+ element"))
		and ([.[].message | capture("; (?<r>[0-9]+) element\\(s\\) nobody granted " +
			"removed, (?<g>[0-9]+) granted element\\(s\\) restored") | [(.r | tonumber),
			(.g | tonumber)]] | transpose | map(add) == [1, 0])' <<<"$got" >/dev/null ||
		fail "$1: the repair's records: $got"
	pass "audit: $1 removed, as drift.repaired ($(jq -r '.[0].message' <<<"$got"))"
}
in_sync() { status_json | jq -e '.kernel.in_sync' >/dev/null; }

log "the table: the targets' sets, the always_allow sources, no grant"
[ "$(set_elems targets4)" = "10.1.0.0/24 tcp 22
10.1.0.5 udp 5353" ] || fail "targets4: $(set_elems targets4)"
# "*" is both protocols: two elements.
[ "$(set_elems targets6)" = "2001:db8:10::/64 tcp 22
2001:db8:10::5 tcp 5353
2001:db8:10::5 udp 5353" ] || fail "targets6: $(set_elems targets6)"
[ "$(set_elems always4)" = 192.0.2.4 ] && [ "$(set_elems always6)" = 2001:db8:1::4 ] ||
	fail "always4 $(set_elems always4), always6 $(set_elems always6)"
[ -z "$(set_elems fwd4)" ] && [ -z "$(set_elems fwd6)" ] && [ -z "$(set_elems dnat4)" ] ||
	fail "fwd4 $(set_elems fwd4), fwd6 $(set_elems fwd6), dnat4 $(set_elems dnat4)"
pass "kernel: targets4/6 hold the targets (udp 5353, * as tcp and udp), always4/6 the sources"

log "always_allow sources reach every target's protected ports without a grant"
expect_connect ok "$C1" -b 192.0.2.4 10.1.0.5 22
expect_connect ok "$C1" -b 192.0.2.4 10.1.0.6 22
expect_connect ok "$C1" -b 2001:db8:1::4 2001:db8:10::5 22
expect_udp ok "$C1" -b 192.0.2.4 10.1.0.5 5353
expect_udp ok "$C1" -b 2001:db8:1::4 2001:db8:10::5 5353
# The "*" target's TCP half: nothing listens on C2's 5353/tcp, so a SYN let through is C2's
# reset (a drop would time out).
expect_connect reject "$C1" -b 2001:db8:1::4 2001:db8:10::5 5353
[ -z "$(set_elems fwd4)" ] && [ -z "$(set_elems fwd6)" ] ||
	fail "forward elements appeared: fwd4 $(set_elems fwd4), fwd6 $(set_elems fwd6)"
pass "kernel: fwd4 and fwd6 still empty: always4/always6 let them in"
# The same client's other address, no grant: the target is guarded (and the path is not broken
# for it: the stray below lets exactly this through).
expect_connect drop "$C1" -b 192.0.2.3 10.1.0.5 22

log "a UDP target and a * target: dropped without a grant, a UDP grant echoes"
expect_udp drop "$C1" -b 192.0.2.2 10.1.0.5 5353
expect_udp drop "$C1" -b 2001:db8:1::2 2001:db8:10::5 5353
# 10.1.0.5 guards 5353 for UDP alone: a TCP grant for it is for no target.
out=$(sign --src 192.0.2.2 --dst 10.1.0.5 --port 5353/tcp --for 60 | submit - --json) && rc=0 ||
	rc=$?
[ "$rc" -eq 1 ] && [ "$(jq -r .error <<<"$out")" = destination_not_protected ] ||
	fail "a 5353/tcp grant to 10.1.0.5: exit $rc, $out"
[ -z "$(set_elems fwd4)" ] || fail "the refusal changed fwd4: $(set_elems fwd4)"
pass "refused destination_not_protected: 5353/tcp to a UDP target; fwd4 still empty"
sign --src 192.0.2.2,2001:db8:1::2 --dst 10.1.0.5,2001:db8:10::5 --port 5353/udp --for 300 \
	--jti gw-udp | submit - >/dev/null || fail "gw-udp refused"
[ "$(set_elems fwd4)" = "192.0.2.2 10.1.0.5 udp 5353" ] &&
	[ "$(set_elems fwd6)" = "2001:db8:1::2 2001:db8:10::5 udp 5353" ] ||
	fail "fwd4 $(set_elems fwd4), fwd6 $(set_elems fwd6)"
pass "kernel: fwd4 and fwd6 hold C1 . C2 . udp . 5353"
expect_udp ok "$C1" -b 192.0.2.2 10.1.0.5 5353
expect_udp ok "$C1" -b 2001:db8:1::2 2001:db8:10::5 5353
expect_udp drop "$C1" -b 192.0.2.3 10.1.0.5 5353
# The * target guards TCP too, and a UDP grant opens UDP only: dropped, where C2 (no TCP
# listener on 5353) would answer with a reset if the SYN got through.
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:10::5 5353

# stray_opens SET ELEMENT CMD...: jitd held (SIGSTOP, so that it cannot repair yet) while `nft
# add element` puts ELEMENT into SET, then CMD (an expect_connect) shows that the stray lets
# the ungranted traffic through; jitd runs again after.
stray_opens() {
	local set=$1 elem=$2
	shift 2
	kill -STOP "$JITD_PID"
	in_ns "$SRV" nft add element inet jitd "$set" "$elem" ||
		{ kill -CONT "$JITD_PID"; fail "nft add element $set $elem"; }
	"$@"
	kill -CONT "$JITD_PID"
}

log "drift: an element nobody granted in fwd4 is removed, its traffic dropped again"
n=$(event_repairs)
stray_opens fwd4 '{ 192.0.2.3 . 10.1.0.5 . tcp . 22 timeout 1h }' \
	expect_connect ok "$C1" -b 192.0.2.3 10.1.0.5 22
wait_until 10 "the fwd4 stray removed" set_lacks fwd4 "192.0.2.3 10.1.0.5 tcp 22"
[ "$(set_elems fwd4)" = "192.0.2.2 10.1.0.5 udp 5353" ] || fail "fwd4: $(set_elems fwd4)"
pass "kernel: the fwd4 stray is gone, gw-udp's element kept"
audited_stray "the fwd4 stray" "$n"
expect_connect drop "$C1" -b 192.0.2.3 10.1.0.5 22
expect_udp ok "$C1" -b 192.0.2.2 10.1.0.5 5353

log "drift: the same in fwd6"
n=$(event_repairs)
stray_opens fwd6 '{ 2001:db8:1::2 . 2001:db8:10::6 . tcp . 22 timeout 1h }' \
	expect_connect ok "$C1" -b 2001:db8:1::2 2001:db8:10::6 22
wait_until 10 "the fwd6 stray removed" set_lacks fwd6 "2001:db8:1::2 2001:db8:10::6 tcp 22"
[ "$(set_elems fwd6)" = "2001:db8:1::2 2001:db8:10::5 udp 5353" ] || fail "fwd6: $(set_elems fwd6)"
pass "kernel: the fwd6 stray is gone, gw-udp's element kept"
audited_stray "the fwd6 stray" "$n"
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:10::6 22

log "drift: a DNAT mapping nobody granted is removed, its gateway port no longer the machine's"
out=$(sign --src 192.0.2.2 --dst 10.1.0.6 --port 22 --for 300 --jti gw-d | submit - --json) ||
	fail "gw-d refused: $out"
jq -e '.dnat[0].gateway_port == 50000' <<<"$out" >/dev/null || fail "gw-d: $(jq -c .dnat <<<"$out")"
[ "$(set_elems dnat4)" = "192.0.2.2 tcp 50000 : 10.1.0.6 22" ] || fail "dnat4: $(set_elems dnat4)"
pass "kernel: dnat4 maps gw-d's 192.0.2.2 . tcp . 50000 to 10.1.0.6 . 22"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 50000
# Unmapped, 50001 is the gateway's own port, where nothing listens: a reset, not the machine.
expect_connect reject "$C1" -b 192.0.2.2 192.0.2.1 50001
# The stray maps a second port for the same source to the same machine (gw-d's fwd4 element lets
# what it maps through): nobody granted that port.
n=$(event_repairs)
stray_opens dnat4 '{ 192.0.2.2 . tcp . 50001 timeout 1h : 10.1.0.6 . 22 }' \
	expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 50001
wait_until 10 "the dnat4 stray removed" set_is dnat4 "192.0.2.2 tcp 50000 : 10.1.0.6 22"
pass "kernel: the dnat4 stray is gone, gw-d's mapping kept"
audited_stray "the dnat4 stray" "$n"
expect_connect reject "$C1" -b 192.0.2.2 192.0.2.1 50001
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 50000
wait_until 10 "status in sync with the kernel" in_sync
pass "status: the kernel's forward and dnat elements in sync with the grants after the repairs"

log "deny_action reject (reload): targets refuse at once instead of dropping"
# Under drop two of the forward chain's four deny rules drop (the others reset stale TCP): what
# the check after the reload tells apart.
deny_rules() {
	kernel_json | jq -c '[.nftables[] | select(.rule?.chain == "forward") | .rule.expr
		| select(any(.[]; .match?.right? == "@targets4" or .match?.right? == "@targets6"))]'
}
jq -e 'length == 4 and ([.[] | select(any(.[]; has("drop")))] | length == 2)' \
	<<<"$(deny_rules)" >/dev/null ||
	fail "the forward chain's deny rules under drop: $(deny_rules)"
config_edit '.deny_action = "reject"'
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
pass "jitctl reload: $(cat "$TMP/out")"
# Four rules for targets4/targets6, none dropping: those for TCP answer with a reset, the
# others with an ICMP port unreachable.
rules=$(deny_rules)
jq -e 'length == 4 and all(.[]; (any(.[]; has("drop")) | not) and
		if any(.[]; .match?.left.concat? // [] | any(.[]; .payload?.protocol == "tcp"))
		then any(.[]; .reject? == {"type": "tcp reset"})
		else any(.[]; .reject? == {"type": "icmpx", "expr": "port-unreachable"}) end)
	and ([.[] | select(any(.[]; .reject?.type == "tcp reset"))] | length == 2)' \
	<<<"$rules" >/dev/null || fail "the forward chain's deny rules: $rules"
# TCP meets the reset first: for each family, the first of its two rules is TCP's.
jq -e '. as $r | all("@targets4", "@targets6"; . as $s
	| [$r[] | select(any(.[]; .match?.right? == $s)) | any(.[]; .reject?.type == "tcp reset")]
	| index(true) == 0)' <<<"$rules" >/dev/null ||
	fail "the forward chain's first rejecting rule of a family is not TCP's reset: $rules"
pass "kernel: the forward chain's deny rules for targets4/6 reject (TCP: tcp reset), none drops"
expect_connect reject "$C1" -b 192.0.2.3 10.1.0.5 22
expect_connect reject "$C1" -b 192.0.2.3 10.1.0.6 22
expect_connect reject "$C1" -b 2001:db8:1::2 2001:db8:10::6 22
expect_udp reject "$C1" -b 192.0.2.3 10.1.0.5 5353
# What is granted or always allowed still passes under reject.
expect_connect ok "$C1" -b 192.0.2.2 10.1.0.6 22
expect_udp ok "$C1" -b 192.0.2.2 10.1.0.5 5353
expect_connect ok "$C1" -b 192.0.2.4 10.1.0.5 22
