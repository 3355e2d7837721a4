# Reloading the controller endpoint's TLS files (SIGHUP, jitctl reload), as a certificate
# renewal does: a server certificate written over the old one is served to new connections
# after the reload (not before), and grants go on over mutual TLS, also on a keep-alive
# connection from before; a client CA replaced in place lets the new CA's controllers in and
# keeps the old CA's out, also a keep-alive connection of theirs from before the reload; a key
# that does not match its certificate refuses the whole reload (audited, the policy change in
# the same file not applied, the kernel unchanged) while the endpoint keeps serving what it had; mended, the same file
# reloads, policy and TLS together. Throughout, /metrics gives the served certificate's expiry,
# and a certificate near or past it is warned of at start, at reload, when it runs out while
# the agent runs, and by --check-config.
. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || fail "curl is needed (scripts/install-deps.sh installs it)"
setup_net
setup_keys
ca fleet-ca
ca next-ca
san=$'subjectAltName=IP:192.0.2.1\nextendedKeyUsage=serverAuth'
cert fleet-ca server-1 "$san"
cert fleet-ca server-2 "$san" 30
cert fleet-ca controller-1 'extendedKeyUsage=clientAuth'
cert next-ca controller-2 'extendedKeyUsage=clientAuth'
# The files jitd is configured with are copies, so that renewing one means writing over it.
TLS="$TMP/tls"
mkdir -p "$TLS"
install -m 0600 "$PKI/server-1.pem" "$TLS/server.pem"
install -m 0600 "$PKI/server-1.key" "$TLS/server.key"
install -m 0600 "$PKI/fleet-ca.pem" "$TLS/client-ca.pem"
listen='"listen": {"address": "192.0.2.1:7443", "tls_cert": "'$TLS/server.pem'",
  "tls_key": "'$TLS/server.key'", "client_ca": "'$TLS/client-ca.pem'"}'
port22='{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}'
port2222='{"port": 2222, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}'
write_config drop '[]' "[$port22]" "$listen"
start_listeners 22
start_jitd

# keepalive CLIENT NAME SRC1 SRC2: one keep-alive connection as CLIENT posts a grant from SRC1
# at once, and one from SRC2 once $TMP/NAME.go exists; what it saw goes to $TMP/NAME.out.
keepalive() {
	sign --src "$3" --port 22 --for 120 --jti "$2-1" >"$TMP/$2-1"
	sign --src "$4" --port 22 --for 120 --jti "$2-2" >"$TMP/$2-2"
	ip netns exec "$C1" /usr/bin/python3 "$(dirname "$0")/keepalive_post.py" 192.0.2.1:7443 \
		"$PKI/fleet-ca.pem" "$PKI/$1.pem" "$PKI/$1.key" "$TMP/$2-1" "$TMP/$2.go" "$TMP/$2-2" \
		>"$TMP/$2.out" 2>&1 &
	BG_PIDS+=($!)
	wait_until 10 "$2's first answer" grep -q . "$TMP/$2.out"
	[ "$(head -1 "$TMP/$2.out")" = "201 -" ] || fail "$2's first grant: $(cat "$TMP/$2.out")"
	has_elem allow4_addr "$3 tcp 22" || fail "$2's first grant is not in the kernel"
}
# keepalive_then NAME: the second grant goes; its answer and whether the connection was closed.
keepalive_then() {
	local i
	touch "$TMP/$1.go"
	for ((i = 0; i < 125; i++)); do
		grep -qE '^(open|closed)$' "$TMP/$1.out" && break
		sleep 0.2
	done
	grep -qE '^(open|closed)$' "$TMP/$1.out" || fail "$1: no end within 25 s: $(cat "$TMP/$1.out")"
	tail -n 2 "$TMP/$1.out" | paste -sd ' '
}

