# Gateway mode: jitd on SRV guards forwarded traffic to the machines behind it (C2 = 10.1.0.5,
# B2 = 10.1.0.6) and its own port 22 ("mode": "both"). Real TCP through the forward hook, over
# IPv4 and IPv6; overlapping gateway grants honoured exactly (disjoint source x destination
# boxes); expiry, revocation with terminate, refusals; DNAT gateway ports only from the granted
# source, kept across a restart onto an empty kernel, reused only after expiry.
. "$(dirname "$0")/lib.sh"

setup_gateway_net
setup_keys
# gw_config MODE DNAT_RANGE [ALWAYS_ALLOW]
gw_config() {
	local ports='[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
	[ "$1" = gateway ] && ports=""
	write_config drop "${3:-[]}" "$ports" \
		'"mode": "'"$1"'",
  "targets": [
    {"address": "10.1.0.0/24", "port": 22, "max_duration": "PT10M", "allowed_sources": ["192.0.2.0/24"]},
    {"address": "2001:db8:10::/64", "port": 22, "max_duration": "PT10M"},
    {"address": "10.1.0.6", "port": 22, "max_duration": "PT5M", "allowed_sources": ["192.0.2.0/24"],
     "dnat": {"listen_port_range": "'"$2"'", "address": "192.0.2.1"}}]'
}
gw_config both 50000-50001
for ns in "$C2" "$B2"; do
	ip netns exec "$ns" "$TCPPROBE_BIN" listen :: 22 >/dev/null &
	BG_PIDS+=($!)
done
wait_until 5 "listener on 10.1.0.5" in_ns "$C2" "$TCPPROBE_BIN" connect 127.0.0.1 22
wait_until 5 "listener on 10.1.0.6" in_ns "$B2" "$TCPPROBE_BIN" connect 127.0.0.1 22
start_jitd

fwd_count() { set_elems fwd4 | grep -c . || true; }
gateway_port() {
	status_json | jq -r --arg id "$1" '.grants[] | select(.id == $id) | .dnat[0].gateway_port'
}
# For wait_until, which runs its command again each time: a "$(...)" in its arguments would be
# read once, before the first try.
set_is() { [ "$(set_elems "$1")" = "$2" ]; }

log "the table: a forward chain, a nat chain, the gateway sets next to the host's"
kernel_json | jq -e '[.nftables[] | .chain? | select(.) | "\(.name) \(.type) \(.hook)"] | sort ==
	["forward filter forward", "input filter input", "prerouting nat prerouting"]' >/dev/null ||
	fail "chains: $(kernel_json | jq -c '[.nftables[] | .chain? | select(.)]')"
[ "$(set_elems targets4)" = "10.1.0.0/24 tcp 22" ] || fail "targets4: $(set_elems targets4)"
pass "kernel: chains input, forward and prerouting (nat); targets4 = 10.1.0.0/24 tcp 22"

log "closed before a grant, over IPv4 and IPv6"
expect_connect drop "$C1" 10.1.0.5 22
expect_connect drop "$C1" 10.1.0.6 22
expect_connect drop "$C1" 2001:db8:10::5 22

log "a grant for the host itself opens nothing behind it"
sign --src 192.0.2.2 --port 22 --for 120 --jti host-a | submit - >/dev/null || fail "host-a refused"
expect_connect drop "$C1" -b 192.0.2.2 10.1.0.5 22
"$JITCTL_BIN" -s "$SOCK" revoke host-a >/dev/null || fail "revoke host-a failed"

log "refusals name the reason and leave the kernel as it was"
refuse() { # refuse CODE SIGN-ARGS...
	local code=$1 rc=0	# out stays set, for a closer look at the last refusal
	shift
	out=$(sign "$@" | submit - --json) || rc=$?
	[ "$rc" -ne 0 ] && echo "$out" | jq -e --arg c "$code" '.error == $c' >/dev/null ||
		fail "wanted $code for $*: exit $rc, $out"
	pass "refused $code: $(echo "$out" | jq -r .message)"
}
refuse destination_not_protected --src 192.0.2.2 --dst 10.2.0.5 --port 22 --for 60
refuse destination_not_protected --src 192.0.2.2 --dst 10.1.0.5 --port 2222 --for 60
refuse source_not_allowed --src 198.51.100.7 --dst 10.1.0.5 --port 22 --for 60
refuse duration_exceeds_max --src 192.0.2.2 --dst 10.1.0.5 --port 22 --for 3600
# 10.1.0.0/24 allows 10 minutes, but the grant would open 10.1.0.6 in it too, which allows 5.
refuse duration_exceeds_max --src 192.0.2.2 --dst 10.1.0.0/24 --port 22 --for 400
echo "$out" | jq -e '.message | endswith("for destination 10.1.0.6 port 22/tcp, inside 10.1.0.0/24")' \
	>/dev/null || fail "the refusal does not name the target inside the dst: $out"
