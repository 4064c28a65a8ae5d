#!/usr/bin/env bash
# The documentation check, on the host (no VM, no root): builds the tools,
# then tests/docs-check.py checks README.md, docs/*.md, kernel/ABI.md,
# nixos/README.md, packaging/README.md and the tools' --help and man pages
# against the code: no ABI version, exit code or module parameter the code
# does not have, and no broken relative link. scripts/test.sh runs it.
#   bash tests/docs-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --workspace --bins
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec python3 tests/docs-check.py --bin "$target/debug" "$@"
