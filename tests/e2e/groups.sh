# A group holds at most 256 grants. More verified at once (a test build holds verified grants
# back while $JITD_TEST_HOLD_FILE exists, so that all of them are ready together) are committed
# in several groups, oldest first: 260 make two, of 256 and 4. Every one is answered 201, in the
# kernel, audited once; a granted source connects, another does not. /metrics shows the group
# commit's queues while they wait. A grant verified, then held while its key is taken out of
# keys_dir and jitd reloads, is refused as unknown_key: the reload removed that key's grants.
. "$(dirname "$0")/lib.sh"

N=260
PER_REQUEST=52
export JITD_TEST_HOLD_FILE
JITD_TEST_HOLD_FILE=$TMP/hold
setup_net
setup_keys
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true, "rate_limit": 0}'
start_listeners 22
start_jitd

metric() { awk -v n="$1" '$1 == n { print $2 }' "$TMP/metrics"; }
read_metrics() {
	in_ns "$SRV" curl -sS --max-time 5 http://127.0.0.1:7080/metrics >"$TMP/metrics"
}
held_all() { read_metrics && [ "$(metric jitd_grants_waiting)" = "$N" ]; }

log "$N grants, $((N / PER_REQUEST)) batch requests sent at once, held once verified"
# 259 sources of their own, and C1's address last, for a real connection afterwards. Their
# durations (180 to 439 s) differ by at least 37 s from one grant to the next, so that a status
# that gave a grant another's time in the kernel shows it (below).
for ((i = 1; i < N; i++)); do
	sign --src "10.7.$((i / 200)).$((i % 200 + 1))" --port 22 --for $((180 + i * 37 % 260)) \
		--jti "group-$i"
done >"$TMP/tokens"
sign --src 192.0.2.2 --port 22 --for 300 --jti "group-$N" >>"$TMP/tokens"
[ "$(grep -c . "$TMP/tokens")" -eq "$N" ] || fail "signing failed"
read_metrics || fail "no metrics"
commits0=$(metric jitd_group_commits_total)
grants0=$(metric jitd_group_grants_total)

