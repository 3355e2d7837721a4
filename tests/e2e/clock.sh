# Wall-clock steps. Grants already applied keep their time: a step forward does not end them, a
# step back does not lengthen them, not even when a repair re-adds their elements, and a
# revocation after a step still removes the grant's element. New grants are judged by the clock
# as it is (with clock_skew). A restart with the clock stepped back restores a grant with no
# more time than the kernel kept; a boot with the clock behind its iat does not restore it (nor
# a local grant). A test build (-DJITD_TEST_HOOKS=ON) lets the test step jitd's wall clock alone
# ($JITD_TEST_CLOCK_STEP_FILE, taken at the start too); the host's clock is not touched.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_CLOCK_STEP_FILE
JITD_TEST_CLOCK_STEP_FILE=$TMP/step
# No periodic check: its read of the kernel moves the step baseline, which the steps below count.
e2e_default_setup drop '"reconcile_interval": "PT1H"'
sign --src 192.0.2.2 --port 22 --for 300 --jti before | submit - >/dev/null || fail "grant refused"
step() {
	echo "$1" >"$JITD_TEST_CLOCK_STEP_FILE"
	wait_until 5 "jitd took the clock step" test ! -e "$JITD_TEST_CLOCK_STEP_FILE"
}
# still_granted: the element is there with about the time the grant had (300 s minus elapsed).
still_granted() {
	local left g
	has_elem allow4_addr "192.0.2.2 tcp 22" || fail "$1: the grant's element is gone"
	left=$(elem_expires allow4_addr 192.0.2.2)
	[ "$left" -le 300 ] && [ "$left" -ge 270 ] || fail "$1: the element has $left s left"
	expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
	status_json >"$TMP/status"
	jq -e '[.grants[].id] == ["before"]' "$TMP/status" >/dev/null ||
		fail "$1: grant not active: $(jq -c .grants "$TMP/status")"
	# Status tells the grant's own time too, not exp less the stepped clock (0 s or 1300 s).
	g=$(jq -c '.grants[0] | [.expires_at, .expires_in]' "$TMP/status")
	jq -e --argjson k "$left" '.grants[0] | .expires_in <= $k + 2 and .expires_in >= $k - 2' \
		"$TMP/status" >/dev/null || fail "$1: status says $g, the kernel $left s"
	jq -e '(.grants[0].expires_at | fromdate) - (.time | fromdate) - .grants[0].expires_in |
		fabs <= 1' "$TMP/status" >/dev/null ||
		fail "$1: status says $g at $(jq -c .time "$TMP/status")"
	pass "$1: the grant keeps its element and time ($left s; status $g)"
}
# refused CODE...: a grant signed now is refused with one of the codes.
refused() {
	local rc=0 code
	sign --src 192.0.2.3 --port 22 --for 120 | submit - --json >"$TMP/out" 2>&1 || rc=$?
	code=$(jq -r .error "$TMP/out" 2>/dev/null || true)
	for want in "$@"; do
		[ "$rc" -eq 1 ] && [ "$code" = "$want" ] && return 0
	done
	fail "a grant signed now: exit $rc, $(cat "$TMP/out"); wanted one of $*"
}

log "wall clock 1000 s forward"
step 1000000
sleep 1.5
still_granted "after a 1000 s step forward"
refused expired
pass "a grant signed now is judged by jitd's clock: expired"

log "wall clock 2000 s back (1000 s behind)"
step -2000000
sleep 1.5
still_granted "after a 2000 s step back"
# Uptime is monotonic: by the wall clock it would be some 1000 s below zero now.
status_json | jq -e '.agent.uptime >= 0 and .agent.uptime < 600' >/dev/null ||
	fail "uptime after the step back: $(status_json | jq .agent.uptime)"
