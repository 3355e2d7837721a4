# Revocation on live TCP sessions: without "terminate" access ends at once but an open session
# lives on (as on expiry); with it, the session is cut by a reset at once, over IPv4 and IPv6
# (conntrack -L in SRV as the witness). Other grants covering the same source keep theirs, and
# so do always_allow's sources. Last, a controller's signed revocation with "terminate", posted
# to the controller endpoint (plain HTTP on loopback), cuts its grant's session the same way.
# (The other refusals of signed revocations are in https.sh and the unit tests.)
. "$(dirname "$0")/lib.sh"

setup_net
# A bastion: always allowed, its sessions are nobody's grant to cut.
ip -n "$C1" addr add 192.0.2.8/24 dev eth0
setup_keys
write_config drop '["192.0.2.8/32"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]},
	  {"port": 2222, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"listen": {"address": "127.0.0.1:7080", "insecure_plaintext": true}'
start_listeners 22
ip netns exec "$SRV" /usr/bin/python3 "$(dirname "$0")/pusher.py" serve 0.0.0.0 2222 &
BG_PIDS+=($!)
start_jitd

flows_from() { # conntrack's own count of TCP flows from $1 to port 22 (independent witness)
	local out
	out=$(in_ns "$SRV" conntrack -L -p tcp -s "$1" --dport 22 2>/dev/null) ||
		fail "conntrack -L failed: no count to trust"
	grep -c . <<<"$out" || true
}

log "local revoke without --terminate: access ends, the open session lives on"
sign --src 192.0.2.2 --port 22 --for 120 --jti rv-a | submit - >/dev/null || fail "grant rv-a refused"
session_open "$C1" 192.0.2.1 22
session_say a-before
# Its option after the id, as the synopsis has it, even where POSIXLY_CORRECT is set.
out=$(POSIXLY_CORRECT=1 "$JITCTL_BIN" -s "$SOCK" revoke rv-a --json) ||
	fail "jitctl revoke failed: $out"
[ "$(jq -r .revoked <<<"$out")" = rv-a ] || fail "unexpected revoke output: $out"
lacks_elem allow4_addr "192.0.2.2 tcp 22" || fail "element still in the kernel after revoke: $(host_elems)"
pass "kernel: element removed at once by the revocation"
session_say a-after-revoke
expect_connect drop "$C1" 192.0.2.1 22
status_has_no_grants >/dev/null || fail "status still lists rv-a"
session_close
rc=0
"$JITCTL_BIN" -s "$SOCK" revoke rv-a 2>"$TMP/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "not_found" "$TMP/err" || fail "second revoke: exit $rc, $(cat "$TMP/err")"
pass "revoking an unknown grant is refused with not_found"
# An id no grant can have (a jti holds no control character) is refused as such, and neither
# its line break nor the line after it reaches the trail.
rc=0
"$JITCTL_BIN" -s "$SOCK" revoke $'x\n<3>jitd: grant y applied' 2>"$TMP/err" || rc=$?
err=$(cat "$TMP/err")
want="bad_request: revoke's \"id\" is no grant's id: it contains a control character"
[ "$rc" -eq 1 ] && [[ $err == *"$want"* ]] ||
	fail "revoke of an id with a line break: exit $rc, $err"
refusal=$(jq -c 'select(.event == "revocation.refused" and .code == "bad_request")' \
	"$TMP/state/audit.jsonl")
[ -n "$refusal" ] && [[ $refusal != *applied* ]] || fail "its refusal in the trail: '$refusal'"
pass "revoking an id with a control character is refused with bad_request, audited without it"

log "overlap: revoking the narrow grant leaves the broad one's access intact"
sign --src 192.0.2.0/24 --port 22 --for 120 --jti rv-broad | submit - >/dev/null || fail "rv-broad refused"
sign --src 192.0.2.2/31 --port 22 --for 300 --jti rv-narrow | submit - >/dev/null || fail "rv-narrow refused"
[ "$(allow_elems allow4 | grep -c .)" -eq 3 ] || fail "the narrow grant did not split the broad range: $(allow_elems allow4)"
"$JITCTL_BIN" -s "$SOCK" revoke rv-narrow >/dev/null || fail "revoke rv-narrow failed"
has_elem allow4 "192.0.2.0/24 tcp 22" || fail "broad grant's range not restored whole: $(allow_elems allow4)"
left=$(elem_expires allow4 192.0.2.0/24)
[ "$left" -gt 60 ] && [ "$left" -le 120 ] || fail "broad range expires in $left s, want its own 120 s"
pass "kernel: 192.0.2.0/24 back as one range with the broad grant's expiry (${left}s)"
expect_connect ok "$C1" 192.0.2.1 22
"$JITCTL_BIN" -s "$SOCK" revoke rv-broad >/dev/null || fail "revoke rv-broad failed"
no_allow_elems || fail "allow sets not empty: $(host_elems)"
pass "kernel: empty after both revocations"

log "same address: revoking the longer grant leaves the shorter one's element and time"
sign --src 192.0.2.4 --port 22 --for 300 --jti rv-long | submit - >/dev/null || fail "rv-long refused"
sign --src 192.0.2.4 --port 22 --for 120 --jti rv-short | submit - >/dev/null || fail "rv-short refused"
left=$(elem_expires "$(addr_set 192.0.2.4)" 192.0.2.4)
[ "$left" -gt 240 ] || fail "192.0.2.4 expires in $left s, want the longer grant's 300 s"
"$JITCTL_BIN" -s "$SOCK" revoke rv-long >/dev/null || fail "revoke rv-long failed"
left=$(elem_expires "$(addr_set 192.0.2.4)" 192.0.2.4)
[ -n "$left" ] && [ "$left" -gt 60 ] && [ "$left" -le 120 ] ||
	fail "192.0.2.4 expires in '$left' s after revoking rv-long, want rv-short's 120 s"
pass "kernel: 192.0.2.4 stays, with rv-short's expiry (${left}s)"
"$JITCTL_BIN" -s "$SOCK" revoke rv-short >/dev/null || fail "revoke rv-short failed"
no_allow_elems || fail "allow sets not empty: $(host_elems)"
pass "kernel: 192.0.2.4 gone with its last grant"

log "a grant of several sources: one revocation takes all its elements and nothing else"
sign --src 192.0.2.7 --port 22 --for 120 --jti rv-next | submit - >/dev/null || fail "rv-next refused"
sign --src 192.0.2.5,192.0.2.6,198.51.100.0/24 --port 22 --for 120 --jti rv-multi | submit - >/dev/null ||
	fail "rv-multi refused"
[ "$(host_elems | grep -c .)" -eq 4 ] || fail "want 4 elements before the revocation: $(host_elems)"
"$JITCTL_BIN" -s "$SOCK" revoke rv-multi >/dev/null || fail "revoke rv-multi failed"
[ "$(host_elems)" = "allow4_addr 192.0.2.7 tcp 22" ] ||
	fail "after revoking rv-multi, want only rv-next's element: $(host_elems)"
pass "kernel: rv-multi's three elements gone in one revocation, rv-next's kept"
"$JITCTL_BIN" -s "$SOCK" revoke rv-next >/dev/null || fail "revoke rv-next failed"
no_allow_elems || fail "allow sets not empty: $(host_elems)"

log "revocation with --terminate: the session is cut"
sign --src 192.0.2.3 --port 22 --for 120 --jti rv-c | submit - >/dev/null || fail "rv-c refused"
session_open "$C1" 192.0.2.1 22 192.0.2.3
session_say c-before
[ "$(flows_from 192.0.2.3)" -ge 1 ] || fail "conntrack shows no flow from 192.0.2.3"
# Two more grants: one whose /24 holds 192.0.2.3 (found by prefix) and one for an address with
# no flow (found by address, and not counted); each grant counts the flow it covers.
sign --src 192.0.2.0/24 --port 22 --for 120 --jti rv-wide | submit - >/dev/null || fail "rv-wide refused"
sign --src 192.0.2.9 --port 22 --for 120 --jti rv-other | submit - >/dev/null || fail "rv-other refused"
counts=$("$JITCTL_BIN" -s "$SOCK" status --json | jq -cS '[.grants[] | {(.id): .flows}] | add')
[ "$counts" = '{"rv-c":1,"rv-other":0,"rv-wide":1}' ] ||
	fail "status flow counts: $counts, want rv-c 1, rv-wide 1, rv-other 0"
pass "status counts the established flow for rv-c and rv-wide, none for rv-other"
for jti in rv-wide rv-other; do
	"$JITCTL_BIN" -s "$SOCK" revoke "$jti" >/dev/null || fail "revoke $jti failed"
done
out=$("$JITCTL_BIN" -s "$SOCK" revoke rv-c --terminate --json) || fail "revoke --terminate failed: $out"
echo "$out" | jq -e '.revoked == "rv-c" and .terminate == true and .flows_terminated >= 1' >/dev/null ||
	fail "revoke reply: $out"
pass "jitctl revoke --terminate: $(echo "$out" | jq .flows_terminated) flow(s) terminated"
[ "$(flows_from 192.0.2.3)" -eq 0 ] || fail "conntrack still holds the flow: $(in_ns "$SRV" conntrack -L 2>/dev/null)"
pass "conntrack: the flow is gone"
session_cut c-after-terminate
session_close
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22

log "IPv6: without --terminate the session lives on, with it the session is cut"
sign --src 2001:db8:1::2 --port 22 --for 120 --jti rv6-a | submit - >/dev/null ||
	fail "rv6-a refused"
has_elem allow6_addr "2001:db8:1::2 tcp 22" || fail "rv6-a is not in the kernel: $(host_elems)"
session_open "$C1" 2001:db8:1::1 22 2001:db8:1::2
session_say a6-before
out=$("$JITCTL_BIN" -s "$SOCK" revoke rv6-a --json) || fail "revoke rv6-a: $out"
echo "$out" | jq -e '.revoked == "rv6-a" and .terminate == false' >/dev/null ||
	fail "revoke reply: $out"
lacks_elem allow6_addr "2001:db8:1::2 tcp 22" || fail "rv6-a still in the kernel: $(host_elems)"
pass "kernel: the IPv6 element removed at once by the revocation"
session_say a6-after-revoke
[ "$(flows_from 2001:db8:1::2)" -ge 1 ] || fail "conntrack lost the IPv6 flow without --terminate"
pass "conntrack: the IPv6 flow is kept by a revocation without --terminate"
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:1::1 22
session_close
sign --src 2001:db8:1::2 --port 22 --for 120 --jti rv6-c | submit - >/dev/null ||
	fail "rv6-c refused"
session_open "$C1" 2001:db8:1::1 22 2001:db8:1::2
session_say c6-before
flows=$(status_json | jq '.grants[] | select(.id == "rv6-c") | .flows')
[ "$flows" -ge 1 ] 2>/dev/null || fail "status counts '$flows' flow(s) for rv6-c, want >= 1"
pass "status counts the IPv6 session for rv6-c ($flows)"
# At least this session's flow; the closed session's entry (same source, same port) goes too.
out=$("$JITCTL_BIN" -s "$SOCK" revoke rv6-c --terminate --json) || fail "revoke rv6-c: $out"
echo "$out" | jq -e '.revoked == "rv6-c" and .terminate == true and .flows_terminated >= 1' \
	>/dev/null || fail "revoke reply: $out"
pass "jitctl revoke --terminate (IPv6): $(echo "$out" | jq .flows_terminated) flow(s) terminated"
[ "$(flows_from 2001:db8:1::2)" -eq 0 ] ||
	fail "conntrack still holds the IPv6 flow: $(in_ns "$SRV" conntrack -L -f ipv6 2>/dev/null)"
pass "conntrack: the IPv6 flow is gone"
session_cut c6-after-terminate
session_close
expect_connect drop "$C1" -b 2001:db8:1::2 2001:db8:1::1 22

log "revocation with --terminate of a session to an address no interface holds"
# A local route over a whole prefix (AnyIP): the input chain takes it as this host's, and so
# must the cut, though no interface lists the address.
ip -n "$SRV" route add local 203.0.113.0/24 dev lo
ip -n "$C1" route add 203.0.113.0/24 via 192.0.2.1
sign --src 192.0.2.3 --port 22 --for 120 --jti rv-any | submit - >/dev/null || fail "rv-any refused"
session_open "$C1" 203.0.113.7 22 192.0.2.3
session_say any-before
out=$("$JITCTL_BIN" -s "$SOCK" revoke rv-any --terminate --json) || fail "revoke rv-any: $out"
echo "$out" | jq -e '.flows_terminated == 1' >/dev/null || fail "revoke reply: $out"
session_cut any-after
session_close

log "revocation with --terminate while another grant still lets the session in"
sign --src 192.0.2.3 --port 22 --for 120 --jti rv-k | submit - >/dev/null || fail "rv-k refused"
sign --src 192.0.2.0/24 --port 22 --for 120 --jti rv-k-wide | submit - >/dev/null ||
	fail "rv-k-wide refused"
session_open "$C1" 192.0.2.1 22 192.0.2.3
session_say k-before
out=$("$JITCTL_BIN" -s "$SOCK" revoke rv-k --terminate --json) || fail "revoke rv-k: $out"
echo "$out" | jq -e '.revoked == "rv-k" and .flows_terminated == 0' >/dev/null ||
	fail "revoke reply: $out"
[ "$(flows_from 192.0.2.3)" -ge 1 ] || fail "conntrack lost the flow rv-k-wide lets in"
session_say k-after-narrow
pass "the session rv-k-wide still lets in is not cut"
out=$("$JITCTL_BIN" -s "$SOCK" revoke rv-k-wide --terminate --json) || fail "revoke: $out"
echo "$out" | jq -e '.flows_terminated >= 1' >/dev/null || fail "revoke reply: $out"
session_cut k-after-wide
session_close

log "revocation with --terminate of a grant whose source holds an always-allowed one"
sign --src 192.0.2.0/24 --port 22 --for 120 --jti rv-b | submit - >/dev/null || fail "rv-b refused"
session_open "$C1" 192.0.2.1 22 192.0.2.8
session_say b-before
flows=$(status_json | jq '.grants[] | select(.id == "rv-b") | .flows')
[ "$flows" = 0 ] || fail "status counts $flows flow(s) of the always-allowed source as rv-b's"
out=$("$JITCTL_BIN" -s "$SOCK" revoke rv-b --terminate --json) || fail "revoke rv-b: $out"
echo "$out" | jq -e '.revoked == "rv-b" and .flows_terminated == 0' >/dev/null ||
	fail "revoke reply: $out"
[ "$(flows_from 192.0.2.8)" -ge 1 ] || fail "conntrack lost the always-allowed source's flow"
session_say b-after
pass "the always-allowed source's session is not cut"
session_close

log "a signed revocation with \"terminate\", posted by a controller, cuts the session"
sign --src 192.0.2.3 --port 22 --for 120 --jti rv-s | submit - >/dev/null || fail "rv-s refused"
session_open "$C1" 192.0.2.1 22 192.0.2.3
session_say s-before
[ "$(flows_from 192.0.2.3)" -ge 1 ] || fail "conntrack shows no flow from 192.0.2.3"
"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --revokes rv-s \
	--terminate --for 60 --jti rv-s-revocation >"$TMP/rs" || fail "cannot sign the revocation"
code=$(post_jwt /v1/revocations "$TMP/rs")
[ "$code" = 200 ] && jq -e '.revoked == "rv-s" and .terminate == true and .flows_terminated >= 1' \
	"$TMP/body" >/dev/null || fail "signed revocation with terminate: HTTP $code $(cat "$TMP/body")"
pass "POST /v1/revocations with terminate: $(jq .flows_terminated "$TMP/body") flow(s) terminated"
[ "$(flows_from 192.0.2.3)" -eq 0 ] || fail "conntrack still holds the flow: $(in_ns "$SRV" conntrack -L 2>/dev/null)"
pass "conntrack: the flow is gone"
session_cut s-after-terminate
session_close
jq -s -e 'any(.[]; .event == "flows.terminated" and .grant == "rv-s"
	and (.peer | test("^http 127[.]0[.]0[.]1:[0-9]+$")))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "no flows.terminated audit record naming the controller: $(grep rv-s "$TMP/state/audit.jsonl")"