[ "$(fwd_count)" -eq 0 ] && [ -z "$(set_elems dnat4)" ] || fail "kernel changed: $(set_elems fwd4)"
pass "kernel: fwd4 and dnat4 still empty"

log "a gateway grant opens one source to one machine, until it expires"
sign --src 192.0.2.2 --dst 10.1.0.5 --port 22 --for 10 --jti gw-a | submit - >/dev/null ||
	fail "gw-a refused"
[ "$(set_elems fwd4)" = "192.0.2.2 10.1.0.5 tcp 22" ] || fail "fwd4: $(set_elems fwd4)"
pass "kernel: fwd4 holds 192.0.2.2 . 10.1.0.5 . tcp . 22"
expect_connect ok "$C1" -b 192.0.2.2 10.1.0.5 22
session_open "$C1" 10.1.0.5 22 192.0.2.2	# before the refused connects' timeouts use up the grant
session_say before-expiry
expect_connect drop "$C1" -b 192.0.2.3 10.1.0.5 22
expect_connect drop "$C1" -b 192.0.2.2 10.1.0.6 22
wait_until 16 "gw-a to expire" status_has_no_grants
wait_until 5 "fwd4 to empty" set_is fwd4 ""
pass "kernel: the element expired on its own"
session_say after-expiry
session_close
expect_connect drop "$C1" -b 192.0.2.2 10.1.0.5 22

log "IPv6 through the gateway"
sign --src 2001:db8:1::2 --dst 2001:db8:10::5 --port 22 --for 120 --jti gw-6 | submit - >/dev/null ||
	fail "gw-6 refused"
expect_connect ok "$C1" 2001:db8:10::5 22
expect_connect drop "$C1" 2001:db8:10::6 22
# The machine beside it answers once granted: its drop above was the table's, not the path's.
sign --src 2001:db8:1::2 --dst 2001:db8:10::6 --port 22 --for 120 --jti gw-6b |
	submit - >/dev/null || fail "gw-6b refused"
expect_connect ok "$C1" 2001:db8:10::6 22
"$JITCTL_BIN" -s "$SOCK" revoke gw-6 >/dev/null || fail "revoke gw-6 failed"
"$JITCTL_BIN" -s "$SOCK" revoke gw-6b >/dev/null || fail "revoke gw-6b failed"
expect_connect drop "$C1" 2001:db8:10::5 22
expect_connect drop "$C1" 2001:db8:10::6 22

log "overlapping grants: disjoint boxes, each point with the latest expiry"
sign --src 192.0.2.0/24 --dst 10.1.0.5 --port 22 --for 60 --jti gw-broad | submit - >/dev/null ||
	fail "gw-broad refused"
sign --src 192.0.2.2 --dst 10.1.0.0/24 --port 22 --for 120 --jti gw-narrow | submit - >/dev/null ||
	fail "gw-narrow refused"
want="192.0.2.0/31 10.1.0.5 tcp 22
192.0.2.2 10.1.0.0-10.1.0.4 tcp 22
192.0.2.2 10.1.0.5 tcp 22
192.0.2.2 10.1.0.6-10.1.0.255 tcp 22
192.0.2.3-192.0.2.255 10.1.0.5 tcp 22"
[ "$(set_elems fwd4)" = "$want" ] || fail "fwd4 is not the 5 disjoint boxes: $(set_elems fwd4)"
pass "kernel: fwd4 holds exactly the 5 disjoint boxes of the two grants"
expect_connect ok "$C1" -b 192.0.2.3 10.1.0.5 22
expect_connect ok "$C1" -b 192.0.2.2 10.1.0.6 22
expect_connect drop "$C1" -b 192.0.2.3 10.1.0.6 22
"$JITCTL_BIN" -s "$SOCK" revoke gw-narrow >/dev/null || fail "revoke gw-narrow failed"
[ "$(set_elems fwd4)" = "192.0.2.0/24 10.1.0.5 tcp 22" ] || fail "fwd4 after revoke: $(set_elems fwd4)"
pass "kernel: after revoking the narrow grant, the broad one is one element again"
expect_connect drop "$C1" -b 192.0.2.2 10.1.0.6 22
expect_connect ok "$C1" -b 192.0.2.2 10.1.0.5 22

