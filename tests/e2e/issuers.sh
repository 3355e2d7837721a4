# "issuers" binds each trusted key to the one iss it signs under (RFC 8725 section 3.8): a grant
# or revocation under another iss is refused as wrong_issuer, one from a trusted key bound to no
# issuer as unknown_key (a grant and a revocation), each with the kernel unchanged and the
# refusal audited. A revocation is held to its own key's issuer, not to the grant's: another
# controller, under its own issuer, ends a grant. A reload that binds the key to another issuer
# removes the grant it signed as the old one. Without "issuers", any trusted key may sign under
# any iss (every other test).
. "$(dirname "$0")/lib.sh"

setup_net
setup_keys
# A second trusted key, bound to nothing, and a third, bound to an issuer of its own.
for kid in ops team; do
	"$JITCTL_BIN" keygen --kid "$kid" --dir "$TMP/signer" >/dev/null
	cp "$TMP/signer/$kid.pem" "$TMP/keys.d/$kid.pem"
	chmod 0644 "$TMP/keys.d/$kid.pem"
done
ports='[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
listen='"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
write_config drop '[]' "$ports" "$listen, \"issuers\": {\"ctl\": \"https://ctl.example\", \"team\": \"https://team.example\"}"
start_listeners 22
check_config() { in_ns "$SRV" "$JITD_BIN" -c "$CONFIG" --check-config; }
out=$(check_config 2>&1) || fail "--check-config: $out"
grep -q "no \"issuers\"" <<<"$out" && fail "--check-config warns with issuers set: $out"
start_jitd

before=$(kernel_json)
# refuse_as CODE WHAT: the grant on stdin is refused with CODE, nothing changes in the kernel.
refuse_as() {
	local rc=0
	submit - --json >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && [ "$(jq -r .error "$TMP/out")" = "$1" ] ||
		fail "$2: exit $rc: $(cat "$TMP/out")"
	[ "$(kernel_json)" = "$before" ] || fail "$2 changed the kernel"
	pass "$2 refused: $1: $(jq -r .message "$TMP/out")"
}
sign --src 192.0.2.2 --port 22 --for 300 --jti evil --iss https://evil.example >"$TMP/g"
refuse_as wrong_issuer "a grant from key ctl under another iss" <"$TMP/g"
sign --src 192.0.2.2 --port 22 --for 300 --jti no-iss >"$TMP/g"
refuse_as wrong_issuer "a grant from key ctl under jitctl's default iss" <"$TMP/g"
"$JITCTL_BIN" sign --key "$TMP/signer/ops.key" --kid ops --aud "$HOST_ID" --sub alice \
	--src 192.0.2.2 --port 22 --for 300 --jti ops-1 --iss https://ctl.example >"$TMP/g"
refuse_as unknown_key "a grant from key ops, bound to no issuer" <"$TMP/g"
expect_connect drop "$C1" 192.0.2.1 22
jq -s -e '[.[] | select(.event == "grant.refused") | .code] ==
	["wrong_issuer", "wrong_issuer", "unknown_key"]' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "audit: $(jq -c 'select(.event == "grant.refused") | [.grant, .code]' "$TMP/state/audit.jsonl")"
pass "each refusal is in the audit trail with its code"

log "under its own issuer the key's grant applies"
sign --src 192.0.2.2 --port 22 --for 300 --jti good --iss https://ctl.example | submit - >/dev/null ||
	fail "the grant under ctl's issuer was refused"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "not in the kernel"
expect_connect ok "$C1" 192.0.2.1 22
pass "applied and open: $(status_json | jq -c '.grants[0] | {id, iss}')"

log "revocations under another issuer, or from a key bound to none, are refused over HTTP"
# revocation_refused KID ISS JTI STATUS CODE WHAT: a revocation of "good" signed by KID under
# ISS is answered STATUS with CODE, the kernel is unchanged and the refusal audited.
refusals_of() {
	jq -s --arg c "$1" '[.[] | select(.event == "revocation.refused" and .grant == "good" and
		.code == $c)] | length' "$TMP/state/audit.jsonl"
}
revocation_refused() {
	local code kernel before
	kernel=$(kernel_json | strip_expires)
	before=$(refusals_of "$5")
	"$JITCTL_BIN" sign --key "$TMP/signer/$1.key" --kid "$1" --aud "$HOST_ID" --revokes good \
		--for 60 --jti "$3" --iss "$2" >"$TMP/rv" || fail "cannot sign $3"
	code=$(post_jwt /v1/revocations "$TMP/rv")
	[ "$code" = "$4" ] && [ "$(jq -r .error "$TMP/body")" = "$5" ] ||
		fail "$6: HTTP $code $(cat "$TMP/body")"
	has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant went with $6"
	[ "$(kernel_json | strip_expires)" = "$kernel" ] || fail "$6 changed the kernel"
	[ "$(refusals_of "$5")" -eq $((before + 1)) ] ||
		fail "$6: not audited: $(grep revocation "$TMP/state/audit.jsonl")"
	pass "$6: HTTP $4 $5, the grant stays, the kernel unchanged, the refusal audited"
}
revocation_refused ctl https://evil.example rv-evil 403 wrong_issuer \
	"a revocation from key ctl under another iss"
