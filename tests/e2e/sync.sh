# A group commit is answered only once its journal records and audit lines are durable; the
# fdatasyncs run on jitd's sync thread while the loop goes on. When that sync fails (a test
# build makes the next one fail with EIO, $JITD_TEST_SYNC_FAIL_FILE), every grant of the group
# is refused, withdrawn from the kernel, its record dropped (a restart does not bring it back)
# and its id not burned; the refusal is audited. Grants that were answered stay. When the
# journal refuses a revoked grant's dropped record ($JITD_TEST_DEL_FAIL_FILE, as a full disk),
# the revocation stands in the kernel, status says so, and the drop is retried every second
# until it holds, so that a restart then does not bring the grant back (nor audit an expired
# grant's expiry again). The same holds for the records a reload drops together (a key taken
# out of keys_dir): refused together, retried.
# When the kernel's acks of a group's transaction are not read ($JITD_TEST_ACKS_LOST_FILE: they
# stay in the socket, as after a timeout), the kernel took it all the same: its grants are
# refused, and their elements withdrawn at once, past the stale acks. A revoked grant's record is
# dropped before the kernel changes: jitd killed in between ($JITD_TEST_REVOKE_PAUSE_FILE holds
# it there), the next start removes the element and does not restore the grant. A grant's record
# is written before the kernel changes: jitd killed in between ($JITD_TEST_APPLY_PAUSE_FILE),
# the next start restores it with its own time, not that of another grant's element beside it.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_SYNC_FAIL_FILE JITD_TEST_DEL_FAIL_FILE JITD_TEST_ACKS_LOST_FILE
export JITD_TEST_HOLD_FILE=$TMP/hold JITD_TEST_REVOKE_PAUSE_FILE=$TMP/rvpause
export JITD_TEST_APPLY_PAUSE_FILE=$TMP/applypause
JITD_TEST_SYNC_FAIL_FILE=$TMP/syncfail
JITD_TEST_DEL_FAIL_FILE=$TMP/delfail
JITD_TEST_ACKS_LOST_FILE=$TMP/ackslost
e2e_default_setup drop
# refused_with TOKEN_FILE CODE MESSAGE_RE WHAT: submitted, it exits 1 with CODE, the message
# matching MESSAGE_RE ($TMP/out keeps the reply).
refused_with() {
	local rc=0
	submit "$1" --json >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && [ "$(jq -r .error "$TMP/out")" = "$2" ] &&
		jq -r .message "$TMP/out" | grep -q "$3" || fail "$4: exit $rc: $(cat "$TMP/out")"
}

sign --src 192.0.2.2 --port 22 --for 300 --jti before | submit - >/dev/null || fail "grant refused"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the first grant is not in the kernel"
pass "a grant answered before the failure is in the kernel"

log "the next sync fails"
echo 1 >"$JITD_TEST_SYNC_FAIL_FILE"
# Another expiry than the first grant's: adjoining sources with the same expiry would be one
# range element in the kernel.
sign --src 192.0.2.3 --port 22 --for 200 --jti lost >"$TMP/lost"
refused_with "$TMP/lost" internal "cannot make grant 'lost' durable" "grant whose sync failed"
pass "refused: $(jq -r .message "$TMP/out")"
[ ! -e "$JITD_TEST_SYNC_FAIL_FILE" ] || fail "jitd did not take the failure"
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the refused grant stayed in the kernel"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the earlier grant went with it"
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null || fail "status: $(status_json | jq -c '.grants | map(.id)')"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "withdrawn from the kernel and the books; the earlier grant stays"
jq -s -e 'any(.[]; .event == "grant.refused" and .grant == "lost" and .code == "internal" and
	.withdrawn == true)' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "no grant.refused record for 'lost'"
pass "the refusal is in the audit trail, marked withdrawn"

