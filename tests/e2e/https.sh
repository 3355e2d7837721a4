# The controller endpoint over HTTPS with mutual TLS, curl as the controller: grants and
# revocations apply; clients without a certificate, or with one from another CA, are refused in
# the handshake; oversized, replayed, forged and mistyped requests get their JSON error and
# status; every refusal leaves the kernel table unchanged; status is served over mutual TLS;
# connection count, idle timeout and per-address rate limit hold. Then TLS without client
# certificates on [::]: signed grants over IPv6 and IPv4, status and metrics to loopback only.
# Then plain HTTP on loopback, where each local user is a client of its own for the rate limit,
# and --check-config loading the TLS files as the start does.
. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || fail "curl is needed (scripts/install-deps.sh installs it)"
setup_net
setup_keys
ca fleet-ca
ca rogue-ca
san=subjectAltName=IP:192.0.2.1,IP:198.51.100.1,IP:2001:db8:1::1,IP:::1,IP:127.0.0.1
cert fleet-ca jitd-server "$san,IP:192.0.2.50,IP:2001:db8:1::50"$'\nextendedKeyUsage=serverAuth'
cert fleet-ca controller-1 'extendedKeyUsage=clientAuth'
cert rogue-ca intruder 'extendedKeyUsage=clientAuth'
# A controller whose CN is a BMPString ("ctl-\u20ac": its raw bytes begin with a NUL).
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -utf8 -subj "/CN=ctl-€" \
	-config <(printf '[req]\ndistinguished_name=dn\nstring_mask=default\n[dn]\n') \
	-keyout "$PKI/ctl-bmp.key" -out "$PKI/ctl-bmp.csr" 2>/dev/null
openssl x509 -req -in "$PKI/ctl-bmp.csr" -CA "$PKI/fleet-ca.pem" -CAkey "$PKI/fleet-ca.key" \
	-CAcreateserial -days 1 -extfile <(echo 'extendedKeyUsage=clientAuth') \
	-out "$PKI/ctl-bmp.pem" 2>/dev/null
openssl asn1parse -in "$PKI/ctl-bmp.pem" | grep -q BMPSTRING || fail "ctl-bmp's CN is no BMPString"

listen='"listen": {"address": "0.0.0.0:7443", "tls_cert": "'$PKI/jitd-server.pem'",
  "tls_key": "'$PKI/jitd-server.key'", "client_ca": "'$PKI/fleet-ca.pem'",
  "max_connections": 4, "timeout": "PT3S", "rate_limit": 20}'
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	"$listen"
start_listeners 22
start_jitd
URL=https://192.0.2.1:7443

# req NS CERT METHOD PATH [BODY_FILE [CONTENT_TYPE]]: prints the HTTP status (000 when the
# connection or handshake failed); the body lands in $TMP/body. CERT "-" means none.
req() {
	local ns=$1 cert=$2 method=$3 path=$4 body=${5:-} ct=${6:-application/jwt}
	local args=(-gsS --max-time 10 --cacert "$PKI/fleet-ca.pem" -o "$TMP/body" -w '%{http_code}'
		-X "$method")
	[ "$cert" = - ] || args+=(--cert "$PKI/$cert.pem" --key "$PKI/$cert.key")
	[ -z "$body" ] || args+=(-H "Content-Type: $ct" --data-binary "@$body")
	: >"$TMP/body"
	in_ns "$ns" curl "${args[@]}" "$URL$path" 2>"$TMP/curl.err" || true
}
# expect STATUS ERROR_CODE WHAT NS CERT METHOD PATH [BODY_FILE [CONTENT_TYPE]]
expect() {
	local want=$1 code=$2 what=$3 got
	shift 3
	got=$(req "$@")
	[ "$got" = "$want" ] || fail "$what: HTTP $got, expected $want: $(cat "$TMP/body" "$TMP/curl.err")"
	if [ "$code" != - ]; then
		[ "$(jq -r .error "$TMP/body")" = "$code" ] ||
			fail "$what: error $(cat "$TMP/body"), expected $code"
	fi
	pass "$what: HTTP $want $([ "$code" = - ] || echo "$code")"
}
# unchanged WHAT: the kernel table is as it was at the last snapshot.
snapshot() { kernel_json | strip_expires >"$TMP/kernel.before"; }
unchanged() {
	kernel_json | strip_expires | cmp -s - "$TMP/kernel.before" ||
		fail "$1 changed table inet jitd"
	pass "$1 left the kernel unchanged"
}
audited() {
	jq -s -e --arg ev "$1" --arg code "$2" \
		'any(.[]; .event == $ev and (.code // "") == $code)' "$TMP/state/audit.jsonl" >/dev/null ||
		fail "no $1 audit record with code '$2'"
}

log "a grant over mutual TLS"
sign --src 192.0.2.2 --port 22 --for 120 --jti https-1 >"$TMP/g1"
expect_connect drop "$C1" 192.0.2.1 22
expect 201 - "grant over HTTPS" "$C1" controller-1 POST /v1/grants "$TMP/g1"
[ "$(jq -r .id "$TMP/body")" = https-1 ] && jq -e '.elements | length > 0' "$TMP/body" >/dev/null &&
	jq -e '.expires_at | test("Z$")' "$TMP/body" >/dev/null ||
	fail "201 body lacks id, expires_at or elements: $(cat "$TMP/body")"
