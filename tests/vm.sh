#!/usr/bin/env bash
# Boot our own kernel in QEMU with fanout.ko and run a scenario against the
# real device; print each result and a summary line; exit non-zero on any
# failure, a kernel splat, or a VM that does not finish.
#
#   tests/vm.sh [--scenario tests|core|tools|bridge|record|demo|bench|peers|warn|hang] [--extra DIR]
#               [--kernel debug|lite|kcsan|bench|stock] [--series 7.3|7.2]
#               [--timeout SECONDS]
#
# --extra DIR: every executable in DIR (static binary or busybox-sh script)
# is copied into the VM and run after our suite as one more test, with
# pubmsg/submsg/baf-setup on the PATH and the module loaded.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

scenario=tests extra="" variant=debug timeout=900 series=${BAF_KERNEL:-7.3}
while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) scenario=$2; shift 2 ;;
    --extra) extra=$(cd "$2" && pwd); shift 2 ;;
    --kernel) variant=$2; shift 2 ;;
    --series) series=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    *) die "unknown argument: $1 (see the header of $0)" ;;
  esac
done

bash "$REPO/scripts/deps.sh"
if [ "$variant" = stock ]; then
  # Debian's own kernel image, unmodified, and the Rust metadata built for it
  # (scripts/debian-kernel.sh); the module is built with that kernel's own
  # compilers, in the Debian 13 chroot kernel-rust.sh made.
  { read -r stock_tree; read -r kimage; } < <(bash "$REPO/scripts/debian-kernel.sh" "$series")
  kbuild="$stock_tree/build"
  gen_init_cpio="$stock_tree/gen_init_cpio"
else
  kbuild=$(bash "$REPO/scripts/kernel.sh" "$variant" "$series")
  kimage="$kbuild/arch/x86/boot/bzImage"
  gen_init_cpio="$kbuild/usr/gen_init_cpio"
fi
# A fresh directory per run, so runs can go on side by side; kept when the
# run fails, for inspection.
mkdir -p "$CACHE/runs"
run=$(mktemp -d "$CACHE/runs/$scenario.XXXXXX")

# --- the module, built outside the repo against our kernel ----------------
# Built and installed the way a user does it (kernel/Makefile, then
# modules_install into a staging root); the VM loads the installed file.
moddir="$run/module"
mkdir -p "$moddir"
cp "$REPO"/kernel/*.rs "$REPO"/kernel/Kbuild "$REPO"/kernel/Makefile "$moddir"/
if [ "$variant" = stock ]; then
  # The kernel's compilers, and kernel/Makefile's own choice of CC and LLVM
  # (none: Debian builds with gcc); clippy runs on our own kernels.
  kmake() { (cd "$run" && bash "$REPO/scripts/kernel-rust.sh" --exec "$stock_tree" -- make -s -C "$moddir" KDIR="$kbuild" "$@"); }
  clippy=()
  say "building fanout.ko with the compilers of Debian's $series kernel"
else
  kmake() { make -s -C "$moddir" KDIR="$kbuild" LLVM=-19 "$@"; }
  clippy=(CLIPPY=1)
  say "building fanout.ko (with clippy)"
fi
kmake "${clippy[@]}" modules 2>&1 | tee "$run/module-build.log" >&2
[ -f "$moddir/fanout.ko" ] || die "fanout.ko did not build"
if grep -qE '^(warning|error)' "$run/module-build.log"; then
  die "the module build has warnings (see above); the kernel code must be clippy-clean"
fi
stage="$run/stage"
kmake modules_install INSTALL_MOD_PATH="$stage" \
  > "$run/module-install.log" 2>&1 || { cat "$run/module-install.log" >&2; die "make modules_install failed"; }
installed=$(find "$stage/lib/modules" -name 'fanout.ko*')
if [ -z "$installed" ] || [ "$(echo "$installed" | wc -l)" != 1 ]; then
  die "modules_install did not install exactly one fanout.ko under $stage/lib/modules"
fi
if [ "$variant" = stock ]; then
  # Debian's headers have no System.map, so modules_install skipped depmod
  # (and, having no signing key, did not sign: the kernel only taints). The
  # kernel's config compresses modules (fanout.ko.xz); busybox's insmod in
  # the VM takes the plain file.
  /sbin/depmod -b "$stage" "$(basename "$(dirname "$(dirname "$installed")")")" 2>> "$run/module-install.log"
  case "$installed" in *.xz) xz -dc "$installed" > "$run/fanout.ko"; installed="$run/fanout.ko" ;; esac
fi
grep -q 'fanout\.ko\(\.xz\)\{0,1\}:' "$stage"/lib/modules/*/modules.dep ||
  die "depmod did not index the installed fanout.ko (is kmod installed?)"

