# The recorder's benchmark in the VM (busybox sh, sourced after
# tools-bench.sh, whose bench_* helpers it uses; needs baf-setup create
# --size). The same stream, 100000 records of 64 B and then 400 of 64 KiB
# (lines, published with pubmsg into a 64 MiB topic), with no reader, with
# `submsg -n N > file`, and with `baf-record record -o file.mcap`.
# Prints a Markdown table: | records | reader | the writer's rate | the rate
# until the reader has everything and has ended | that against submsg |
# the writer's rate against no reader | records lost | output bytes |.
# submsg ends by itself after the N records; the recorder is sent SIGTERM
# when the writer is done, and ends once it has read the rest and finished
# its file (summary and index included), so its figure includes that.
# Both are waited for with `wait`, nothing polls. Timing from /proc/uptime
# (10 ms steps).

# rec_bench_one MODE FILE RECORDS: prints "WRITER_CS READER_CS LOST BYTES"
rec_bench_one() {
  baf-setup remove bench-rec > /dev/null 2>&1
  baf-setup create bench-rec --size 64M > /dev/null 2>&1 || return 1
  rm -f /tmp/bench.out /tmp/bench.mcap
  rp=""
  case $1 in
    submsg) submsg -n "$3" bench-rec > /tmp/bench.out 2> /tmp/bench.err & rp=$! ;;
    record) baf-record record bench-rec -o /tmp/bench.mcap 2> /tmp/bench.err & rp=$! ;;
  esac
  if [ -n "$rp" ]; then
    n=0
    while [ "$(bench_readers bench-rec)" -lt 1 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    dog=$(bench_watch "$rp")
  fi
  t0=$(bench_now)
  pubmsg bench-rec < "$2"
  t1=$(bench_now)
  if [ -n "$rp" ]; then
    [ "$1" = record ] && kill -TERM "$rp"
    wait "$rp"; rrc=$?
    t2=$(bench_now)
    kill "$dog" 2> /dev/null
    # A reader that failed measured nothing: say why, and fail.
    [ "$rrc" = 0 ] || { echo "$1 exited $rrc: $(cat /tmp/bench.err)" >&2; return 1; }
  else
    t2=$t1
  fi
  lost=$(cat /sys/class/baf/bench-rec/lost)
  bytes=$(cat /tmp/bench.out /tmp/bench.mcap 2> /dev/null | wc -c)
  baf-setup remove bench-rec > /dev/null 2>&1
  echo "$((t1 - t0)) $((t2 - t0)) $lost $bytes"
}

# rec_bench_size WHAT FILE RECORDS: the three rows for one record size
rec_bench_size() {
  set -- "$1" "$2" "$3" $(rec_bench_one none "$2" "$3")
  [ $# = 7 ] || return 1
  none_w=$4
  set -- "$1" "$2" "$3" $(rec_bench_one submsg "$2" "$3")
  [ $# = 7 ] || return 1
  sub_w=$4 sub_r=$5 sub_lost=$6 sub_bytes=$7
  set -- "$1" "$2" "$3" $(rec_bench_one record "$2" "$3")
  [ $# = 7 ] || return 1
  rec_w=$4 rec_r=$5 rec_lost=$6 rec_bytes=$7
  what=$1 recs=$3
  rate() { bench_human "$(bench_rate "$recs" "$1")" "records/s"; }
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a < 1) a = 1; printf "%.2f", b / a }'; }
  echo "| $what | no reader | $(rate "$none_w") | | | 1.00 | 0 | 0 |"
  echo "| $what | submsg -n N > file | $(rate "$sub_w") | $(rate "$sub_r") | 1.00 | $(ratio "$sub_w" "$none_w") | $sub_lost | $sub_bytes |"
  echo "| $what | baf-record record -o file.mcap | $(rate "$rec_w") | $(rate "$rec_r") | $(ratio "$rec_r" "$sub_r") | $(ratio "$rec_w" "$none_w") | $rec_lost | $rec_bytes |"
}

record_bench() {
  awk 'BEGIN { s = sprintf("%063d", 0); for (i = 0; i < 100000; i++) print s }' > /tmp/bench.small
  awk 'BEGIN { s = "0"; while (length(s) < 65535) s = s s; s = substr(s, 1, 65535); for (i = 0; i < 400; i++) print s }' > /tmp/bench.large
  echo "| records | reader | writer | until the reader has all and ended | vs submsg | writer vs no reader | records lost | output bytes |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  rec_bench_size "100000 x 64 B" /tmp/bench.small 100000 || return 1
  rec_bench_size "400 x 64 KiB" /tmp/bench.large 400 || return 1
  rm -f /tmp/bench.small /tmp/bench.large /tmp/bench.out /tmp/bench.mcap
}

if record_bench; then t_ok "recorder benchmark"; else t_fail "recorder benchmark"; fi
