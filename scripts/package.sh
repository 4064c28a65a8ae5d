#!/usr/bin/env bash
# Debian packages of baf, built with dpkg-deb from what scripts/install.sh
# stages (so a package holds exactly what install.sh --prefix /usr installs):
#
#   scripts/package.sh [--out DIR] [--binaries DIR]
#
#   baf_VERSION_amd64.deb        the four tools (static binaries), man pages,
#                                completions, udev rule, group baf, the
#                                modules-load.d entry and the systemd units
#   fanout-dkms_VERSION_all.deb  fanout.ko's sources for DKMS, with
#                                kernel-rust.sh (the Rust metadata of
#                                Debian's own kernels, as DKMS's PRE_BUILD)
#
# The .debs go to DIR (default: $BAF_CACHE/packages) and their paths are
# printed. --binaries DIR takes pubmsg, submsg, baf-setup, baf-bridge and baf-record from
# DIR; without it they are built static (the VM suite's build, cached).
# Installing: apt install ./baf_*.deb ./fanout-dkms_*.deb (DKMS builds the
# module for every installed kernel that has CONFIG_RUST and headers).
# Purging both leaves nothing behind but /etc/baf, if you made it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out="$CACHE/packages" bins=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --binaries) bins=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see $0 --help)" ;;
  esac
done
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$REPO/kernel/dkms.conf")
if [ -z "$bins" ]; then
  say "building the tools as static binaries (about 8 minutes the first time)"
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --locked \
    --manifest-path "$REPO/Cargo.toml" --target x86_64-unknown-linux-gnu \
    --target-dir "$STATIC_TARGET" -p pubmsg -p submsg -p baf-setup -p baf-bridge -p baf-record
  bins="$STATIC_TARGET/x86_64-unknown-linux-gnu/release"
fi
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

maintainer="baf developers <baf@localhost>"

# --- baf: the tools and the system files ---------------------------------------
t="$work/baf"
bash "$REPO/scripts/install.sh" --destdir "$t" --prefix /usr --binaries "$bins" > "$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; die "install.sh --destdir failed"; }
mkdir -p "$t/DEBIAN"
cat > "$t/DEBIAN/control" <<EOF
Package: baf
Version: $version
Architecture: amd64
Maintainer: $maintainer
Section: utils
Priority: optional
Recommends: fanout-dkms (= $version)
Installed-Size: $(du -sk "$t" | cut -f1)
Description: publish/subscribe built into the Linux kernel: the tools
 pubmsg, submsg, baf-setup, baf-bridge and baf-record for fanout.ko topics
 (/dev/baf/<name>), with man pages, completions, the udev rule and group
 baf, and systemd units: baf-setup.service creates the topics declared in
 /etc/baf/topics at boot, baf-bridge@NAME runs /etc/baf/bridge/NAME.toml.
EOF
cat > "$t/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent group baf >/dev/null; then
    if command -v systemd-sysusers >/dev/null; then systemd-sysusers baf.conf || groupadd --system baf
    else groupadd --system baf; fi
  fi
  if command -v udevadm >/dev/null && [ -d /run/udev ]; then udevadm control --reload || true; fi
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
  # Enabled also where systemd is not running (a machine installed from a
  # chroot or into an image), so the unit runs at its next boot.
  if command -v systemctl >/dev/null; then systemctl enable baf-setup.service || true; fi
fi
EOF
cat > "$t/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && command -v systemctl >/dev/null; then
  if [ -d /run/systemd/system ]; then systemctl disable --now baf-setup.service || true
  else systemctl disable baf-setup.service || true; fi
fi
EOF
cat > "$t/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
# Group baf stays on purge, as a group whose files may still exist must.
EOF
chmod 755 "$t/DEBIAN/postinst" "$t/DEBIAN/prerm" "$t/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zxz --build "$t" "$out/baf_${version}_amd64.deb" >/dev/null

# --- fanout-dkms: the module's sources ----------------------------------------------
k="$work/dkms"
src="$k/usr/src/fanout-$version"
mkdir -p "$src" "$k/DEBIAN"
cp "$REPO"/kernel/*.rs "$REPO"/kernel/Kbuild "$REPO"/kernel/Makefile "$REPO"/kernel/dkms.conf "$src/"
install -m 755 "$REPO/scripts/kernel-rust.sh" "$src/kernel-rust.sh"
cat > "$k/DEBIAN/control" <<EOF
Package: fanout-dkms
Version: $version
Architecture: all
Maintainer: $maintainer
Section: kernel
Priority: optional
Depends: dkms, make
Recommends: baf (= $version)
Installed-Size: $(du -sk "$k" | cut -f1)
Description: publish/subscribe built into the Linux kernel: fanout.ko (DKMS)
 The Rust-for-Linux module of baf, built by DKMS for every installed
 kernel with CONFIG_RUST=y and its headers. For Debian's own kernels, whose
 headers lack the Rust metadata, DKMS first runs kernel-rust.sh, which needs
 linux-source-7.x of the kernel's version, rustc, rust-src, bindgen and
 gcc-14 (Debian 13's own).
EOF
cat > "$k/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
  dkms status -m fanout -v $version | grep -q . || dkms add -m fanout -v $version
  # Every kernel with headers and Rust; one that cannot build is reported
  # and skipped, so that the package still installs.
  for build in /lib/modules/*/build; do
    [ -f "\$build/.config" ] && grep -qx CONFIG_RUST=y "\$build/.config" || continue
    kver=\$(basename "\$(dirname "\$build")")
    dkms install -m fanout -v $version -k "\$kver" ||
      echo "fanout-dkms: fanout.ko did not build for \$kver (see above)" >&2
  done
fi
EOF
cat > "$k/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if dkms status -m fanout -v $version | grep -q .; then dkms remove -m fanout -v $version --all; fi
EOF
chmod 755 "$k/DEBIAN/postinst" "$k/DEBIAN/prerm"
dpkg-deb --root-owner-group -Zxz --build "$k" "$out/fanout-dkms_${version}_all.deb" >/dev/null

echo "$out/baf_${version}_amd64.deb"
echo "$out/fanout-dkms_${version}_all.deb"
