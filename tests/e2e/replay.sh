# Replay protection survives a restart: a grant already used is refused with "replay" after jitd
# comes back, also after it was revoked (so it is no longer in the grant store) or dropped at a
# start, and a refused replay opens nothing.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop
# resubmit TOKEN: must be refused with replay.
resubmit() {
	local rc=0
	echo "$1" | submit - --json >"$TMP/out" || rc=$?
	[ "$rc" -eq 1 ] && [ "$(jq -r .error "$TMP/out")" = replay ] ||
		fail "$2: exit $rc $(cat "$TMP/out")"
	pass "$2: refused as replay"
}

token=$(sign --src 192.0.2.2 --port 22 --for 300 --jti replay-1)
echo "$token" | submit - >/dev/null || fail "first submission refused"
pass "first submission applied"
resubmit "$token" "second submission while active"

log "restart (SIGTERM), then revoke and crash (SIGKILL)"
stop_jitd TERM
start_jitd
resubmit "$token" "after a restart"
"$JITCTL_BIN" -s "$SOCK" revoke replay-1 >/dev/null || fail "revoke failed"
stop_jitd KILL
start_jitd
before=$(kernel_json | strip_expires)
resubmit "$token" "revoked, then a crash and a restart"
no_allow_elems || fail "a replayed grant opened something: $(host_elems)"
[ "$before" = "$(kernel_json | strip_expires)" ] || fail "a refused replay changed the kernel"
pass "kernel unchanged by the replays"
expect_connect drop "$C1" 192.0.2.1 22
[ -s "$TMP/state/replay.db" ] || fail "no replay cache in the state directory"
pass "replay cache persisted in state_dir"

# A grant dropped at a start (its key gone) whose id replay.db lost to a crash: the start
# remembers the id from the record before dropping it, so the key's return opens nothing.
log "a grant dropped at the start, replay.db lost"
token=$(sign --src 192.0.2.3 --port 22 --for 300 --jti replay-2)
echo "$token" | submit - >/dev/null || fail "replay-2 refused"
stop_jitd KILL
mv "$TMP/keys.d/ctl.pem" "$TMP/ctl.pem.away"
rm "$TMP/state/replay.db"
start_jitd
status_json | jq -e '.grants == []' >/dev/null || fail "replay-2 restored without its key"
grep -q '"event":"grant.revoked".*"grant":"replay-2"' "$TMP/state/audit.jsonl" ||
	fail "the drop of replay-2 is not audited"
mv "$TMP/ctl.pem.away" "$TMP/keys.d/ctl.pem"
stop_jitd TERM
start_jitd
resubmit "$token" "dropped at a start with replay.db lost, its key back"
no_allow_elems || fail "the replayed grant opened something: $(host_elems)"