# post CLIENT FILE: the HTTP status of a grant posted as CLIENT (000: the handshake failed).
post() {
	in_ns "$C1" curl -gsS --max-time 10 --cacert "$PKI/fleet-ca.pem" \
		--cert "$PKI/$1.pem" --key "$PKI/$1.key" -o "$TMP/body" -w '%{http_code}' \
		-H 'Content-Type: application/jwt' --data-binary "@$2" \
		https://192.0.2.1:7443/v1/grants 2>"$TMP/curl.err" || true
}
# served_serial [CLIENT]: the serial of the certificate a new connection is given.
served_serial() {
	local c=${1:-controller-1}
	in_ns "$C1" openssl s_client -connect 192.0.2.1:7443 -cert "$PKI/$c.pem" \
		-key "$PKI/$c.key" </dev/null 2>/dev/null | openssl x509 -noout -serial
}
# applies CLIENT SRC JTI WHAT: a grant for SRC posted as CLIENT is answered 201 and in the kernel.
applies() {
	local code
	sign --src "$2" --port 22 --for 120 --jti "$3" >"$TMP/$3"
	code=$(post "$1" "$TMP/$3")
	[ "$code" = 201 ] || fail "$4: HTTP $code $(cat "$TMP/body" "$TMP/curl.err")"
	has_elem allow4_addr "$2 tcp 22" || fail "$4: $3 is not in the kernel: $(host_elems)"
	pass "$4"
}
serial_of() { openssl x509 -noout -serial -in "$PKI/$1.pem"; }
# short_cert NAME SECONDS: a server certificate from fleet-ca that ends SECONDS from now (openssl
# x509 counts in days; openssl ca takes an end date).
short_cert() {
	mkdir -p "$PKI/db"
	: >"$PKI/db/index.txt"
	printf '%s\n' 1000 >"$PKI/db/serial"
	printf '[ca]\ndefault_ca = d\n[d]\ndatabase = %s\nserial = %s\nnew_certs_dir = %s\n%s\n' \
		"$PKI/db/index.txt" "$PKI/db/serial" "$PKI/db" \
		$'policy = p\ndefault_md = sha256\n[p]\ncommonName = supplied' >"$PKI/db/ca.cnf"
	printf '%s\n' "$san" >"$PKI/$1.ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
		-keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
	openssl ca -batch -config "$PKI/db/ca.cnf" -cert "$PKI/fleet-ca.pem" \
		-keyfile "$PKI/fleet-ca.key" -in "$PKI/$1.csr" -out "$PKI/$1.pem" -extfile "$PKI/$1.ext" \
		-enddate "$(date -u -d "+$2 seconds" +%Y%m%d%H%M%SZ)" >/dev/null 2>&1 ||
		fail "openssl ca could not issue $1"
}
not_after_of() { date -d "$(openssl x509 -noout -enddate -in "$PKI/$1.pem" | cut -d= -f2)" +%s; }
# metric CLIENT NAME: the value of the sample NAME (labels included) from /metrics over mutual
# TLS as CLIENT.
metric() {
	in_ns "$C1" curl -gsS --max-time 10 --cacert "$PKI/fleet-ca.pem" --cert "$PKI/$1.pem" \
		--key "$PKI/$1.key" https://192.0.2.1:7443/metrics | awk -v n="$2" '$1 == n { print $2 }'
}
metric_not_after() { metric "$1" jitd_tls_certificate_not_after_seconds; }
# reloads_are CLIENT APPLIED REFUSED LAST_OK PENDING: the reload metrics say so.
reloads_are() {
	local got
	got="$(metric "$1" 'jitd_config_reloads_total{result="applied"}') $(metric "$1" \
		'jitd_config_reloads_total{result="refused"}') $(metric "$1" \
		jitd_config_last_reload_successful) $(metric "$1" jitd_config_restart_pending)"
	[ "$got" = "$2 $3 $4 $5" ] ||
		fail "reload metrics (applied refused last_ok pending): $got, want $2 $3 $4 $5"
}
# status_not_after: the served certificate's end as jitctl status --json says it (epoch seconds).
status_not_after() { status_json | jq -r '.endpoint.certificate.not_after | fromdateiso8601'; }
# status_says NAME LEFT STATE: jitctl status --json gives NAME's end, the time left until it
# and its STATE, and jitctl status the endpoint and that end, LEFT (an extended regex) the way
# it says what is left.
status_says() {
	local left=$(($(not_after_of "$1") - $(date +%s))) got
	[ "$(status_not_after)" = "$(not_after_of "$1")" ] ||
		fail "status: not_after $(status_not_after), $1's $(not_after_of "$1")"
	[ "$(status_json | jq -r .endpoint.certificate.state)" = "$3" ] ||
		fail "status: state $(status_json | jq -r .endpoint.certificate.state), want $3"
	got=$(status_json | jq .endpoint.certificate.expires_in)
	[ "$got" -le "$left" ] && [ "$got" -ge $((left - 10)) ] ||
		fail "status: expires_in $got, $1 has $left s left"
	"$JITCTL_BIN" -s "$SOCK" status >"$TMP/status.txt" || fail "jitctl status failed"
	local ep="https 192\.0\.2\.1:7443, mutual TLS, [0-9]+/64 connections, 100 req/s per source"
	grep -qE "^Controller:     $ep$" "$TMP/status.txt" &&
		grep -qE "^Certificate:    $TLS/server\.pem, until [0-9TZ:-]+ \($2\)$" "$TMP/status.txt" ||
		fail "jitctl status says: $(cat "$TMP/status.txt")"
}
loaded() { jq -s '[.[] | select(.event == "config.loaded")] | length' "$TMP/state/audit.jsonl"; }
loaded_since() { [ "$(loaded)" -gt "$1" ]; }
refused_count() { jq -s '[.[] | select(.event == "config.refused")] | length' "$TMP/state/audit.jsonl"; }
protected_ports() {
	kernel_json | jq -c '[.nftables[] | select(.set? and .set.name == "protected") | .set.elem[]
		| .concat[1]] | sort'
}

