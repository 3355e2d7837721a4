# jitd may die or restart at any time: granted access and closed ports are the kernel's business
# meanwhile. A restart restores grants from the state directory and removes any element that has
# no grant behind it (fail closed).
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop

signed_at=$SECONDS	# before the signature: its exp may be up to a second short of 60 s on
sign --src 192.0.2.2 --port 22 --for 60 --jti keep | submit - >/dev/null || fail "grant refused"
expect_connect ok "$C1" 192.0.2.1 22
session_open "$C1" 192.0.2.1 22
session_say before-crash

log "jitd crashes (SIGKILL)"
stop_jitd KILL
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "grant element vanished with jitd"
pass "kernel: grant element outlives the jitd process"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
session_say while-jitd-is-dead

log "someone adds an element nobody granted, then jitd comes back"
in_ns "$SRV" nft add element inet jitd allow4_addr_3 '{ 192.0.2.3 . tcp . 22 timeout 60s }'
has_elem allow4_addr "192.0.2.3 tcp 22" || fail "could not plant a stray element"
in_ns "$SRV" nft add element inet jitd allow4 '{ 198.51.100.2 . tcp . 22-23 timeout 60s }'
holds_match allow4 '^198\.51\.100\.2 tcp ' || fail "could not plant a port range: $(allow_elems allow4)"
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
start_jitd
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "stray element survived the restart: $(host_elems)"
lacks_source allow4 198.51.100.2 ||
	fail "a port range (an element jitd cannot have written) survived the restart"
jq -s -e 'map(select(.event == "drift.repaired" and (.message | startswith("start: "))))
	| length == 1 and .[0].count == 2' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the start's removals are not audited: $(grep drift "$TMP/state/audit.jsonl")"
pass "kernel: stray element removed on start, and audited"
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "granted element lost on restart: $(host_elems)"
left=$(elem_expires allow4_addr 192.0.2.2)
want=$(least_left 60 "$signed_at")
[ "$left" -ge "$want" ] && [ "$left" -le 60 ] ||
	fail "restored element expires in $left s, want $want..60"
pass "kernel: granted element kept with ${left}s left"
status_json | jq -e '.grants | map(.id) == ["keep"]' >/dev/null || fail "status lost the grant"
pass "jitctl status lists the restored grant"
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" 192.0.2.1 22
session_say after-restart

log "SIGTERM leaves the ports closed"
stop_jitd TERM
kernel_json | jq -e '.nftables[] | select(.chain? and .chain.name == "input")' >/dev/null \
	|| fail "table inet jitd removed on SIGTERM"
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
expect_connect ok "$C1" 192.0.2.1 22

log "a grant that runs out while jitd is stopped is audited as expired on start"
start_jitd
# 3 s: exp is whole seconds and a grant needs 1 s left to apply, so 2 s left too little margin for
# signing and submitting on a loaded machine.
sign --src 192.0.2.3 --port 22 --for 3 --jti brief | submit - >/dev/null || fail "brief grant refused"
stop_jitd TERM
sleep 4
start_jitd
jq -s -e 'any(.[]; .event == "grant.expired" and .grant == "brief"
	and .message == "expired while jitd was not running")' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the grant that expired during the downtime is not audited"
status_json | jq -e 'all(.grants[]; .id != "brief")' >/dev/null || fail "expired grant restored"
pass "grant.expired recorded for the grant that ran out during the downtime"