pass "201 body: id, expires_at, elements"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant is not in the kernel: $(host_elems)"
expect_connect ok "$C1" 192.0.2.1 22
pass "granted source connects"
jq -s -e 'any(.[]; .event == "grant.applied" and .grant == "https-1"
	and (.peer | test("^https 192[.]0[.]2[.]2:[0-9]+ cn=controller-1$")))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "grant.applied lacks the TLS peer"
pass "audit names the peer and its certificate"

log "refusals: handshake, size, replay, forgery, media type; none touches the kernel"
snapshot
sign --src 192.0.2.3 --port 22 --for 120 --jti https-2 >"$TMP/g2"
# refused_in_handshake WHAT ALERT CERT: a request with CERT ("-": none) fails (000), and the
# server's TLS alert says why. 000 is any failed connection, and curl, which writes its request
# at once, may find the socket reset before it reads the alert (TLS 1.3 sends it after the
# client's Finished): openssl s_client, which writes nothing, reads it.
refused_in_handshake() {
	local args=(-connect 192.0.2.1:7443 -CAfile "$PKI/fleet-ca.pem") out
	expect 000 - "$1: the request fails" "$C1" "$3" POST /v1/grants "$TMP/g2"
	[ "$3" = - ] || args+=(-cert "$PKI/$3.pem" -key "$PKI/$3.key")
	out=$(sleep 2 | in_ns "$C1" timeout 10 openssl s_client "${args[@]}" 2>&1 || true)
	grep -q "alert $2" <<<"$out" || fail "$1: no TLS alert '$2': $(tail -n 5 <<<"$out")"
	pass "$1: refused in the handshake with the TLS alert '$2'"
}
refused_in_handshake "no client certificate" "certificate required" -
refused_in_handshake "certificate from another CA" "unknown ca" intruder
unchanged "handshake refusals"
head -c 20000 /dev/zero | tr '\0' A >"$TMP/big"
expect 413 too_large "a 20 KB body" "$C1" controller-1 POST /v1/grants "$TMP/big"
audited grant.refused too_large
head -c 200000 /dev/zero | tr '\0' A >"$TMP/huge"
# The server answers 413 and closes while curl may still be sending: curl then reports the
# broken pipe (exit 55) instead of the status. Either way the body was refused unread.
got=$(req "$C1" controller-1 POST /v1/grants "$TMP/huge")
[ "$got" = 413 ] || { [ "$got" = 000 ] && grep -qE '\(55\)|\(56\)' "$TMP/curl.err"; } ||
	fail "a 200 KB body: HTTP $got: $(cat "$TMP/body" "$TMP/curl.err")"
pass "a 200 KB body refused by the HTTP layer ($([ "$got" = 413 ] && echo 413 || echo 'connection closed while sending'))"
expect 409 replay "the same grant again" "$C1" controller-1 POST /v1/grants "$TMP/g1"
mkdir -p "$TMP/forger"
"$JITCTL_BIN" keygen --kid ctl --dir "$TMP/forger" >/dev/null
"$JITCTL_BIN" sign --key "$TMP/forger/ctl.key" --kid ctl --aud "$HOST_ID" --sub mallory \
	--src 192.0.2.3 --port 22 --for 120 >"$TMP/forged"
expect 401 bad_signature "a grant signed by another key" "$C1" controller-1 POST /v1/grants "$TMP/forged"
# A key id no file has: a controller proven by its certificate is told where jitd looked.
"$JITCTL_BIN" sign --key "$TMP/forger/ctl.key" --kid nokey --aud "$HOST_ID" --sub mallory \
	--src 192.0.2.3 --port 22 --for 120 >"$TMP/nokey"
expect 401 unknown_key "a grant of a key id no file has" "$C1" controller-1 POST /v1/grants \
	"$TMP/nokey"
jq -e --arg d "$TMP/keys.d" '.message | contains($d)' "$TMP/body" >/dev/null ||
	fail "the message to a proven controller: $(cat "$TMP/body")"
sign --src 192.0.2.3 --port 3389 --for 120 >"$TMP/unprotected"
expect 403 port_not_protected "a grant for a port that is not protected" \
	"$C1" controller-1 POST /v1/grants "$TMP/unprotected"
expect 415 bad_request "Content-Type text/plain" "$C1" controller-1 POST /v1/grants "$TMP/g2" text/plain
audited grant.refused bad_request
printf 'not a token' >"$TMP/junk"
expect 400 malformed "a body that is no JWS" "$C1" controller-1 POST /v1/grants "$TMP/junk"
expect 404 not_found "an unknown path" "$C1" controller-1 GET /v1/nothing
expect 405 bad_request "GET on /v1/grants" "$C1" controller-1 GET /v1/grants
unchanged "every refused request"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22

log "status over mutual TLS"
expect 200 - "GET /v1/status" "$C1" controller-1 GET /v1/status
jq -e '[.grants[].id] == ["https-1"] and (.ports | length) == 1' "$TMP/body" >/dev/null ||
	fail "status over HTTPS: $(head -c 400 "$TMP/body")"
[ "$(jq -S '.grants[0] | del(.kernel_expires_in, .expires_in, .flows)' "$TMP/body")" = \
  "$(status_json | jq -S '.grants[0] | del(.kernel_expires_in, .expires_in, .flows)')" ] ||
	fail "HTTPS status and jitctl status --json disagree"
