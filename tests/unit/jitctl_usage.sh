#!/bin/bash
# Every jitctl usage error is said one way, on stderr only: "jitctl CMD: why", then
# "Try 'jitctl CMD --help'." (no CMD for jitctl's own options), exit 2, nothing on stdout. No
# agent is asked: each error comes before any call. No root, no namespaces.
# Usage: jitctl_usage.sh JITCTL
set -euo pipefail
JITCTL=$1
TMP=$(mktemp -d /tmp/jitd-usage.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
failed=0
n=0

# expect NAME WHY ARGS...: jitctl -s (a socket nobody serves) ARGS exits 2, prints nothing on
# stdout, and on stderr exactly "jitctl[ NAME]: WHY" and "Try 'jitctl[ NAME] --help'.".
expect() {
	local name=$1 why=$2 rc=0 prefix="jitctl"
	shift 2
	[ -n "$name" ] && prefix="jitctl $name"
	"$JITCTL" -s "$TMP/none.sock" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null || rc=$?
	n=$((n + 1))
	printf '%s: %s\nTry '\''%s --help'\''.\n' "$prefix" "$why" "$prefix" >"$TMP/want"
	if [ "$rc" != 2 ] || [ -s "$TMP/out" ] || ! cmp -s "$TMP/want" "$TMP/err"; then
		echo "not ok $n - jitctl $*: exit $rc (want 2); stdout: $(cat "$TMP/out");" \
			"stderr: $(cat "$TMP/err")"
		failed=1
	else
		echo "ok $n - jitctl $*: $(head -1 "$TMP/err")"
	fi
}

bogus="--bogus: unknown, ambiguous, or given a value it takes none of"
expect "" "$bogus" --bogus
expect "" "--socket: missing argument" --socket
expect "" "unknown command 'nosuch'" nosuch
for cmd in status submit revoke grant log reload keygen sign teardown; do
	expect "$cmd" "$bogus" "$cmd" --bogus
done
expect audit "$bogus" audit --bogus
expect status "-x: unknown option" status -x
expect log "--limit: missing argument" log --limit
expect status "unexpected argument 'extra'" status extra
expect submit "expected one FILE (or - for standard input)" submit
expect revoke "expected one GRANT_ID" revoke
expect reload "unexpected argument 'extra'" reload extra
expect teardown "unexpected argument 'extra'" teardown extra
expect log "unexpected argument 'extra'" log extra
expect log "--json and --csv exclude each other" log --json --csv
expect audit "--limit '0' is not a number from 1 to 50000" audit --limit 0
expect log "--event 'nosuch' is not an event name (see --help)" log --event nosuch
expect log "--user is not UTF-8 text" log --user $'\xff'
expect audit "--grant is not UTF-8 text" audit --grant $'\xfe' --user $'\xff'
expect revoke "GRANT_ID is not UTF-8 text" revoke $'\xff'
expect revoke "expected one GRANT_ID" revoke a b
expect submit "expected one FILE (or - for standard input)" submit a b
expect grant "unexpected argument 'extra' (several sources or ports go comma-separated)" \
	grant --src 192.0.2.1 extra
expect grant "--for 'soon' is not a duration (ISO 8601 like PT30M, or seconds)" \
	grant --src 192.0.2.1 --port 22 --for soon --reason r
expect keygen "unexpected argument 'extra'" keygen --kid k --dir "$TMP" extra
expect sign "unexpected argument 'extra'" sign extra
expect grant "--src given twice (several go in one, comma-separated)" \
	grant --src 192.0.2.1 --src 192.0.2.2
expect grant "--src, --port, --for and --reason are required" grant --src 192.0.2.1
expect keygen "missing --kid" keygen --dir "$TMP"
# Lists and durations: grant and sign share the checks, and say them alike.
sign=(sign --key "$TMP/none.key" --kid k --aud h --sub s)
for cmd in grant sign; do
	pre=(grant --reason r)
	[ "$cmd" = sign ] && pre=("${sign[@]}")
	expect "$cmd" "--src '10.0.0.1/8' is not an IP address or prefix (host bits must be zero)" \
		"${pre[@]}" --src 10.0.0.1/8 --port 22 --for 60
	expect "$cmd" "--port '70000' is not a port (1-65535)[/tcp|udp|*]" \
		"${pre[@]}" --src 10.0.0.1 --port 22,70000 --for 60
	expect "$cmd" "--port '22,,23' has an empty item" \
		"${pre[@]}" --src 10.0.0.1 --port 22,,23 --for 60
	expect "$cmd" "--src is empty" "${pre[@]}" --src '' --port 22 --for 60
	expect "$cmd" "--for '0' is shorter than 1 s" "${pre[@]}" --src 10.0.0.1 --port 22 --for 0
	expect "$cmd" "--for 'P2000D' is longer than 31622400 s" \
		"${pre[@]}" --src 10.0.0.1 --port 22 --for P2000D
done
expect sign "--dst is not UTF-8 text" "${sign[@]}" --src 10.0.0.1 --port 22 --for 60 --dst $'\xff'
expect sign "--src is not allowed with --revokes" \
	sign --key "$TMP/none.key" --kid k --aud h --for 60 --revokes g --src 10.0.0.1
expect sign "--terminate is allowed with --revokes only" \
	"${sign[@]}" --src 10.0.0.1 --port 22 --for 60 --terminate
expect keygen "--dir is not UTF-8, which --json cannot print" keygen --kid k --dir $'\xff' --json
expect grant "--reason is not UTF-8 text" \
	grant --src 192.0.2.1 --port 22 --for 60 --reason $'\xff'
expect sign "--kid: missing argument" sign --kid
expect status "--json=yes: unknown, ambiguous, or given a value it takes none of" status --json=yes
# The word that failed, when getopt skipped an operand to reach it: -é is two bytes, no optopt
# jitctl names, so the word is named, not the operand before it.
expect revoke "-é: unknown option" revoke ID -é
expect revoke "-é: unknown option" revoke -é ID
expect status "-é: unknown option" status --json -é
expect revoke "-x: unknown option" revoke ID -x
expect revoke "$bogus" revoke ID --bogus
expect revoke "$bogus" revoke ID --bogus other
[ "$failed" = 0 ] && echo "PASS: jitctl_usage.sh ($n checks)"
exit "$failed"
