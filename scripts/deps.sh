#!/usr/bin/env bash
# Install everything the kernel build, the VM tests and the tools need on a
# Debian 12 (bookworm) machine, or a derivative built on bookworm (run as
# root). Idempotent: each step is skipped when its result is already present,
# so a warm run costs a few seconds and prints nothing.
#
# It adds bookworm-backports and trixie-backports from the Debian archive the
# machine's apt sources already use (deb822 *.sources or sources.list lines).
# Elsewhere it stops and says what is needed instead. To install baf on a
# normal machine, this script is not needed: see docs/install.md.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BINDGEN_VERSION=0.73.2
SOURCES=/etc/apt/sources.list.d/baf-backports.sources
PIN=/etc/apt/preferences.d/baf-trixie

apt_packages=(
  clang-19 lld-19 llvm-19 libclang-19-dev
  flex bison bc libelf-dev libssl-dev cpio busybox-static make xz-utils
  python3 python3-venv kmod # python3-venv: scripts/mcap-check.sh
  dkms # tests/install-test.sh --kdir builds the module through DKMS
  # The peer benchmark's brokers (packed into the bench VM) and the test
  # suite's smoke test of its harness: tests/vm/peer-bench.sh, scripts/peer-smoke.sh.
  mosquitto mosquitto-clients nats-server
)

elsewhere() {
  cat >&2 <<EOF
error: scripts/deps.sh supports Debian 12 (bookworm) and derivatives built on
it; this machine is: $1.
What the build and the VM tests need, for your own package manager:
  clang, lld and llvm 19 with libclang 19; flex, bison, bc, libelf and
  OpenSSL headers, cpio, a static busybox, make, xz, python3, kmod,
  mosquitto with its clients, nats-server; QEMU
  (qemu-system-x86_64); rustup with the stable toolchain and rust-src;
  bindgen-cli $BINDGEN_VERSION (cargo install --locked bindgen-cli);
  and Debian's linux-source-7.3 package, which scripts/kernel.sh downloads
  with apt-get: that part needs Debian, so the simplest way is a Debian
  bookworm container or VM (QEMU runs with TCG, no /dev/kvm needed).
To install baf itself on a normal machine instead, see docs/install.md.
EOF
  exit 1
}

# --- which system -----------------------------------------------------------
[ -r /etc/os-release ] || elsewhere "unknown (no /etc/os-release)"
os_id=$(. /etc/os-release; echo "${ID:-}")
os_like=$(. /etc/os-release; echo "${ID_LIKE:-}")
os_name=$(. /etc/os-release; echo "${PRETTY_NAME:-${ID:-unknown}}")
# A derivative names its Debian base in DEBIAN_CODENAME (LMDE, for one).
codename=$(. /etc/os-release; echo "${DEBIAN_CODENAME:-${VERSION_CODENAME:-}}")
case " $os_id $os_like " in *" debian "*) ;; *) elsewhere "$os_name" ;; esac
if [ -z "$codename" ] && [ "$os_id" = debian ]; then
  # Minimal images may lack VERSION_CODENAME; debian_version still says it.
  case $(cat /etc/debian_version 2>/dev/null) in 12.*|bookworm*) codename=bookworm ;; esac
fi
[ "$codename" = bookworm ] || elsewhere "$os_name (release ${codename:-unknown}; bookworm is needed)"

# --- the Debian archive this machine already uses ----------------------------
# Prints "URI<TAB>SIGNED-BY" of the first enabled deb source for $codename
# itself (not -security, -updates or backports), deb822 files first.
archive_from_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    if [ ! -f "$f" ] || [ "$f" = "$SOURCES" ]; then continue; fi
    awk -v cn="$codename" '
      function flush() {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" &&
            (" " suites " ") ~ ("[ \t]" cn "[ \t]")) {
          split(uris, u, /[ \t]+/); print u[1] "\t" signed; found = 1; exit
        }
        types = uris = suites = signed = enabled = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { next }
      {
        key = tolower($1); sub(/:$/, "", key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
        if (key == "types") types = val
        else if (key == "uris") uris = val
        else if (key == "suites") suites = val
        else if (key == "signed-by" && val ~ /^\//) signed = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { if (!found) flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v cn="$codename" '
      $1 == "deb" {
        i = 2; signed = ""
        if ($2 ~ /^\[/) {
          for (; i <= NF; i++) {
            if ($i ~ /^\[?signed-by=/) { s = $i; sub(/^\[?signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
            if ($i ~ /\]$/) { i++; break }
          }
        }
        if ($(i + 1) == cn) { print $i "\t" signed; exit }
      }' "$f"
  done
}
found=$(archive_from_sources | head -n1)
archive=${found%%$'\t'*}
signed_by=${found#*$'\t'}
[ -n "$archive" ] || die "no apt source for Debian $codename found in /etc/apt (sources.list or *.sources); add your Debian mirror for '$codename main' first"
[ -n "$signed_by" ] || signed_by=/usr/share/keyrings/debian-archive-keyring.gpg

# bookworm-backports: a QEMU new enough, matching the preinstalled qemu-utils.
# trixie-backports: only to download linux-source-7.2 and 7.3 and Debian's own
# kernel images and headers of the same versions (pinned low, so nothing is
# ever installed from it).
want_sources="Types: deb
URIs: $archive
Suites: bookworm-backports trixie-backports
Components: main
Signed-By: $signed_by"
want_pin="Package: *
Pin: release n=trixie-backports
Pin-Priority: 100"

need_apt=0
[ "$(cat "$SOURCES" 2>/dev/null)" = "$want_sources" ] || need_apt=1
[ "$(cat "$PIN" 2>/dev/null)" = "$want_pin" ] || need_apt=1
for p in "${apt_packages[@]}" qemu-system-x86 debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_apt=1
done

if [ "$need_apt" = 1 ]; then
  [ "$(id -u)" = 0 ] || die "Debian packages are missing: run scripts/deps.sh as root"
  say "adding apt sources $SOURCES (bookworm-backports, trixie-backports) and the pin $PIN (trixie-backports packages only when asked for by name)"
  say "installing Debian packages from $archive (about 2-3 minutes cold)"
  printf '%s\n' "$want_sources" > "$SOURCES"
  printf '%s\n' "$want_pin" > "$PIN"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  # debootstrap: a Debian 13 chroot with the compilers of Debian's own
  # kernels (scripts/kernel-rust.sh --root auto); bookworm-backports' knows trixie.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 debootstrap >/dev/null
fi

command -v rustup >/dev/null ||
  die "rustup is not installed: install it (see rustup's site, or Debian's rustup package) and run this again"
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
