# Group commit under concurrency: grants sent together, on many control connections at once,
# are verified on worker threads and committed in groups; none is lost, none applies twice
# (the same token sent eight times at once applies once), every outcome is audited once, and
# the kernel, the journal and status agree afterwards. Grants whose ranges stand apart take the
# short way to the kernel (only their elements added); adjoining ones (which may merge) and
# overlapping ones are planned in full: either way the elements must be exactly what a full
# comparison computes, so a reconcile every second finds nothing to repair. The counters say how
# the grants were grouped; how large the groups are is the benchmark's business, not a test's.
. "$(dirname "$0")/lib.sh"

N=40
setup_net
setup_keys
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true, "rate_limit": 0},
  "limits": {"control_connections": 64}, "reconcile_interval": "PT1S", "log_level": "debug"'
start_listeners 22
start_jitd

log "$N distinct grants and one token eight times, all sent at once"
for ((i = 1; i <= N; i++)); do
	sign --src "10.9.$i.1" --port 22 --for 300 --jti "burst-$i"
done >"$TMP/tokens"
# Adjoining prefixes (ranges that may merge) and one that overlaps them. One-address grants
# go to a hash set of their own, where nothing merges.
for ((i = 0; i < 8; i++)); do
	sign --src "10.8.0.$((2 * i))/31" --port 22 --for 300 --jti "burst-adj-$i"
done >>"$TMP/tokens"
sign --src 10.8.0.0/29 --port 22 --for 200 --jti burst-overlap >>"$TMP/tokens"
sign --src 192.0.2.2 --port 22 --for 300 --jti twice >"$TMP/twice"
for ((i = 0; i < 8; i++)); do cat "$TMP/twice"; done >>"$TMP/tokens"
cat >"$TMP/burst.py" <<'PY'
import json, socket, sys
path, tokens = sys.argv[1], open(sys.argv[2]).read().split()
conns = []
for t in tokens:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)
    conns.append((s, t))
# Every request out before any reply is read: they reach jitd together.
for s, t in conns:
    s.sendall((json.dumps({"op": "submit", "token": t}) + "\n").encode())
for s, _ in conns:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    r = json.loads(buf)
    print(r["grant"]["id"] if r.get("ok") else "refused:" + r["error"])
PY
python3 "$TMP/burst.py" "$SOCK" "$TMP/tokens" >"$TMP/replies" || fail "burst client failed"
[ "$(grep -c '^burst-' "$TMP/replies")" -eq $((N + 9)) ] ||
	fail "not every distinct grant applied: $(sort "$TMP/replies" | uniq -c)"
pass "all $((N + 9)) distinct grants applied"
[ "$(grep -cx twice "$TMP/replies")" -eq 1 ] &&
	[ "$(grep -cx refused:replay "$TMP/replies")" -eq 7 ] ||
	fail "the repeated token: $(grep -v '^burst-' "$TMP/replies" | sort | uniq -c)"
pass "the token sent eight times at once applied once, seven replays refused"

for ((i = 1; i <= N; i++)); do
	has_elem allow4_addr "10.9.$i.1 tcp 22" ||
		fail "grant burst-$i has no element"
done
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "grant twice has no element"
[ "$(allow_elems allow4_addr | grep -c .)" -eq $((N + 1)) ] ||
	fail "allow4_addr holds $(allow_elems allow4_addr | grep -c .) elements, want $((N + 1))"
