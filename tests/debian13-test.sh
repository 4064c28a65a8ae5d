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
# 4. The same packages on a Debian 13 machine that boots: Debian's kernel,
#    systemd and udev installed, then booted in QEMU (TCG) from a disk made
#    of it, with Debian's own kernel and systemd as init. There
#    modules-load.d loads fanout, baf-setup.service applies /etc/baf/topics,
#    a pubmsg | submsg pipeline moves every record, and dpkg --purge with
#    systemd running leaves nothing behind (tests/debian13-vm/check.sh,
#    whose results come back over the serial console). About 5 minutes;
#    BAF_DEBIAN13_VM_TIMEOUT (default 900) bounds the boot.
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

{ read -r tree; read -r vmlinuz; } < <(bash "$REPO/scripts/debian-kernel.sh" "$series") || { bad "scripts/debian-kernel.sh $series"; exit 1; }
dir=$(dirname "$tree")
headers_deb=$(ls "$dir"/linux-headers-*-amd64_*.deb)
kver=$(dpkg-deb -f "$headers_deb" Package | sed 's/^linux-headers-//')
debver=$(dpkg-deb -f "$headers_deb" Version)
srcdeb=$(ls "$CACHE/src/linux-source-${series}_${debver}"_*.deb)
# What linux-headers-KVER depends on, as a user's apt would bring it; and
# the rest of the kernel (its modules and base files; debian-kernel.sh has
# its image), for the machine that boots (4).
for pkg in "linux-headers-${kver%-amd64}-common" "linux-kbuild-${kver%-amd64}" "linux-modules-$kver" "linux-base-$kver"; do
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
  if out=$(in_debian13 "$2" 2>&1); then ok "$name"; else echo "$out" | tail -n 15; bad "$name"; return 1; fi
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
pkgs=""
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
  pkgs=""; cat "$tmp/package.log"; bad "scripts/package.sh builds baf and fanout-dkms"
fi

