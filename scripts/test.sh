#!/usr/bin/env bash
# Every test: style and lint checks, host unit/property tests, the VM suite
# on each supported kernel series (7.3 and 7.2: our debug kernel and
# Debian's own images), and a self-test of the VM harness. Installs what it
# needs first. Ends with one summary line "N passed, N failed".
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO"

passed=0 failed=0
results=()
t_start=$(date +%s)
took() { echo "$(($(date +%s) - $1)) s"; } # START: seconds since, for the summary
step() { # NAME COMMAND...: a check that passes when the command exits 0
  local name=$1 t0; shift
  say "$name"; t0=$(date +%s)
  if "$@"; then passed=$((passed + 1)); results+=("ok      $name ($(took "$t0"))")
  else failed=$((failed + 1)); results+=("FAILED  $name ($(took "$t0"))"); fi
}

bash scripts/deps.sh || die "installing dependencies failed"

step "cargo fmt --check" cargo fmt --all --check
step "Nix: offline checks of the flake and the NixOS module" bash scripts/nix-check.sh
step "cargo clippy --all-targets -D warnings" cargo clippy --quiet --all-targets -- -D warnings
kernel_fmt() {
  local src; src=$(ls -d "$CACHE"/src/linux-source-*/ | tail -n1)
  rustfmt --check --edition 2021 --config-path "$src/.rustfmt.toml" kernel/fanout.rs
}

# Host tests: count cargo's own results into the summary.
say "cargo test (host)"; t0=$(date +%s)
cargo test --quiet --workspace 2>&1 | tee "$CACHE/host-tests.log"
host_rc=${PIPESTATUS[0]}
host_passed=$(grep -oE '[0-9]+ passed' "$CACHE/host-tests.log" | awk '{s+=$1} END {print s+0}')
host_failed=$(grep -oE '[0-9]+ failed' "$CACHE/host-tests.log" | awk '{s+=$1} END {print s+0}')
passed=$((passed + host_passed)); failed=$((failed + host_failed))
if [ "$host_rc" != 0 ] && [ "$host_failed" = 0 ]; then failed=$((failed + 1)); results+=("FAILED  cargo test (exit $host_rc)"); fi
results+=("        host tests: $host_passed passed, $host_failed failed ($(took "$t0"))")

# baf-record's files read by another MCAP implementation: the Python mcap
# package (pinned, in a venv under the cache) counts the messages per
# channel of the files baf-record's host test writes.
step "baf-record's MCAP files read by the Python mcap package" bash scripts/mcap-check.sh

# The peer benchmark (scripts/bench.sh, in the bench VM) is not a test; its
# harness is checked here: with mosquitto and nats-server on loopback, it
# moves messages both ways through MQTT, NATS, Zenoh and iceoryx2.
step "the peer benchmark's harness moves messages through each peer" bash scripts/peer-smoke.sh

# The VM's shell scripts parse in the VM's shell (busybox sh): the bench
# scripts run in no test, so a syntax error there would show only when
# scripts/bench.sh dies half-way.
vm_scripts_parse() {
  local f ok=0
  for f in "$REPO"/tests/vm/init "$REPO"/tests/vm/*.sh; do
    busybox sh -n "$f" || { echo "does not parse: $f"; ok=1; }
  done
  return $ok
}
step "the VM's shell scripts parse in busybox sh" vm_scripts_parse

# The documentation against the code: ABI version, exit codes, module
# parameters, in README.md, docs/, kernel/ABI.md and the tools' --help; links.
step "docs name only the ABI version, exit codes and module parameters the code has" bash tests/docs-test.sh

# The VM suite (it also builds the module, with clippy on our kernels, and
# the static test programs), on every kernel series the module supports:
# - 7.3, our own kernel with every debug check (lockdep, KASAN, atomic sleep);
# - 7.2, Debian's own linux-image, unmodified, with the module built for it
#   by scripts/kernel-rust.sh (the Rust metadata Debian leaves out, with the
#   kernel's own compilers): the whole suite;
# - 7.3, Debian's own image likewise: the device, topics and tools parts.
# Debian's images need no kernel build, only their Rust metadata (about 4
# minutes each), so the 7.2 suite runs on Debian's image instead of a 7.2
# kernel of ours (12 minutes cold).
# The debug kernel runs all but the bridge ("core"): the bridge is userspace
# over Zenoh on read/write/mmap paths the rest covers, and costs minutes
# under KASAN; it runs on Debian's 7.2 image with everything else.
vm_suite() { # SERIES VARIANT SCENARIO TIMEOUT
  local series=$1 variant=$2 scenario=$3 log="$CACHE/vm-$3-$1-$2.log" t0
  say "VM $scenario on the $variant $series kernel"; t0=$(date +%s)
  bash tests/vm.sh --scenario "$scenario" --series "$series" --kernel "$variant" --timeout "$4" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} line p f
  line=$(grep -E "^vm \($scenario" "$log" | tail -n1)
  p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
  f=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
  [ "$rc" != 0 ] && [ "${f:-0}" = 0 ] && f=1
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  results+=("        VM $scenario on $series ($variant kernel): ${p:-0} passed, ${f:-0} failed ($(took "$t0"))")
}
# Timeouts only catch a hung VM: about 12, 5 and 4 minutes when built.
vm_suite 7.3 debug core 1800
vm_suite 7.2 stock tests 900
vm_suite 7.3 stock tools 900

# The install path: scripts/install.sh into a DESTDIR (layout, udev rule,
# group, dkms.conf, the Makefile's checks) and a DKMS build of the module
# against our 7.3 kernel's build tree (cached by the VM suite above).
step "install path (install.sh into a DESTDIR, udev rule, dkms.conf, a DKMS build)" \
  bash tests/install-test.sh --kdir "$(bash scripts/kernel.sh debug 7.3)"

# The install paths for Debian's own kernels: kernel-rust.sh's refusals;
# make, dkms and the .deb packages on throwaway Debian 13 machines.
step "install paths on Debian 13 for its own 7.3 kernel (kernel-rust.sh refusals; make, dkms, the .debs)" \
  bash tests/debian13-test.sh 7.3

step "kernel code rustfmt --check" kernel_fmt

# The harness must fail when the kernel warns, even though every test in that
# run passes: load the module with its test-only WARN parameter.
harness_catches_warn() {
  local out
  if out=$(bash tests/vm.sh --scenario warn --timeout 300 2>&1); then
    echo "$out" | tail -n 20; echo "the harness passed a run with a kernel WARNING"; return 1
  fi
  echo "$out" | grep -q 'FAILED  vm: kernel splat' || { echo "$out" | tail -n 20; return 1; }
}
step "the VM harness fails a run whose kernel WARNs" harness_catches_warn

echo
printf '%s\n' "${results[@]}"
echo "$passed passed, $failed failed (in $(took "$t_start"))"
[ "$failed" = 0 ]