touch "$JITD_TEST_HOLD_FILE"
cat >"$TMP/batch.py" <<'PY'
import http.client, json, sys, threading
tokens, per = open(sys.argv[1]).read().split(), int(sys.argv[2])
out = [None] * len(tokens)
def post(first):
    c = http.client.HTTPConnection("127.0.0.1", 7080, timeout=60)
    c.request("POST", "/v1/grants/batch", json.dumps({"grants": tokens[first:first + per]}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    body = json.loads(r.read())
    for k, res in enumerate(body["results"]):
        out[first + k] = res["status"]
threads = [threading.Thread(target=post, args=(f,)) for f in range(0, len(tokens), per)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join(str(s) for s in out))
PY
ip netns exec "$SRV" python3 "$TMP/batch.py" "$TMP/tokens" "$PER_REQUEST" >"$TMP/statuses" 2>&1 &
CLIENT=$!
BG_PIDS+=("$CLIENT")
wait_until 60 "all $N verified and held (jitd_grants_waiting $N)" held_all
[ "$(metric jitd_grants_verifying)" = 0 ] && [ "$(metric jitd_group_commits_total)" = "$commits0" ] ||
	fail "while held: $(grep -E '^jitd_(grants_verifying|group_commits_total)' "$TMP/metrics")"
[ "$(allow_elems allow4_addr | grep -c .)" -eq 0 ] || fail "an element before any commit"
pass "/metrics while held: $N waiting, 0 verifying, no group committed, nothing in the kernel"

log "released"
rm -f "$JITD_TEST_HOLD_FILE"
wait "$CLIENT" || fail "batch client failed: $(cat "$TMP/statuses")"
[ "$(tr ' ' '\n' <"$TMP/statuses" | grep -cx 201)" -eq "$N" ] ||
	fail "not every grant applied: $(tr ' ' '\n' <"$TMP/statuses" | sort | uniq -c | tr '\n' ' ')"
pass "all $N answered 201"

read_metrics || fail "no metrics"
commits=$(($(metric jitd_group_commits_total) - commits0))
grants=$(($(metric jitd_group_grants_total) - grants0))
[ "$commits" -eq 2 ] && [ "$grants" -eq "$N" ] ||
	fail "$grants grants went through $commits groups, want $N through 2 (256 and 4)"
[ "$(metric jitd_grants_waiting)" = 0 ] && [ "$(metric jitd_grants_verifying)" = 0 ] ||
	fail "queues not empty: $(grep -E '^jitd_grants_(verifying|waiting)' "$TMP/metrics")"
pass "$N ready at once went through 2 groups (256 at most each); queues empty"

[ "$(allow_elems allow4_addr | grep -c .)" -eq "$N" ] ||
	fail "allow4_addr holds $(allow_elems allow4_addr | grep -c .) elements, want $N"
has_elem allow4_addr "10.7.0.2 tcp 22" && has_elem allow4_addr "10.7.1.60 tcp 22" &&
	has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the first, the 259th or the last grant is missing"
pass "the kernel holds all $N, one element each"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22

applied=$(jq -s '[.[] | select(.event == "grant.applied")] | length' "$TMP/state/audit.jsonl")
[ "$applied" -eq "$N" ] || fail "audit trail: $applied grant.applied records, want $N"
status_json | jq -e --argjson n "$N" '(.grants | length) == $n and .kernel.in_sync' >/dev/null ||
	fail "status: $(status_json | jq -c '{g: (.grants | length), k: .kernel}')"
pass "audited once each; status: $N grants, kernel in sync"

# Each grant's time in the kernel as the status reads it back, against the kernel's own listing
# of its source's element, read just before: within 3 s, and no grant left out of either.
kernel_json | jq -r '.nftables[] | select(.set? and (.set.name | startswith("allow4_addr")))
	| (.set.elem // [])[] | select(type == "object" and has("elem")) | .elem
	| "\(.val.concat[0]) \(.expires)"' | LC_ALL=C sort >"$TMP/witness"
status_json | jq -r '.grants[] | "\(.sources[0]) \(.kernel_expires_in) \(.expires_in)"' |
	LC_ALL=C sort >"$TMP/status_times"
LC_ALL=C join "$TMP/witness" "$TMP/status_times" | awk -v n="$N" '
	{ d = $3 - $2; e = $4 - $2 }
	$3 == "null" || d > 3 || d < -3 || e > 3 || e < -3 { bad++; if (bad < 4) print "  " $0 }
	END { exit !(NR == n && !bad) }' ||
	fail "kernel_expires_in and expires_in against nft's expires (source nft status expires_in)"
pass "status: each of the $N grants' kernel_expires_in within 3 s of its element's in nft -j"

log "a grant verified with a key that a reload takes away before its group commits"
"$JITCTL_BIN" keygen --kid ctl2 --dir "$TMP/signer" >/dev/null
install -m 0644 "$TMP/signer/ctl2.pem" "$TMP/keys.d/ctl2.pem"
sign --key "$TMP/signer/ctl2.key" --kid ctl2 --src 192.0.2.3 --port 22 --for 300 \
	--jti by-ctl2 >"$TMP/ctl2.jws" || fail "signing with ctl2"
touch "$JITD_TEST_HOLD_FILE"
rc_file=$TMP/ctl2.rc
(
	rc=0
	submit "$TMP/ctl2.jws" --json >"$TMP/ctl2.out" 2>&1 || rc=$?
	echo "$rc" >"$rc_file"
) &
BG_PIDS+=($!)
held_one() { read_metrics && [ "$(metric jitd_grants_waiting)" = 1 ]; }
wait_until 10 "ctl2's grant verified and held" held_one
rm "$TMP/keys.d/ctl2.pem"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
rm -f "$JITD_TEST_HOLD_FILE"
wait_until 10 "the held grant answered" test -s "$rc_file"
[ "$(cat "$rc_file")" = 1 ] && [ "$(jq -r .error "$TMP/ctl2.out")" = unknown_key ] ||
	fail "the held grant of a removed key: exit $(cat "$rc_file"): $(cat "$TMP/ctl2.out")"
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the removed key's grant is in the kernel"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
jq -s -e 'any(.[]; .event == "grant.refused" and .grant == "by-ctl2" and .code == "unknown_key")' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the refusal of by-ctl2 is not audited"
pass "refused: $(jq -r .message "$TMP/ctl2.out")"

log "grants held when jitd stops: refused, each audited as what it is"
# One verified (a trusted key's: named in its record), one its key signed for another host (its
# own verdict kept, not a bare internal error).
sign --src 192.0.2.4 --port 22 --for 300 --jti held-at-stop >"$TMP/stop1.jws"
sign --src 192.0.2.5 --port 22 --for 300 --jti held-other-host --aud other-host >"$TMP/stop2.jws"
touch "$JITD_TEST_HOLD_FILE"
for k in 1 2; do
	(
		rc=0
		submit "$TMP/stop$k.jws" --json >"$TMP/stop$k.out" 2>&1 || rc=$?
		echo "$rc" >"$TMP/stop$k.rc"
	) &
	BG_PIDS+=($!)
done
held_two() { read_metrics && [ "$(metric jitd_grants_waiting)" = 2 ]; }
wait_until 10 "both held" held_two
stop_jitd TERM
rm -f "$JITD_TEST_HOLD_FILE"
wait_until 10 "both answered" test -s "$TMP/stop1.rc" -a -s "$TMP/stop2.rc"
# The stop closes the control connections: the clients may hear nothing, but nothing applied.
[ "$(cat "$TMP/stop1.rc")" != 0 ] && [ "$(cat "$TMP/stop2.rc")" != 0 ] ||
	fail "held at the stop: $(cat "$TMP/stop1.out" "$TMP/stop2.out")"
jq -s -e '[.[] | select(.event == "grant.refused") | {grant, code}] |
	any(. == {"grant": "held-at-stop", "code": "internal"}) and
	any(. == {"grant": null, "code": "wrong_audience"})' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the refusals at the stop: $(jq -c \
	'select(.event == "grant.refused") | {grant, code, peer}' "$TMP/state/audit.jsonl")"
pass "the verified grant refused by name (internal), the other with its own verdict"
