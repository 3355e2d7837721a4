# Lose nothing, open nothing: jitd is SIGKILLed while a controller streams grants at it. After
# the restart every grant that was acknowledged is active and in the kernel, the kernel holds
# no element without a grant, and the grants that were in flight are either active or can be
# submitted again (never refused as "replay" while not active: their ids were not burned).
. "$(dirname "$0")/lib.sh"

N=120
e2e_default_setup drop
mkdir -p "$TMP/tok"
for ((i = 1; i <= N; i++)); do
	sign --src "203.0.113.$i" --port 22 --for 300 --jti "stream-$i" >"$TMP/tok/$i"
done
pass "$N grants signed"

# The controller: submits one after the other, records what was acknowledged, stops at the
# first failure (the agent is gone).
cat >"$TMP/stream.sh" <<'SH'
for ((i = 1; i <= $1; i++)); do
	"$JITCTL_BIN" -s "$2" submit "$3/tok/$i" >/dev/null 2>&1 || exit 0
	echo "stream-$i" >>"$3/acked"
done
SH
: >"$TMP/acked"
bash "$TMP/stream.sh" "$N" "$SOCK" "$TMP" &
BG_PIDS+=($!)
streamer=$!
acked() { [ "$(wc -l <"$TMP/acked")" -ge "$1" ]; }
wait_until 60 "30 grants acknowledged" acked 30
stop_jitd KILL
wait "$streamer" || true
n_acked=$(wc -l <"$TMP/acked")
[ "$n_acked" -lt "$N" ] || fail "the stream finished before the kill; nothing was tested"
pass "jitd killed (SIGKILL) with $n_acked of $N grants acknowledged"

start_jitd
status_json >"$TMP/status"
while read -r id; do
	jq -e --arg id "$id" 'any(.grants[]; .id == $id)' "$TMP/status" >/dev/null ||
		fail "acknowledged grant $id lost in the crash"
done <"$TMP/acked"
pass "every acknowledged grant is active after the restart"
# A range may cover several sources: compare addresses, not lines.
addresses() {
	python3 -c '
import ipaddress, sys
out = set()
for tok in sys.stdin.read().split():
    if "-" in tok:
        lo, hi = (int(ipaddress.ip_address(x)) for x in tok.split("-"))
        out.update(str(ipaddress.ip_address(v)) for v in range(lo, hi + 1))
    else:
        out.update(str(a) for a in ipaddress.ip_network(tok))
print("\n".join(sorted(out)))'
}
granted=$(jq -r '.grants[] | .sources[]' "$TMP/status" | addresses)
kernel=$(host_elems | awk '{print $2}' | addresses)
[ "$granted" = "$kernel" ] ||
	fail "kernel and grants differ: $(diff <(echo "$granted") <(echo "$kernel") | head -8 | tr "\n" " ")"
pass "the kernel covers exactly the active grants' sources ($(echo "$kernel" | wc -l)), nothing else"

# The rest, as a controller would retry them: applied, or already active; never a burned id.
for ((i = n_acked + 1; i <= N; i++)); do
	rc=0
	"$JITCTL_BIN" -s "$SOCK" submit "$TMP/tok/$i" --json >"$TMP/out" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ]; then
		code=$(jq -r .error "$TMP/out" 2>/dev/null || true)
		[ "$code" = replay ] || [ "$code" = duplicate ] || fail "retry of stream-$i: $(cat "$TMP/out")"
		status_json | jq -e --arg id "stream-$i" 'any(.grants[]; .id == $id)' >/dev/null ||
			fail "stream-$i refused as $code but not active: its id was burned"
	fi
done
pass "grants in flight at the kill are applied on retry or already active"
[ "$(status_json | jq '.grants | length')" = "$N" ] || fail "not all $N grants active in the end"
[ "$(host_elems | awk '{print $2}' | addresses | wc -l)" = "$N" ] ||
	fail "the kernel does not cover $N sources"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
pass "all $N grants active, the kernel holds exactly them, other sources stay closed"

# The audit trail after the crash: every acknowledged grant's grant.applied line once, none
# twice (the start checks the lines the journal carried, and must not append them again).
trail="$TMP/state/audit.jsonl"
# Line by line: a power cut can leave a torn line, which the count must step over.
applied_count() {
	jq -R -r --arg id "$1" 'fromjson? | select(.event == "grant.applied" and .grant == $id) |
		.grant' "$trail" | wc -l
}
while read -r id; do
	[ "$(applied_count "$id")" = 1 ] || fail "grant.applied of $id is in the trail $(applied_count "$id") times"
done <"$TMP/acked"
pass "each acknowledged grant's grant.applied line is in the audit trail once"

# A power cut: a grant is answered once its journal record is durable, which carries its audit
# line too; the trail's own fdatasync follows about 0.1 s later. The cut takes the trail's unsynced
# tail and leaves a torn piece of its first line. The journal's last note is never yet marked
# as synced (that is said by the next one), so this grant's line is one a start must check.
sign --src 198.51.100.7 --port 22 --for 300 --jti power-1 >"$TMP/power-1"
"$JITCTL_BIN" -s "$SOCK" submit "$TMP/power-1" >/dev/null || fail "power-1 refused"
stop_jitd KILL
line=$(grep -n '"event":"grant.applied","grant":"power-1"' "$trail" | cut -d: -f1)
[ -n "$line" ] || fail "power-1's grant.applied line is not in the trail"
cp "$trail" "$TMP/trail.before"
keep=$(($(head -n $((line - 1)) "$trail" | wc -c) + 7))
truncate -s "$keep" "$trail"
start_jitd
grep -q "record(s) a crash kept out of the trail restored from the journal" "$TMP/jitd.log" ||
	fail "jitd did not say it restored audit records"
[ "$(applied_count power-1)" = 1 ] || fail "power-1's grant.applied line is not back once"
# The line as it was written, time and all.
grep -Fxq "$(sed -n "${line}p" "$TMP/trail.before")" "$trail" ||
	fail "the restored line differs from the one written"
# Nothing is taken out of the trail: the torn piece stays, on a line of its own.
jq -e . "$trail" >/dev/null 2>&1 && fail "the torn piece vanished: the test cut nothing"
pass "after a cut-off trail, the start restored power-1's grant.applied line from the journal"
stop_jitd
start_jitd
[ "$(applied_count power-1)" = 1 ] || fail "a second start appended power-1's line again"
pass "a second start does not append it again"