pass "uptime after the step back: $(status_json | jq .agent.uptime) s"
# A stray element makes jitd repair the allow set, re-adding granted elements if needed: the
# clock must not give the grant more time in the process.
in_ns "$SRV" nft add element inet jitd allow4_addr_4 '{ 192.0.2.4 . tcp . 22 timeout 1h }'
wait_until 5 "the stray element removed" lacks_elem allow4_addr "192.0.2.4 tcp 22"
still_granted "after a repair with the clock 1000 s behind"
# The reload judges what the grant still holds, not exp less a clock 1000 s behind (some 1270 s,
# beyond the port's 10 minutes).
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
still_granted "after a reload with the clock 1000 s behind"
refused not_yet_valid duration_exceeds_max
pass "a grant signed now is judged by jitd's clock: refused"

log "clock back to true time"
step 1000000
sign --src 192.0.2.3 --port 22 --for 120 --jti fresh | submit - >/dev/null ||
	fail "a fresh grant is refused"
"$JITCTL_BIN" -s "$SOCK" revoke fresh >/dev/null || fail "revoking the fresh grant failed"
pass "with the clock right again a fresh grant applies"

log "wall clock 1000 s forward, then a grant revoked"
# Over IPv6, the only element of its kind: none of the other grants' is planned beside it.
# Its element has 120 s left in the kernel, which the step does not change: the revocation
# must still find it and delete it.
sign --src 2001:db8:1::2 --port 22 --for 120 --jti fresh6 | submit - >/dev/null ||
	fail "the IPv6 grant is refused"
has_elem allow6_addr "2001:db8:1::2 tcp 22" || fail "the IPv6 grant is not in the kernel"
logged=$(grep -c "wall clock stepped +1000 s" "$TMP/jitd.log" || true)
step 1000000
sleep 1.5
"$JITCTL_BIN" -s "$SOCK" revoke fresh6 >/dev/null || fail "revoking the IPv6 grant failed"
lacks_elem allow6_addr "2001:db8:1::2 tcp 22" ||
	fail "the revoked grant's element is still in the kernel: $(host_elems)"
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
[ "$(grep -c "wall clock stepped +1000 s" "$TMP/jitd.log")" -gt "$logged" ] ||
	fail "the step is not logged"
pass "a revocation after a step forward removes the grant's element"

log "two steps forward, each under the 2 s jitd reads the kernel again for"
# Each alone is let pass; together (3 s) they are a step the model must be read again for.
logged=$(grep -c "wall clock stepped" "$TMP/jitd.log" || true)
step 1500
sleep 1.5
[ "$(grep -c "wall clock stepped" "$TMP/jitd.log")" -eq "$logged" ] ||
	fail "a 1.5 s step alone made jitd read the kernel again: $(tail -n 3 "$TMP/jitd.log")"
step 1500
wait_until 5 "the two steps taken together" grep -q "wall clock stepped +3 s" "$TMP/jitd.log"
pass "two 1.5 s steps add up to a 3 s step: the kernel read again"
# A re-read for another reason (a reload's) takes the model's ends from the clock as it is then:
# steps count from there. -1.5, a reload, +1.5, +1.3: 2.8 s from the reload's read (the
# model's ends 2.8 s early), though only 1.3 from the read before it. (2.8, not 2.5: logged
# rounded to whole seconds, a millisecond either way must not make it "+2 s".)
logged=$(grep -c "wall clock stepped +3 s" "$TMP/jitd.log")
step -1500
sleep 1.5
"$JITCTL_BIN" -s "$SOCK" reload >/dev/null || fail "reload failed"
step 1500
sleep 1.5
step 1300
stepped_3s() { [ "$(grep -c "wall clock stepped +3 s" "$TMP/jitd.log")" -gt "$logged" ]; }
wait_until 5 "the steps since the reload's read taken together" stepped_3s
pass "steps count from the last read of the kernel, a reload's too"

