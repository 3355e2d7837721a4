# Grants arriving, expiring and revoked at once: 8 HTTP keep-alive connections post short
# grants, 32 a request, for 10 s, while the agent expires earlier ones every second and root
# revokes one every 50 ms (found or not, a revocation first answers the groups settling and
# removes expired grants). Removing a grant moves the last one into its place; a group answered
# or taken back afterwards must find its grants where they are now, or its replies describe
# another grant (a test build aborts on such a reply, and fails a group's fdatasync now and
# then, so that grants are taken back too). Every reply must be the grant that was posted (its
# id and source); afterwards every grant answered 201 has a grant.applied record, status agrees
# with the kernel (nft -j: every element of the one-address sets, where all these /32 grants go,
# a 201 grant's, none a refused or revoked one's), and once every grant ran out the kernel holds
# no element.
. "$(dirname "$0")/lib.sh"

SECS=10
export JITD_TEST_SYNC_FAIL_FILE=$TMP/sync-fail
setup_net
setup_keys
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true, "rate_limit": 0},
  "audit": {"max_bytes": 1073741824}'
start_jitd

cat >"$TMP/churn.py" <<'PY'
import http.client, json, multiprocessing, sys, time
import jwt
key_file, host_id, secs, out, ok_log = (sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4],
                                        sys.argv[5])
