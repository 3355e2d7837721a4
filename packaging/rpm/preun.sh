# jitd preun scriptlet ($1: 0 on erase, 1 or more on upgrade). On erase: stop and disable jitd, then
# delete its table (stopping jitd alone leaves table inet jitd in place and the protected ports
# closed, which would lock out every administrator once the package is gone). On upgrade
# nothing is stopped: postun restarts jitd, and the table keeps the ports closed meanwhile.
set -e

[ "$1" -eq 0 ] || exit 0

# Whether it was enabled, for an erase refused below: the package then stays, and so must jitd
# at the next boot.
enabled=no
if command -v systemctl >/dev/null 2>&1 &&
	systemctl -q is-enabled jitd.service >/dev/null 2>&1; then
	enabled=yes
fi
if [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now jitd.service >/dev/null 2>&1 || true
elif command -v systemctl >/dev/null 2>&1; then
	systemctl --no-reload disable jitd.service >/dev/null 2>&1 || true
fi

# Our own binary, not whatever jitctl comes first in PATH. The default socket, not the
# configuration's: jitd is stopped, and a configuration that cannot be read would refuse the
# teardown and leave the ports closed with nothing to open them. A jitd still running anywhere
# in this network namespace holds its lock, which teardown asks whatever the socket.
jitctl=/usr/bin/jitctl
if [ ! -x "$jitctl" ]; then
	echo "jitd: $jitctl is missing; if table inet jitd exists, remove it with:" \
		"nft delete table inet jitd" >&2
elif out=$("$jitctl" -s /run/jitd/jitd.sock teardown 2>&1); then
	echo "$out"
else
	echo "$out" >&2
	case $out in
	# The code, not the words (e2e teardown checks this line).
	*"jitctl teardown: refused: agent_running: "*)
		# Erased anyway, it would run on from a deleted binary, the ports closed, with
		# neither jitctl nor the unit left to stop it or open them: a failing preun keeps
		# the package, as the .deb's prerm does.
		echo "jitd: jitd still runs (it was not stopped), so jitd is NOT removed. Stop it" \
			"(systemctl stop jitd), then remove the package again." >&2
		if [ "$enabled" = yes ]; then
			systemctl --no-reload enable jitd.service >/dev/null 2>&1 || true
		fi
		exit 1
		;;
	esac
	echo "jitd: WARNING: 'jitctl teardown' failed: table inet jitd may still" \
		"close the protected ports. Stop jitd, then: nft delete table inet jitd" >&2
fi
exit 0
