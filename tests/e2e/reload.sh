# Reload (SIGHUP and jitctl reload): an invalid file changes nothing; a valid one is applied in
# one transaction — a port dropped from the policy is no longer closed and its grants are
# removed and audited, a new port is closed, other grants keep their elements and time. A key
# taken out of keys_dir takes its grants with it at the reload; root's local grants have none. A new
# host_id waits for the restart, which drops the grants in force that do not name it.
. "$(dirname "$0")/lib.sh"

e2e_default_setup drop
sign --src 192.0.2.2 --port 22 --for 300 --jti keep | submit - >/dev/null || fail "grant refused"
sign --src 2001:db8:2::2 --port 3389 --for 300 --jti gone | submit - >/dev/null || fail "grant refused"
has_elem allow6_addr "2001:db8:2::2 tcp 3389" || fail "the 3389 grant is not in the kernel"
protected_ports() {
	kernel_json | jq -c '[.nftables[] | select(.set? and .set.name == "protected") | .set.elem[]
		| .concat[1]] | sort'
}

log "an invalid configuration is refused; nothing changes"
cp "$CONFIG" "$TMP/good.json"
before=$(kernel_json | strip_expires)
printf '{"ports": [{"port": 70000}]}\n' >"$CONFIG"
kill -HUP "$JITD_PID"
wait_until 5 "config.refused in the audit trail" \
	jq -s -e 'any(.[]; .event == "config.refused")' "$TMP/state/audit.jsonl"
kill -0 "$JITD_PID" || fail "jitd died on a bad reload"
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "a refused reload changed the kernel"
pass "SIGHUP with an invalid file: refused, audited, agent up, kernel unchanged"
# SIGHUP answers nobody: status is where the operator sees that the file was refused.
refused_line="^Reload refused: [0-9TZ:-]+: .*70000.* \(the configuration loaded [0-9TZ:-]+"
refused_line+=" stays in force\)$"
status_json | jq -e '.agent.reload_refused.error | test("70000")' >/dev/null &&
	status_json | jq -e '.agent.config_loaded_at == .agent.started_at' >/dev/null &&
	grep -qE "$refused_line" <<<"$("$JITCTL_BIN" -s "$SOCK" status)" ||
	fail "status after the refused reload: $(status_json | jq -c .agent)"
pass "status: the refusal, why, and that the configuration loaded at the start stays"
rc=0
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "bad_config" "$TMP/out" && grep -q "70000" "$TMP/out" ||
	fail "jitctl reload of an invalid file: exit $rc: $(cat "$TMP/out")"
refusals=$(jq -s '[.[] | select(.event == "config.refused")] | length' "$TMP/state/audit.jsonl")
[ "$refusals" -eq 2 ] || fail "config.refused records after SIGHUP and jitctl reload: $refusals"
pass "jitctl reload of an invalid file: exit 1, bad_config, the reason, audited too"
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "a refused reload changed the kernel"

log "a valid change: 3389 no longer protected, 2222 protected"
keep_left=$(elem_expires allow4_addr 192.0.2.2)
# Less the seconds gone since (not a guess at how long the test takes), and 2 for rounding.
kept_at=$SECONDS
write_config drop '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]},
	  {"port": 2222, "protocol": "tcp", "max_duration": "PT1H", "allowed_sources": ["*"]}]'
kill -HUP "$JITD_PID"
ports_are() { [ "$(protected_ports)" = "$1" ]; }
wait_until 5 "the reload applied" ports_are '[22,2222]'
pass "protected ports now 22 and 2222: $(protected_ports)"
text=$("$JITCTL_BIN" -s "$SOCK" status) || fail "jitctl status failed: $text"
status_json | jq -e '.agent.reload_refused == null and .agent.config_loaded_at != null' \
	>/dev/null && grep -q "^Protected ports:" <<<"$text" &&
	! grep -q "^Reload refused" <<<"$text" ||
	fail "status after an applied reload still shows a refusal: $(status_json | jq -c .agent)"
pass "status: the applied reload clears the refusal"
lacks_elem allow6_addr "2001:db8:2::2 tcp 3389" || fail "the 3389 grant's element survived the reload"
jq -s -e 'any(.[]; .event == "grant.revoked" and .grant == "gone"
	and .code == "port_not_protected" and (.message | test("configuration reload: .*3389")))' \
	"$TMP/state/audit.jsonl" >/dev/null ||
	fail "the removed grant is not audited with the reason"
pass "the 3389 grant is removed and audited with the reason"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the port 22 grant lost its element"
left=$(elem_expires allow4_addr 192.0.2.2)
[ "$left" -le "$keep_left" ] && [ "$left" -ge "$(least_left "$keep_left" "$kept_at")" ] ||
	fail "the port 22 grant's timeout changed: $keep_left -> $left"
