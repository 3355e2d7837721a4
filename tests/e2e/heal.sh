# Self-healing: whatever another tool does to table inet jitd — `nft flush ruleset` (what
# Debian's nftables.service does on start and reload), deleting the table, deleting a granted
# element, adding one nobody granted, flushing the chain; and changes that would open ports: an
# address put into always4 or always6, a protected port deleted, an accept rule inserted at the
# top of the chain, IPv6 elements nobody granted — jitd undoes it at once from the nftables event
# stream (within a bounded wait; the time is printed, not judged), granted access keeps its
# remaining time, nothing else opens, each repair is audited, and repairs do not feed on
# themselves.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_STRAY_RACE_FILE=$TMP/strayrace
e2e_default_setup drop
signed_at=$SECONDS	# healed() bounds the time left by the seconds gone since, not a guess
sign --src 192.0.2.2 --port 22 --for 300 --jti heal-1 | submit - >/dev/null || fail "grant refused"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "grant not in the kernel"
session_open "$C1" 192.0.2.1 22 192.0.2.2
session_say before

repairs() { jq -s '[.[] | select(.event == "drift.repaired")] | length' "$TMP/state/audit.jsonl"; }
# audited WHAT N: a drift.repaired record beyond the first N, from the event stream (the
# periodic check, every 30 s by default, is not what repairs within the waits here).
event_repairs() {
	jq -s '[.[] | select(.event == "drift.repaired" and (.message | startswith("nftables event")))]
		| length' "$TMP/state/audit.jsonl"
}
more_repairs() { [ "$(event_repairs)" -gt "$1" ]; }
audited() { wait_until 5 "$1 audited as drift.repaired" more_repairs "$2"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# healed WHAT START N: the granted element is back with its remaining time, the deny rules work,
# and the repair is audited (beyond N records).
healed() {
	local what=$1 start=$2 left
	wait_until 5 "repair after $what" has_elem allow4_addr "192.0.2.2 tcp 22"
	wait_until 5 "deny rules after $what" \
		sh -c "ip netns exec '$SRV' nft -j list chain inet jitd input | grep -q '\"drop\"'"
	audited "$what" "$3"
	pass "$what repaired and audited in $(($(now_ms) - start)) ms (bounded poll, 200 ms steps)"
	left=$(elem_expires allow4_addr 192.0.2.2)
	[ -n "$left" ] && [ "$left" -ge "$(least_left 300 "$signed_at")" ] &&
		[ "$left" -le 300 ] ||
		fail "after $what the element expires in '$left' s, not the grant's remaining time"
	expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
	expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
	expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
}

log "nft flush ruleset"
start=$(now_ms) n=$(event_repairs)
in_ns "$SRV" nft flush ruleset
healed "nft flush ruleset" "$start" "$n"
session_say "after-flush"

log "nft delete table inet jitd"
start=$(now_ms) n=$(event_repairs)
in_ns "$SRV" nft delete table inet jitd
healed "nft delete table" "$start" "$n"

log "nft delete element (the grant's)"
start=$(now_ms) n=$(event_repairs)
in_ns "$SRV" nft delete element inet jitd allow4_addr_2 '{ 192.0.2.2 . tcp . 22 }'
healed "a deleted granted element" "$start" "$n"

log "nft add element nobody granted"
n=$(event_repairs)
in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ 192.0.2.3 . tcp . 22 timeout 1h }'
wait_until 5 "the stray element removed" lacks_elem allow4_addr "192.0.2.3 tcp 22"
audited "the stray element" "$n"
pass "an element nobody granted is removed, and that audited"
n=$(event_repairs)
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
in_ns "$SRV" nft add element inet jitd allow4 '{ 192.0.2.0/30 . tcp . 22 timeout 1h }'
wait_until 5 "the stray range removed" lacks_elem allow4 "192.0.2.0/30 tcp 22"
audited "the stray range" "$n"
pass "a range nobody granted is removed, and that audited"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
# Elements jitd cannot have written, which its model cannot describe: removed by their exact
# keys all the same. A range of ports in allow4, an address in another address's set (inert
# there, as the rule before each set tests the address's low bits), an element that never
# expires, elements for a protocol jitd never grants.
n=$(event_repairs)
in_ns "$SRV" nft add element inet jitd allow4 '{ 192.0.2.3 . tcp . 22-23 timeout 1h }'
in_ns "$SRV" nft add element inet jitd allow4_addr_2 '{ 192.0.2.3 . tcp . 22 timeout 1h }'
in_ns "$SRV" nft add element inet jitd allow4_addr_4 '{ 192.0.2.4 . tcp . 22 }'	# no timeout
in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ 192.0.2.3 . sctp . 22 timeout 1h }'
in_ns "$SRV" nft add element inet jitd allow4 '{ 192.0.2.8/30 . sctp . 22 timeout 1h }'
wait_until 5 "the sctp element removed" lacks_match allow4_addr_3 "sctp"
wait_until 5 "the sctp range removed" lacks_match allow4 "sctp"
wait_until 5 "the element without a timeout removed" lacks_elem allow4_addr_4 "192.0.2.4 tcp 22"
wait_until 5 "the port range removed" lacks_source allow4 192.0.2.3
wait_until 5 "the misplaced element removed" lacks_elem allow4_addr_2 "192.0.2.3 tcp 22"
audited "the elements jitd cannot have written" "$n"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" 192.0.2.1 22
pass "elements jitd cannot have written (a port range, an address in another's set, no timeout, sctp) are removed"
# A catch-all element ("*") has no key; the kernel's lookup falls back to it when no key
# matches, so in an allow set it lets every source in: in the range set and in a hash set.
catchalls() {
	kernel_json | jq '[.nftables[] | .set? | select(.) | (.elem // [])[] |
		(if type == "object" and has("elem") then .elem.val else . end) |
		select(. == "*")] | length'
}
no_catchall() { [ "$(catchalls)" = 0 ]; }
n=$(event_repairs)
in_ns "$SRV" nft add element inet jitd allow4 '{ * timeout 1h }'
in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ * timeout 1h }'
wait_until 5 "the catch-all elements removed" no_catchall
audited "the catch-all elements" "$n"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "catch-all elements (any source) are removed"
# One of the strays runs out between jitd's reading and its removal (a test build stands in for
# the expiry: $JITD_TEST_STRAY_RACE_FILE takes the first out just before the batch): the kernel
# refuses the whole batch (ENOENT). The catch-all in it must go at once, not at the next
# periodic check (every 30 s by default).
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	n=$(event_repairs)
	echo 1 >"$JITD_TEST_STRAY_RACE_FILE"
	in_ns "$SRV" nft add element inet jitd allow4 \
		'{ 192.0.2.3 . tcp . 22-23 timeout 1h, * timeout 1h }'
	wait_until 5 "the raced removal taken" sh -c "[ ! -e '$JITD_TEST_STRAY_RACE_FILE' ]"
	wait_until 5 "the catch-all removed after the race" no_catchall
	wait_until 5 "the port range removed after the race" lacks_source allow4 192.0.2.3
	grep -q "kernel: removing elements jitd did not write: .*re-reading the sets" \
		"$TMP/jitd.log" ||
		fail "the first removal was not refused: $(grep "kernel:" "$TMP/jitd.log" |
			tail -3)"
	audited "the strays after the race" "$n"
	expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
	pass "a stray that ran out before its removal does not keep the others (a catch-all) in"
