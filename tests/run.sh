#!/usr/bin/env bash
# run.sh: build with ASan+UBSan and run every test, then build the libFuzzer targets with
# clang and run each for a bounded time. Ends with "N passed, N failed" (skips are listed on the line before).
# Run as root: the tests make real FUSE mounts.
set -uo pipefail
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

pass=0 fail=0 skip=0
tally() { # tally BUILDDIR: add meson test's summary counts
	local log=$1/meson-logs/testlog.txt ok ef f up sk to
	get() { grep -E "^$1:" "$log" | tail -1 | awk '{print $NF}'; }
	ok=$(get 'Ok'); ef=$(get 'Expected Fail'); f=$(get 'Fail'); up=$(get 'Unexpected Pass')
	sk=$(get 'Skipped'); to=$(get 'Timeout')
	pass=$((pass + ${ok:-0} + ${ef:-0})); fail=$((fail + ${f:-0} + ${up:-0} + ${to:-0})); skip=$((skip + ${sk:-0}))
}

build_ok=1
if meson setup build-test --wipe -Db_sanitize=address,undefined -Db_lundef=false >/tmp/phi-setup.log 2>&1 ||
	meson setup build-test -Db_sanitize=address,undefined -Db_lundef=false >>/tmp/phi-setup.log 2>&1; then
	if meson compile -C build-test; then
		meson test -C build-test --print-errorlogs --num-processes "${PHI_TEST_JOBS:-2}" --no-rebuild
		tally build-test
	else
		build_ok=0
	fi
else
	cat /tmp/phi-setup.log
	build_ok=0
fi
[ $build_ok = 1 ] || { echo "build with sanitizers failed"; fail=$((fail + 1)); }

# libFuzzer pass: every parser's fuzz target runs for PHI_FUZZ_SECONDS (default 20).
if CC=clang meson setup build-fuzz --wipe -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false >/tmp/phi-fuzz-setup.log 2>&1 ||
	CC=clang meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false >>/tmp/phi-fuzz-setup.log 2>&1; then
	if meson compile -C build-fuzz; then
		meson test -C build-fuzz --suite fuzz --print-errorlogs --num-processes 2 --no-rebuild
		grep -q '^Ok:' build-fuzz/meson-logs/testlog.txt 2>/dev/null && tally build-fuzz
	else
		echo "fuzz build failed"; fail=$((fail + 1))
	fi
else
	cat /tmp/phi-fuzz-setup.log; echo "fuzz setup failed"; fail=$((fail + 1))
fi

echo "($skip skipped)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
