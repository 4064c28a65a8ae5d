# The recorder's benchmark in the VM (busybox sh, sourced after
# tools-bench.sh, whose bench_* helpers it uses; needs baf-setup create
# --size): 100000 lines of 64 B published with pubmsg into a 64 MiB topic
# with no reader, with `submsg --raw > file`, and with `baf-record record
# -o file.mcap`. Prints a Markdown table: | reader | writer lines/s |
# lines/s until the reader has everything | records lost | file bytes |.
# The writer's rate shows what a reader costs it; the second figure what
# the reader keeps up with. Timing from /proc/uptime (10 ms steps).

# rec_bench_one MODE: prints "WRITER_CS READER_CS LOST BYTES"
rec_bench_one() {
  baf-setup remove bench-rec > /dev/null 2>&1
  baf-setup create bench-rec --size 64M > /dev/null 2>&1 || return 1
  rm -f /tmp/bench.out /tmp/bench.mcap
  rp=""
  case $1 in
    submsg) submsg --raw bench-rec > /tmp/bench.out 2> /tmp/bench.err & rp=$! ;;
    record) baf-record record bench-rec -o /tmp/bench.mcap 2> /tmp/bench.err & rp=$! ;;
  esac
  if [ -n "$rp" ]; then
    n=0
    while [ "$(bench_readers bench-rec)" -lt 1 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  fi
  t0=$(bench_now)
  pubmsg bench-rec < /tmp/bench.lines
  t1=$(bench_now)
  if [ -n "$rp" ]; then
    n=0
    while ! bench_caught_up $rp bench-rec && [ $n -lt 30000 ]; do usleep 2000; n=$((n + 1)); done
  fi
  t2=$(bench_now)
  lost=$(cat /sys/class/baf/bench-rec/lost)
  if [ -n "$rp" ]; then
    kill $rp; n=0
    while ! bench_gone $rp && [ $n -lt 5000 ]; do usleep 2000; n=$((n + 1)); done
    wait $rp 2> /dev/null
  fi
  bytes=$(cat /tmp/bench.out /tmp/bench.mcap 2> /dev/null | wc -c)
  baf-setup remove bench-rec > /dev/null 2>&1
  echo "$((t1 - t0)) $((t2 - t0)) $lost $bytes"
}

record_bench() {
  lines=100000
  awk -v n=$lines 'BEGIN { s = sprintf("%063d", 0); for (i = 0; i < n; i++) print s }' > /tmp/bench.lines
  echo "| reader | writer lines/s | lines/s until the reader has all | records lost | output bytes |"
  echo "| --- | --- | --- | --- | --- |"
  for mode in none submsg record; do
    set -- $(rec_bench_one $mode) || return 1
    [ $# = 4 ] || return 1
    case $mode in
      none) what="no reader" ;;
      submsg) what="submsg --raw > file" ;;
      record) what="baf-record record -o file.mcap" ;;
    esac
    echo "| $what | $(bench_human "$(bench_rate $lines "$1")" "lines/s") | $(bench_human "$(bench_rate $lines "$2")" "lines/s") | $3 | $4 |"
  done
  rm -f /tmp/bench.lines /tmp/bench.out /tmp/bench.mcap
}

if record_bench; then t_ok "recorder benchmark"; else t_fail "recorder benchmark"; fi
