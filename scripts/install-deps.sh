#!/bin/sh
# Installs everything jitd needs to build, test and run its demo on Debian/Ubuntu.
# Fedora/RHEL equivalents are listed in README.md.
set -eu
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (apt-get)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A machine just booted may be running apt-daily or unattended-upgrades: wait for their locks
# rather than fail the first command. apt-get waits for dpkg's with DPkg::Lock::Timeout, but
# for the package lists' (update's) with nothing: update is tried again, 18 times at most.
tries=1
until apt-get update -qq; do
	[ "$tries" -lt 18 ] || exit 1
	echo "install-deps.sh: apt-get update failed; trying again in 10 s ($tries/18)" >&2
	tries=$((tries + 1))
	sleep 10
done
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
	build-essential clang libclang-rt-dev cmake pkg-config \
	libmnl-dev libnftnl-dev libjansson-dev libevent-dev libssl-dev \
	libnl-3-dev libnl-nf-3-dev libsystemd-dev \
	libcmocka-dev \
	nftables iproute2 iputils-ping jq openssl ca-certificates conntrack python3 python3-jwt \
	python3-cryptography curl iperf3 e2fsprogs util-linux mount procps \
	systemd >/dev/null
