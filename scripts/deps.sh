#!/usr/bin/env bash
# make deps: install the Debian packages moonbox needs and build the default
# Linux guest into .cache/guest/ (bzImage, the same kernel as an uncompressed
# ELF vmlinux for PVH boot, an uncompressed initramfs.cpio, and root.ext2,
# the same userland on a small disk image: machines/linux.lua's root).
# Idempotent: does nothing (in well under a second) when all is up to date.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."   # repo root, whatever the cwd
ROOT=$PWD
CACHE=$ROOT/.cache
OUT=$CACHE/guest
KSRC=$CACHE/build/linux-6.1
KTAR=/usr/src/linux-source-6.1.tar.xz
FRAG=$ROOT/guest/kernel.config
PATCHES=$ROOT/guest/patches
INIT_SRC=$ROOT/guest/init.c
INIT=$CACHE/build/init          # built from INIT_SRC (step 3b)
SELF=$ROOT/scripts/deps.sh
JOBS=$(nproc)

log() { echo "deps: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- 1. Debian packages --------------------------------------------------
PKGS=(
  liblua5.4-dev lua5.4 libcmocka-dev            # VMM build + unit tests
  libreadline-dev                               # the REPL's line editing
  clang libclang-rt-14-dev                      # fuzzing (sanitizer runtimes)
  make gcc bc flex bison libelf-dev libssl-dev cpio lz4   # kernel build
  musl-tools                                    # the guest's static /init (guest/init.c)
  linux-source-6.1 busybox-static e2fsprogs     # guest kernel, userland, disks
  gdb                                           # tests/lua/test_gdb.lua (the stub)
  parallel                                      # tests/lua/test_campaign.lua (shards)
  qemu-system-common                            # vhost-user back-ends (qemu-storage-daemon)
  qemu-system-x86                               # QEMU's vhost-user front-ends (conformance of moonbox-device)
  acpica-tools                                  # iasl: tests/lua/test_acpi.lua
  patch                                         # guest/patches/*.patch on the kernel source
)
# one dpkg-query for all (fast no-op path); "ii" = installed and configured
installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${PKGS[@]}" \
  2>/dev/null | awk '$1 == "ii" { print $2 }') || true
missing=()
for p in "${PKGS[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    SUDO=sudo
  fi
  log "installing: ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---- helpers ---------------------------------------------------------------
# up_to_date OUT IN...: OUT exists and is newer than every IN
up_to_date() {
  local out=$1 f; shift
  [ -e "$out" ] || return 1
  for f in "$@"; do [ "$out" -nt "$f" ] || return 1; done
}

mkdir -p "$OUT" "$CACHE/build"
# One kernel build at a time (two parallel `make deps` would clash in KSRC).
exec 9>"$CACHE/build/.lock"
flock 9

# ---- 2. kernel source (extracted once; later builds are incremental) ------
# The stamp is newer than the tarball unless apt upgraded linux-source-6.1.
if ! up_to_date "$KSRC/.moonbox-extracted" "$KTAR"; then
  log "extracting $KTAR"
  tmp=$(mktemp -d "$CACHE/build/extract.XXXXXX")
  tar -xJf "$KTAR" -C "$tmp"
  rm -rf "$KSRC"
  mv "$tmp/linux-source-6.1" "$KSRC"
  rmdir "$tmp"
  touch "$KSRC/.moonbox-extracted"
fi

# ---- 2b. moonbox's boot-time patches (guest/patches/*.patch, see its README)
# The set applied is kept in KSRC/.moonbox-patches/; when guest/patches
# differs, the old set is reversed (last first) and the new one applied,
# so an extracted tree follows the repository either way.
patchsum() { local f; for f in "$@"; do [ -e "$f" ] || continue; cat "$f"; done | sha256sum; }
want=$(patchsum "$PATCHES"/*.patch)
have=$(patchsum "$KSRC"/.moonbox-patches/*.patch)
if [ "$want" != "$have" ]; then
  if [ -d "$KSRC/.moonbox-patches" ]; then
    for p in $(printf '%s\n' "$KSRC"/.moonbox-patches/*.patch | sort -r); do
      [ -e "$p" ] || continue
      log "reversing $(basename "$p")"
      patch -s -R -p1 -d "$KSRC" <"$p" || die "could not reverse $p in $KSRC (rm -rf $KSRC and run again)"
    done
  fi
  rm -rf "$KSRC/.moonbox-patches"
  mkdir -p "$KSRC/.moonbox-patches"
  for p in "$PATCHES"/*.patch; do
    [ -e "$p" ] || continue
    log "applying guest/patches/$(basename "$p")"
    patch -s -p1 -d "$KSRC" <"$p" || die "guest/patches/$(basename "$p") does not apply to $KSRC"
    cp "$p" "$KSRC/.moonbox-patches/"
  done
fi

# ---- 3. kernel -------------------------------------------------------------
# Reproducible-ish build identity, and ARCH=x86_64 forces 64BIT.
KMAKE=(make -C "$KSRC" ARCH=x86_64 KBUILD_BUILD_USER=moonbox
       KBUILD_BUILD_HOST=moonbox)
# Rebuilt when what goes into it changes, by content, not by mtime: a
# fresh clone or a git worktree sharing this cache has every file newer
# than the guest, and must not rebuild it (nor, worse, reconfigure the tree
# under a running test). Bump KRECIPE when the commands below change.
KRECIPE=2
kstamp=$( { echo "recipe $KRECIPE"; cat "$FRAG" "$PATCHES"/*.patch; stat -c '%s %Y' "$KTAR"; } | sha256sum)
if [ ! -e "$OUT/bzImage" ] || [ ! -e "$OUT/vmlinux" ] ||
   [ "$(cat "$OUT/kernel.stamp" 2>/dev/null)" != "$kstamp" ]; then
  t0=$SECONDS
  log "configuring kernel (tinyconfig + guest/kernel.config)"
  # -m: only merge into .config; olddefconfig then resolves dependencies.
  # Kconfig's chatter (override warnings) goes to the log; the check below
  # is what tells whether the fragment took.
  { "${KMAKE[@]}" tinyconfig &&
    (cd "$KSRC" && scripts/kconfig/merge_config.sh -m .config "$FRAG") &&
    "${KMAKE[@]}" olddefconfig; } >"$CACHE/build/config.log" 2>&1 \
    || { tail -20 "$CACHE/build/config.log" >&2; die "kernel config failed"; }
  # Every line of the fragment must survive olddefconfig; a silently dropped
  # option (unmet dependency) would otherwise only show up as a boot failure.
  bad=()
  while read -r line; do
    if [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
      grep -q "^${BASH_REMATCH[1]}=" "$KSRC/.config" && bad+=("$line")
    else
      grep -qxF "$line" "$KSRC/.config" || bad+=("$line")
    fi
  done < <(grep -E '^CONFIG_|^# CONFIG_.* is not set$' "$FRAG")
  if ((${#bad[@]})); then
    log "WARNING: options that did not stick (missing dependency?):"
    printf '  %s\n' "${bad[@]}" >&2
  fi
  log "building bzImage (-j$JOBS, a few minutes; log: .cache/build/kernel.log)"
  "${KMAKE[@]}" -j"$JOBS" bzImage >"$CACHE/build/kernel.log" 2>&1 \
    || { tail -30 "$CACHE/build/kernel.log" >&2; die "kernel build failed"; }
  cp "$KSRC/arch/x86/boot/bzImage" "$OUT/bzImage.tmp"
  mv "$OUT/bzImage.tmp" "$OUT/bzImage"
  # The ELF the bzImage was made from, for PVH boot (m:boot_pvh): the VMM
  # places it, so the guest runs no decompressor. Stripped: symbols are
  # not loaded and only make the file bigger to read.
  objcopy --strip-all "$KSRC/vmlinux" "$OUT/vmlinux.tmp"
  mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
  log "bzImage: $(stat -c %s "$OUT/bzImage") bytes, vmlinux: $(stat -c %s "$OUT/vmlinux") bytes, $((SECONDS - t0))s"
  echo "$kstamp" >"$OUT/kernel.stamp"
fi

# ---- 3b. the guest's /init ------------------------------------------------
# A static program (guest/init.c says why it is not a script), the same in
# the initramfs and on the root disk. Rebuilt when its source or the
# compiler changes; its bytes go into both stamps below.
# Linked with musl (~50 KB, against ~700 KB with glibc): the initramfs boot
# unpacks every byte of it in emulated kernel code.
ISTAMP_INIT=$( { cat "$INIT_SRC"; musl-gcc --version | head -1; } | sha256sum)
if [ ! -x "$INIT" ] || [ "$(cat "$INIT.stamp" 2>/dev/null)" != "$ISTAMP_INIT" ]; then
  musl-gcc -static -O2 -s -std=gnu11 -Wall -Wextra -Werror -o "$INIT.tmp" "$INIT_SRC" \
    || die "building the guest's /init from guest/init.c with musl-gcc failed"
  mv "$INIT.tmp" "$INIT"
  echo "$ISTAMP_INIT" >"$INIT.stamp"
  log "init: $(stat -c %s "$INIT") bytes"
fi

# ---- 4. initramfs ----------------------------------------------------------
# Built with the kernel's gen_init_cpio from a text spec: entries are
# root-owned and /dev/console (needed before init runs) is a real device
# node without needing mknod/root. Newc, uncompressed.
BB=/bin/busybox
IRECIPE=2
istamp=$( { echo "recipe $IRECIPE"; cat "$INIT"; stat -c '%s %Y' "$BB"; } | sha256sum)
if [ ! -e "$OUT/initramfs.cpio" ] ||
   [ "$(cat "$OUT/initramfs.stamp" 2>/dev/null)" != "$istamp" ]; then
  # a dynamically linked busybox (package "busybox") would not run in the guest
  readelf -l "$BB" | grep -q 'program interpreter' \
    && die "$BB is not static (install busybox-static)"
  GEN=$CACHE/build/gen_init_cpio
  [ -x "$GEN" ] || cc -O2 -o "$GEN" "$KSRC/usr/gen_init_cpio.c"
  spec=$CACHE/build/initramfs.spec
  {
    for d in /dev /proc /sys /root /etc /bin /sbin /usr /usr/bin /usr/sbin; do
      echo "dir $d 755 0 0"
    done
    echo "dir /tmp 1777 0 0"
    echo "nod /dev/console 600 0 0 c 5 1"
    echo "file /init $INIT 755 0 0"
    echo "file /bin/busybox $BB 755 0 0"
    # every applet as a symlink, so any busybox command works by name
    "$BB" --list-full | grep -v '^linuxrc$' | grep -vx 'bin/busybox' \
      | sed 's|^\(.*\)$|slink /\1 /bin/busybox 777 0 0|'
  } >"$spec"
  # -t 0: fixed mtime for dirs/links/nodes, so rebuilds give the same bytes
  "$GEN" -t 0 "$spec" >"$OUT/initramfs.cpio.tmp"
  mv "$OUT/initramfs.cpio.tmp" "$OUT/initramfs.cpio"
  log "initramfs.cpio: $(stat -c %s "$OUT/initramfs.cpio") bytes"
  echo "$istamp" >"$OUT/initramfs.stamp"
fi

# ---- 5. root disk ----------------------------------------------------------
# The same userland as a small ext2 image, machines/linux.lua's default root
# (root=/dev/vda): the guest reads the files it runs from the disk instead
# of unpacking a cpio in emulated kernel code first (guest/README.md has
# the numbers). moonbox opens it read-only with a copy-on-write overlay, so
# the guest may write (its /init writes /etc/fstab) and the image never
# changes. No /dev/console in it: the kernel opens the console on its
# built-in rootfs and mounts devtmpfs on /dev (DEVTMPFS_MOUNT).
RRECIPE=2
rstamp=$( { echo "recipe $RRECIPE"; cat "$INIT"; stat -c '%s %Y' "$BB"; } | sha256sum)
if [ ! -e "$OUT/root.ext2" ] ||
   [ "$(cat "$OUT/root.ext2.stamp" 2>/dev/null)" != "$rstamp" ]; then
  stage=$CACHE/build/rootfs
  rm -rf "$stage"
  mkdir -p "$stage"/{dev,proc,sys,root,etc,bin,sbin,usr/bin,usr/sbin,tmp}
  chmod 1777 "$stage/tmp"
  install -m 755 "$INIT" "$stage/init"
  install -m 755 "$BB" "$stage/bin/busybox"
  "$BB" --list-full | grep -v '^linuxrc$' | grep -vx 'bin/busybox' |
    while read -r a; do ln -s /bin/busybox "$stage/$a"; done
  # 4 KiB blocks (one per page: the guest's reads of busybox cost ~0.4 s
  # less than with 1 KiB blocks, guest/README.md) and few inodes: the files
  # fill ~2 MiB; 2 MiB spare for what a guest writes to it (into the overlay).
  kib=$(( ($(du -sk "$stage" | cut -f1) + 2048 + 3) / 4 * 4 ))
  rm -f "$OUT/root.ext2.tmp"
  truncate -s "${kib}k" "$OUT/root.ext2.tmp"
  mke2fs -q -F -t ext2 -b 4096 -m 0 -N 1024 -L moonbox-root \
    -E root_owner=0:0 -d "$stage" "$OUT/root.ext2.tmp" \
    || die "mke2fs of the root disk failed"
  mv "$OUT/root.ext2.tmp" "$OUT/root.ext2"
  echo "$rstamp" >"$OUT/root.ext2.stamp"
  log "root.ext2: $(stat -c %s "$OUT/root.ext2") bytes"
fi

log "guest ready: .cache/guest/bzImage .cache/guest/vmlinux .cache/guest/initramfs.cpio .cache/guest/root.ext2"
