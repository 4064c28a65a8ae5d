#!/usr/bin/env bash
# Host test of the install path, without root and without touching the
# system: scripts/install.sh --destdir into a temporary directory, then the
# layout (binaries, man pages, completions, udev rule, sysusers file, DKMS
# sources), the udev rule's syntax, dkms.conf, and kernel/Makefile's
# checks. Ends with "install test: N passed, N failed".
#
#   tests/install-test.sh [--kdir KERNEL_BUILD_TREE]
#
# --kdir: also build fanout.ko with DKMS (dkms add + build, in temporary
# DKMS trees) against that Rust-enabled kernel build tree, e.g.
# "$(scripts/kernel.sh)"; needs the dkms package.
set -uo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

kdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kdir) kdir=$2; shift 2 ;;
    *) die "unknown argument: $1 (see the header of $0)" ;;
  esac
done

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  ok      $*"; }
bad() { failed=$((failed + 1)); echo "  FAILED  $*"; }
check() { # NAME COMMAND...: passes when the command exits 0
  local name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/root"
prefix=/usr/local
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n1)

# --- install into DESTDIR -----------------------------------------------------
say "install test: building the tools (debug) and installing into a temporary DESTDIR"
cargo build --quiet --manifest-path "$REPO/Cargo.toml" -p pubmsg -p submsg -p baf-setup -p baf-bridge -p baf-record ||
  die "cargo build failed"
bins="$REPO/target/debug"
if bash "$REPO/scripts/install.sh" --destdir "$dest" --prefix "$prefix" --binaries "$bins" --dkms \
  > "$tmp/install.log" 2>&1; then
  ok "scripts/install.sh --destdir --dkms"
else
  cat "$tmp/install.log"; bad "scripts/install.sh --destdir --dkms"
fi

# --- layout ---------------------------------------------------------------------
for t in pubmsg submsg baf-setup baf-bridge baf-record; do
  f="$dest$prefix/bin/$t"
  check "$t: executable in bin/" test -x "$f"
  # shellcheck disable=SC2016
  check "$t: installed binary runs (--version)" bash -c '"$1" --version >/dev/null' _ "$f"
  check "$t: man page" grep -q "^\.TH $t 1" "$dest$prefix/share/man/man1/$t.1"
  b="$dest$prefix/share/bash-completion/completions/$t"
  # shellcheck disable=SC2016
  check "$t: bash completion parses and registers" \
    bash -c 'bash -n "$1" && grep -q "complete .* $2\$" "$1"' _ "$b" "$t"
  check "$t: zsh completion" grep -qx "#compdef $t" "$dest$prefix/share/zsh/site-functions/_$t"
  check "$t: fish completion" grep -q "^complete -c $t " "$dest$prefix/share/fish/vendor_completions.d/$t.fish"
