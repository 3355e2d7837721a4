# jitd postun scriptlet ($1: 0 on erase, 1 or more on upgrade). On upgrade: restart jitd if it runs
# (systemd_postun_with_restart); stopping it leaves table inet jitd, so the ports stay closed
# across the restart. On erase, RPM has no purge: /var/lib/jitd (grants, replay cache, audit
# trail) and the group jitd are left in place, as RPM packages leave state they created.
set -e

# A restart stops the running jitd before the new one checks the configuration: one the new
# version refuses would leave no agent, the ports closed and no grant able to open them. The
# running one is left running instead, and the administrator told.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$1" -ge 1 ]; then
		# The new version's check, as the unit runs jitd (the helper is the new package's).
		# A downgrade to a version without the helper has removed it by now: that version's
		# binary checks, plainly (a refusal, even a false one, keeps the running jitd).
		check=/usr/libexec/jitd/check-config
		[ -x "$check" ] || check="/usr/sbin/jitd --check-config"
		if systemctl --quiet is-active jitd.service && ! $check >/dev/null; then
			echo "jitd: WARNING: the new jitd refuses the configuration (jitd" \
				"--check-config, above), so the jitd that runs was NOT restarted: it" \
				"goes on with the old version. Mend what the check names" \
				"(/etc/jitd/jitd.json, or what it points to), then: systemctl" \
				"restart jitd. Until then the next start (a reboot) may fail: one" \
				"that does closes the protected ports with the configuration" \
				"last served if it can read that (only always_allow sources reach" \
				"them, no agent), and leaves them unguarded if not (the same" \
				"file)." >&2
		else
			systemctl try-restart jitd.service >/dev/null 2>&1 || true
		fi
	fi
fi
exit 0
