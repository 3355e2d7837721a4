# shellcheck shell=bash
# Shared helpers for the end-to-end tests. Sourced by each test script (through run.sh).
#
# Topology, all in namespaces this file creates and always removes (nothing on the host):
#
#   C1 (eth0) 192.0.2.2, 192.0.2.3, 2001:db8:1::2  <-veth->  SRV (c1) 192.0.2.1, 2001:db8:1::1
#   C2 (eth0) 198.51.100.2, .3, 2001:db8:2::2      <-veth->  SRV (c2) 198.51.100.1, 2001:db8:2::1
#
# jitd runs in SRV with its own config, keys, state and control socket under a temp directory.
# The kernel witness is the official reader: `nft -j list table inet jitd` inside SRV.
set -euo pipefail
# The modes the tests expect (audit.jsonl 0640 as jitd makes it; scripts that other uids run)
# are the default umask's, whatever the caller's (sudo keeps a user's 027 or 077).
umask 022

: "${JITD_BIN:?set JITD_BIN to the jitd binary}"
: "${JITCTL_BIN:?set JITCTL_BIN to the jitctl binary}"
: "${TCPPROBE_BIN:?set TCPPROBE_BIN to the tcpprobe binary}"

# run.sh's pid when it runs this script (through timeout): the names it checks for leftovers.
E2E_TAG="jitd-e2e-${E2E_RUN_ID:-$$}"
SRV="$E2E_TAG-srv"
C1="$E2E_TAG-c1"
C2="$E2E_TAG-c2"
B2="$E2E_TAG-b2" # gateway tests only: a second machine behind SRV
TMP=$(mktemp -d "/tmp/$E2E_TAG.XXXXXX")
SOCK="$TMP/run/jitd.sock"
CONFIG="$TMP/jitd.json"
HOST_ID="e2e-host"
JITD_PID=""
BG_PIDS=()
CHECKS=0

log() { printf '%s\n' "--- $*"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	if [ -s "$TMP/jitd.log" ]; then
		printf -- '--- jitd log (last 30 lines):\n' >&2
		tail -n 30 "$TMP/jitd.log" >&2
	fi
	exit 1
}
pass() { CHECKS=$((CHECKS + 1)); printf 'ok %d - %s\n' "$CHECKS" "$*"; }

# "STATE PPID" of process $1 from /proc (no procps on a minimal system); nothing if it is gone.
proc_state() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	st=${st##*) } # the command name, in parentheses, may hold spaces
	printf '%s\n' "${st% "${st#* * }"}"
}

# Is $1 a child of this shell still running? One that ended (bash reaps at once and keeps the
# status for wait) may have left its pid to some other process by now: never signal it.
is_child() { local s; s=$(proc_state "$1"); [ "${s#* }" = "$$" ]; }

# Waits at most $2 seconds for child $1 to end; 0 if it did.
wait_gone() {
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		case $(proc_state "$1") in
		Z* | "") return 0 ;;
		esac
		sleep 0.2
	done
	return 1
}

