#!/bin/bash
# jitctl against a stand-in for the agent (a one-shot Python server on a socket of its own):
# a reply that is not jitd's (an "ok" that is no boolean, "ok": true without what it answers,
# a second line after the reply, however late) exits 3 and prints nothing on stdout, in every
# output mode; a refusal exits 1; a last user that is not defused is, by jitctl status; a long
# list is written whole in --csv. No root, no namespaces.
# Usage: jitctl_replies.sh JITCTL
set -euo pipefail
JITCTL=$1
TMP=$(mktemp -d /tmp/jitd-replies.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
SOCK=$TMP/jitd.sock
echo "a.b.c" >"$TMP/token"
failed=0

# answer REPLY [LATE]: serves one connection on $SOCK: reads the request's line, writes REPLY,
# then (0.2 s later) LATE, and closes. Ready when it returns.
answer() {
	rm -f "$SOCK"
	timeout 20 python3 - "$SOCK" "$1" "${2:-}" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(1)
open(sys.argv[1] + ".ready", "w").close()
c, _ = s.accept()
buf = b""
while b"\n" not in buf:
    d = c.recv(4096)
    if not d:
        break
    buf += d
c.sendall(sys.argv[2].encode())
if sys.argv[3]:
    time.sleep(0.2)
    c.sendall(sys.argv[3].encode())
c.close()
PY
	for _ in $(seq 100); do
		[ -e "$SOCK.ready" ] && break
		sleep 0.05
	done
	rm -f "$SOCK.ready"
}
# expect RC WHAT REPLY LATE CMD...: jitctl CMD against REPLY (then LATE) exits RC; with 3,
# nothing on stdout and "no valid reply" on stderr.
expect() {
	local want=$1 what=$2 rc=0
	answer "$3" "$4"
	shift 4
	"$JITCTL" -s "$SOCK" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
	wait
	if [ "$rc" != "$want" ] || { [ "$want" = 3 ] && { [ -s "$TMP/out" ] ||
		! grep -q "no valid reply" "$TMP/err"; }; }; then
		echo "not ok - $what: jitctl $*: exit $rc (want $want):" \
			"$(cat "$TMP/out" "$TMP/err")"
		failed=1
	else
		echo "ok - $what: jitctl $*: exit $rc"
	fi
}

for mode in "" --json; do
	expect 3 "\"ok\" a string" '{"ok":"true","grant":{"id":"g"}}'$'\n' "" \
		submit $mode "$TMP/token"
	expect 3 "no grant in an ok reply" '{"ok":true}'$'\n' "" submit $mode "$TMP/token"
	expect 3 "no status in an ok reply" '{"ok":true}'$'\n' "" status $mode
	expect 3 "a status that is no object" '{"ok":true,"status":[]}'$'\n' "" status $mode
	expect 1 "a refusal" '{"ok":false,"error":"replay","message":"used"}'$'\n' "" \
		submit $mode "$TMP/token"
	expect 3 "no id in an ok revoke" '{"ok":true}'$'\n' "" revoke $mode some-id
done
for mode in "" --json --csv; do
	expect 3 "no events in an ok reply" '{"ok":true}'$'\n' "" log $mode
	expect 3 "events that are no array" '{"ok":true,"events":{}}'$'\n' "" log $mode
done
expect 0 "a whole status" '{"ok":true,"status":{}}'$'\n' "" status --json
expect 3 "a second line, late" '{"ok":true,"status":{}}'$'\n' '{"ok":true}'$'\n' status --json
# An agent that does not know "limit" sends more: jitctl keeps the newest.
answer '{"ok":true,"events":[{"event":"a"},{"event":"b"},{"event":"c"}],"truncated":false}'$'\n'
"$JITCTL" -s "$SOCK" log --limit 2 --json >"$TMP/out" 2>"$TMP/err" || true
wait
if [ "$(tr -d ' \n' <"$TMP/out")" = '[{"event":"b"},{"event":"c"}]' ]; then
	echo "ok - --limit 2 keeps the newest two of three an older agent sent"
else
	echo "not ok - --limit 2 of three: $(cat "$TMP/out" "$TMP/err")"
	failed=1
fi
# `jitctl audit` is `jitctl log` by another name: what it says names the command as typed.
answer '{"ok":true,"events":[{"event":"a"}],"truncated":true}'$'\n'
"$JITCTL" -s "$SOCK" audit --json >"$TMP/out" 2>"$TMP/err" || true
wait
answer '{"ok":false,"error":"internal","message":"m"}'$'\n'
"$JITCTL" -s "$SOCK" audit >"$TMP/out" 2>>"$TMP/err" || true
wait
if [ "$(cat "$TMP/err")" = "jitctl audit: only the newest 1 events are shown
jitctl audit: refused: internal: m" ]; then
	echo "ok - jitctl audit's notes and refusals say 'jitctl audit'"
else
	echo "not ok - jitctl audit's notes and refusals: $(cat "$TMP/err")"
	failed=1
fi
# What submit refuses itself, before asking: said as the agent's refusals are, with the code.
printf 'a.\xff.c\n' >"$TMP/nottext"
head -c 70000 /dev/zero | tr '\0' a >"$TMP/huge"
for f in nottext:malformed:'token is not text' huge:too_large:'token exceeds 16384 bytes'; do
	rc=0
	"$JITCTL" -s "$TMP/none.sock" submit --json "$TMP/${f%%:*}" >"$TMP/out" 2>"$TMP/err" ||
		rc=$?
	want="{\"error\":\"$(cut -d: -f2 <<<"$f")\",\"message\":\"${f##*:}\"}"
	if [ "$rc" = 1 ] && [ "$(jq -c . "$TMP/out")" = "$want" ] && [ ! -s "$TMP/err" ]; then
		echo "ok - submit refuses ${f%%:*} itself: $want"
	else
		echo "not ok - submit of ${f%%:*}: exit $rc: $(cat "$TMP/out" "$TMP/err")"
		failed=1
	fi
done
# A last user from an agent that does not defuse it (an older one): what a terminal would act
# on, an escape sequence or a bidi override, is shown as '?'.
answer '{"ok":true,"status":{"ports":[{"port":22,"last_user":"\u001b[31mx\u202e"}]}}'$'\n'
"$JITCTL" -s "$SOCK" status >"$TMP/out" 2>"$TMP/err" || true
wait
if grep -qF ' ?[31mx??? ' "$TMP/out" && ! LC_ALL=C grep -q $'\033\\|\xe2\x80\xae' "$TMP/out"; then
	echo "ok - a last user's escape and bidi override shown as '?'"
else
	echo "not ok - a last user's escape and bidi override: $(cat -v "$TMP/out" "$TMP/err")"
	failed=1
fi
# A gateway grant's ports run to thousands: --csv writes the list whole.
ports=$(seq 40000 41199 | paste -sd,)
answer '{"ok":true,"events":[{"event":"grant.applied","gateway_ports":['"$ports"']}]}'$'\n'
"$JITCTL" -s "$SOCK" log --csv >"$TMP/out" 2>"$TMP/err" || true
wait
if [ "$(tail -n 1 "$TMP/out" | tr ',' '\n' | grep -c '^40000 .* 41199$')" = 1 ] &&
	[ "$(tail -n 1 "$TMP/out" | grep -o '4[01][0-9][0-9][0-9]' | wc -l)" = 1200 ]; then
	echo "ok - 1200 gateway ports whole in --csv"
else
	echo "not ok - 1200 gateway ports in --csv: $(tail -c 200 "$TMP/out") $(cat "$TMP/err")"
	failed=1
fi
exit $failed