pass "the same document as jitctl status --json"

log "revocations"
sign_revocation() { "$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" "$@"; }
sign_revocation --revokes https-1 --for 60 --jti rev-1 >"$TMP/r1"
expect 200 - "revocation of https-1" "$C1" controller-1 POST /v1/revocations "$TMP/r1"
[ "$(jq -r .revoked "$TMP/body")" = https-1 ] || fail "revocation reply: $(cat "$TMP/body")"
no_allow_elems || fail "revoked grant still in the kernel: $(host_elems)"
pass "the grant's elements are gone"
expect_connect drop "$C1" 192.0.2.1 22
snapshot
expect 409 replay "the same revocation again" "$C1" controller-1 POST /v1/revocations "$TMP/r1"
expect 400 bad_header "a grant posted as a revocation" "$C1" controller-1 POST /v1/revocations "$TMP/g2"
sign_revocation --revokes https-3 --for 60 >"$TMP/r3"
expect 404 not_found "revocation of a grant not (yet) applied" "$C1" controller-1 POST /v1/revocations "$TMP/r3"
sign --src 192.0.2.3 --port 22 --for 120 --jti https-3 >"$TMP/g3"
expect 409 replay "the grant revoked before it arrived" "$C1" controller-1 POST /v1/grants "$TMP/g3"
unchanged "refused revocations and the pre-revoked grant"

log "metrics (Prometheus text) count what happened above"
expect 200 - "GET /metrics" "$C1" controller-1 GET /metrics
metric() {
	grep -qxF "$1" "$TMP/body" || fail "no line '$1' in /metrics: $(grep -F "${1%% *}" "$TMP/body")"
}
metric 'jitd_grants_applied_total 1'
metric 'jitd_grants_revoked_total 1'
metric 'jitd_active_grants 0'
metric 'jitd_grants_refused_total{code="replay"} 2'
metric 'jitd_grants_refused_total{code="too_large"} 1'
metric 'jitd_grants_refused_total{code="bad_signature"} 1'
metric 'jitd_grants_refused_total{code="unknown_key"} 1'
metric 'jitd_grants_refused_total{code="port_not_protected"} 1'
metric 'jitd_grants_refused_total{code="bad_request"} 1'
metric 'jitd_grants_refused_total{code="malformed"} 1'
metric 'jitd_revocations_refused_total{code="replay"} 1'
metric 'jitd_revocations_refused_total{code="bad_header"} 1'
metric 'jitd_revocations_refused_total{code="not_found"} 1'
metric 'jitd_state_write_seconds_count 1'
# Admitted or refused after verifying: https-1, its replay, the unprotected port, https-3.
metric 'jitd_admit_seconds_count 4'
grep -qE '^jitd_kernel_transaction_seconds_count [2-9]' "$TMP/body" ||
	fail "kernel transactions not counted: $(grep kernel_transaction_seconds_count "$TMP/body")"
[ "$(sed -n 's/^jitd_denied_packets_total //p' "$TMP/body")" = "$(denied_packets)" ] ||
	fail "denied packets differ from the kernel counter"
pass "every outcome above is counted, denied packets match the kernel counter"

log "a controller whose certificate's CN is a BMPString"
sign --src 203.0.113.9 --port 22 --for 120 --jti https-bmp >"$TMP/gbmp"
expect 201 - "grant from a controller whose CN is a BMPString" "$C1" ctl-bmp POST /v1/grants \
	"$TMP/gbmp"
jq -s -e 'any(.[]; .event == "grant.applied" and .grant == "https-bmp"
	and (.peer | test(" cn=ctl-___$")))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "grant.applied lacks the BMPString CN: $(grep https-bmp "$TMP/state/audit.jsonl")"
pass "audit: a BMPString CN as UTF-8, the bytes beyond ASCII shown as _"
"$JITCTL_BIN" -s "$SOCK" revoke https-bmp >/dev/null || fail "revoke https-bmp failed"

log "batch: several grants in one POST /v1/grants/batch, each with its own result"
sign --src 192.0.2.2 --port 22 --for 120 --jti batch-1 >"$TMP/b1"
sign --src 192.0.2.3 --port 22 --for 120 --jti batch-2 >"$TMP/b2"
# A good grant, a forged one, a good one, a replayed one: the good ones apply, in order.
jq -Rn '{grants: [inputs]}' "$TMP/b1" "$TMP/forged" "$TMP/b2" "$TMP/g1" >"$TMP/batch"
expect 200 - "a batch of four" "$C1" controller-1 POST /v1/grants/batch "$TMP/batch" application/json
[ "$(jq -c '[.results[].status]' "$TMP/body")" = '[201,401,201,409]' ] &&
	[ "$(jq -r '.results[0].grant.id, .results[2].grant.id' "$TMP/body" | paste -sd,)" = batch-1,batch-2 ] &&
	[ "$(jq -r '.results[1].error, .results[3].error' "$TMP/body" | paste -sd,)" = bad_signature,replay ] &&
	jq -e '.results[0].grant.elements | length > 0' "$TMP/body" >/dev/null ||
	fail "batch results: $(cat "$TMP/body")"
