#!/usr/bin/env bash
# Build the Rust metadata that a distribution's kernel leaves out, so that
# fanout.ko builds for that very kernel and loads into it.
#
#   kernel-rust.sh [--kver KVER] [--headers DIR] [--source FILE] [--out DIR]
#                  [--root DIR] [--check] [--if-needed] [--install MODULE_SRC]
#   kernel-rust.sh --exec TREE -- COMMAND...
#
# Debian 13's kernels are built with CONFIG_RUST=y, but linux-headers-*
# ships no rust/*.rmeta, without which no Rust module can be compiled. This
# script builds just that metadata, the way the kernel's own build did:
#   - from Debian's linux-source-X.Y of the same version (--source: the
#     package's /usr/src/linux-source-X.Y.tar.xz, or the .deb itself);
#   - with the kernel's own .config and Module.symvers (--headers: its
#     linux-headers-KVER tree, default /usr/src/linux-headers-KVER);
#   - with the compilers its .config names (CONFIG_RUSTC_VERSION_TEXT,
#     CONFIG_BINDGEN_VERSION_TEXT, CONFIG_CC_VERSION_TEXT): Rust symbol
#     names carry a hash of the compiler build, so only the very rustc that
#     built the kernel makes a module whose symbols the kernel exports.
#     On Debian 13 these are the system's own rustc, rust-src, bindgen and
#     gcc-14 packages. Elsewhere --root DIR runs every step in a Debian 13
#     chroot that has them (`--root auto` makes one with debootstrap, about
#     2 minutes and 2 GB, under $BAF_CACHE or ~/.cache/baf).
# Before building anything it checks each of these and, if one does not
# fit, says so in one line and exits 1 (--check: only check). The compiler
# check is exact: it compiles a two-line crate under each Rust crate name the
# kernel exports symbols of and compares the hash in the symbol names with
# the kernel's Module.symvers.
#
# The result, TREE (--out, default /var/lib/baf/kbuild/KVER), is a kernel
# build tree: `make -C kernel KDIR=TREE/build` builds fanout.ko with it, and
# kernel/Makefile uses /var/lib/baf/kbuild/KVER/build by itself (so DKMS
# too) when the kernel's own build tree has no Rust metadata. The path of the
# tree is printed on stdout. --install MODULE_SRC then builds fanout.ko from
# the kernel/ folder MODULE_SRC and installs it for KVER (modules_install,
# depmod). --if-needed does nothing when the kernel's own build tree has its
# Rust metadata (dkms.conf runs it so before every DKMS build, so that a
# kernel upgrade gets its metadata by itself). --exec TREE -- COMMAND runs COMMAND with the tree's compilers (in
# its chroot when it was built with --root), with TREE and the current
# folder visible at the same paths.
#
# Takes 3-6 minutes on 2 cores; a tree that is already complete for the same
# inputs is reused at once.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'kernel-rust: %s\n' "$*" >&2; exit 1; }

RECIPE=1 # bump when this script changes what it builds
TRIXIE_PACKAGES=rustc,rust-src,rustfmt,bindgen,gcc-14,libclang-dev,dwarves,openssl,dkms,make,flex,bison,bc,libelf-dev,libssl-dev,python3,cpio,kmod,xz-utils

kver="" headers="" source="" out="" root="" check_only=0 install_src="" exec_tree="" if_needed=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kver) kver=$2; shift 2 ;;
    --headers) headers=$2; shift 2 ;;
    --source) source=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --check) check_only=1; shift ;;
    --if-needed) if_needed=1; shift ;;
    --install) install_src=$2; shift 2 ;;
    --exec) exec_tree=$2; shift 2; [ "${1:-}" = -- ] && shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see $0 --help)" ;;
  esac
done
cache=${BAF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/baf}

# --- running a command with the right compilers -------------------------------
# in_root ROOT DIR... -- COMMAND...: COMMAND in the chroot ROOT (or here when
# ROOT is empty), each DIR bind-mounted at its own path, in a private mount
# namespace so that nothing is left mounted afterwards.
in_root() {
  local r=$1; shift
  local dirs=()
  while [ "$1" != -- ]; do dirs+=("$1"); shift; done
  shift
  if [ -z "$r" ]; then "$@"; return; fi
  # shellcheck disable=SC2016
  unshare -m -- /bin/sh -c '
    set -e; r=$1; shift; n=$1; shift
    mount --make-rprivate / 2>/dev/null || true
    mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"
    i=0; while [ $i -lt $n ]; do d=$1; shift; mkdir -p "$r$d"; mount --bind "$d" "$r$d"; i=$((i+1)); done
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb /bin/sh -c "cd \"\$0\" 2>/dev/null || cd /; exec \"\$@\"" "$PWD" "$@"
  ' sh "$r" "${#dirs[@]}" "${dirs[@]}" "$@"
}

