# The bridge benchmark (busybox sh, sourced by the bench scenario with
# tests/vm/lib.sh and the module loaded). Three ways between two processes
# in the same VM, measured in the same run:
#
#   through two bridges: baf-bridge-bench baf-pub -> topic s1/tp -> bridge
#     one -> Zenoh (TCP on loopback) -> bridge two -> topic h2/s1/tp ->
#     baf-bridge-bench baf-sub;
#   Zenoh alone: baf-bridge-bench zenoh-pub -> Zenoh -> zenoh-sub, with
#     the bridges' session settings (peer mode, TCP on loopback, no
#     scouting, blocking congestion control) and no baf;
#   local baf: baf-pub -> one topic -> baf-sub.
#
# Throughput is records/s from the first record received to the last;
# every topic on the way is lossless and Zenoh blocks rather than drops, so
# every record must arrive, in order (the table says so). Latency is a
# ping-pong of 64-byte records: a round trip through the bridges crosses
# four bridge hops (out of one, into two, out of two, into one). Prints a
# Markdown table; ratios above 1 for records/s (below 1 for latency) favour
# the bridges.

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
bb=baf-bridge-bench

bb_rate() { # RESULT-LINE: records/s, from got= and elapsed_us=
  echo "$1" | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    us = v["elapsed_us"]; if (us < 1) us = 1; printf "%.0f", (v["got"] - 1) * 1000000 / us }'
}
bb_field() { # RESULT-LINE KEY
  echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
bb_delivered() { # RESULT-LINE: "G of E" (and how many out of order)
  g=$(bb_field "$1" got); e=$(bb_field "$1" expected); o=$(bb_field "$1" out_of_order)
  if [ "${o:-0}" = 0 ]; then echo "$g of $e"; else echo "$g of $e ($o out of order)"; fi
}
bb_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b < 1) b = 1; printf "%.2f", a / b }'; }
bb_lossless() { for bb_t in "$@"; do baf-setup create "$bb_t" --lossless --size 4M > /dev/null 2>&1 || return 1; done; }
bb_is() { [ "$(cat "/sys/class/baf/$(echo "$1" | tr / !)/$2" 2>/dev/null)" = "$3" ]; }

# The two bridges: one exports s1/..., imports s2/... into h1/; two the other way.
bb_bridges() {
  baf-bridge --no-multicast-scouting --log-level warn --host-name one --listen tcp/127.0.0.1:7447 \
    --export 's1/#' --import 'baf/s2/**' --into h1/ 2> /tmp/bb1.log & bb_pid1=$!
  baf-bridge --no-multicast-scouting --log-level warn --host-name two --listen tcp/127.0.0.1:7448 \
    --connect tcp/127.0.0.1:7447 --export 's2/#' --import 'baf/s1/**' --into h2/ 2> /tmp/bb2.log & bb_pid2=$!
}

# bb_through SIZE COUNT: prints the baf-sub result line through the bridges
bb_through() {
  t=s1/tp$1
  bb_lossless $t h2/$t || return 1
  wait_for 20 bb_is $t lossless_readers 1 || { echo "bridge one did not join $t" >&2; return 1; }
  # Until Zenoh has the route (records before it are not delivered).
  n=0
  while [ "$(cat "/sys/class/baf/h2!s1!tp$1/records")" = 0 ] && [ $n -lt 120 ]; do
    echo warm | pubmsg $t; sleep 0.5; n=$((n + 1))
  done
  sleep 1 # the last warm-up records arrive before the reader starts
  $bb baf-sub h2/$t --count "$2" > /tmp/bb.sub 2> /tmp/bb.sub.err & sp=$!
  wait_for 10 bb_is h2/$t lossless_readers 1 || return 1
  $bb baf-pub $t --count "$2" --size "$1" || return 1
  wait $sp
  cat /tmp/bb.sub
}