log "a restart does not bring it back"
stop_jitd TERM
start_jitd
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the refused grant came back on restart"
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null || fail "status after restart: $(status_json | jq -c '.grants | map(.id)')"
pass "after a restart: only the grant that was answered"
# Its grant.applied line is in the trail, followed by the refusal: the rebuilt activity of
# port 22 counts the grant that was answered only.
jq -s -e '[.[] | select(.grant == "lost") | .event] == ["grant.applied", "grant.refused"]' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the trail of 'lost': $(jq -c 'select(.grant == "lost")' "$TMP/state/audit.jsonl")"
# (Every grant here is alice's: the count is what tells.)
port22() { status_json | jq '.ports[] | select(.port == 22) | .grants_7d'; }
[ "$(port22)" = 1 ] ||
	fail "activity after the restart counts the withdrawn grant: $(port22)"
pass "the activity rebuilt from the trail leaves the withdrawn grant out: grants_7d $(port22)"

log "its id was not burned: the same token applies now"
submit "$TMP/lost" >"$TMP/out" 2>&1 || fail "the same grant again: $(cat "$TMP/out")"
has_elem allow4_addr "192.0.2.3 tcp 22" || fail "not in the kernel the second time"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
[ "$(port22)" = 2 ] ||
	fail "activity once it applied: $(port22)"
pass "the grant refused for a failed sync applies once the sync holds; it counts now"
stop_jitd TERM
start_jitd
[ "$(port22)" = 2 ] ||
	fail "activity rebuilt after it applied again: $(port22)"
pass "rebuilt from the trail, the withdrawn application does not count and the second does"

log "a revocation whose record cannot be dropped"
touch "$JITD_TEST_DEL_FAIL_FILE"
out=$("$JITCTL_BIN" -s "$SOCK" revoke lost 2>&1) || fail "revoke with the journal refusing: $out"
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the revoked grant stayed in the kernel"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
status_json | jq -e '(.grants | map(.id) == ["before"]) and
	(.agent.last_error | test("cannot drop the record of .lost.*retrying every second"))' >/dev/null ||
	fail "status: $(status_json | jq -c '{g: (.grants | map(.id)), e: .agent.last_error}')"
pass "revoked in the kernel and the books; status: $(status_json | jq -r .agent.last_error)"
sleep 2
rm -f "$JITD_TEST_DEL_FAIL_FILE"
wait_until 5 "the dropped record retried" grep -q "the record of 'lost' is dropped now" "$TMP/jitd.log"
stop_jitd TERM
start_jitd
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the revoked grant came back on restart"
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null ||
	fail "status after restart: $(status_json | jq -c '.grants | map(.id)')"
pass "once the journal takes it, a restart keeps the revocation"

log "a reload whose dropped records the journal refuses"
"$JITCTL_BIN" keygen --kid ctl2 --dir "$TMP/signer" >/dev/null
install -m 0644 "$TMP/signer/ctl2.pem" "$TMP/keys.d/ctl2.pem"
for n in 3 5; do
	sign --key "$TMP/signer/ctl2.key" --kid ctl2 --src 192.0.2.$n --port 22 --for 300 \
		--jti by-ctl2-$n | submit - >/dev/null || fail "ctl2's grant $n refused"
done
has_elem allow4_addr "192.0.2.3 tcp 22" && has_elem allow4_addr "192.0.2.5 tcp 22" ||
	fail "ctl2's grants are not in the kernel: $(host_elems)"
rm "$TMP/keys.d/ctl2.pem"
touch "$JITD_TEST_DEL_FAIL_FILE"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
grep -q "2 grant(s) removed" "$TMP/out" || fail "reload said: $(cat "$TMP/out")"
lacks_elem allow4_addr "192.0.2.3 tcp 22" && lacks_elem allow4_addr "192.0.2.5 tcp 22" ||
	fail "the removed key's grants kept their elements: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
status_json | jq -e '(.grants | map(.id) == ["before"]) and
	(.agent.last_error | test("cannot drop the records of 2 grant.*retrying every second"))' \
	>/dev/null ||
	fail "status: $(status_json | jq -c '{g: (.grants | map(.id)), e: .agent.last_error}')"
pass "removed from the kernel and the books; status: $(status_json | jq -r .agent.last_error)"
sleep 2
rm -f "$JITD_TEST_DEL_FAIL_FILE"
for n in 3 5; do
	wait_until 5 "the record of by-ctl2-$n retried" \
		grep -q "the record of 'by-ctl2-$n' is dropped now" "$TMP/jitd.log"
