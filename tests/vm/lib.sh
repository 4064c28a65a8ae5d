# Result helpers for the VM scripts (busybox sh). Every result is one line
# "BAF-TEST ok NAME" or "BAF-TEST FAILED NAME", which tests/vm.sh counts.
t_ok() { echo "BAF-TEST ok $*"; }
t_fail() { echo "BAF-TEST FAILED $*"; }
# check NAME COMMAND...: runs the command, passes if it exits 0.
check() {
  name=$1; shift
  if out=$("$@" 2>&1); then t_ok "$name"; else echo "$out"; t_fail "$name"; fi
}
# wait_for SECONDS COMMAND...: polls until the command succeeds.
wait_for() {
  n=$(($1 * 10)); shift
  while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; n=$((n - 1)); done
  return 1
}
# run_extras: the users' own tests (tests/vm.sh --extra DIR), one result each.
run_extras() {
  for t in /extra/*; do
    [ -x "$t" ] || continue
    if PATH=/bin "$t"; then t_ok "extra: ${t#/extra/}"; else t_fail "extra: ${t#/extra/} (exit $?)"; fi
  done
}
