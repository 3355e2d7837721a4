# The grant journal damaged while jitd is stopped: a byte changed in a record before its end,
# which no crash does. jitd starts and fails closed: the grant recorded there and every one
# after it are lost to it and their elements go, the one before stays; it says so in its log
# and keeps a copy of the journal as it was. Then the replay cache's file, damaged before its
# end: the ids after the damage are still refused.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop

sign --src 192.0.2.2 --port 22 --for 600 --jti before | submit - >/dev/null || fail "grant refused"
sign --src 192.0.2.3 --port 22 --for 600 --jti damaged | submit - >/dev/null || fail "grant refused"
sign --src 198.51.100.2 --port 22 --for 600 --jti after | submit - >/dev/null || fail "grant refused"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22
stop_jitd TERM

journal=$TMP/state/grants.journal
# The first "damaged" in the file is the grant's id in its own record (its audit line's copy
# comes after it); ten bytes on is inside the same record.
at=$(grep -boa damaged "$journal" | head -1 | cut -d: -f1)
[ -n "$at" ] || fail "the grant's record is not in the journal"
size=$(stat -c %s "$journal")
[ "$((at + 10))" -lt "$((size - 100))" ] || fail "the record is not before the journal's end"
printf '#' | dd of="$journal" bs=1 seek=$((at + 10)) conv=notrunc status=none
cp "$journal" "$TMP/journal.damaged"
log "journal damaged at byte $((at + 10)) of $size; jitd starts again"
start_jitd

grep -q "grants.journal is damaged after .* kept as grants.journal.corrupt-" "$TMP/jitd.log" ||
	fail "no error about the damage: $(grep state: "$TMP/jitd.log")"
copies=("$TMP"/state/grants.journal.corrupt-*)
[ "${#copies[@]}" -eq 1 ] && [ -f "${copies[0]}" ] || fail "no copy kept: ${copies[*]}"
cmp -s "${copies[0]}" "$TMP/journal.damaged" || fail "the copy is not the journal as it was"
pass "the damage is logged as an error and the journal kept as it was"

has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant before the damage was lost: $(host_elems)"
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the damaged grant's element stayed: $(host_elems)"
lacks_elem allow4_addr "198.51.100.2 tcp 22" || fail "the grant after the damage stayed: $(host_elems)"
pass "kernel: the grant before the damage kept, the damaged one and the one after it removed"
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null ||
	fail "status: $(status_json | jq -c '.grants | map(.id)')"
pass "jitctl status lists the grant before the damage only"
# An operator reads status before the log: the damage is there, as logged, until the next start.
status_json | jq -e '.agent.state_damage | .count == 1 and (.last | test(
	"^state: .*/grants.journal is damaged after [0-9]+ good record.s., before its end; kept as grants.journal.corrupt-"))
	and (.last_at | test("^20[0-9-]+T[0-9:]+Z$"))' >/dev/null ||
	fail "status: no state_damage: $(status_json | jq -c .agent)"
text=$("$JITCTL_BIN" -s "$SOCK" status) || fail "jitctl status failed"
grep -q "^State damage:   state: .*grants.journal is damaged after .* (1 finding(s) since the start, the last at " <<<"$text" ||
	fail "jitctl status shows no damage: $text"
pass "jitctl status (JSON and text) shows the damage found at the start"
# The trail says so too: the grants it cost are never closed in it otherwise.
jq -s -e '[.[] | select(.event == "state.damaged")] | length == 1 and (.[0] | .peer == "jitd"
	and .count == 1 and (.message | test("grants.journal is damaged after [0-9]+ good record")))' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "no state.damaged record: $(grep state.damaged "$TMP/state/audit.jsonl")"
grep -q "grants.journal is damaged" <<<"$("$JITCTL_BIN" -s "$SOCK" log --event state.damaged)" ||
	fail "jitctl log --event state.damaged does not show it"
pass "the trail has one state.damaged record for it (jitctl log --event state.damaged)"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22

log "restart: the journal was cut once, nothing more is lost"
stop_jitd TERM
lines=$(grep -c "grants.journal is damaged" "$TMP/jitd.log")
start_jitd
[ "$(grep -c "grants.journal is damaged" "$TMP/jitd.log")" -eq "$lines" ] ||
	fail "the journal was reported damaged again"
