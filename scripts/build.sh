#!/bin/sh
# Configures and builds jitd into DIR (default build/). Extra arguments go to cmake.
#   scripts/build.sh [DIR] [-DOPTION=VALUE ...]
set -eu
cd "$(dirname "$0")/.."
dir=${1:-build}
[ $# -gt 0 ] && shift
cmake -S . -B "$dir" "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
