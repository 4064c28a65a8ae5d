# The tools' throughput in the VM (busybox sh, sourced with tests/vm/lib.sh
# and the module loaded; needs baf-setup create --size): `pubmsg | submsg |
# wc -c` beside `cat | cat | wc -c` through pipes, in the same run. Prints a
# Markdown table: | what | baf | pipe | ratio | baf records lost | output
# bytes |  (ratio = baf / pipe; above 1, baf is faster). Everything submsg
# writes is consumed and counted; the time runs until it has all been
# counted, the same way for both.
#
# The topics have rings that hold the whole run, so a slow moment of the
# reader should not lose records; the loss is shown all the same (the
# topic's sysfs `lost` once submsg has read to the end).
# Timing uses /proc/uptime (10 ms steps); each run takes seconds.

bench_now() { # centiseconds since boot
  read -r up _ < /proc/uptime
  echo "${up%.*}${up#*.}"
}
bench_readers() { # NAME: open readers of the topic
  cat "/sys/class/baf/$1/readers" 2>/dev/null || echo 0
}
# bench_rate UNITS CENTISECONDS: units per second
bench_rate() { awk -v n="$1" -v cs="$2" 'BEGIN { if (cs < 1) cs = 1; printf "%.0f", n * 100 / cs }'; }
bench_human() { # N [UNIT]: 1234567 -> 1.23 M
  awk -v n="$1" -v u="$2" 'BEGIN {
    if (n >= 1e9) printf "%.2f G%s", n / 1e9, u; else if (n >= 1e6) printf "%.2f M%s", n / 1e6, u;
    else if (n >= 1e3) printf "%.1f k%s", n / 1e3, u; else printf "%d %s", n, u }'
}

bench_count() { # FILE: the number wc -c wrote into FILE
  read -r c < "$1"
  echo $((c + 0))
}
# Both sides are timed the same way: from the start of the writer until the
# consumer, `wc -c`, has counted everything and exited. submsg exits by
# itself after the records it was told to expect (`-n`), as a consumer that
# knows its input does; nothing else runs in the timed part (no polling, no
# `baf-setup remove`). A watchdog ends a submsg that waits too long
# (records lost).
bench_watch() { # PID: kill PID after 300 s
  ( sleep 300; kill "$1" 2> /dev/null ) > /dev/null 2>&1 &
  echo $!
}
# bench_baf TOPIC FILE RECORDS PUBMSG-ARGS...: `pubmsg ARGS TOPIC < FILE`
# into `submsg -n RECORDS TOPIC | wc -c`; prints "CENTISECONDS BYTES LOST":
# the time until wc has counted everything, the bytes it counted, and the
# records the topic's readers lost (sysfs `lost`).
bench_baf() {
  topic=$1 file=$2 records=$3; shift 3
  rm -f /tmp/bench.count /tmp/bench.pid
  ( submsg -n "$records" "$topic" 2> /tmp/bench.err & echo $! > /tmp/bench.pid; wait ) | wc -c > /tmp/bench.count & wp=$!
  n=0
  while [ "$(bench_readers "$topic")" -lt 1 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  dog=$(bench_watch "$(cat /tmp/bench.pid)")
  t0=$(bench_now)
  pubmsg "$@" "$topic" < "$file"
  wait $wp 2> /dev/null
  t1=$(bench_now)
  kill $dog 2> /dev/null
  lost=$(cat "/sys/class/baf/$topic/lost" 2> /dev/null || echo "?")
  baf-setup remove "$topic" > /dev/null 2>&1
  if [ -s /tmp/bench.err ]; then cat /tmp/bench.err >&2; fi
  echo "$((t1 - t0)) $(bench_count /tmp/bench.count) $lost"
  rm -f /tmp/bench.count /tmp/bench.pid
}
bench_pipe() { # FILE: prints "CENTISECONDS BYTES" of cat FILE | cat | wc -c
  t0=$(bench_now)
  cat "$1" | cat | wc -c > /tmp/bench.count
  t1=$(bench_now)
  echo "$((t1 - t0)) $(bench_count /tmp/bench.count)"
  rm -f /tmp/bench.count
}
# bench_row WHAT UNIT COUNT INPUT_BYTES "BAF_CS BAF_BYTES LOST" "PIPE_CS PIPE_BYTES"
bench_row() {
  set -- "$1" "$2" "$3" "$4" $5 $6
  b=$(bench_rate "$3" "$5"); p=$(bench_rate "$3" "$8")
  ratio=$(awk -v b="$b" -v p="$p" 'BEGIN { if (p < 1) p = 1; printf "%.2f", b / p }')
  echo "| $1 | $(bench_human "$b" "$2") | $(bench_human "$p" "$2") | $ratio | $7 | $6 of $4 | $9 of $4 |"
}

tools_bench() {
  echo "| what | baf | pipe | ratio | baf records lost | submsg output bytes | pipe output bytes |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  # 64-byte lines: 63 characters and a newline.
  lines=200000
  awk -v n=$lines 'BEGIN { s = sprintf("%063d", 0); for (i = 0; i < n; i++) print s }' > /tmp/bench.lines
  size=$((lines * 64))
  pipe=$(bench_pipe /tmp/bench.lines)
  baf-setup remove bench-lines > /dev/null 2>&1
  baf-setup create bench-lines --size 64M > /dev/null 2>&1 || return 1
  baf=$(bench_baf bench-lines /tmp/bench.lines $lines)
  bench_row "pubmsg \\| submsg, 64 B lines, a record each (vs cat \\| cat)" "lines/s" $lines $size "$baf" "$pipe"
  # The same lines with --raw: records are whatever each read of stdin
  # returns, so the cost per line is no longer a write() per line.
  # Records of up to 64 KiB: pubmsg reads the file 64 KiB at a time.
  baf-setup create bench-lines --size 64M --record-max 64K > /dev/null 2>&1 || return 1
  baf=$(bench_baf bench-lines /tmp/bench.lines $(((size + 65535) / 65536)) --raw)
  bench_row "pubmsg --raw \\| submsg, 64 B lines in chunks (vs cat \\| cat)" "lines/s" $lines $size "$baf" "$pipe"
  rm -f /tmp/bench.lines

  # 64 KiB raw chunks: records of exactly 64 KiB (the topic's record limit),
  # 32 MiB in all.
  chunks=512
  size=$((chunks * 65536))
  dd if=/dev/zero of=/tmp/bench.raw bs=65536 count=$chunks 2> /dev/null
  pipe=$(bench_pipe /tmp/bench.raw)
  baf-setup remove bench-raw > /dev/null 2>&1
  baf-setup create bench-raw --size 64M --record-max 64K > /dev/null 2>&1 || return 1
  baf=$(bench_baf bench-raw /tmp/bench.raw $chunks --raw)
  bench_row "pubmsg --raw \\| submsg, 64 KiB chunks (vs cat \\| cat)" "B/s" $size $size "$baf" "$pipe"
  rm -f /tmp/bench.raw
}

if tools_bench; then t_ok "tools benchmark"; else t_fail "tools benchmark"; fi
