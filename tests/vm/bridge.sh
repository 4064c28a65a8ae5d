# baf-bridge in the VM (busybox sh, sourced by suite.sh at its end, or by
# the `bridge` scenario alone). Two bridges on loopback stand in for two
# hosts: "one" owns the topics s1/... and imports into h1/...; "two" owns
# s2/... and imports into h2/... Both export '#' and import 'baf/**'; as the
# two "hosts" share one set of topics here, each excludes the other's
# (s2/# and h2/# for one, s1/# and h1/# for two). Three guards keep records
# from coming back, and each is tested: a bridge does not receive what its
# own session publishes (h1/s1/... would appear), does not export the
# topics under its --into (h1/h2/... would), and never exports a record it
# wrote itself, by the kernel-stamped writer (a fifth bridge with no --into
# on a Zenoh network of its own, below).
#
# Safe defaults (issue 23), below: a bridge exports nothing unless told,
# finds no peer it was not told of (no scouting), and with --auth-users-file
# takes only the users with the right password.
#
# Test topics are lossless where a test counts every record: each bridge
# reads a lossless topic losslessly with Zenoh's blocking congestion
# control, and the receiving topic is made lossless for its submsg, so
# nothing may be lost anywhere and any difference is a failure.

grep -q '^fanout ' /proc/modules || insmod /lib/fanout.ko devices=0 ring_size=262144 control_gid=900
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

br_start() { # N ARGS...: bridge N in the background, log /tmp/bridge-N.log (appended)
  n=$1; shift
  echo "--- started" >> "/tmp/bridge-$n.log"
  baf-bridge "$@" >> "/tmp/bridge-$n.log" 2>&1 &
  eval "br_pid$n=\$!"
}
br_one() {
  br_start 1 --host-name one --listen tcp/127.0.0.1:7447 \
    --export '#' --exclude 's2/#,h2/#' --import 'baf/**' --into h1/
}
br_two() {
  br_start 2 --host-name two --listen tcp/127.0.0.1:7448 --connect tcp/127.0.0.1:7447 \
    --export '#' --exclude 's1/#,h1/#' --import 'baf/**' --into h2/
}
br_stop() { # N: SIGTERM to bridge N; it must exit 0 and say it stopped
  eval "p=\$br_pid$1"
  kill "$p" || return 1
  wait "$p"; rc=$?
  [ "$rc" = 0 ] || { echo "bridge $1 exited $rc"; tail -n 5 "/tmp/bridge-$1.log"; return 1; }
  tail -n 3 "/tmp/bridge-$1.log" | grep -q 'info: stopped: exported' ||
    { echo "bridge $1 did not log its stop"; tail -n 5 "/tmp/bridge-$1.log"; return 1; }
}
br_sys() { # TOPIC ATTR: the topic's sysfs value ('/' is '!' there)
  cat "/sys/class/baf/$(echo "$1" | tr / !)/$2" 2>/dev/null || echo 0
}
br_connected() { # N: bridge N is connected to a peer, as its log says since its last start
  awk '/^--- started|disconnected from Zenoh peer/ { c = 0 } /connected to Zenoh peer/ { c = 1 } END { exit !c }' "/tmp/bridge-$1.log"
}
# br_route FROM TO: publishes to FROM until it shows up in TO (Zenoh drops
# what is published before the other side's subscription has arrived).
br_route() {
  i=0
  while [ $i -lt 60 ]; do
    echo ready | pubmsg "$1" 2>/dev/null
    [ "$(br_sys "$2" records)" -gt 0 ] 2>/dev/null && return 0
    sleep 0.5; i=$((i + 1))
  done
  echo "nothing arrived in $2"; return 1
}
br_lossless() { # TOPIC...: created lossless
  for br_t in "$@"; do baf-setup create "$br_t" --lossless > /dev/null || return 1; done
}
br_count() { wc -l < "$1" 2>/dev/null || echo 0; }
br_increasing() { awk 'NR > 1 && $1 <= p { bad = 1 } { p = $1 } END { exit bad }' "$1"; }
# Conditions for wait_for (evaluated at each try):
br_is() { [ "$(br_sys "$1" "$2")" = "$3" ]; }            # TOPIC ATTR VALUE
br_atleast() { [ "$(br_sys "$1" "$2")" -ge "$3" ]; }     # TOPIC ATTR N
br_lines_ge() { [ "$(br_count "$1")" -ge "$2" ]; }       # FILE N
br_bytes_ge() { [ "$(wc -c < "$1")" -ge "$2" ]; }        # FILE N
br_last_gt() { [ "$(tail -n 1 "$1")" -gt "$2" ] 2>/dev/null; }  # FILE N
br_last_is() { [ "$(tail -n 1 "$1")" = "$2" ]; }         # FILE N
# br_check NAME FUNCTION [ARGS]: as check, but in this shell (the bridges
# are its children: their pids and exit codes stay here).
# Its "note:" lines, and how long it took, are shown when it passes too.
br_check() {
  name=$1; shift
  t0=$(date +%s)
  if "$@" > /tmp/br.check 2>&1; then
    grep '^note: ' /tmp/br.check
    echo "note: $(($(date +%s) - t0)) s"
    t_ok "$name"
  else
    cat /tmp/br.check; t_fail "$name"
  fi
}

