# The peer benchmark (busybox sh, sourced by the bench and peers scenarios
# with tests/vm/lib.sh and the module loaded): baf beside mosquitto (MQTT
# QoS 0), NATS core, Zenoh (peer mode, TCP on loopback) and iceoryx2
# (shared memory), all on loopback in this VM, through one harness
# (baf-peer-bench: one publisher thread, subscriber threads that count and
# check every message). The brokers run with their defaults, started here
# and stopped at the end. Then the shell path: `mosquitto_pub -l |
# mosquitto_sub` beside `pubmsg | submsg` and `cat | cat`, for 64 B lines.
# Prints Markdown tables; timing fails nothing, a harness that fails does.

. /tests/bench-lib.sh
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# iceoryx2 keeps its shared memory in /dev/shm.
mkdir -p /dev/shm && mount -t tmpfs -o size=512m tmpfs /dev/shm 2>/dev/null

pb_peers_start() {
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\nuser root\n' > /tmp/mosquitto.conf
  mosquitto -c /tmp/mosquitto.conf > /tmp/mosquitto.log 2>&1 &
  pb_mosq=$!
  nats-server -a 127.0.0.1 -p 4222 > /tmp/nats.log 2>&1 &
  pb_nats=$!
  n=0
  while [ $n -lt 100 ]; do
    # Both listening (state 0A) on 1883 (075B) and 4222 (107E).
    if grep -q ':075B 00000000:0000 0A' /proc/net/tcp && grep -q ':107E 00000000:0000 0A' /proc/net/tcp; then return 0; fi
    sleep 0.1; n=$((n + 1))
  done
  cat /tmp/mosquitto.log /tmp/nats.log
  return 1
}
pb_peers_stop() { kill $pb_mosq $pb_nats 2>/dev/null; wait $pb_mosq $pb_nats 2>/dev/null; }

# The baf topics the harness uses (peer-t, peer-ping, peer-pong), with the
# rings of fanout-bench's topics.
pb_topics() {
  for t in peer-t peer-ping peer-pong; do
    baf-setup remove $t > /dev/null 2>&1
    baf-setup create $t --size 4M > /dev/null || return 1
  done
}

# The shell path: 64 B lines (63 characters and a newline), a message each.
pb_shell() {
  lines=${PB_LINES:-50000}
  bench_lines $lines /tmp/pb.lines
  size=$((lines * 64))
  pipe=$(bench_pipe /tmp/pb.lines)
  baf-setup remove pb-lines > /dev/null 2>&1
  baf-setup create pb-lines --size 64M > /dev/null 2>&1 || return 1
  baf=$(bench_baf pb-lines /tmp/pb.lines)
  # mosquitto_sub -C N exits after N messages; it prints each with a
  # newline, as submsg does.
  rm -f /tmp/pb.count
  ( mosquitto_sub -h 127.0.0.1 -t pb/lines -C $lines & echo $! > /tmp/pb.pid; wait ) | bench-io count > /tmp/pb.count & wp=$!
  sleep 1
  dog=$(bench_watch "$(cat /tmp/pb.pid)")
  mosquitto_pub -h 127.0.0.1 -t pb/lines -l < /tmp/pb.lines
  wait $wp 2> /dev/null
  kill $dog 2> /dev/null
  mq=$(bench_span /tmp/pb.count)
  echo "| shell path, 64 B lines | lines/s | output bytes (of $size) | / cat \\| cat |"
  echo "| --- | ---: | ---: | ---: |"
  for row in "cat | cat:$pipe" "pubmsg | submsg:$baf" "mosquitto_pub -l | mosquitto_sub:$mq"; do
    what=${row%%:*}; set -- ${row#*:}
    r=$(bench_rate_us $lines "$1")
    set -- $pipe
    p=$(bench_rate_us $lines "$1")
    set -- ${row#*:}
    echo "| $(echo "$what" | sed 's/|/\\|/g') | $(bench_human "$r") | $2 | $(awk -v a="$r" -v b="$p" 'BEGIN { if (b < 1) b = 1; printf "%.2f", a / b }') |"
  done
  echo "(nats-server ships no command-line client in Debian: NATS has no shell-path row.)"
  # A run that lost lines (its watchdog ended it) is not a figure.
  set -- $mq
  [ "$2" = "$size" ] || { echo "mosquitto_sub got $2 of $size bytes"; return 1; }
  baf-setup remove pb-lines > /dev/null 2>&1
  rm -f /tmp/pb.lines /tmp/pb.count /tmp/pb.pid
}

peer_bench() {
  pb_peers_start || { echo "the brokers did not start"; return 1; }
  pb_topics || { pb_peers_stop; return 1; }
  rc=0
  baf-peer-bench throughput baf-read baf-mmap baf-batch mqtt nats zenoh iceoryx2 --secs "${PB_SECS:-1}" || rc=1
  echo
  baf-peer-bench latency baf-read mqtt nats zenoh iceoryx2 iceoryx2-busy --rounds "${PB_ROUNDS:-1000}" || rc=1
  echo
  pb_shell || rc=1
  pb_peers_stop
  for t in peer-t peer-ping peer-pong; do baf-setup remove $t > /dev/null 2>&1; done
  return $rc
}

if peer_bench; then t_ok "peer benchmark"; else t_fail "peer benchmark"; fi