log "revocation with --terminate cuts a forwarded session"
session_open "$C1" 10.1.0.5 22 192.0.2.3
session_say fwd-before
out=$("$JITCTL_BIN" -s "$SOCK" revoke gw-broad --terminate --json) || fail "revoke --terminate: $out"
echo "$out" | jq -e '.flows_terminated >= 1' >/dev/null || fail "revoke reply: $out"
pass "revoke --terminate: $(echo "$out" | jq .flows_terminated) forwarded flow(s) terminated"
session_cut fwd-after-terminate
session_close
[ "$(fwd_count)" -eq 0 ] || fail "fwd4 not empty: $(set_elems fwd4)"

log "revoking a host grant with --terminate leaves a forwarded flow from its source alone"
# Same source, same port: the host grant's flows end at this host, the forwarded one at C2.
sign --src 192.0.2.3 --port 22 --for 120 --jti gw-host | submit - >/dev/null ||
	fail "gw-host refused"
sign --src 192.0.2.3 --dst 10.1.0.5 --port 22 --for 120 --jti gw-fwd | submit - >/dev/null ||
	fail "gw-fwd refused"
session_open "$C1" 10.1.0.5 22 192.0.2.3
session_say fwd-kept-before
counts=$("$JITCTL_BIN" -s "$SOCK" status --json | jq -cS '[.grants[] | {(.id): .flows}] | add')
[ "$counts" = '{"gw-fwd":1,"gw-host":0}' ] || fail "status flow counts: $counts"
out=$("$JITCTL_BIN" -s "$SOCK" revoke gw-host --terminate --json) || fail "revoke --terminate: $out"
echo "$out" | jq -e '.flows_terminated == 0' >/dev/null || fail "revoke reply: $out"
session_say fwd-kept-after
pass "the host grant's revocation cut nothing of the gateway grant's session"
"$JITCTL_BIN" -s "$SOCK" revoke gw-fwd --terminate >/dev/null || fail "revoke gw-fwd failed"
session_cut fwd-kept-cut
session_close
# A forwarded flow to a machine that is no target (SRV routes 10.2.0.5, an address of C2's):
# nothing of jitd's guards it, and it is no host grant's either.
ip -n "$C2" addr add 10.2.0.5/32 dev eth0
ip -n "$SRV" route add 10.2.0.5/32 via 10.1.0.5
sign --src 192.0.2.3 --port 22 --for 120 --jti gw-host2 | submit - >/dev/null ||
	fail "gw-host2 refused"
session_open "$C1" 10.2.0.5 22 192.0.2.3
session_say routed-before
out=$("$JITCTL_BIN" -s "$SOCK" revoke gw-host2 --terminate --json) || fail "revoke: $out"
echo "$out" | jq -e '.flows_terminated == 0' >/dev/null || fail "revoke reply: $out"
session_say routed-after
pass "a routed session to a machine that is no target is no host grant's to cut"
session_close

log "revoking a DNAT grant with --terminate cuts what came in through its gateway port"
# gw-t2 lets the same source reach the same machine, through its own port, and kept the session
# under the old rule; what it maps afterwards is checked by a new connection through 50001.
sign --src 192.0.2.2 --dst 10.1.0.6 --port 22 --for 60 --jti gw-t1 | submit - >/dev/null ||
	fail "gw-t1 refused"
sign --src 192.0.2.2 --dst 10.1.0.6 --port 22 --for 60 --jti gw-t2 | submit - >/dev/null ||
	fail "gw-t2 refused"
[ "$(gateway_port gw-t1) $(gateway_port gw-t2)" = "50000 50001" ] ||
	fail "gateway ports: $(gateway_port gw-t1) $(gateway_port gw-t2)"
session_open "$C1" 192.0.2.1 50000 192.0.2.2
session_say dnat-before
out=$("$JITCTL_BIN" -s "$SOCK" revoke gw-t1 --terminate --json) || fail "revoke --terminate: $out"
echo "$out" | jq -e '.flows_terminated == 1' >/dev/null || fail "revoke reply: $out"
session_cut dnat-after-terminate
session_close
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 50001
"$JITCTL_BIN" -s "$SOCK" revoke gw-t2 >/dev/null || fail "revoke gw-t2 failed"
[ -z "$(set_elems dnat4)" ] || fail "dnat4 after the revocations: $(set_elems dnat4)"
# An always_allow source's sessions are nobody's grant's, but not one through a grant's mapping.
gw_config both 50000-50001 '["192.0.2.3"]'
"$JITCTL_BIN" -s "$SOCK" reload >/dev/null || fail "reload with always_allow failed"
sign --src 192.0.2.3 --dst 10.1.0.6 --port 22 --for 60 --jti gw-aa | submit - >/dev/null ||
	fail "gw-aa refused"
