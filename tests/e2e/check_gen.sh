# The periodic check (reconcile_interval) reads every grant set back from the kernel, which
# holds jitd's loop up for a third of a second at 190,000 elements. It is skipped while the
# nftables events account for every transaction since the last full check (their generation
# ids) and none of them was anyone else's change to table inet jitd, but never ten times in a
# row. A test build can make jitd miss events without the kernel saying so
# ($JITD_TEST_DROP_EVENTS_FILE): an element nobody granted, added then, must still be found by
# the very next periodic check, not by the forced full one nine intervals later. The start-up
# restore, which reads everything too, counts as a full check; a change made before the events
# are heard (an element, a flushed chain), even just after the start read its table, is found
# by the first periodic check.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_DROP_EVENTS_FILE
JITD_TEST_DROP_EVENTS_FILE=$TMP/dropevents
setup_net
setup_keys
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"reconcile_interval": "PT1S", "log_level": "debug"'
start_listeners 22
start_jitd
sign --src 192.0.2.2 --port 22 --for 300 --jti g1 | submit - >/dev/null || fail "grant refused"

count() { grep -c "$1" "$TMP/jitd.log" || true; }
at_least() { [ "$(count "$1")" -ge "$2" ]; }
input_has_rules() {
	in_ns "$SRV" nft -j list chain inet jitd input |
		jq -e '[.nftables[].rule // empty] | length > 0' >/dev/null
}
SKIP="periodic check skipped"
FULL="periodic check: reading every grant set"

log "only jitd's own transactions: the periodic check is skipped, every tenth is in full"
wait_until 10 "a periodic check skipped" at_least "$SKIP" 1
# The start-up restore read every set and left them in line: it stands for a full check.
first=$(grep -m1 -o -e "$SKIP" -e "$FULL" "$TMP/jitd.log")
[ "$first" = "$SKIP" ] || fail "the first periodic check after the start read everything"
pass "the first periodic check after the start is skipped: the restore read everything"
fulls=$(count "$FULL")
wait_until 12 "a full periodic check after nine skipped" at_least "$FULL" $((fulls + 1))
# Just after a full check: the next nine may be skipped, whatever jitd itself commits.
skips=$(count "$SKIP")
fulls=$(count "$FULL")
sign --src 192.0.2.4 --port 22 --for 300 --jti g2 | submit - >/dev/null || fail "grant refused"
has_elem allow4_addr "192.0.2.4 tcp 22" || fail "the second grant is not in the kernel"
wait_until 5 "two more periodic checks skipped" at_least "$SKIP" $((skips + 2))
[ "$(count "$FULL")" = "$fulls" ] ||
	fail "a full check ran although only jitd had changed the ruleset"
pass "skipped: $(count "$SKIP") periodic checks, $(count "$FULL") in full; jitd's own grant did not make the next one full"