# bb_zenoh SIZE COUNT: prints the zenoh-sub result line
bb_zenoh() {
  $bb zenoh-sub --listen tcp/127.0.0.1:7457 --key bench/tp --count "$2" > /tmp/bb.sub 2> /tmp/bb.sub.err & sp=$!
  wait_for 20 grep -q ready /tmp/bb.sub.err || return 1
  $bb zenoh-pub --listen tcp/127.0.0.1:7458 --connect tcp/127.0.0.1:7457 --key bench/tp --count "$2" --size "$1" || return 1
  wait $sp
  cat /tmp/bb.sub
}

# bb_local SIZE COUNT: prints the baf-sub result line of one local topic
bb_local() {
  t=local/tp$1
  bb_lossless $t || return 1
  $bb baf-sub $t --count "$2" > /tmp/bb.sub 2> /tmp/bb.sub.err & sp=$!
  wait_for 10 bb_is $t lossless_readers 1 || return 1
  $bb baf-pub $t --count "$2" --size "$1" || return 1
  wait $sp
  cat /tmp/bb.sub
}

# (Shell variables are global: the rows use names of their own.)
bb_row() { # WHAT BRIDGES ZENOH LOCAL (result lines)
  rb=$(bb_rate "$2"); rz=$(bb_rate "$3"); rl=$(bb_rate "$4")
  echo "| records/s, $1 | $rb | $rz | $rl | $(bb_ratio "$rb" "$rz") | $(bb_ratio "$rb" "$rl") | $(bb_delivered "$2") | $(bb_delivered "$3") | $(bb_delivered "$4") |"
}
bb_lat_row() { # WHAT KEY BRIDGES ZENOH LOCAL
  lb=$(bb_field "$3" "$2"); lz=$(bb_field "$4" "$2"); ll=$(bb_field "$5" "$2")
  echo "| $1 | $lb | $lz | $ll | $(bb_ratio "$lb" "$lz") | $(bb_ratio "$lb" "$ll") | $(bb_field "$3" round_trips) | $(bb_field "$4" round_trips) | $(bb_field "$5" round_trips) |"
}

bridge_bench() {
  bb_bridges
  echo "| bridge benchmark | through two bridges | Zenoh alone | local baf | bridges / Zenoh | bridges / local | delivered (bridges) | delivered (Zenoh) | delivered (local) |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for spec in "64 20000" "4096 4000"; do
    set -- $spec
    b=$(bb_through "$1" "$2") || { cat /tmp/bb.sub.err /tmp/bb1.log /tmp/bb2.log; return 1; }
    z=$(bb_zenoh "$1" "$2") || { cat /tmp/bb.sub.err; return 1; }
    l=$(bb_local "$1" "$2") || { cat /tmp/bb.sub.err; return 1; }
    bb_row "$1 B records" "$b" "$z" "$l"
  done
  # Round trips of 64-byte records.
  bb_lossless s1/ping h2/s1/ping s2/pong h1/s2/pong local/ping local/pong || return 1
  $bb baf-pong --in h2/s1/ping --out s2/pong 2> /dev/null & p1=$!
  b=$($bb baf-ping --out s1/ping --in h1/s2/pong --count 1000) || { cat /tmp/bb1.log /tmp/bb2.log; return 1; }
  kill $p1
  $bb zenoh-pong --listen tcp/127.0.0.1:7459 --ping bench/ping --pong bench/pong 2> /dev/null & p2=$!
  z=$($bb zenoh-ping --listen tcp/127.0.0.1:7460 --connect tcp/127.0.0.1:7459 --ping bench/ping --pong bench/pong --count 1000) || return 1
  kill $p2
  $bb baf-pong --in local/ping --out local/pong 2> /dev/null & p3=$!
  l=$($bb baf-ping --out local/ping --in local/pong --count 1000) || return 1
  kill $p3
  wait $p1 $p2 $p3 2> /dev/null
  bb_lat_row "round trip p50, us (64 B)" p50_us "$b" "$z" "$l"
  bb_lat_row "round trip p99, us (64 B)" p99_us "$b" "$z" "$l"
  kill $bb_pid1 $bb_pid2
  wait $bb_pid1 $bb_pid2
  grep -h 'lost' /tmp/bb1.log /tmp/bb2.log >&2
  return 0
}

if bridge_bench; then t_ok "bridge benchmark"; else t_fail "bridge benchmark"; fi
