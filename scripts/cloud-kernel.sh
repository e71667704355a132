#!/bin/sh
# Boot Debian 12's stock cloud kernel under moonbox (a manual recipe: on
# the PVM hosts we test on the boot takes many minutes, see guest/README.md,
# "Debian's cloud kernel", so make test does not run it).
#
#   scripts/cloud-kernel.sh [--map] [extra kernel arguments...]
#
# Fetches linux-image-cloud-amd64 and the versioned package it depends on
# with `apt-get download` into .cloudk/ (git-ignored; nothing is installed),
# unpacks the kernel's uncompressed ELF from the bzImage (LZ4 payload) so
# that moonbox boots it through PVH (no decompressor to emulate, no KASLR:
# addresses match System.map), and boots it with the default guest's
# initramfs and a serial console. --map also fetches the -dbg package
# (~280 MB) for the real System.map (the one in the image package is a stub)
# and keeps only that file. Console output goes to stdout; the run ends
# with moonbox's error report (instruction bytes, registers) if the
# emulation fallback meets an instruction it does not complete.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cloudk"
map=0
if [ "${1:-}" = "--map" ]; then map=1; shift; fi
mkdir -p "$dir"
cd "$dir"

if [ ! -f vmlinux ]; then
	apt-get download linux-image-cloud-amd64
	dep=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends |
		grep -o 'linux-image-[0-9][^ ,]*-cloud-amd64' | head -n 1)
	[ -n "$dep" ] || { echo "cloud-kernel.sh: no versioned kernel in Depends" >&2; exit 1; }
	apt-get download "$dep"
	rm -rf x && dpkg-deb -x "$dep"_*.deb x
	vmlinuz=$(ls x/boot/vmlinuz-* | head -n 1)
	# The bzImage's payload is an LZ4 legacy frame (magic 02 21 4C 18;
	# Debian's cloud config has KERNEL_LZ4); unlz4 stops at its end.
	off=$(grep -obUaP '\x02\x21\x4c\x18' "$vmlinuz" | head -n 1 | cut -d: -f1)
	[ -n "$off" ] || { echo "cloud-kernel.sh: no LZ4 payload in $vmlinuz" >&2; exit 1; }
	tail -c +"$((off + 1))" "$vmlinuz" | unlz4 -c > vmlinux.tmp 2>/dev/null || true
	readelf -n vmlinux.tmp | grep -q 0x00000012 ||
		{ echo "cloud-kernel.sh: the unpacked kernel has no PVH entry note" >&2; exit 1; }
	mv vmlinux.tmp vmlinux
fi
if [ "$map" = 1 ] && [ ! -f System.map ]; then
	ver=$(ls x/boot/vmlinuz-* | head -n 1 | sed 's|.*/vmlinuz-||')
	apt-get download "linux-image-$ver-dbg"
	dpkg-deb --fsys-tarfile "linux-image-$ver-dbg"_*.deb |
		tar -xO --wildcards "*boot/System.map-$ver" > System.map
	rm -f "linux-image-$ver-dbg"_*.deb
fi

# What the run needs beyond machines/linux.lua's command line: the soft
# lockup detector off (its reports are long and printing is emulated), and
# two tracing initcalls skipped that each keep the boot busy for minutes
# under emulation (a kallsyms lookup per ftrace record; the trace-event
# enum update), measured in guest/README.md. Tracing still works without
# them; weak functions are just not hidden from ftrace. SSSE3 hidden
# (the kernel reads only the last clearcpuid=, so this one repeats
# machines/linux.lua's cx16,erms,fsrm; keep the two in step), so the RNG's BLAKE2s is the
# generic C code, not SIMD arithmetic the emulation fallback does not do;
# cryptomgr.notests skips the crypto self-tests, whose RSA private-key
# vectors kept the boot in multi-precision arithmetic for 25+ minutes and
# timed out the loading of the built-in X.509 certificate (-110).
cd "$root"
exec ./moonbox machines/linux.lua --kernel "$dir/vmlinux" --rootfs initrd \
	--memory 512M --timeout 3600 \
	--append "nosoftlockup initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init clearcpuid=cx16,erms,fsrm,ssse3 cryptomgr.notests $*"