done
rules="$dest/etc/udev/rules.d/99-baf.rules"
sysusers="$dest/etc/sysusers.d/baf.conf"
check "udev rule in /etc/udev/rules.d" test -f "$rules"
check "sysusers file in /etc/sysusers.d" test -f "$sysusers"
check "the udev rule is the one the NixOS module ships" cmp -s "$rules" "$REPO/nixos/99-baf.rules"
src="$dest/usr/src/fanout-$version"
dkms_files() { (cd "$1" && ls) | sort; }
check "DKMS sources in /usr/src/fanout-$version: kernel/*.rs, Kbuild, Makefile, dkms.conf, kernel-rust.sh" \
  diff <(dkms_files "$src") <( (cd "$REPO/kernel" && ls ./*.rs Kbuild Makefile dkms.conf; echo kernel-rust.sh) | sed 's|^\./||' | sort)
check "kernel-rust.sh (dkms.conf's PRE_BUILD) is executable" test -x "$src/kernel-rust.sh"
unexpected=$(cd "$dest" && find . -type f | grep -vE "^\./(usr/local/(bin|share/(man/man1|bash-completion/completions|zsh/site-functions|fish/vendor_completions\.d))/[^/]+|etc/udev/rules\.d/99-baf\.rules|etc/(sysusers|modules-load|modprobe)\.d/baf\.conf|etc/systemd/system/baf-(setup|bridge@)\.service|usr/src/fanout-$version/[^/]+)$")
check "nothing else installed" test -z "$unexpected"
[ -z "$unexpected" ] || echo "$unexpected"

# The boot-time files and the units: fanout loads at boot with named topics
# only; the units run the installed binaries and verify (systemd-analyze).
check "modules-load.d loads fanout, modprobe.d sets devices=0" sh -c \
  "grep -qx fanout '$dest/etc/modules-load.d/baf.conf' && grep -qx 'options fanout devices=0' '$dest/etc/modprobe.d/baf.conf'"
units="$dest/etc/systemd/system"
check "baf-setup.service applies /etc/baf/topics with the installed baf-setup" \
  grep -qx "ExecStart=$prefix/bin/baf-setup apply --file /etc/baf/topics --allow-empty" "$units/baf-setup.service"
check "baf-bridge@.service runs the installed baf-bridge with /etc/baf/bridge/%i.toml, hardened" sh -c \
  "grep -qx 'ExecStart=$prefix/bin/baf-bridge --config /etc/baf/bridge/%i.toml' '$units/baf-bridge@.service' &&
   grep -qx 'DynamicUser=yes' '$units/baf-bridge@.service' && grep -qx 'ProtectSystem=strict' '$units/baf-bridge@.service' &&
   grep -qx 'NoNewPrivileges=yes' '$units/baf-bridge@.service' && grep -qx 'NoNewPrivileges=yes' '$units/baf-setup.service'"
units_verify() { # systemd-analyze verify, with the installed binaries where the units name them
  command -v systemd-analyze >/dev/null || { echo "(no systemd-analyze: skipped)"; return 0; }
  local root="$tmp/verify" out
  mkdir -p "$root$prefix/bin" && cp "$dest$prefix/bin/"* "$root$prefix/bin/"
  sed "s|$prefix/bin|$root$prefix/bin|g" "$units/baf-setup.service" > "$tmp/baf-setup.service"
  sed "s|$prefix/bin|$root$prefix/bin|g" "$units/baf-bridge@.service" > "$tmp/baf-bridge@.service"
  cp "$tmp/baf-bridge@.service" "$tmp/baf-bridge@x.service"
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/baf-setup.service" "$tmp/baf-bridge@x.service" 2>&1 |
        grep -v 'Cannot add dependency job\|network-online.target\|systemd-udev-trigger\|Failed to prepare filename\|not found\|Unit .* not' || true)
  [ -z "$out" ] || { echo "$out"; return 1; }
}
check "systemd-analyze verify: both units are valid" units_verify

# PREFIX=/usr puts the system files where packages put them.
if bash "$REPO/scripts/install.sh" --destdir "$tmp/pkg" --prefix /usr --binaries "$bins" >/dev/null 2>&1 &&
  [ -f "$tmp/pkg/usr/lib/udev/rules.d/99-baf.rules" ] && [ -f "$tmp/pkg/usr/lib/sysusers.d/baf.conf" ] &&
  [ -f "$tmp/pkg/usr/lib/systemd/system/baf-setup.service" ] && [ -f "$tmp/pkg/usr/lib/modules-load.d/baf.conf" ] &&
  grep -q '^ExecStart=/usr/bin/baf-setup ' "$tmp/pkg/usr/lib/systemd/system/baf-setup.service" &&
  [ -x "$tmp/pkg/usr/bin/pubmsg" ] && [ -x "$tmp/pkg/usr/bin/baf-bridge" ] && [ ! -e "$tmp/pkg/etc" ]; then
  ok "--prefix /usr: /usr/bin, /usr/lib/{udev/rules.d,sysusers.d,systemd/system,modules-load.d}"
else
  bad "--prefix /usr: /usr/bin, /usr/lib/{udev/rules.d,sysusers.d,systemd/system,modules-load.d}"
fi

# --uninstall removes everything the same options installed, and the
# folders that leaves empty; a file of someone else's in them stays.
uninstall_clean() { # PREFIX
  local d="$tmp/un-${1//\//_}" left
  bash "$REPO/scripts/install.sh" --destdir "$d" --prefix "$1" --binaries "$bins" --dkms > "$tmp/un.log" 2>&1 ||
    { cat "$tmp/un.log"; return 1; }
  local rules; rules=$(cd "$d" && find . -name 99-baf.rules)
  echo keep > "$d/$(dirname "$rules")/50-other.rules"
  bash "$REPO/scripts/install.sh" --uninstall --destdir "$d" --prefix "$1" --dkms > "$tmp/un.log" 2>&1 ||
    { cat "$tmp/un.log"; return 1; }
  left=$(cd "$d" && find . -mindepth 1 | sort)
  [ "$left" = "$(printf '%s\n' "$(dirname "$rules")" "$rules" | sed 's|/99-baf.rules$|/50-other.rules|' | sort -u |
    awk -F/ '{ p = $1; for (i = 2; i <= NF; i++) { p = p "/" $i; print p } }' | sort -u)" ] ||
    { echo "left after --uninstall:"; echo "$left"; return 1; }
}
check "--uninstall --dkms (prefix /usr/local) removes every file it installed, and only those" uninstall_clean /usr/local
check "--uninstall --dkms (prefix /usr) removes every file it installed, and only those" uninstall_clean /usr

# --dry-run changes nothing, even without DESTDIR, and says what it would do.
mkdir -p "$tmp/dry"
dry_out=$(cd "$tmp/dry" && bash "$REPO/scripts/install.sh" --dry-run --destdir "$tmp/dry" --binaries "$bins" --dkms 2>&1)
if [ -z "$(ls -A "$tmp/dry")" ] && echo "$dry_out" | grep -q "99-baf.rules" &&
  echo "$dry_out" | grep -q "pubmsg --generate man"; then
  ok "--dry-run lists the actions and changes nothing"
else
  echo "$dry_out"; bad "--dry-run lists the actions and changes nothing"
fi

# --- the udev rule ------------------------------------------------------------
# udevadm verify (systemd 254 and later) when there is one; else a strict
# check of each line: comma-separated KEY[{attr}]OP"value" pairs with keys
# udev knows, match operators on match keys, at least one assignment.
udev_lines_ok() {
  local line pair key op rc=0 assigns
  local match_keys='ACTION|DEVPATH|KERNEL|KERNELS|NAME|SYMLINK|SUBSYSTEM|SUBSYSTEMS|DRIVER|DRIVERS|ATTR|ATTRS|SYSCTL|ENV|CONST|TAG|TAGS|TEST|PROGRAM|RESULT'
  local assign_keys='NAME|SYMLINK|OWNER|GROUP|MODE|SECLABEL|ATTR|SYSCTL|ENV|TAG|RUN|LABEL|GOTO|IMPORT|OPTIONS'
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    assigns=0
    while [ -n "$line" ]; do
      if [[ $line =~ ^[[:space:]]*([A-Z]+)(\{[^}]+\})?(==|!=|\+=|-=|:=|=)\"([^\"]*)\"[[:space:]]*(,(.*))?$ ]]; then
        key=${BASH_REMATCH[1]} op=${BASH_REMATCH[3]}
        pair="$key$op\"${BASH_REMATCH[4]}\""
        line=${BASH_REMATCH[6]:-}
        if [ "$op" = "==" ] || [ "$op" = "!=" ]; then
          [[ $key =~ ^($match_keys)$ ]] || { echo "not a match key: $pair"; rc=1; }
        else
          [[ $key =~ ^($assign_keys)$ ]] || { echo "not an assignment key: $pair"; rc=1; }
          assigns=$((assigns + 1))
        fi
        if [ -n "${BASH_REMATCH[5]:-}" ] && [ -z "$line" ]; then echo "trailing comma"; rc=1; fi
      else
        echo "bad syntax: $line"; rc=1; break
      fi
    done
    [ "$assigns" -gt 0 ] || { echo "a rule without an assignment"; rc=1; }
  done < "$1"
  return "$rc"
}
check "udev rule: every line well-formed" udev_lines_ok "$rules"
if command -v udevadm >/dev/null && udevadm verify --help >/dev/null 2>&1; then
  check "udev rule: udevadm verify" udevadm verify --no-style "$rules"
fi
check "udev rule: matches baf-control, gives it group baf, mode 0660" \
  grep -qx 'KERNEL=="baf-control", GROUP="baf", MODE="0660"' "$rules"
# The checker itself must refuse bad rules.
printf 'KERNEL=="baf-control" GROUP="baf"\n' > "$tmp/bad1.rules"
printf 'KERNEL="baf-control", GROUP="baf"\n' > "$tmp/bad2.rules"
printf 'KERNEL=="baf-control", GROUP=="baf"\n' > "$tmp/bad3.rules"
refuses() { ! udev_lines_ok "$1" >/dev/null; }
for b in 1 2 3; do check "udev rule checker refuses bad rule $b" refuses "$tmp/bad$b.rules"; done

# --- group baf ------------------------------------------------------------------
check "sysusers file declares group baf" grep -qxE 'g[[:space:]]+baf[[:space:]]+-' "$sysusers"
if command -v systemd-sysusers >/dev/null; then
  # Applied to the staged root: creates the group in DESTDIR/etc/group only.
  # shellcheck disable=SC2016
  check "systemd-sysusers --root creates group baf" \
    bash -c 'systemd-sysusers --root="$1" >/dev/null 2>&1 && grep -q "^baf:x:[0-9]*:" "$1/etc/group"' _ "$dest"
fi

# --- dkms.conf --------------------------------------------------------------------
dkms_conf_ok() {
  (
    # shellcheck disable=SC2034 # used by dkms.conf
    kernel_source_dir=/KSRC kernelver=7.3.4-test
    # shellcheck disable=SC1090
    . "$1"
    [ "$PACKAGE_NAME" = fanout ] || { echo "PACKAGE_NAME=$PACKAGE_NAME"; exit 1; }
    [ "$PACKAGE_VERSION" = "$version" ] || { echo "PACKAGE_VERSION=$PACKAGE_VERSION, Cargo.toml says $version"; exit 1; }
    [ "${BUILT_MODULE_NAME[0]}" = fanout ] || { echo "BUILT_MODULE_NAME[0]=${BUILT_MODULE_NAME[0]}"; exit 1; }
    case "${DEST_MODULE_LOCATION[0]}" in /kernel*|/updates*|/extra*) ;; *) echo "DEST_MODULE_LOCATION"; exit 1 ;; esac
    [ "$AUTOINSTALL" = yes ] || { echo "AUTOINSTALL=$AUTOINSTALL"; exit 1; }
    [ "$BUILD_EXCLUSIVE_CONFIG" = CONFIG_RUST ] || { echo "BUILD_EXCLUSIVE_CONFIG"; exit 1; }
    case "${MAKE[0]}" in "make KDIR=/KSRC "*modules) ;; *) echo "MAKE[0]=${MAKE[0]}"; exit 1 ;; esac
    case "$CLEAN" in "make KDIR=/KSRC "*clean) ;; *) echo "CLEAN=$CLEAN"; exit 1 ;; esac
    [ "$PRE_BUILD" = "kernel-rust.sh --kver 7.3.4-test --headers /KSRC --if-needed" ] || { echo "PRE_BUILD=$PRE_BUILD"; exit 1; }
  )
}
check "dkms.conf: name, version (= Cargo.toml), module, AUTOINSTALL, MAKE, PRE_BUILD" dkms_conf_ok "$REPO/kernel/dkms.conf"
# shellcheck disable=SC2016
check "dkms.conf: LLVM from the environment reaches MAKE" \
  bash -c 'kernel_source_dir=/K kernelver=7.3.4-test LLVM=-19; . "$1"; [ "${MAKE[0]}" = "make KDIR=/K LLVM=-19 modules" ]' _ "$REPO/kernel/dkms.conf"

# --- kernel/Makefile refuses unusable kernels with a clear message ---------------
fake="$tmp/fake-kernel"
mkdir -p "$fake"
msg=$(make -s -C "$REPO/kernel" KDIR="$tmp/none" check 2>&1)
check "Makefile: a missing build tree is named" grep -q "no kernel build tree at $tmp/none" <<<"$msg"
printf 'CONFIG_MODULES=y\n# CONFIG_RUST is not set\n' > "$fake/.config"
msg=$(make -s -C "$REPO/kernel" KDIR="$fake" check 2>&1)
check "Makefile: a kernel without CONFIG_RUST=y is refused" grep -q "built without CONFIG_RUST=y" <<<"$msg"
printf 'CONFIG_RUST=y\nCONFIG_CLANG_VERSION=190107\nCONFIG_RUSTC_VERSION_TEXT="rustc 0.0.1 (none)"\n' > "$fake/.config"
mkdir -p "$fake/rust" && : > "$fake/rust/libkernel.rmeta"
msg=$(make -s -C "$REPO/kernel" KDIR="$fake" check 2>&1)
check "Makefile: a rustc other than the kernel's is refused" grep -q "built with 'rustc 0.0.1 (none)'" <<<"$msg"
# A versioned rustc-X.Y of the kernel's version is used by itself (DKMS too).
mkdir -p "$tmp/bin" && printf '#!/bin/sh\necho "rustc 0.0.1 (none)"\n' > "$tmp/bin/rustc-0.0" && chmod +x "$tmp/bin/rustc-0.0"
check "Makefile: the kernel's rustc as rustc-X.Y on the PATH passes the check" \
  env PATH="$tmp/bin:$PATH" make -s -C "$REPO/kernel" KDIR="$fake" check
dry=$(PATH="$tmp/bin:$PATH" make -n -C "$REPO/kernel" KDIR="$fake" modules 2>&1)
check "Makefile: ... and is passed to the kernel's build as RUSTC" grep -q -- "RUSTC=rustc-0.0 *modules" <<<"$dry"
dry=$(make -n -C "$REPO/kernel" KDIR="$fake" modules_install INSTALL_MOD_PATH=/stage 2>&1)
want_llvm=1; command -v clang-19 >/dev/null && want_llvm=-19
check "Makefile: LLVM=$want_llvm chosen for a clang-19 kernel" grep -q -- "M=$REPO/kernel LLVM=$want_llvm .*modules_install" <<<"$dry"
dry=$(make -n -C "$REPO/kernel" KDIR="$fake" LLVM=1 modules 2>&1)
check "Makefile: LLVM given on the command line wins" grep -q -- "LLVM=1 *modules" <<<"$dry"

# --- DKMS, for real (optional) --------------------------------------------------------
if [ -n "$kdir" ]; then
  if ! command -v dkms >/dev/null; then
    bad "dkms build: dkms is not installed (apt-get install dkms)"
  else
    kr=$(cat "$kdir/include/config/kernel.release")
    d="$tmp/dkms" && mkdir -p "$d/tree"
    if dkms add -m fanout -v "$version" --sourcetree "$dest/usr/src" --dkmstree "$d/tree" > "$d/log" 2>&1 &&
      dkms build -m fanout -v "$version" -k "$kr" --kernelsourcedir "$kdir" \
        --sourcetree "$dest/usr/src" --dkmstree "$d/tree" >> "$d/log" 2>&1 &&
      [ -f "$d/tree/fanout/$version/$kr/x86_64/module/fanout.ko" ]; then
      ok "dkms build of the installed sources against $kr"
    else
      cat "$d/log"; find "$d/tree" -name make.log -exec cat {} \;
      bad "dkms build of the installed sources against $kr"
    fi
  fi
fi

echo "install test: $passed passed, $failed failed"
[ "$failed" = 0 ]
