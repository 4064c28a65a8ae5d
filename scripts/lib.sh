# Shared helpers for the scripts in this folder. Source it, do not run it.
# shellcheck shell=bash

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BAF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/baf}
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$CACHE"
