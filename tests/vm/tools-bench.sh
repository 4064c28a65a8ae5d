# The tools' throughput in the VM (busybox sh, sourced with tests/vm/lib.sh
# and the module loaded; needs baf-setup create --size): `pubmsg | submsg`
# beside `cat | cat` through a pipe, in the same run. Prints Markdown table
# rows: | what | baf | pipe | ratio |  (ratio = baf / pipe; above 1, baf is
# faster).
#
# The topics have rings that hold the whole run, so a slow moment of the
# reader cannot lose records: the figure is throughput, not loss.
# Timing uses /proc/uptime (10 ms steps); each run takes seconds.

bench_now() { # centiseconds since boot
  read -r up _ < /proc/uptime
  echo "${up%.*}${up#*.}"
}
bench_gone() {
  ! [ -d "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
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

bench_caught_up() { # PID TOPIC: the reader's cursor is at the topic's end
  next=$(cat "/sys/class/baf/$2/next_seq")
  grep -h '^fanout_cursor_seq' /proc/"$1"/fdinfo/* 2>/dev/null | grep -q "[[:space:]]$next\$"
}
# bench_baf TOPIC RECORDS FILE PUBMSG-ARGS...: centiseconds from the start of
# `pubmsg ARGS TOPIC < FILE` until `submsg TOPIC > /dev/null` has read
# everything: RECORDS records (submsg -n), or with RECORDS "-", up to the
# topic's last record (seen in /proc/PID/fdinfo).
bench_baf() {
  topic=$1 records=$2 file=$3; shift 3
  if [ "$records" = - ]; then
    submsg "$topic" > /dev/null 2> /tmp/bench.err & bp=$!
  else
    submsg -n "$records" "$topic" > /dev/null 2> /tmp/bench.err & bp=$!
  fi
  n=0
  while [ "$(bench_readers "$topic")" -lt 1 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  t0=$(bench_now)
  pubmsg "$@" "$topic" < "$file"
  if [ "$records" = - ]; then
    while ! bench_caught_up $bp "$topic"; do usleep 2000; done
    t1=$(bench_now)
    kill $bp
  else
    while ! bench_gone $bp; do usleep 2000; done
    t1=$(bench_now)
  fi
  wait $bp 2>/dev/null
  if [ -s /tmp/bench.err ]; then cat /tmp/bench.err >&2; fi
  echo $((t1 - t0))
}
bench_pipe() { # FILE: centiseconds of cat FILE | cat > /dev/null
  t0=$(bench_now)
  cat "$1" | cat > /dev/null
  t1=$(bench_now)
  echo $((t1 - t0))
}
bench_row() { # WHAT UNIT COUNT BAF_CS PIPE_CS
  b=$(bench_rate "$3" "$4"); p=$(bench_rate "$3" "$5")
  ratio=$(awk -v b="$b" -v p="$p" 'BEGIN { if (p < 1) p = 1; printf "%.2f", b / p }')
  echo "| $1 | $(bench_human "$b" "$2") | $(bench_human "$p" "$2") | $ratio |"
}

tools_bench() {
  # 64-byte lines: 63 characters and a newline.
  lines=200000
  awk -v n=$lines 'BEGIN { s = sprintf("%063d", 0); for (i = 0; i < n; i++) print s }' > /tmp/bench.lines
  baf-setup remove bench-lines > /dev/null 2>&1
  baf-setup create bench-lines --size 64M > /dev/null 2>&1 || return 1
  baf_cs=$(bench_baf bench-lines $lines /tmp/bench.lines)
  pipe_cs=$(bench_pipe /tmp/bench.lines)
  bench_row "pubmsg \\| submsg, 64 B lines, a record each (vs cat \\| cat)" "lines/s" $lines "$baf_cs" "$pipe_cs"
  # The same lines with --raw: records are whatever each read of stdin
  # returns, so the cost per line is no longer a write() per line.
  baf-setup remove bench-lines > /dev/null 2>&1
  baf-setup create bench-lines --size 64M > /dev/null 2>&1 || return 1
  baf_cs=$(bench_baf bench-lines - /tmp/bench.lines --raw)
  bench_row "pubmsg --raw \\| submsg, 64 B lines in chunks (vs cat \\| cat)" "lines/s" $lines "$baf_cs" "$pipe_cs"
  baf-setup remove bench-lines > /dev/null 2>&1
  rm -f /tmp/bench.lines

  # 64 KiB raw chunks: records of exactly 64 KiB (the topic's record limit),
  # 32 MiB in all.
  chunks=512
  dd if=/dev/zero of=/tmp/bench.raw bs=65536 count=$chunks 2> /dev/null
  baf-setup remove bench-raw > /dev/null 2>&1
  baf-setup create bench-raw --size 64M --record-max 64K > /dev/null 2>&1 || return 1
  baf_cs=$(bench_baf bench-raw $chunks /tmp/bench.raw --raw)
  pipe_cs=$(bench_pipe /tmp/bench.raw)
  bench_row "pubmsg --raw \\| submsg, 64 KiB chunks (vs cat \\| cat)" "B/s" $((chunks * 65536)) "$baf_cs" "$pipe_cs"
  baf-setup remove bench-raw > /dev/null 2>&1
  rm -f /tmp/bench.raw
}

if tools_bench; then t_ok "tools benchmark"; else t_fail "tools benchmark"; fi
