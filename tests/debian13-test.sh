#!/usr/bin/env bash
# The install paths on Debian 13 for Debian's own kernels, after the VM suite
# has built their Rust metadata (scripts/debian-kernel.sh, cached). Ends with
# "debian13 test: N passed, N failed".
#
#   tests/debian13-test.sh [SERIES]      (default 7.3; run as root)
#
# 1. kernel-rust.sh's refusals: each mismatch is refused in one line, before
#    anything is built (this machine's own rustc is not the kernel's; a rustc
#    that only claims the kernel's version makes other crate hashes; a source
#    of another version; a kernel without Rust; no headers).
# 2. A Debian 13 machine as a user has it: a throwaway overlay of the Debian
#    13 chroot with Debian's linux-headers, linux-source and dkms packages
#    installed by dpkg. There, natively: kernel-rust.sh --check passes,
#    kernel-rust.sh finds its tree complete, --install builds and installs
#    fanout.ko where modprobe finds it, `make -C kernel` with the headers'
#    own KDIR builds fanout.ko through the metadata tree (the Makefile's
#    redirect), and `dkms build` does the same (PRE_BUILD). Every module
#    carries the kernel's release in its vermagic.
# 3. The .deb packages (scripts/package.sh) on another fresh Debian 13
#    machine: installed with dpkg, DKMS builds fanout.ko for Debian's kernel
#    in postinst, the tools run, and a purge leaves nothing behind.
set -uo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