pass "the port 22 grant keeps its element and its time ($left s)"
expect_connect ok "$C2" 2001:db8:2::1 3389
pass "3389 is no longer closed by jitd"
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
expect_connect drop "$C1" -b 192.0.2.3 192.0.2.1 22

log "jitctl reload: deny_action reject"
write_config reject '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]'
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
grep -q "1 protected port(s), 0 grant(s) removed" "$TMP/out" && ! grep -q "restart needed" \
	"$TMP/out" || fail "reload said: $(cat "$TMP/out")"
pass "jitctl reload: $(cat "$TMP/out")"
expect_connect reject "$C1" -b 192.0.2.3 192.0.2.1 22
expect_connect ok "$C1" -b 192.0.2.2 192.0.2.1 22
status_json | jq -e '.kernel.in_sync and ([.grants[].id] == ["keep"]) and
	.agent.restart_pending == []' >/dev/null ||
	fail "status after reloads: $(status_json | jq -c '.kernel.in_sync, [.grants[].id], .agent')"
pass "status: in sync, the kept grant only, no restart owed"

log "a key taken out of keys_dir: its grants leave at the reload, as at a restart"
"$JITCTL_BIN" keygen --kid ctl2 --dir "$TMP/signer" >/dev/null
install -m 0644 "$TMP/signer/ctl2.pem" "$TMP/keys.d/ctl2.pem"
sign --key "$TMP/signer/ctl2.key" --kid ctl2 --src 192.0.2.3 --port 22 --for 300 --jti by-ctl2 |
	submit - >/dev/null || fail "ctl2's grant refused"
"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.4 --port 22 --for 300 --reason "break glass" \
	>/dev/null || fail "the local grant was refused"
has_elem allow4_addr "192.0.2.3 tcp 22" && has_elem allow4_addr "192.0.2.4 tcp 22" ||
	fail "the new grants are not in the kernel: $(host_elems)"
expect_connect ok "$C1" -b 192.0.2.3 192.0.2.1 22
rm "$TMP/keys.d/ctl2.pem"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
grep -q "1 grant(s) removed" "$TMP/out" || fail "reload said: $(cat "$TMP/out")"
pass "jitctl reload: $(cat "$TMP/out")"
lacks_elem allow4_addr "192.0.2.3 tcp 22" || fail "the removed key's grant kept its element"
expect_connect reject "$C1" -b 192.0.2.3 192.0.2.1 22
jq -s -e 'any(.[]; .event == "grant.revoked" and .grant == "by-ctl2" and .code == "unknown_key"
	and (.message | test(
	"configuration reload: its key is no longer trusted: key .ctl2.: no such key")))' \
	"$TMP/state/audit.jsonl" >/dev/null || fail "the removed key's grant is not audited with why"
pass "the removed key's grant is removed, audited with the reason, and its source refused"
has_elem allow4_addr "192.0.2.2 tcp 22" && has_elem allow4_addr "192.0.2.4 tcp 22" ||
	fail "a grant of a key still trusted, or root's local grant, lost its element: $(host_elems)"
status_json | jq -e '([.grants[].id] | length == 2) and any(.grants[]; .id == "keep")
	and any(.grants[]; .id | startswith("local-"))' >/dev/null ||
	fail "status after the key's removal: $(status_json | jq -c '[.grants[].id]')"
pass "the other key's grant and root's local grant (no key) stay"

log "a keys_dir jitd cannot enter: the reload is refused, not every signed grant revoked"
cp "$CONFIG" "$TMP/keys-ok.json"
before=$(kernel_json | strip_expires)
for dir in "$TMP/keys.typo:No such file or directory" "$TMP/keys-ok.json:Not a directory"; do
	jq --arg d "${dir%%:*}" '.keys_dir = $d' "$TMP/keys-ok.json" >"$CONFIG"
	rc=0
	"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -q "bad_config" "$TMP/out" &&
		grep -qF "keys_dir ${dir%%:*}: ${dir#*:}: every signed grant would be revoked" \
			"$TMP/out" ||
		fail "reload with keys_dir ${dir%%:*}: exit $rc, $(cat "$TMP/out")"
	jq -s -e --arg d "${dir%%:*}" 'any(.[]; .event == "config.refused" and
		(.message | contains("keys_dir " + $d + ": ")))' "$TMP/state/audit.jsonl" \
		>/dev/null || fail "the refusal is not audited"
done
cp "$TMP/keys-ok.json" "$CONFIG"
[ "$(kernel_json | strip_expires)" = "$before" ] || fail "a refused reload changed the kernel"
status_json | jq -e '[.grants[].id] | length == 2 and index("keep") != null' >/dev/null ||
	fail "grants after the refused reloads: $(status_json | jq -c '[.grants[].id]')"
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "the reload after: $(cat "$TMP/out")"
grep -q "0 grant(s) removed" "$TMP/out" || fail "reload said: $(cat "$TMP/out")"
pass "a missing keys_dir and a file as keys_dir: refused, audited, grants and kernel unchanged"

