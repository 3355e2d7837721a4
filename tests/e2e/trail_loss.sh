# After a failed sync of the audit trail, a line the disk lost is put back from the journal
# while jitd runs, before any later sync covers its note or a compaction drops it. A test build
# fails the trail's syncs behind the journal, and the check that follows one, while
# $JITD_TEST_TRAIL_FAIL_FILE exists, as on a disk that lost what they were to write; the test
# blanks the line of the grant applied meanwhile in audit.jsonl, as such a disk leaves it. Once
# the file is gone, jitd finds the line missing on the disk and appends it again, as written;
# the grant stays applied, and a restart adds nothing more (each line once). With compactions
# due every 6 journal records ($JITD_TEST_COMPACT_RECORDS_FILE, from the restart on), none
# runs while the trail is in doubt, so the journal keeps the copy of a line lost meanwhile
# until it is back in the trail.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_TRAIL_FAIL_FILE=$TMP/trailfail JITD_TEST_COMPACT_RECORDS_FILE=$TMP/compact
e2e_default_setup drop
AUDIT=$TMP/state/audit.jsonl

# applied JTI: how many whole grant.applied lines for JTI the trail holds.
applied() {
	jq -R -s --arg g "$1" '[split("\n")[] | fromjson? |
		select(.event == "grant.applied" and .grant == $g)] | length' "$AUDIT"
}
applied_once() { [ "$(applied "$1")" = 1 ]; }

touch "$JITD_TEST_TRAIL_FAIL_FILE"
sign --src 192.0.2.2 --port 22 --for 300 --jti first | submit - >/dev/null ||
	fail "the grant was refused"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant is not in the kernel"
wait_until 10 "the trail's failed sync" grep -q "cannot make audit.jsonl durable" "$TMP/jitd.log"
applied_once first || fail "the grant's line is not in the trail"
# blank JTI: what the disk lost, JTI's grant.applied line blanked in place, its newline kept.
blank() {
	/usr/bin/python3 - "$AUDIT" "$1" <<'PY' || fail "cannot blank the line of $1"
import sys
want = b'"grant":"%s"' % sys.argv[2].encode()
with open(sys.argv[1], "r+b") as f:
    data = f.read()
    for line in data.split(b"\n"):
        if b'"grant.applied"' in line and want in line:
            f.seek(data.index(line))
            f.write(b" " * len(line))
            break
    else:
        sys.exit(1)
PY
	[ "$(applied "$1")" = 0 ] || fail "the line of $1 is still there"
}
blank first
pass "the trail's sync failed, and the disk lost the grant's line"

log "the disk works again"
rm "$JITD_TEST_TRAIL_FAIL_FILE"
sign --src 192.0.2.3 --port 22 --for 300 --jti second | submit - >/dev/null ||
	fail "the second grant was refused"
wait_until 10 "the lost line put back" applied_once first
applied_once second || fail "second: $(applied second) lines"
grep -q "line(s) a failed write took from the trail put back from the journal" \
	"$TMP/jitd.log" || fail "jitd did not say so"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "the lost line is back, as written; the grant stays applied"

log "a restart adds nothing more"
stop_jitd
echo 6 >"$JITD_TEST_COMPACT_RECORDS_FILE"
start_jitd
applied_once first && applied_once second ||
	fail "after a restart: first $(applied first), second $(applied second) lines"
pass "each line once"

log "while the trail is in doubt, no compaction drops the journal's copies of its lines"
failures() { grep -c "cannot make audit.jsonl durable" "$TMP/jitd.log"; }
failed_again() { [ "$(failures)" -gt "$1" ]; }
before=$(failures)
touch "$JITD_TEST_TRAIL_FAIL_FILE"
sign --src 192.0.2.4 --port 22 --for 300 --jti third | submit - >/dev/null ||
	fail "the third grant was refused"
wait_until 10 "the trail's failed sync" failed_again "$before"
# Written while the trail is in doubt, and lost by the disk.
sign --src 192.0.2.5 --port 22 --for 300 --jti fourth | submit - >/dev/null ||
	fail "the fourth grant was refused"
blank fourth
# Enough journal records for compactions to be due at each write, all refused.
for ((i = 6; i <= 10; i++)); do
	sign --src "192.0.2.$i" --port 22 --for 300 --jti "more-$i" | submit - >/dev/null ||
		fail "grant more-$i was refused"
done
grep -aq '"grant":"fourth"' "$TMP/state/grants.journal" ||
	fail "a compaction dropped the journal's copy of the lost line"
grep -q "state: cannot write a snapshot" "$TMP/jitd.log" || fail "no compaction was due"
pass "compactions were refused; the journal keeps the lost line's copy"
rm "$JITD_TEST_TRAIL_FAIL_FILE"
wait_until 20 "the lost line put back" applied_once fourth
# A failed compaction is tried again a second later at the soonest.
sleep 1.2
sign --src 192.0.2.11 --port 22 --for 300 --jti last | submit - >/dev/null ||
	fail "the last grant was refused"
compacted() { ! grep -aq '"grant":"fourth"' "$TMP/state/grants.journal"; }
wait_until 10 "a compaction once the line is back" compacted
for j in first second third fourth more-6 more-10 last; do
	applied_once "$j" || fail "$j: $(applied "$j") lines"
done
pass "the line is back, then the journal compacted; each line once"
