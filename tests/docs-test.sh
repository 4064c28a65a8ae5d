#!/usr/bin/env bash
# The documentation check, on the host (no VM, no root): builds the tools,
# then tests/docs-check.py checks README.md, docs/*.md, kernel/ABI.md,
# nixos/README.md, packaging/README.md and the tools' --help and man pages
# against the code: no ABI version, exit code or module parameter the code
# does not have, and no broken relative link. Then it proves that the check
# can fail, on a document with one stale claim of each kind.
# scripts/test.sh runs it.
#   bash tests/docs-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --workspace --bins
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
python3 tests/docs-check.py --bin "$target/debug"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cat >"$scratch/stale.md" <<'DOC'
# Stale

The tools need ABI version 2 or later. This is ABI 99.

Exit codes: 0 ok, 3 no such topic (or no module), 9 on fire.
When the module is not loaded, every tool exits 3.

| parameter | default | meaning |
| --- | --- | --- |
| `ring_size` | 4096 | ring bytes |
| `ring_count` | 1 | no such parameter |

    modprobe fanout max_topic=5

See [nothing](no-such-file.md) and [no heading](#no-such-heading).
DOC
if out=$(python3 tests/docs-check.py "$scratch/stale.md"); then
  echo "$out"; echo "docs-check passed a document full of stale claims"; exit 1
fi
for want in "says the tools need ABI 2" "names ABI 99" "gives exit 3 to 'no such topic (or no module)'" \
  "names exit code 9" "gives exit 3 after" "ring_size's default as 4096" "'ring_count'" "'max_topic'" \
  "no-such-file.md, which does not exist" "no heading #no-such-heading"; do
  grep -qF -- "$want" <<<"$out" || { echo "$out"; echo "docs-check missed a stale claim: $want"; exit 1; }
done
echo "docs-check: fails on each kind of stale claim: ok"