session_open "$C1" 192.0.2.1 "$(gateway_port gw-aa)" 192.0.2.3
session_say dnat-always-before
out=$("$JITCTL_BIN" -s "$SOCK" revoke gw-aa --terminate --json) || fail "revoke --terminate: $out"
echo "$out" | jq -e '.flows_terminated == 1' >/dev/null || fail "revoke reply: $out"
session_cut dnat-always-after-terminate
session_close
gw_config both 50000-50001
"$JITCTL_BIN" -s "$SOCK" reload >/dev/null || fail "reload without always_allow failed"

log "DNAT: a gateway port for the granted source only"
out=$(sign --src 192.0.2.2 --dst 10.1.0.6 --port 22 --for 60 --jti gw-d | submit - --json) ||
	fail "gw-d refused: $out"
echo "$out" | jq -e '.dnat == [{"gateway_port": 50000, "protocol": "tcp", "to": "10.1.0.6:22",
	"connect": "192.0.2.1:50000"}]' >/dev/null || fail "grant reply: $(echo "$out" | jq -c .dnat)"
pass "the grant reply says: connect to 192.0.2.1:50000"
[ "$(set_elems dnat4)" = "192.0.2.2 tcp 50000 : 10.1.0.6 22" ] || fail "dnat4: $(set_elems dnat4)"
pass "kernel: dnat4 maps 192.0.2.2 . tcp . 50000 to 10.1.0.6 . 22"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 50000
expect_connect reject "$C1" -b 192.0.2.3 192.0.2.1 50000
grep -q 'connect to 192.0.2.1:50000 for 10.1.0.6:22/tcp' "$TMP/state/audit.jsonl" ||
	fail "the audit record lacks the connection details"
pass "audit: grant.applied says where to connect"
"$JITCTL_BIN" -s "$SOCK" log --grant gw-d --event grant.applied --csv >"$TMP/gw.csv" ||
	fail "jitctl log --csv failed"
python3 - "$TMP/gw.csv" <<'PY' || fail "the CSV lacks the gateway columns: $(cat "$TMP/gw.csv")"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
assert len(rows) == 1, rows
assert rows[0]["destinations"] == "10.1.0.6" and rows[0]["gateway_ports"] == "50000", rows[0]
PY
pass "log --csv: the destination and the gateway port have their columns"
status_json | jq -e '.grants[] | select(.id == "gw-d") | .dnat[0].connect == "192.0.2.1:50000"' \
	>/dev/null || fail "status lacks the connection details"
pass "status: gw-d shows connect 192.0.2.1:50000"
# Forward and dnat elements, read back from the kernel, match the model.
status_json | jq -e '.kernel.in_sync and ([.kernel.elements[].set] | index("fwd4") != null
	and index("dnat4") != null)' >/dev/null ||
	fail "status: kernel not in sync: $(status_json | jq -c '.kernel | del(.elements)')"
pass "status: the kernel's forward and dnat elements are in sync with the model"
text=$("$JITCTL_BIN" -s "$SOCK" status)
echo "$text" | grep -q "^Mode: *both$" && echo "$text" | grep -q "^Protected targets:" &&
	echo "$text" | grep -q "connect to 192.0.2.1:50000 -> 10.1.0.6:22/tcp" ||
	fail "jitctl status text lacks the gateway parts: $text"
pass "jitctl status: mode, protected targets and the connect line"

sign --src 192.0.2.3 --dst 10.1.0.6 --port 22 --for 14 --jti gw-e | submit - >/dev/null ||
	fail "gw-e refused"
[ "$(gateway_port gw-e)" = 50001 ] || fail "gw-e got $(gateway_port gw-e), not 50001"
pass "a second grant gets the next port, 50001"
refuse busy --src 192.0.2.2 --dst 10.1.0.6 --port 22 --for 60
"$JITCTL_BIN" -s "$SOCK" revoke gw-d >/dev/null || fail "revoke gw-d failed"
expect_connect reject "$C1" -b 192.0.2.2 192.0.2.1 50000