pass "one element per one-address grant"
# Eight adjoining /31s and a shorter /29 inside them: 10.8.0.0-10.8.0.15 covered without a gap
# by disjoint ranges (how many depends on whether the grants' expiries fell in one millisecond).
elems=$(allow_elems allow4)
grep -qv '^10\.8\.0\.' <<<"$elems" && fail "allow4 holds more: $elems"
in_ns "$SRV" nft -j list set inet jitd allow4 | jq -e '
	[.nftables[] | select(.set?) | .set.elem[]? | (.elem.val // .) | .concat[0]
	 | if type == "string" then (split(".")[3] | tonumber) as $o | [$o, $o]
	   elif has("range") then .range | map(split(".")[3] | tonumber)
	   else .prefix as $p | ($p.addr | split(".")[3] | tonumber) as $o
		| [$o, $o + pow(2; 32 - $p.len) - 1] end] | sort
	| (.[0][0] == 0) and (.[-1][1] == 15) and
	  ([range(1; length) as $k | .[$k][0] == .[$k - 1][1] + 1] | all)' >/dev/null ||
	fail "10.8.0.0-10.8.0.15 not covered by disjoint ranges: $(allow_elems allow4 | tr '\n' ';')"
pass "adjoining and overlapping prefixes: disjoint ranges covering 10.8.0.0-10.8.0.15"
status_json | jq -e --argjson n $((N + 10)) '(.grants | length) == $n and .kernel.in_sync' \
	>/dev/null || fail "status disagrees: $(status_json | jq -c '{g: (.grants|length), k: .kernel}')"
pass "status: $((N + 10)) grants, kernel in sync"
# A periodic check after only jitd's own transactions is skipped, but every tenth reads every
# set and compares it with the full computation: wait for one after the burst.
# The line comes before the check's work: the next check's line (skipped or full) says it is done.
full_checks() { grep -c "periodic check: reading every grant set" "$TMP/jitd.log" || true; }
all_checks() { grep -c "periodic check" "$TMP/jitd.log" || true; }
full_checked() { [ "$(full_checks)" -gt "$1" ]; }
checked() { [ "$(all_checks)" -gt "$1" ]; }
wait_until 15 "a full periodic check after the burst" full_checked "$(full_checks)"
wait_until 5 "the check after it" checked "$(all_checks)"
repaired=$(jq -s '[.[] | select(.event == "drift.repaired")] | length' "$TMP/state/audit.jsonl")
[ "$repaired" -eq 0 ] || fail "a reconcile found the elements wrong: $(jq -c \
	'select(.event == "drift.repaired")' "$TMP/state/audit.jsonl")"
pass "a full periodic check after the burst: nothing to repair"

applied=$(jq -s '[.[] | select(.event == "grant.applied")] | length' "$TMP/state/audit.jsonl")
replays=$(jq -s '[.[] | select(.event == "grant.refused" and .code == "replay")] | length' \
	"$TMP/state/audit.jsonl")
[ "$applied" -eq $((N + 10)) ] && [ "$replays" -eq 7 ] ||
	fail "audit trail: $applied applied, $replays replays"
pass "audit trail: one record per outcome"

in_ns "$SRV" curl -sS --max-time 5 http://127.0.0.1:7080/metrics >"$TMP/metrics" ||
	fail "no metrics"
commits=$(awk '$1 == "jitd_group_commits_total" {print $2}' "$TMP/metrics")
grouped=$(awk '$1 == "jitd_group_grants_total" {print $2}' "$TMP/metrics")
[ "$grouped" -eq $((N + 17)) ] && [ "$commits" -ge 1 ] && [ "$commits" -le "$grouped" ] ||
	fail "group counters: $commits commits for $grouped grants"
pass "$grouped grants went through $commits group commit(s)"

# The threads carry their names (jitd.8): ps -L, top -H, perf and the benchmark's CPU rows use
# them. One event loop, a verifier per CPU jitd may use (up to a cap), two sync threads.
sort /proc/"$JITD_PID"/task/*/comm | uniq -c | awk '{ print $2, $1 }' >"$TMP/threads"
verifiers=$(sed -n 's/^jitd-verify //p' "$TMP/threads")
[ "$(sed -n 's/^jitd //p' "$TMP/threads")" = 1 ] &&
	[ "${verifiers:-0}" -ge 1 ] && [ "$verifiers" -le "$(nproc)" ] &&
	[ "$(sed -n 's/^jitd-sync //p' "$TMP/threads")" = 2 ] ||
	fail "threads by name: $(tr '\n' ' ' <"$TMP/threads")"
pass "threads named: $(tr '\n' ' ' <"$TMP/threads")"

log "restart: the grants come back from the journal"
stop_jitd
start_jitd
status_json | jq -e --argjson n $((N + 10)) '(.grants | length) == $n and .kernel.in_sync' \
	>/dev/null || fail "after a restart: $(status_json | jq -c '{g: (.grants|length)}')"
pass "all $((N + 10)) grants restored"
expect_connect ok "$C1" 192.0.2.1 22

log "adjoining prefixes that end together, the second applied after a full check read the first"
# The full check reads each element's expiry back from the kernel (now + its time left), a
# millisecond or so off the deadline desired() computes: the short path must not judge by it
# whether the second /25 would merge with the first. It takes the full plan, so that the next
# full check finds nothing to repair. Eight pairs, all of one exp: each is a chance (one in two
# or better) for the two deadlines to agree to the millisecond and merge, which the short path
# got wrong.
# Signed with PyJWT, which takes an exp as given: jitctl sign counts --for from its own clock,
# which a second boundary can move between two tokens.
/usr/bin/python3 - "$TMP/signer/ctl.key" "$HOST_ID" >"$TMP/adj" <<'PY' || fail "signing the pairs"
import sys, time
import jwt
key = open(sys.argv[1], "rb").read()
now = int(time.time())
for k in range(8):
    for half, lo in (("a", 0), ("b", 128)):
        claims = {"iss": "jitctl", "aud": sys.argv[2], "sub": "alice", "jti": f"adj-{half}{k}",
                  "iat": now, "exp": now + 300, "src": [f"10.7.{k}.{lo}/25"],
                  "ports": [{"port": 22, "protocol": "tcp"}]}
        print(jwt.encode(claims, key, algorithm="EdDSA",
                         headers={"typ": "jit-grant+jwt", "kid": "ctl"}))
PY
mapfile -t adj <"$TMP/adj"
[ "${#adj[@]}" -eq 16 ] || fail "signed ${#adj[@]} tokens, not 16"
# submit_half FIRST WHAT: tokens FIRST, FIRST + 2, ..., then a full check and the one after it.
submit_half() {
	local k fulls
	for ((k = $1; k < 16; k += 2)); do
		submit - <<<"${adj[k]}" >/dev/null || fail "$2: token $k refused"
	done
	fulls=$(full_checks)
	wait_until 15 "a full periodic check after $2" full_checked "$fulls"
	wait_until 5 "the check after it" checked "$(all_checks)"
}
submit_half 0 "the first of each pair"
submit_half 1 "the second of each pair"
repaired=$(jq -s '[.[] | select(.event == "drift.repaired")] | length' "$TMP/state/audit.jsonl")
[ "$repaired" -eq 0 ] || fail "a full check repaired what the short path made: $(jq -c \
	'select(.event == "drift.repaired")' "$TMP/state/audit.jsonl")"
pass "eight adjoining pairs of one exp: nothing to repair at the next full check"
