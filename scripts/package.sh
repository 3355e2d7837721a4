#!/bin/sh
# Builds jitd_<version>_<arch>.deb and jitd-<version>-1.<arch>.rpm into OUTDIR (default
# build-packages/) with CPack, then checks them with lintian and rpmlint: any error fails.
#   sudo scripts/package.sh [OUTDIR]
# Installs its own tools with apt (build dependencies through install-deps.sh). The build trees
# go to a temporary directory, removed on success; set JITD_PKG_BUILDDIR to keep them.
set -eu

if [ "$(id -u)" -ne 0 ]; then
	echo "package.sh: must run as root (apt-get)" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
src=$(pwd)
out=${1:-build-packages}

export DEBIAN_FRONTEND=noninteractive
scripts/install-deps.sh
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
	dpkg-dev fakeroot file lintian rpm rpmlint >/dev/null

mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -n "${JITD_PKG_BUILDDIR:-}" ]; then
	work=$JITD_PKG_BUILDDIR
	mkdir -p "$work"
	rm -rf "$work/deb" "$work/rpm" "$work/root" "$work/verify"
	keep=yes
else
	work=$(mktemp -d /tmp/pkg-jitd.XXXXXX)
	keep=no
fi
cleanup()
{
	rc=$?
	if [ "$keep" = no ] && [ "$rc" -eq 0 ]; then
		rm -rf "$work"
	elif [ "$rc" -ne 0 ]; then
		echo "package.sh: failed; build trees kept in $work" >&2
	fi
}
trap cleanup EXIT
# dash runs no EXIT trap on a signal it does not trap itself.
trap 'exit 130' INT TERM

# rpmbuild expands macros in scriptlets, comments too: a systemd macro named there fails the
# build wherever those macros are defined (Fedora, RHEL, openSUSE), though not here.
if grep -n % packaging/rpm/*.sh >&2; then
	echo "package.sh: a percent sign in an RPM scriptlet (above)" >&2
	exit 1
fi

# One build tree per package: the unit directory is an install path, fixed at configure time
# (/lib/systemd/system for the Debian 12 .deb, /usr/lib/systemd/system for the .rpm; see
# cmake/Packaging.cmake). The .deb takes the build distribution's own unit directory, as its
# library dependencies are the build distribution's too.
deb_unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)
deb_unitdir=${deb_unitdir:-/lib/systemd/system}
for kind in deb rpm; do
	if [ "$kind" = deb ]; then unitdir=$deb_unitdir; else unitdir=lib/systemd/system; fi
	echo "=== configure and build ($kind, unit directory $unitdir)"
	cmake -S "$src" -B "$work/$kind" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DCMAKE_INSTALL_PREFIX=/usr -DJITD_TESTS=OFF -DJITD_SANITIZE=OFF -DJITD_FUZZ=OFF \
		-DJITD_SYSTEMD_UNITDIR="$unitdir" >/dev/null
	cmake --build "$work/$kind" -j"$(nproc)" >/dev/null
done

echo "=== cpack"
(cd "$work/deb" && cpack -G DEB -B "$work/deb/out" >/dev/null)
(cd "$work/rpm" && cpack -G RPM -B "$work/rpm/out" >/dev/null)
deb=$(find "$work/deb/out" -maxdepth 1 -name 'jitd_*.deb')
rpm=$(find "$work/rpm/out" -maxdepth 1 -name 'jitd-*.rpm')
if [ -z "$deb" ] || [ -z "$rpm" ]; then
	echo "package.sh: cpack made no .deb or no .rpm" >&2
	exit 1
fi
# Only this build's packages in $out: install-test.sh takes the one jitd_*.deb there.
rm -f "$out"/jitd_*.deb "$out"/jitd-*.rpm
cp "$deb" "$rpm" "$out/"
deb=$out/$(basename "$deb")
rpm=$out/$(basename "$rpm")

echo "=== $(basename "$deb")"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\|Suggests\):/  \1:/p'
dpkg-deb --contents "$deb" | awk '$NF !~ /\/$/ { print "  " $1, $NF }'
echo "=== $(basename "$rpm")"
rpm -qp --qf '  %{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n' "$rpm"
rpm -qp --qf '[  %{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm"

# The unit as shipped, with ExecStart pointing into the unpacked .deb: verify checks that the
# binaries exist, and nothing is installed on this host. Man pages: checked by lintian/rpmlint.
# systemd-analyze comes with systemd, which scripts/install-deps.sh installs: a unit that is not
# verified must not pass for one that is.
if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "package.sh: systemd-analyze not found (scripts/install-deps.sh installs systemd)" >&2
	exit 1
fi
echo "=== systemd-analyze verify"
mkdir -p "$work/root" "$work/verify"
dpkg-deb -x "$deb" "$work/root"
sed "s#=/usr/sbin/jitd#=$work/root/usr/sbin/jitd#" "$work/root$deb_unitdir/jitd.service" \
	>"$work/verify/jitd.service"
systemd-analyze verify --man=no "$work/verify/jitd.service"
echo "  ok"
# The README reports this figure: keep the unit at an exposure of 2.1 or lower (2.0 before
# CAP_NET_BIND_SERVICE, for a controller endpoint on a port below 1024).
echo "=== systemd-analyze security (offline)"
systemd-analyze security --offline=true --threshold=21 "$work/verify/jitd.service" \
	>"$work/security.txt" || { cat "$work/security.txt"; exit 1; }
tail -n 1 "$work/security.txt"

echo "=== lintian"
lintian --fail-on error --display-info "$deb"
echo "  no errors"

echo "=== rpmlint"
# rpmlint exits 0 when it checked nothing (a name it took for an installed package).
rc=0
rpmlint -c packaging/rpm/rpmlint.toml "$rpm" >"$work/rpmlint.log" 2>&1 || rc=$?
cat "$work/rpmlint.log"
# Two commands, not one AND list: set -e ignores a failure left of && (rpmlint's errors).
if [ "$rc" -ne 0 ]; then
	echo "package.sh: rpmlint failed (exit $rc)" >&2
	exit 1
fi
grep -q '^ *1 packages and 0 specfiles checked' "$work/rpmlint.log"
echo "  no errors"

echo "=== packages in $out"
ls -l "$deb" "$rpm"