copies=("$TMP"/state/grants.journal.corrupt-*)
[ "${#copies[@]}" -eq 1 ] || fail "another copy was made: ${copies[*]}"
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null || fail "status changed"
status_json | jq -e '.agent.state_damage == null' >/dev/null ||
	fail "status still shows damage: $(status_json | jq -c .agent.state_damage)"
text=$("$JITCTL_BIN" -s "$SOCK" status) || fail "jitctl status failed"
grep -q "^State damage:" <<<"$text" && fail "jitctl status shows damage: $text"
pass "a second start finds a sound journal"

log "replay.db damaged before its end: the ids after the damage are still refused"
stop_jitd TERM
db=$TMP/state/replay.db
for id in before damaged after; do
	grep -q " $id\$" "$db" || fail "$id is not in replay.db: $(cat "$db")"
done
# The first line damaged (garbage on it, 400 bytes: past the 320 jitd once read at a time, which
# it took for a torn last line, and stopped there). "before" goes with it, but its grant is live:
# its journal record has its id too.
{
	grep " before\$" "$db" | tr -d '\n'
	printf '%0400d\n' 0
	grep -v " before\$" "$db"
} >"$db.new"
mv "$db.new" "$db"
chmod 0600 "$db"
start_jitd
for id in before damaged after; do
	out=$(sign --src 192.0.2.3 --port 22 --for 600 --jti "$id" | submit - --json 2>&1) &&
		fail "the $id token was taken again: $out"
	[ "$(jq -r .error <<<"$out")" = replay ] || fail "the $id token: $out"
done
grep -q "replay: skipping an unreadable line" "$TMP/jitd.log" || fail "no warning about the line"
pass "ids after the damaged line are still refused as replay"
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "a refused grant opened: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22

[ "${JITD_TEST_HOOKS:-0}" = 1 ] || exit 0
log "(test build) a record damaged while jitd runs: a compaction leaves it out and says so"
stop_jitd TERM
# Compactions due from 6 journal records on (a test hook), so that a few grants bring one.
echo 6 >"$TMP/compact"
export JITD_TEST_COMPACT_RECORDS_FILE=$TMP/compact
start_jitd
sign --src 192.0.2.3 --port 22 --for 600 --jti rotten | submit - >/dev/null || fail "grant refused"
# Its record is in the journal, or in the snapshot if a compaction came with it; a byte inside
# it changed in the page cache, as a failed writeback read back stale leaves it.
file=$journal
grep -qa rotten "$file" || file=$TMP/state/grants.snap
at=$(grep -boa rotten "$file" | head -1 | cut -d: -f1)
[ -n "$at" ] || fail "the grant's record is in neither file"
printf '#' | dd of="$file" bs=1 seek=$((at + 10)) conv=notrunc status=none
for i in 1 2 3 4; do
	sign --src "198.51.100.$((10 + i))" --port 22 --for 600 --jti "later-$i" | submit - >/dev/null ||
		fail "grant later-$i refused"
done
left_out() {
	status_json | jq -e '.agent.state_damage | .count == 1 and
		(.last | test("the record of grant .rotten. is damaged; left out of the new snapshot"))'
}
wait_until 10 "status to show the record left out" left_out
audited_damage() {
	jq -s -e 'any(.[]; .event == "state.damaged" and .count == 1 and .peer == "jitd" and
		(.message | test("grant .rotten. is damaged")))' "$TMP/state/audit.jsonl"
}
wait_until 10 "a state.damaged record naming the grant" audited_damage
has_elem allow4_addr "192.0.2.3 tcp 22" || fail "the grant left the kernel: $(host_elems)"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
pass "left out of the snapshot, in status and the trail; the grant stays in force meanwhile"
stop_jitd TERM
start_jitd
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the left-out grant was restored: $(host_elems)"
has_elem allow4_addr "198.51.100.14 tcp 22" || fail "a sound grant was lost: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
status_json | jq -e '.agent.state_damage == null and ([.grants[].id] | index("rotten") == null)' \
	>/dev/null || fail "after the restart: $(status_json | jq -c '[.agent.state_damage, [.grants[].id]]')"
pass "a restart does not restore it (fail closed), keeps the sound ones and shows no damage"