else
	log "skipped: a stray that runs out before its removal (needs -DJITD_TEST_HOOKS=ON)"
fi
sign --src 198.51.100.2 --port 22 --for 300 --jti heal-2 | submit - >/dev/null || fail "heal-2 refused"
has_elem allow4_addr_2 "198.51.100.2 tcp 22" || fail "heal-2 is not in the kernel: $(host_elems)"
"$JITCTL_BIN" -s "$SOCK" revoke heal-2 >/dev/null || fail "revoking heal-2 failed"
lacks_elem allow4_addr_2 "198.51.100.2 tcp 22" || fail "heal-2 still in the kernel"
pass "grants go on as before"

log "nft add table inet jitd { flags dormant; }"
# A dormant table's hooks are unregistered: it filters nothing, every protected port open.
# nft 1.0.6 writes no valid JSON for a dormant table's flags: its text listing is the witness.
awake() {
	local t
	t=$(in_ns "$SRV" nft list table inet jitd) && ! grep -q "flags.*dormant" <<<"$t"
}
start=$(now_ms) n=$(event_repairs)
in_ns "$SRV" nft add table inet jitd '{ flags dormant; }'
wait_until 5 "the table woken" awake
audited "a dormant table" "$n"
pass "a dormant table is woken and that audited in $(($(now_ms) - start)) ms"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
status_json | jq -e '.kernel.in_sync' >/dev/null || fail "status: not in sync after the wake"
# Dormant and its base chain deleted, in one transaction: a woken table takes no new base chain
# in the same transaction (Linux 6.9 and the stable kernels since 2024), so it is rebuilt.
n=$(event_repairs)
in_ns "$SRV" nft -f - <<'NFT'
add table inet jitd { flags dormant; }
flush chain inet jitd input
delete chain inet jitd input
NFT
wait_until 5 "the table woken" awake
wait_until 5 "the input chain back" \
	sh -c "ip netns exec '$SRV' nft -j list chain inet jitd input | grep -q '\"drop\"'"
