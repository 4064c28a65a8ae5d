#!/usr/bin/env bash
# Benchmarks (not tests): builds the non-debug kernel (no lockdep/KASAN) and
# prints the throughput table measured in one VM run.
# Progress goes to stderr as it happens; the table goes to stdout at the end.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if ! compgen -G "$CACHE/kernel-*-bench-*/.baf-complete" >/dev/null; then
  say "first benchmark run: builds the benchmark kernel (about 10-15 minutes on 2 cores), then measures in a VM (3-7 minutes, depending on the machine)"
else
  say "benchmark: measuring in a VM (3-7 minutes with the builds, depending on the machine)"
fi
out=$(bash "$REPO/tests/vm.sh" --scenario bench --kernel bench) || { echo "$out"; die "the benchmark run failed"; }
echo "$out" | grep -E '^\|'