rm -f /tmp/bridge-*.log
br_one
br_two
br_up() {
  wait_for 60 br_connected 1 && wait_for 60 br_connected 2 || { cat /tmp/bridge-1.log /tmp/bridge-2.log; return 1; }
  br_route s1/ready h2/s1/ready && br_route s2/ready h1/s2/ready
}
br_check "baf-bridge: two bridges on loopback connect, and a record crosses each way" br_up

br_info_logs() {
  grep -q 'info: exporting topic s1/ready as baf/s1/ready' /tmp/bridge-1.log &&
    grep -q 'info: importing key baf/s1/ready into topic h2/s1/ready' /tmp/bridge-2.log &&
    grep -q 'info: created topic h2/s1/ready for key baf/s1/ready' /tmp/bridge-2.log ||
    { cat /tmp/bridge-1.log /tmp/bridge-2.log; return 1; }
}
br_check "baf-bridge: logs at info level what it exports, imports and creates" br_info_logs

# --- lines, in order, byte for byte -------------------------------------------
br_lines() {
  br_lossless s1/lines h2/s1/lines || return 1
  submsg --lossless h2/s1/lines > /tmp/br.lines 2> /tmp/br.lines.err & sp=$!
  wait_for 10 br_is h2/s1/lines lossless_readers 1 || return 1
  # Bridge one joins the new topic as a lossless reader.
  wait_for 20 br_is s1/lines lossless_readers 1 || { echo "bridge one did not join s1/lines"; return 1; }
  seq 1 20000 > /tmp/br.seq
  pubmsg s1/lines < /tmp/br.seq || return 1
  wait_for 180 br_lines_ge /tmp/br.lines 20000
  kill $sp; wait $sp 2>/dev/null
  cmp /tmp/br.seq /tmp/br.lines || { echo "got $(br_count /tmp/br.lines) lines"; cat /tmp/br.lines.err; return 1; }
}
br_check "baf-bridge: seq 1 20000 | pubmsg s1/lines arrives in h2/s1/lines in order, byte for byte" br_lines

