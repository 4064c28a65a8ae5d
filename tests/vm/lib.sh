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
# submsg_lost FILE...: the records submsg said it lost, summed over its
# reports on stderr saved in FILEs ("lost N records on topic ...").
submsg_lost() {
  cat "$@" 2> /dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "lost" && $(i + 1) ~ /^[0-9]+$/) { n += $(i + 1); break } }
    END { print n + 0 }'
}
# run_extras: the users' own tests (tests/vm.sh --extra DIR), one result each.
run_extras() {
  for t in /extra/*; do
    [ -x "$t" ] || continue
    if PATH=/bin "$t"; then t_ok "extra: ${t#/extra/}"; else t_fail "extra: ${t#/extra/} (exit $?)"; fi
  done
}
