# A grant from a standard JOSE library (PyJWT), not from jitctl sign: applied, and it opens
# exactly its source. The signer is tests/e2e/jose_sign.py, the example the docs show.
. "$(dirname "$0")/lib.sh"

/usr/bin/python3 -c 'import jwt' 2>/dev/null || fail "PyJWT missing (scripts/install-deps.sh installs python3-jwt)"
e2e_default_setup drop
/usr/bin/python3 "$(dirname "$0")/jose_sign.py" "$TMP/signer/ctl.key" ctl "$HOST_ID" 192.0.2.2 120 \
	>"$TMP/grant" || fail "PyJWT could not sign"
[ "$(cut -d. -f1 "$TMP/grant" | tr '_-' '/+' | base64 -d 2>/dev/null | jq -r .typ)" = jit-grant+jwt ] ||
	fail "unexpected header"
submit "$TMP/grant" --json >"$TMP/out" || fail "PyJWT grant refused: $(cat "$TMP/out")"
pass "a PyJWT-signed grant is applied"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "not in the kernel: $(host_elems)"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