# --- binary records up to the record limit --------------------------------------
br_be32() { # N: N as 4 big-endian bytes
  printf "\\$(printf %03o $((($1 >> 24) & 255)))\\$(printf %03o $((($1 >> 16) & 255)))\\$(printf %03o $((($1 >> 8) & 255)))\\$(printf %03o $(($1 & 255)))"
}
br_binary() {
  br_lossless s1/bin h2/s1/bin || return 1
  max=$(br_sys s1/bin record_max)
  [ "$max" = 65536 ] || { echo "record_max is $max"; return 1; }
  : > /tmp/br.frames
  for size in 1 2 255 4095 4096 4097 30000 65535 65536 7 65536 12345; do
    br_be32 $size >> /tmp/br.frames
    head -c $size /dev/urandom >> /tmp/br.frames
  done
  submsg --lossless --len32 h2/s1/bin > /tmp/br.bin 2> /tmp/br.bin.err & sp=$!
  wait_for 10 br_is h2/s1/bin lossless_readers 1 || return 1
  wait_for 20 br_is s1/bin lossless_readers 1 || return 1
  pubmsg --len32 s1/bin < /tmp/br.frames || return 1
  want=$(wc -c < /tmp/br.frames)
  wait_for 60 br_bytes_ge /tmp/br.bin "$want"
  kill $sp; wait $sp 2>/dev/null
  cmp /tmp/br.frames /tmp/br.bin || { echo "got $(wc -c < /tmp/br.bin) of $want bytes"; cat /tmp/br.bin.err; return 1; }
  [ "$(br_sys h2/s1/bin records)" = 12 ] || { echo "h2/s1/bin has $(br_sys h2/s1/bin records) records, not 12"; return 1; }
}
br_check "baf-bridge: binary records of 1 B to the 64 KiB record limit arrive byte for byte, one record each" br_binary

# --- both directions at once, no echo -------------------------------------------
br_both() {
  br_lossless s1/both h2/s1/both s2/both h1/s2/both || return 1
  submsg --lossless h2/s1/both > /tmp/br.both2 2>&1 & sp2=$!
  submsg --lossless h1/s2/both > /tmp/br.both1 2>&1 & sp1=$!
  wait_for 10 br_is h2/s1/both lossless_readers 1 || return 1
  wait_for 10 br_is h1/s2/both lossless_readers 1 || return 1
  wait_for 20 br_is s1/both lossless_readers 1 || return 1
  wait_for 20 br_is s2/both lossless_readers 1 || return 1
  seq 1 5000 > /tmp/br.want1
  seq 5001 10000 > /tmp/br.want2
  pubmsg s1/both < /tmp/br.want1 & pp1=$!
  pubmsg s2/both < /tmp/br.want2 & pp2=$!
  wait $pp1 && wait $pp2 || return 1
  wait_for 120 br_lines_ge /tmp/br.both2 5000
  wait_for 120 br_lines_ge /tmp/br.both1 5000
  sleep 2 # room for an echo, if there were one, to arrive
  kill $sp1 $sp2; wait $sp1 $sp2 2>/dev/null
  cmp /tmp/br.want1 /tmp/br.both2 && cmp /tmp/br.want2 /tmp/br.both1 || return 1
  echoes=$(baf-setup list | grep -E '^(h1/s1|h2/s2|h1/h2|h2/h1)(/|$)')
  [ -z "$echoes" ] || { echo "echoed topics: $echoes"; return 1; }
}
br_check "baf-bridge: '#' both ways at once, each side gets the other's records in order, and nothing echoes" br_both

