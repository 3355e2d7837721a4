#!/bin/bash
# Runs one end-to-end test script, then checks that it left nothing behind: no namespace, no
# temporary directory, and (the host is never touched) in the caller's namespace no table inet
# jitd come or gone, and no table gone (a flush that escaped). The script's own clean-up stops
# jitd and every process it started.
set -uo pipefail

script=${1:?usage: run.sh TEST_SCRIPT}
if [ "$(id -u)" -ne 0 ]; then
	echo "e2e: must run as root (network namespaces, nftables)" >&2
	exit 1
fi
for tool in ip nft jq ping conntrack curl openssl python3 timeout sysctl; do
	command -v "$tool" >/dev/null || { echo "e2e: missing tool: $tool" >&2; exit 1; }
done
# The tables, not their contents: a host's own rules (a fail2ban set) may change meanwhile, and
# its services may add tables of their own (only a warning).
host_tables() { nft list tables 2>&1 | sort; }
host_tables_before=$(host_tables)

# Under ctest's own TIMEOUT (240 s), which kills without a word: a script that runs too long
# gets SIGTERM first, so that its clean-up removes what it made. TERM or HUP to run.sh goes to
# the script too.
export E2E_RUN_ID=$$
timeout -k 20 200 bash "$script" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP
rc=0
# A trapped signal interrupts wait (status > 128): wait again for the script's clean-up.
while :; do
	wait "$pid"
	rc=$?
	kill -0 "$pid" 2>/dev/null || break
done
case $rc in
124) echo "e2e: $script ran out of its 200 s: stopped" >&2 ;;
137) echo "e2e: $script ran out of its 200 s and did not stop on SIGTERM: killed" >&2 ;;
esac

leftover=$(ip netns list | awk '{print $1}' | grep -E "^jitd-e2e-$$-" || true)
if [ -n "$leftover" ]; then
	echo "e2e: $script left namespaces behind: $leftover" >&2
	for ns in $leftover; do ip netns del "$ns"; done
	rc=1
fi
leftover=$(find /tmp -maxdepth 1 -name "jitd-e2e-$$.*" 2>/dev/null)
if [ -n "$leftover" ]; then
	echo "e2e: $script left temporary files behind: $leftover" >&2
	# Gone, so that a later run given the same pid is not blamed for them. By find itself:
	# /tmp is anyone's, and a name with a space, a * or a newline must not widen what goes.
	find /tmp -maxdepth 1 -name "jitd-e2e-$$.*" -exec rm -rf -- {} +
	rc=1
fi
host_tables_after=$(host_tables)
if [ "$host_tables_before" != "$host_tables_after" ]; then
	says="tables before [$(paste -sd, <<<"$host_tables_before")], after [$(paste -sd, \
		<<<"$host_tables_after")]"
	# Reported, never repaired here: a table inet jitd may be a real jitd's, started meanwhile.
	if [ "$(grep -cx "table inet jitd" <<<"$host_tables_before")" != \
		"$(grep -cx "table inet jitd" <<<"$host_tables_after")" ] ||
		[ -n "$(comm -23 <(echo "$host_tables_before") <(echo "$host_tables_after"))" ]
	then
		echo "e2e: $script changed the host's ruleset: $says" >&2
		rc=1
	else
		echo "e2e: warning: the host's tables changed meanwhile (not the tests'): $says" >&2
	fi
fi
exit "$rc"
