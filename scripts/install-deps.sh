#!/bin/sh
# Installs everything jitd needs to build, test and run its demo on Debian/Ubuntu.
# Fedora/RHEL equivalents are listed in README.md.
set -eu
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (apt-get)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	build-essential clang libclang-rt-dev cmake pkg-config \
	libmnl-dev libnftnl-dev libjansson-dev libevent-dev libssl-dev \
	libnl-3-dev libnl-nf-3-dev libsystemd-dev \
	libcmocka-dev \
	nftables iproute2 iputils-ping jq openssl ca-certificates conntrack python3 python3-jwt \
	python3-cryptography curl iperf3 e2fsprogs util-linux mount procps \
	systemd >/dev/null
