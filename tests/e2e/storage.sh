# A full state directory: jitd refuses grants with storage_full, applies nothing, burns no
# grant id, leaves no partial record, stays up (status over HTTP too, though it cannot be
# spooled), and takes the same grant once there is room.
# The state directory is a 512 KiB tmpfs mounted in jitd's own mount namespace only.
. "$(dirname "$0")/lib.sh"

setup_net
setup_keys
write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
start_listeners 22
# unshare: the mount exists for jitd alone and disappears with it; nothing on the host changes.
ip netns exec "$SRV" unshare -m --propagation private sh -c \
	'mount -t tmpfs -o size=512k,mode=0700 jitd-e2e-state "$1" && exec "$2" -c "$3"' \
	sh "$TMP/state" "$JITD_BIN" "$CONFIG" >>"$TMP/jitd.log" 2>&1 &
JITD_PID=$!
wait_until 10 "jitd answering" "$JITCTL_BIN" -s "$SOCK" status --json
in_jitd_mnt() { nsenter -t "$JITD_PID" -m -- "$@"; }
in_jitd_mnt sh -c "df -k '$TMP/state' | grep -q jitd-e2e-state" || fail "state dir is not the tmpfs"
pass "state_dir is a 512 KiB tmpfs private to jitd"

log "fill it"
in_jitd_mnt sh -c "dd if=/dev/zero of='$TMP/state/fill' bs=4k 2>/dev/null; true"
sign --src 192.0.2.2 --port 22 --for 120 --jti full-1 >"$TMP/g1"
journal_size() { in_jitd_mnt stat -c %s "$TMP/state/grants.journal"; }
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
[ "$(journal_size)" = "$journal_before" ] ||
	fail "the journal changed: $journal_before -> $(journal_size) bytes"
[ -z "$(in_jitd_mnt find "$TMP/state" -name '.*.tmp')" ] || fail "a partial snapshot was left"
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
in_jitd_mnt rm -f "$TMP/state/fill"
"$JITCTL_BIN" -s "$SOCK" submit "$TMP/g1" >"$TMP/out" 2>&1 || fail "after making room: $(cat "$TMP/out")"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "not in the kernel"
expect_connect ok "$C1" 192.0.2.1 22
pass "the grant refused for lack of space applies once there is room"
