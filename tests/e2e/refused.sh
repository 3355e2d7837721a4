# Every refusal leaves the kernel exactly as it was (nft -j as the witness), answers with its
# stable error code, and applies nothing of a partly-bad grant. Tokens are made by jitctl sign and,
# independently, by hand with openssl, so jitd is not only tested against its own signer.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop

b64url() { basenc --base64url -w0 | tr -d '='; }
# craft HEADER_JSON CLAIMS_JSON: a compact JWS signed with the controller key by openssl itself.
craft() {
	local input
	input="$(printf '%s' "$1" | b64url).$(printf '%s' "$2" | b64url)"
	printf '%s' "$input" >"$TMP/signing-input"
	openssl pkeyutl -sign -rawin -inkey "$TMP/signer/ctl.key" -in "$TMP/signing-input" -out "$TMP/sig"
	printf '%s.%s\n' "$input" "$(b64url <"$TMP/sig")"
}
now=$(date +%s)
hdr='{"alg":"EdDSA","typ":"jit-grant+jwt","kid":"ctl"}'
claims() { # claims JTI EXP [extra members]; issued at $IAT, or now
	printf '{"iss":"e2e","aud":"%s","sub":"bob","jti":"%s","iat":%d,"exp":%d,"src":["192.0.2.2"],"ports":[{"port":22,"protocol":"tcp"}]%s}' \
		"$HOST_ID" "$1" "${IAT:-$now}" "$2" "${3:-}"
}

log "a grant made by openssl, not jitctl, is accepted"
craft "$hdr" "$(claims by-openssl $((now + 600)))" | submit - >/dev/null || fail "openssl-made grant refused"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "openssl-made grant not in the kernel"
pass "independent signer interoperates"
good=$(sign --src 192.0.2.3 --port 22 --for 300 --jti dup-1)
echo "$good" | submit - >/dev/null || fail "valid grant refused"

before=$(kernel_json | strip_expires)

# refuse CODE DESCRIPTION < <(token maker): reads a token on stdin, expects exit 1 and error CODE.
# Fed by process substitution, not a pipe, so it runs in this shell and counts its checks.
refuse() {
	local want=$1 what=$2 out rc=0
	out=$(submit - --json) || rc=$?
	[ "$rc" -eq 1 ] || fail "$what: jitctl submit exit $rc, want 1 (refused); output: $out"
	[ "$(echo "$out" | jq -r .error)" = "$want" ] || fail "$what: error $(echo "$out" | jq -c .), want $want"
	[ -n "$(echo "$out" | jq -r '.message // empty')" ] || fail "$what: no message"
	pass "refused $what -> $want"
}

refuse wrong_audience "grant for another host" < <(sign --src 192.0.2.2 --port 22 --for 60 --aud other-host)
refuse expired "grant that expired an hour ago" < <(craft "$hdr" "$(IAT=$((now - 7200)) claims old $((now - 3600)))")
refuse not_yet_valid "grant valid only in 10 min" < <(sign --src 192.0.2.2 --port 22 --for 660 --not-before 600)
rc=0
sign --src 192.0.2.2 --port 22 --for 600 --not-before 600 >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "not-before '600' is not before the end" "$TMP/out" ||
	fail "jitctl sign of a window never open: exit $rc: $(cat "$TMP/out")"
