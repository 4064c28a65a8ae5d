# Helpers of the VM's shell benchmarks (busybox sh, sourced by
# tools-bench.sh and peer-bench.sh; record-bench.sh, run after them, uses
# them too): time, rates, and a watchdog. bench_now uses /proc/uptime
# (10 ms steps), for runs of seconds; the rows timed by their consumer
# (bench_span) have microseconds.

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
# The consumer of the tools rows is `bench-io count` (tests/src/bin): it
# reads 64 KiB a read() and prints "BYTES FIRST_US LAST_US READS", the
# bytes, the monotonic clock in microseconds at its first data and at its
# last, and its reads.
# Until 2026-12-07 it was `wc -c`, which in this VM counts about 30 ns a
# byte: both sides then measured mostly wc, and their ratio sat near 1.
#
# bench_span FILE...: prints "MICROSECONDS BYTES" of the `bench-io count`
# outputs in FILEs: from the first byte any of them got to the last byte
# any got, and the bytes of all together (0 0 if none printed).
bench_span() {
  cat "$@" 2> /dev/null | awk 'NF >= 3 { b += $1; if (!f || $2 < f) f = $2; if ($3 > l) l = $3 }
    END { printf "%d %d\n", (l > f ? l - f : 0), b }'
}
# bench_rate_us UNITS MICROSECONDS: units per second
bench_rate_us() { awk -v n="$1" -v us="$2" 'BEGIN { if (us < 1) us = 1; printf "%.0f", n * 1000000 / us }'; }
# Both sides are timed the same way, inside the consumer, from the first
# byte it receives to the last: no process start-up, no polling, no
# `baf-setup remove` and no fork for a clock are in the timed part.
# submsg runs as users type it, `submsg TOPIC | consumer`, with no count
# to stop at (which would keep it off `splice`): once the writer is done
# the topic is removed, and submsg ends after reading what is left. A
# watchdog ends a submsg that waits too long.
bench_watch() { # PID: kill PID after 300 s
  ( sleep 300; kill "$1" 2> /dev/null ) > /dev/null 2>&1 &
  echo $!
}
# bench_baf TOPIC FILE PUBMSG-ARGS...: `pubmsg ARGS TOPIC < FILE` into
# `submsg TOPIC | bench-io count`; prints "MICROSECONDS BYTES LOST": the
# consumer's time from first byte to last, the bytes it counted, and the
# records submsg reported lost (submsg_lost, lib.sh: the topic's sysfs
# `lost` is gone with the topic by the time the readers are done).
bench_baf() {
  topic=$1 file=$2; shift 2
  rm -f /tmp/bench.count /tmp/bench.pid /tmp/bench.err
  ( submsg "$topic" 2> /tmp/bench.err & echo $! > /tmp/bench.pid; wait ) | bench-io count > /tmp/bench.count & wp=$!
  n=0
  while [ "$(bench_readers "$topic")" -lt 1 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  dog=$(bench_watch "$(cat /tmp/bench.pid)")
  pubmsg "$@" "$topic" < "$file"
  baf-setup remove "$topic" > /dev/null 2>&1
  wait $wp 2> /dev/null
  kill $dog 2> /dev/null
  lost=$(submsg_lost /tmp/bench.err)
  if [ -s /tmp/bench.err ]; then cat /tmp/bench.err >&2; fi
  echo "$(bench_span /tmp/bench.count) $lost"
  rm -f /tmp/bench.count /tmp/bench.pid /tmp/bench.err
}
# bench_pipe FILE: prints "MICROSECONDS BYTES" of
# `cat FILE | cat | bench-io count`.
bench_pipe() {
  cat "$1" | cat | bench-io count > /tmp/bench.count
  bench_span /tmp/bench.count
  rm -f /tmp/bench.count
}

# Rounds of each side of a shell benchmark row, run in turn (this VM's
# speed drifts by 2x or more within a run, so one round of each side can
# compare a fast moment with a slow one).
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
# bench_pick: reads the lines "TIME BYTES [LOST]" of a side's rounds
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
