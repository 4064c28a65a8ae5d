#!/usr/bin/env bash
# An independent reader of baf-record's files: baf-record's host test
# writes sample recordings (uncompressed, zstd, lz4), and the Python mcap
# package (PyPI, pinned, in a venv under the cache) reads them and counts
# the messages per channel (scripts/mcap-check.py). Needs python3 with
# venv and network access on its first run (the venv is cached).
#   scripts/mcap-check.sh            the host test's sample files
#   scripts/mcap-check.sh --vm DIR   files the VM tests wrote (tests/vm.sh
#                                    puts each beside its NAME.info.json)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO"

MCAP_PY_VERSION=1.6.0
venv="$CACHE/py-mcap-$MCAP_PY_VERSION"
if [ ! -e "$venv/.baf-complete" ]; then
  say "a Python venv with mcap $MCAP_PY_VERSION (about 20 s, once)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "mcap==$MCAP_PY_VERSION" zstandard lz4
  touch "$venv/.baf-complete"
fi
if [ "${1:-}" = --vm ]; then
  exec "$venv/bin/python" scripts/mcap-check.py "$2"
fi
samples=$(mktemp -d)
trap 'rm -rf "$samples"' EXIT
BAF_MCAP_SAMPLES=$samples cargo test --quiet -p baf-record --lib samples_for_other_readers >/dev/null
"$venv/bin/python" scripts/mcap-check.py "$samples"
