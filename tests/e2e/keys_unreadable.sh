# A key file that cannot be read for a passing reason (here: out of descriptors, a test-build
# hook) says nothing about the key, so nothing may be dropped for it: a new grant is refused
# as internal (retryable), a reload is refused with the grants and the kernel unchanged, and a
# start fails instead of dropping the recorded grants, leaving the kernel's elements to their
# own timeouts; once the key reads again, the next start restores every grant.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_KEYS_EMFILE_FILE=$TMP/keys-emfile
e2e_default_setup drop
sign --src 192.0.2.2 --port 22 --for 300 --jti kept | submit - >/dev/null || fail "grant refused"
"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.3 --port 22 --for 300 --reason "break glass" \
	>/dev/null || fail "the local grant was refused"

log "key files cannot be opened"
touch "$JITD_TEST_KEYS_EMFILE_FILE"
rc=0
sign --src 192.0.2.4 --port 22 --for 300 | submit - >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "internal" "$TMP/out" && grep -q "cannot be read now" "$TMP/out" ||
	fail "a grant while the key cannot be read: exit $rc: $(cat "$TMP/out")"
lacks_elem allow4_addr "192.0.2.4 tcp 22" || fail "the refused grant is in the kernel"
pass "a new grant is refused as internal (retryable), not as an unknown key"

before=$(kernel_json | strip_expires)
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "internal" "$TMP/out" && grep -q "cannot be read now" "$TMP/out" ||
	fail "a reload while the key cannot be read: exit $rc: $(cat "$TMP/out")"
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "the refused reload changed the kernel"
status_json | jq -e '[.grants[].id] | length == 2 and any(.[]; . == "kept")' >/dev/null ||
	fail "grants after the refused reload: $(status_json | jq -c '[.grants[].id]')"
pass "a reload is refused as internal; both grants and the kernel unchanged"

log "a start while key files cannot be opened"
stop_jitd TERM
rc=0
ip netns exec "$SRV" timeout 30 "$JITD_BIN" -c "$CONFIG" >>"$TMP/jitd.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "jitd started (or died otherwise, status $rc) with its grants unreadable"
grep -q "cannot check recorded grant now: key 'ctl'" "$TMP/jitd.log" &&
	grep -q "cannot start enforcing: a recorded grant cannot be checked now" "$TMP/jitd.log" ||
	fail "the failed start does not say why: $(tail -n 5 "$TMP/jitd.log")"
has_elem allow4_addr "192.0.2.2 tcp 22" && has_elem allow4_addr "192.0.2.3 tcp 22" ||
	fail "the failed start took elements from the kernel: $(host_elems)"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
pass "the start fails (exit 1, said why); the kernel keeps the grants' elements"

log "the key reads again: the next start restores everything"
rm "$JITD_TEST_KEYS_EMFILE_FILE"
start_jitd
status_json | jq -e '([.grants[].id] | length == 2 and any(.[]; . == "kept")) and
	.kernel.in_sync' >/dev/null ||
	fail "after the start: $(status_json | jq -c '[.grants[].id], .kernel.in_sync')"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the signed grant's element is gone"
pass "both grants restored, the kernel in sync"