log "the certificate jitd started with"
[ "$(served_serial)" = "$(serial_of server-1)" ] || fail "not serving server-1: $(served_serial)"
pass "new connections get server-1 ($(serial_of server-1))"
[ "$(metric_not_after controller-1)" = "$(not_after_of server-1)" ] ||
	fail "metrics: not_after $(metric_not_after controller-1), server-1's $(not_after_of server-1)"
pass "/metrics: server-1's expiry ($(not_after_of server-1))"
# A day exactly ("1d") when the certificate was made in the second status is read.
status_says server-1 "((23|24)h( [0-9]+m)?|1d) left: renew it" expiring
pass "jitctl status: the endpoint, server-1's end, and that it is near"
grep -qE "controller endpoint: the TLS certificate expires at [0-9TZ:-]+, in (23|24) hour\(s\) \($TLS/server.pem\)" \
	"$TMP/jitd.log" || fail "no warning at start of a certificate that expires within a day"
pass "start warns of a certificate that expires within a day"
applies controller-1 192.0.2.2 tls-1 "a grant over mutual TLS applies"

log "a renewed certificate, written over the old one, is served after SIGHUP"
cp "$PKI/server-2.pem" "$TLS/server.pem"
cp "$PKI/server-2.key" "$TLS/server.key"
[ "$(served_serial)" = "$(serial_of server-1)" ] ||
	fail "the new files were served before any reload: $(served_serial)"
pass "before the reload, still server-1: the files are read at start and reload only"
# A controller's keep-alive connection from before the renewal: its CA still signs its
# certificate, so it goes on as it was.
keepalive controller-1 ka-renew 10.9.0.1 10.9.0.2
n=$(loaded)
kill -HUP "$JITD_PID"
wait_until 5 "the reload" loaded_since "$n"
[ "$(served_serial)" = "$(serial_of server-2)" ] || fail "not serving server-2: $(served_serial)"
pass "after SIGHUP new connections get server-2 ($(serial_of server-2))"
grep -q "TLS files loaded again (mutual TLS)" "$TMP/jitd.log" || fail "no log line for the TLS reload"
[ "$(metric_not_after controller-1)" = "$(not_after_of server-2)" ] ||
	fail "metrics: not_after $(metric_not_after controller-1), server-2's $(not_after_of server-2)"
[ "$(grep -c "TLS certificate expires at" "$TMP/jitd.log")" = 1 ] ||
	fail "a certificate valid for 30 days was warned of: $(grep "TLS certificate" "$TMP/jitd.log")"
