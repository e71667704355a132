#!/bin/bash
# `make fuzz`: build the libFuzzer harnesses in fuzz/ (clang, ASan, UBSan)
# into build/fuzz/ and run each for FUZZ_SECONDS (60); FUZZ_ONLY (a comma
# list of harness names) runs only those; FUZZ_SAVE=1 keeps each
# harness's minimised corpus in fuzz/corpus/NAME.tar.gz, which every run
# starts from. Exits non-zero when
# any harness finds a crash, leak, sanitizer report or timeout; the
# reproducer is left in build/fuzz/ (crash-*, leak-*, timeout-*).
cd "$(dirname "$0")/.." || exit 1
secs=${FUZZ_SECONDS:-60}
out=build/fuzz
CC=${FUZZ_CC:-clang}
flags="-g -O1 -std=c11 -D_GNU_SOURCE -Iinclude -I. -Wall -Wextra -Werror
       -Wno-unused-parameter -Wno-gnu-variable-sized-type-not-at-end
       -fno-sanitize-recover=undefined"
mkdir -p "$out/obj"
if ! command -v "$CC" >/dev/null; then
	echo "fuzz: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2
	exit 1
fi
# The library, instrumented for coverage but without libFuzzer's main. An
# object is rebuilt when its source, any header of the library, or this
# script (the flags) is newer; the harnesses are rebuilt every run.
shopt -s nullglob
deps=(include/*.h include/moonbox/*.h core/*.h devices/*.h devices/virtio/*.h cli/*.h scripts/fuzz.sh)
stale() { # object source
	local d
	[ "$1" -nt "$2" ] || return 0
	for d in "${deps[@]}"; do [ "$d" -nt "$1" ] && return 0; done
	return 1
}
objs=()
# cli/devserve.c, cli/devfault.c: moonbox-device's message handling
# (fuzz_devserve);
# cli/vhostserve.c: its vhost-user back-end (fuzz_vhost_backend).
for src in core/*.c devices/*.c devices/virtio/*.c cli/devserve.c cli/devfault.c cli/devserve_map.c cli/vhostserve.c; do
	o=$out/obj/${src//\//_}.o
	if stale "$o" "$src"; then
		$CC $flags -fsanitize=fuzzer-no-link,address,undefined -c "$src" -o "$o" || exit 1
	fi
	objs+=("$o")
done
fail=0
for h in fuzz/fuzz_*.c; do
	name=$(basename "$h" .c)
	# FUZZ_ONLY=fuzz_x,fuzz_y runs only those harnesses
	[ -n "${FUZZ_ONLY:-}" ] && [[ ",$FUZZ_ONLY," != *",$name,"* ]] && continue
	$CC $flags -fsanitize=fuzzer,address,undefined -o "$out/$name" "$h" \
		"${objs[@]}" -lpthread -lm || exit 1
	mkdir -p "$out/corpus/$name"
	# The corpus kept in-tree (fuzz/corpus/NAME.tar.gz, from a long run:
	# `make fuzz FUZZ_SECONDS=N FUZZ_SAVE=1` refreshes it) seeds the run.
	tgz=fuzz/corpus/$name.tar.gz
	if [ -f "$tgz" ] && [ "$tgz" -nt "$out/corpus/$name.seeded" ]; then
		tar -xzf "$tgz" -C "$out/corpus/$name" && touch "$out/corpus/$name.seeded"
	fi
	# Inputs that once found a bug are replayed first (fuzz/seeds/NAME/).
	seeds=
	[ -d "fuzz/seeds/$name" ] && seeds="../../fuzz/seeds/$name"
	echo "fuzz: $name for ${secs}s"
	if ! (cd "$out" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		"./$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 "corpus/$name" $seeds >"$name.log" 2>&1); then
		echo "fuzz: $name FOUND A PROBLEM (see $out/$name.log):" >&2
		grep -E "ERROR|SUMMARY|runtime error" "$out/$name.log" | head -5 >&2
		fail=1
	else
		grep -E "^stat::number_of_executed_runs|cov:" "$out/$name.log" | tail -2
		if [ -n "${FUZZ_SAVE:-}" ]; then
			# keep the smallest set with the same coverage
			min=$(mktemp -d "$out/min.XXXXXX")
			(cd "$out" && "./$name" -merge=1 "${min#$out/}" "corpus/$name" \
				>"$name.merge.log" 2>&1) &&
				tar --sort=name --mtime=@0 --owner=0 --group=0 -czf "$tgz" -C "$min" . &&
				echo "fuzz: $name: corpus saved to $tgz ($(ls "$min" | wc -l) inputs)"
			rm -rf "$min"
		fi
	fi
done
[ $fail -eq 0 ] && echo "fuzz: no findings"
exit $fail
