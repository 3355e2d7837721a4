# A connection a conntrack helper expects ("ct state related") meets the grants like a new one
# when it goes to a protected port. The test's own table in SRV assigns the FTP helper to SRV's
# connections to port 21 (as an admin's table may); SRV's "PORT" command naming its port 22
# makes the kernel expect a connection from the FTP server to 22 (seen by conntrack -L expect).
# Without a grant that connection is dropped, the expectation used up by it; with one it
# connects. ICMP errors about a flow, also related, still come in, and no rule of jitd's
# accepts ct state related (nft -j).
. "$(dirname "$0")/lib.sh"

e2e_default_setup

in_ns "$SRV" nft -f - <<'NFT' || fail "cannot set up the test's own FTP helper table in SRV"
table inet e2e_helper {
	ct helper ftp21 {
		type "ftp" protocol tcp
	}
	chain out {
		type filter hook output priority filter; policy accept;
		tcp dport 21 ct helper set "ftp21"
	}
}
NFT
# The FTP server in C2: an echo listener on 21 (the helper reads SRV's commands; the echo only
# tells that the command went through).
ip netns exec "$C2" "$TCPPROBE_BIN" listen :: 21 >/dev/null &
BG_PIDS+=($!)
wait_until 5 "listener on C2 port 21" in_ns "$C2" "$TCPPROBE_BIN" connect 127.0.0.1 21

# port_command PORT: SRV, an FTP client of 198.51.100.2, sends "USER" and then "PORT
# 198,51,100,1,HI,LO" on a control connection (the helper reads a command only after a line
# it has seen end): it then expects 198.51.100.2 to connect to 198.51.100.1 PORT.
port_command() {
	in_ns "$SRV" timeout 10 python3 - "$1" <<'PY'
import socket, sys
port = int(sys.argv[1])
s = socket.create_connection(("198.51.100.2", 21), timeout=5)
for line in ("USER anonymous\r\n", "PORT 198,51,100,1,%d,%d\r\n" % (port >> 8, port & 255)):
    s.sendall(line.encode())
    got = b""
    while not got.endswith(b"\n"):
        d = s.recv(100)
        if not d:
            sys.exit("the control connection closed before the echo")
        got += d
s.close()
PY
}
# expecting PORT: the kernel expects 198.51.100.2 to connect to 198.51.100.1 PORT (conntrack,
# the tool, which run.sh requires: /proc/net/nf_conntrack_expect is not in every kernel). A
# listing that fails ends the test: read as "none", it would pass the checks that one is gone.
# Its reason goes to the test's own stderr (fd 8): wait_until sends the polled command's away.
exec 8>&2
expecting() {
	local out
	out=$(in_ns "$SRV" conntrack -L expect 2>/dev/null) ||
		fail "conntrack -L expect failed in SRV" 2>&8
	grep -qE "^[0-9]+ proto=6 src=198\.51\.100\.2 dst=198\.51\.100\.1 sport=[0-9]+ dport=$1 " \
		<<<"$out"
}

port_command 22 || fail "the FTP control connection failed"
wait_until 5 "the kernel to expect 198.51.100.2 at port 22" expecting 22
pass "kernel: a PORT command for 22 makes conntrack expect 198.51.100.2 there"
expect_connect drop "$C2" -b 198.51.100.2 198.51.100.1 22
expecting 22 && fail "the dropped SYN did not use the expectation: it was not 'related'"
pass "the dropped connection was the expected one (the expectation is used up)"
[ "$(denied_packets)" -gt 0 ] || fail "counter 'denied' did not count the related SYNs"
pass "kernel: counter 'denied' counts them"

sign --src 198.51.100.2 --port 22 --for 60 | submit - >/dev/null || fail "grant refused"
port_command 22 || fail "the FTP control connection failed"
wait_until 5 "the kernel to expect 198.51.100.2 at port 22" expecting 22
expect_connect ok "$C2" -b 198.51.100.2 198.51.100.1 22
expecting 22 && fail "the granted connection did not use the expectation"
pass "granted, the expected connection to 22 connects"

# An ICMP port unreachable about SRV's datagram to a closed port of C2 is related too.
in_ns "$SRV" timeout 10 python3 - <<'PY' || fail "no ICMP port unreachable reached SRV"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("198.51.100.2", 9))
for _ in range(3):
    s.send(b"x")
    try:
        s.recv(10)
    except ConnectionRefusedError:
        raise SystemExit(0)
    except socket.timeout:
        pass
raise SystemExit(1)
PY
pass "ICMP errors about a flow still reach the host"

kernel_json | jq -e '[.nftables[] | select(.rule?) | .rule.expr[] | .match? // empty
	| select(.left.ct?.key == "state") | .right] | length > 0 and
	all(.[]; . == "established")' >/dev/null ||
	fail "jitd's rules test ct state for more than established: $(kernel_json | jq -c \
		'[.nftables[] | select(.rule?) | .rule.expr[] | .match? // empty
		| select(.left.ct?.key == "state")]')"
pass "kernel: jitd's ct state rules accept established only"