if [ -n "$exec_tree" ]; then
  exec_tree=$(cd "$exec_tree" && pwd)
  [ -f "$exec_tree/.baf-complete" ] || die "$exec_tree is not a tree this script completed"
  r=$(cat "$exec_tree/root")
  in_root "$r" "$exec_tree" "$PWD" -- "$@"
  exit
fi

# --- the kernel ------------------------------------------------------------------
kver=${kver:-$(uname -r)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
headers_version=""
if [ -z "$headers" ]; then
  headers=/usr/src/linux-headers-$kver
  [ -f "$headers/.config" ] || headers=/lib/modules/$kver/build
fi
case "$headers" in
  *.deb)
    headers_version=$(dpkg-deb -f "$headers" Version)
    dpkg-deb -x "$headers" "$tmp/headers"
    headers="$tmp/headers/usr/src/linux-headers-$kver" ;;
  *)
    pkg=$(dpkg-query -S "$headers/.config" 2>/dev/null | cut -d: -f1 | head -n1 || true)
    [ -n "$pkg" ] && headers_version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true) ;;
esac
[ -f "$headers/.config" ] ||
  die "no build tree for kernel $kver ($headers/.config is missing): install linux-headers-$kver (apt install linux-headers-$kver) or pass --headers DIR"
if [ "$if_needed" = 1 ] && [ -f "$headers/rust/libkernel.rmeta" ]; then
  exit 0 # the kernel's own build tree has its Rust metadata: nothing to do
fi
[ -f "$headers/Module.symvers" ] || die "$headers has no Module.symvers: pass the kernel's full headers with --headers DIR"
config=$headers/.config
cfg() { sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$config"; }
[ "$(cfg CONFIG_RUST)" = y ] ||
  die "kernel $kver was built without CONFIG_RUST=y: no Rust module can load into it; use a kernel with Rust (Debian 13's 7.2 and 7.3 kernels have it)"
want_rustc=$(cfg CONFIG_RUSTC_VERSION_TEXT)
want_bindgen=$(cfg CONFIG_BINDGEN_VERSION_TEXT)
want_cc=$(cfg CONFIG_CC_VERSION_TEXT)
cc=${want_cc%% *}
series=$(echo "$kver" | grep -oE '^[0-9]+\.[0-9]+')
version=$(echo "$kver" | grep -oE '^[0-9]+\.[0-9]+(\.[0-9]+)?')

# --- the compilers: here, or in a Debian 13 chroot -------------------------------
make_root() { # DIR: a Debian 13 chroot with the kernel's compilers
  local dir=$1 mirror
  [ "$(id -u)" = 0 ] || die "making a Debian 13 chroot needs root"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt install debootstrap) and --root auto needs it"
  # The Debian archive this machine's apt already uses.
  mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1)
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt to debootstrap Debian 13 from"
  say "making a Debian 13 chroot with the kernel's compilers in $dir (about 2 minutes)"
  rm -rf "$dir.tmp" && mkdir -p "$(dirname "$dir")"
  debootstrap --variant=minbase --include="$TRIXIE_PACKAGES" trixie "$dir.tmp" "$mirror" > "$dir.log" 2>&1 ||
    die "debootstrap of Debian 13 failed: see $dir.log"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}
if [ "$root" = auto ]; then
  root="$cache/toolchain/trixie-$(echo "$RECIPE $TRIXIE_PACKAGES" | sha256sum | cut -c1-12)"
  [ -x "$root/usr/bin/rustc" ] || [ "$check_only" = 1 ] || make_root "$root"
fi
if [ -n "$root" ]; then
  root=$(cd "$root" 2>/dev/null && pwd) || die "--root $root: no such folder"
fi
tc() { in_root "$root" "$@"; } # tc DIR... -- COMMAND...

