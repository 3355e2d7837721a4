# jitd postun scriptlet ($1: 0 on erase, 1 or more on upgrade). On upgrade: restart jitd if it runs
# (systemd_postun_with_restart); stopping it leaves table inet jitd, so the ports stay closed
# across the restart. On erase, RPM has no purge: /var/lib/jitd (grants, replay cache, audit
# trail) and the group jitd are left in place, as RPM packages leave state they created.
set -e

# "$@" as the unit runs jitd, where this host lets a mount namespace be made (not in most
# containers: there, as it is): root with no capability but CAP_NET_ADMIN (so no DAC override:
# a key in a directory another user keeps to itself is unreadable), group jitd, and /home,
# /root, /run/user, /tmp and /var/tmp hidden (ProtectHome=, PrivateTmp=). Checked as full root
# in the installer's view, a key the unit cannot read counted as one, and jitd closed SSH with
# none it could use; a TLS file it cannot read restarted it into a loop on upgrade.
as_unit()
{
	if unshare --mount --propagation private true 2>/dev/null &&
		command -v setpriv >/dev/null 2>&1 && getent group jitd >/dev/null; then
		unshare --mount --propagation private sh -c '
			for d in /home /root /run/user /tmp /var/tmp; do
				[ ! -d "$d" ] || mount -t tmpfs -o mode=0000,size=4k none "$d" ||
					true
			done 2>/dev/null
			exec setpriv --regid jitd --clear-groups --inh-caps=-all \
				--bounding-set=-all,+net_admin -- "$@"' sh "$@"
		return
	fi
	"$@"
}

# A restart stops the running jitd before the new one checks the configuration: one the new
# version refuses would leave no agent, the ports closed and no grant able to open them. The
# running one is left running instead, and the administrator told.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$1" -ge 1 ]; then
		# Under the unit's descriptor limit (the soft one, which jitd checks), not the
		# installer's; the packaged binary, not whatever jitd comes first in PATH.
		lim=$(systemctl show -p LimitNOFILESoft --value jitd.service 2>/dev/null) || lim=
		# infinity is nr_open to systemd; the shell cannot set "unlimited" (above nr_open).
		if [ "$lim" = infinity ]; then
			lim=$(cat /proc/sys/fs/nr_open 2>/dev/null || true)
		fi
		if systemctl --quiet is-active jitd.service &&
			! (ulimit -n "${lim:-131072}" 2>/dev/null || true
			as_unit /usr/sbin/jitd --check-config >/dev/null); then
			echo "jitd: WARNING: the new jitd refuses the configuration (jitd" \
				"--check-config, above), so the jitd that runs was NOT restarted: it" \
				"goes on with the old version. Mend /etc/jitd/jitd.json, then:" \
				"systemctl restart jitd. Until then the next start (a reboot)" \
				"fails: it closes the protected ports with the configuration" \
				"last served if it can read that (only always_allow sources reach" \
				"them, no agent), and leaves them unguarded if not (the same" \
				"file)." >&2
		else
			systemctl try-restart jitd.service >/dev/null 2>&1 || true
		fi
	fi
fi
exit 0
