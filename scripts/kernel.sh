#!/usr/bin/env bash
# Build the VM kernel from Debian's linux-source package, outside the repo.
#   scripts/kernel.sh [debug|lite|kcsan|bench] [SERIES]   prints the build directory
# debug (the default) adds lockdep, KASAN, atomic-sleep and delayed kobject
# release checks for tests; lite has the same checks but KASAN (a faster
# build); kcsan is lite plus the KCSAN data-race detector (KCSAN and KASAN
# exclude each other); bench is the kernel without them, for benchmarks. SERIES is the kernel series (Debian's linux-source-SERIES):
# 7.3 (the default, or $BAF_KERNEL) or 7.2.
# The build directory is keyed by everything that shapes the kernel, so a warm
# run returns at once and a changed input gets a fresh build.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

variant=${1:-debug}
series=${2:-${BAF_KERNEL:-7.3}}
case "$variant" in debug|lite|kcsan|bench) ;; *) die "usage: $0 [debug|lite|kcsan|bench] [7.3|7.2]" ;; esac
case "$series" in 7.2|7.3) ;; *) die "kernel series $series is not supported (7.2 and 7.3 are)" ;; esac

SRC_PKG=linux-source-$series
RECIPE=1 # bump when this script changes how the kernel is built

# --- build directory, keyed by its inputs ----------------------------------
# build_dir DEBVER: sets $build (and $frags, the config fragments).
build_dir() {
  frags=("$REPO/kernel/config/base.config")
  [ "$variant" = debug ] && frags+=("$REPO/kernel/config/debug.config")
  if [ "$variant" = lite ] || [ "$variant" = kcsan ]; then
    # The debug checks without KASAN, which doubles the build time.
    grep -v KASAN "$REPO/kernel/config/debug.config" > "$CACHE/lite.config"
    frags+=("$CACHE/lite.config")
  fi
  [ "$variant" = kcsan ] && frags+=("$REPO/kernel/config/kcsan.config")
  key=$( {
    echo "$RECIPE $1"
    cat "${frags[@]}"
    rustc --version; bindgen --version; clang-19 --version | head -n1
  } | sha256sum | cut -c1-16)
  build="$CACHE/kernel-$1-$variant-$key"
}

# --- source -----------------------------------------------------------------
mkdir -p "$CACHE/src"
# Built already: no lock, no unpacking.
deb=$(ls "$CACHE/src/${SRC_PKG}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
if [ -n "$deb" ]; then
  build_dir "$(dpkg-deb -f "$deb" Version)"
  if [ -f "$build/.baf-complete" ]; then echo "$build"; exit 0; fi
fi
# One build of a series at a time: a second run (a demo beside the tests)
# waits here instead of unpacking the source under the first one's feet.
exec 9>"$CACHE/src/.$SRC_PKG.lock"
if ! flock -n 9; then
  say "waiting for another build of the $series kernel to finish"
  flock 9
fi
deb=$(ls "$CACHE/src/${SRC_PKG}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$deb" ]; then
  say "downloading $SRC_PKG"
  (cd "$CACHE/src" && apt-get download -q -o APT::Sandbox::User=root "$SRC_PKG" >/dev/null) ||
    die "could not download $SRC_PKG: run scripts/deps.sh first (it adds trixie-backports)"
  deb=$(ls "$CACHE/src/${SRC_PKG}"_*.deb | sort -V | tail -n1)
fi
debver=$(dpkg-deb -f "$deb" Version)
src="$CACHE/src/$SRC_PKG-$debver"
if [ ! -f "$src/.baf-unpacked" ]; then
  say "unpacking $SRC_PKG $debver"
  rm -rf "$src" "$src.tmp" && mkdir -p "$src.tmp"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$src.tmp" --wildcards '*.tar.xz'
  tarball=$(find "$src.tmp" -name '*.tar.xz' | head -n1)
  mkdir -p "$src" && tar -xJf "$tarball" -C "$src" --strip-components=1
  rm -rf "$src.tmp" && touch "$src/.baf-unpacked"
fi
build_dir "$debver"

if [ -f "$build/.baf-complete" ]; then echo "$build"; exit 0; fi

say "building the $variant $series kernel in $build (about 10-17 minutes cold; progress below)"
rm -rf "$build" && mkdir -p "$build"
mk() { make -s -C "$src" O="$build" LLVM=-19 "$@"; }
mk rustavailable >&2 || die "the Rust toolchain is not usable for this kernel (see above)"
mk tinyconfig >/dev/null
(cd "$src" && KCONFIG_CONFIG="$build/.config" scripts/kconfig/merge_config.sh -m -O "$build" "$build/.config" "${frags[@]}" >/dev/null)
mk olddefconfig >/dev/null
# olddefconfig silently drops options whose dependencies fail (CONFIG_RUST
# above all): insist on every one we asked for.
missing=0
for line in $(grep -hE '^CONFIG_[A-Z0-9_]+=' "${frags[@]}"); do
  grep -qx "$line" "$build/.config" || { echo "config lost: $line" >&2; missing=1; }
done
for opt in $(grep -hoE '^# CONFIG_[A-Z0-9_]+ is not set' "${frags[@]}" | awk '{print $2}'); do
  grep -q "^$opt=" "$build/.config" && { echo "config forced on: $opt" >&2; missing=1; }
done
[ "$missing" = 0 ] || die "kernel config did not keep the requested options (run 'make rustavailable' in $src)"
# Show progress (a line per 1000 files built, with the minutes so far) and
# every warning or error, not the thousands of CC lines.
start=$(date +%s)
make -C "$src" O="$build" LLVM=-19 -j"$(nproc)" all 2>&1 | awk -v start="$start" '
  /^make(\[[0-9]+\])?: (Entering|Leaving) directory/ { next }
  /^  [A-Z0-9_]+ / { n++; if (n % 1000 == 0) { "date +%s" | getline now; close("date +%s");
                 printf "    kernel: %d files built, %d min\n", n, (now - start) / 60 > "/dev/stderr"; fflush("/dev/stderr") } next }
  { print > "/dev/stderr" }'
mk modules_prepare >&2
say "kernel built in $((($(date +%s) - start) / 60)) min"
touch "$build/.baf-complete"
echo "$build"