have_rustc=$(tc -- rustc --version 2>/dev/null || true)
have_bindgen=$(tc -- bindgen --version 2>/dev/null || true)
have_cc=$(tc -- "$cc" --version 2>/dev/null | head -n1 || true)
where=${root:+in $root}
where=${where:-on this machine}
if [ "$have_rustc" != "$want_rustc" ]; then
  die "kernel $kver was built with '$want_rustc', but the rustc $where is '${have_rustc:-missing}': on Debian 13 install its rustc and rust-src packages; elsewhere pass --root auto (a Debian 13 chroot)"
fi
[ "$have_bindgen" = "$want_bindgen" ] ||
  die "kernel $kver was built with '$want_bindgen', but the bindgen $where is '${have_bindgen:-missing}': on Debian 13 install its bindgen package; elsewhere pass --root auto"
[ "$have_cc" = "$want_cc" ] ||
  die "kernel $kver was built with '$want_cc', but '$cc' $where is '${have_cc:-missing}': install that compiler (Debian 13: gcc-14)"

# The exact check: the crate hashes this rustc gives against the kernel's.
# Two forms: rustc 1.89 split Sized into a hierarchy of lang items.
head='#![feature(no_core, lang_items)] #![no_core] #![allow(internal_features)] pub extern "C" fn baf_probe() {}'
printf '%s\n' "$head" '#[lang = "sized"] pub trait Sized {}' > "$tmp/probe1.rs"
printf '%s\n' "$head" '#[lang = "pointee_sized"] pub trait PointeeSized {}' \
  '#[lang = "meta_sized"] pub trait MetaSized: PointeeSized {}' '#[lang = "sized"] pub trait Sized: MetaSized {}' > "$tmp/probe2.rs"
probe() { # CRATE N: compile probe N as CRATE
  (cd "$tmp" && tc "$tmp" -- env RUSTC_BOOTSTRAP=1 rustc --edition 2021 --crate-type rlib --crate-name "$1" \
    -Csymbol-mangling-version=v0 --emit=obj -o "$tmp/probe-$1.o" "$tmp/probe$2.rs" >/dev/null 2>&1)
}
for crate in $(grep -oE '_R[A-Za-z0-9_]*Cs[0-9A-Za-z]+_[0-9]+[a-z_]+' "$headers/Module.symvers" |
               grep -oE 'Cs[0-9A-Za-z]+_[0-9]+[a-z_]+' | sed -E 's/^Cs[0-9A-Za-z]+_[0-9]+//' | sort -u); do
  kernel_hash=$(grep -oE "Cs[0-9A-Za-z]+_${#crate}${crate}" "$headers/Module.symvers" | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')
  ours=""
  if probe "$crate" 1 || probe "$crate" 2; then
    ours=$(grep -aoE "Cs[0-9A-Za-z]+_${#crate}${crate}" "$tmp/probe-$crate.o" | head -n1 || true)
  fi
  [ "$ours" = "$kernel_hash" ] ||
    die "the Rust symbols cannot match kernel $kver: its crate '$crate' is $kernel_hash, this rustc ('$have_rustc') makes ${ours:-nothing}; only the rustc build that compiled the kernel can (Debian 13's rustc package)"
done

# --- the kernel's source -------------------------------------------------------------
source_version=""
if [ -z "$source" ]; then
  source=/usr/src/linux-source-$series.tar.xz
  [ -f "$source" ] && source_version=$(dpkg-query -W -f='${Version}' "linux-source-$series" 2>/dev/null || true)
fi
[ -f "$source" ] ||
  die "the kernel's source is missing ($source): install linux-source-$series of the kernel's version ($version${headers_version:+, package $headers_version}) or pass --source FILE"
source_pkg=linux-source-$series
case "$source" in *.deb) source_version=$(dpkg-deb -f "$source" Version); source_pkg=$(dpkg-deb -f "$source" Package) ;; esac
if [ -n "$source_version" ] && [ -n "$headers_version" ] &&
  { [ "$source_version" != "$headers_version" ] || [ "$source_pkg" != "linux-source-$series" ]; }; then
  die "the source is $source_pkg $source_version but kernel $kver is $headers_version: install linux-source-$series=$headers_version"
fi
if [ "$check_only" = 1 ]; then
  echo "kernel-rust: kernel $kver can get its Rust metadata: $want_rustc, $want_bindgen and $cc $where, source $source"
  exit 0
fi