e2e_cleanup() {
	local rc=$?
	set +e
	exec 7>&- # (a redirection on exec alone would hold for the rest of the shell)
	# A jitd still running at the end is stopped as stop_jitd would: its SIGTERM must end in a
	# clean exit 0 (LeakSanitizer's report included), whatever the test checked before.
	# A jitd that died since the last check is caught here too: wait returns its status.
	if [ -n "$JITD_PID" ]; then
		local jrc=0
		if is_child "$JITD_PID"; then
			# A test interrupted while it held jitd stopped (SIGSTOP) must not leave the
			# SIGTERM pending.
			kill -CONT "$JITD_PID" 2>/dev/null
			kill -TERM "$JITD_PID" 2>/dev/null
			if ! wait_gone "$JITD_PID" 20; then
				printf 'FAIL: jitd did not exit within 20 s of SIGTERM\n' >&2
				kill -KILL "$JITD_PID" 2>/dev/null
				rc=1
			fi
		fi
		wait "$JITD_PID" 2>/dev/null || jrc=$?
		if [ "$rc" -eq 0 ] && [ "$jrc" -ne 0 ]; then
			printf 'FAIL: jitd ended with status %d (at the final SIGTERM or before)\n' \
				"$jrc" >&2
			tail -n 30 "$TMP/jitd.log" >&2
			rc=1
		fi
	fi
	for p in "${BG_PIDS[@]}"; do
		is_child "$p" && kill "$p" 2>/dev/null
	done
	for p in "${BG_PIDS[@]}"; do
		is_child "$p" && ! wait_gone "$p" 10 && kill -KILL "$p"
		wait "$p" 2>/dev/null
	done
	# A process still inside a namespace would keep it (and its table) alive after `ip netns del`.
	local ns left
	for ns in "$SRV" "$C1" "$C2" "$B2"; do
		left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
		if [ -n "$left" ]; then
			printf 'FAIL: processes left in %s: %s\n' "$ns" "$left" >&2
			kill -KILL $left 2>/dev/null
			rc=1
		fi
	done
	# Deleting the namespaces takes their interfaces and their nftables tables with them.
	for ns in "$SRV" "$C1" "$C2" "$B2"; do
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$TMP"
	if [ "$rc" -eq 0 ] && [ "${E2E_SUMMARY:-1}" = 1 ]; then
		printf 'PASS: %s (%d checks)\n' "$(basename "$0")" "$CHECKS"
	fi
	exit "$rc"
}
trap e2e_cleanup EXIT
trap 'exit 130' INT TERM HUP

