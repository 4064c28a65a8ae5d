# Shared helpers for the scripts in this folder. Source it, do not run it.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BAF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/baf}
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$CACHE"
# The static tools and test programs of this checkout (tests/vm.sh,
# scripts/package.sh): a target directory per checkout, named by a hash of
# its path, because cargo keeps a binary another work tree copied over its
# own when it finds its build up to date.
STATIC_TARGET="$CACHE/target-static-$(printf %s "$REPO" | sha256sum | cut -c1-12)"