# --- loss before export is counted and sent on ---------------------------------
br_loss() {
  baf-setup create s1/lossy --size 16K > /dev/null && br_lossless h2/s1/lossy || return 1
  submsg --lossless h2/s1/lossy > /tmp/br.lossy 2>&1 & sp=$!
  wait_for 10 br_is h2/s1/lossy lossless_readers 1 || return 1
  wait_for 20 br_atleast s1/lossy readers 1 || return 1
  # Bridge one stops reading while 2000 records go through a 16 KiB ring.
  kill -STOP $br_pid1
  seq 1 2000 | pubmsg s1/lossy
  kill -CONT $br_pid1
  wait_for 30 grep -q 'records of topic s1/lossy before export' /tmp/bridge-1.log || { tail /tmp/bridge-1.log; return 1; }
  wait_for 30 grep -q 'host one lost .* of topic s1/lossy before its bridge exported them' /tmp/bridge-2.log || { tail /tmp/bridge-2.log; return 1; }
  sum='{ s += $1 } END { print s + 0 }'
  lost1=$(sed -n 's/.*lost \([0-9]*\) records\{0,1\} of topic s1\/lossy before export.*/\1/p' /tmp/bridge-1.log | awk "$sum")
  lost2=$(sed -n 's/.*host one lost \([0-9]*\) records\{0,1\} of topic s1\/lossy before its.*/\1/p' /tmp/bridge-2.log | awk "$sum")
  wait_for 60 br_lines_ge /tmp/br.lossy $((2000 - lost1))
  kill $sp; wait $sp 2>/dev/null
  got=$(br_count /tmp/br.lossy)
  echo "note: lost before export: $lost1 (one), $lost2 (reported by two); delivered $got"
  [ "$lost1" -gt 0 ] && [ "$lost1" = "$lost2" ] && [ $((got + lost1)) = 2000 ] &&
    [ "$(tail -n 1 /tmp/br.lossy)" = 2000 ] && br_increasing /tmp/br.lossy
}
br_check "baf-bridge: records lost before export are counted on both sides (delivered + lost = written)" br_loss

# --- a third bridge with the JSON envelope ----------------------------------------
br_envelope() {
  br_start 3 --host-name three --listen tcp/127.0.0.1:7449 --connect tcp/127.0.0.1:7447 \
    --import 'baf/s1/env' --into h3/ --envelope json
  wait_for 60 br_connected 3 || { cat /tmp/bridge-3.log; return 1; }
  br_route s1/env h3/s1/env || return 1
  # From the oldest: the bridges one and two read the topic too.
  submsg --from oldest h3/s1/env > /tmp/br.env 2>&1 & sp=$!
  printf 'h\303\251llo\n' > /tmp/br.env.in
  pubmsg s1/env < /tmp/br.env.in & pp=$!
  wait $pp
  wait_for 30 grep -q 'payload' /tmp/br.env
  kill $sp; wait $sp 2>/dev/null
  line=$(grep 'llo' /tmp/br.env)
  echo "note: $line"
  for want in '{"host":"one","topic":"s1/env","seq":' '"timestamp":' '"realtime":' "\"pid\":$pp,\"uid\":0,\"lost\":0," '"payload":"héllo\n","encoding":"utf8"}'; do
    case "$line" in *"$want"*) ;; *) echo "no $want"; return 1 ;; esac
  done
  br_stop 3
}
br_check "baf-bridge --envelope json: host, topic, seq, times, the writer's pid and uid, loss and payload" br_envelope

# --- a bridge restarted mid-stream resumes -----------------------------------------
br_restart() {
  br_lossless s1/restart h2/s1/restart || return 1
  submsg --lossless h2/s1/restart > /tmp/br.restart 2>&1 & sp=$!
  wait_for 10 br_is h2/s1/restart lossless_readers 1 || return 1
  wait_for 20 br_is s1/restart lossless_readers 1 || return 1
  (i=0; while [ $i -lt 1000 ]; do i=$((i + 1)); echo $i; usleep 10000; done) | pubmsg s1/restart & pp=$!
  wait_for 30 br_lines_ge /tmp/br.restart 50 || return 1
  # The importing side restarts...
  br_stop 2 || return 1
  before=$(tail -n 1 /tmp/br.restart)
  br_two
  wait_for 60 br_last_gt /tmp/br.restart "$before" || { echo "nothing after two restarted (at $before)"; tail /tmp/bridge-2.log; return 1; }
  # ... then the listening, exporting side: two reconnects to it.
  br_stop 1 || return 1
  before=$(tail -n 1 /tmp/br.restart)
  br_one
  wait_for 60 br_last_gt /tmp/br.restart "$before" || { echo "nothing after one restarted (at $before)"; tail /tmp/bridge-1.log /tmp/bridge-2.log; return 1; }
  wait $pp
  wait_for 60 br_last_is /tmp/br.restart 1000 || { echo "the stream ended at $(tail -n 1 /tmp/br.restart)"; return 1; }
  kill $sp; wait $sp 2>/dev/null
  echo "note: $(br_count /tmp/br.restart) of 1000 records arrived across two restarts"
  br_increasing /tmp/br.restart
}
br_check "baf-bridge: restarted mid-stream (SIGTERM: exit 0), each side resumes and the stream goes on in order" br_restart

