# Revocation of UDP grants on live UDP flows (a python socket per flow in the clients, kept
# from its first datagram to its last; tcpprobe udp-listen echoing in SRV): status counts each
# grant's flow; a plain revocation ends access (nft -j: the element gone, a new flow dropped)
# while the established flow, the same socket, still gets its echo and keeps its conntrack
# entry; `jitctl revoke --terminate` reports the flow cut, conntrack no longer holds its entry
# (conntrack -L in SRV, the independent witness), and the same socket's next datagram is dropped
# (no echo, counted as denied), the other grants' flows going on. IPv4 and IPv6 alike.
. "$(dirname "$0")/lib.sh"

PORT=5353

setup_net
setup_keys
write_config drop '[]' \
	'[{"port": 5353, "protocol": "udp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
# The UDP echo listener answers on loopback before jitd starts (once it runs, loopback to a
# protected port is dropped like any other source).
ip netns exec "$SRV" "$TCPPROBE_BIN" udp-listen :: "$PORT" >/dev/null &
BG_PIDS+=($!)
wait_until 5 "UDP listener on port $PORT" \
	in_ns "$SRV" "$TCPPROBE_BIN" udp-ask -t 200 127.0.0.1 "$PORT"
start_jitd

# A flow of its own: one connected UDP socket from SRC to DST port, throughout. It prints its
# source port ("port N"), then, for each word read on stdin, sends it and prints "WORD ok"
# (echoed), "WORD timeout" (no echo within 3 s), "WORD refused" or "WORD wrong".
flow_py='
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.connect((sys.argv[2], int(sys.argv[3])))
s.settimeout(3)
print("port", s.getsockname()[1], flush=True)
while True:
    word = sys.stdin.readline().strip()
    if not word:
        break
    s.send(word.encode() + b"\n")
    try:
        got = s.recv(100)
        res = "ok" if got == word.encode() + b"\n" else "wrong"
    except socket.timeout:
        res = "timeout"
    except ConnectionRefusedError:
        res = "refused"
    print(word, res, flush=True)
'
# flow_open NAME NS SRC DST: flow NAME from SRC in NS to DST port $PORT, fed through a FIFO this
# shell holds open (fd in FLOW_FD[NAME]); its source in FLOW_SRC, its source port in FLOW_PORT.
declare -A FLOW_FD FLOW_SRC FLOW_PORT
flow_open() {
	local fd
	mkfifo "$TMP/$1.in"
	ip netns exec "$2" python3 -c "$flow_py" "$3" "$4" "$PORT" <"$TMP/$1.in" \
		>"$TMP/$1.out" 2>&1 &
	BG_PIDS+=($!)
	exec {fd}>"$TMP/$1.in"
	FLOW_FD[$1]=$fd
	FLOW_SRC[$1]=$3
	wait_until 5 "flow $1's socket" grep -q '^port [0-9]' "$TMP/$1.out"
	FLOW_PORT[$1]=$(sed -n 's/^port //p' "$TMP/$1.out")
}
# flow_say NAME WORD WANT: WORD sent on flow NAME's socket must get WANT (ok, timeout).
flow_say() {
	echo "$2" >&"${FLOW_FD[$1]}"
	wait_until 10 "flow $1's answer to '$2'" grep -q "^$2 " "$TMP/$1.out"
	grep -qx "$2 $3" "$TMP/$1.out" || fail "flow $1, '$2': want $3, got: $(cat "$TMP/$1.out")"
}
# flow_entries NAME: conntrack's entries in SRV of flow NAME's socket (its own source port), one
# line each (the source's family picks the table). A listing that fails ends the test: read as
# empty, it would pass "the entry is gone".
flow_entries() {
	in_ns "$SRV" conntrack -L -p udp -s "${FLOW_SRC[$1]}" --sport "${FLOW_PORT[$1]}" \
		--dport "$PORT" 2>/dev/null ||
		fail "conntrack -L failed in SRV: no listing to trust"
}
# flow_replied NAME: conntrack holds the flow's entry, and it has seen the reply (established).
flow_replied() {
	local out
	out=$(flow_entries "$1")
	[ "$(grep -c . <<<"$out")" -eq 1 ] && ! grep -q UNREPLIED <<<"$out" ||
		fail "conntrack in SRV: want one replied entry for flow $1, got: '$out'"
}
revoke() { "$JITCTL_BIN" -s "$SOCK" revoke "$@"; }
flows_of() { status_json | jq -cS '[.grants[] | {(.id): .flows}] | add'; }

log "four UDP grants, one established flow each"
sign --src 192.0.2.3 --port 5353/udp --for 120 --jti ut-cut4 | submit - >/dev/null ||
	fail "ut-cut4 refused"
sign --src 2001:db8:1::2 --port 5353/udp --for 120 --jti ut-cut6 | submit - >/dev/null ||
	fail "ut-cut6 refused"
sign --src 192.0.2.2 --port 5353/udp --for 120 --jti ut-keep4 | submit - >/dev/null ||
	fail "ut-keep4 refused"
