#!/bin/bash
# Installs a built jitd .deb with apt (dependencies from the archive), checks what it put where,
# runs the basic end-to-end test against the installed binaries, then purges the package and
# checks that nothing is left. Leaves the machine as it found it: run as root, on a host where
# jitd is not installed.
#   sudo tests/pkg/install-test.sh build-packages/jitd_VERSION_ARCH.deb BUILD/tests/tcpprobe
# (tcpprobe: tests/e2e/tcpprobe.c, built by scripts/build.sh BUILD.)
set -euo pipefail

deb=${1:?usage: install-test.sh DEB_FILE TCPPROBE_BIN}
probe=${2:?usage: install-test.sh DEB_FILE TCPPROBE_BIN}
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
	echo "install-test: must run as root (apt-get, network namespaces)" >&2
	exit 1
fi
[ -f "$deb" ] || { echo "install-test: no such package: $deb" >&2; exit 1; }
[ -x "$probe" ] || { echo "install-test: no tcpprobe at $probe (scripts/build.sh DIR builds" \
	"DIR/tests/tcpprobe)" >&2; exit 1; }
# Known to dpkg in any state (installed, or removed with its configuration left).
known() { dpkg-query -W -f='${db:Status-Status}' jitd 2>/dev/null | grep -qv '^not-installed$'; }
if known; then
	echo "install-test: jitd is already installed here; this test needs a host without it" >&2
	exit 1
fi
# A key left in /etc/jitd/keys.d (purge keeps the administrator's keys) would have the first
# install enable jitd and, under systemd, start it on this host: its ports closed.
if [ -e /etc/jitd ] || [ -L /etc/jitd ]; then
	echo "install-test: /etc/jitd exists (left by an earlier jitd?); this test needs a host" \
		"without it" >&2
	exit 1
fi
host_table_before=$(nft list table inet jitd >/dev/null 2>&1 && echo present || echo absent)
deb=$(realpath "$deb")
probe=$(realpath "$probe")
version=$(dpkg-deb -f "$deb" Version)

export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -y -q -o DPkg::Lock::Timeout=300)
TMP=$(mktemp -d /tmp/pkg-jitd-test.XXXXXX)
# The removal runs in a network namespace of the test's own, holding a table inet jitd for the
# prerm to delete: the host's ruleset is never touched.
NS=jitd-pkgtest-$$
group_before=$(getent group jitd >/dev/null && echo yes || echo no)
CHECKS=0
FILES=()
placed_key=no
unit_copy=no

