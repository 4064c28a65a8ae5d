# Helpers of the VM's shell benchmarks (busybox sh, sourced by
# tools-bench.sh and peer-bench.sh): time, rates, and a watchdog.
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

bench_lines() { # N FILE: N lines of 64 B (63 characters and a newline)
  awk -v n="$1" 'BEGIN { s = sprintf("%063d", 0); for (i = 0; i < n; i++) print s }' > "$2"
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

# Rounds of each side of a shell benchmark row, run in turn (this VM's
# speed drifts by 2x or more within a run, so one round of each side can
# compare a fast moment with a slow one).
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
# bench_pick: reads the lines "CENTISECONDS BYTES [LOST]" of a side's rounds
# on stdin; prints the median time, the fewest bytes any round delivered
# and (when given) the records all rounds lost together, in that format.
bench_pick() {
  runs=$(grep -v '^ *$')
  n=$(echo "$runs" | wc -l)
  med=$(echo "$runs" | sort -n | sed -n "$(((n + 1) / 2))p" | cut -d' ' -f1)
  echo "$runs" | awk -v med="$med" '{
    if (NR == 1 || $2 < b) b = $2
    if (NF > 2) { has = 1; if ($3 ~ /^[0-9]+$/) l += $3; else q = 1 }
  } END { printf "%s %s", med, b; if (has) printf " %s", q ? "?" : l; print "" }'
}
