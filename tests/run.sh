#!/bin/bash
# Runs every test: cmocka units, Lua-level tests (guests under KVM), Linux
# boots. Prints one summary line; exits non-zero if anything failed.
# A test that exits 77 is skipped (e.g. no /dev/kvm).
cd "$(dirname "$0")/.." || exit 1
pass=0 fail=0 skip=0 failed=()
log=build/test-logs
mkdir -p "$log"

run() { # name, command...
	local name=$1; shift
	local start=$SECONDS
	mkdir -p "$(dirname "$log/$name.log")"
	"$@" >"$log/$name.log" 2>&1
	local rc=$?
	local t=$((SECONDS - start))
	case $rc in
	0) pass=$((pass + 1)); printf 'PASS  %-40s %3ss\n' "$name" "$t" ;;
	77) skip=$((skip + 1)); printf 'SKIP  %-40s %s\n' "$name" "$(grep -m1 SKIP "$log/$name.log")" ;;
	*) fail=$((fail + 1)); failed+=("$name")
	   printf 'FAIL  %-40s %3ss (exit %s)\n' "$name" "$t" "$rc"
	   sed 's/^/    | /' "$log/$name.log" | tail -40 ;;
	esac
}

for t in build/tests/test_*; do
	[ -x "$t" ] && run "unit/$(basename "$t")" "$t"
done
for t in tests/lua/test_*.lua; do
	run "lua/$(basename "$t" .lua)" ./moonbox "$t"
done
# The same tests from the stock interpreter: `require "moonbox"` works there.
if command -v lua5.4 >/dev/null; then
	run "lua/stock_lua5.4" env LUA_CPATH="./?.so;;" lua5.4 tests/lua/test_errors.lua
fi
# Fuzzing what the guest controls (virtqueues, blk requests, loaders,
# device registers): each harness for FUZZ_SECONDS (60); any finding fails.
if command -v clang >/dev/null; then
	run "fuzz/libfuzzer" env FUZZ_SECONDS="${FUZZ_SECONDS:-60}" scripts/fuzz.sh
fi
for t in tests/linux/test_*.lua; do
	[ -e "$t" ] && run "linux/$(basename "$t" .lua)" ./moonbox "$t"
done

echo "moonbox tests: $pass passed, $fail failed, $skip skipped${failed:+ (failed: ${failed[*]})}"
[ "$fail" -eq 0 ]
