#!/bin/sh
# The README's test command (and what CI runs through .ci/run): installs the dependencies, then
#  1. gcc with ASan + UBSan: every unit and end-to-end test (the e2e tests need root);
#  2. clang with -Werror and without libsystemd: builds everything again, runs the unit tests
#     under its sanitizers and the sd_notify test against the built-in notify code;
#  3. clang libFuzzer: each harness over its corpus in tests/fuzz/corpus (seeds and regressions),
#     then a short search, so a crash found by a fuzzer fails CI;
#  4. gcc, default (optimised) build as the demo and packages build it: -O2 warnings such as
#     maybe-uninitialized only show there, and -Werror turns them into failures; the benchmark
#     (scripts/bench --tiny) runs on it once, so that it cannot rot;
#  5. the .deb and .rpm (scripts/package.sh: lintian and rpmlint, no errors allowed), then the
#     .deb installed on this machine with apt, run end to end in namespaces, and purged.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "test.sh: run as root: the end-to-end tests create network namespaces" >&2
	exit 1
fi
./scripts/install-deps.sh
jobs=$(nproc)

echo "== gcc, ASan + UBSan: unit and end-to-end tests"
./scripts/build.sh build-test -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=Debug -DJITD_SANITIZE=ON \
	-DJITD_TEST_HOOKS=ON
(cd build-test && ctest --output-on-failure -j"$jobs")

echo "== clang, ASan + UBSan, without libsystemd: build, unit tests, sd_notify end to end"
./scripts/build.sh build-clang -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DJITD_SANITIZE=ON \
	-DJITD_LIBSYSTEMD=OFF
(cd build-clang && ctest --output-on-failure -L unit -j"$jobs" && ctest --output-on-failure -R e2e.notify)

echo "== clang libFuzzer: seed/regression corpus, then 15 s per harness"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DJITD_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_jws fuzz_grant fuzz_config fuzz_revoke fuzz_proto \
	fuzz_http fuzz_store
# A fuzz run's log and scratch corpus go, however the run ends (an INT or TERM too).
log="" scratch=""
trap 'rm -rf "$log" "$scratch"' EXIT
trap 'exit 130' INT TERM
fuzz_failed() {
	tail -n 60 "$2" >&2
	echo "test.sh: fuzz_$1 failed (its crash input is named above)" >&2
	exit 1
}
# A crash or timeout input goes into build-fuzz/, not the checkout's top directory.
artifacts=-artifact_prefix=build-fuzz/
for name in jws grant config revoke proto http store; do
	f=build-fuzz/tests/fuzz_$name
	# The harness's own status decides (a pipe into tail would hide a crash: no pipefail in sh);
	# the end of its output is shown when it fails.
	log=$(mktemp /tmp/jitd-fuzz-log.XXXXXX)
	# Every input in tests/fuzz/corpus/NAME once (seeds, and crashes kept as regressions)...
	# An input that hangs is a failure, not 20 minutes (libFuzzer's default -timeout) each.
	"$f" -runs=0 -timeout=10 "$artifacts" "tests/fuzz/corpus/$name" >"$log" 2>&1 ||
		fuzz_failed "$name corpus" "$log"
	tail -n 1 "$log"
	# ...then a bounded search; what it finds goes to a scratch directory, not the repository.
	scratch=$(mktemp -d /tmp/jitd-fuzz.XXXXXX)
	"$f" -max_total_time=15 -timeout=10 -rss_limit_mb=1024 -print_final_stats=0 "$artifacts" \
		"$scratch" "tests/fuzz/corpus/$name" >"$log" 2>&1 ||
		fuzz_failed "$name search" "$log"
	tail -n 2 "$log"
	rm -rf "$scratch" "$log"
	log="" scratch=""
done
echo "== gcc, optimised build (RelWithDebInfo, FORTIFY_SOURCE)"
./scripts/build.sh build-release -DCMAKE_C_COMPILER=gcc >/dev/null
echo "== benchmark at tiny sizes on the optimised build: it must run and find every grant in"
echo "   the kernel with its timeout (nothing is timed here; scripts/bench alone for figures)"
./scripts/bench --tiny --build build-release
echo "== packages: .deb and .rpm (CPack), lintian, rpmlint; the .deb installed and tested here"
./scripts/package.sh build-packages
./tests/pkg/install-test.sh build-packages/jitd_*.deb build-test/tests/tcpprobe
echo "== all tests passed"