pass "results in request order: 201 with the grant, 401 bad_signature, 201, 409 replay"
has_elem allow4_addr "192.0.2.2 tcp 22" && has_elem allow4_addr "192.0.2.3 tcp 22" ||
	fail "the batch's grants are not in the kernel: $(host_elems)"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
pass "both granted sources connect"
jq -s -e '[.[] | select(.event == "grant.applied" and (.grant == "batch-1" or .grant == "batch-2"))]
	| length == 2' "$TMP/state/audit.jsonl" >/dev/null || fail "batch grants not audited"
jq -s -e '[.[] | select(.event == "grant.refused" and .code == "bad_signature")] | length == 2' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the batch's forged grant is not audited"
pass "each grant of the batch audited on its own"
# A refusal's message is cut at 255 bytes: here inside a two-byte character of the jti, which
# must not make the result an internal error.
long_jti=x$(printf 'é%.0s' $(seq 124))
sign --src 192.0.2.9 --port 22 --for 120 --jti "$long_jti" >"$TMP/b3"
jq -Rn '{grants: [inputs]}' "$TMP/b3" >"$TMP/batch"
for want in '[201,null]' '[409,"replay"]'; do
	expect 200 - "a batch of a grant whose jti is 249 bytes" "$C1" controller-1 POST \
		/v1/grants/batch "$TMP/batch" application/json
	[ "$(jq -c '[.results[] | .status, .error]' "$TMP/body")" = "$want" ] ||
		fail "batch results: $(cat "$TMP/body")"
done
pass "sent again, 409 replay, its message cut whole: $(jq '.results[0].message' "$TMP/body")"
snapshot
expect 415 bad_request "a batch as application/jwt" "$C1" controller-1 POST /v1/grants/batch "$TMP/batch"
printf '{"grants": []}' >"$TMP/bad"
expect 400 bad_request "an empty batch" "$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
jq -Rn '{grants: [inputs], also: 1}' "$TMP/b1" >"$TMP/bad"
expect 400 bad_request "a batch with another member" "$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
printf '{"grants": [1]}' >"$TMP/bad"
expect 400 bad_request "a batch of a number" "$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
printf '{"grants": ["a"], "grants": ["b"]}' >"$TMP/bad"
expect 400 bad_request "a batch with a duplicate member" "$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
printf '{"grants": ["a"]} x' >"$TMP/bad"
expect 400 bad_request "a batch with trailing data" "$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
# jansson quotes the body near the error; a JSON string may hold C1 controls (U+009B is a CSI
# that moves a terminal's cursor). Neither the reply nor the audit trail repeats them.
printf '"\xc2\x9b1F\xc2\x9b2K"' >"$TMP/bad"
expect 400 bad_request "a batch of a string with terminal controls" \
	"$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
for text in "$(jq -r .message "$TMP/body")" "$(jq -r 'select(.message // "" |
	startswith("batch body")) | .message' "$TMP/state/audit.jsonl" | tail -n1)"; do
	[ -n "$text" ] && [ -z "$(printf %s "$text" | LC_ALL=C tr -d ' -~')" ] ||
		fail "the refusal repeats the body's bytes: $(printf %s "$text" | od -c | head -3)"
done
pass "the refusal shows the body's text as printable ASCII: $(jq -r .message "$TMP/body")"
jq -n '{grants: [range(65) | "x"]}' >"$TMP/bad"
expect 400 bad_request "a batch of 65" "$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
jq -n '{grants: [range(41) | "x"]}' >"$TMP/bad"
expect 429 rate_limited "a batch of 41, over the rate limit's burst of 40" \
	"$C1" controller-1 POST /v1/grants/batch "$TMP/bad" application/json
[ "$(jq -r .message "$TMP/body")" = "this batch holds more grants than the rate limit allows \
at once for this address" ] || fail "the 429 does not name whose budget: $(cat "$TMP/body")"
unchanged "every refused batch"
for id in batch-1 batch-2 "$long_jti"; do
	"$JITCTL_BIN" -s "$SOCK" revoke "$id" >/dev/null || fail "cannot revoke $id"
done
no_allow_elems || fail "revoked batch grants still in the kernel: $(host_elems)"

log "connection limit (4), idle timeout (3 s), rate limit (20/s per address)"
# Four clients (addresses) of C1, each its own for the endpoint's fair share.
for a in 192.0.2.4 192.0.2.5; do ip -n "$C1" addr add "$a/24" dev eth0; done
# Four idle connections, one from each, fill the endpoint. No client holds two, so none gives
# way: a fifth waits in the backlog until one closes. Then one client holding three and
# another one: a new connection takes the place of the first one's longest idle at once.
cat >"$TMP/idle.py" <<'PY'
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
def conn(src, timeout=5):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("192.0.2.1", 7443))
    return s
# True when served; False when the handshake waits past timeout. Anything else (a reset, a
# TLS error) is no wait in the backlog: it ends the script with its traceback.
def handshake(src, timeout):
    s = conn(src, timeout)
    try:
        ctx.wrap_socket(s, server_hostname="192.0.2.1").close()
        return True
    except socket.timeout:
        s.close()
        return False
idle = [conn(a) for a in ("192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5")]
time.sleep(0.5)
if handshake("192.0.2.2", 1.0):
    sys.exit("a fifth connection was served while four clients held one each")