pass "/metrics: server-2's expiry, 30 days away, and no warning for it"
status_says server-2 "(29|30)d( [0-9]+h)? left" valid
pass "jitctl status: server-2's end, 30 days away"
applies controller-1 192.0.2.3 tls-2 "grants go on over the renewed certificate"
got=$(keepalive_then ka-renew)
[ "$got" = "201 - open" ] || fail "a keep-alive connection from before the renewal: $got"
has_elem allow4_addr "10.9.0.2 tcp 22" || fail "its grant after the renewal is not in the kernel"
pass "a keep-alive connection from before the renewal goes on: $got"

log "a client CA replaced in place: the new CA's controllers in, the old CA's out"
keepalive controller-1 ka-ca 10.9.0.3 10.9.0.4
cp "$PKI/next-ca.pem" "$TLS/client-ca.pem"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
sign --src 192.0.2.4 --port 22 --for 120 --jti tls-3 >"$TMP/g3"
code=$(post controller-1 "$TMP/g3")
[ "$code" = 000 ] || fail "the old CA's controller got HTTP $code after the CA changed"
lacks_elem allow4_addr "192.0.2.4 tcp 22" || fail "a grant from the old CA's controller applied"
# Nor may its keep-alive connection from before the reload go on with the old CA's trust.
got=$(keepalive_then ka-ca)
[ "$got" = "403 permission_denied closed" ] ||
	fail "the old CA's keep-alive connection after the CA changed: $got"
lacks_elem allow4_addr "10.9.0.4 tcp 22" || fail "a grant on the old CA's keep-alive connection applied"
jq -s -e 'any(.[]; .event == "grant.refused" and .code == "permission_denied" and
	(.message | contains("client CA")))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the refusal on the old CA's keep-alive connection is not audited"
pass "the old CA's keep-alive connection from before the reload: refused, closed, audited: $got"
# The new connection's 000 above is any failed connection: the server's TLS alert says why
# (after the keep-alive connection's turn, which must come within listen.timeout of its last
# reply). openssl s_client writes nothing, so no reset can overtake the alert (TLS 1.3 sends it
# after the client's Finished).
out=$(sleep 2 | in_ns "$C1" timeout 10 openssl s_client -connect 192.0.2.1:7443 \
	-CAfile "$PKI/fleet-ca.pem" -cert "$PKI/controller-1.pem" -key "$PKI/controller-1.key" 2>&1 ||
	true)
grep -q "alert unknown ca" <<<"$out" ||
	fail "the old CA's controller: no TLS alert 'unknown ca': $(tail -n 5 <<<"$out")"
pass "the old CA's controller fails the handshake: TLS alert 'unknown ca'"
applies controller-2 192.0.2.4 tls-3 "the new CA's controller's grant (the same id) applies"

log "a key that does not match: the whole reload is refused, the endpoint keeps what it had"
cp "$PKI/controller-1.key" "$TLS/server.key"
write_config drop '[]' "[$port22, $port2222]" "$listen"
before=$(kernel_json | strip_expires)
n=$(refused_count)
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "bad_config" "$TMP/out" && grep -qF "tls_key $TLS/server.key" "$TMP/out" ||
	fail "jitctl reload with a mismatched key: exit $rc: $(cat "$TMP/out")"
pass "jitctl reload: exit 1, bad_config, names the key"
[ "$(refused_count)" -gt "$n" ] || fail "the refused reload is not audited"
jq -s -e 'any(.[]; .event == "config.refused" and (.message | test("^listen: ")))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "config.refused does not say listen"
pass "audited as config.refused"
reloads_are controller-2 2 1 0 0
pass "/metrics: one reload refused, and the last one not applied"
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "a refused reload changed the kernel"
[ "$(protected_ports)" = "[22]" ] || fail "the refused reload's port was applied: $(protected_ports)"
pass "kernel unchanged: port 2222 not protected"
kill -0 "$JITD_PID" || fail "jitd died on a refused reload"
[ "$(served_serial controller-2)" = "$(serial_of server-2)" ] ||
	fail "not serving server-2: $(served_serial controller-2)"
pass "the endpoint still serves server-2"
applies controller-2 192.0.2.5 tls-4 "grants go on after the refused reload"