log "a restart leaves a table that is right exactly as it is"
# Another inet table, with base chains named as jitd's: the kernel answers a chain dump with
# every table of the family, and those chains are not jitd's.
in_ns "$SRV" nft add table inet other
in_ns "$SRV" nft add chain inet other input '{ type filter hook input priority 10; policy accept; }'
in_ns "$SRV" nft add chain inet other forward '{ type filter hook forward priority 10; }'
# Handles are the kernel's witness: a flushed and re-added rule or element gets a new one.
# The table's own handle too: one rebuilt from scratch numbers its rules and sets as before.
handles() {
	kernel_json | jq -c '[.nftables[] | (.table? | select(.) | .handle),
		(.rule? | select(.) | .handle),
		(.set? | select(.) | {(.name): [.handle, (.elem // [] | length)]})]'
}
sign --src 192.0.2.2 --port 22 --for 120 --jti again | submit - >/dev/null || fail "grant refused"
before=$(handles)
stop_jitd TERM
lines=$(wc -l <"$TMP/jitd.log")
start_jitd
[ "$(handles)" = "$before" ] || fail "a restart changed the table: $before -> $(handles)"
tail -n +"$((lines + 1))" "$TMP/jitd.log" >"$TMP/since"
grep -q "table inet jitd is in place: left as it is" "$TMP/since" ||
	fail "jitd did not say the table was in place: $(grep 'table inet jitd' "$TMP/since")"
pass "rules, sets and their elements untouched by a restart (same handles)"
in_ns "$SRV" nft list chain inet other input >/dev/null || fail "table inet other lost its chain"

log "a restart with another configuration changes what differs, in one transaction"
write_config reject '["198.51.100.3/32"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]},
	  {"port": 3389, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
stop_jitd TERM
start_jitd
grep -q "table inet jitd: the rules differ; bringing it in line" "$TMP/jitd.log" ||
	fail "jitd did not say what differed: $(grep 'table inet jitd' "$TMP/jitd.log")"
expect_connect reject "$C2" -b 198.51.100.2 198.51.100.1 3389
expect_connect ok "$C1" 192.0.2.1 22
pass "the new rules are in force and the grant kept its access"

log "a table an earlier jitd made, its grant sets collected every second, is brought in line"
stop_jitd TERM
in_ns "$SRV" nft list table inet jitd | sed '/gc-interval/d' >"$TMP/old-table.nft"
in_ns "$SRV" nft delete table inet jitd
in_ns "$SRV" nft -f "$TMP/old-table.nft" || fail "nft did not take the table back without gc-interval"
[ "$(grant_sets_gc | jq -c 'unique')" = "[null]" ] ||
	fail "the table put back still has a gc-interval: $(grant_sets_gc)"
kernel_json | jq -e '[.nftables[] | .set? | select(.) | .elem // [] | length] | add > 0' >/dev/null ||
	fail "the table put back lost its elements"
start_jitd
grep -q "table inet jitd: a set is missing or differs" "$TMP/jitd.log" ||
	fail "jitd did not say a set differed: $(grep 'table inet jitd' "$TMP/jitd.log")"
gc_once_a_minute
expect_connect ok "$C1" 192.0.2.1 22
pass "the grant sets are collected once a minute again and the grant kept its access"

log "a table put back with a quota on the protected ports' set is rebuilt"
# The kernel runs a set's stateful expressions on each lookup that hits: past the quota the
# deny rules break instead of dropping, and the port is open to anyone. No key differs.
stop_jitd TERM
in_ns "$SRV" nft list table inet jitd |
	sed '/^\tset protected {$/a\		quota 0 bytes' >"$TMP/quota-table.nft"
grep -q "quota 0 bytes" "$TMP/quota-table.nft" || fail "no set protected to put a quota on"
in_ns "$SRV" nft delete table inet jitd
in_ns "$SRV" nft -f "$TMP/quota-table.nft" || fail "nft did not take the table with a quota"
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22
lines=$(wc -l <"$TMP/jitd.log")
start_jitd
grep -q "table inet jitd: a set is missing or differs (type, flags, expressions" \
	<(tail -n +"$((lines + 1))" "$TMP/jitd.log") ||
	fail "jitd did not say a set differed: $(grep 'table inet jitd' "$TMP/jitd.log")"
in_ns "$SRV" nft list set inet jitd protected | grep quota &&
	fail "the protected ports' set still has a quota"
expect_connect reject "$C2" -b 198.51.100.2 198.51.100.1 22
expect_connect ok "$C1" 192.0.2.1 22
pass "the quota is gone, the port closed to others again, the grant kept its access"

log "a key file removed while jitd is stopped takes the grants it signed with it"
# Interleaved in the journal: the restore looks a key up once per pass, never past a refusal.
# Sources apart, so that each grant is an element of its own.
"$JITCTL_BIN" keygen --kid ctl2 --dir "$TMP/signer" >/dev/null
install -m 0644 "$TMP/signer/ctl2.pem" "$TMP/keys.d/ctl2.pem"
sign2() {
	"$JITCTL_BIN" sign --key "$TMP/signer/ctl2.key" --kid ctl2 --aud "$HOST_ID" --sub bob "$@"
}
sign2 --src 192.0.2.10 --port 22 --for 120 --jti by-ctl2-a | submit - >/dev/null ||
	fail "grant signed by ctl2 refused"
sign --src 192.0.2.20 --port 22 --for 120 --jti by-ctl-b | submit - >/dev/null ||
	fail "grant signed by ctl refused"
sign2 --src 192.0.2.30 --port 22 --for 120 --jti by-ctl2-c | submit - >/dev/null ||
	fail "grant signed by ctl2 refused"
has_elem allow4_addr "192.0.2.30 tcp 22" || fail "ctl2's grant is not in the kernel: $(host_elems)"
# One of the key's grants also runs out while jitd is stopped: that one expired (its time
# decides, not the key found missing first). Last, just before the stop, so that it is still
# live then (3 s, whole seconds: 2 s or more).
sign2 --src 192.0.2.40 --port 22 --for 3 --jti by-ctl2-brief >"$TMP/brief.jws"
submit "$TMP/brief.jws" >/dev/null || fail "brief grant signed by ctl2 refused"
brief_at=$SECONDS
stop_jitd TERM
rm "$TMP/keys.d/ctl2.pem"
sleep $((brief_at + 4 - SECONDS > 0 ? brief_at + 4 - SECONDS : 0))
# A start that fails after it judged them (a test build loses the acks of its first commit,
# the one removing their elements) keeps their records and audits nothing: a record dropped
# by a start that failed before that commit would leave its element in the kernel with no
# grant behind it, and nothing to restore should the key come back.
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	echo 1 >"$TMP/ackslost"
	rc=0
	JITD_TEST_ACKS_LOST_FILE=$TMP/ackslost timeout 30 ip netns exec "$SRV" "$JITD_BIN" \
		-c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] &&
		grep -q "the records of 3 grant(s) not restored are kept" "$TMP/fail.log" ||
		fail "the start with lost acks: exit $rc: $(cat "$TMP/fail.log")"
	ended='select((.event == "grant.revoked" or .event == "grant.expired") and
		(.grant // "" | startswith("by-ctl2")))'
	[ -z "$(jq -c "$ended" "$TMP/state/audit.jsonl")" ] ||
		fail "the failed start audited: $(jq -c "$ended" "$TMP/state/audit.jsonl")"
	install -m 0644 "$TMP/signer/ctl2.pem" "$TMP/keys.d/ctl2.pem"
	start_jitd
	status_json | jq -e '[.grants[].id] | index("by-ctl2-a") != null and
		index("by-ctl2-c") != null' >/dev/null ||
		fail "the key back, status: $(status_json | jq -c '[.grants[].id]')"
	has_elem allow4_addr "192.0.2.10 tcp 22" && has_elem allow4_addr "192.0.2.30 tcp 22" ||
		fail "the key back, not in the kernel: $(host_elems)"
	pass "a start that fails keeps the records it would drop: the key back, they are restored"
	stop_jitd TERM
	rm "$TMP/keys.d/ctl2.pem"
else
	log "skipped: a start whose first commit fails (needs -DJITD_TEST_HOOKS=ON)"
fi
start_jitd
lacks_elem allow4_addr "192.0.2.10 tcp 22" || fail "a grant of the removed key was restored"
lacks_elem allow4_addr "192.0.2.30 tcp 22" || fail "a grant of the removed key was restored"
has_elem allow4_addr "192.0.2.20 tcp 22" || fail "the other key's grant was lost: $(host_elems)"
status_json | jq -e '[.grants[].id] | index("by-ctl-b") != null and index("by-ctl2-a") == null
	and index("by-ctl2-c") == null' >/dev/null || fail "status: $(status_json | jq -c '[.grants[].id]')"
pass "the removed key's grants are gone from kernel and status; the other key's grant stays"
# The trail ends them as a reload would: by jitd, with the refusal's code, naming whose they were.
jq -s -e '[.[] | select(.event == "grant.revoked") | {grant, sub, peer, code,
	why: (.message | startswith("start: not restored: "))}] == [
	{"grant": "by-ctl2-a", "sub": "bob", "peer": "jitd", "code": "unknown_key", "why": true},
	{"grant": "by-ctl2-c", "sub": "bob", "peer": "jitd", "code": "unknown_key", "why": true}]' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "the dropped grants are not audited: $(jq -c 'select(.event == "grant.revoked")' \
		"$TMP/state/audit.jsonl")"
grep -q "grant revoked: jti=by-ctl2-a sub=bob (start: not restored: " "$TMP/jitd.log" ||
	fail "jitd did not log why it dropped the grants"
pass "the trail has each of them revoked by jitd at the start (unknown_key, the user named)"
jq -s -e 'any(.[]; .event == "grant.expired" and .grant == "by-ctl2-brief"
	and .message == "expired while jitd was not running")' "$TMP/state/audit.jsonl" \
	>/dev/null || fail "the key's grant that ran out meanwhile is not audited as expired"
pass "the key's grant that ran out while jitd was stopped is audited as expired, not revoked"

log "a chain of jitd's name with another priority is rebuilt, with the table"
# No message changes a base chain's hook or priority: in place, the repair would fail each time.
stop_jitd TERM
input_prio() { kernel_json | jq '.nftables[] | .chain? | select(. and .name == "input") | .prio'; }
prio=$(input_prio)
in_ns "$SRV" nft flush chain inet jitd input
in_ns "$SRV" nft delete chain inet jitd input
in_ns "$SRV" nft add chain inet jitd input "{ type filter hook input priority $((prio + 5)); }"
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22
start_jitd
[ "$(input_prio)" = "$prio" ] ||
	fail "the input chain's priority is $(input_prio), not $prio"
expect_connect reject "$C2" -b 198.51.100.2 198.51.100.1 22
has_elem allow4_addr "192.0.2.20 tcp 22" || fail "the grant was lost: $(host_elems)"
pass "the table rebuilt: the chain's priority is jitd's again, the port closed, the grant kept"

log "a policy tightened while jitd is stopped takes effect at its start"
# Each recorded token is judged again by the start's policy, not only by its key: one the new
# file no longer admits is ended as a reload would end it (kernel, status, trail, traffic),
# and the one it still admits keeps its access. A fresh file first (drop, 8443 protected too).
stop_jitd TERM
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M",
	   "allowed_sources": ["192.0.2.0/24"]},
	  {"port": 3389, "protocol": "tcp", "max_duration": "PT1H", "allowed_sources": ["*"]},
	  {"port": 8443, "protocol": "tcp", "max_duration": "PT1H", "allowed_sources": ["*"]}]'