print("fifth connection waits")
# The server closes idle connections after its timeout: recv sees EOF, not our 5 s timeout.
start = time.monotonic()
for s in idle:
    if s.recv(1) != b"":
        sys.exit("an idle connection got data")
waited = time.monotonic() - start
if waited > 4.5:
    sys.exit("idle connections lived %.1f s" % waited)
print("idle connections closed by the server")
if not handshake("192.0.2.2", 5.0):
    sys.exit("no connection served after the idle ones closed")
print("served again")
held = [conn(a) for a in ("192.0.2.2", "192.0.2.2", "192.0.2.2", "192.0.2.3")]
time.sleep(0.5)
if not handshake("192.0.2.3", 2.0):
    sys.exit("a new connection waited while one client held three of four")
held[0].settimeout(1.0)
try:
    if held[0].recv(1) != b"":
        sys.exit("the connection that gave way got data")
except socket.timeout:
    sys.exit("the longest idle connection of the client holding three is still open")
for s in held[1:]:
    s.setblocking(False)
    try:
        s.recv(1)
        sys.exit("a connection closed that should have stayed")
    except BlockingIOError:
        pass
print("the longest idle of three gave way")
for s in held:
    s.close()
PY
in_ns "$C1" python3 "$TMP/idle.py" "$PKI/fleet-ca.pem" "$PKI/controller-1.pem" \
	"$PKI/controller-1.key" >"$TMP/idle.out" 2>&1 || fail "connection limit: $(cat "$TMP/idle.out")"
pass "max_connections holds and is shared: $(paste -sd, "$TMP/idle.out")"
# One client fills the endpoint with connections that each pipeline 2000 requests and take the
# replies a little at a time, every read inside the write timeout: each connection is always
# busy with a reply, none idle. A reply made is the client's time, not jitd's: another client
# is still served at once (within 1 s; the write timeout is 3 s).
cat >"$TMP/slowread.py" <<'PY'
import socket, ssl, sys, threading, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
def conn(src, timeout=5):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("192.0.2.1", 7443))
    return s
held = [ctx.wrap_socket(conn("192.0.2.4"), server_hostname="192.0.2.1") for _ in range(4)]
for s in held:
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" * 2000)
stop = threading.Event()
def take_slowly(s):
    while not stop.is_set():
        try:
            if not s.recv(256):
                return
        except OSError:
            return
        stop.wait(1)
for s in held:
    threading.Thread(target=take_slowly, args=(s,), daemon=True).start()
time.sleep(2)
start = time.monotonic()
s = conn("192.0.2.5", 1)
try:
    ctx.wrap_socket(s, server_hostname="192.0.2.1").close()
except socket.timeout:
    sys.exit("a new client waited %.1f s" % (time.monotonic() - start))
print("another client served in %.1f s" % (time.monotonic() - start))
stop.set()
for s in held:
    s.close()
PY
in_ns "$C1" python3 "$TMP/slowread.py" "$PKI/fleet-ca.pem" "$PKI/controller-1.pem" \
	"$PKI/controller-1.key" >"$TMP/slowread.out" 2>&1 ||
	fail "replies taken slowly kept a client out: $(cat "$TMP/slowread.out")"
