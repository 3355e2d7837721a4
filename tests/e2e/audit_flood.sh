# A flood of input no trusted key signed cannot rotate genuine records out of the audit trail:
# beyond audit.unverified_per_minute in a window (a minute; here 20 s, through
# $JITD_TEST_REFUSALS_WINDOW_FILE) such refusals are counted, not audited one by one, and each
# count becomes one record (its event, code, count, the source that surely sent the most and each
# source's count) when the window ends, or
# when jitd stops; revocations are counted apart. Each is still answered with its error and
# counted in the metrics, and refusals of signed grants (one for another host names no grant,
# since its claims were refused) are audited one by one whatever the count.
. "$(dirname "$0")/lib.sh"

export JITD_TEST_REFUSALS_WINDOW_FILE=$TMP/window
echo 20000 >"$JITD_TEST_REFUSALS_WINDOW_FILE"
setup_net
setup_keys
# A key the agent does not trust, signing as ctl: bad_signature.
mkdir -p "$TMP/forger"
"$JITCTL_BIN" keygen --kid forger --dir "$TMP/forger" >/dev/null
ports='[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
listen='"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true, "rate_limit": 0}'
write_config drop '[]' "$ports" "$listen, \"audit\": {\"unverified_per_minute\": 5}"
start_listeners 22
start_jitd
AUDIT=$TMP/state/audit.jsonl

