# A revocation that arrives before its grant wins, also for a grant scheduled days ahead (nbf):
# the grant id is burned for a day (the longest any port allows) or until the revocation's own
# exp when that is later. A test build steps jitd's wall clock two days on
# ($JITD_TEST_CLOCK_STEP_FILE); the host's clock is not touched. Then the revoked grant is
# refused (replay) while another grant scheduled the same way applies. When the replay cache
# is too full to remember the revoked id, the revocation is refused as busy (503), not
# answered 404 as if the id would be refused, and the same token is taken once there is room.
. "$(dirname "$0")/lib.sh"

# configure MAX_GRANTS REPLAY_CACHE_MAX: port 22 for an hour, the endpoint on loopback.
configure() {
	local port='{"port": 22, "protocol": "tcp", "max_duration": "PT1H",'
	port+=' "allowed_sources": ["*"]}'
	write_config drop '[]' "[$port]" \
		'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true},
		"limits": {"max_grants": '"$1"'}, "replay_cache_max": '"$2"
}
# restart_with MAX_GRANTS REPLAY_CACHE_MAX: jitd again with an empty state directory.
restart_with() {
	stop_jitd
	rm -rf "${TMP:?}/state"
	mkdir -p -m 0700 "$TMP/state"
	configure "$1" "$2"
	start_jitd
}

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
restart_with 1 2
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

log "a revocation of an active grant with the replay cache full"
restart_with 1 1
# The cache's one place: this grant's id, for 300 s and the skew.
sign --src 192.0.2.2 --port 22 --for 300 --jti full >"$TMP/full"
code=$(post_jwt /v1/grants "$TMP/full")
[ "$code" = 201 ] && has_elem allow4_addr "192.0.2.2 tcp 22" ||
	fail "the grant that fills the cache: $code $(cat "$TMP/body")"
"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --revokes full \
	--for PT10M --jti rv-full >"$TMP/rv-full"
code=$(post_jwt /v1/revocations "$TMP/rv-full")
[ "$code" = 200 ] ||
	fail "the revocation of the active grant, the cache full: $code $(cat "$TMP/body")"
lacks_elem allow4_addr "192.0.2.2 tcp 22" || fail "the revoked grant is still in the kernel"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
grep -qF "replay: revocation 'rv-full' applied, its id not remembered: the replay cache is full" \
	"$TMP/jitd.log" || fail "jitd does not log the unremembered id"
pass "a full cache does not keep an active grant's access: 200, the element gone"

log "revocations signed far ahead hold at most a quarter of the replay cache"
restart_with 1 8
# far N FOR: a revocation of grant far-N, its exp FOR on; posted, its code in $code.
far() {
	"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" \
		--revokes "far-$1" --for "$2" --jti "rv-far-$1" >"$TMP/rv-far-$1"
	code=$(post_jwt /v1/revocations "$TMP/rv-far-$1")
}
# Two of the cache's eight places may be held beyond a day: far-1's and far-2's ids.
for n in 1 2; do
	far "$n" P300D
	[ "$code" = 404 ] || fail "early revocation $n, 300 days ahead: $code $(cat "$TMP/body")"
done
# A reload that raises replay_cache_max waits for a restart: so does the quarter.
configure 1 800
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
far 3 P300D
[ "$code" = 503 ] &&
	jq -e '.error == "busy" and (.message | test("places the replay cache keeps"))' \
	"$TMP/body" >/dev/null || fail "a third revocation 300 days ahead: $code $(cat "$TMP/body")"
pass "a third revocation 300 days ahead: 503 busy, $(jq -r .message "$TMP/body")"
# Another revocation of far-1, held less long than far-1 already is: no new place, taken.
"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --revokes far-1 \
	--for P200D --jti rv-far-1-again >"$TMP/rv-far-1-again"
code=$(post_jwt /v1/revocations "$TMP/rv-far-1-again")
[ "$code" = 404 ] ||
	fail "another revocation of far-1, the quarter full: $code $(cat "$TMP/body")"
pass "another revocation of an id already held as long: 404, the quarter full or not"
far 4 PT10M
[ "$code" = 404 ] ||
	fail "an early revocation within the day, the quarter full: $code $(cat "$TMP/body")"
sign --src 192.0.2.2 --port 22 --for 300 --jti after-far >"$TMP/after-far"
code=$(post_jwt /v1/grants "$TMP/after-far")
[ "$code" = 201 ] && has_elem allow4_addr "192.0.2.2 tcp 22" ||
	fail "a grant after the far revocations: $code $(cat "$TMP/body")"
pass "a revocation within the day and a grant still find room: 404, 201"

log "a replay cache no larger than limits.max_grants keeps no place beyond a day"
restart_with 4 4
far 5 P300D
[ "$code" = 503 ] && jq -e '.error == "busy" and (.message | test("keeps no place"))' \
	"$TMP/body" >/dev/null ||
	fail "a revocation 300 days ahead, no place: $code $(cat "$TMP/body")"
far 6 PT10M
[ "$code" = 404 ] || fail "a revocation within the day, no far place: $code $(cat "$TMP/body")"
pass "there, one 300 days ahead is 503 saying so, one within the day 404"