# Polls CMD (every 0.2 s) until it succeeds or SECONDS_MAX pass. Never unbounded.
wait_until() {
	local max=$1 what=$2 i
	shift 2
	for ((i = 0; i < max * 5; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	fail "timed out after ${max}s waiting for: $what"
}

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# own_run NS CMD...: CMD in network namespace NS under an empty /run of its own (a private mount
# namespace that goes with CMD): jitctl teardown asks the default socket, /run/jitd/jitd.sock,
# too, where a host's own jitd would answer for the test's.
own_run() {
	local ns=$1; shift
	ip netns exec "$ns" unshare -m --propagation private sh -c \
		'mount -t tmpfs -o mode=0755 jitd-e2e-run /run && exec "$@"' sh "$@"
}
# Background jobs call `ip netns exec` directly, never through a function: a backgrounded
# function is a subshell, and killing its pid would leave the real process running.

setup_net() {
	local ns
	for ns in "$SRV" "$C1" "$C2"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
	done
	ip -n "$SRV" link add c1 type veth peer name eth0 netns "$C1"
	ip -n "$SRV" link add c2 type veth peer name eth0 netns "$C2"
	ip -n "$SRV" addr add 192.0.2.1/24 dev c1
	ip -n "$SRV" addr add 2001:db8:1::1/64 dev c1 nodad
	ip -n "$SRV" addr add 198.51.100.1/24 dev c2
	ip -n "$SRV" addr add 2001:db8:2::1/64 dev c2 nodad
	ip -n "$C1" addr add 192.0.2.2/24 dev eth0
	ip -n "$C1" addr add 192.0.2.3/24 dev eth0
	ip -n "$C1" addr add 2001:db8:1::2/64 dev eth0 nodad
	ip -n "$C2" addr add 198.51.100.2/24 dev eth0
	ip -n "$C2" addr add 198.51.100.3/24 dev eth0
	ip -n "$C2" addr add 2001:db8:2::2/64 dev eth0 nodad
	ip -n "$SRV" link set c1 up
	ip -n "$SRV" link set c2 up
	ip -n "$C1" link set eth0 up
	ip -n "$C2" link set eth0 up
	# Both ends up and reachable before any test asserts a failure means "blocked".
	wait_until 10 "C1 reaches SRV over IPv4" in_ns "$C1" ping -c1 -W1 192.0.2.1
	wait_until 10 "C2 reaches SRV over IPv4" in_ns "$C2" ping -c1 -W1 198.51.100.1
	wait_until 10 "C1 reaches SRV over IPv6" in_ns "$C1" ping -6 -c1 -W1 2001:db8:1::1
	wait_until 10 "C2 reaches SRV over IPv6" in_ns "$C2" ping -6 -c1 -W1 2001:db8:2::1
}

# Gateway topology (e2e gateway): SRV routes between a client and two machines behind it.
#
#   C1 (eth0) 192.0.2.2, .3, 2001:db8:1::2  <-veth->  (c1) 192.0.2.1, 2001:db8:1::1   SRV
#   C2 (eth0) 10.1.0.5, 2001:db8:10::5  <-veth->  (b1) \  bridge br0 in SRV:
#   B2 (eth0) 10.1.0.6, 2001:db8:10::6  <-veth->  (b2) /  10.1.0.1/24, 2001:db8:10::1/64
#
# Forwarding is switched on in SRV's namespace only; every other namespace routes via SRV.
setup_gateway_net() {
	local ns
	for ns in "$SRV" "$C1" "$C2" "$B2"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
	done
	in_ns "$SRV" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	ip -n "$SRV" link add c1 type veth peer name eth0 netns "$C1"
	ip -n "$SRV" link add b1 type veth peer name eth0 netns "$C2"
	ip -n "$SRV" link add b2 type veth peer name eth0 netns "$B2"
	ip -n "$SRV" link add br0 type bridge
	ip -n "$SRV" link set b1 master br0
	ip -n "$SRV" link set b2 master br0
	ip -n "$SRV" addr add 192.0.2.1/24 dev c1
	ip -n "$SRV" addr add 2001:db8:1::1/64 dev c1 nodad
	ip -n "$SRV" addr add 10.1.0.1/24 dev br0
	ip -n "$SRV" addr add 2001:db8:10::1/64 dev br0 nodad
	ip -n "$C1" addr add 192.0.2.2/24 dev eth0
	ip -n "$C1" addr add 192.0.2.3/24 dev eth0
	ip -n "$C1" addr add 2001:db8:1::2/64 dev eth0 nodad
	ip -n "$C2" addr add 10.1.0.5/24 dev eth0
	ip -n "$C2" addr add 2001:db8:10::5/64 dev eth0 nodad
	ip -n "$B2" addr add 10.1.0.6/24 dev eth0
	ip -n "$B2" addr add 2001:db8:10::6/64 dev eth0 nodad
	for ns in "$SRV" "$C1" "$C2" "$B2"; do
		ip -n "$ns" link set eth0 up 2>/dev/null || true
	done
	for dev in c1 b1 b2 br0; do
		ip -n "$SRV" link set "$dev" up
	done
	ip -n "$C1" route add default via 192.0.2.1
	ip -n "$C1" -6 route add default via 2001:db8:1::1
	for ns in "$C2" "$B2"; do
		ip -n "$ns" route add default via 10.1.0.1
		ip -n "$ns" -6 route add default via 2001:db8:10::1
	done
	wait_until 10 "C1 reaches 10.1.0.5 through SRV" in_ns "$C1" ping -c1 -W1 10.1.0.5
	wait_until 10 "C1 reaches 10.1.0.6 through SRV" in_ns "$C1" ping -c1 -W1 10.1.0.6
	wait_until 10 "C1 reaches 2001:db8:10::5 through SRV" in_ns "$C1" ping -6 -c1 -W1 2001:db8:10::5
}

# Echo listeners in SRV on every address: the protected ports and one unprotected port.
start_listeners() {
	local port
	for port in "$@"; do
		ip netns exec "$SRV" "$TCPPROBE_BIN" listen :: "$port" >/dev/null &
		BG_PIDS+=($!)
	done
	for port in "$@"; do
		wait_until 5 "listener on port $port" in_ns "$SRV" "$TCPPROBE_BIN" connect 127.0.0.1 "$port"
	done
}

# A controller key pair; only the public half goes to jitd's keys_dir.
setup_keys() {
	mkdir -p "$TMP/signer" "$TMP/keys.d" "$TMP/run"
	mkdir -p -m 0700 "$TMP/state"
	"$JITCTL_BIN" keygen --kid ctl --dir "$TMP/signer" >/dev/null
	cp "$TMP/signer/ctl.pem" "$TMP/keys.d/ctl.pem"
	chmod 0644 "$TMP/keys.d/ctl.pem"
}

# write_config DENY_ACTION ALWAYS_ALLOW_JSON PORTS_JSON [EXTRA_MEMBERS_JSON]; PORTS_JSON "": none
write_config() {
	local ports=${3:+,
  \"ports\": $3} extra=${4:+,
  $4}
	cat >"$CONFIG" <<EOF
{
  "host_id": "$HOST_ID",
  "keys_dir": "$TMP/keys.d",
  "state_dir": "$TMP/state",
  "control_socket": "$SOCK",
  "deny_action": "$1",
  "clock_skew": "PT5S",
  "always_allow": $2$ports$extra
}
EOF
	# The test's made-up records stay out of the host's syslog (audit.sh turns the copy on,
	# towards a socket of its own), also when EXTRA_MEMBERS_JSON has an "audit" of its own.
	config_edit '.audit.syslog //= false'
}

# config_edit FILTER: $CONFIG rewritten by jq FILTER, mode 0600 as write_config leaves it.
config_edit() {
	jq "$1" "$CONFIG" >"$CONFIG.new"
	mv "$CONFIG.new" "$CONFIG"
	chmod 0600 "$CONFIG"
}

# Root without DAC override, as the packaged unit runs jitd: a file root may not read is unread.
NODAC=(setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-dac_override,-dac_read_search --)

# start_jitd [WRAPPER...]: jitd in the server's namespace (run by WRAPPER, say "${NODAC[@]}"),
# answering on its socket within 10 s.
start_jitd() {
	ip netns exec "$SRV" "$@" "$JITD_BIN" -c "$CONFIG" >>"$TMP/jitd.log" 2>&1 &
	JITD_PID=$!
	local i
	for ((i = 0; i < 50; i++)); do
		if "$JITCTL_BIN" -s "$SOCK" status --json >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$JITD_PID" 2>/dev/null || fail "jitd exited during start-up"
		sleep 0.2
	done
	fail "jitd did not answer on $SOCK within 10s"
}

# start_jitd_in_place_pause CMD...: (test builds) a start of jitd held 3 s once it has found its
# table in place ($JITD_TEST_PLACE_PAUSE_FILE), while CMD runs: a change between the start's read
# of the table and what it does next. Fails if CMD could not run there.
start_jitd_in_place_pause() {
	local lines planter
	lines=$(wc -l <"$TMP/jitd.log")
	export JITD_TEST_PLACE_PAUSE_FILE=$TMP/placepause
	echo 3000 >"$JITD_TEST_PLACE_PAUSE_FILE"
	(
		local i t
		for ((i = 0; i < 100; i++)); do
			t=$(tail -n +"$((lines + 1))" "$TMP/jitd.log")
			if grep -q "table inet jitd is in place: left as it is" <<<"$t"; then
				"$@"
				exit
			fi
			sleep 0.05
		done
		exit 1
	) &
	planter=$!
	BG_PIDS+=("$planter")	# stopped with the rest if the start fails before the wait
	start_jitd
	wait "$planter" || fail "could not run during the start's pause: $*"
	[ ! -e "$JITD_TEST_PLACE_PAUSE_FILE" ] || fail "jitd did not take the pause"
	unset JITD_TEST_PLACE_PAUSE_FILE
}

# stop_jitd [SIGNAL]: a SIGTERM must end in a clean exit 0 (which, under ASan, includes LeakSanitizer).
stop_jitd() {
	local sig=${1:-TERM} rc=0
	kill -"$sig" "$JITD_PID"
	wait "$JITD_PID" 2>/dev/null || rc=$?
	JITD_PID=""
	if [ "$sig" = TERM ] && [ "$rc" -ne 0 ]; then
		fail "jitd exited with status $rc on SIGTERM"
	fi
}

# kill_in_pause HOOK_FILE WHAT ARGS...: jitd killed while the test hook HOOK_FILE names holds it
# inside `jitctl ARGS` (WHAT, for the wait's message), run in the background; the hook's longest
# pause, so that the kill lands inside it however slow this machine. jitctl's output in
# $TMP/out, its exit status in pause_rc.
kill_in_pause() {
	local file=$1 what=$2 pid
	shift 2
	echo 10000 >"$file"
	"$JITCTL_BIN" -s "$SOCK" "$@" >"$TMP/out" 2>&1 &
	pid=$!
	BG_PIDS+=("$pid")
	wait_until 5 "jitd to pause in $what" test ! -e "$file"
	stop_jitd KILL
	pause_rc=0
	wait "$pid" || pause_rc=$?
}

# The standard set-up most tests want: e2e_default_setup [DENY_ACTION [EXTRA_MEMBERS_JSON]].
e2e_default_setup() {
	setup_net
	setup_keys
	write_config "${1:-drop}" '["198.51.100.3"]' \
		'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]},
		  {"port": 3389, "protocol": "TCP", "max_duration": "PT1H", "allowed_sources": ["10.0.0.0/8", "2001:db8:2::/48"]}]' \
		"${2:-}"
	start_listeners 22 3389 8080
	start_jitd
}

# One port, any source, with "table_owner": true (e2e owner and owner_fallback).
e2e_owner_setup() {
	setup_net
	setup_keys
	write_config drop '[]' \
		'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["*"]}]' \
		'"table_owner": true'
	start_listeners 22
	start_jitd
}

# --- a mount namespace of the test's own, for a state_dir on a file system the test makes ------

# mnt_holder: a process holding a private mount namespace in SRV's network namespace (unshare:
# its mounts go with it; nothing on the host changes). in_mnt runs a command in it;
# start_jitd_mnt starts jitd in it and in SRV's network namespace.
HOLDER=""
holding() { [ "$(cat "/proc/$HOLDER/comm" 2>/dev/null)" = sleep ]; }
mnt_holder() {
	# 230 s: outlives run.sh's 200 + 20 s, no more, should a kill leave it behind.
	ip netns exec "$SRV" unshare -m --propagation private sleep 230 &
	HOLDER=$!
	BG_PIDS+=("$HOLDER")
	wait_until 5 "the mount namespace" holding
}
in_mnt() { nsenter -t "$HOLDER" -m -- "$@"; }
start_jitd_mnt() {
	nsenter -t "$HOLDER" -m -n -- "$JITD_BIN" -c "$CONFIG" >>"$TMP/jitd.log" 2>&1 &
	JITD_PID=$!
	wait_until 10 "jitd answering" "$JITCTL_BIN" -s "$SOCK" status --json
}

# --- a stand-in for /dev/log (test builds: $JITD_TEST_SYSLOG_PATH) ----------------------------

# syslog_standin: a datagram socket of the test's own, each datagram one line of
# $TMP/syslog.txt; JITD_TEST_SYSLOG_PATH exported towards it for jitd and jitctl.
syslog_standin() {
	/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(65536) + b"\n")' "$TMP/syslog.sock" "$TMP/syslog.txt" &
	BG_PIDS+=($!)
	wait_until 5 "the syslog stand-in" test -S "$TMP/syslog.sock"
	export JITD_TEST_SYSLOG_PATH=$TMP/syslog.sock
}
# syslog_read_up_to MARK: MARK sent to the stand-in and read back, after all sent before it.
syslog_read_up_to() {
	/usr/bin/python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(sys.argv[2].encode(), sys.argv[1])' \
		"$TMP/syslog.sock" "$1"
	wait_until 5 "the syslog stand-in to read $1" grep -qx "$1" "$TMP/syslog.txt"
}

