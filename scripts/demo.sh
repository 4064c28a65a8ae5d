#!/usr/bin/env bash
# The main job: build everything (toolchain, kernel, module, tools) and run a
# short real pub/sub demo on fanout.ko inside a VM.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out=$(bash "$REPO/tests/vm.sh" --scenario demo 2>&1) || { echo "$out"; die "the demo failed"; }
# Show what a user at the VM's console saw, without boot noise.
echo "$out" | sed -n '/== baf demo/,/== end of demo ==/p'