log "restart: a gateway table that is right is left as it is"
handles() {
	kernel_json | jq -c '[.nftables[] | (.rule? | select(.) | .handle),
		((.set? // .map?) | select(.) | {(.name): [.handle, (.elem // [] | length)]})]'
}
before=$(handles)
stop_jitd
start_jitd
[ "$(handles)" = "$before" ] || fail "a restart changed the table: $before -> $(handles)"
pass "rules, sets, the map and their elements untouched by a restart (same handles)"

log "restart onto an empty kernel (as after a reboot): a grant keeps its gateway port"
stop_jitd
in_ns "$SRV" nft delete table inet jitd
start_jitd
# 50000 is free now, so only the record can say that gw-e had 50001.
[ "$(set_elems dnat4)" = "192.0.2.3 tcp 50001 : 10.1.0.6 22" ] ||
	fail "dnat4 after restart: $(set_elems dnat4)"
pass "kernel: dnat4 restored with gw-e's own port, 50001"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 50001
out=$(sign --src 192.0.2.2 --dst 10.1.0.6 --port 22 --for 60 --jti gw-f | submit - --json) ||
	fail "gw-f refused: $out"
echo "$out" | jq -e '.dnat[0].gateway_port == 50000' >/dev/null || fail "gw-f: $(echo "$out" | jq -c .dnat)"
pass "the port of the revoked grant is given again: 50000"

log "expiry ends a mapping; its port is free again"
gone() { status_json | jq -e --arg id "$1" '[.grants[].id] | index($id) == null'; }
wait_until 20 "gw-e to expire" gone gw-e
expect_connect reject "$C1" -b 192.0.2.3 192.0.2.1 50001
[ "$(set_elems dnat4)" = "192.0.2.2 tcp 50000 : 10.1.0.6 22" ] || fail "dnat4: $(set_elems dnat4)"
pass "kernel: gw-e's mapping expired, gw-f's stays"
out=$(sign --src 192.0.2.3 --dst 10.1.0.6 --port 22 --for 60 --jti gw-g | submit - --json) ||
	fail "gw-g refused: $out"
echo "$out" | jq -e '.dnat[0].gateway_port == 50001' >/dev/null || fail "gw-g: $(echo "$out" | jq -c .dnat)"
pass "after expiry, port 50001 is given again"

log "drift: a flushed ruleset comes back with the gateway's grants and ports"
want_dnat="192.0.2.2 tcp 50000 : 10.1.0.6 22
192.0.2.3 tcp 50001 : 10.1.0.6 22"
[ "$(set_elems dnat4)" = "$want_dnat" ] || fail "dnat4 before the flush: $(set_elems dnat4)"
in_ns "$SRV" nft flush ruleset
wait_until 10 "dnat4 to be repaired" set_is dnat4 "$want_dnat"
[ "$(fwd_count)" -eq 2 ] || fail "fwd4 after the repair: $(set_elems fwd4)"
pass "kernel: dnat4 and fwd4 repaired after nft flush ruleset"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 50000

log "reload: leaving gateway mode waits for a restart; a moved dnat range moves its grants' ports"
write_config drop '[]' '[{"port": 22, "max_duration": "PT10M"}]'
rc=0
out=$("$JITCTL_BIN" -s "$SOCK" reload 2>&1) || rc=$?
[ "$rc" -ne 0 ] && echo "$out" | grep -q "takes a restart" || fail "mode change reload: exit $rc, $out"
[ "$(set_elems dnat4)" = "$want_dnat" ] || fail "dnat4 after a refused reload: $(set_elems dnat4)"
pass "reload refused ($out), kernel unchanged"
gw_config gateway 50000-50001
out=$("$JITCTL_BIN" -s "$SOCK" reload) || fail "reload to mode gateway failed: $out"
echo "$out" | grep -q ": 0 protected port(s), 3 forwarded target(s), 0 grant(s) removed" ||
	fail "reload said: $out"
[ "$(set_elems protected)" = "" ] && [ "$(set_elems dnat4)" = "$want_dnat" ] ||
	fail "kernel after reload: protected $(set_elems protected), dnat4 $(set_elems dnat4)"
pass "reload from both to gateway (same table shape): host ports gone, gateway grants kept"
# As a restart would: both grants kept, each given a port of the new range (which gets which
# is the grants' order); the kernel maps each to its own machine at once.
was=$(status_json | jq -c '[.grants[] | {(.id): .dnat[0].gateway_port}] | add')
gw_config both 51000-51001
out=$("$JITCTL_BIN" -s "$SOCK" reload) || fail "reload failed: $out"
echo "$out" | grep -q "3 forwarded target(s), 0 grant(s) removed" || fail "reload said: $out"
want_dnat=$(status_json |
	jq -r '.grants[] | "\(.sources[0]) tcp \(.dnat[0].gateway_port) : 10.1.0.6 22"' | sort)
[ "$(echo "$want_dnat" | awk '{print $3}' | sort | xargs)" = "51000 51001" ] ||
	fail "ports after the move: $want_dnat"
[ "$(set_elems dnat4)" = "$want_dnat" ] && [ "$(fwd_count)" -eq 2 ] ||
	fail "kernel after reload: $(set_elems dnat4) / $(set_elems fwd4)"
[ "$(grep -c "gets new gateway ports" "$TMP/jitd.log")" -eq 2 ] ||
	fail "the new ports are not logged"
# remapped FILTER [JQ_ARGS...]: FILTER over the array of grant.remapped records.
remapped() {
	local f=$1
	shift
	jq -s "$@" "[.[] | select(.event == \"grant.remapped\")] | $f" "$TMP/state/audit.jsonl"
}
now=$(status_json | jq -c '[.grants[] | {(.id): .dnat[0].gateway_port}] | add')
remapped 'length == 2 and all(.[]; .peer == "jitd" and .gateway_ports == [$now[.grant]] and
	.message == "configuration reload: new gateway ports, the configuration changed them " +
	"(were: \($was[.grant]))")' --argjson was "$was" --argjson now "$now" -e >/dev/null ||
	fail "grant.remapped: $(remapped . -c) (were $was, now $now)"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 "$(gateway_port gw-f)"
expect_connect reject "$C1" -b 192.0.2.2 192.0.2.1 50000
pass "reload: a moved dnat range gives both grants a port in it, mapped in the kernel; 50000 closed"
# Recorded: a restart with the same file gives each the port the reload gave it, not again.
ports=$(status_json | jq -c '[.grants[] | {(.id): .dnat[0].gateway_port}] | add')
stop_jitd
start_jitd
[ "$(status_json | jq -c '[.grants[] | {(.id): .dnat[0].gateway_port}] | add')" = "$ports" ] &&
	[ "$(set_elems dnat4)" = "$want_dnat" ] ||
	fail "after a restart: $(status_json | jq -c '[.grants[].dnat]') / $(set_elems dnat4)"
[ "$(grep -c "gets new gateway ports" "$TMP/jitd.log")" -eq 2 ] &&
	[ "$(remapped length)" -eq 2 ] ||
	fail "the restart gave ports again: $(grep "gets new gateway ports" "$TMP/jitd.log")"
pass "a restart after it keeps the ports the reload gave ($ports)"
# A range of one port: one grant takes it, the other finds none and is revoked (busy), audited.
gw_config both 51002-51002
out=$("$JITCTL_BIN" -s "$SOCK" reload) || fail "reload failed: $out"
echo "$out" | grep -q "3 forwarded target(s), 1 grant(s) removed" || fail "reload said: $out"
kept=$(status_json | jq -r '.grants[] | "\(.id) \(.sources[0]) \(.dnat[0].gateway_port)"')
[ "$(echo "$kept" | grep -c .)" -eq 1 ] && [ "$(echo "$kept" | cut -d' ' -f3)" = 51002 ] ||
	fail "grants after the second move: $kept"
gone_id=gw-f
[ "${kept%% *}" = gw-f ] && gone_id=gw-g
jq -s -e --arg id "$gone_id" 'any(.[]; .event == "grant.revoked" and .grant == $id and
	.code == "busy" and (.message | test("every gateway port of 51002-51002 is granted")))' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "$gone_id's revocation: $(grep "$gone_id" "$TMP/state/audit.jsonl")"