log "events missed: the next periodic check reads everything"
# Two or three checks after a full one: six or more skips would follow if the generations were
# ignored, longer than the wait below.
lines=$(wc -l <"$TMP/jitd.log")
touch "$JITD_TEST_DROP_EVENTS_FILE"
in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ 192.0.2.3 . tcp . 22 timeout 1h }'
has_elem allow4_addr "192.0.2.3 tcp 22" || fail "the planted element is not in the kernel"
wait_until 4 "the element nobody granted removed" lacks_elem allow4_addr "192.0.2.3 tcp 22"
rm -f "$JITD_TEST_DROP_EVENTS_FILE"
# The full check that repaired it must not be the forced one (after nine skipped in a row): that
# one would find the element whatever the generations said.
run=$(awk -v from="$lines" -v skip="$SKIP" -v full="$FULL" '
	index($0, full) { last = n; n = 0; next }
	index($0, skip) { n++; next }
	NR > from && index($0, "drift repaired: periodic check") { print last; exit }' \
	"$TMP/jitd.log")
[ -n "$run" ] && [ "$run" -lt 9 ] ||
	fail "the repair's full check did not follow fewer than nine skipped ones: '$run'"
jq -s -e 'any(.[]; .event == "drift.repaired" and (.message | startswith("periodic check")))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the repair was not the periodic check's"
pass "removed by the periodic check, its events never seen (a full check after $run skipped)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
has_elem allow4_addr "192.0.2.4 tcp 22" || fail "the second grant lost its element"

log "a change between the restore and the first event heard: the first periodic check reads everything"
# A test build pauses after its restore ($JITD_TEST_START_PAUSE_FILE); nft adds an element
# meanwhile, before jitd's event socket exists. Only the generation shows it, and the check it
# calls for runs at once: reconcile_interval is an hour here.
stop_jitd
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"reconcile_interval": "PT1H", "log_level": "debug"'
lines=$(wc -l <"$TMP/jitd.log")
restored=$(count "restored ")
repairs=$(jq -s '[.[] | select(.event == "drift.repaired")] | length' "$TMP/state/audit.jsonl")
export JITD_TEST_START_PAUSE_FILE=$TMP/startpause
export JITD_TEST_REPAIR_FAIL_FILE=$TMP/repairfail	# for the next section
echo 3000 >"$JITD_TEST_START_PAUSE_FILE"
(
	for ((i = 0; i < 100; i++)); do
		[ "$(count "restored ")" -gt "$restored" ] && break
		sleep 0.05
	done
	in_ns "$SRV" nft add element inet jitd allow4_addr_5 '{ 192.0.2.5 . tcp . 22 timeout 1h }'
	# A change of structure too, which no event will report either: the port stands open.
	in_ns "$SRV" nft flush chain inet jitd input
) &
planter=$!
BG_PIDS+=("$planter")	# stopped with the rest if the start fails before the wait
start_jitd
wait "$planter" || fail "nft could not add the element during the pause"
[ ! -e "$JITD_TEST_START_PAUSE_FILE" ] || fail "jitd did not take the pause"
wait_until 4 "the element added during the pause removed" lacks_elem allow4_addr "192.0.2.5 tcp 22"
# grep -m1 stops reading early: from a pipe, tail could die of SIGPIPE under pipefail.
first=$(grep -m1 -o -e "$SKIP" -e "$FULL" <(tail -n +"$((lines + 1))" "$TMP/jitd.log"))
[ "$first" = "$FULL" ] || fail "the first periodic check after the restart was '$first', not a full one"
jq -s -e --argjson n "$repairs" '[.[] | select(.event == "drift.repaired")] | .[$n:] |
	any(.message | startswith("periodic check"))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the periodic check's repair is not audited"
pass "the first periodic check read everything and removed it"
wait_until 4 "the flushed input chain restored" input_has_rules
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
grep -q "table inet jitd: the rules differ" "$TMP/jitd.log" || fail "the chain's difference is not logged"
jq -s -e --argjson n "$repairs" '[.[] | select(.event == "drift.repaired")] | .[$n:] |
	any(.message | startswith("periodic check: table structure re-applied"))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the structure's repair is not audited"
pass "the input chain flushed during the pause is restored by the same check, logged and audited"
has_elem allow4_addr "192.0.2.4 tcp 22" || fail "the second grant lost its element"

log "a change after a start read its table in place, before the restore: the first check reads all"
# A table found in place is left as it is (nothing is sent for it with table_owner off): only
# the generation, read before the table, shows a change made after that read. A test build
# pauses there ($JITD_TEST_PLACE_PAUSE_FILE) while nft flushes the input chain.
stop_jitd
lines=$(wc -l <"$TMP/jitd.log")
start_jitd_in_place_pause in_ns "$SRV" nft flush chain inet jitd input
wait_until 4 "the input chain flushed after the table's read restored" input_has_rules
first=$(grep -m1 -o -e "$SKIP" -e "$FULL" <(tail -n +"$((lines + 1))" "$TMP/jitd.log"))
[ "$first" = "$FULL" ] ||
	fail "the first periodic check after the restart was '$first', not a full one"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
has_elem allow4_addr "192.0.2.4 tcp 22" || fail "the second grant lost its element"
pass "the input chain flushed between the table's read and the restore is restored at once"

log "a repair that fails is tried again within seconds, not at the next periodic check"
# The table flushed away and the repair its event calls for failing (a test hook, as a dump
# interrupted), and the first retry too: every protected port stands open until a check
# succeeds, and the next periodic one is an hour away here.
repairs=$(jq -s '[.[] | select(.event == "drift.repaired")] | length' "$TMP/state/audit.jsonl")
echo 1 >"$JITD_TEST_REPAIR_FAIL_FILE"
in_ns "$SRV" nft flush ruleset
failed="cannot repair table inet jitd (nftables event): cannot read the ruleset"
wait_until 5 "the failed repair logged" grep -qF "$failed" "$TMP/jitd.log"
# Checks fail while the hook's file is there. Once a retry has failed too, the flush's events,
# which may reach jitd in more than one read (each read's repair failing), are long read: from
# then on only a retry can repair.
retried="cannot repair table inet jitd (repair retried): cannot read the ruleset"
wait_until 5 "a retry failed" grep -qF "$retried" "$TMP/jitd.log"
rm -f "$JITD_TEST_REPAIR_FAIL_FILE"
wait_until 10 "the grant's element back" has_elem allow4_addr "192.0.2.4 tcp 22"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
jq -s -e --argjson n "$repairs" '[.[] | select(.event == "drift.repaired")] | .[$n:] |
	any(.message | startswith("repair retried: table inet jitd was missing, recreated"))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the retried repair is not audited"
status_json | jq -e '.kernel.in_sync' >/dev/null || fail "status says not in sync"
pass "the failed repair is retried at once: the table rebuilt, the grant back, audited"

log "events lost (ENOBUFS) to another table's burst: a comparison, and nothing rebuilt or audited"
# A test build gives the event socket a tiny buffer ($JITD_TEST_MONITOR_RCVBUF_FILE), and one
# nft transaction adds 3000 elements to a table of its own while jitd is stopped: each is an
# event, and the socket overruns. jitd's table is untouched, so the loss must cost a read, not
# a rebuild (new handles) and a drift.repaired record saying the structure was re-applied.
stop_jitd
export JITD_TEST_MONITOR_RCVBUF_FILE=$TMP/rcvbuf
echo 4096 >"$JITD_TEST_MONITOR_RCVBUF_FILE"
start_jitd
handles() {
	kernel_json | jq -c '[.nftables[] | (.table? | select(.) | .handle),
		(.rule? | select(.) | .handle),
		(.set? | select(.) | {(.name): [.handle, (.elem // [] | length)]})]'
}
before=$(handles)
repairs=$(jq -s '[.[] | select(.event == "drift.repaired")] | length' "$TMP/state/audit.jsonl")
lines=$(wc -l <"$TMP/jitd.log")
{
	echo 'add table inet other'
	echo 'add set inet other burst { type ipv4_addr; }'
	for ((i = 0; i < 3000; i++)); do
		echo "add element inet other burst { 10.$((i / 256 + 100)).$((i % 256)).1 }"
	done
} >"$TMP/burst.nft"
# jitd stopped (SIGSTOP) meanwhile: the kernel coalesces the events into few skbs, which a
# jitd reading as they come could keep up with.
kill -STOP "$JITD_PID"
rc=0
in_ns "$SRV" nft -f "$TMP/burst.nft" || rc=$?
kill -CONT "$JITD_PID"
[ "$rc" -eq 0 ] || fail "nft could not add the burst (exit $rc)"
# grep reads the new lines from a process substitution: a pipe from tail, which grep -q may
# leave early, could fail under pipefail (SIGPIPE) and pass the negated check below.
since_lines() { tail -n +"$((lines + 1))" "$TMP/jitd.log"; }
lost() { grep -q "nftables events were lost (ENOBUFS)" <(since_lines); }
wait_until 5 "jitd to hear of the lost events" lost
# The comparison runs on the loop right after the read that lost them: a status answered
# after it has seen its outcome.
status_json >/dev/null
[ "$(handles)" = "$before" ] || fail "the loss rebuilt the table: $before -> $(handles)"
[ "$(jq -s '[.[] | select(.event == "drift.repaired")] | length' "$TMP/state/audit.jsonl")" = \
	"$repairs" ] || fail "the loss was audited as a repair: $(jq -c 'select(.event ==
	"drift.repaired")' "$TMP/state/audit.jsonl" | tail -n 1)"
! grep -q "drift repaired" <(since_lines) || fail "jitd logged a repair for the loss"
in_ns "$SRV" nft delete table inet other
has_elem allow4_addr "192.0.2.4 tcp 22" || fail "the second grant lost its element"
pass "ENOBUFS heard; the table kept its handles, no drift.repaired in the trail or the log"

log "an element jitd cannot have written (no timeout), its events unheard: status is not in sync"
# jitd's next check is an hour away and the events are thrown away: only the status's own read
# of the kernel can see it. It is counted, not listed (it is no grant's), until a reload
# removes it.
touch "$JITD_TEST_DROP_EVENTS_FILE"
in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ 192.0.2.6 . tcp . 22 }'
status_json >"$TMP/status.json"
jq -e '(.kernel.in_sync | not) and .kernel.foreign_elements == 1 and
	([.kernel.elements[] | select(.source == "192.0.2.6")] == [])' "$TMP/status.json" \
	>/dev/null || fail "status with a foreign element: $(jq -c .kernel "$TMP/status.json")"
"$JITCTL_BIN" -s "$SOCK" status >"$TMP/status.txt" || fail "jitctl status: $(cat "$TMP/status.txt")"
grep -q "NOT IN SYNC with the agent's grants (1 element jitd did not write)" "$TMP/status.txt" ||
	fail "jitctl status: $(grep Kernel "$TMP/status.txt")"
said=$(grep -o "NOT IN SYNC.*write)" "$TMP/status.txt")
pass "status: $(jq -c '.kernel | {in_sync, foreign_elements}' "$TMP/status.json"); $said"
rm -f "$JITD_TEST_DROP_EVENTS_FILE"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
status_json | jq -e '.kernel.in_sync and .kernel.foreign_elements == 0' >/dev/null ||
	fail "after the reload: $(status_json | jq -c '.kernel | {in_sync, foreign_elements}')"
in_ns "$SRV" nft -j list set inet jitd allow4_addr_3 |
	jq -e '[.nftables[].set? | select(.) | .elem // [] | .[] | tostring |
		select(contains("192.0.2.6"))] == []' >/dev/null ||
	fail "the foreign element is still there"
pass "a reload removed it: in sync, none counted"