revocation_refused ops https://ctl.example rv-ops 401 unknown_key \
	"a revocation from key ops, bound to no issuer"
# A revocation is held to its own key's issuer, not to the grant's: any trusted controller may
# end access (a revocation only ever closes).
sign --src 192.0.2.4 --port 22 --for 300 --jti good2 --iss https://ctl.example | submit - >/dev/null ||
	fail "the second grant under ctl's issuer was refused"
"$JITCTL_BIN" sign --key "$TMP/signer/team.key" --kid team --aud "$HOST_ID" --revokes good2 \
	--for 60 --jti rv-team --iss https://team.example >"$TMP/rv" || fail "cannot sign rv-team"
code=$(post_jwt /v1/revocations "$TMP/rv")
[ "$code" = 200 ] || fail "team's revocation of ctl's grant: HTTP $code $(cat "$TMP/body")"
lacks_elem allow4_addr "192.0.2.4 tcp 22" || fail "team's revocation left good2 in the kernel"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "team's revocation of good2 took good with it"
jq -s -e 'any(.[]; .event == "grant.revoked" and .grant == "good2" and
	(.message // "" | test("rv-team from https://team.example")))' "$TMP/state/audit.jsonl" \
	>/dev/null || fail "audit: $(grep '"good2"' "$TMP/state/audit.jsonl" | tail -1)"
pass "key team, under its own issuer, ends ctl's grant: HTTP 200, gone, audited with its issuer"
rm "$TMP/keys.d/team.pem"

log "a reload binds ctl to another issuer: the grant it signed as the old one goes"
write_config drop '[]' "$ports" "$listen, \"issuers\": {\"ctl\": \"https://new.example\"}"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
lacks_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant under the old issuer is still in the kernel"
expect_connect drop "$C1" 192.0.2.1 22
status_json | jq -e '.grants == []' >/dev/null || fail "status: $(status_json | jq -c .grants)"
jq -s -e 'any(.[]; .grant == "good" and (.event | test("removed|revoked|dropped")) and
	((.reason // .message // "") | test("not the issuer key .ctl. is bound to")))' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "no audit record of the removal: $(grep '"good"' "$TMP/state/audit.jsonl" | tail -2)"
pass "removed at the reload and audited: $(jq -r 'select(.grant == "good") | .event' "$TMP/state/audit.jsonl" | tail -1)"

log "--check-config warns of a bound key it cannot find"
write_config drop '[]' "$ports" "\"issuers\": {\"ctl\": \"https://ctl.example\", \"gone\": \"x\"}"
check_config >"$TMP/out" 2>"$TMP/err" || fail "--check-config: $(cat "$TMP/err")"
grep -q "warning: issuers.gone: " "$TMP/err" || fail "no warning: $(cat "$TMP/err")"
pass "$(cat "$TMP/err")"
# Counted as the packages' first install asks: only keys that can sign an admitted grant.
grep -q "warning: 1 usable key(s) in $TMP/keys.d bound to no issuer" "$TMP/err" &&
	grep -q ", 1 trusted key(s))$" "$TMP/out" ||
	fail "the count with issuers: $(cat "$TMP/out" "$TMP/err")"
write_config drop '[]' "$ports" "\"issuers\": {\"gone\": \"x\"}"
check_config >"$TMP/out" 2>"$TMP/err" || fail "--check-config: $(cat "$TMP/err")"
grep -q ", 0 trusted key(s))$" "$TMP/out" ||
	fail "issuers binding only a missing key: $(cat "$TMP/out" "$TMP/err")"
pass "with issuers only bound keys count: $(cat "$TMP/out")"
log "--check-config warns of two trusted keys that no issuers binds"
write_config drop '[]' "$ports"
check_config >"$TMP/out" 2>"$TMP/err" || fail "--check-config: $(cat "$TMP/err")"
grep -q 'warning: 2 trusted keys and no "issuers": each may sign under any iss' "$TMP/err" ||
	fail "no warning: $(cat "$TMP/err")"
pass "$(cat "$TMP/err")"
rm "$TMP/keys.d/ops.pem"
check_config >"$TMP/out" 2>"$TMP/err" || fail "--check-config: $(cat "$TMP/err")"
[ ! -s "$TMP/err" ] || fail "a warning with one key: $(cat "$TMP/err")"
pass "none with one trusted key"