[ "$(set_elems dnat4)" = "$(echo "$kept" | cut -d' ' -f2) tcp 51002 : 10.1.0.6 22" ] &&
	[ "$(fwd_count)" -eq 1 ] ||
	fail "kernel after reload: $(set_elems dnat4) / $(set_elems fwd4)"
pass "reload: a full range revokes the grant it has no port for ($gone_id: busy), audited"
# A routed machine's target that gains dnat gives its grant a port, mapped at once; losing it
# again keeps the grant, routed as before.
sign --src 192.0.2.3 --dst 10.1.0.5 --port 22 --for 120 --jti gw-m | submit - >/dev/null ||
	fail "gw-m refused"
[ "$(gateway_port gw-m)" = null ] || fail "gw-m has a gateway port: $(gateway_port gw-m)"
ports='[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
write_config drop '[]' "$ports" '"mode": "both",
  "targets": [
    {"address": "10.1.0.0/24", "port": 22, "max_duration": "PT10M", "allowed_sources": ["192.0.2.0/24"]},
    {"address": "2001:db8:10::/64", "port": 22, "max_duration": "PT10M"},
    {"address": "10.1.0.6", "port": 22, "max_duration": "PT5M", "allowed_sources": ["192.0.2.0/24"],
     "dnat": {"listen_port_range": "51002-51002", "address": "192.0.2.1"}},
    {"address": "10.1.0.5", "port": 22, "max_duration": "PT5M", "allowed_sources": ["192.0.2.0/24"],
     "dnat": {"listen_port_range": "51003-51003", "address": "192.0.2.1"}}]'
