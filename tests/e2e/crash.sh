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