pass "replies taken slowly on every connection: $(cat "$TMP/slowread.out")"
# Requests pipelined past the connection's input limit (HTTP_INPUT_MAX, 88 KiB) in one send:
# reading stops there, mid TLS record, and must start again once evhttp has taken what it read.
# Every request is answered (404, or 429 past the rate limit), none left waiting for bytes the
# socket will not signal again (the connection would be cut at listen.timeout, 3 s). The first
# is a grant with an empty body, which waits for a verifier thread (a 400 after): the requests
# after it are answered after it, in order.
cat >"$TMP/pipeline.py" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
n = 4000
s = socket.socket()
s.bind(("192.0.2.2", 0))
s.settimeout(10)
s.connect(("192.0.2.1", 7443))
t = ctx.wrap_socket(s, server_hostname="192.0.2.1")
t.sendall(b"POST /v1/grants HTTP/1.1\r\nHost: a\r\nContent-Type: application/jwt\r\n"
          b"Content-Length: 0\r\n\r\n" + b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" * n)
got, count, why = b"", 0, ""
while count < n + 1:
    try:
        d = t.recv(65536)
    except socket.timeout:
        why = ", then nothing for 10 s"
        break
    if not d:
        why = ", then the connection closed"
        break
    got += d
    count = got.count(b"HTTP/1.1 ")
t.close()
first = got[:12].decode(errors="replace")
print("%d of %d requests (%d bytes) answered, the grant's '%s'%s" % (count, n + 1, 28 * n, first,
      why))
sys.exit(0 if count == n + 1 and first == "HTTP/1.1 400" else 1)
PY
in_ns "$C1" python3 "$TMP/pipeline.py" "$PKI/fleet-ca.pem" "$PKI/controller-1.pem" \
	"$PKI/controller-1.key" >"$TMP/pipeline.out" 2>&1 ||
	fail "requests pipelined past the input limit over TLS: $(cat "$TMP/pipeline.out")"
pass "pipelined past the input limit over TLS: $(cat "$TMP/pipeline.out")"
# A client trickling its handshake, a byte a second, restarts the idle timeout with each byte;
# the handshake and the first request must still be done within the timeout of the accept.
in_ns "$C1" /usr/bin/python3 "$(dirname "$0")/trickle.py" 192.0.2.1:7443 1 8 5 \
	>"$TMP/trickle.out" 2>&1 || fail "trickled handshake: $(cat "$TMP/trickle.out")"
pass "a handshake trickled a byte a second is cut at the timeout: $(cat "$TMP/trickle.out")"
# The same after one quick request on a keep-alive connection: the next whole request must come
# within the timeout of the reply, however each byte restarts the idle timeout.
in_ns "$C1" /usr/bin/python3 "$(dirname "$0")/trickle.py" 192.0.2.1:7443 1 8 5 \
	"$PKI/fleet-ca.pem" "$PKI/controller-1.pem" "$PKI/controller-1.key" >"$TMP/trickle.out" 2>&1 ||
	fail "a request trickled on keep-alive: $(cat "$TMP/trickle.out")"
pass "a request trickled a byte a second after a reply is cut at the timeout: $(cat "$TMP/trickle.out")"
# 150 cheap requests (404s) on one keep-alive connection from C2, as fast as they go: the
# burst (40) passes, then about 20 a second; the limit applies before routing.
cat >"$TMP/flood.py" <<'PY'
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
conn = http.client.HTTPSConnection("198.51.100.1", 7443, context=ctx, timeout=10)

codes = {}
retry_after = set()
for _ in range(150):
    conn.request("GET", "/v1/nothing")
    r = conn.getresponse()
    r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
    if r.status == 429:
        retry_after.add(r.getheader("Retry-After"))
print(codes.get(404, 0), codes.get(429, 0), sum(codes.values()), ",".join(sorted(map(str, retry_after))), file=sys.stdout)
PY
read -r ok limited total retry < <(in_ns "$C2" python3 "$TMP/flood.py" "$PKI/fleet-ca.pem" \
	"$PKI/controller-1.pem" "$PKI/controller-1.key") || fail "rate test failed"
[ "$ok" -ge 40 ] && [ "$limited" -ge 1 ] && [ "$total" -eq 150 ] && [ "$retry" = 1 ] ||
	fail "rate limit: $ok x 404, $limited x 429 (Retry-After '$retry') of $total"
pass "rate limit: $ok served, $limited refused with 429 and Retry-After: 1"
expect 200 - "another address keeps its own budget" "$C1" controller-1 GET /v1/status
# What the endpoint did to protect itself, counted in /metrics: the idle connection that gave
# way, the trickles cut at the deadline, the pause while four clients held one each, and every
# 429 (the flood's, and the batch over the burst before it).
[ "$(req "$C1" controller-1 GET /metrics)" = 200 ] || fail "GET /metrics: $(cat "$TMP/body")"
metric() { awk -v k="$1" '$1 == k { print $2 }' "$TMP/body"; }
[ "$(metric 'jitd_http_connections_closed_total{reason="gave_way"}')" -ge 1 ] &&
	[ "$(metric 'jitd_http_connections_closed_total{reason="deadline"}')" -ge 2 ] &&
	[ "$(metric 'jitd_http_accept_paused_total')" -ge 1 ] &&
	[ "$(metric 'jitd_http_rate_limited_total')" -ge $((limited + 1)) ] &&
	[ "$(metric 'jitd_http_connections')" -ge 1 ] ||
	fail "endpoint metrics: $(grep '^jitd_http' "$TMP/body" | paste -sd' ')"
pass "endpoint metrics: $(grep '^jitd_http' "$TMP/body" | paste -sd' ')"

log "TLS without client certificates, on [::] (IPv6 and IPv4 alike)"
stop_jitd TERM
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "[::]:7443", "tls_cert": "'$PKI/jitd-server.pem'",
	  "tls_key": "'$PKI/jitd-server.key'"}'
start_jitd
URL=https://[2001:db8:1::1]:7443
sign --src 2001:db8:1::2 --port 22 --for 120 --jti tls6-1 >"$TMP/t6"
expect_connect drop "$C1" 2001:db8:1::1 22
expect 201 - "a signed grant over IPv6 needs no client certificate" "$C1" - POST /v1/grants "$TMP/t6"
has_elem "$(addr_set 2001:db8:1::2)" "2001:db8:1::2 tcp 22" ||
	fail "the IPv6 grant is not in the kernel: $(host_elems)"
expect_connect ok "$C1" 2001:db8:1::1 22
jq -s -e 'any(.[]; .event == "grant.applied" and .grant == "tls6-1"
	and (.peer | test("^https \\[2001:db8:1::2\\]:[0-9]+$")))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "grant.applied does not name the IPv6 peer: $(grep tls6-1 "$TMP/state/audit.jsonl")"
pass "audit names the IPv6 peer, without a certificate name"
# Grants are signed; status and metrics are not, so without mutual TLS only loopback gets them.
expect 403 permission_denied "status to an unverified network client" "$C1" - GET /v1/status
expect 403 permission_denied "metrics to an unverified network client" "$C1" - GET /metrics
URL=https://192.0.2.1:7443
sign --src 192.0.2.2 --port 22 --for 120 --jti tls4-1 >"$TMP/t4"
expect 201 - "a grant over IPv4 to the same [::] listener" "$C1" - POST /v1/grants "$TMP/t4"
jq -s -e 'any(.[]; .event == "grant.applied" and .grant == "tls4-1"
	and (.peer | test("^https 192[.]0[.]2[.]2:[0-9]+$")))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "an IPv4 peer of [::] is not named as IPv4: $(grep tls4-1 "$TMP/state/audit.jsonl")"