audited "a dormant table without its chain" "$n"
wait_until 5 "the grant's element back" has_elem allow4_addr "192.0.2.2 tcp 22"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "a dormant table whose chain was deleted is rebuilt, the grant back"
# Made dormant while jitd is stopped (the table stays: it is not owned): the start finds it so.
stop_jitd TERM
in_ns "$SRV" nft add table inet jitd '{ flags dormant; }'
awake && fail "the table did not go dormant"
start_jitd 7>&-	# not the session's pipe: its close must end the session
awake || fail "the start left the table dormant: $(in_ns "$SRV" nft list table inet jitd | head -3)"
grep -q "table inet jitd: table inet jitd is dormant" "$TMP/jitd.log" ||
	fail "the start does not say the table was dormant"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "a table made dormant while jitd was stopped is woken at its start"

log "nft add chain inet jitd stray: rebuilt, its grants in the same transaction"
# A table with a chain this configuration does not make is deleted and built again. Its grants'
# elements go in with it: a second transaction would leave every grant out of the kernel in
# between (and until a retry, had it failed). Witness: nft monitor, which prints each
# transaction's changes and then its "# new generation" line.
mon=$TMP/monitor
# ip execs timeout, which passes a signal on to nft; line-buffered, as the file is read while
# it writes.
ip netns exec "$SRV" timeout 30 stdbuf -oL nft monitor >"$mon" 2>&1 &
monitor=$!
BG_PIDS+=("$monitor")
# Ready once it reports a change made after it started (a table of the test's own, not jitd's).
monitor_hears() {
	in_ns "$SRV" nft add table inet e2e_mark && in_ns "$SRV" nft delete table inet e2e_mark &&
		grep -q "^add table inet e2e_mark" "$mon"
}
wait_until 5 "nft monitor listening" monitor_hears
n=$(event_repairs)
in_ns "$SRV" nft add chain inet jitd stray
no_stray() { ! in_ns "$SRV" nft list chain inet jitd stray >/dev/null 2>&1; }
wait_until 5 "the chain nobody made gone" no_stray
audited "a chain nobody made" "$n"
wait_until 5 "the grant's element back" has_elem allow4_addr "192.0.2.2 tcp 22"
kill "$monitor"
wait "$monitor" || true
rebuild=$(awk '/^delete table inet jitd$/ { on = 1 }
	on { print } on && /^# new generation/ { exit }' "$mon")
grep -q "^# new generation" <<<"$rebuild" || fail "no rebuild seen by nft monitor: $(cat "$mon")"
elem='^(add|create) element inet jitd allow4_addr_2 \{ 192\.0\.2\.2 \. tcp \. 22 '
grep -qE "$elem" <<<"$rebuild" ||
	fail "the grant's element is not in the rebuild's transaction: $rebuild"
jq -s -e '[.[] | select(.event == "drift.repaired")] | last
	| .count == 1 and (.message | test("1 granted element\\(s\\) restored"))' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "the rebuild's repair record: $(grep drift "$TMP/state/audit.jsonl" | tail -1)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "the table rebuilt with the grant's element in one transaction (nft monitor)"

log "tampering that opens ports: always-allowed sources, protected ports, rules, IPv6 strays"
# Each change below opens port 22 to a source nobody granted. jitd is held (SIGSTOP) while it is
# made, so that what it opens is shown open with no race against the repair; its events wait in
# the socket, and once jitd runs again (SIGCONT) they alone repair it (within the wait, well
# under the periodic check's 30 s, and the records say "nftables event"). Traffic is judged
# only after the kernel shows the repair.
# shape: the input chain, its rules and the fixed sets (protected ports, always-allowed
# sources), without handles: what a repair must give back as it was.
shape() {
	kernel_json | jq -S -c '[.nftables[] | (.chain?, .rule?, (.set? | select(.) |
		select(.name | test("^(protected|always[46])$")))) | select(.) | del(.handle)]'
}
shape_is() { [ "$(shape)" = "$1" ]; }
# fixed_has SET JSON / fixed_lacks SET JSON: the fixed set is there and holds / lacks the
# element JSON, exactly as nft -j prints it.
fixed_has() {
	kernel_json | jq -e --arg s "$1" --argjson v "$2" '[.nftables[] | .set? | select(.) |
		select(.name == $s)] | length == 1 and (.[0].elem // [] | any(. == $v))' >/dev/null
}
fixed_lacks() {
	kernel_json | jq -e --arg s "$1" --argjson v "$2" '[.nftables[] | .set? | select(.) |
		select(.name == $s)] | length == 1 and (.[0].elem // [] | any(. == $v) | not)' \
		>/dev/null
}
# repaired_as N ERE: an event-stream drift.repaired record beyond the first N says ERE.
repaired_as() {
	jq -s -e --argjson n "$1" --arg re "$2" '[.[] | select(.event == "drift.repaired" and
		(.message | startswith("nftables event")))] | .[$n:] | any(.message | test($re))' \
		"$TMP/state/audit.jsonl" >/dev/null
}
# hold: jitd stopped, the shape and the repairs so far noted; release: jitd running again.
hold() {
	was=$(shape)
	jq -e 'any(.[]; has("expr"))' <<<"$was" >/dev/null ||
		fail "the chain's rules are not in the shape read: $was"
	n=$(event_repairs)
	kill -STOP "$JITD_PID"
}
release() { kill -CONT "$JITD_PID"; start=$(now_ms); }
# restored WHAT ERE: the shape back as it was before the hold, the repair audited (saying ERE).
restored() {
	wait_until 10 "the table's shape back after $1" shape_is "$was"
	audited "$1" "$n"
	repaired_as "$n" "$2" ||
		fail "$1: no record says '$2': $(grep drift "$TMP/state/audit.jsonl" | tail -1)"
	pass "$1 undone and audited in $(($(now_ms) - start)) ms (bounded poll, 200 ms steps)"
}
structure="table structure re-applied"