# --- never a record it wrote itself --------------------------------------------------
# Bridge five has no --into: it imports baf/w/** into w/... and exports w/#,
# the same topics, on a Zenoh network of its own with a plain Zenoh
# publisher and subscriber. The subscriber must get the publisher's 100
# samples and the one record pubmsg writes locally, and nothing more: what
# five imported is in w/t (written by five), and five must not send it out.
br_writer() {
  rm -f /tmp/br.wsub /tmp/br.wsub.err
  baf-bridge-bench zenoh-sub --listen tcp/127.0.0.1:7451 --key 'baf/w/**' --count 1000 --idle 5 --timeout 120 \
    > /tmp/br.wsub 2> /tmp/br.wsub.err & zs=$!
  wait_for 30 grep -q ready /tmp/br.wsub.err || return 1
  br_start 5 --host-name five --listen tcp/127.0.0.1:7452 --connect tcp/127.0.0.1:7451 \
    --import 'baf/w/**' --export 'w/#'
  wait_for 60 br_connected 5 || { cat /tmp/bridge-5.log; return 1; }
  baf-bridge-bench zenoh-pub --listen tcp/127.0.0.1:7453 --connect tcp/127.0.0.1:7451 \
    --connect tcp/127.0.0.1:7452 --wait-ms 3000 --key baf/w/t --count 100 --size 64 || return 1
  wait_for 30 br_atleast w/t records 1 || { echo "five imported nothing"; cat /tmp/bridge-5.log; return 1; }
  echo local | pubmsg w/t
  wait $zs
  imported=$(($(br_sys w/t records) - 1))
  echo "note: five imported $imported of 100 samples into w/t; the subscriber: $(cat /tmp/br.wsub)"
  grep -q '^got=101 ' /tmp/br.wsub || return 1
  br_stop 5
}
br_check "baf-bridge with no --into never exports what it imported itself (the kernel-stamped writer)" br_writer

# --- samples of another wire version, or malformed, are dropped with a warning ---------
# A plain Zenoh publisher stands in for an older bridge (a version 1
# attachment, 72 bytes) and for a broken one (a version 2 attachment that
# counts one record, with a payload that is no record frame). Bridge one
# says why once for each kind, writes none of it, and goes on importing.
br_badwire() {
  v1="01000000$(printf '%0136d' 0)"
  v2="0200000001000000$(printf '%080d' 0)"
  for v in v1 v2; do
    eval "att=\$$v"
    baf-bridge-bench zenoh-pub --listen tcp/127.0.0.1:7458 --connect tcp/127.0.0.1:7447 \
      --key "baf/bad/$v" --count 5 --size 64 --attachment-hex "$att" || return 1
  done
  wait_for 20 grep -q 'cannot import a sample of key baf/bad/v1: it comes from an older baf-bridge (wire version 1' /tmp/bridge-1.log &&
    wait_for 20 grep -q 'cannot import a sample of key baf/bad/v2: its payload' /tmp/bridge-1.log ||
    { tail -n 20 /tmp/bridge-1.log; return 1; }
  grep 'cannot import a sample' /tmp/bridge-1.log | sed 's/^/note: /'
  [ "$(grep -c 'cannot import a sample of key baf/bad/v1' /tmp/bridge-1.log)" = 1 ] || { echo "warned more than once"; return 1; }
  [ "$(br_sys h1/bad/v1 records)" = 0 ] && [ "$(br_sys h1/bad/v2 records)" = 0 ] || { echo "a bad sample was written"; return 1; }
  kill -0 "$br_pid1" || { echo "bridge one is gone"; tail /tmp/bridge-1.log; return 1; }
  br_route s2/afterbad h1/s2/afterbad
}
br_check "baf-bridge: a sample of wire version 1 (an older bridge) or a malformed one is dropped with a warning, and import goes on" br_badwire

