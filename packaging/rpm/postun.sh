# jitd %postun ($1: 0 on erase, 1 or more on upgrade). On upgrade: restart jitd if it runs
# (%systemd_postun_with_restart); stopping it leaves table inet jitd, so the ports stay closed
# across the restart. On erase, RPM has no purge: /var/lib/jitd (grants, replay cache, audit
# trail) and the group jitd are left in place, as RPM packages leave state they created.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$1" -ge 1 ]; then
		systemctl try-restart jitd.service >/dev/null 2>&1 || true
	fi
fi
exit 0
