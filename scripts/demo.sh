#!/usr/bin/env bash
# The main job: build everything (toolchain, kernel, module, tools) and run a
# short real pub/sub demo on fanout.ko inside a VM.
# Progress goes to stderr as it happens (each long step says what it does and
# about how long it takes); the demo transcript goes to stdout at the end.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if ! compgen -G "$CACHE/kernel-*-debug-*/.baf-complete" >/dev/null; then
  say "first run: installs packages and toolchain, builds a kernel, the module and the tools, then boots a VM (about 20 minutes on 2 cores; the steps follow)"
fi
# vm.sh reports its steps on stderr, which passes straight through; its
# stdout (the VM's console and the verdict) is kept for the transcript.
out=$(bash "$REPO/tests/vm.sh" --scenario demo) || { echo "$out"; die "the demo failed"; }
# Show what a user at the VM's console saw, without boot noise.
echo "$out" | sed -n '/== baf demo/,/== end of demo ==/p'