# --- safe by default: nothing exported unless told -------------------------------------
# Bridge six only imports; a plain Zenoh subscriber of baf/** connected to
# it gets nothing of a topic written here. The control: bridge seven, the
# same with --export 'v/#', sends it. Six listens on every address without
# authentication, and says so.
br_noexport() {
  br_start 6 --host-name six --listen tcp/0.0.0.0:7454 --import 'baf/none/**'
  baf-bridge-bench zenoh-sub --connect tcp/127.0.0.1:7454 --key 'baf/**' --count 1 --timeout 10 \
    > /tmp/br.none 2> /tmp/br.none.err & zs=$!
  wait_for 30 br_connected 6 || { cat /tmp/bridge-6.log /tmp/br.none.err; return 1; }
  i=0; while [ $i -lt 10 ]; do echo x | pubmsg v/t; sleep 0.5; i=$((i + 1)); done
  wait $zs
  grep -q '^got=0 ' /tmp/br.none || { echo "six exported:"; cat /tmp/br.none /tmp/bridge-6.log; return 1; }
  grep -q 'warning: listening on tcp/0.0.0.0:7454 without authentication' /tmp/bridge-6.log ||
    { echo "no warning"; cat /tmp/bridge-6.log; return 1; }
  br_stop 6 || return 1
  br_start 7 --host-name seven --listen tcp/127.0.0.1:7454 --export 'v/#'
  baf-bridge-bench zenoh-sub --connect tcp/127.0.0.1:7454 --key 'baf/**' --count 1 --timeout 40 \
    > /tmp/br.some 2> /tmp/br.some.err & zs=$!
  wait_for 30 br_connected 7 || { cat /tmp/bridge-7.log /tmp/br.some.err; return 1; }
  i=0; while kill -0 $zs 2>/dev/null && [ $i -lt 60 ]; do echo x | pubmsg v/t; sleep 0.5; i=$((i + 1)); done
  wait $zs
  grep -q '^got=1 ' /tmp/br.some || { echo "seven did not export:"; cat /tmp/br.some /tmp/bridge-7.log; return 1; }
  grep -q 'warning:' /tmp/bridge-7.log && { echo "a warning on loopback:"; cat /tmp/bridge-7.log; return 1; }
  br_stop 7
}
br_check "baf-bridge: exports nothing unless told (--import only: a subscriber of baf/** gets nothing), warns of an open endpoint" br_noexport

# --- safe by default: no scouting -------------------------------------------------------
# Bridges ten and eleven listen on loopback, told of no other: they do not
# find each other. The control: the same two with --multicast-scouting (on
# lo, made able to multicast) do.
br_scout() {
  br_start 10 --host-name ten --listen tcp/127.0.0.1:7456 --import 'baf/x/**' --into h10/
  br_start 11 --host-name eleven --listen tcp/127.0.0.1:7457 --export 'x/#'
  sleep 6
  if br_connected 10 || br_connected 11; then
    echo "found each other without scouting"; cat /tmp/bridge-10.log /tmp/bridge-11.log; return 1
  fi
  br_stop 10 && br_stop 11 || return 1
  ip link set lo multicast on 2>/dev/null || ifconfig lo multicast
  ip route add 224.0.0.0/4 dev lo 2>/dev/null || route add -net 224.0.0.0 netmask 240.0.0.0 dev lo 2>/dev/null
  lo='scouting/multicast/interface="lo"'
  br_start 10 --host-name ten --listen tcp/127.0.0.1:7456 --import 'baf/x/**' --into h10/ --multicast-scouting --zenoh-set "$lo"
  br_start 11 --host-name eleven --listen tcp/127.0.0.1:7457 --export 'x/#' --multicast-scouting --zenoh-set "$lo"
  wait_for 30 br_connected 10 && wait_for 30 br_connected 11 ||
    { echo "the control: --multicast-scouting found no peer"; cat /tmp/bridge-10.log /tmp/bridge-11.log; return 1; }
  br_route x/t h10/x/t || return 1
  br_stop 10 && br_stop 11
}
br_check "baf-bridge: two bridges told of no other find no peer (no scouting by default; --multicast-scouting does)" br_scout

