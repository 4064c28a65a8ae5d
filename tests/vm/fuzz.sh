# Stress and fuzz of the module (busybox sh, sourced by suite.sh after
# fanout-tests): /bin/fanout-fuzz (tests/src/bin/fanout-fuzz.rs) prints its
# own results; here it is bounded in time, and rmmod races opens.
#
# BAF_FUZZ_ARGS (e.g. "--soak 600 --seed 42") is passed to the program.

# --- the program: about 60 s; its watchdog ends it if a phase hangs, and a
# process stuck in the kernel (which no watchdog can end) fails here.
fuzz_run() {
  # shellcheck disable=SC2086
  fanout-fuzz ${BAF_FUZZ_ARGS:-} &
  fuzz_pid=$!
  n=0
  while kill -0 "$fuzz_pid" 2>/dev/null && [ $n -lt 2000 ]; do sleep 0.1; n=$((n + 1)); done
  if kill -0 "$fuzz_pid" 2>/dev/null; then
    kill -9 "$fuzz_pid" 2>/dev/null
    t_fail "fanout-fuzz ended within its time (it did not: stuck in the kernel?)"
    return
  fi
  wait "$fuzz_pid"
  rc=$?
  # 0: all passed, 1: some check failed (already reported), 3: watchdog
  # (reported); anything else is a crash.
  case $rc in
    0 | 1 | 3) t_ok "fanout-fuzz ran to its end without crashing" ;;
    *) t_fail "fanout-fuzz ran to its end without crashing (exit status $rc)" ;;
  esac
}
fuzz_run

# --- rmmod racing opens: refused while a file is open, or a clean unload
# between two opens; either way the module is then loaded as the suite
# loaded it, for the tests that follow. (Opens are read-only: an open for
# writing of a node that just went away would create a regular file.)
rmmod_races_opens() {
  rm -f /tmp/race.stop
  (while [ ! -e /tmp/race.stop ]; do true </dev/fanout0; cat /sys/class/baf/fanout0/readers >/dev/null; done) 2>/dev/null &
  racer=$!
  unloaded=0 i=0
  while [ $i -lt 40 ]; do
    if rmmod fanout 2>/dev/null; then unloaded=1; break; fi
    i=$((i + 1))
    sleep 0.05
  done
  touch /tmp/race.stop
  wait $racer 2>/dev/null
  rm -f /tmp/race.stop
  if [ $unloaded = 1 ]; then
    echo "  rmmod succeeded between two opens, after $i refusals"
    dmesg | tail -n 20 | grep -q "fanout: unloaded, no topic left" || { dmesg | tail -n 20; echo "no clean unload message"; return 1; }
    [ -e /dev/fanout0 ] && { echo "/dev/fanout0 is still there after rmmod"; return 1; }
    insmod /lib/fanout.ko devices=4 ring_size=262144 control_gid=900 || return 1
  else
    echo "  rmmod was refused 40 times while a shell kept opening /dev/fanout0"
  fi
  [ -d /sys/module/fanout ] || return 1
  for i in 0 1 2 3; do [ -c /dev/fanout$i ] || return 1; done
  [ -c /dev/baf-control ] && [ "$(stat -c %a /dev/fanout0)" = 660 ] &&
    [ "$(cat /sys/class/baf/fanout0/ring_size)" = 262144 ] &&
    [ "$(stat -c %g /dev/baf-control)" = 900 ]
}
check "rmmod racing opens: refused, or a clean unload; then the module is loaded as before" rmmod_races_opens