pass "audit: flows.terminated, with the controller as peer"
no_allow_elems || fail "allow sets not empty: $(host_elems)"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22

log "revocation with --terminate of a flow whose server sends first"
# Once the flow's entry is gone, the server's next segment makes conntrack pick the flow up
# again, the other way round: the client's packets are then the entry's replies, "established".
# They must still meet the grants, not pass as established.
sign --src 192.0.2.3 --port 2222 --for 120 --jti rv-push | submit - >/dev/null ||
	fail "rv-push refused"
ip netns exec "$C1" /usr/bin/python3 "$(dirname "$0")/pusher.py" client 192.0.2.3 192.0.2.1 \
	2222 30 >"$TMP/push.out" 2>&1 &
push_pid=$!
BG_PIDS+=($push_pid)
pushes() { grep -c '^got' "$TMP/push.out" || true; }
wait_until 5 "the server's pushes to arrive" sh -c "[ \$(grep -c '^got' '$TMP/push.out') -ge 3 ]"
"$JITCTL_BIN" -s "$SOCK" revoke rv-push --terminate >/dev/null || fail "revoke rv-push failed"
n=$(pushes)
ended() { grep -qE '^(failed|silent|done)' "$TMP/push.out"; }
wait_until 8 "the pushed session to end" ended
grep -qE '^(failed|silent)' "$TMP/push.out" ||
	fail "the session lives on: $(tail -3 "$TMP/push.out")"
