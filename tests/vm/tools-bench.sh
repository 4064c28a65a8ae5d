# The tools' throughput in the VM (busybox sh, sourced with tests/vm/lib.sh
# and the module loaded; needs baf-setup create --size): `pubmsg | submsg
# | bench-io count` beside `cat | cat | bench-io count` through pipes, in
# the same run. Prints a Markdown table: | what | baf | pipe | ratio | baf
# records lost | output bytes |  (ratio = baf / pipe; above 1, baf is
# faster).
# Everything submsg writes is consumed and counted; the time runs from the
# first byte the consumer gets to the last, the same way for both
# (bench-lib.sh says why). Each row runs its two sides in turn
# BENCH_ROUNDS times (3) and shows each side's median round, with the
# records lost in all rounds and the fewest bytes a round delivered.
#
# The topics have rings that hold the whole run, so a slow moment of the
# reader should not lose records; the loss is shown all the same (what
# submsg reported lost, submsg_lost).

. /tests/bench-lib.sh

# bench_row WHAT UNIT COUNT INPUT_BYTES "BAF_US BAF_BYTES LOST" "PIPE_US PIPE_BYTES"
bench_row() {
  set -- "$1" "$2" "$3" "$4" $5 $6
  b=$(bench_rate_us "$3" "$5"); p=$(bench_rate_us "$3" "$8")
  ratio=$(awk -v b="$b" -v p="$p" 'BEGIN { if (p < 1) p = 1; printf "%.2f", b / p }')
  echo "| $1 | $(bench_human "$b" "$2") | $(bench_human "$p" "$2") | $ratio | $7 | $6 of $4 | $9 of $4 |"
}

# Fan-out to 8 consumers: `pubmsg TOPIC < FILE` into eight `submsg
# TOPIC | bench-io count`, beside `bench-io tee < FILE` into seven FIFOs
# and a pipe, each read by `bench-io count` (the tee reads 64 KiB at a
# time, where busybox tee reads 1 KiB and GNU tee 8 KiB; it reads the
# file itself, as pubmsg does). Prints "MICROSECONDS BYTES LOST" (from
# the first byte any consumer got to the last; bytes of all eight
# together), as bench_baf does.
bench_baf8() {
  topic=$1 file=$2
  rm -f /tmp/bench.c.* /tmp/bench.err
  i=1
  while [ $i -le 8 ]; do
    ( submsg "$topic" 2>> /tmp/bench.err | bench-io count > /tmp/bench.c.$i ) &
    eval "w$i=\$!"; i=$((i + 1))
  done
  n=0
  while [ "$(bench_readers "$topic")" -lt 8 ] && [ $n -lt 200 ]; do sleep 0.1; n=$((n + 1)); done
  pubmsg "$topic" < "$file"
  baf-setup remove "$topic" > /dev/null 2>&1
  wait $w1 $w2 $w3 $w4 $w5 $w6 $w7 $w8 2> /dev/null
  lost=$(submsg_lost /tmp/bench.err)
  if [ -s /tmp/bench.err ]; then cat /tmp/bench.err >&2; fi
  echo "$(bench_span /tmp/bench.c.*) $lost"
  rm -f /tmp/bench.c.* /tmp/bench.err
}
bench_tee8() { # FILE
  rm -f /tmp/bench.f.* /tmp/bench.c.*
  fifos=""
  i=1
  while [ $i -le 7 ]; do
    mkfifo /tmp/bench.f.$i
    ( bench-io count < /tmp/bench.f.$i > /tmp/bench.c.$i ) &
    eval "w$i=\$!"; fifos="$fifos /tmp/bench.f.$i"; i=$((i + 1))
  done
  bench-io tee $fifos < "$1" | bench-io count > /tmp/bench.c.8
  wait $w1 $w2 $w3 $w4 $w5 $w6 $w7 2> /dev/null
  bench_span /tmp/bench.c.*
  rm -f /tmp/bench.f.* /tmp/bench.c.*
}

# bench_alt BAF_CMD PIPE_CMD: runs the two commands in turn BENCH_ROUNDS
# times; sets $baf and $pipe to the picked round of each (bench_pick).
bench_alt() {
  bafs="" pipes="" r=0
  while [ $r -lt "$BENCH_ROUNDS" ]; do
    pipes="$pipes
$(eval "$2")"
    bafs="$bafs
$(eval "$1")" || return 1
    r=$((r + 1))
  done
  baf=$(echo "$bafs" | bench_pick)
  pipe=$(echo "$pipes" | bench_pick)
}

tools_bench() {
  echo "| what | baf | pipe | ratio | baf records lost | submsg output bytes | pipe output bytes |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  lines=200000
  bench_lines $lines /tmp/bench.lines
  size=$((lines * 64))
  baf-setup remove bench-lines > /dev/null 2>&1
  bench_alt 'baf-setup create bench-lines --size 64M > /dev/null 2>&1 &&
    bench_baf bench-lines /tmp/bench.lines' 'bench_pipe /tmp/bench.lines' || return 1
  bench_row "pubmsg \\| submsg, 64 B lines, a record each (vs cat \\| cat)" "lines/s" $lines $size "$baf" "$pipe"
  # The same lines with --raw: records are whatever each read of stdin
  # returns, so the cost per line is no longer a write() per line.
  # Records of up to 64 KiB: pubmsg reads the file 64 KiB at a time.
  bench_alt 'baf-setup create bench-lines --size 64M --record-max 64K > /dev/null 2>&1 &&
    bench_baf bench-lines /tmp/bench.lines --raw' \
    'bench_pipe /tmp/bench.lines' || return 1
  bench_row "pubmsg --raw \\| submsg, 64 B lines in chunks (vs cat \\| cat)" "lines/s" $lines $size "$baf" "$pipe"
  # The same lines to 8 consumers (8 x the bytes out), against a tee.
  bench_alt 'baf-setup create bench-lines --size 64M > /dev/null 2>&1 &&
    bench_baf8 bench-lines /tmp/bench.lines' 'bench_tee8 /tmp/bench.lines' || return 1
  bench_row "pubmsg \| 8 x submsg, 64 B lines (vs tee into 8)" "lines/s" $lines $((size * 8)) "$baf" "$pipe"
  rm -f /tmp/bench.lines

  # 64 KiB raw chunks: records of exactly 64 KiB (the topic's record limit),
  # 32 MiB in all.
  chunks=512
  size=$((chunks * 65536))
  dd if=/dev/zero of=/tmp/bench.raw bs=65536 count=$chunks 2> /dev/null
  baf-setup remove bench-raw > /dev/null 2>&1
  bench_alt 'baf-setup create bench-raw --size 64M --record-max 64K > /dev/null 2>&1 &&
    bench_baf bench-raw /tmp/bench.raw --raw' 'bench_pipe /tmp/bench.raw' || return 1
  bench_row "pubmsg --raw \\| submsg, 64 KiB chunks (vs cat \\| cat)" "B/s" $size $size "$baf" "$pipe"
  rm -f /tmp/bench.raw
}

if tools_bench; then t_ok "tools benchmark"; else t_fail "tools benchmark"; fi