done
# With the key trusted again, a record left in the journal would be restored.
install -m 0644 "$TMP/signer/ctl2.pem" "$TMP/keys.d/ctl2.pem"
stop_jitd TERM
start_jitd
lacks_elem allow4_addr "192.0.2.3 tcp 22" && lacks_elem allow4_addr "192.0.2.5 tcp 22" ||
	fail "a dropped grant came back on restart: $(host_elems)"
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null ||
	fail "status after restart: $(status_json | jq -c '.grants | map(.id)')"
pass "once the journal takes them, a restart with the key back does not restore them"

log "a group commit whose acks are lost"
echo 1 >"$JITD_TEST_ACKS_LOST_FILE"
sign --src 192.0.2.3 --port 22 --for 300 --jti unanswered >"$TMP/unanswered"
refused_with "$TMP/unanswered" kernel_refused \
	"acks were not read; what it may have applied is withdrawn$" \
	"the grant whose commit went unanswered"
[ ! -e "$JITD_TEST_ACKS_LOST_FILE" ] || fail "jitd did not take the lost acks"
# At once, not at the next periodic check: the kernel took the batch whose acks went unread.
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the refused grant's element stayed"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null ||
	fail "status: $(status_json | jq -c '.grants | map(.id)')"
pass "refused ($(jq -r .message "$TMP/out")), its element withdrawn"
submit "$TMP/unanswered" >"$TMP/out" 2>&1 || fail "the same grant again: $(cat "$TMP/out")"
has_elem allow4_addr "192.0.2.3 tcp 22" || fail "not in the kernel the second time"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
pass "its id was not burned: the same token applies now"

log "a revocation whose acks are lost"
echo 1 >"$JITD_TEST_ACKS_LOST_FILE"
"$JITCTL_BIN" -s "$SOCK" revoke unanswered >"$TMP/out" 2>&1 ||
	fail "the revocation whose acks went unread: $(cat "$TMP/out")"
[ ! -e "$JITD_TEST_ACKS_LOST_FILE" ] || fail "jitd did not take the lost acks"
# The kernel took the batch: the grant stays revoked, in the books too (put back, it would
# have the next check add its element again).
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the revoked grant's element stayed"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
status_json | jq -e '.grants | map(.id) == ["before"]' >/dev/null ||
	fail "status: $(status_json | jq -c '.grants | map(.id)')"
jq -s -e 'any(.[]; .event == "grant.revoked" and .grant == "unanswered")' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the revocation is not audited"
pass "revoked, audited, its element gone past the stale acks"

log "an expired grant whose record cannot be dropped"
touch "$JITD_TEST_DEL_FAIL_FILE"
# Five seconds: exp counts from the whole second the token was signed in, and signing then
# submitting under a loaded ASan build took long enough for two to run out on the way.
sign --src 192.0.2.7 --port 22 --for 5 --jti short | submit - >/dev/null ||
	fail "grant short refused"
wait_until 15 "short to expire" grep -q "grant expired: jti=short" "$TMP/jitd.log"
status_json | jq -e '.agent.last_error | test("cannot drop the records of 1 grant")' >/dev/null ||
	fail "status: $(status_json | jq -c .agent.last_error)"
rm -f "$JITD_TEST_DEL_FAIL_FILE"
wait_until 5 "the expired record retried" grep -q "the record of 'short' is dropped now" \
	"$TMP/jitd.log"
stop_jitd TERM
start_jitd
expired=$(jq -s '[.[] | select(.event == "grant.expired" and .grant == "short")] | length' \
	"$TMP/state/audit.jsonl")
[ "$expired" -eq 1 ] || fail "short audited as expired $expired times"
pass "dropped once the journal takes it: no record left for a start to find"