out=$("$JITCTL_BIN" -s "$SOCK" reload) || fail "reload failed: $out"
echo "$out" | grep -q "4 forwarded target(s), 0 grant(s) removed" || fail "reload said: $out"
[ "$(gateway_port gw-m)" = 51003 ] || fail "gw-m's port: $(gateway_port gw-m)"
remapped 'any(.[]; .grant == "gw-m" and .gateway_ports == [51003] and
	(.message | endswith("(were: none)")))' -e >/dev/null || fail "gw-m: $(remapped . -c)"
set_elems dnat4 | grep -qx "192.0.2.3 tcp 51003 : 10.1.0.5 22" || fail "dnat4: $(set_elems dnat4)"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 51003
gw_config both 51002-51002
out=$("$JITCTL_BIN" -s "$SOCK" reload) || fail "reload failed: $out"
echo "$out" | grep -q "3 forwarded target(s), 0 grant(s) removed" || fail "reload said: $out"
[ "$(gateway_port gw-m)" = null ] && ! set_elems dnat4 | grep -q 51003 ||
	fail "gw-m after losing dnat: $(gateway_port gw-m), dnat4 $(set_elems dnat4)"
remapped 'any(.[]; .grant == "gw-m" and .gateway_ports == [] and
	(.message | endswith("(were: 51003)")))' -e >/dev/null || fail "gw-m: $(remapped . -c)"
expect_connect ok "$C1" -b 192.0.2.3 10.1.0.5 22
expect_connect reject "$C1" -b 192.0.2.3 192.0.2.1 51003
pass "reload: a target that gains dnat maps its grant's port at once; losing it keeps the grant"
pass "each new port audited as grant.remapped, with the old one"
for id in gw-m "${kept%% *}"; do
	"$JITCTL_BIN" -s "$SOCK" revoke "$id" >/dev/null || fail "revoke $id failed"
done
[ -z "$(set_elems dnat4)" ] && [ "$(fwd_count)" -eq 0 ] ||
	fail "kernel after the revocations: $(set_elems dnat4) / $(set_elems fwd4)"
stop_jitd

log "restart with a narrower dnat range: the grants whose ports still fit keep them"
# Records in the order applied: gw-h holds 50000, gw-i 50001, gw-j 50002. With the range cut to
# 50001-50002, gw-h's port no longer fits, and no port is free for it: refused, not given
# 50001 from under gw-i (which would then take gw-j's, and gw-j find none).
gw_config both 50000-50002
start_jitd
for g in h:192.0.2.2 i:192.0.2.3 j:192.0.2.4; do
	sign --src "${g#*:}" --dst 10.1.0.6 --port 22 --for 120 --jti "gw-${g%%:*}" |
		submit - >/dev/null || fail "gw-${g%%:*} refused"
done
ports=$(status_json | jq -c '[.grants[] | {(.id): .dnat[0].gateway_port}] | add')
[ "$ports" = '{"gw-h":50000,"gw-i":50001,"gw-j":50002}' ] || fail "ports given: $ports"
stop_jitd
gw_config both 50001-50002
start_jitd
ports=$(status_json | jq -c '[.grants[] | {(.id): .dnat[0].gateway_port}] | add')
[ "$ports" = '{"gw-i":50001,"gw-j":50002}' ] || fail "ports after the restart: $ports"
want_dnat="192.0.2.3 tcp 50001 : 10.1.0.6 22
192.0.2.4 tcp 50002 : 10.1.0.6 22"
[ "$(set_elems dnat4)" = "$want_dnat" ] || fail "dnat4 after the restart: $(set_elems dnat4)"
grep -q "every gateway port of 50001-50002 is granted" "$TMP/jitd.log" ||
	fail "gw-h's refusal is not logged"
pass "gw-i and gw-j keep 50001 and 50002; gw-h, outside the range, is not restored"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 50001
# A record that ran out while jitd was stopped holds no port: gw-k's 50000 goes to gw-j, whose
# 50002 the range 50000-50001 no longer has.
stop_jitd
gw_config both 50000-50002
start_jitd
out=$(sign --src 192.0.2.5 --dst 10.1.0.6 --port 22 --for 3 --jti gw-k | submit - --json) ||
	fail "gw-k refused: $out"
echo "$out" | jq -e '.dnat[0].gateway_port == 50000' >/dev/null || fail "gw-k: $out"
stop_jitd
sleep 4
gw_config both 50000-50001
start_jitd
ports=$(status_json | jq -c '[.grants[] | {(.id): .dnat[0].gateway_port}] | add')
[ "$ports" = '{"gw-i":50001,"gw-j":50000}' ] || fail "ports after gw-k ran out: $ports"
remapped '[.[] | select(.message | startswith("start: "))] | length == 1 and
	.[0].grant == "gw-j" and .[0].gateway_ports == [50000] and
	(.[0].message | endswith("(were: 50002)"))' -e >/dev/null ||
	fail "the start's grant.remapped: $(remapped . -c)"