# --- build ---------------------------------------------------------------------------------
out=${out:-/var/lib/baf/kbuild/$kver}
mkdir -p "$out" && out=$(cd "$out" && pwd)
key=$( { echo "$RECIPE $kver $source_version $have_rustc $have_bindgen $have_cc"; cat "$config" "$headers/Module.symvers"; } | sha256sum | cut -c1-16)
if [ -f "$out/.baf-complete" ] && [ "$(cat "$out/.baf-complete")" = "$key" ]; then
  # The same compilers, maybe from another chroot of them: --exec uses this one.
  if [ -n "$root" ]; then echo "$root" > "$out/root"; fi
  if [ -z "$install_src" ]; then echo "$out"; exit 0; fi
fi
if [ ! -f "$out/.baf-complete" ] || [ "$(cat "$out/.baf-complete")" != "$key" ]; then
  rm -rf "$out/source" "$out/build" "$out/.baf-complete"
  mkdir -p "$out/source" "$out/build"
  say "unpacking $(basename "$source")"
  case "$source" in
    *.deb) dpkg-deb --fsys-tarfile "$source" | tar -xO --wildcards '*.tar.xz' | tar -xJ -C "$out/source" --strip-components=1 ;;
    *) tar -xJf "$source" -C "$out/source" --strip-components=1 ;;
  esac
  src_version=$(make -s -C "$out/source" kernelversion 2>/dev/null)
  [ "$src_version" = "$version" ] || die "$source holds Linux $src_version, but kernel $kver is $version"
  cp "$config" "$out/build/.config"
  kmake=(make -s -C "$out/source" O="$out/build" ARCH=x86 KERNELRELEASE="$kver" CC="$cc" HOSTCC="$cc")
  tc "$out" -- "${kmake[@]}" olddefconfig >&2
  # olddefconfig must keep the kernel's configuration as it is: a changed
  # option means another compiler or source, and a module that may not load.
  if ! diff <(grep '^CONFIG_' "$config" | sort) <(grep '^CONFIG_' "$out/build/.config" | sort) > "$tmp/config.diff"; then
    die "the kernel's .config changes with this source and these compilers ($(grep -m1 '^[<>]' "$tmp/config.diff")): not the kernel's own build"
  fi
  say "building the Rust metadata of $kver (3-6 minutes)"
  tc "$out" -- "${kmake[@]}" -j"$(nproc)" modules_prepare >&2
  cp "$headers/Module.symvers" "$out/build/Module.symvers"
  # The kernel's BTF, for the module's own (as Debian's headers give it).
  if [ -f "$headers/vmlinux" ]; then cp "$headers/vmlinux" "$out/build/vmlinux"; fi
  [ -f "$out/build/rust/libkernel.rmeta" ] || die "the build made no rust/libkernel.rmeta"
  [ "$(cat "$out/build/include/config/kernel.release")" = "$kver" ] || die "the tree's release is not $kver"
  # The proof: every Rust symbol the kernel exports is defined, by the same
  # name, in the Rust objects just built.
  tc "$out" -- nm --defined-only "$out"/build/rust/*.o 2>/dev/null | awk '$3 ~ /^_R/ { print $3 }' | sort -u > "$tmp/ours"
  awk '$2 ~ /^_R/ { print $2 }' "$headers/Module.symvers" | sort -u > "$tmp/kernel"
  missing=$(comm -13 "$tmp/ours" "$tmp/kernel" | wc -l)
  [ "$missing" = 0 ] ||
    die "$missing of the kernel's $(wc -l < "$tmp/kernel") Rust exports differ from this build (first: $(comm -13 "$tmp/ours" "$tmp/kernel" | head -n1)): not the kernel's own build"
  echo "$root" > "$out/root"
  echo "$key" > "$out/.baf-complete"
fi

if [ -n "$install_src" ]; then
  install_src=$(cd "$install_src" && pwd)
  say "building fanout.ko for $kver"
  (cd "$install_src" && tc "$out" "$install_src" -- make -s KDIR="$out/build" modules >&2)
  [ "$(id -u)" = 0 ] || die "installing fanout.ko needs root"
  (cd "$install_src" && tc "$out" "$install_src" /lib/modules -- make -s KDIR="$out/build" modules_install >&2)
  depmod -a "$kver"
  say "installed fanout.ko for $kver: modprobe fanout"
fi
echo "$out"