pass "audit names an IPv4 peer of [::] by its IPv4 address"
expect 403 permission_denied "status to an unverified IPv4 client" "$C1" - GET /v1/status
URL=https://[::1]:7443
expect 200 - "status to a loopback client over TLS" "$SRV" - GET /v1/status
jq -e '[.grants[].id] | sort == ["tls4-1", "tls6-1"]' "$TMP/body" >/dev/null ||
	fail "status over [::1] lacks the grants: $(cat "$TMP/body")"
expect 200 - "metrics to a loopback client over TLS" "$SRV" - GET /metrics
grep -qxF 'jitd_grants_applied_total 2' "$TMP/body" || fail "metrics over [::1]: $(cat "$TMP/body")"
URL=https://127.0.0.1:7443
expect 200 - "status to an IPv4 loopback client of [::] (it arrives mapped)" "$SRV" - GET /v1/status
for id in tls6-1 tls4-1; do
	"$JITCTL_BIN" -s "$SOCK" revoke "$id" >/dev/null || fail "cannot revoke $id"
done
no_allow_elems || fail "revoked grants still in the kernel: $(host_elems)"

log "plain HTTP, loopback only"
stop_jitd TERM
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
start_jitd
sign --src 192.0.2.3 --port 22 --for 120 --jti plain-1 >"$TMP/p1"
code=$(post_jwt /v1/grants "$TMP/p1")
[ "$code" = 201 ] || fail "plain HTTP grant: $code $(cat "$TMP/body")"
has_elem allow4_addr "192.0.2.3 tcp 22" || fail "plain HTTP grant not in the kernel"
pass "grant over plain HTTP on loopback applies"
# To a client nothing proves, a refusal names no file of keys_dir (the trail does).
mkdir -p "$TMP/stranger"
"$JITCTL_BIN" keygen --kid ctl --dir "$TMP/stranger" >/dev/null
"$JITCTL_BIN" sign --key "$TMP/stranger/ctl.key" --kid nokey --aud "$HOST_ID" --sub eve \
	--src 192.0.2.3 --port 22 --for 120 --jti plain-nokey >"$TMP/nokey"
code=$(post_jwt /v1/grants "$TMP/nokey")
[ "$code" = 401 ] && jq -e --arg d "$TMP/keys.d" '.error == "unknown_key" and
	(.message | contains($d) | not)' "$TMP/body" >/dev/null ||
	fail "a grant of an unknown key id over plain HTTP: $code $(cat "$TMP/body")"
jq -s -e --arg d "$TMP/keys.d" 'any(.[]; .event == "grant.refused" and .code == "unknown_key"
	and (.peer | startswith("http 127.0.0.1:")) and (.message | contains($d)))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the trail lacks the refusal with its path"
