# After a failed sync of the audit trail, a line the disk lost is put back from the journal
# while jitd runs, before any later sync covers its note or a compaction drops it. A test build
# fails the trail's syncs behind the journal, and the check that follows one, while
# $JITD_TEST_TRAIL_FAIL_FILE exists, as on a disk that lost what they were to write; the test
# blanks the line of the grant applied meanwhile in audit.jsonl, as such a disk leaves it. Once
# the file is gone, jitd finds the line missing on the disk and appends it again, as written;
# the grant stays applied, and a restart adds nothing more (each line once).
. "$(dirname "$0")/lib.sh"

export JITD_TEST_TRAIL_FAIL_FILE=$TMP/trailfail
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
# What the disk lost: the line blanked in place, its newline kept.
/usr/bin/python3 - "$AUDIT" <<'PY' || fail "cannot blank the line"
import sys
with open(sys.argv[1], "r+b") as f:
    data = f.read()
    for line in data.split(b"\n"):
        if b'"grant.applied"' in line and b'"grant":"first"' in line:
            f.seek(data.index(line))
            f.write(b" " * len(line))
            break
    else:
        sys.exit(1)
PY
[ "$(applied first)" = 0 ] || fail "the line is still there"
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
start_jitd
applied_once first && applied_once second ||
	fail "after a restart: first $(applied first), second $(applied second) lines"
pass "each line once"