# --- a throwaway PKI for the HTTPS endpoint, in $PKI -----------------------------------------

PKI="$TMP/pki"
# ca NAME: a certificate authority.
ca() {
	mkdir -p "$PKI"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
		-subj "/CN=$1" -keyout "$PKI/$1.key" -out "$PKI/$1.pem" 2>/dev/null
	chmod 0600 "$PKI/$1.key"
}
# cert CA NAME EXTENSIONS [DAYS]: a leaf certificate that CA signs, valid DAYS (default 1; 0:
# it expires the second it is made).
cert() {
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
		-keyout "$PKI/$2.key" -out "$PKI/$2.csr" 2>/dev/null
	printf '%s\n' "$3" >"$PKI/$2.ext"
	openssl x509 -req -in "$PKI/$2.csr" -CA "$PKI/$1.pem" -CAkey "$PKI/$1.key" \
		-CAcreateserial -days "${4:-1}" -extfile "$PKI/$2.ext" -out "$PKI/$2.pem" 2>/dev/null
	chmod 0600 "$PKI/$2.key"
}

# sign ARGS...: a grant for this host from the test controller (extra args override/add).
sign() {
	"$JITCTL_BIN" sign --key "$TMP/signer/ctl.key" --kid ctl --aud "$HOST_ID" --sub alice "$@"
}