# --- static userspace programs ----------------------------------------------
say "building the tools and test programs as static binaries (about 3 minutes the first time)"
# One target directory per checkout ($STATIC_TARGET, scripts/lib.sh): cargo
# does not copy a binary it finds up to date back over one that another work
# tree built into the same directory, so a shared one packed the other
# tree's programs. Runs from one checkout take turns: the lock is held from
# the build until the binaries are packed.
exec 9> "$STATIC_TARGET.lock"
flock 9
# The peer benchmark's harness only where it runs (it builds iceoryx2).
peer_scenario=0
case "$scenario" in bench|peers) peer_scenario=1 ;; esac
peer_pkg=()
[ "$peer_scenario" = 1 ] && peer_pkg=(-p baf-peer-bench)
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
  --manifest-path "$REPO/Cargo.toml" --target x86_64-unknown-linux-gnu \
  --target-dir "$STATIC_TARGET" -p pubmsg -p submsg -p baf-setup -p baf-bridge -p baf-record -p baf-tests "${peer_pkg[@]}"
bins="$STATIC_TARGET/x86_64-unknown-linux-gnu/release"

# peer_files: the initramfs lines of the peer benchmark's programs: its
# harness, and the brokers and mosquitto's clients from Debian's packages
# (scripts/deps.sh) with the shared libraries they load, at the paths the
# dynamic loader looks for them.
peer_files() {
  local progs=(/usr/sbin/mosquitto /usr/bin/mosquitto_pub /usr/bin/mosquitto_sub /usr/sbin/nats-server) p libs
  echo "file /bin/baf-peer-bench $bins/baf-peer-bench 755 0 0"
  for p in "${progs[@]}"; do
    [ -x "$p" ] || die "$p is missing (scripts/deps.sh installs it)"
    echo "file /bin/$(basename "$p") $p 755 0 0"
  done
  libs=$(ldd "${progs[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u)
  # Every folder on the way (/lib and the rest exist already).
  for p in $libs; do
    p=$(dirname "$p")
    while [ "$p" != / ]; do echo "$p"; p=$(dirname "$p"); done
  done | sort -u | grep -vxE '/(bin|sbin|dev|proc|sys|tmp|root|etc|lib|tests|extra)' | awk '{ print "dir " $0 " 755 0 0" }'
  for p in $libs; do echo "file $p $p 755 0 0"; done
}

# --- initramfs --------------------------------------------------------------
list="$run/initramfs.list"
{
  for d in /bin /sbin /dev /proc /sys /tmp /root /etc /lib /tests /extra; do echo "dir $d 755 0 0"; done
  echo "nod /dev/console 600 0 0 c 5 1"
  echo "file /bin/busybox $(command -v busybox) 755 0 0"
  echo "slink /bin/sh busybox 777 0 0"
  echo "file /init $REPO/tests/vm/init 755 0 0"
  for f in "$REPO"/tests/vm/*.sh; do echo "file /tests/$(basename "$f") $f 644 0 0"; done
  echo "file /lib/fanout.ko $installed 644 0 0"
  for b in pubmsg submsg baf-setup baf-bridge baf-bridge-bench baf-record fanout-tests fanout-fuzz fanout-bench bench-io; do echo "file /bin/$b $bins/$b 755 0 0"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nbaf-user:x:1000:1000::/tmp:/bin/sh\n' > "$run/passwd"
  printf 'root:x:0:\nbaf:x:900:\nbaf-user:x:1000:\n' > "$run/group"
  echo "file /etc/passwd $run/passwd 644 0 0"
  echo "file /etc/group $run/group 644 0 0"
  if [ "$peer_scenario" = 1 ]; then peer_files; fi
  if [ -n "$extra" ]; then
    for f in "$extra"/*; do
      [ -f "$f" ] && [ -x "$f" ] && echo "file /extra/$(basename "$f") $f 755 0 0"
    done
  fi
} > "$list"
"$gen_init_cpio" "$list" | gzip -1 > "$run/initramfs.cpio.gz"
flock -u 9

# --- boot -------------------------------------------------------------------
log="$run/serial.log"
# loglevel=5: the console shows every message of warning level or worse.
# `quiet` would hide WARN and lockdep reports, which print at warning level
# (the harness self-test caught exactly that).
accel=${BAF_ACCEL:-tcg}
# The peer benchmark's brokers queue what their subscribers have not read
# yet: more memory there.
mem=1G
[ "$peer_scenario" = 1 ] && mem=3G
# la57=off: with QEMU's 5-level paging, an interrupt that arrives early in
# boot can hit KASAN shadow memory that is not mapped yet (seen once as
# "BUG: KASAN: wild-memory-access in do_raw_spin_lock" at 0.005 s, long
# before our module loads); 4-level paging, as on most real machines, avoids
# that kernel issue.
say "booting the $variant $series kernel ($accel), scenario '$scenario'"
start=$(date +%s)
# A boot that never reaches /init (seen once in many runs, only under TCG
# on a heavily loaded host, before our module is loaded: the kernel stops
# after its ACPI messages) is retried once: the VM is given $boot_watch
# seconds to print its first line from userspace (every scenario prints one
# within seconds of /init starting). A second such boot fails the run.
boot_watch=${BAF_BOOT_WATCH:-240}
run_qemu() {
  : > "$log"
  timeout --foreground "$timeout" qemu-system-x86_64 -accel "$accel" -cpu max,la57=off -smp 2 -m "$mem" \
    -kernel "$kimage" -initrd "$run/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=5 baf.scenario=$scenario" \
    -display none -monitor none -serial "file:$log" -no-reboot &
  local qpid=$! waited=0
  while kill -0 "$qpid" 2>/dev/null; do
    # Kernel lines start with "[ time]"; anything else comes from /init.
    if [ "$waited" -ge "$boot_watch" ] && ! grep -q '^[^[]' "$log"; then
      kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null
      return 125
    fi
    sleep 2; waited=$((waited + 2))
  done
  wait "$qpid"
}
set +e
for attempt in 1 2; do
  run_qemu
  qemu_rc=$?
  [ "$qemu_rc" = 125 ] || break
  say "the VM's userspace printed nothing within ${boot_watch}s (a boot hang before any test); booting once more"
done
[ "$qemu_rc" = 125 ] && echo "the VM hung while booting, twice" >> "$log"
set -e
elapsed=$(( $(date +%s) - start ))

# --- verdict ----------------------------------------------------------------
# Everything the VM printed, minus the machinery lines, is shown.
grep -vE '^BAF-(TEST|DONE|MCAP)' "$log" | sed 's/\r$//' || true
passed=$(grep -c '^BAF-TEST ok ' "$log" || true)
failed=$(grep -c '^BAF-TEST FAILED ' "$log" || true)
grep -E '^BAF-TEST ' "$log" | sed -e 's/\r$//' -e 's/^BAF-TEST ok /  ok      /' -e 's/^BAF-TEST FAILED /  FAILED  /'

problems=()
# baf-record's tests send out every finished file they wrote (record.sh):
# the Python mcap package, an MCAP reader independent of ours, must read
# each one and count baf-record's own numbers of messages per channel.
if grep -q '^BAF-MCAPINFO ' "$log"; then
  mdir="$run/mcap"
  mkdir -p "$mdir"
  # One pass over the log: each file's base64 lines, and its counts.
  tr -d '\r' < "$log" | awk -v d="$mdir" '
    $1 == "BAF-MCAP" { print $3 > (d "/" $2 ".b64") }
    $1 == "BAF-MCAPINFO" { name = $2; sub(/^BAF-MCAPINFO [^ ]* /, ""); print > (d "/" name ".info.json") }'
  for b in "$mdir"/*.b64; do
    base64 -d < "$b" | gunzip > "${b%.b64}" 2>/dev/null || true
    rm -f "$b"
  done
  if mcap_out=$(bash "$REPO/scripts/mcap-check.sh" --vm "$mdir" 2>&1); then
    echo "$mcap_out"
    echo "  ok      the Python mcap package reads every finished file the VM's tests wrote, with baf-record's count of messages per channel"
    passed=$((passed + 1))
  else
    echo "$mcap_out"
    problems+=("the Python mcap package does not read the VM's files as baf-record does (see above; files in $mdir)")
  fi
fi
# Kernel splats fail the run even when every test passed. The boot banner
# "RCU lockdep checking is enabled" is harmless and is not matched.
splat_re='BUG:|WARNING:|Oops|Call Trace|UBSAN:|Kernel panic|KASAN|possible circular locking|inconsistent lock state|possible recursive locking|rust_panic|general protection fault'
if grep -qE "$splat_re" "$log"; then
  problems+=("kernel splat in the VM log: $(grep -m1 -E "$splat_re" "$log" | tr -d '\r')")
fi
if ! grep -q '^BAF-DONE' "$log"; then
  if [ "$qemu_rc" = 124 ]; then
    problems+=("the VM did not finish within ${timeout}s (hang); log: $log")
  else
    problems+=("the VM stopped before the scenario finished (qemu exit $qemu_rc); log: $log")
  fi
fi
# Debian's image must be what ran: its release, as its own build says.
if [ "$variant" = stock ]; then
  want_release=$(cat "$kbuild/include/config/kernel.release")
  grep -q "^kernel: $want_release " "$log" ||
    problems+=("the VM did not run Debian's $want_release (it printed: $(grep -m1 '^kernel: ' "$log" | tr -d '\r'))")
  grep -q 'fanout: loading out-of-tree module taints kernel' "$log" ||
    problems+=("no sign that Debian's $want_release loaded fanout.ko")
fi
for p in "${problems[@]+"${problems[@]}"}"; do
  echo "  FAILED  vm: $p"
  failed=$((failed + 1))
done
echo "vm ($scenario, ${elapsed}s): $passed passed, $failed failed"
if [ "$failed" = 0 ] && [ "$passed" -gt 0 ]; then
  rm -rf "$run"
else
  echo "(run directory kept: $run)"
  exit 1
fi
