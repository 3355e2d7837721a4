# A full state directory: jitd refuses grants with storage_full, applies nothing, burns no
# grant id, leaves no partial record, stays up (status over HTTP too, though it cannot be
# spooled), and takes the same grant once there is room. A restart with it full starts,
# restores the grant and cuts replay.db's torn tail, which it cannot rewrite.
# The state directory is a 512 KiB tmpfs mounted in the test's own mount namespace only.
. "$(dirname "$0")/lib.sh"

setup_net
setup_keys
write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
start_listeners 22
mnt_holder
in_mnt mount -t tmpfs -o size=512k,mode=0700 jitd-e2e-state "$TMP/state"
start_jitd_mnt
in_mnt sh -c "df -k '$TMP/state' | grep -q jitd-e2e-state" || fail "state dir is not the tmpfs"
pass "state_dir is a 512 KiB tmpfs in the test's own mount namespace"

fill_state() { in_mnt sh -c "dd if=/dev/zero of='$TMP/state/fill' bs=4k 2>/dev/null; true"; }
log "fill it"
fill_state
sign --src 192.0.2.2 --port 22 --for 120 --jti full-1 >"$TMP/g1"
journal_size() { in_mnt stat -c %s "$TMP/state/grants.journal"; }
journal_before=$(journal_size)
before=$(kernel_json | jq -S 'walk(if type == "object" then del(.expires) else . end)')
rc=0
"$JITCTL_BIN" -s "$SOCK" submit "$TMP/g1" --json >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && [ "$(jq -r .error "$TMP/out")" = storage_full ] ||
	fail "grant with a full state dir: exit $rc: $(cat "$TMP/out")"
pass "refused with storage_full: $(jq -r .message "$TMP/out")"
[ "$(kernel_json | jq -S 'walk(if type == "object" then del(.expires) else . end)')" = "$before" ] ||
	fail "the refused grant changed the kernel"
no_allow_elems || fail "an element appeared"
pass "kernel unchanged, nothing applied"
# A half-written journal record would be cut off on the next start, but must not even be there.
# The refusal comes at the journal (then unchanged) or, when the record fits in a page the
# journal already has, at the replay cache, and the record's deletion follows it: both whole.
journal_tail() { in_mnt tail -c +"$((journal_before + 1))" "$TMP/state/grants.journal"; }
journal_tail | python3 -c '
import sys
b, recs = sys.stdin.buffer.read(), []
while b:
    n = int.from_bytes(b[:4], "big")
    if len(b) < 12 + n:
        sys.exit("a partial record")
    recs.append(b[12:12 + n][:7])
    b = b[12 + n:]
sys.exit(0 if recs in ([], [b"Pfull-1", b"Dfull-1"]) else "records %r" % recs)' ||
	fail "the journal after the refusal ($journal_before -> $(journal_size) bytes)"
[ -z "$(in_mnt find "$TMP/state" -name '.*.tmp')" ] || fail "a partial snapshot was left"
status_json | jq -e '.grants == []' >/dev/null || fail "status shows a grant"
pass "no partial record, agent up, no grant"
# Status over HTTP is spooled in state_dir (status_http); what the full disk cannot take is
# held in memory and sent after it.
code=$(in_ns "$SRV" curl -sS --max-time 10 -o "$TMP/body" -w '%{http_code}' \
	http://127.0.0.1:7080/v1/status)
[ "$code" = 200 ] && [ "$(jq -S 'del(.time, .agent, .endpoint.connections)' "$TMP/body")" = \
	"$(status_json | jq -S 'del(.time, .agent, .endpoint.connections)')" ] ||
	fail "status over HTTP with the state dir full: HTTP $code $(head -c 300 "$TMP/body")"
pass "status over HTTP is whole with the state dir full"
expect_connect drop "$C1" 192.0.2.1 22

log "make room: the same grant is accepted (its id was not burned)"
in_mnt rm -f "$TMP/state/fill"
"$JITCTL_BIN" -s "$SOCK" submit "$TMP/g1" >"$TMP/out" 2>&1 || fail "after making room: $(cat "$TMP/out")"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "not in the kernel"
expect_connect ok "$C1" 192.0.2.1 22
pass "the grant refused for lack of space applies once there is room"

log "a restart with the state dir full starts, restores the grant, cuts replay.db's torn tail"
stop_jitd TERM
printf 'A 1 tor' | in_mnt sh -c "cat >>'$TMP/state/replay.db'"
fill_state
lines=$(wc -l <"$TMP/jitd.log")
start_jitd_mnt
status_json | jq -e '[.grants[].id] == ["full-1"]' >/dev/null ||
	fail "status after the restart: $(status_json | jq -c '.grants | map(.id)')"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant is not restored"
expect_connect ok "$C1" 192.0.2.1 22
grep -q "replay: cannot rewrite $TMP/state/replay.db (No space left on device)" \
	<(tail -n +"$((lines + 1))" "$TMP/jitd.log") || fail "no warning of the rewrite"
[ "$(in_mnt tail -c 1 "$TMP/state/replay.db" | od -An -c | tr -d ' ')" = '\n' ] ||
	fail "replay.db still ends torn: $(in_mnt tail -c 20 "$TMP/state/replay.db")"
pass "started on a full disk: the grant restored, replay.db cut to its whole lines"
"$JITCTL_BIN" -s "$SOCK" revoke full-1 >/dev/null || fail "revoke on a full disk failed"
lacks_elem allow4_addr "192.0.2.2 tcp 22" || fail "the revoked grant is still in the kernel"
expect_connect drop "$C1" 192.0.2.1 22
pass "a revocation ends the access on a full disk"