series=${1:-7.3}
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  ok      $*"; }
bad() { failed=$((failed + 1)); echo "  FAILED  $*"; }
refused() { # NAME PATTERN COMMAND...: exit 1, one line on stderr matching PATTERN, nothing built
  local name=$1 pattern=$2 out rc; shift 2
  out=$("$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" = 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && printf '%s' "$out" | grep -qE "$pattern"; then
    ok "$name: $out"
  else
    bad "$name (exit $rc): $out"
  fi
}

tmp=$(mktemp -d)
mounts=()
cleanup() { for mp in "${mounts[@]}"; do umount -l "$mp" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
kr="$REPO/scripts/kernel-rust.sh"

{ read -r tree; read -r _; } < <(bash "$REPO/scripts/debian-kernel.sh" "$series") || { bad "scripts/debian-kernel.sh $series"; exit 1; }
dir=$(dirname "$tree")
headers_deb=$(ls "$dir"/linux-headers-*-amd64_*.deb)
kver=$(dpkg-deb -f "$headers_deb" Package | sed 's/^linux-headers-//')
debver=$(dpkg-deb -f "$headers_deb" Version)
srcdeb=$(ls "$CACHE/src/linux-source-${series}_${debver}"_*.deb)
# What linux-headers-KVER depends on, as a user's apt would bring it.
for pkg in "linux-headers-${kver%-amd64}-common" "linux-kbuild-${kver%-amd64}"; do
  ls "$dir/${pkg}"_*.deb >/dev/null 2>&1 ||
    (cd "$dir" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$debver" >/dev/null) ||
    { bad "download $pkg=$debver"; exit 1; }
done
root=$(cat "$tree/root")
echo "debian13 test: Debian's $kver ($debver), Debian 13 chroot $root"
kver_re=$(printf '%s' "$kver" | sed 's/[.+]/\\&/g')

# --- 1. refusals, each before anything is built ---------------------------------
refused "this machine's rustc is refused" "built with 'rustc 1\.85\.1.*but the rustc on this machine is" \
  bash "$kr" --kver "$kver" --headers "$headers_deb" --source "$srcdeb" --out "$tmp/out1"
# A rustc that prints the kernel's version text but is this machine's build.
mkdir -p "$tmp/fake"
want_rustc=$(dpkg-deb --fsys-tarfile "$headers_deb" | tar -xO --wildcards '*/.config' | sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p')
real_rustc=$(command -v rustc)
printf '#!/bin/sh\n[ "$1" = --version ] && { echo "%s"; exit 0; }\nexec %s "$@"\n' "$want_rustc" "$real_rustc" > "$tmp/fake/rustc"
printf '#!/bin/sh\necho "bindgen 0.71.1"\n' > "$tmp/fake/bindgen"
printf '#!/bin/sh\necho "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0"\n' > "$tmp/fake/x86_64-linux-gnu-gcc-14"
chmod +x "$tmp/fake"/*
refused "a rustc of the same version text but another build is refused by its crate hashes" \
  "the Rust symbols cannot match kernel $kver_re: its crate '[a-z_]+' is Cs[0-9A-Za-z]+_[0-9]+[a-z_]+, this rustc .* makes Cs" \
  env PATH="$tmp/fake:$PATH" bash "$kr" --kver "$kver" --headers "$headers_deb" --source "$srcdeb" --out "$tmp/out2"
other=$(ls "$CACHE"/src/linux-source-*.deb | grep -v "linux-source-${series}_" | head -n1)
if [ -n "$other" ]; then
  refused "a linux-source of another version is refused" "the source is linux-source-[0-9.]+ [^ ]+ but kernel $kver_re is [^ ]+: install linux-source-$series=" \
    bash "$kr" --kver "$kver" --headers "$headers_deb" --source "$other" --root "$root" --out "$tmp/out3"
fi
mkdir -p "$tmp/norust"
dpkg-deb -x "$headers_deb" "$tmp/norust"
h="$tmp/norust/usr/src/linux-headers-$kver"
sed -i 's/^CONFIG_RUST=y$/# CONFIG_RUST is not set/' "$h/.config"
refused "a kernel without CONFIG_RUST is refused" "built without CONFIG_RUST=y" \
  bash "$kr" --kver "$kver" --headers "$h" --root "$root" --out "$tmp/out4"
refused "missing headers are refused" "install linux-headers-7\.9\.9-none" \
  bash "$kr" --kver 7.9.9-none --root "$root" --out "$tmp/out5"
for o in "$tmp"/out*; do
  [ -e "$o/build" ] && bad "a refused run built something in $o"
done

# --- 2. a Debian 13 machine -----------------------------------------------------------
debian13() { # NAME: a fresh throwaway Debian 13 machine (an overlay of the chroot) at $m
  m="$tmp/$1/m"
  mkdir -p "$tmp/$1/u" "$tmp/$1/w" "$m"
  mount -t overlay overlay -o "lowerdir=$root,upperdir=$tmp/$1/u,workdir=$tmp/$1/w" "$m" ||
    { bad "overlay of the Debian 13 chroot"; return 1; }
  mounts+=("$m")
  mkdir -p "$m/debs" "$m/var/lib/baf/kbuild" "$m/src/kernel"
  cp "$dir"/linux-headers-*.deb "$dir"/linux-kbuild-*.deb "$srcdeb" "$m/debs/"
  cp "$REPO"/kernel/*.rs "$REPO"/kernel/Kbuild "$REPO"/kernel/Makefile "$REPO"/kernel/dkms.conf "$m/src/kernel/"
  cp "$kr" "$m/src/kernel-rust.sh"
  # The tree the VM suite built stands in for /var/lib/baf/kbuild/KVER (same
  # inputs, so kernel-rust.sh finds it complete and builds nothing again).
  ln -s "$tree" "$m/var/lib/baf/kbuild/$kver"
}
debian13 make || { echo "debian13 test: $passed passed, $failed failed"; exit 1; }
in_debian13() { # COMMAND (sh -c): in the overlay, with the cache at its own path
  unshare -m -- /bin/sh -c '
    m=$1 cache=$2; shift 2
    mount --make-rprivate / 2>/dev/null || true
    mount -t proc proc "$m/proc"; mount --rbind /dev "$m/dev"
    mkdir -p "$m$cache"; mount --bind "$cache" "$m$cache"
    exec chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /bin/sh -c "$1"
  ' sh "$m" "$CACHE" "$1"
}
check_in() { # NAME COMMAND (sh -c)
  local name=$1 out
  if out=$(in_debian13 "$2" 2>&1); then ok "$name"; else echo "$out" | tail -n 15; bad "$name"; fi
}
# linux-base and gcc-14-for-host are Debian's kernel packaging's own, not
# needed to build a module; dkms comes with the chroot's packages.
check_in "Debian's linux-headers-$kver, linux-kbuild and linux-source-$series install (dpkg)" \
  "dpkg -i --force-depends /debs/*.deb >/dev/null 2>&1; dpkg-query -W linux-headers-$kver linux-source-$series >/dev/null && test -f /usr/src/linux-source-$series.tar.xz"
check_in "no Rust metadata in Debian's headers: make -C kernel without it says what to run" \
  "cd /src/kernel && ! make BAF_KBUILD=/nonexistent KDIR=/usr/src/linux-headers-$kver check 2>/tmp/check.err && grep -q 'kernel-rust.sh --kver $kver' /tmp/check.err"
check_in "kernel-rust.sh --check passes natively on Debian 13 (the system's rustc, bindgen, gcc-14)" \
  "bash /src/kernel-rust.sh --kver $kver --check | grep -q 'can get its Rust metadata: rustc 1.85.1.*on this machine'"
check_in "kernel-rust.sh reuses the complete tree at /var/lib/baf/kbuild/$kver" \
  "test \"\$(bash /src/kernel-rust.sh --kver $kver 2>&1)\" = /var/lib/baf/kbuild/$kver"
check_in "make -C kernel with the headers' KDIR builds fanout.ko through the metadata tree" \
  "cd /src/kernel && make -s KDIR=/lib/modules/$kver/build modules >/tmp/make.log 2>&1 && test \"\$(modinfo -F vermagic fanout.ko | cut -d' ' -f1)\" = $kver"
check_in "kernel-rust.sh --install builds and installs fanout.ko for $kver (modules_install, depmod)" \
  "bash /src/kernel-rust.sh --kver $kver --install /src/kernel >/tmp/install.log 2>&1 || { tail -n 20 /tmp/install.log; exit 1; }
   test \"\$(modinfo -k $kver -F vermagic fanout | cut -d' ' -f1)\" = $kver && modinfo -k $kver -n fanout | grep -q '^/lib/modules/$kver/updates/fanout.ko'"
check_in "dkms builds fanout.ko for $kver (PRE_BUILD kernel-rust.sh --if-needed, then the same redirect)" \
  "rm -f /src/kernel/*.ko /src/kernel/*.o; mkdir -p /usr/src/fanout-0.1.0 && cp /src/kernel/*.rs /src/kernel/Kbuild /src/kernel/Makefile /src/kernel/dkms.conf /usr/src/fanout-0.1.0/ &&
   install -m 755 /src/kernel-rust.sh /usr/src/fanout-0.1.0/kernel-rust.sh &&
   dkms add -m fanout -v 0.1.0 >/dev/null && dkms build -m fanout -v 0.1.0 -k $kver >/tmp/dkms.log 2>&1 || { tail -n 20 /tmp/dkms.log; cat /var/lib/dkms/fanout/0.1.0/build/make.log 2>/dev/null | tail -n 20; exit 1; }
   ko=\$(find /var/lib/dkms/fanout/0.1.0/$kver -name 'fanout.ko*' | head -n1); test -n \"\$ko\" &&
   test \"\$(modinfo -F vermagic \"\$ko\" | cut -d' ' -f1)\" = $kver"

# --- 3. the .deb packages (scripts/package.sh) on a fresh Debian 13 machine -----------
if pkgs=$(bash "$REPO/scripts/package.sh" --out "$tmp/pkgs" 2>"$tmp/package.log"); then
  ok "scripts/package.sh builds baf and fanout-dkms"
  debian13 packages
  cp $pkgs "$m/debs/"
  check_in "Debian's headers and source for $kver (the kernel the module is built for)" \
    "dpkg -i --force-depends /debs/linux-*.deb >/dev/null 2>&1; dpkg-query -W linux-headers-$kver >/dev/null"
  # What is on the machine before, to compare after the purge.
  snapshot() { in_debian13 "find / -xdev \( -path /proc -o -path /dev -o -path /tmp -o -path /var/lib/dpkg -o -path /var/log -o -path /var/cache -o -path /root -o -path '$CACHE' \) -prune -o -print" | sort; }
  snapshot > "$tmp/before"
  # (The machine has Debian's headers but not its image, so depmod has no
  # System.map and DKMS leaves modules.dep alone: the file is checked.)
  check_in "apt's way: dpkg -i baf and fanout-dkms; DKMS builds and installs fanout.ko for $kver in postinst" \
    "dpkg -i /debs/baf_*.deb /debs/fanout-dkms_*.deb >/tmp/dpkg.log 2>&1 || { tail -n 30 /tmp/dpkg.log; exit 1; }
     ko=\$(find /lib/modules/$kver/updates -name 'fanout.ko*' | head -n1)
     [ -n \"\$ko\" ] && test \"\$(modinfo -F vermagic \"\$ko\" | cut -d' ' -f1)\" = $kver || { tail -n 30 /tmp/dpkg.log; exit 1; }"
  check_in "the packaged tools run: baf-setup without the module says so in one line (exit 6)" \
    "pubmsg --version >/dev/null && submsg --version >/dev/null && baf-bridge --version >/dev/null &&
     baf-setup status >/dev/null 2>/tmp/e; rc=\$?; [ \$rc = 6 ] && [ \$(wc -l < /tmp/e) = 1 ] || { echo \"exit \$rc\"; cat /tmp/e; exit 1; }"
  check_in "the package's units, modules-load.d entry and man pages are in place" \
    "test -f /usr/lib/systemd/system/baf-setup.service && test -f '/usr/lib/systemd/system/baf-bridge@.service' &&
     grep -qx fanout /usr/lib/modules-load.d/baf.conf && test -f /usr/share/man/man1/baf-bridge.1 && getent group baf >/dev/null"
  check_in "dpkg --purge baf fanout-dkms (DKMS removes the module)" \
    "dpkg --purge fanout-dkms baf >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; exit 1; }; [ -z \"\$(find /lib/modules/$kver -name 'fanout.ko*')\" ]"
  snapshot > "$tmp/after"
  # Group baf stays (files of that group may remain), and with it its
  # lines in /etc/group and /etc/gshadow and their backups.
  # DKMS keeps the module-signing key it made for itself (for every module).
  left=$(comm -13 "$tmp/before" "$tmp/after" | grep -vxE '/etc/(group|gshadow|passwd|shadow)-?|/var/lib/dkms/mok\.(key|pub)' || true)
  if [ -z "$left" ]; then ok "the purge leaves nothing behind"; else echo "$left"; bad "the purge leaves nothing behind"; fi
else
  cat "$tmp/package.log"; bad "scripts/package.sh builds baf and fanout-dkms"
fi
for mp in "${mounts[@]}"; do umount -l "$mp" 2>/dev/null; done

echo "debian13 test: $passed passed, $failed failed"
[ "$failed" = 0 ]