[ "$(pushes)" -le $((n + 2)) ] ||
	fail "the client still answered $(($(pushes) - n)) pushes after the revocation"
pass "a session whose server sends first is cut too: $(tail -1 "$TMP/push.out")"
wait "$push_pid" 2>/dev/null || true

if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	log "a signed revocation while replay.db cannot be made durable (test builds)"
	# Every fsync of replay.db fails (a test hook, as a failing disk): the revocation still
	# ends the grant; only its own id is not durable, and a replay of it would revoke again.
	export JITD_TEST_REPLAY_SYNC_FAIL_FILE=$TMP/replay-fail
	# The next section's hook too, so that this restart serves both: its file comes later.
	export JITD_TEST_CUT_FAIL_FILE=$TMP/cut-fail
	stop_jitd TERM
	start_jitd
	sign --src 192.0.2.3 --port 22 --for 120 --jti rv-d | submit - >/dev/null ||
		fail "rv-d refused"
	has_elem allow4_addr "192.0.2.3 tcp 22" || fail "rv-d is not in the kernel"
	touch "$JITD_TEST_REPLAY_SYNC_FAIL_FILE"
	"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --revokes rv-d \
		--for 60 --jti rv-d-revocation-1 >"$TMP/rd" || fail "cannot sign the revocation"
	code=$(post_jwt /v1/revocations "$TMP/rd")
	[ "$code" = 200 ] && jq -e '.revoked == "rv-d"' "$TMP/body" >/dev/null ||
		fail "revocation with replay.db failing: HTTP $code $(cat "$TMP/body")"
	lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "rv-d is still in the kernel"
	expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
	grep -q "revocation 'rv-d-revocation-1' applied, its id not durable" "$TMP/jitd.log" ||
		fail "the log does not say the id is not durable"
	pass "a revocation applies while replay.db fails; the log says its id is not durable"
	# The grant's record goes all the same: kept, it would restore the grant at the next
	# start. The disk still failing at the stop, the start after finds rv-d revoked.
	grep -q "replay: the id 'rv-d' is not durable" "$TMP/jitd.log" ||
		fail "the log does not say rv-d's id is not durable as its record goes"
	stop_jitd TERM
	rm -f "$JITD_TEST_REPLAY_SYNC_FAIL_FILE"
	start_jitd
	"$JITCTL_BIN" -s "$SOCK" status --json | jq -e '[.grants[].id] | index("rv-d") == null' \
		>/dev/null || fail "rv-d came back at the restart"
	lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "rv-d is in the kernel after the restart"
	pass "its record went while replay.db failed: the restart does not bring rv-d back"

	log "revoke --terminate whose cut fails (test builds): said, not taken for no flows"
	sign --src 192.0.2.3 --port 22 --for 120 --jti rv-f | submit - >/dev/null ||
		fail "rv-f refused"
	session_open "$C1" 192.0.2.1 22 192.0.2.3
	session_say f-before
	echo 1 >"$JITD_TEST_CUT_FAIL_FILE"
	out=$("$JITCTL_BIN" -s "$SOCK" revoke rv-f --terminate --json) ||
		fail "revoke --terminate with the cut failing: $out"
	echo "$out" | jq -e '.revoked == "rv-f" and .terminate == true and
		.flows_terminated == null and .terminate_error == "Input/output error"' \
		>/dev/null ||
		fail "revoke --terminate with the cut failing: $out"
	lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "rv-f is still in the kernel"
	session_say f-after
	session_close
	"$JITCTL_BIN" -s "$SOCK" status --json | jq -e '.agent.last_error |
		test("cannot cut the flows of .rv-f.: Input/output error")' >/dev/null ||
		fail "status does not say the cut failed"
	# The trail says so too: a cut asked for and failed is not silence.
	jq -s -e '[.[] | select(.event == "flows.terminated" and .grant == "rv-f")] |
		length == 1 and .[0].count == 0 and
		.[0].message == "not cut (Input/output error): the flows live on"' \
		"$TMP/state/audit.jsonl" >/dev/null ||
		fail "rv-f's failed cut in the trail: $(grep rv-f "$TMP/state/audit.jsonl")"
	pass "revoked; the reply, status and trail say the cut failed and why; the session lives"
	sign --src 192.0.2.3 --port 22 --for 120 --jti rv-g | submit - >/dev/null ||
		fail "rv-g refused"
	echo 1 >"$JITD_TEST_CUT_FAIL_FILE"
	out=$("$JITCTL_BIN" -s "$SOCK" revoke rv-g --terminate) ||
		fail "revoke --terminate with the cut failing: $out"
	want="revoked grant rv-g; its connections could NOT be cut (Input/output error):"
	want+=" those not cut live on"
	[ "$out" = "$want" ] ||
		fail "jitctl revoke --terminate with the cut failing said: $out"
	pass "jitctl revoke says so too"
fi