pass "an unknown key id over plain HTTP: 401 unknown_key, keys_dir in the trail, not the reply"
code=$(in_ns "$SRV" curl -sS --max-time 10 -o "$TMP/body" -w '%{http_code}' http://127.0.0.1:7080/v1/status)
[ "$code" = 200 ] && jq -e '[.grants[].id] == ["plain-1"]' "$TMP/body" >/dev/null ||
	fail "plain HTTP status: $code"
pass "status to a loopback client"
code=$(in_ns "$SRV" curl -sS --max-time 10 -o "$TMP/body" -w '%{http_code}' http://127.0.0.1:7080/metrics)
[ "$code" = 200 ] && grep -qxF 'jitd_grants_applied_total 1' "$TMP/body" || fail "plain HTTP metrics: $code"
pass "metrics to a loopback client"
# Any local user reaches the loopback address, and status names who may connect from where: it
# goes to root's clients only (jitctl reads it over the control socket, the jitd group's).
# nobody cannot write in $TMP: curl prints the body and then its code on a line of its own.
as_nobody() { in_ns "$SRV" setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
out=$(as_nobody curl -sS --max-time 10 -w '\n%{http_code}' http://127.0.0.1:7080/v1/status) || true
[ "${out##*$'\n'}" = 403 ] && [ "$(jq -r .error <<<"${out%$'\n'*}")" = permission_denied ] ||
	fail "status to another local user's client: $out"
grep -q plain-1 <<<"$out" && fail "the refusal names the grant: $out"
grep -q "status refused to http 127.0.0.1:[0-9]*: its socket is uid 65534's, neither root's" \
	"$TMP/jitd.log" || fail "the log does not say why: $(grep 'status refused' "$TMP/jitd.log")"
pass "status to another local user's loopback client: HTTP 403 permission_denied"
out=$(as_nobody curl -sS --max-time 10 -w '\n%{http_code}' http://127.0.0.1:7080/metrics) || true
[ "${out##*$'\n'}" = 200 ] && grep -qxF 'jitd_grants_applied_total 1' <<<"$out" ||
	fail "metrics to another local user's client: $out"
pass "metrics (counts, no names) to another local user's loopback client: HTTP 200"
# Every local user reaches the loopback address: root's sockets are a client of their own for
# the rate limit (the kernel says whose socket it is), so another user spending its budget
# leaves a local root controller's alone. All other users are one client (a user can own
# sockets as many subordinate uids). At 1 request a second, a burst of 2, within a second.
stop_jitd TERM
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true, "rate_limit": 1}'
start_jitd
# One process, its sockets made as each user in turn (the kernel records who created each), so
# that all six requests come within a second of each other however loaded the machine is.
# Each 429 names whose budget it spent, and the log the user.
out=$(in_ns "$SRV" /usr/bin/python3 -c '
import http.client, json, os
limited = []
def conn(uid):
    os.seteuid(uid)
    c = http.client.HTTPConnection("127.0.0.1", 7080, timeout=10)
    c.connect()
    os.seteuid(0)
    return c
def get(c):
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read()
    if r.status == 429:
        limited.append(json.loads(body)["message"])
    return str(r.status)
nobody, other, root = conn(65534), conn(4243), conn(0)
print(",".join([get(nobody), get(nobody), get(nobody), get(other), get(root), get(root)]))
print("\n".join(limited))') || fail "loopback rate limit by user: $out"
codes=$(head -n1 <<<"$out")
[ "$codes" = 200,200,429,429,200,200 ] ||
	fail "loopback rate limit: nobody x3, uid 4243, root x2 got $codes"
msg="too many requests from local users other than root and jitd's own, who share one budget"
[ "$(tail -n +2 <<<"$out")" = "$msg"$'\n'"$msg" ] || fail "the 429s on loopback say: $out"
grep -q "(latest: http 127.0.0.1:[0-9]* uid 65534)" "$TMP/jitd.log" ||
	fail "the log does not name the user: $(grep 'endpoint: refused' "$TMP/jitd.log")"
pass "rate limit on loopback: nobody 200,200,429, uid 4243 429 (one budget), root 200,200"
stop_jitd TERM
write_config drop '[]' '[{"port": 22}]' \
	'"listen": {"address": "192.0.2.1:7080", "insecure_plaintext": true}'
rc=0
in_ns "$SRV" "$JITD_BIN" -c "$CONFIG" --check-config >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "only on a loopback address" "$TMP/out" ||
	fail "plain HTTP on a network address was accepted: $(cat "$TMP/out")"
pass "plain HTTP on a network address is a configuration error"
# --check-config (what the packages ask before a restart) loads the TLS files as the start would.
check_listen() { # check_listen WHAT MESSAGE LISTEN_JSON
	local rc=0
	write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M"}]' "$3"
	in_ns "$SRV" "$JITD_BIN" -c "$CONFIG" --check-config >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -qF "$2" "$TMP/out" || fail "$1: exit $rc, $(cat "$TMP/out")"
	pass "--check-config refuses $1"
}
check_listen "a key that does not match the certificate" "tls_key $PKI/controller-1.key: error:" \
	'"listen": {"address": "0.0.0.0:7443", "tls_cert": "'$PKI/jitd-server.pem'",
	  "tls_key": "'$PKI/controller-1.key'"}'
check_listen "a certificate that is not one" "cannot load tls_cert $PKI/jitd-server.key" \
	'"listen": {"address": "0.0.0.0:7443", "tls_cert": "'$PKI/jitd-server.key'",
	  "tls_key": "'$PKI/jitd-server.key'"}'
check_listen "a client CA that cannot be read" "cannot load client_ca $TMP/none.pem" \
	'"listen": {"address": "0.0.0.0:7443", "tls_cert": "'$PKI/jitd-server.pem'",
	  "tls_key": "'$PKI/jitd-server.key'", "client_ca": "'$TMP/none.pem'"}'
write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M"}]' \
	'"listen": {"address": "0.0.0.0:7443", "tls_cert": "'$PKI/jitd-server.pem'",
	  "tls_key": "'$PKI/jitd-server.key'", "client_ca": "'$PKI/fleet-ca.pem'"}'
in_ns "$SRV" "$JITD_BIN" -c "$CONFIG" --check-config >"$TMP/out" 2>&1 ||
	fail "--check-config refused the working TLS configuration: $(cat "$TMP/out")"
pass "--check-config accepts the working TLS configuration"

log "an address no interface has yet (a boot before the network): jitd starts all the same"
# The unit starts before network-pre.target; a start that failed to bind would leave the
# protected ports open until a restart came after the address.
for a in 192.0.2.50/24 '2001:db8:1::50/64'; do
	ip=${a%/*}
	[ "$ip" = 192.0.2.50 ] || ip="[$ip]"
	write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT10M"}]' \
		'"listen": {"address": "'$ip':7443", "tls_cert": "'$PKI/jitd-server.pem'",
		  "tls_key": "'$PKI/jitd-server.key'", "client_ca": "'$PKI/fleet-ca.pem'"}'
	start_jitd
	expect_connect drop "$C1" 192.0.2.1 22
	ip -n "$SRV" addr add "$a" dev c1 nodad
	URL=https://$ip:7443
	wait_until 5 "the address $a usable" in_ns "$C1" ping -c1 -W1 "${a%/*}"
	expect 200 - "metrics at $ip, added after the start" "$C1" controller-1 GET /metrics
	stop_jitd TERM
done