# --- 4. the packages on a booted Debian 13 machine: systemd, the module, the unit ---
# Another fresh machine with Debian's kernel image, systemd and udev, the
# packages installed as in 3 (DKMS builds fanout.ko in postinst), and an
# /etc/baf/topics; then it boots in QEMU (TCG) from a disk made of it, with
# Debian's own kernel and systemd as init. There tests/debian13-vm/check.sh
# (run by a unit once baf-setup.service is done) checks that
# modules-load.d loaded fanout, that the unit applied /etc/baf/topics, that
# a pubmsg | submsg pipeline moves every record, and that dpkg --purge with
# systemd running leaves nothing behind; each result is a line
# "BAF-VM-RESULT ok|FAILED NAME" on the serial console, counted here.
debian13_vm() {
  local vmdir="$REPO/tests/debian13-vm" sysdebs="$CACHE/debian13-vm/debs" vm="$tmp/vm"
  local image_deb t0 t1
  image_deb=$(ls "$dir"/linux-binary-"$kver"_*.deb "$dir"/linux-modules-"$kver"_*.deb "$dir"/linux-base-"$kver"_*.deb) ||
    { bad "Debian's kernel image, modules and base packages are in the cache"; return 1; }
  t0=$(date +%s)
  # systemd, systemd-sysv and udev of Debian 13, with what they need that the
  # chroot lacks: downloaded once (in a throwaway machine), then from the cache.
  if ! [ -f "$sysdebs/complete" ]; then
    debian13 download || return 1
    mkdir -p "$sysdebs/partial"
    check_in "download Debian 13's systemd, systemd-sysv and udev (once; cached)" \
      "apt-get -q -o APT::Sandbox::User=root update >/tmp/apt.log 2>&1 &&
       apt-get -q -y -o APT::Sandbox::User=root -o Dir::Cache::archives=$sysdebs --no-install-recommends --download-only install systemd systemd-sysv udev >>/tmp/apt.log 2>&1 ||
       { tail -n 20 /tmp/apt.log; exit 1; }" || return 1
    touch "$sysdebs/complete"
  fi
  debian13 vm || return 1
  mkdir -p "$m/etc/systemd/system"
  install -m 644 "$vmdir/baf-vm-test.service" "$m/etc/systemd/system/baf-vm-test.service"
  install -m 755 "$vmdir/check.sh" "$m/root/check.sh"
  cp $image_deb "$m/debs/"
  # Debian's kernel (image, modules, base files), headers and source,
  # systemd: a Debian 13 machine as it boots. (The libraries go first:
  # systemd and systemd-sysv pre-depend on what comes before them.)
  check_in "the machine: Debian's kernel (image, modules, base), headers and source for $kver, systemd and udev (dpkg)" \
    "cd $sysdebs && { dpkg -i \$(ls *.deb | grep -vE '^(systemd|systemd-sysv|udev)_') && dpkg -i systemd_*.deb && dpkg -i systemd-sysv_*.deb udev_*.deb; } >/tmp/sd.log 2>&1 ||
       { grep -iE 'error|depend' /tmp/sd.log | head -n 20; exit 1; }
     dpkg -i --force-depends /debs/linux-*.deb >/tmp/k.log 2>&1
     dpkg-query -W linux-headers-$kver >/dev/null && test -f /lib/modules/$kver/modules.builtin || { tail -n 20 /tmp/k.log; exit 1; }
     test -x /sbin/init && systemd-machine-id-setup >/dev/null 2>&1 && test -s /etc/machine-id" || return 1
  rm -f "$m/debs/"*.deb
  in_debian13 "/root/check.sh --files" > "$m/root/before.list"
  # The admin's topics, and what check.sh expects of them (baf-test comes
  # with apply; the unit passes no --no-test-topic).
  mkdir -p "$m/etc/baf"
  printf '# tests/debian13-test.sh\nsensors size=256K lossless\nrobot/arm size=32K mode=0640\n' > "$m/etc/baf/topics"
  printf 'sensors 262144 660\nrobot/arm 32768 640\nbaf-test %s 660\n' 65536 > "$m/root/topics-want"
  cp $pkgs "$m/debs/"
  check_in "on it, dpkg -i baf and fanout-dkms: DKMS builds fanout.ko for $kver, depmod indexes it, the unit is enabled" \
    "dpkg -i /debs/baf_*.deb /debs/fanout-dkms_*.deb >/tmp/dpkg.log 2>&1 || { tail -n 30 /tmp/dpkg.log; exit 1; }
     grep -q 'updates/dkms/fanout.ko' /lib/modules/$kver/modules.dep || { echo 'fanout is not in modules.dep'; tail -n 30 /tmp/dpkg.log; exit 1; }
     test -L /etc/systemd/system/multi-user.target.wants/baf-setup.service || { echo 'baf-setup.service is not enabled'; exit 1; }" || return 1
  rm -rf "$m/debs"
  # The initramfs: busybox, and the modules that reach the disk (Debian
  # builds virtio and ext4 as modules), in modprobe's order.
  mkdir -p "$vm/initrd/modules"
  local deps mods=() line n=0 f seen=" "
  deps=$(in_debian13 "modprobe -a -S $kver --show-depends virtio_pci virtio_blk ext4") || { bad "modprobe --show-depends in the machine"; return 1; }
  : > "$vm/initrd/modules.order"
  while read -r line; do
    case "$line" in
      insmod\ *)
        f=$(echo "$line" | cut -d' ' -f2)
        case "$seen" in *" $f "*) continue ;; esac  # a module two of them need
        seen="$seen$f "; n=$((n + 1))
        case "$f" in
          *.xz) xz -dc "$m$f" > "$vm/initrd/modules/$n.ko" ;;
          *.zst) zstd -qdc "$m$f" > "$vm/initrd/modules/$n.ko" ;;
          *) cp "$m$f" "$vm/initrd/modules/$n.ko" ;;
        esac
        echo "$n.ko" >> "$vm/initrd/modules.order"
        mods+=("$(basename "$f")") ;;
    esac
  done <<< "$deps"
  {
    echo "dir /bin 755 0 0"; echo "dir /modules 755 0 0"; echo "dir /dev 755 0 0"
    echo "nod /dev/console 600 0 0 c 5 1"
    echo "file /bin/busybox $(command -v busybox) 755 0 0"
    echo "slink /bin/sh busybox 777 0 0"
    echo "file /init $vmdir/init 755 0 0"
    echo "file /modules.order $vm/initrd/modules.order 644 0 0"
    for f in "$vm"/initrd/modules/*.ko; do echo "file /modules/$(basename "$f") $f 644 0 0"; done
  } > "$vm/initrd.list"
  "$tree/gen_init_cpio" "$vm/initrd.list" | gzip -1 > "$vm/initrd.gz" || { bad "the initramfs"; return 1; }
  # The disk: the machine's files, as they are.
  local mb
  mb=$(( $(du -sxm "$m" | cut -f1) * 5 / 4 + 512 ))
  truncate -s "${mb}M" "$vm/disk.img"
  mkfs.ext4 -q -F -L baf-debian13 -d "$m" "$vm/disk.img" > "$vm/mkfs.log" 2>&1 ||
    { cat "$vm/mkfs.log"; bad "a disk image of the machine (mkfs.ext4 -d)"; return 1; }
  t1=$(date +%s)
  echo "  (machine ready in $((t1 - t0))s: a ${mb} MiB disk; initramfs modules: ${mods[*]})"
  # Boot. Units that only cost time here are masked; the test unit is
  # pulled in from the command line. loglevel=5 shows warnings (a WARN
  # splat prints at that level) on the console, where they are looked for.
  local log="$vm/serial.log" qemu_rc mask=""
  for u in serial-getty@ttyS0.service getty@tty1.service systemd-logind.service apt-daily.timer \
           apt-daily-upgrade.timer e2scrub_reap.service e2scrub_all.timer fstrim.timer dpkg-db-backup.timer \
           systemd-timesyncd.service systemd-networkd-wait-online.service; do
    mask="$mask systemd.mask=$u"
  done
  timeout --foreground "${BAF_DEBIAN13_VM_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -cpu max,la57=off -smp 2 -m 2G \
    -kernel "$vmlinuz" -initrd "$vm/initrd.gz" \
    -drive "file=$vm/disk.img,format=raw,if=virtio" -nic none \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 loglevel=5 systemd.show_status=0 systemd.wants=baf-vm-test.service$mask" \
    -display none -monitor none -serial "file:$log" -no-reboot
  qemu_rc=$?
  local t2; t2=$(date +%s)
  # What the test printed (kernel lines and passes left out); systemd may
  # put terminal control bytes before a line.
  sed 's/\r$//' "$log" | grep -v '^\[ *[0-9]' | grep -v 'BAF-VM-RESULT ok ' | sed 's/^/    /'
  local name
  while read -r line; do
    name=${line#BAF-VM-RESULT * }
    case "$line" in
      "BAF-VM-RESULT ok "*) ok "booted: $name" ;;
      *) bad "booted: $name" ;;
    esac
  done < <(sed 's/\r$//' "$log" | grep -oE 'BAF-VM-RESULT (ok|FAILED) .*')
  local problems=()
  grep -q 'BAF-VM-DONE' "$log" || problems+=("the machine's test did not finish (qemu exit $qemu_rc, 124 is the timeout)")
  grep -qF "kernel: $kver " "$log" || problems+=("the machine did not run Debian's $kver")
  splat_re='BUG:|WARNING:|Oops|Call Trace|UBSAN:|Kernel panic|general protection fault|rust_panic'
  grep -qE "$splat_re" "$log" && problems+=("kernel splat: $(grep -m1 -E "$splat_re" "$log" | tr -d '\r')")
  if [ ${#problems[@]} = 0 ]; then
    ok "the machine booted Debian's $kver with systemd, ran its test and powered off"
  else
    for p in "${problems[@]}"; do bad "booted: $p"; done
    mkdir -p "$CACHE/runs"; cp "$log" "$CACHE/runs/debian13-vm-serial.log"
    echo "    (serial log: $CACHE/runs/debian13-vm-serial.log; its end:)"; tail -n 20 "$log" | sed 's/^/    /'
  fi
  echo "  (booted machine: prepared in $((t1 - t0))s, QEMU ran $((t2 - t1))s)"
}
if [ -n "${pkgs:-}" ]; then debian13_vm || true; fi
for mp in "${mounts[@]}"; do umount -l "$mp" 2>/dev/null; done

echo "debian13 test: $passed passed, $failed failed"
[ "$failed" = 0 ]
