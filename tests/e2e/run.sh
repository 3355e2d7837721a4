#!/bin/bash
# Runs one end-to-end test script, then checks that it left nothing behind: no namespace, no
# jitd process, and (the host is never touched) no table inet jitd in the caller's namespace.
set -uo pipefail

script=${1:?usage: run.sh TEST_SCRIPT}
if [ "$(id -u)" -ne 0 ]; then
	echo "e2e: must run as root (network namespaces, nftables)" >&2
	exit 1
fi
for tool in ip nft jq ping; do
	command -v "$tool" >/dev/null || { echo "e2e: missing tool: $tool" >&2; exit 1; }
done
host_table_before=$(nft list table inet jitd >/dev/null 2>&1 && echo present || echo absent)

bash "$script" &
pid=$!
wait "$pid"
rc=$?

leftover=$(ip netns list | awk '{print $1}' | grep -E "^jitd-e2e-$pid-" || true)
if [ -n "$leftover" ]; then
	echo "e2e: $script left namespaces behind: $leftover" >&2
	for ns in $leftover; do ip netns del "$ns"; done
	rc=1
fi
host_table_after=$(nft list table inet jitd >/dev/null 2>&1 && echo present || echo absent)
if [ "$host_table_before" != "$host_table_after" ]; then
	echo "e2e: $script changed the host's ruleset (table inet jitd $host_table_before -> $host_table_after)" >&2
	rc=1
fi
exit "$rc"
