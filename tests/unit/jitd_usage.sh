#!/bin/bash
# jitd's usage errors are said as jitctl's are: "jitd: why" then "Try 'jitd --help'." on stderr,
# exit 2, nothing on stdout; --help and --version go to stdout, exit 0. No option here reaches
# a configuration or the kernel: each is refused (or answered) first. No root, no namespaces.
# Usage: jitd_usage.sh JITD
set -euo pipefail
JITD=$1
TMP=$(mktemp -d /tmp/jitd-usage.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
failed=0
n=0
# jitd keeps it (it takes no operands); with it, getopt would stop at "extra" below.
unset POSIXLY_CORRECT

# expect WHY ARGS...: jitd ARGS exits 2, prints nothing on stdout, and on stderr exactly
# "jitd: WHY" and "Try 'jitd --help'.".
expect() {
	local why=$1 rc=0
	shift
	"$JITD" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null || rc=$?
	n=$((n + 1))
	printf 'jitd: %s\nTry '\''jitd --help'\''.\n' "$why" >"$TMP/want"
	if [ "$rc" != 2 ] || [ -s "$TMP/out" ] || ! cmp -s "$TMP/want" "$TMP/err"; then
		echo "not ok $n - jitd $*: exit $rc (want 2); stdout: $(cat "$TMP/out");" \
			"stderr: $(cat "$TMP/err")"
		failed=1
	else
		echo "ok $n - jitd $*: $(head -1 "$TMP/err")"
	fi
}

expect "--bogus: unknown, ambiguous, or given a value it takes none of" --bogus
expect "--help=x: unknown, ambiguous, or given a value it takes none of" --help=x
expect "-x: unknown option" -x
expect "-x: unknown option" -vx
expect "-c: missing argument" -c
expect "--config: missing argument" --config
expect "unexpected argument 'extra'" -c "$TMP/none.json" extra
expect "-é: unknown option" extra -é
expect "--check-config touches nothing, --lockdown the kernel: give one" --check-config --lockdown

# --help and --version: stdout, exit 0, nothing on stderr.
for args in --help -h --version -V; do
	rc=0
	"$JITD" $args >"$TMP/out" 2>"$TMP/err" </dev/null || rc=$?
	n=$((n + 1))
	case $args in
	--help | -h) want='^Usage: jitd ' ;;
	*) want='^jitd [0-9]' ;;
	esac
	if [ "$rc" = 0 ] && [ ! -s "$TMP/err" ] && head -1 "$TMP/out" | grep -q "$want"; then
		echo "ok $n - jitd $args: $(head -1 "$TMP/out")"
	else
		echo "not ok $n - jitd $args: exit $rc; stdout: $(head -1 "$TMP/out");" \
			"stderr: $(cat "$TMP/err")"
		failed=1
	fi
done
[ "$failed" = 0 ] && echo "PASS: jitd_usage.sh ($n checks)"
exit "$failed"
