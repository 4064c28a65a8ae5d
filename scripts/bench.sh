#!/usr/bin/env bash
# Benchmarks (not tests): builds the non-debug kernel (no lockdep/KASAN) and
# prints the throughput table measured in one VM run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=$(bash "$REPO/tests/vm.sh" --scenario bench --kernel bench 2>&1) || { echo "$out"; die "the benchmark run failed"; }
echo "$out" | grep -E '^\|'