# --- user/password authentication -------------------------------------------------------
# Bridge eight takes only user nine (--auth-users-file). Nine with a wrong
# password is refused and nothing crosses; with the right one, records do.
br_auth() {
  printf 'nine:right horse battery\n' > /tmp/br.users
  printf 'right horse battery\n' > /tmp/br.right
  printf 'wrong horse battery\n' > /tmp/br.wrong
  br_start 8 --host-name eight --listen tcp/127.0.0.1:7455 --import 'baf/a9/**' --into h8/ \
    --auth-users-file /tmp/br.users
  br_start 9 --host-name nine --connect tcp/127.0.0.1:7455 --export 'a9/#' \
    --auth-user nine --auth-password-file /tmp/br.wrong
  i=0; while [ $i -lt 12 ]; do echo x | pubmsg a9/t; sleep 0.5; i=$((i + 1)); done
  if br_connected 9 || br_connected 8; then
    echo "connected with a wrong password"; cat /tmp/bridge-8.log /tmp/bridge-9.log; return 1
  fi
  [ "$(br_sys h8/a9/t records)" = 0 ] || { echo "a record crossed with a wrong password"; return 1; }
  br_stop 9 || return 1
  br_start 9 --host-name nine --connect tcp/127.0.0.1:7455 --export 'a9/#' \
    --auth-user nine --auth-password-file /tmp/br.right
  wait_for 60 br_connected 9 || { echo "not connected with the right password"; cat /tmp/bridge-8.log /tmp/bridge-9.log; return 1; }
  br_route a9/t h8/a9/t || return 1
  grep -q 'authenticating as nine' /tmp/bridge-9.log || { cat /tmp/bridge-9.log; return 1; }
  br_stop 9 && br_stop 8
}
br_check "baf-bridge --auth-users-file: a wrong password is refused and nothing crosses; the right one connects and records cross" br_auth

# --- usage errors --------------------------------------------------------------------
br_usage() { # ARGS...: exit 2 with one line on stderr
  baf-bridge "$@" > /tmp/br.usage 2>&1; rc=$?
  [ $rc = 2 ] && [ "$(br_count /tmp/br.usage)" = 1 ] || { cat /tmp/br.usage; echo "exit $rc"; return 1; }
}
br_check "baf-bridge: a bad pattern is one line and exit 2" br_usage --export 'a/#/b'
br_check "baf-bridge: a bad key expression is one line and exit 2" br_usage --import 'baf/#'
br_check "baf-bridge: a bad endpoint is one line and exit 2" br_usage --export '#' --connect tcp/127.0.0.1
br_check "baf-bridge: an endpoint of a transport it lacks is one line and exit 2" br_usage --export '#' --listen udp/127.0.0.1:7450
printf 'import = ["baf/**"]\n[zenoh]\nconect = ["tcp/127.0.0.1:7447"]\n' > /tmp/br.bad.toml
br_check "baf-bridge: an unknown key in the configuration file is one line and exit 2" br_usage --config /tmp/br.bad.toml
br_check "baf-bridge: -e is --exclude (as in submsg): -e '#' alone exports nothing, exit 2" br_usage -e '#' --connect tcp/127.0.0.1:7447

# --- both stop cleanly; nothing stays open --------------------------------------------
br_down() {
  br_stop 1 && br_stop 2 || return 1
  for br_t in $(baf-setup list); do baf-setup remove "$br_t" > /dev/null; done
  rmmod fanout
}
br_check "baf-bridge: both bridges stop on SIGTERM with exit 0, and the module unloads" br_down