# A restored grant's element replaced (gw-j's mapping moved) is no access a start ended.
jq -s -e 'all(.[]; .event != "drift.repaired" or (.message | startswith("start: ") | not))' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "a start audited a removal: $(grep drift "$TMP/state/audit.jsonl")"
pass "gw-k's port, its grant run out meanwhile, goes to gw-j; gw-i keeps 50001"
stop_jitd

if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	log "(test build) a restart with the clock stepped back: a gateway grant keeps its time"
	# Two adjoining machines, one end: the kernel holds one box for both, starting at the
	# first. Stepped back while jitd was stopped (not past iat), exp less the clock would give
	# the grant the step's seconds more than its box has left.
	export JITD_TEST_CLOCK_STEP_FILE=$TMP/step
	start_jitd
	sign --src 192.0.2.9 --dst 10.1.0.2,10.1.0.3 --port 22 --for 300 --jti gw-pair |
		submit - >/dev/null || fail "gw-pair refused"
	set_elems fwd4 | grep -qx "192.0.2.9 10.1.0.2/31 tcp 22" ||
		fail "not one box: $(set_elems fwd4)"
	sleep 9
	before=$(elem_expires fwd4 192.0.2.9)
	stop_jitd TERM
	echo -8000 >"$JITD_TEST_CLOCK_STEP_FILE"
	start_jitd
	[ ! -e "$JITD_TEST_CLOCK_STEP_FILE" ] || fail "the start did not take the clock step"
	left=$(elem_expires fwd4 192.0.2.9)
	[ -n "$left" ] && [ "$left" -le "$before" ] ||
		fail "gw-pair's box has ${left:-no} s after the restart, the kernel had $before"
	pass "gw-pair restored with its box's $left s ($before before), not 8 s more"

	log "(test build) a gateway grant whose record was written, not its boxes"
	# jitd killed between the two (a test hook pauses there): a shorter grant's box at one of
	# its corners, none at the other, says nothing of its time.
	export JITD_TEST_APPLY_PAUSE_FILE=$TMP/applypause
	stop_jitd TERM
	start_jitd
	sign --src 192.0.2.10 --dst 10.1.0.2 --port 22 --for 60 --jti gw-short |
		submit - >/dev/null || fail "gw-short refused"
	sign --src 192.0.2.10 --dst 10.1.0.2,10.1.0.200 --port 22 --for 300 --jti gw-unapplied \
		>"$TMP/unapplied.jws"
	kill_in_pause "$JITD_TEST_APPLY_PAUSE_FILE" "the commit" submit "$TMP/unapplied.jws"
	start_jitd
	status_json | jq -e '[.grants[] | select(.id == "gw-unapplied") | .expires_in > 250] ==
		[true]' >/dev/null ||
		fail "restored: $(status_json | jq -c '[.grants[] | [.id, .expires_in]]')"
	pass "gw-unapplied restored with its own time, not gw-short's 60 s"
	stop_jitd
	unset JITD_TEST_CLOCK_STEP_FILE JITD_TEST_APPLY_PAUSE_FILE
else
	log "skipped: a restart with the clock stepped back (needs -DJITD_TEST_HOOKS=ON)"
fi

# A start that fails after a boot closes the forwarded targets too (agent/lockdown.h).
log "lockdown: the targets of the configuration last served closed, no grants"
in_ns "$SRV" nft delete table inet jitd
# Controls: without the table each of these is open, so each drop below is the lockdown's.
expect_connect ok "$C1" -b 192.0.2.3 10.1.0.5 22
expect_connect ok "$C1" -b 192.0.2.3 10.1.0.6 22
expect_connect ok "$C1" -b 2001:db8:1::2 2001:db8:10::5 22
# SRV itself listens on no 22: refused (RST) when open, silence (drop) when closed.
expect_connect reject "$C1" -b 192.0.2.3 192.0.2.1 22
jq '. + {"typo": 1}' "$CONFIG" >"$TMP/typo.json"
rc=0
timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$TMP/typo.json" >"$TMP/fail.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "lockdown: .*: 1 protected port(s) and 3 forwarded target(s) closed" \
	"$TMP/fail.log" || fail "the failed start: exit $rc: $(cat "$TMP/fail.log")"
expect_connect drop "$C1" -b 192.0.2.3 10.1.0.5 22
expect_connect drop "$C1" -b 192.0.2.3 10.1.0.6 22
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:10::5 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
pass "$(grep -m1 "lockdown:" "$TMP/fail.log")"