submit() { "$JITCTL_BIN" -s "$SOCK" submit "$@"; }
# post_jwt PATH FILE: FILE's token posted to the plain-HTTP endpoint on 127.0.0.1:7080 in $SRV,
# as a controller does; the HTTP status printed, the body in $TMP/body.
post_jwt() {
	in_ns "$SRV" curl -sS --max-time 10 -o "$TMP/body" -w '%{http_code}' \
		-H 'Content-Type: application/jwt' --data-binary "@$2" "http://127.0.0.1:7080$1"
}
status_json() { "$JITCTL_BIN" -s "$SOCK" status --json; }
status_has_no_grants() { status_json | jq -e '.grants == []'; }

# --- the kernel witness -------------------------------------------------------------------------

kernel_json() { in_ns "$SRV" nft -j list table inet jitd; }
# The same without the elements' remaining times, which change from one read to the next.
strip_expires() { jq -S 'walk(if type == "object" then del(.expires) else . end)'; }

# The gc-interval of every set with timeouts (the grant sets), as a JSON array, in seconds.
grant_sets_gc() {
	kernel_json | jq -c '[.nftables[] | select(.set? and (.set.flags // [] | index("timeout")))
		| .set."gc-interval"]'
}
# Fails unless every grant set is collected once a minute (ruleset.c, GRANT_SET_GC_MS).
gc_once_a_minute() {
	local gc
	gc=$(grant_sets_gc)
	jq -e 'length > 0 and all(. == 60)' <<<"$gc" >/dev/null ||
		fail "the grant sets' garbage collection intervals are $gc, want 60 s each"
}