# Two grants of one group whose sync fails: both records leave the state before the rewrite
# that the failed sync calls for, so the new snapshot never holds either (one at a time, the
# first drop's rewrite copied the second into it, and a crash before its own drop record was
# durable brought it back).
log "a group of two whose sync fails"
# An endpoint, for /metrics: jitd_grants_waiting says when both are verified and held.
stop_jitd TERM
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
start_jitd
held_both() {
	[ "$(in_ns "$SRV" curl -sS --max-time 5 http://127.0.0.1:7080/metrics |
		awk '$1 == "jitd_grants_waiting" { print $2 }')" = 2 ]
}
sign --src 192.0.2.8 --port 22 --for 200 --jti pair-1 >"$TMP/pair-1"
sign --src 192.0.2.9 --port 22 --for 250 --jti pair-2 >"$TMP/pair-2"
# The rewrite renames a new file over it: another inode (its bytes may be the same).
snap_before=$(stat -c %i "$TMP/state/grants.snap" 2>/dev/null || true)
touch "$JITD_TEST_HOLD_FILE"
submit "$TMP/pair-1" --json >"$TMP/out1" 2>&1 &
p1=$!
submit "$TMP/pair-2" --json >"$TMP/out2" 2>&1 &
p2=$!
# Verified, then held together until the hold goes.
wait_until 30 "both grants verified and held (jitd_grants_waiting 2)" held_both
echo 1 >"$JITD_TEST_SYNC_FAIL_FILE"
rm -f "$JITD_TEST_HOLD_FILE"
wait "$p1" || true
wait "$p2" || true
for i in 1 2; do
	jq -e --arg id "pair-$i" '.error == "internal" and
		(.message | contains($id) and contains("durable"))' "$TMP/out$i" >/dev/null ||
		fail "pair-$i: $(cat "$TMP/out$i")"
done
[ -e "$TMP/state/grants.snap" ] && [ "$(stat -c %i "$TMP/state/grants.snap")" != "$snap_before" ] ||
	fail "no snapshot was rewritten after the failed sync"
! grep -qa "pair-" "$TMP/state/grants.snap" ||
	fail "a withdrawn grant's record is in the rewritten snapshot"
stop_jitd TERM
start_jitd
status_json | jq -e '[.grants[].id | select(startswith("pair-"))] == []' >/dev/null ||
	fail "a withdrawn grant came back: $(status_json | jq -c '[.grants[].id]')"
pass "both refused, neither in the rewritten snapshot nor back after a restart"

# A revocation's id is durable before the grant's record is dropped: a restart while the journal
# refuses that drop (or a crash in between) restores the grant, and the controller, never
# answered, sends the same revocation again. Used, it still ends a grant that is active.
log "a revocation sent again after a restart brought its grant back ends it again"
sign --src 192.0.2.6 --port 22 --for 300 --jti back | submit - >/dev/null || fail "grant refused"
"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --revokes back \
	--for 300 >"$TMP/rv-back"
touch "$JITD_TEST_DEL_FAIL_FILE"
code=$(post_jwt /v1/revocations "$TMP/rv-back")
[ "$code" = 200 ] || fail "the revocation: HTTP $code $(cat "$TMP/body")"
lacks_elem allow4_addr "192.0.2.6 tcp 22" || fail "the revoked grant stayed in the kernel"
stop_jitd KILL
rm -f "$JITD_TEST_DEL_FAIL_FILE"
start_jitd
has_elem allow4_addr "192.0.2.6 tcp 22" ||
	fail "the grant whose drop the journal refused was not restored: $(host_elems)"
code=$(post_jwt /v1/revocations "$TMP/rv-back")
[ "$code" = 200 ] && jq -e '.revoked == "back"' "$TMP/body" >/dev/null ||
	fail "the revocation again: HTTP $code $(cat "$TMP/body")"
lacks_elem allow4_addr "192.0.2.6 tcp 22" || fail "the revocation sent again left the grant"
code=$(post_jwt /v1/revocations "$TMP/rv-back")
[ "$code" = 409 ] && jq -e '.error == "replay"' "$TMP/body" >/dev/null ||
	fail "the revocation a third time, its grant gone: HTTP $code $(cat "$TMP/body")"
pass "the same revocation ends the restored grant; once it is gone, it is a replay"

# kill_in_revocation JTI: jitd killed inside JTI's revocation, after the grant's record is
# dropped and before the kernel changes; jitctl revoke's exit status in pause_rc.
kill_in_revocation() { kill_in_pause "$JITD_TEST_REVOKE_PAUSE_FILE" "the revocation" revoke "$1"; }
AUDIT=$TMP/state/audit.jsonl
repairs() { jq -s '[.[] | select(.event == "drift.repaired")] | length' "$AUDIT"; }
# start_removal_audited N: after the first N drift.repaired lines, one: a start's, of 1 element.
start_removal_audited() {
	jq -s -e --argjson n "$1" 'map(select(.event == "drift.repaired")) | .[$n:] |
		length == 1 and (.[0].message | startswith("start: 1 element(s) ")) and
		.[0].count == 1' "$AUDIT" >/dev/null
}

