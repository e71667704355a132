#!/bin/bash
# Runs every test: cmocka units, Lua-level tests (guests under KVM), fuzzers,
# Linux boots. Prints one summary line; exits non-zero if anything failed.
#
#   tests/run.sh [REGEX]   only the tests whose name (unit/test_bus,
#                          lua/test_boot, fuzz/libfuzzer, linux/test_linux...)
#                          matches the extended regular expression REGEX
#
# A test that exits 77 is skipped as a whole (e.g. no /dev/kvm). A check
# inside a test that could not run prints "SKIP <name>: <why>" (the Lua
# harness's T.skip) or "[  SKIPPED ] <name>" (cmocka's skip()); each one
# counts as a skip too, also when its test passes, and is listed under it.
# A Lua test whose log shows a failed case fails whatever its exit status.
# Each test runs under a time bound (MB_TEST_TIMEOUT, 300 s; Linux boots
# MB_LINUX_TIMEOUT, 1500 s: a Linux boot here took 19 s one day and 68 s
# another, the same binary on the same idle host); one that outlives it is
# killed and fails.
#
# Another build (make test-asan...): MB_BUILD names its build dir (unit
# tests in MB_BUILD/tests, logs in MB_BUILD/test-logs; default build),
# MB_BIN the dir of its moonbox and moonbox.so (default: the top level).
# MB_TEST_SKIP (an ERE) leaves out the tests it matches, except those that
# MB_TEST_KEEP matches; neither counts them.
cd "$(dirname "$0")/.." || exit 1
filter=${1-}
if [ -n "$filter" ]; then
	[[ x =~ $filter ]]
	[ $? -eq 2 ] && { echo "tests/run.sh: bad regular expression: $filter" >&2; exit 2; }
fi
pass=0 fail=0 skip=0 ran=0 failed=()
build=${MB_BUILD:-build}
skip_re=${MB_TEST_SKIP-} keep_re=${MB_TEST_KEEP-}
# Tests that run tests/run.sh on a scratch tree get the defaults there.
unset MB_BUILD MB_TEST_SKIP MB_TEST_KEEP
# Absolute, so that such scratch runs use the same binaries.
MB_BIN=$(cd "${MB_BIN:-.}" && pwd) || exit 1
export MB_BIN
log=$build/test-logs
mkdir -p "$log"
bound=${MB_TEST_TIMEOUT:-300}
linux_bound=${MB_LINUX_TIMEOUT:-1500}

selected() {
	if [ -n "$skip_re" ] && [[ $1 =~ $skip_re ]] &&
		! { [ -n "$keep_re" ] && [[ $1 =~ $keep_re ]]; }; then
		return 1
	fi
	[ -z "$filter" ] || [[ $1 =~ $filter ]]
}

# The checks in a log that did not run, one "SKIP <name>: <why>" line each.
# cmocka 1.1 names a skipped test twice (as it runs, and in the list at the
# end on stderr): each name counts once.
check_skips() { # log
	grep '^SKIP ' "$1"
	grep '^\[  SKIPPED \] ' "$1" | grep -v ' test(s), listed below:$' | sort -u |
		sed 's/^\[  SKIPPED \] \(.*\)$/SKIP \1: cmocka skip()/'
}

