# jitd post scriptlet ($1: 1 on install, 2 or more on upgrade). POSIX sh: Debian's rpm has no
# systemd macros, so these are the literal forms of the sysusers_create, tmpfiles_create and
# systemd_post macros; the restart on upgrade is in postun, as systemd_postun_with_restart
# does. No percent sign in these scripts: rpmbuild expands macros in them, comments too (the
# systemd macros, where defined, fail the build when called without their arguments).
#
# jitd closes the protected ports (SSH by default) as soon as it runs. Without a trusted
# controller key no grant can ever open them again, so a first install enables and starts
# jitd only when jitd itself finds a key it can use in /etc/jitd/keys.d (jitd --check-config:
# a file it would refuse is no key): enabling it without one would lock the administrator
# out of SSH at the next boot.
set -e

if ! getent group jitd >/dev/null && command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/jitd.conf || true
fi
if ! getent group jitd >/dev/null; then
	groupadd -r jitd
fi
# Its status is not the install's to fail on: one bad line elsewhere, or a container, makes
# it exit non-zero; the directory is what counts.
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/jitd.conf || true
fi
[ -d /var/lib/jitd ] || { mkdir -m 0700 /var/lib/jitd && chgrp jitd /var/lib/jitd; }

[ "$1" -eq 1 ] || exit 0

# Before the check: it asks systemd for the unit's arguments (a drop-in's -c), which a unit
# not loaded yet would not show. The one reload: enabling (links only) needs none before the
# start.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
# jitd --check-config as the unit runs jitd: its descriptor limit and its restrictions (the
# helper says which and why).
have_key=no
if out=$(/usr/libexec/jitd/check-config); then
	case $out in
	*", 0 trusted key(s))") ;;
	*" trusted key(s))") have_key=yes ;;
	esac
else
	have_key=refused
fi
if [ "$have_key" = refused ]; then
	cat >&2 <<'EOF'

************************************************************************************
* jitd was installed but NOT enabled and NOT started.
*
* jitd --check-config refuses the configuration (its error above says why): a jitd
* started now would not serve, and no grant could open the ports it closes.
*
* To start it, mend what the check says, make sure a controller's public key is in
* /etc/jitd/keys.d (jitctl keygen on the controller makes one), run
*   jitd --check-config
* and, once it says OK with at least one trusted key:
*   systemctl enable --now jitd
************************************************************************************

EOF
	exit 0
fi
if [ "$have_key" = no ]; then
	cat >&2 <<'EOF'

************************************************************************************
* jitd was installed but NOT enabled and NOT started.
*
* jitd closes SSH (port 22, see /etc/jitd/jitd.json) as soon as it runs, and opens it
* only for grants signed by a trusted controller key. jitd --check-config finds no
* key in /etc/jitd/keys.d that it can use (its warnings above say why), so nobody
* could ever get a grant: starting jitd now would lock every administrator out of SSH.
*
* To start it:
*   1. on the controller: jitctl keygen --kid KID --dir DIR
*   2. copy DIR/KID.pem (the public key) to /etc/jitd/keys.d/KID.pem on this host
*   3. check the ports and always_allow in /etc/jitd/jitd.json, then:
*        systemctl enable --now jitd
************************************************************************************

EOF
	exit 0
fi
# Without a running systemd, enable only writes the links (systemctl's offline mode).
if command -v systemctl >/dev/null 2>&1; then
	systemctl --no-reload enable jitd.service >/dev/null 2>&1 || true
fi
if [ -d /run/systemd/system ]; then
	systemctl start jitd.service ||
		echo "jitd: the service did not start; see: journalctl -u jitd" >&2
else
	echo "jitd: systemd is not running: jitd was not started." >&2
fi
exit 0