start_jitd
# The grants still live from above would hold 192.0.2.2's element too: A's must be A's alone.
for id in $(status_json | jq -r '.grants[].id'); do
	"$JITCTL_BIN" -s "$SOCK" revoke "$id" >/dev/null || fail "revoke $id failed"
done
no_allow_elems || fail "elements left after revoking every grant: $(host_elems)"
# A and C: port 22 from 192.0.2.2 and .3, inside 192.0.2.0/24; B: 3389 for 30 min (max 1 h);
# D: 8443. Sources one address each, so that each grant is an element of its own.
sign --src 192.0.2.2 --port 22 --for 300 --jti tight-a | submit - >/dev/null || fail "A refused"
sign --src 192.0.2.3 --port 22 --for 300 --jti tight-c | submit - >/dev/null || fail "C refused"
sign --src 198.51.100.2 --port 3389 --for 1800 --jti tight-b | submit - >/dev/null ||
	fail "B refused"
sign --src 198.51.100.2 --port 8443 --for 300 --jti tight-d | submit - >/dev/null ||
	fail "D refused"
for e in "192.0.2.2 tcp 22" "192.0.2.3 tcp 22" "198.51.100.2 tcp 3389" \
	"198.51.100.2 tcp 8443"; do
	has_elem allow4_addr "$e" || fail "grant element $e not in the kernel: $(host_elems)"