run() { # kind (unit, lua or other), name, time bound in s, command...
	local kind=$1 name=$2 secs=$3; shift 3
	selected "$name" || return 0
	local out=$log/$name.log start=$SECONDS why='' rc skips n
	mkdir -p "$(dirname "$out")"
	# timeout runs the test in its own process group and signals the whole
	# group: whatever the test started goes too.
	timeout -k 10 "$secs" "$@" </dev/null >"$out" 2>&1
	rc=$?
	local t=$((SECONDS - start))
	if [ $rc -eq 124 ] || { [ $rc -eq 137 ] && [ $t -ge "$secs" ]; }; then
		why="timed out after $secs s"
	elif [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
		why="exit $rc"
	elif [ "$kind" = lua ] && grep -q '^not ok - ' "$out"; then
		why="a case failed, yet exit $rc"
	elif [ "$kind" = lua ] && [ $rc -eq 0 ] &&
		! grep -Eq '^# [0-9]+ passed, [0-9]+ failed' "$out"; then
		why="exit 0 without the harness summary (T.done)"
	fi
	ran=$((ran + 1))
	if [ -n "$why" ]; then
		fail=$((fail + 1)); failed+=("$name")
		printf 'FAIL  %-40s %3ss (%s)\n' "$name" "$t" "$why"
		sed 's/^/    | /' "$out" | tail -40
	elif [ $rc -eq 77 ]; then
		skip=$((skip + 1))
		printf 'SKIP  %-40s %s\n' "$name" "$(grep -m1 '^SKIP: ' "$out")"
	else
		pass=$((pass + 1))
		printf 'PASS  %-40s %3ss\n' "$name" "$t"
	fi
	skips=$(check_skips "$out")
	if [ -n "$skips" ]; then
		n=$(wc -l <<<"$skips")
		skip=$((skip + n))
		sed 's/^/      /' <<<"$skips"
	fi
}

skipped() { # name, why: a test that cannot run here at all
	selected "$1" || return 0
	ran=$((ran + 1)) skip=$((skip + 1))
	printf 'SKIP  %-40s SKIP: %s\n' "$1" "$2"
}

# Checks that boot the make-deps kernel only a short way (see
# tests/lua/test_boot.lua) run when it exists; MB_TEST_LINUX=0 turns them off.
if [ -z "${MB_TEST_LINUX+set}" ] && [ -e .cache/guest/bzImage ]; then
	export MB_TEST_LINUX=1
fi

for t in "$build"/tests/test_*; do
	[ -x "$t" ] && run unit "unit/$(basename "$t")" "$bound" "$t"
done
for t in tests/lua/test_*.lua; do
	[ -e "$t" ] && run lua "lua/$(basename "$t" .lua)" "$bound" "$MB_BIN/moonbox" "$t"
done
# The same tests from the stock interpreter: `require "moonbox"` works there.
if command -v lua5.4 >/dev/null; then
	run lua "lua/stock_lua5.4" "$bound" env LUA_CPATH="$MB_BIN/?.so;;" lua5.4 tests/lua/test_errors.lua
else
	skipped "lua/stock_lua5.4" "lua5.4 not found"
fi
# The tree builds clean under clang too (-Werror): the style promises both
# compilers. Only in the plain run, into its own build dir.
if [ "$build" = build ] && command -v clang >/dev/null; then
	run other "build/clang" "$bound" make -s --no-print-directory -j2 CC=clang \
		B=build-clang all unit
fi
# Fuzzing what the guest controls (virtqueues, blk requests, loaders,
# device registers): each harness for FUZZ_SECONDS (15 here; `make fuzz`
# runs 60); any finding fails.
fuzz_cc=${FUZZ_CC:-clang}
fuzz_secs=${FUZZ_SECONDS:-15}
if command -v "$fuzz_cc" >/dev/null; then
	harnesses=(fuzz/fuzz_*.c)
	run other "fuzz/libfuzzer" $((${#harnesses[@]} * fuzz_secs + bound)) \
		env FUZZ_CC="$fuzz_cc" FUZZ_SECONDS="$fuzz_secs" scripts/fuzz.sh
else
	skipped "fuzz/libfuzzer" "$fuzz_cc not found (apt-get install clang libclang-rt-14-dev)"
fi
for t in tests/linux/test_*.lua; do
	[ -e "$t" ] && run lua "linux/$(basename "$t" .lua)" "$linux_bound" "$MB_BIN/moonbox" "$t"
done

if [ -n "$filter" ] && [ $ran -eq 0 ]; then
	echo "tests/run.sh: no test name matches $filter" >&2
	exit 2
fi
echo "moonbox tests: $pass passed, $fail failed, $skip skipped${failed:+ (failed: ${failed[*]})}"
[ "$fail" -eq 0 ]