hold
in_ns "$SRV" nft add element inet jitd always4 '{ 192.0.2.3 }'
fixed_has always4 '"192.0.2.3"' || fail "192.0.2.3 did not go into always4"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
release
wait_until 10 "192.0.2.3 out of always4" fixed_lacks always4 '"192.0.2.3"'
fixed_has always4 '"198.51.100.3"' || fail "the configured always4 source is gone"
restored "an address added to always4" "$structure"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C2" -b 198.51.100.3 198.51.100.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22

hold
in_ns "$SRV" nft add element inet jitd always6 '{ 2001:db8:1::2 }'
fixed_has always6 '"2001:db8:1::2"' || fail "2001:db8:1::2 did not go into always6"
expect_connect ok "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
release
wait_until 10 "2001:db8:1::2 out of always6" fixed_lacks always6 '"2001:db8:1::2"'
restored "an address added to always6" "$structure"
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:1::1 22

hold
in_ns "$SRV" nft delete element inet jitd protected '{ tcp . 22 }'
fixed_lacks protected '{"concat": ["tcp", 22]}' || fail "tcp . 22 is still in protected"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
release
wait_until 10 "tcp . 22 back in protected" fixed_has protected '{"concat": ["tcp", 22]}'
restored "a protected port deleted" "$structure"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22

hold
in_ns "$SRV" nft insert rule inet jitd input accept
shape_is "$was" && fail "the inserted rule does not show in the shape read"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
release
restored "an accept rule inserted at the top of the input chain" "$structure"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22

# IPv6 strays, as for IPv4 above: the address's own set, and a range.
strays="[1-9][0-9]* element\\(s\\) nobody granted removed"
v6set=$(addr_set 2001:db8:1::2)
hold
in_ns "$SRV" nft add element inet jitd "$v6set" '{ 2001:db8:1::2 . tcp . 22 timeout 1h }'
has_elem allow6_addr "2001:db8:1::2 tcp 22" || fail "the stray is not in $v6set: $(host_elems)"
expect_connect ok "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
release
wait_until 10 "the IPv6 stray removed" lacks_elem allow6_addr "2001:db8:1::2 tcp 22"
restored "an IPv6 element nobody granted" "$strays"
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
hold
in_ns "$SRV" nft add element inet jitd allow6 '{ 2001:db8:1::/64 . tcp . 22 timeout 1h }'
has_elem allow6 "2001:db8:1::/64 tcp 22" || fail "the stray range is not in allow6: $(host_elems)"
expect_connect ok "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
release
wait_until 10 "the IPv6 stray range removed" lacks_source allow6 2001:db8:1::/64
restored "an IPv6 range nobody granted" "$strays"
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
session_say "after-tampering"

log "nft flush chain inet jitd input"
start=$(now_ms) n=$(event_repairs)
in_ns "$SRV" nft flush chain inet jitd input
healed "a flushed chain" "$start" "$n"
session_say "after-all"

log "no repair loop"
n=$(repairs)
jq -s -e 'any(.[]; .event == "drift.repaired" and (.message | test("was missing, recreated")))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "no record says the table was recreated"
pass "$n repairs audited as drift.repaired, with what was found"
sleep 2
[ "$(repairs)" = "$n" ] || fail "repairs continue with nobody touching the table: $(repairs)"
pass "quiet once repaired: jitd ignores the events of its own transactions"
status_json | jq -e '.kernel.in_sync' >/dev/null || fail "status says not in sync"
pass "status: in sync"
session_close
