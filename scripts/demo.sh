#!/bin/bash
# The README's demo command: installs the dependencies, builds jitd, then in throwaway network
# namespaces (removed at the end, nothing on the host is touched) protects port 22, signs and
# submits a grant, connects, shows `jitctl status`, and watches the grant expire in the kernel
# while the session opened during the grant lives on.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: run as root: the demo creates network namespaces" >&2
	exit 1
fi
if [ "${1:-}" != "--no-build" ]; then
	./scripts/install-deps.sh
	./scripts/build.sh build-demo -DJITD_TESTS=ON
fi
export JITD_BIN=$PWD/build-demo/jitd JITCTL_BIN=$PWD/build-demo/jitctl \
	TCPPROBE_BIN=$PWD/build-demo/tests/tcpprobe
GRANT_SECONDS=20
E2E_SUMMARY=0

# The namespace plumbing is the end-to-end tests' own (tests/e2e/lib.sh).
. tests/e2e/lib.sh
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@" || true; }
try_connect() { # try_connect NS ARGS...: print what a client sees
	if in_ns "$1" "$TCPPROBE_BIN" connect -t 1500 "${@:2}" >/dev/null 2>&1; then
		echo "   -> connected, data echoed"
	else
		echo "   -> no answer (dropped by table inet jitd)"
	fi
}

say "Namespaces: server $SRV (192.0.2.1), client $C1 (192.0.2.2), other client $C2 (198.51.100.2)"
setup_net
setup_keys
write_config drop '[]' '[{"port": 22, "protocol": "tcp", "max_duration": "PT1H", "allowed_sources": ["*"]}]'
start_listeners 22
start_jitd
echo "jitd runs in $SRV with config $CONFIG; an echo service listens on port 22."

say "Port 22 is protected: the client cannot connect"
echo "client 192.0.2.2 -> 192.0.2.1:22"
try_connect "$C1" 192.0.2.1 22
show "$JITCTL_BIN" -s "$SOCK" status

say "A controller signs a grant: alice, from 192.0.2.2, to 22/tcp, for ${GRANT_SECONDS}s"
token=$(sign --src 192.0.2.2 --port 22/tcp --for "$GRANT_SECONDS" --reason "demo: fix the web server")
echo "$token" | cut -c1-100 | sed 's/$/.../'
echo "$token" >"$TMP/grant.jws"
show "$JITCTL_BIN" -s "$SOCK" submit "$TMP/grant.jws"

say "The grant is an element with a kernel timeout in table inet jitd (one address: allow4_addr_2)"
show ip netns exec "$SRV" nft list set inet jitd allow4_addr_2

say "The client connects and keeps a session open; the other client is still refused"
echo "client 192.0.2.2 -> 192.0.2.1:22"
try_connect "$C1" 192.0.2.1 22
echo "client 198.51.100.2 -> 198.51.100.1:22"
try_connect "$C2" 198.51.100.1 22
session_open "$C1" 192.0.2.1 22
echo "hello" >&7
sleep 0.5
sed 's/^/   session: /' "$TMP/session.out"
show "$JITCTL_BIN" -s "$SOCK" status

say "Waiting for the kernel to expire the grant (jitd does nothing to remove it)"
for ((i = 0; i < GRANT_SECONDS + 10; i++)); do
	# Read once: the kernel may remove it between two reads.
	left=$(elem_expires allow4_addr 192.0.2.2)
	[ -z "$left" ] && break
	printf '\r   element still present, %ss left ' "$left"
	sleep 1
done
printf '\n'
show ip netns exec "$SRV" nft list set inet jitd allow4_addr_2

say "After expiry: the open session lives on, a new connection is refused"
echo "still-here" >&7
sleep 0.5
sed 's/^/   session: /' "$TMP/session.out"
echo "client 192.0.2.2 -> 192.0.2.1:22 (new connection)"
try_connect "$C1" 192.0.2.1 22
sleep 1.5
show "$JITCTL_BIN" -s "$SOCK" status

say "Done: namespaces, jitd and its files are removed on exit"
