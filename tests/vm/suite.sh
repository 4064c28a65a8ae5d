# The VM test suite (busybox sh, sourced by /init). Shell tests cover module
# loading and the tools; /bin/fanout-tests covers the device ABI in depth.

# --- module parameters are checked, with a clear message -------------------
bad_param() { # PARAMS... : insmod must fail and dmesg must say why
  if insmod /lib/fanout.ko "$@" 2>/dev/null; then rmmod fanout; return 1; fi
  dmesg | tail -n 5 | grep -q "fanout: .*${1%%=*}=" || { dmesg | tail -n 5; return 1; }
}
check "insmod refuses ring_size=1000 (not a power of two)" bad_param ring_size=1000
check "insmod refuses ring_size=1073741824 (too large)" bad_param ring_size=1073741824
check "insmod refuses record_max=100 (below 4096)" bad_param record_max=100
check "insmod refuses record_max above ring_size/4" bad_param record_max=32768
check "insmod refuses devices=65" bad_param devices=65
check "insmod refuses max_topics=0" bad_param max_topics=0
check "insmod refuses max_ring_mb=0" bad_param max_ring_mb=0
check "insmod refuses more static rings than max_ring_mb holds" bad_param devices=4 ring_size=1048576 max_ring_mb=2

# --- load, nodes ---------------------------------------------------------------
check "insmod fanout.ko devices=4 ring_size=262144 control_gid=900" insmod /lib/fanout.ko devices=4 ring_size=262144 control_gid=900
nodes_ok() {
  for i in 0 1 2 3; do [ -c /dev/fanout$i ] || return 1; done
  [ "$(stat -c %a /dev/fanout0)" = 660 ]
}
check "/dev/fanout0..3 exist as char devices, mode 0660" nodes_ok

# --- a write is read back by every open reader ----------------------------
two_readers() {
  cat /dev/fanout0 > /tmp/r1 & p1=$!
  cat /dev/fanout0 > /tmp/r2 & p2=$!
  sleep 0.3
  printf 'hello\n' > /dev/fanout0
  printf 'world\n' > /dev/fanout0
  wait_for 5 grep -q world /tmp/r1 && wait_for 5 grep -q world /tmp/r2
  kill $p1 $p2; wait $p1 $p2 2>/dev/null
  [ "$(cat /tmp/r1)" = "$(printf 'hello\nworld')" ] && cmp /tmp/r1 /tmp/r2
}
check "write then read: two readers get the same bytes" two_readers

# --- the device ABI in depth ---------------------------------------------------
/bin/fanout-tests /dev/fanout1 /dev/fanout2 /dev/fanout3

# --- stress and fuzz (about a minute), rmmod racing opens -----------------------
# (BAF_PART=tools, the "tools" scenario, runs the device, topics and tools
# parts only: pub/sub, lossless, mmap, names; not the fuzz or the bridge.
# BAF_PART=core, the "core" scenario, runs all but the bridge.)
case "${BAF_PART:-all}" in all|core) . /tests/fuzz.sh ;; esac

# --- named topics, permissions, stats, baf-setup ------------------------------
. /tests/topics.sh

# --- the tools on the real device ---------------------------------------------
. /tests/tools.sh

# --- baf-record: recording, rotation, dashcam, play --------------------------
. /tests/record.sh

# --- users' own tests (tests/vm.sh --extra DIR) ------------------------------
run_extras

# --- unload ------------------------------------------------------------------------
rmmod_busy() {
  exec 3</dev/fanout0
  if rmmod fanout 2>/dev/null; then exec 3<&-; return 1; fi
  exec 3<&-
}
check "rmmod is refused while a topic is open" rmmod_busy
# (grep -v: the debug kernel's delayed kobject releases log lines of their own.)
check "rmmod succeeds once closed, with no topic leaked" sh -c 'rmmod fanout && dmesg | grep -v kobject | tail -n 3 | grep -q "fanout: unloaded, no topic left"'
check "the nodes are gone after rmmod" sh -c '! [ -e /dev/fanout0 ]'
check "insmod again after rmmod, with no static topic by default (devices=0)" sh -c 'insmod /lib/fanout.ko && [ -c /dev/baf-control ] && ! ls /dev/fanout* 2>/dev/null && ! ls /sys/class/baf/ | grep -q "^fanout"; rc=$?; rmmod fanout; [ $rc = 0 ]'
limits() {
  insmod /lib/fanout.ko devices=0 max_topics=2 max_ring_mb=1 || return 1
  rc=0
  baf-setup create lim/a --size 512K > /dev/null || rc=1
  # 512 KiB + 1 MiB of rings exceed 1 MiB: ENOMEM, nothing made.
  baf-setup create lim/b --size 1M > /tmp/lim.err 2>&1 && { echo "a ring over max_ring_mb was made"; rc=1; }
  [ -e /dev/baf/lim/b ] && rc=1
  baf-setup create lim/c --size 256K > /dev/null || rc=1
  # A third topic: ENOSPC.
  baf-setup create lim/d --size 16K > /tmp/lim2.err 2>&1 && { echo "a topic over max_topics was made"; rc=1; }
  cat /tmp/lim.err /tmp/lim2.err
  grep -qi "memory\|max_ring_mb" /tmp/lim.err && grep -qi "max_topics\|too many\|no room" /tmp/lim2.err || { echo "the tool did not say which limit"; rc=1; }
  # Removing one frees its room, once the driver core has released its node
  # (at once, or 1-4 s later with the debug kernel's delayed kobject release).
  baf-setup remove lim/a || rc=1
  wait_for 10 sh -c 'baf-setup create lim/d --size 16K > /dev/null 2>&1' || { echo "the room of a removed topic did not come back"; rc=1; }
  for t in lim/c lim/d; do baf-setup remove $t; done
  rmmod fanout || rc=1
  return $rc
}
check "max_topics and max_ring_mb cap creation (ENOSPC, ENOMEM, a clear message)" limits
# The driver core may release a device node after it was unregistered (with
# CONFIG_DEBUG_KOBJECT_RELEASE, as in the debug kernel, 1-4 s later), and the
# release function is the module's: an unload right after removals must wait
# for them, or the kernel calls freed module code (an oops here).
unload_after_removal() {
  insmod /lib/fanout.ko devices=2 || return 1
  rc=0
  for i in 1 2 3 4 5 6; do baf-setup create rel/t$i > /dev/null || rc=1; done
  for i in 1 2 3 4 5 6; do baf-setup remove rel/t$i || rc=1; done
  start=$(date +%s)
  rmmod fanout || return 1
  echo "  rmmod took $(($(date +%s) - start)) s"
  if dmesg | grep -q "device nodes still not released"; then dmesg | grep "not released"; rc=1; fi
  [ -e /sys/module/fanout ] && { echo "the module is still loaded"; rc=1; }
  # Loaded and unloaded again: nothing of the first load is left behind.
  insmod /lib/fanout.ko devices=1 && rmmod fanout || rc=1
  return $rc
}
check "unload right after removing topics waits for the driver core to release every node" unload_after_removal

# --- baf-bridge: two bridges over loopback (loads and unloads the module) ----
if [ "${BAF_PART:-all}" = all ]; then . /tests/bridge.sh; fi