# Elements of one grant set as "SOURCE PROTO PORT" lines, sorted: allow4/allow6 (wider ranges),
# or allow4_addr/allow6_addr, which stands for all of allow4_addr_0 .. allow4_addr_15 (one
# address each; the address's low four bits pick the set). SOURCE is an address, a/len, or
# lo-hi, exactly as nft prints the interval. A set (or table) that is not there prints NO_SET:
# "no elements" must never be what a missing table looks like.
NO_SET="(set not in the kernel)"
# The jq test for "a set that $set names".
SET_MATCH='.name | test("^" + $set + (if ($set | endswith("_addr")) then "_([0-9]|1[0-5])$" else "$" end))'
allow_elems() {
	local doc want=1
	case $1 in *_addr) want=16 ;; esac
	doc=$(kernel_json 2>/dev/null) && echo "$doc" | jq -e --arg set "$1" --argjson want "$want" \
		"[.nftables[] | .set? | select(.) | select($SET_MATCH)] | length == \$want" >/dev/null || {
		echo "$NO_SET"
		return 0
	}
	echo "$doc" | jq -r --arg set "$1" "
		.nftables[] | select(.set? and (.set | $SET_MATCH)) | (.set.elem // [])[]"'
		| (if type == "object" and has("elem") then .elem.val else . end) | .concat
		| [ (.[0] | if type == "string" then .
			elif has("range") then "\(.range[0])-\(.range[1])"
			elif has("prefix") then "\(.prefix.addr)/\(.prefix.len)"
			else tostring end),
		    (.[1] | tostring), (.[2] | tostring) ] | join(" ")' | sort
}

