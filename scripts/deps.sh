#!/usr/bin/env bash
# Install everything the kernel build, the VM tests and the tools need on a
# Debian bookworm machine (run as root). Idempotent: each step is skipped when
# its result is already present, so a warm run costs a few seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BINDGEN_VERSION=0.73.2

apt_packages=(
  clang-19 lld-19 llvm-19 libclang-19-dev
  flex bison bc libelf-dev libssl-dev cpio busybox-static make xz-utils
  python3
)

need_apt=0
[ -f /etc/apt/sources.list.d/baf-backports.sources ] || need_apt=1
for p in "${apt_packages[@]}" qemu-system-x86; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_apt=1
done

if [ "$need_apt" = 1 ]; then
  say "installing Debian packages"
  # bookworm-backports: a QEMU new enough, matching the preinstalled qemu-utils.
  # trixie-backports: only to download linux-source-7.3 (pinned low, so nothing
  # else is ever installed from it).
  cat > /etc/apt/sources.list.d/baf-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/baf-trixie <<'PIN'
Package: *
Pin: release n=trixie-backports
Pin-Priority: 100
PIN
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  say "adding rustup component rust-src"
  rustup component add rust-src
fi
if ! rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-gnu; then
  rustup target add x86_64-unknown-linux-gnu
fi

if ! bindgen --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
  say "installing bindgen-cli $BINDGEN_VERSION (about 2 minutes)"
  cargo install --quiet --locked bindgen-cli --version "$BINDGEN_VERSION"
fi