sign --src 2001:db8:2::2 --port 5353/udp --for 120 --jti ut-keep6 | submit - >/dev/null ||
	fail "ut-keep6 refused"
has_elem allow6_addr "2001:db8:1::2 udp 5353" && has_elem allow4_addr "192.0.2.3 udp 5353" ||
	fail "the grants' udp . 5353 elements are not in the kernel: $(host_elems)"
counts=$(flows_of)
[ "$counts" = '{"ut-cut4":0,"ut-cut6":0,"ut-keep4":0,"ut-keep6":0}' ] ||
	fail "status counts flows before any: $counts"
pass "status: no flows counted before any datagram"
flow_open cut4 "$C1" 192.0.2.3 192.0.2.1
flow_open cut6 "$C1" 2001:db8:1::2 2001:db8:1::1
flow_open keep4 "$C1" 192.0.2.2 192.0.2.1
flow_open keep6 "$C2" 2001:db8:2::2 2001:db8:2::1
for f in cut4 cut6 keep4 keep6; do
	flow_say "$f" "$f-hello" ok
	flow_replied "$f"
done
pass "each flow gets its echo; conntrack holds each one's entry, replied"
counts=$(flows_of)
[ "$counts" = '{"ut-cut4":1,"ut-cut6":1,"ut-keep4":1,"ut-keep6":1}' ] ||
	fail "status flow counts: $counts, want 1 for each grant"
pass "status counts one flow for each grant (IPv4 and IPv6)"

log "a plain revocation: access ends, the established UDP flows go on"
for g in ut-keep4 ut-keep6; do
	out=$(revoke "$g" --json) || fail "jitctl revoke $g: $out"
	jq -e --arg g "$g" '.revoked == $g and .terminate == false' <<<"$out" >/dev/null ||
		fail "revoke $g reply: $out"
done
lacks_elem allow4_addr "192.0.2.2 udp 5353" &&
	lacks_elem allow6_addr "2001:db8:2::2 udp 5353" ||
	fail "elements still in the kernel after the revocations: $(host_elems)"
pass "kernel: ut-keep4's and ut-keep6's elements removed at once"
# udp-ask binds a new source port: a new flow, which meets the grants (exit 1: no echo).
for ask in "$C1 192.0.2.2 192.0.2.1" "$C2 2001:db8:2::2 2001:db8:2::1"; do
	read -r ns src dst <<<"$ask"
	rc=0
	in_ns "$ns" "$TCPPROBE_BIN" udp-ask -t 3000 -b "$src" "$dst" "$PORT" >/dev/null 2>&1 ||
		rc=$?
	[ "$rc" -eq 1 ] || fail "a new flow from $src after its revocation: exit $rc, want 1"
done
pass "new flows from the revoked grants' sources get no echo (IPv4 and IPv6)"
for f in keep4 keep6; do
	flow_say "$f" "$f-after-revoke" ok
	flow_replied "$f"
done
pass "the established flows (same sockets) still get their echo; conntrack keeps their entries"

log "revoke --terminate cuts the UDP flow (IPv4, then IPv6)"
for f in cut4 cut6; do
	g=ut-$f
	# A datagram just before: the flow is live, and its entry's timeout (30 s until conntrack
	# takes it as a stream) cannot run out before the cut however slow this machine.
	flow_say "$f" "$f-before" ok
	out=$(revoke "$g" --terminate --json) || fail "jitctl revoke $g --terminate: $out"
	jq -e --arg g "$g" '.revoked == $g and .terminate == true and .flows_terminated == 1' \
		<<<"$out" >/dev/null || fail "revoke $g --terminate reply: $out"
	pass "jitctl revoke $g --terminate: 1 flow terminated"
	entries=$(flow_entries "$f")
	[ -z "$entries" ] || fail "conntrack in SRV still holds flow $f: $entries"
	pass "conntrack: flow $f's entry is gone"
	denied_before=$(denied_packets)
	flow_say "$f" "$f-after-terminate" timeout
	denied=$(denied_packets)
	[ "$denied" -gt "$denied_before" ] ||
		fail "counter 'denied' did not count flow $f's datagram ($denied_before, $denied)"
	entries=$(flow_entries "$f")
	[ -z "$entries" ] || fail "the dropped datagram left an entry in conntrack: $entries"
	pass "flow $f's next datagram (same socket) is dropped as denied, no entry made"
done
jq -s -e '[.[] | select(.event == "flows.terminated")] | length == 2 and
	all(.[]; .count == 1) and ([.[].grant] | sort == ["ut-cut4", "ut-cut6"])' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "flows.terminated in the trail: $(grep flows.terminated "$TMP/state/audit.jsonl")"
pass "audit: flows.terminated with count 1 for ut-cut4 and ut-cut6, none for the plain ones"
for f in keep4 keep6; do
	flow_say "$f" "$f-at-end" ok
done
pass "the plainly revoked grants' flows still get their echo after the cuts"