# Elements of any set or map as "MEMBER MEMBER ..." lines (ranges lo-hi, prefixes a/len),
# sorted; for a map, " : " and the value's members follow. A set (or table) that is not there
# prints NO_SET: "empty" must never be what a missing set looks like.
member() {
	printf '%s' '(if type == "string" or type == "number" then tostring
		elif has("range") then "\(.range[0])-\(.range[1])"
		elif has("prefix") then "\(.prefix.addr)/\(.prefix.len)" else tostring end)'
}
set_elems() {
	local doc
	doc=$(kernel_json 2>/dev/null) &&
		echo "$doc" | jq -e --arg set "$1" '[.nftables[] | (.set? // .map?) | select(.) |
			select(.name == $set)] | length == 1' >/dev/null || {
		echo "$NO_SET"
		return 0
	}
	echo "$doc" | jq -r --arg set "$1" "
		.nftables[] | select((.set? // .map?) and ((.set // .map).name == \$set))
		| ((.set // .map).elem // [])[]
		| (if type == \"array\" then . else [., null] end) as [\$k, \$v]
		| (\$k | if type == \"object\" and has(\"elem\") then .elem.val else . end
			| if type == \"object\" and has(\"concat\") then .concat else [.] end
			| map($(member)) | join(\" \"))
		+ (if \$v then \" : \" + (\$v.concat | map($(member)) | join(\" \"))
			else \"\" end)" | sort
}

# The one-address set an address's element is in: allow4_addr_K, K its last byte's low bits.
addr_set() {
	local last
	case $1 in
	*:*) last=$(python3 -c 'import ipaddress, sys; print(ipaddress.ip_address(sys.argv[1]).packed[-1])' "$1")
		echo "allow6_addr_$((last % 16))" ;;
	*) echo "allow4_addr_$((${1##*.} % 16))" ;;
	esac
}

# least_left SECS SINCE: the least time an element given SECS when SECONDS was SINCE may have
# left now: SECS less the seconds gone since (not a guess at how long the test takes), less 2
# for rounding.
least_left() { echo $(($1 - (SECONDS - $2) - 2)); }
# Seconds left on the allow element whose source text is $2 in set $1 ("" when absent).
elem_expires() {
	kernel_json | jq -r --arg set "$1" --arg src "$2" "
		.nftables[] | select(.set? and (.set | $SET_MATCH)) | (.set.elem // [])[]"'
		| select(type == "object" and has("elem")) | .elem
		| select(.val.concat[0] | (if type == "string" then .
			elif has("range") then "\(.range[0])-\(.range[1])"
			elif has("prefix") then "\(.prefix.addr)/\(.prefix.len)" else "" end) == $src)
		| .expires'
}

denied_packets() {
	kernel_json | jq -r '.nftables[] | select(.counter? and .counter.name == "denied") | .counter.packets'
}

HOST_SETS="allow4_addr allow4 allow6_addr allow6"
# Every host grant set's elements, one "SET SOURCE PROTO PORT" line each.
host_elems() {
	local set
	for set in $HOST_SETS; do allow_elems "$set" | sed "s/^/$set /"; done
}
# A listing that failed to read (allow_elems' status) never passes for one without elements.
no_allow_elems() {
	local set elems
	for set in $HOST_SETS; do
		elems=$(allow_elems "$set") && [ -z "$elems" ] || return 1
	done
}
# Element lists are read whole before grep looks at them: `grep -q` at the end of a pipe quits
# at the first match, the writer may still be writing, and under pipefail its SIGPIPE turns a
# match into a failure (nft flushes every line; CI lost restart.sh to this once).
has_elem() { local elems; elems=$(allow_elems "$1") && grep -qxF "$2" <<<"$elems"; }
# holds_match SET ERE / lacks_match SET ERE: the set is there and some / no element line matches.
holds_match() {
	local elems
	elems=$(allow_elems "$1") || return 1
	[ "$elems" != "$NO_SET" ] && grep -qE "$2" <<<"$elems"
}
lacks_match() {
	local elems
	elems=$(allow_elems "$1") || return 1
	[ "$elems" != "$NO_SET" ] && ! grep -qE "$2" <<<"$elems"
}
# lacks_source SET SOURCE: the set is there and holds no element whose source is SOURCE
# (whatever its protocol and port, a range of ports included).
lacks_source() {
	local elems
	elems=$(allow_elems "$1") || return 1
	[ "$elems" != "$NO_SET" ] && ! awk -v s="$2" '$1 == s { f = 1 } END { exit !f }' <<<"$elems"
}
lacks_elem() {
	local elems
	elems=$(allow_elems "$1") || return 1
	[ "$elems" != "$NO_SET" ] && ! grep -qxF "$2" <<<"$elems"
}

# --- traffic ------------------------------------------------------------------------------------

# probe_expect ROLE WHAT RESULT NS [tcpprobe ROLE args...]: RESULT is ok, drop (no answer
# within 1.5 s) or reject (a reset, or an ICMP port unreachable: ECONNREFUSED).
probe_expect() {
	local role=$1 what=$2 want=$3 ns=$4 rc=0 code
	shift 4
	in_ns "$ns" "$TCPPROBE_BIN" "$role" -t 1500 "$@" >/dev/null 2>&1 || rc=$?
	case $want in
	ok) code=0 ;;
	drop) code=1 ;;
	reject) code=2 ;;
	*) fail "expect_$role: unknown expectation $want" ;;
	esac
	[ "$rc" -eq "$code" ] || fail "$what from $ns ($*): wanted $want (exit $code), got exit $rc"
	pass "$what from $ns to $* -> $want"
}
# expect_connect RESULT NS [tcpprobe connect args...]: a TCP connection and one echoed line.
expect_connect() { probe_expect connect connect "$@"; }
# expect_udp RESULT NS [tcpprobe udp-ask args...]: one datagram and its echo.
expect_udp() { probe_expect udp-ask UDP "$@"; }

# A long-lived session from NS: session_open NS ADDR PORT [SRC]; then session_say WORD.
# One session at a time; session_close ends it so that another can be opened.
SESSION_PID=""
session_open() {
	local bind=()
	[ -n "${4:-}" ] && bind=(-b "$4")
	rm -f "$TMP/session.in" "$TMP/session.out"
	mkfifo "$TMP/session.in"
	ip netns exec "$1" "$TCPPROBE_BIN" session -t 3000 "${bind[@]}" "$2" "$3" <"$TMP/session.in" >"$TMP/session.out" 2>&1 &
	SESSION_PID=$!
	BG_PIDS+=($!)
	exec 7>"$TMP/session.in"
	wait_until 5 "session to $2 port $3 to connect" grep -qx connected "$TMP/session.out"
}
session_say() {
	echo "$1" >&7
	wait_until 8 "session echo of '$1'" grep -qE "^(ok|failed) $1" "$TMP/session.out"
	grep -qx "ok $1" "$TMP/session.out" || fail "session exchange '$1' failed: $(cat "$TMP/session.out")"
	pass "established session still exchanges data ('$1')"
}
# session_cut WORD: the session must now fail, with a reset (not a silent timeout).
session_cut() {
	echo "$1" >&7
	wait_until 8 "session answer to '$1'" grep -qE "^(ok|failed) $1" "$TMP/session.out"
	grep -q "^failed $1: Connection reset by peer" "$TMP/session.out" ||
		fail "session was not cut by a reset: $(cat "$TMP/session.out")"
	pass "session cut with a reset ('$1')"
}
session_close() {
	exec 7>&-
	[ -z "$SESSION_PID" ] || wait "$SESSION_PID" 2>/dev/null || true
	SESSION_PID=""
	return 0
}