log "a start with a keys_dir jitd cannot enter fails, rather than end every signed grant"
stop_jitd TERM
jq --arg d "$TMP/keys.typo" '.keys_dir = $d' "$TMP/keys-ok.json" >"$CONFIG"
rc=0
ip netns exec "$SRV" timeout 30 "$JITD_BIN" -c "$CONFIG" >>"$TMP/jitd.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "jitd started (or died otherwise, status $rc) with keys_dir missing"
grep -qF "its key cannot be looked for: keys_dir $TMP/keys.typo: No such file or directory" \
	"$TMP/jitd.log" || fail "the failed start does not say why: $(tail -n 5 "$TMP/jitd.log")"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "the failed start took keep's element"
cp "$TMP/keys-ok.json" "$CONFIG"
start_jitd
status_json | jq -e '[.grants[].id] | length == 2 and index("keep") != null' >/dev/null ||
	fail "grants after the good start: $(status_json | jq -c '[.grants[].id]')"
pass "the start fails (exit 1, said why), the kernel keeps keep; the next good start restores it"


log "a new host_id waits for the restart, which checks the grants in force against it"
sign --src 192.0.2.6 --port 22 --for 300 --jti old-aud | submit - >/dev/null ||
	fail "a grant for $HOST_ID was refused"
old_id=$HOST_ID
HOST_ID=e2e-renamed
# With other restart-only settings, which (unlike host_id) the reloaded configuration carries.
write_config reject '["198.51.100.3"]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
	'"reconcile_interval": "PT45S", "table_owner": true'
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
wait_until 5 "the reload's warning" \
	grep -q "applied only at the next start: host_id reconcile_interval table_owner" "$TMP/jitd.log"
[ "$(status_json | jq -r .host_id)" = "$old_id" ] ||
	fail "the reload took the new host_id: $(status_json | jq -r .host_id)"
status_json | jq -e '.agent.restart_pending == ["host_id", "reconcile_interval", "table_owner"]' >/dev/null ||
	fail "status's restart_pending: $(status_json | jq -c .agent.restart_pending)"
grep -qx <<<"$("$JITCTL_BIN" -s "$SOCK" status)" \
	"Restart needed: host_id, reconcile_interval, table_owner (changed in the file; applied at the next start)" ||
	fail "jitctl status does not say a restart is needed: $("$JITCTL_BIN" -s "$SOCK" status)"
# Owed at every reload until the restart, not only at the one that met the change.
"$JITCTL_BIN" -s "$SOCK" reload >"$TMP/out" || fail "jitctl reload: $(cat "$TMP/out")"
owed="restart needed for: host_id, reconcile_interval, table_owner (changed in the file; applied at the next"
grep -qx "$owed start)" "$TMP/out" ||
	fail "jitctl reload does not name the restart owed: $(cat "$TMP/out")"
"$JITCTL_BIN" -s "$SOCK" reload --json |
	jq -e '.restart_pending == ["host_id", "reconcile_interval", "table_owner"]' >/dev/null ||
	fail "jitctl reload --json: $("$JITCTL_BIN" -s "$SOCK" reload --json)"
[ "$(grep -c "applied only at the next start: host_id reconcile_interval table_owner" "$TMP/jitd.log")" = 3 ] &&
	status_json | jq -e '.agent.restart_pending == ["host_id", "reconcile_interval", "table_owner"]' >/dev/null ||
	fail "a second reload of the same file forgot the restart owed"
rc=0
sign --aud e2e-renamed --src 192.0.2.5 --port 22 --for 300 | submit - >"$TMP/out" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q wrong_audience "$TMP/out" ||
	fail "a grant for the new host_id before the restart: exit $rc: $(cat "$TMP/out")"
sign --aud "$old_id" --src 192.0.2.5 --port 22 --for 300 | submit - >/dev/null ||
	fail "a grant for the running host_id was refused after the reload"
pass "after the reload: warned, host_id still $old_id and a restart owed (status), grants for it accepted, for the new one refused"
stop_jitd
start_jitd
[ "$(status_json | jq -r .host_id)" = e2e-renamed ] &&
	status_json | jq -e '.agent.restart_pending == []' >/dev/null ||
	fail "after the restart: $(status_json | jq -c '.host_id, .agent.restart_pending')"
for a in 192.0.2.2 192.0.2.5 192.0.2.6; do
	lacks_elem allow4_addr "$a tcp 22" || fail "$a's grant, for $old_id, survived the restart"
done
expect_connect reject "$C1" -b 192.0.2.2 192.0.2.1 22
has_elem allow4_addr "192.0.2.4 tcp 22" || fail "root's local grant did not survive the restart"
sign --src 192.0.2.7 --port 22 --for 300 | submit - >/dev/null ||
	fail "a grant for the new host_id was refused after the restart"
pass "after the restart: host_id e2e-renamed, the old audience's grants gone, the local grant kept"