log "mended, the same file reloads: policy and TLS together"
cp "$PKI/server-1.key" "$TLS/server.key"
cp "$PKI/server-1.pem" "$TLS/server.pem"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
[ "$(protected_ports)" = "[22,2222]" ] || fail "port 2222 not protected: $(protected_ports)"
[ "$(served_serial controller-2)" = "$(serial_of server-1)" ] ||
	fail "not serving server-1: $(served_serial controller-2)"
pass "port 2222 protected and server-1 served"
for id in tls-1 tls-2 tls-3 tls-4; do
	status_json | jq -e --arg id "$id" 'any(.grants[]; .id == $id)' >/dev/null ||
		fail "grant $id lost across the reloads"
done
pass "every grant kept across the reloads"
reloads_are controller-2 3 1 1 0
pass "/metrics: the last reload applied again"

log "a certificate that runs out while jitd runs: said when it does, never a reason to stop"
short_cert server-0 8
cp "$PKI/server-0.pem" "$TLS/server.pem"
cp "$PKI/server-0.key" "$TLS/server.key"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
[ "$(served_serial controller-2)" = "$(serial_of server-0)" ] || fail "not serving server-0"
grep -qE "controller endpoint: the TLS certificate expires at [0-9TZ:-]+, in 0 hour\(s\)" \
	"$TMP/jitd.log" || fail "no warning at the reload to a certificate that ends in seconds"
pass "the reload to a certificate that ends in 8 s is taken, with a warning"
expired_said() {
	grep -qE "controller endpoint: the TLS certificate expired at [0-9TZ:-]+: controllers cannot connect \($TLS/server.pem\)" \
		"$TMP/jitd.log"
}
expired_said && fail "expiry logged before the certificate ran out"
# Meanwhile a reload without the endpoint: that takes a restart, so the endpoint serves on, and
# what it says later still names the file it serves (not the configuration's, which has none).
write_config drop '[]' "[$port22, $port2222]"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || fail "jitctl reload: $(cat "$TMP/out")"
grep -q "applied only at the next start: listen" "$TMP/jitd.log" ||
	fail "no warning that the endpoint's removal waits for a restart"
[ "$(served_serial controller-2)" = "$(serial_of server-0)" ] || fail "the endpoint stopped serving"
pass "a reload without the endpoint: warned, the endpoint serves on"
reloads_are controller-2 5 1 1 1
pass "/metrics: applied, with one setting (listen) waiting for the restart"
wait_until 15 "the error when the certificate runs out" expired_said
pass "when it runs out, with no reload of it, jitd logs it as an error, naming its file"
[ "$(grep -c "TLS certificate expired at" "$TMP/jitd.log")" = 1 ] ||
	fail "the expiry was logged more than once"
"$JITCTL_BIN" -s "$SOCK" status >"$TMP/status.txt" || fail "jitctl status failed"
grep -qE "^Certificate:    $TLS/server\.pem EXPIRED at [0-9TZ:-]+: controllers cannot connect$" \
	"$TMP/status.txt" && status_json | jq -e '.endpoint | .address == "192.0.2.1:7443" and
	.certificate.expires_in <= 0 and .certificate.state == "expired"' >/dev/null ||
	fail "jitctl status says: $(cat "$TMP/status.txt")"
pass "jitctl status: the certificate EXPIRED, the endpoint as it still serves"
ids=$(status_json | jq -c '[.grants[].id] | sort')
stop_jitd TERM
write_config drop '[]' "[$port22, $port2222]" "$listen"
rc=0
in_ns "$SRV" "$JITD_BIN" -c "$CONFIG" --check-config >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] && grep -qF "listen: warning: the TLS certificate expired at" "$TMP/out" &&
	grep -q "configuration OK" "$TMP/out" ||
	fail "--check-config with an expired certificate: exit $rc: $(cat "$TMP/out")"
pass "--check-config: exit 0, a warning for the expired certificate"
start_jitd
kill -0 "$JITD_PID" || fail "jitd did not start with an expired certificate"
[ "$(jq length <<<"$ids")" = 7 ] && [ "$(status_json | jq -c '[.grants[].id] | sort')" = "$ids" ] ||
	fail "grants lost at the restart: $(status_json | jq -c '[.grants[].id] | sort'), before: $ids"
pass "jitd starts with an expired certificate: deny rules and grants in place"
stop_jitd TERM