pass() { CHECKS=$((CHECKS + 1)); printf 'ok %d - %s\n' "$CHECKS" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
# Runs a command into TMP/LOG; shows the log and fails if the command does.
logged() { # LOG WHAT COMMAND...
	local log=$TMP/$1 what=$2
	shift 2
	"$@" >"$log" 2>&1 || { cat "$log"; fail "$what"; }
}

# Whatever happens, the package goes, and so do the test's key and the group the package
# created: the package keeps the group on purge, as Debian keeps system groups, but this host
# did not have it before.
cleanup() {
	local rc=$?
	set +e
	if known; then
		# In the test's namespace: the prerm's teardown must not meet the host's ruleset.
		echo "install-test: purging jitd after a failure" >&2
		ip netns add "$NS" 2>/dev/null
		ip netns exec "$NS" "${APT[@]}" purge jitd >/dev/null 2>&1
	fi
	ip netns del "$NS" 2>/dev/null
	if [ "$unit_copy" = yes ]; then
		rm -f /etc/systemd/system/jitd.service
	fi
	if [ "$placed_key" = yes ]; then
		rm -f /etc/jitd/keys.d/pkgtest.pem
		rmdir /etc/jitd/keys.d /etc/jitd 2>/dev/null
	fi
	if [ "$group_before" = no ] && getent group jitd >/dev/null; then
		groupdel jitd
	fi
	rm -rf "$TMP"
	[ -z "${dropin_conf:-}" ] || rm -f "$dropin_conf"
	# As tests/e2e/run.sh: the host's ruleset is never the test's to change.
	if [ "$(nft list table inet jitd >/dev/null 2>&1 && echo present || echo absent)" != \
		"$host_table_before" ]; then
		echo "install-test: the host's table inet jitd changed ($host_table_before" \
			"before); if it closes your ports: nft delete table inet jitd" >&2
		[ "$rc" -ne 0 ] || rc=1
	fi
	if [ "$rc" -eq 0 ]; then
		printf 'PASS: install-test (%d checks)\n' "$CHECKS"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

running_jitd() {
	local p
	for p in /proc/[0-9]*; do
		# " (deleted)": the binary a removal unlinked, whose process still runs.
		case $(readlink "$p/exe" 2>/dev/null) in
		"/usr/sbin/jitd" | "/usr/sbin/jitd (deleted)") return 0 ;;
		esac
	done
	return 1
}

echo "--- apt-get install $deb"
logged install.log "apt-get install" "${APT[@]}" install "$deb"
sed -n '/^\*\*\*\*/,/^\*\*\*\*/p' "$TMP/install.log"
[ "$(dpkg-query -W -f='${Version}' jitd)" = "$version" ] || fail "jitd $version is not installed"
pass "apt-get install resolved the dependencies and installed jitd $version"

# No key in keys.d: the package must neither start nor enable jitd (it would close SSH).
grep -q 'jitd was installed but NOT enabled and NOT started' "$TMP/install.log" ||
	fail "postinst did not explain why jitd was not started"
[ ! -e /etc/systemd/system/multi-user.target.wants/jitd.service ] ||
	fail "jitd was enabled without a controller key"
! running_jitd || fail "jitd runs after an install without a controller key"
pass "without a controller key jitd is neither enabled nor started, and the admin is told why"

unitdir=$(dirname "$(dpkg -L jitd | grep '/systemd/system/jitd\.service$')")
expect_file() { # MODE PATH
	[ -f "$2" ] || fail "missing: $2"
	[ "$(stat -c %a "$2")" = "$1" ] || fail "$2: mode $(stat -c %a "$2"), expected $1"
	FILES+=("$2")
}
expect_file 755 /usr/sbin/jitd
expect_file 755 /usr/bin/jitctl
expect_file 644 "$unitdir/jitd.service"
expect_file 644 /etc/jitd/jitd.json
expect_file 755 /usr/libexec/jitd/check-config
expect_file 644 /usr/lib/sysusers.d/jitd.conf
expect_file 644 /usr/lib/tmpfiles.d/jitd.conf
expect_file 644 /usr/share/man/man8/jitd.8.gz
expect_file 644 /usr/share/man/man8/jitctl.8.gz
expect_file 644 /usr/share/man/man5/jitd.json.5.gz
expect_file 644 /usr/share/bash-completion/completions/jitctl
expect_file 644 /usr/share/doc/jitd/copyright
expect_file 644 /usr/share/doc/jitd/changelog.gz
expect_file 644 /usr/share/doc/jitd/README.md.gz
pass "binaries, check helper, unit ($unitdir), config, sysusers.d, tmpfiles.d, man, docs..."

dpkg-query -W -f='${Conffiles}\n' jitd | grep -q '^ /etc/jitd/jitd.json ' ||
	fail "/etc/jitd/jitd.json is not a conffile"
pass "/etc/jitd/jitd.json is a conffile"
if [ ! -d /etc/jitd/keys.d ] || [ -n "$(ls -A /etc/jitd/keys.d)" ]; then
	fail "/etc/jitd/keys.d: not an empty directory"
fi
pass "/etc/jitd/keys.d is an empty directory"
getent group jitd >/dev/null || fail "no group jitd"
[ -z "$(getent passwd jitd)" ] || fail "a user jitd was created"
pass "system group jitd exists ($(getent group jitd))"
# The group the unit's StateDirectory= gives it at each start, so that nothing churns.
[ "$(stat -c '%a %U %G' /var/lib/jitd)" = "700 root jitd" ] ||
	fail "/var/lib/jitd: $(stat -c '%a %U %G' /var/lib/jitd 2>&1), expected 700 root jitd"
pass "/var/lib/jitd is 0700 root:jitd"

for page in jitd.8 jitctl.8 jitd.json.5; do
	f=/usr/share/man/man${page##*.}/$page.gz
	gzip -t "$f" || fail "$f: not gzip"
	grep -q '^\.TH ' <<<"$(zcat "$f")" || fail "$f: not a man page"
done
pass "man pages are gzip'd troff"

bash -c '. /usr/share/bash-completion/completions/jitctl && complete -p jitctl' >/dev/null ||
	fail "the completion does not register for jitctl"
pass "bash completion registers for jitctl"

out=$(/usr/sbin/jitd --version)
[ "$out" = "jitd $version" ] || fail "jitd --version: '$out', expected 'jitd $version'"
out=$(/usr/bin/jitctl --version)
[ "$out" = "jitctl $version" ] || fail "jitctl --version: '$out', expected 'jitctl $version'"
pass "jitd --version and jitctl --version print $version"
/usr/sbin/jitd --check-config -c /etc/jitd/jitd.json || fail "the shipped configuration is refused"
pass "jitd --check-config accepts the shipped /etc/jitd/jitd.json"

# The maintainer scripts' check runs jitd as the unit does, with the unit's own arguments: a
# drop-in whose ExecStart= gives -c has that file checked, not the shipped one, which an upgrade
# would otherwise find good and restart into a refusal. A stand-in systemctl shows the unit's
# argv as systemd 252 does (no systemd runs here). The file is outside the temporary
# directories, which the check hides as the unit does.
mkdir -p "$TMP/stub"
printf '%s\n' '#!/bin/sh' \
	'[ "$*" = "show -p ExecStart --value jitd.service" ] || exit 1' \
	'echo "{ path=/usr/sbin/jitd ; argv[]=/usr/sbin/jitd -c $STUB_CONF ; ignore_errors=no ; \
start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"' >"$TMP/stub/systemctl"
chmod 0755 "$TMP/stub/systemctl"
dropin_conf=/run/jitd-pkgtest-$$.json
echo '{"portz": 1}' >"$dropin_conf"
chmod 0600 "$dropin_conf"
rc=0
out=$(STUB_CONF=$dropin_conf PATH=$TMP/stub:$PATH /usr/libexec/jitd/check-config 2>&1) || rc=$?
[ "$rc" -eq 1 ] && grep -qF "$dropin_conf: unknown key 'portz'" <<<"$out" ||
	fail "the packaged check of a unit started with -c $dropin_conf: exit $rc: $out"
out=$(STUB_CONF=/etc/jitd/jitd.json PATH=$TMP/stub:$PATH /usr/libexec/jitd/check-config 2>&1) ||
	fail "the packaged check of a unit started with -c /etc/jitd/jitd.json: $out"
# A variable systemd expands at the start only: the file is not known, and the check refuses.
rc=0
# shellcheck disable=SC2016 # the unit's text, unexpanded
out=$(STUB_CONF='$JITD_CONF' PATH=$TMP/stub:$PATH /usr/libexec/jitd/check-config 2>&1) || rc=$?
[ "$rc" -eq 1 ] && grep -qF "ExecStart= holds a variable" <<<"$out" ||
	fail "the packaged check of a unit started with -c \$JITD_CONF: exit $rc: $out"
rm -f "$dropin_conf"
pass "the packaged check takes the unit's -c: a drop-in's file refused, the shipped one" \
	"accepted, a variable refused"

command -v systemd-analyze >/dev/null ||
	fail "systemd-analyze not found (scripts/install-deps.sh installs systemd)"
systemd-analyze verify --man=no "$unitdir/jitd.service" || fail "systemd-analyze verify"
pass "systemd-analyze verify accepts the installed unit"

echo "--- tests/e2e/basic.sh against the installed binaries"
logged e2e.log "tests/e2e/basic.sh" env JITD_BIN=/usr/sbin/jitd JITCTL_BIN=/usr/bin/jitctl \
	TCPPROBE_BIN="$probe" tests/e2e/run.sh tests/e2e/basic.sh
tail -n 1 "$TMP/e2e.log"
pass "end-to-end basic.sh passes with /usr/sbin/jitd and /usr/bin/jitctl"

# Everything dpkg installed, minus the directories other packages share.
mapfile -t owned < <(dpkg -L jitd | while read -r f; do
	[ -d "$f" ] && [ "$f" != /etc/jitd ] && [ "$f" != /etc/jitd/keys.d ] &&
		[ "$f" != /usr/share/doc/jitd ] && continue
	echo "$f"
done)

# A key for the second round, made by the installed jitctl.
mkdir -m 0700 "$TMP/keys"
/usr/bin/jitctl keygen --kid pkgtest --dir "$TMP/keys" >/dev/null || fail "jitctl keygen"
have_teardown=$(/usr/bin/jitctl teardown --help >/dev/null 2>&1 && echo yes || echo no)

purge() {
	echo "--- apt-get purge jitd (in a network namespace holding table inet jitd)"
	ip netns add "$NS"
	ip netns exec "$NS" nft add table inet jitd
	# A configuration jitctl cannot read must not keep the table (and the ports closed).
	echo '{ "control_socket": ' >/etc/jitd/jitd.json
	logged purge.log "apt-get purge" ip netns exec "$NS" "${APT[@]}" purge jitd
	grep -E 'inet jitd|^jitd: ' "$TMP/purge.log" || true
	# Without the subcommand (an older jitctl) prerm warns and goes on; that is all it can do.
	if [ "$have_teardown" = yes ]; then
		if grep -q 'WARNING' "$TMP/purge.log"; then
			fail "removal warned"
		fi
		grep -q 'removed table inet jitd' "$TMP/purge.log" ||
			fail "prerm did not remove table inet jitd"
		! ip netns exec "$NS" nft list table inet jitd >/dev/null 2>&1 ||
			fail "table inet jitd is still there after the removal"
	fi
	ip netns del "$NS"
	return 0
}
purge
! known || fail "jitd is still known to dpkg"
pass "apt-get purge removed jitd, and its table though the configuration was broken"

left=()
for f in "${owned[@]}" "${FILES[@]}" /etc/jitd /var/lib/jitd /run/jitd \
	/etc/systemd/system/jitd.service /etc/systemd/system/multi-user.target.wants/jitd.service \
	/var/lib/systemd/deb-systemd-helper-enabled/jitd.service.dsh-also \
	/var/lib/systemd/deb-systemd-helper-masked/jitd.service; do
	if [ -e "$f" ] || [ -L "$f" ]; then
		left+=("$f")
	fi
done
[ "${#left[@]}" -eq 0 ] || fail "left behind after purge: ${left[*]}"
! running_jitd || fail "a jitd from /usr/sbin still runs"
pass "nothing left: package files, /etc/jitd, /var/lib/jitd, /run/jitd, unit links"

# Second round, with a controller key already in place: the package enables jitd (and would
# start it under systemd, so this round runs only where systemd is not running: it must never
# start jitd on the host). An upgrade keeps it enabled; purge removes the links again and
# leaves only the administrator's key.
if [ -d /run/systemd/system ]; then
	echo "--- systemd runs here: skipping the round with a controller key (it would start jitd)"
	exit 0
fi
wants=/etc/systemd/system/multi-user.target.wants/jitd.service
# not_enabled WHAT: the last install printed the no-key warning and left no enable link.
not_enabled() {
	grep -q 'jitd was installed but NOT enabled and NOT started' "$TMP/install.log" ||
		fail "$1: postinst did not warn: $(cat "$TMP/install.log")"
	if [ -e "$wants" ] || [ -L "$wants" ]; then
		fail "$1: jitd was enabled"
	fi
}
install -d -m 0755 /etc/jitd/keys.d
placed_key=yes
# First a sound key in a directory only another user may read: root reads it, the unit (root
# with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE alone) cannot, and the check must see it as the
# unit does.
install -m 0644 "$TMP/keys/pkgtest.pem" /etc/jitd/keys.d/pkgtest.pem
chown nobody /etc/jitd/keys.d
chmod 0700 /etc/jitd/keys.d
echo "--- apt-get install $deb (a controller key in a directory only nobody may read)"
logged install.log "apt-get install" "${APT[@]}" install "$deb"
not_enabled "a key the unit cannot read"
pass "a key only full root can read: not enabled (checked as the unit runs jitd)"
purge
chown root /etc/jitd/keys.d
chmod 0755 /etc/jitd/keys.d
# Then a key jitd would refuse (writable by its group): as good as none.
install -m 0664 "$TMP/keys/pkgtest.pem" /etc/jitd/keys.d/pkgtest.pem
echo "--- apt-get install $deb (a controller key jitd refuses: group-writable)"
logged install.log "apt-get install" "${APT[@]}" install "$deb"
not_enabled "a key jitd refuses"
grep -q 'pkgtest.pem: .*writable' "$TMP/install.log" ||
	fail "jitd's warning does not say why: $(cat "$TMP/install.log")"
pass "a key jitd would refuse: not enabled, and jitd's warning says why"
purge
chmod 0644 /etc/jitd/keys.d/pkgtest.pem
echo "--- apt-get install $deb (controller key present)"
logged install.log "apt-get install" "${APT[@]}" install "$deb"
if grep -q 'NOT enabled' "$TMP/install.log"; then
	fail "postinst ignored the controller key"
fi
grep -q 'systemd is not running: jitd was not started' "$TMP/install.log" ||
	fail "postinst did not say why jitd was not started"
[ -L "$wants" ] || fail "jitd was not enabled although a controller key is present"
! running_jitd || fail "jitd was started without systemd"
pass "with a controller key jitd is enabled (and not started: systemd is not running)"
logged install.log "apt-get install --reinstall" "${APT[@]}" install --reinstall "$deb"
[ -L "$wants" ] || fail "an upgrade disabled jitd"
pass "an upgrade (reinstall) keeps jitd enabled"
# Removed (its links stay), then installed again once the key has become one jitd refuses:
# not enabled again, as on a first install. The removal's teardown runs in a namespace. The
# administrator keeps a full copy of the unit (systemctl edit --full): the removal then masks
# nothing, which must not make the install look like an upgrade.
echo "--- apt-get remove jitd (in a network namespace), the key made group-writable, install"
cp "$unitdir/jitd.service" /etc/systemd/system/jitd.service
unit_copy=yes
ip netns add "$NS"
logged remove.log "apt-get remove" ip netns exec "$NS" "${APT[@]}" remove jitd
ip netns del "$NS"
[ ! -e /var/lib/systemd/deb-systemd-helper-masked/jitd.service ] ||
	fail "the removal masked jitd though the administrator keeps a copy of the unit"
chmod 0664 /etc/jitd/keys.d/pkgtest.pem
logged install.log "apt-get install" "${APT[@]}" install "$deb"
not_enabled "installed again without a usable key"
chmod 0644 /etc/jitd/keys.d/pkgtest.pem
rm -f /etc/systemd/system/jitd.service
unit_copy=no
pass "installed again after a remove with no usable key: disabled, and warned"
purge
if [ -e "$wants" ] || [ -L "$wants" ]; then
	fail "purge left $wants"
fi
[ "$(ls -A /etc/jitd/keys.d)" = pkgtest.pem ] ||
	fail "purge removed the administrator's key, or left more than it"
rm -f /etc/jitd/keys.d/pkgtest.pem
rmdir /etc/jitd/keys.d /etc/jitd
placed_key=no
[ ! -e /var/lib/jitd ] || fail "purge left /var/lib/jitd"
pass "purge removed the enable link and state, and kept only the administrator's key"