# post FILE WANT_STATUS WANT_CODE [FROM]: a grant posted to the controller endpoint (from the
# loopback address FROM, 127.0.0.1 by default), answered so.
post() {
	local code
	code=$(in_ns "$SRV" curl -sS --max-time 10 -o "$TMP/body" -w '%{http_code}' \
		--interface "${4:-127.0.0.1}" \
		-H 'Content-Type: application/jwt' --data-binary "@$1" http://127.0.0.1:7080/v1/grants)
	[ "$code" = "$2" ] && [ "$(jq -r .error "$TMP/body")" = "$3" ] ||
		fail "$1: HTTP $code $(cat "$TMP/body"), not $2 $3"
}
# refusals JQ_FILTER: how many grant.refused records of the trail pass the filter.
refusals() { jq -s "[.[] | select(.event == \"grant.refused\") | select($1)] | length" "$AUDIT"; }

before=$(kernel_json)
log "a flood: 12 malformed grants and 6 forged ones (4 of them from 127.0.0.2)"
printf 'not a token' >"$TMP/junk"
"$JITCTL_BIN" sign --key "$TMP/forger/forger.key" --kid ctl --aud "$HOST_ID" --sub mallory \
	--src 192.0.2.2 --port 22 --for 300 --jti forged >"$TMP/forged"
for ((i = 0; i < 12; i++)); do post "$TMP/junk" 400 malformed; done
for ((i = 0; i < 6; i++)); do
	post "$TMP/forged" 401 bad_signature "$([ "$i" -lt 2 ] && echo 127.0.0.1 || echo 127.0.0.2)"
done
pass "each answered with its error"
[ "$(kernel_json)" = "$before" ] || fail "the flood changed the kernel"
n=$(refusals '.count == null')
[ "$n" = 5 ] || fail "$n refusals audited one by one, not 5 (audit.unverified_per_minute)"
pass "the first 5 audited one by one, the rest counted"

log "signed grants are audited one by one whatever the count"
for p in 23 24; do
	sign --src 192.0.2.2 --port "$p" --for 300 --jti "other-$p" >"$TMP/g$p"
	post "$TMP/g$p" 403 port_not_protected
done
# Signed, for another host: refused after the signature held.
"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud other-host --sub alice \
	--src 192.0.2.2 --port 22 --for 300 --jti elsewhere >"$TMP/elsewhere" ||
	fail "cannot sign the grant for another host"
post "$TMP/elsewhere" 403 wrong_audience
sign --src 192.0.2.2 --port 22 --for 300 --jti good >"$TMP/good"
code=$(in_ns "$SRV" curl -sS --max-time 10 -o "$TMP/body" -w '%{http_code}' \
	-H 'Content-Type: application/jwt' --data-binary "@$TMP/good" http://127.0.0.1:7080/v1/grants)
[ "$code" = 201 ] || fail "the good grant: HTTP $code $(cat "$TMP/body")"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the good grant is not in the kernel"
n=$(refusals '.grant == "other-23" or .grant == "other-24" or
	(.code == "wrong_audience" and .count == null)')
[ "$n" = 3 ] || fail "$n of the 3 signed refusals audited"
jq -s -e 'any(.[]; .event == "grant.applied" and .grant == "good")' "$AUDIT" >/dev/null ||
	fail "the applied grant is not audited"
pass "the 3 refusals of signed grants and the applied grant audited"

in_ns "$SRV" curl -sS --max-time 5 http://127.0.0.1:7080/metrics >"$TMP/metrics" ||
	fail "cannot read /metrics"
grep -qx 'jitd_grants_refused_total{code="malformed"} 12' "$TMP/metrics" &&
	grep -qx 'jitd_grants_refused_total{code="bad_signature"} 6' "$TMP/metrics" ||
	fail "metrics: $(grep '^jitd_grants_refused_total' "$TMP/metrics")"
pass "the metrics count every refusal"

log "when the window ends, each count is one record"
counted_records() { [ "$(refusals '.count != null')" = "$1" ]; }
wait_until 40 "the counted refusals' records" counted_records 2
jq -s -e '[.[] | select(.event == "grant.refused" and .count != null) |
	{code, count, peer}] == [
	{"code": "malformed", "count": 7, "peer": "http 127.0.0.1"},
	{"code": "bad_signature", "count": 6, "peer": "http 127.0.0.2"}]' "$AUDIT" >/dev/null ||
	fail "counted: $(jq -c 'select(.count != null)' "$AUDIT")"
# The record's peer is the source that sent the most; the message counts each source's.
jq -s -e '[.[] | select(.event == "grant.refused" and .count != null) | .message |
	test("; 7 from http 127[.]0[.]0[.]1$"), test("; 4 from http 127[.]0[.]0[.]2, 2 from http 127[.]0[.]0[.]1$")]
	== [true, false, false, true]' "$AUDIT" >/dev/null ||
	fail "counted, by source: $(jq -c 'select(.count != null) | .message' "$AUDIT")"
pass "counted: $(jq -c 'select(.count != null) | [.code, .count, .message]' "$AUDIT" | head -1)"

log "a new window, a new allowance; jitd's stop writes what it counted"
for ((i = 0; i < 8; i++)); do post "$TMP/junk" 400 malformed; done
for ((i = 0; i < 2; i++)); do
	code=$(in_ns "$SRV" curl -sS --max-time 10 -o "$TMP/body" -w '%{http_code}' \
		-H 'Content-Type: application/jwt' --data-binary "@$TMP/junk" \
		http://127.0.0.1:7080/v1/revocations)
	[ "$code" = 400 ] || fail "a junk revocation: HTTP $code $(cat "$TMP/body")"
done
n=$(refusals '.count == null')
[ "$n" = $((5 + 3 + 5)) ] || fail "$n refusals audited one by one, not 13"
stop_jitd
jq -s -e '[.[] | select(.event == "grant.refused" and .count != null) | .count] == [7, 6, 3]' \
	"$AUDIT" >/dev/null || fail "after the stop: $(jq -c 'select(.count != null)' "$AUDIT")"
jq -s -e '[.[] | select(.event == "revocation.refused")] == [.[] |
	select(.event == "revocation.refused" and .count == 2 and .code == "malformed")]' \
	"$AUDIT" >/dev/null || fail "revocations: $(jq -c 'select(.event == "revocation.refused")' "$AUDIT")"
pass "the 3 grants and 2 revocations counted at the stop are one record each"
tail -n 1 "$AUDIT" | jq -e '.event == "agent.stopped"' >/dev/null ||
	fail "the stop's last record is not agent.stopped: $(tail -n 2 "$AUDIT")"
pass "agent.stopped is the trail's last record, after the counts the stop wrote"