per = 32
key = open(key_file, "rb").read()
def run(t):
    c = http.client.HTTPConnection("127.0.0.1", 7080, timeout=30)
    end, ok, wrong, refused, n, last_exp = time.monotonic() + secs, [], [], [], 0, 0
    log = open(ok_log, "a", buffering=1)
    while time.monotonic() < end:
        now, batch = int(time.time()), []
        # Several grants a request: while one group settles, the next ones wait, verified.
        for _ in range(per):
            n += 1
            jti, src = "churn-%d-%d" % (t, n), "10.%d.%d.%d" % (100 + t, n // 250 % 250, n % 250 + 1)
            # 6 to 8 s: the agent's expiry removes grants every second while others arrive.
            claims = {"iss": "controller.example", "aud": host_id, "sub": "churn", "jti": jti,
                      "iat": now, "exp": now + 6 + n % 3, "src": [src],
                      "ports": [{"port": 22, "protocol": "tcp"}]}
            batch.append((jti, src, jwt.encode(claims, key, algorithm="EdDSA",
                                               headers={"typ": "jit-grant+jwt", "kid": "ctl"})))
        c.request("POST", "/v1/grants/batch", json.dumps({"grants": [b[2] for b in batch]}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        results = json.loads(r.read())["results"]
        for (jti, src, _), res in zip(batch, results):
            body = res.get("grant", res)
            if res["status"] != 201:
                refused.append({"id": jti, "status": res["status"], "error": res.get("error"),
                                "message": res.get("message")})
            elif body.get("id") != jti or body.get("sources") != [src]:
                wrong.append("%s/%s answered as %s/%s" % (jti, src, body.get("id"), body.get("sources")))
            else:
                ok.append(jti)
                last_exp = max(last_exp, now + 6 + int(jti.split("-")[2]) % 3)
                log.write(jti + "\n")  # one line a write: what root revokes meanwhile
    return ok, wrong, refused, last_exp
with multiprocessing.Pool(8) as pool:
    res = pool.map(run, range(8))
doc = {k: sum((r[i] for r in res), []) for i, k in enumerate(("ok", "wrong", "refused"))}
doc["last_exp"] = max(r[3] for r in res)
json.dump(doc, open(out, "w"))
PY

# A test build also fails a group's fdatasync now and then (JITD_TEST_SYNC_FAIL_FILE): its
# grants are taken back out of the books, which must find each of them where it is.
FAILS=0
[ "${JITD_TEST_HOOKS:-0}" = 1 ] && FAILS=1
log "8 connections posting 6-8 s grants, 32 a request, for $SECS s; root revokes some meanwhile"
: >"$TMP/ok.log"
ip netns exec "$SRV" /usr/bin/python3 "$TMP/churn.py" "$TMP/signer/ctl.key" "$HOST_ID" "$SECS" \
	"$TMP/churn.json" "$TMP/ok.log" &
CLIENT=$!
BG_PIDS+=("$CLIENT")
# Each revocation, found or not, first answers the groups settling and removes expired grants.
# Its target is a grant answered 201 a moment ago (the client's log), so that how fast grants
# are posted does not decide whether any revocation finds one.
revoked=0
revoked_ids=()
for ((k = 0; k < 20 * SECS; k++)); do
	# While the churn lasts (each revoke takes time too): the witness below looks right after.
	case $(proc_state "$CLIENT") in Z* | "") break ;; esac
	sleep 0.05
	[ "$FAILS" = 1 ] && [ $((k % 5)) = 0 ] && echo 1 >"$TMP/sync-fail"
	id=$(tail -n 1 "$TMP/ok.log")
	"$JITCTL_BIN" -s "$SOCK" revoke "$id" >/dev/null 2>&1 &&
		revoked=$((revoked + 1)) && revoked_ids+=("$id")
	kill -0 "$JITD_PID" 2>/dev/null || fail "jitd died"
done
wait "$CLIENT" || fail "the churn client failed"
kill -0 "$JITD_PID" 2>/dev/null || fail "jitd died"
rm -f "$TMP/sync-fail"
# The kernel, read with nft -j right away, is the witness: every element is the source of a
# grant answered 201 (each grant has a source of its own), none of a grant refused (taken back
# as its sync failed) or revoked. Elements that ran out meanwhile are simply not there.
allow_elems allow4_addr >"$TMP/elems"
[ "$(cat "$TMP/elems")" != "$NO_SET" ] || fail "no allow4_addr set in the kernel"
# The last grants are in force for seconds yet: an empty set then would check nothing. (On a
# machine so slow that all ran out before the read, the check is said to be empty.)
if [ "$(date +%s)" -lt "$(($(jq .last_exp "$TMP/churn.json") - 1))" ]; then
	[ -s "$TMP/elems" ] || fail "allow4_addr holds nothing while grants are in force"
elif [ ! -s "$TMP/elems" ]; then
	log "every grant ran out before the kernel was read: the witness below is empty"
fi
printf '%s\n' "${revoked_ids[@]}" >"$TMP/revoked_ids"
# shellcheck disable=SC2016
src_of='capture("^churn-(?<t>[0-9]+)-(?<n>[0-9]+)$") | (.t | tonumber) as $t | (.n | tonumber) as $n
	| "10.\(100 + $t).\($n / 250 | floor % 250).\($n % 250 + 1) tcp 22"'
jq -r ".ok[] | $src_of" "$TMP/churn.json" | sort >"$TMP/ok_elems"
jq -r ".refused[] | .id | $src_of" "$TMP/churn.json" | sort >"$TMP/refused_elems"
jq -R -r "select(length > 0) | $src_of" "$TMP/revoked_ids" | sort >"$TMP/revoked_elems"
sort "$TMP/elems" >"$TMP/elems.sorted"
stray=$(comm -23 "$TMP/elems.sorted" "$TMP/ok_elems")
[ -z "$stray" ] || fail "elements of no grant answered 201: $(head -3 <<<"$stray" | tr '\n' ' ')"
for f in refused revoked; do
	left=$(comm -12 "$TMP/elems.sorted" "$TMP/${f}_elems")
	[ -z "$left" ] || fail "elements of $f grants: $(head -3 <<<"$left" | tr '\n' ' ')"
done
pass "kernel (nft -j): $(wc -l <"$TMP/elems.sorted") elements, each a 201 grant's;" \
	"none of the $(wc -l <"$TMP/refused_elems") refused or $revoked revoked"
n_ok=$(jq '.ok | length' "$TMP/churn.json")
# A floor that says the churn happened, not a speed (that lives in the benchmark).
[ "$n_ok" -gt 100 ] || fail "only $n_ok grants applied; refused: $(jq -c \
	'[.refused[] | .error] | group_by(.) | map({(.[0]): length}) | add' "$TMP/churn.json")"
jq -e '.wrong == []' "$TMP/churn.json" >/dev/null ||
	fail "$(jq '.wrong | length' "$TMP/churn.json") replies describe another grant: $(jq -c '.wrong[:5]' "$TMP/churn.json")"
# Only a failed fdatasync may refuse a grant here, and only where the test made one fail.
jq -e --argjson fails "$FAILS" '[.refused[] | select($fails == 0 or .status != 500 or .error != "internal")] == []' \
	"$TMP/churn.json" >/dev/null || fail "refused: $(jq -c '.refused[:5]' "$TMP/churn.json")"
[ "$revoked" -gt 0 ] || fail "no revocation went through"
# The failed syncs took grants back: had none refused, that path went untested.
[ "$FAILS" = 0 ] || [ "$(jq '.refused | length' "$TMP/churn.json")" -gt 0 ] ||
	fail "no grant refused although the test failed a group's fdatasync $((4 * SECS)) times"
pass "$n_ok grants answered 201 with their own id and source, $(jq '.refused | length' "$TMP/churn.json") refused as their sync failed; $revoked revoked meanwhile"

jq -r '.ok[]' "$TMP/churn.json" | sort >"$TMP/ok"
jq -r 'select(.event == "grant.applied") | .grant' "$TMP/state/audit.jsonl" | sort -u >"$TMP/applied"
missing=$(comm -23 "$TMP/ok" "$TMP/applied" | wc -l)
[ "$missing" -eq 0 ] || fail "$missing grants answered 201 have no grant.applied record"
# A group's grant.applied lines go out with its journal write, before the fdatasync: a grant
# whose sync failed has a grant.refused (internal) after it, and that last record holds.
jq -r '.refused[] | .id' "$TMP/churn.json" | sort >"$TMP/refused"
jq -s -r '[.[] | select(.grant != null and (.event | startswith("grant.")))] | group_by(.grant)
	| .[] | last | select(.event == "grant.refused" and .code == "internal") | .grant' \
	"$TMP/state/audit.jsonl" | sort >"$TMP/refused_last"
unsaid=$(comm -23 "$TMP/refused" "$TMP/refused_last" | wc -l)
[ "$unsaid" -eq 0 ] || fail "$unsaid grants refused as their sync failed do not end refused in \
the audit trail: $(comm -23 "$TMP/refused" "$TMP/refused_last" | head -3 | tr '\n' ' ')"
status_json | jq -e '.kernel.in_sync' >/dev/null ||
	fail "status: $(status_json | jq -c '.kernel | del(.elements)')"
pass "audit: a grant.applied record for every grant answered 201, a last grant.refused for each refused; status: kernel in sync"

no_elems() { [ -z "$(allow_elems allow4_addr)" ]; }
wait_until 10 "every grant to run out" status_has_no_grants
wait_until 5 "the kernel to drop every element" no_elems
pass "all ran out: no grant, no element"