pass "jitctl sign refuses a window that closes as it opens (exit 2)"
refuse port_not_protected "port 2222 (not protected)" < <(sign --src 192.0.2.2 --port 2222 --for 60)
refuse port_not_protected "22/udp (only tcp protected)" < <(sign --src 192.0.2.2 --port 22/udp --for 60)
refuse source_not_allowed "3389 from outside 10.0.0.0/8" < <(sign --src 192.0.2.2 --port 3389 --for 60)
refuse source_not_allowed "one good and one bad source" < <(sign --src 10.1.2.3,192.0.2.2 --port 3389 --for 60)
refuse port_not_protected "one bad port among good ones" < <(sign --src 10.1.2.3 --port 22,3389,2222 --for 60)
refuse duration_exceeds_max "20 min on a PT10M port" < <(sign --src 192.0.2.2 --port 22 --for PT20M)
refuse unknown_key "unknown kid" < <(sign --src 192.0.2.2 --port 22 --for 60 --kid nokey)
refuse bad_header "kid naming a path" < <(craft '{"alg":"EdDSA","typ":"jit-grant+jwt","kid":"../keys.d/ctl"}' "$(claims path $((now + 60)))")
tok=$(sign --src 192.0.2.2 --port 22 --for 60)
sig=${tok##*.}
flipped=${sig:0:20}$([ "${sig:20:1}" = A ] && echo B || echo A)${sig:21}
refuse bad_signature "flipped signature character" < <(echo "${tok%.*}.$flipped")
refuse bad_header "alg none" < <(craft '{"alg":"none","typ":"jit-grant+jwt","kid":"ctl"}' "$(claims none $((now + 60)))")
refuse bad_header "alg HS256" < <(craft '{"alg":"HS256","typ":"jit-grant+jwt","kid":"ctl"}' "$(claims hs $((now + 60)))")
refuse bad_header "typ JWT (not a grant)" < <(craft '{"alg":"EdDSA","typ":"JWT","kid":"ctl"}' "$(claims typ $((now + 60)))")
refuse bad_header "crit header" < <(craft '{"alg":"EdDSA","typ":"jit-grant+jwt","kid":"ctl","crit":["exp"]}' "$(claims crit $((now + 60)))")
refuse malformed "duplicate alg member" < <(craft '{"alg":"EdDSA","alg":"none","typ":"jit-grant+jwt","kid":"ctl"}' "$(claims dupalg $((now + 60)))")
refuse malformed "port as a string" < <(craft "$hdr" "$(claims types $((now + 60)) | sed 's/"port":22/"port":"22"/')")
refuse malformed "missing claims" < <(craft "$hdr" '{"iss":"e2e","aud":"e2e-host"}')
refuse malformed "garbage" < <(echo 'not-a-token')
refuse malformed "trailing garbage" < <(echo "${tok}x")
refuse malformed "bad base64url" < <(echo "${tok%%.*}.!!!.${sig}")
nul_padded=$(sign --src 192.0.2.2 --port 22 --for 60 --jti nul-padded)
[ -n "$nul_padded" ] || fail "no token to pad with NUL bytes"
refuse malformed "a valid token followed by NUL bytes" < <(printf '%s\0\0\n' "$nul_padded")
refuse too_large "20 KB token" < <(head -c 20000 /dev/zero | tr '\0' a)
refuse replay "the same grant twice" < <(echo "$good")

after=$(kernel_json | strip_expires)
[ "$before" = "$after" ] || fail "a refused grant changed the kernel:$(diff <(echo "$before") <(echo "$after"))"
pass "kernel table unchanged by every refusal (nft -j list table inet jitd)"
expect_connect drop "$C1" -b 192.0.2.2 192.0.2.1 3389

log "a bad configuration is refused before the kernel is touched"
sed 's/"port": 3389/"port": 22/' "$CONFIG" >"$TMP/bad.json"
chmod 0600 "$TMP/bad.json"
rc=0
msg=$(in_ns "$SRV" "$JITD_BIN" --check-config -c "$TMP/bad.json" 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fail "jitd --check-config accepted a second entry for port 22"
echo "$msg" | grep -q 'ports\[1\]' || fail "config error does not name the key: $msg"
pass "jitd --check-config refuses a duplicate port: $msg"
in_ns "$SRV" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>"$TMP/err" ||
	fail "jitd --check-config refuses the good config"
grep -q ", 1 trusted key(s))$" "$TMP/out" && [ ! -s "$TMP/err" ] ||
	fail "the good config's check: $(cat "$TMP/out" "$TMP/err")"
pass "jitd --check-config accepts the good config: $(cat "$TMP/out")"
# A keys_dir jitd cannot enter is an error: a reload to it is refused, a start may fail.
jq --arg d "$TMP/keys.typo" '.keys_dir = $d' "$CONFIG" >"$TMP/typo.json"
rc=0
in_ns "$SRV" "$JITD_BIN" --check-config -c "$TMP/typo.json" >"$TMP/out" 2>"$TMP/err" || rc=$?
[ "$rc" -eq 1 ] && [ ! -s "$TMP/out" ] &&
	grep -qF "keys_dir $TMP/keys.typo: No such file or directory: no key can be looked for" \
		"$TMP/err" ||
	fail "check of a missing keys_dir: exit $rc, $(cat "$TMP/out" "$TMP/err")"
pass "jitd --check-config refuses a keys_dir it cannot enter"
# Keys that no grant could use are warnings: the agent still starts (keys may come later).
cp "$TMP/keys.d/ctl.pem" "$TMP/keys.d/loose.pem"
chmod 0664 "$TMP/keys.d/loose.pem"
echo "not a key" >"$TMP/keys.d/junk.pem"
cp "$TMP/keys.d/ctl.pem" "$TMP/keys.d/.hidden.pem"
# key_warnings FILE PREFIX: FILE warns of each of the three, each after PREFIX.
key_warnings() {
	grep -q "$2$TMP/keys.d/loose.pem: .*writable" "$1" &&
		grep -q "$2$TMP/keys.d/junk.pem: " "$1" &&
		grep -q "$2$TMP/keys.d/.hidden.pem: not a key id" "$1"
}
in_ns "$SRV" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>"$TMP/err" ||
	fail "jitd --check-config refused unusable keys: $(cat "$TMP/out" "$TMP/err")"
grep -q ", 1 trusted key(s))$" "$TMP/out" && key_warnings "$TMP/err" "warning: " ||
	fail "unusable keys: $(cat "$TMP/out" "$TMP/err")"
pass "jitd --check-config warns of each key no grant could use, counts the one that can"
# Since the unit runs no --check-config before the start, the agent's journal says the same:
# at a reload, and at the next start (a restart: the table and grants carry over).
lines=$(wc -l <"$TMP/jitd.log")
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "reload: $(cat "$TMP/out")"
tail -n +"$((lines + 1))" "$TMP/jitd.log" >"$TMP/log.reload"
key_warnings "$TMP/log.reload" "reload: " || fail "the reload's log: $(cat "$TMP/log.reload")"
pass "a reload logs each key no grant could use"
stop_jitd
lines=$(wc -l <"$TMP/jitd.log")
start_jitd
tail -n +"$((lines + 1))" "$TMP/jitd.log" >"$TMP/log.start"
key_warnings "$TMP/log.start" "jitd: " || fail "the start's log: $(cat "$TMP/log.start")"
pass "a start logs each key no grant could use"
rm -f "$TMP/keys.d/loose.pem" "$TMP/keys.d/junk.pem" "$TMP/keys.d/.hidden.pem"