log "jitd killed after a revocation dropped its record, before the kernel changed"
ip -n "$C1" addr add 192.0.2.7/32 dev eth0
sign --src 192.0.2.7 --port 22 --for 300 --jti killed | submit - >/dev/null || fail "grant refused"
has_elem allow4_addr "192.0.2.7 tcp 22" || fail "the grant is not in the kernel"
expect_connect ok "$C1" -b 192.0.2.7 192.0.2.1 22
kill_in_revocation killed
[ "$pause_rc" -ne 0 ] || fail "jitctl revoke succeeded though jitd was killed: $(cat "$TMP/out")"
# The kill came before the kernel change: the element is still there, its record is not.
has_elem allow4_addr "192.0.2.7 tcp 22" || fail "the element went before the kill: $(host_elems)"
repairs=$(repairs)
start_jitd
lacks_elem allow4_addr "192.0.2.7 tcp 22" || fail "the revoked grant came back: $(host_elems)"
status_json | jq -e '[.grants[].id] | index("killed") == null' >/dev/null ||
	fail "status after the restart: $(status_json | jq -c '.grants | map(.id)')"
expect_connect drop "$C1" -b 192.0.2.7 192.0.2.1 22
# The trail says so: the access ended with no grant.revoked line (its record was gone).
start_removal_audited "$repairs" ||
	fail "the start's removal is not audited: $(grep drift "$AUDIT")"
pass "the next start removed its element, audited, and did not restore it"

log "the same for a range whose element held a narrower, shorter grant's addresses too"
# One element: the narrow grant's range is inside the wide one's, which lasts longer. The next
# start keeps the narrow range; the rest of the element is access ended, audited as one.
sign --src 198.18.0.0/29 --port 22 --for 300 --jti wide | submit - >/dev/null || fail "refused"
sign --src 198.18.0.0/30 --port 22 --for 200 --jti narrow | submit - >/dev/null || fail "refused"
[ "$(allow_elems allow4)" = "198.18.0.0/29 tcp 22" ] ||
	fail "not one element: $(allow_elems allow4)"
kill_in_revocation wide
repairs=$(repairs)
start_jitd
[ "$(allow_elems allow4)" = "198.18.0.0/30 tcp 22" ] ||
	fail "after the restart: $(allow_elems allow4)"
start_removal_audited "$repairs" ||
	fail "the start's removal is not audited: $(grep drift "$AUDIT")"
pass "the wide range cut back to the narrow grant's, the removal audited"

log "jitd killed after a grant's record was written, before the kernel changed"
# A shorter grant's element holds part of its range: that says nothing of this grant's time.
# Its id is its own: "short" above stays a replay until its exp + clock_skew, which a fast run
# reaches this line before.
sign --src 198.18.1.0/30 --port 22 --for 60 --jti shorter | submit - >/dev/null ||
	fail "refused"
sign --src 198.18.1.0/29 --port 22 --for 600 --jti unapplied >"$TMP/unapplied.jws"
kill_in_pause "$JITD_TEST_APPLY_PAUSE_FILE" "the commit" submit "$TMP/unapplied.jws"
holds_match allow4 '^198\.18\.1\.0/30 tcp 22$' && lacks_match allow4 '^198\.18\.1\.4' ||
	fail "the kernel before the restart: $(allow_elems allow4)"
start_jitd
status_json | jq -e '[.grants[] | select(.id == "unapplied") | .expires_in > 500] == [true]' \
	>/dev/null || fail "restored: $(status_json | jq -c '[.grants[] | [.id, .expires_in]]')"
# Both halves end with it now: one element.
left=$(elem_expires allow4 198.18.1.0/29)
[ -n "$left" ] && [ "$left" -gt 500 ] || fail "its element: ${left:-none} s: $(allow_elems allow4)"
pass "restored with its own $left s, not the 60 s of the element beside it"
