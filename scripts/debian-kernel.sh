#!/usr/bin/env bash
# Debian's own kernel image of a series, unmodified, with the Rust metadata
# that fanout.ko needs built for it, for the VM tests:
#   scripts/debian-kernel.sh SERIES    prints two lines: the build tree
#                                      (scripts/kernel-rust.sh's TREE) and
#                                      the kernel image (vmlinuz)
# SERIES is 7.2 or 7.3: the linux-image of the same version as the
# linux-source-SERIES package that scripts/kernel.sh uses, both from
# Debian 13's trixie-backports (which scripts/deps.sh adds). The compilers
# that built that kernel come from a Debian 13 chroot (kernel-rust.sh --root
# auto). Everything is cached under $BAF_CACHE, keyed by the package
# versions: a warm run returns at once.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

series=${1:-7.3}
case "$series" in 7.2|7.3) ;; *) die "usage: $0 7.2|7.3" ;; esac
apt_get() { apt-get -q -o APT::Sandbox::User=root "$@"; }

# --- the packages: source, image and headers of one version -----------------
mkdir -p "$CACHE/src"
srcdeb=$(ls "$CACHE/src/linux-source-${series}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$srcdeb" ]; then
  say "downloading linux-source-$series"
  (cd "$CACHE/src" && apt_get download "linux-source-$series" >/dev/null) ||
    die "could not download linux-source-$series: run scripts/deps.sh first (it adds trixie-backports)"
  srcdeb=$(ls "$CACHE/src/linux-source-${series}"_*.deb | sort -V | tail -n1)
fi
debver=$(dpkg-deb -f "$srcdeb" Version)           # e.g. 7.2.12-1~bpo13+1
kver="${debver%%-*}+deb13-amd64"                    # e.g. 7.2.12+deb13-amd64
dir="$CACHE/debian/$kver-$debver"
mkdir -p "$dir"
for pkg in "linux-binary-$kver" "linux-headers-$kver"; do
  if ! ls "$dir/${pkg}"_*.deb >/dev/null 2>&1; then
    say "downloading $pkg $debver"
    (cd "$dir" && apt_get download "$pkg=$debver" >/dev/null) ||
      die "could not download $pkg=$debver from trixie-backports (run scripts/deps.sh first)"
  fi
done
vmlinuz="$dir/vmlinuz"
if [ ! -f "$vmlinuz" ]; then
  rm -rf "$dir/x" && dpkg-deb -x "$(ls "$dir/linux-binary-$kver"_*.deb)" "$dir/x"
  mv "$dir/x/usr/lib/modules/$kver/vmlinuz" "$vmlinuz" && rm -rf "$dir/x"
fi

# --- the Rust metadata, with the kernel's own compilers -------------------------
tree=$(bash "$REPO/scripts/kernel-rust.sh" --kver "$kver" \
  --headers "$(ls "$dir/linux-headers-$kver"_*.deb)" --source "$srcdeb" \
  --root auto --out "$dir/tree")
# The initramfs packer of that source (a host tool the metadata build skips).
[ -x "$tree/gen_init_cpio" ] || cc -O2 -o "$tree/gen_init_cpio" "$tree/source/usr/gen_init_cpio.c"
echo "$tree"
echo "$vmlinuz"