done
pass "kernel: the four grants' elements before the stop"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 3389
stop_jitd TERM
# 22 narrowed to 192.0.2.2 alone (C's source outside), 3389's maximum cut to 10 min (B has
# about 30 left), 8443 no longer protected.
config_edit '.ports |= map(if .port == 22 then .allowed_sources = ["192.0.2.2"]
	elif .port == 3389 then .max_duration = "PT10M" else . end | select(.port != 8443))'
start_jitd
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the grant still admitted was lost: $(host_elems)"
for e in "192.0.2.3 tcp 22" "198.51.100.2 tcp 3389" "198.51.100.2 tcp 8443"; do
	lacks_elem allow4_addr "$e" || fail "a grant no longer admitted kept $e: $(host_elems)"
done
status_json | jq -e '[.grants[].id] == ["tight-a"]' >/dev/null ||
	fail "status after the start: $(status_json | jq -c '[.grants[].id]')"
pass "kernel and status: only the grant the tightened policy still admits is restored"
jq -s -e '[.[] | select(.event == "grant.revoked" and (.grant | startswith("tight-")))
	| .grant as $g | {grant, sub, peer, code,
	  why: (.message | startswith("start: not restored: ")),
	  names: (.message | contains({"tight-b": "maximum for port 3389/tcp",
		"tight-c": "source 192.0.2.3 is not allowed", "tight-d": "port 8443/tcp"}[$g]))}]
	| sort_by(.grant) == [
	{"grant": "tight-b", "sub": "alice", "peer": "jitd", "code": "duration_exceeds_max",
	 "why": true, "names": true},
	{"grant": "tight-c", "sub": "alice", "peer": "jitd", "code": "source_not_allowed",
	 "why": true, "names": true},
	{"grant": "tight-d", "sub": "alice", "peer": "jitd", "code": "port_not_protected",
	 "why": true, "names": true}]' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the grants the policy no longer admits are not audited as such: $(jq -c \
		'select(.event == "grant.revoked" and (.grant | startswith("tight-")))' \
		"$TMP/state/audit.jsonl")"
pass "the trail has B, C and D revoked by jitd at the start, each with its refusal's code"
expect_connect ok "$C1" 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 3389