log "the endpoint's rate limit after a step back"
# Buckets refill by the monotonic clock: by the wall clock, a step back would leave a bucket
# spent before it without a token until the wall clock came round again (here 1000 s).
stop_jitd TERM
write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M"}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true, "rate_limit": 1}'
start_jitd
# For the restart below: a narrow, longer grant splits a wide one's range, so that no element
# covers the wide one whole; signed now, while the clock is right.
sign --src 198.18.0.0/29 --port 22 --for 200 --jti wide | submit - >/dev/null || fail "refused"
sign --src 198.18.0.0/30 --port 22 --for 300 --jti narrow | submit - >/dev/null || fail "refused"
[ "$(allow_elems allow4)" = "198.18.0.0/30 tcp 22
198.18.0.4/30 tcp 22" ] || fail "the wide range is not split: $(allow_elems allow4)"
metrics() {
	in_ns "$SRV" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
		http://127.0.0.1:7080/metrics
}
codes=$(metrics),$(metrics),$(metrics)
[ "$codes" = 200,200,429 ] || fail "rate_limit 1 (burst 2) before the step: $codes"
step -1000000
sleep 1.2
code=$(metrics)
[ "$code" = 200 ] || fail "1.2 s after a step back, the spent client got $code"
pass "the rate limit refills across a step back: 200,200,429, then 200 1.2 s later"

log "a restart with the wall clock stepped back to the grant's iat: it keeps the kernel's time"
# Stepped back while jitd was stopped, or not yet set at the start, but not behind the grant's
# iat (less clock_skew): exp less that clock would give it the step's seconds more than its
# element has left, and the restore would re-add the element with them. The kernel kept it (a
# restart, not a boot): its time is the grant's. The step is to the latest grant's iat, and at
# least 8 s; the wide grant's range is split, its end bounded by its own piece.
iat=$(status_json | jq '[.grants[].issued_at | fromdate] | max')
back=$(($(date +%s) - iat - 1))
if [ "$back" -lt 8 ]; then
	sleep $((9 - back))
	back=$(($(date +%s) - iat - 1))
fi
before=$(elem_expires allow4_addr 192.0.2.2)
wide=$(elem_expires allow4 198.18.0.4/30)
stop_jitd TERM
echo "-$((back * 1000))" >"$JITD_TEST_CLOCK_STEP_FILE"
start_jitd
[ ! -e "$JITD_TEST_CLOCK_STEP_FILE" ] || fail "the start did not take the clock step"
has_elem allow4_addr "192.0.2.2 tcp 22" ||
	fail "the grant was not restored: $(grep "jti=before" "$TMP/jitd.log" | tail -n 1)"
left=$(elem_expires allow4_addr 192.0.2.2)
[ "$left" -le "$before" ] || fail "the restored element has $left s, the kernel had $before"
status_json | jq -e --argjson k "$left" '[.grants[] | select(.id == "before") |
	.expires_in <= $k + 2] == [true]' >/dev/null ||
	fail "status after the restart: $(status_json | jq -c '[.grants[] | [.id, .expires_in]]')"
pass "restored with the kernel's $left s (it had $before), not $back s more; status agrees"
left=$(elem_expires allow4 198.18.0.4/30)
[ -n "$left" ] && [ "$left" -le "$wide" ] ||
	fail "the wide grant's own piece has ${left:-no} s after the restart, the kernel had $wide"
pass "the wide grant, split by the narrow one, restored with its piece's $left s ($wide before)"
for g in wide narrow; do
	"$JITCTL_BIN" -s "$SOCK" revoke "$g" >/dev/null || fail "revoking $g failed"
done
# A local grant (jitctl grant) too, judged at the boot below as the signed one is.
"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.5 --port 22 --for 300 --reason clock \
	>"$TMP/out" 2>&1 || fail "jitctl grant: $(cat "$TMP/out")"
has_elem allow4_addr "192.0.2.5 tcp 22" || fail "the local grant is not in the kernel"

log "a boot with the clock 100 s behind the grants' iat: not restored, nothing opens"
# Its time cannot be known (the clock may be days behind, the grant long over): refused as not
# yet valid, as a token from outside would be, and its element is not put back.
stop_jitd TERM
in_ns "$SRV" nft delete table inet jitd
echo -100000 >"$JITD_TEST_CLOCK_STEP_FILE"
start_jitd
[ "$(grep -c "not restored: claim 'iat'" "$TMP/jitd.log")" = 2 ] ||
	fail "the refusals: $(grep "not restored" "$TMP/jitd.log")"
no_allow_elems || fail "an element after the boot: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 22
pass "both refused as not yet valid (the local one too), no element, port 22 closed"
