# A revocation that arrives before its grant wins, also for a grant scheduled days ahead (nbf):
# the grant id is burned for a day (the longest any port allows) or until the revocation's own
# exp when that is later. A test build steps jitd's wall clock two days on
# ($JITD_TEST_CLOCK_STEP_FILE); the host's clock is not touched. Then the revoked grant is
# refused (replay) while another grant scheduled the same way applies. When the replay cache
# is too full to remember the revoked id, the revocation is refused as busy (503), not
# answered 404 as if the id would be refused, and the same token is taken once there is room.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_CLOCK_STEP_FILE
JITD_TEST_CLOCK_STEP_FILE=$TMP/step
setup_net
setup_keys
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT1H", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
start_jitd

log "two grants valid in two days for 30 minutes; one revoked before either arrives"
sign --src 192.0.2.2 --port 22 --not-before P2D --for P2DT30M --jti sched-1 >"$TMP/g1"
sign --src 192.0.2.3 --port 22 --not-before P2D --for P2DT30M --jti sched-2 >"$TMP/g2"
"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --revokes sched-1 \
	--for P3D --jti rv-sched-1 >"$TMP/rv"
code=$(post_jwt /v1/revocations "$TMP/rv")
[ "$code" = 404 ] && jq -e '.message | test("refused if it arrives")' "$TMP/body" >/dev/null ||
	fail "the early revocation: $code $(cat "$TMP/body")"
pass "early revocation: 404, $(jq -r .message "$TMP/body")"

log "two days later (jitd's clock stepped)"
echo $((2 * 86400 * 1000 + 60 * 1000)) >"$JITD_TEST_CLOCK_STEP_FILE"
wait_until 5 "jitd took the clock step" test ! -e "$JITD_TEST_CLOCK_STEP_FILE"
code=$(post_jwt /v1/grants "$TMP/g2")
[ "$code" = 201 ] || fail "the grant nobody revoked, two days on: $code $(cat "$TMP/body")"
pass "the grant nobody revoked applies two days on"
code=$(post_jwt /v1/grants "$TMP/g1")
[ "$code" = 409 ] && jq -e '.error == "replay"' "$TMP/body" >/dev/null ||
	fail "the revoked grant, two days on: $code $(cat "$TMP/body")"
lacks_elem allow4_addr "192.0.2.2 tcp 22" || fail "the revoked grant is in the kernel"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
pass "the revoked grant is refused two days on: $(jq -r .message "$TMP/body")"

log "an early revocation whose id the full replay cache cannot remember"
stop_jitd
rm -rf "${TMP:?}/state"
mkdir -p -m 0700 "$TMP/state"
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT1H", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true},
	"limits": {"max_grants": 1}, "replay_cache_max": 2'
start_jitd
# The cache's two places: this grant's id (until its exp and the 5 s skew), the revocation's.
# 3 s: exp is whole seconds and a grant needs 1 s left, so 2 s could leave it less than that.
sign --src 192.0.2.3 --port 22 --for 3 --jti short >"$TMP/short"
code=$(post_jwt /v1/grants "$TMP/short")
[ "$code" = 201 ] || fail "the short grant: $code $(cat "$TMP/body")"
"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --revokes later \
	--for PT10M --jti rv-later >"$TMP/rv-later"
code=$(post_jwt /v1/revocations "$TMP/rv-later")
[ "$code" = 503 ] && jq -e '.error == "busy" and (.message | test("cannot be remembered"))' \
	"$TMP/body" >/dev/null || fail "the revocation with the cache full: $code $(cat "$TMP/body")"
pass "refused 503 busy: $(jq -r .message "$TMP/body")"
taken() { [ "$(post_jwt /v1/revocations "$TMP/rv-later")" = 404 ]; }
wait_until 20 "the same revocation taken once the short grant's id expired" taken
jq -e '.message | test("refused if it arrives")' "$TMP/body" >/dev/null ||
	fail "the retried revocation: $(cat "$TMP/body")"
pass "the same token, retried once there is room: 404, $(jq -r .message "$TMP/body")"
sign --src 192.0.2.2 --port 22 --for 300 --jti later >"$TMP/later"
code=$(post_jwt /v1/grants "$TMP/later")
[ "$code" = 409 ] && jq -e '.error == "replay"' "$TMP/body" >/dev/null ||
	fail "the revoked grant after the retried revocation: $code $(cat "$TMP/body")"
lacks_elem allow4_addr "192.0.2.2 tcp 22" || fail "the revoked grant is in the kernel"
pass "the grant it revoked is refused when it arrives"
