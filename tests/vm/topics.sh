# Named topics, permissions, stats and baf-setup (busybox sh, sourced by
# suite.sh with the module loaded as control_gid=900, the gid of group baf).
# baf-user (uid 1000) starts outside group baf.

as_user() { su baf-user -s /bin/sh -c "$*"; }

check "/dev/baf-control is root:baf 0660" sh -c '[ -c /dev/baf-control ] && [ "$(stat -c "%a %U %G" /dev/baf-control)" = "660 root baf" ]'

check "baf-setup create: /dev/baf/sensors, 0660 root:baf" sh -c 'baf-setup create sensors && [ -c /dev/baf/sensors ] && [ "$(stat -c "%a %U %G" /dev/baf/sensors)" = "660 root baf" ]'
check "create again with the same settings succeeds" baf-setup create sensors
exit_is() { # CODE COMMAND...: the command fails with exactly that exit code
  want=$1; shift
  "$@" >/tmp/out 2>&1; rc=$?
  [ "$rc" = "$want" ] || { echo "exit $rc, want $want:"; cat /tmp/out; return 1; }
  [ "$(wc -l < /tmp/out)" -le 1 ] || { echo "more than one line:"; cat /tmp/out; return 1; }
}
check "create with other settings fails (exit 2, one line)" exit_is 2 baf-setup create sensors --size 1M
check "levels become directories: /dev/baf/robot/arm/joint1" sh -c 'baf-setup create robot/arm/joint1 --mode 0640 && [ "$(stat -c %a /dev/baf/robot/arm/joint1)" = 640 ]'
for bad in 'a//b' '../x' 'x y' 'a/./b' '/lead' 'trail/' "$(printf 'ctl\001')" \
           'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'; do
  check "bad name '$bad' is refused (exit 2)" exit_is 2 baf-setup create "$bad"
done
check "ring size 1000 is refused (exit 2)" exit_is 2 baf-setup create odd --size 1000
check "ring size 1G is refused (exit 2)" exit_is 2 baf-setup create huge --size 1024M
check "a 1 MiB topic with 8 KiB records" sh -c 'baf-setup create big --size 1M --record-max 8K && [ "$(cat /sys/class/baf/big/ring_size)" = 1048576 ] && [ "$(cat /sys/class/baf/big/record_max)" = 8192 ]'

# --- permissions -------------------------------------------------------------
check "a user outside the group cannot read a topic" exit_is 1 as_user 'cat /dev/baf/sensors'
check "a user outside the group cannot write a topic" sh -c '! as_user "echo x > /dev/baf/sensors" 2>/dev/null'
check "a user outside the group cannot create topics (exit 4)" exit_is 4 as_user 'baf-setup create mine'
sed -i 's/^baf:x:900:$/baf:x:900:baf-user/' /etc/group
granted() {
  # Background jobs get their own stdio, so they cannot hold check's pipe.
  su baf-user -s /bin/sh -c 'exec cat /dev/baf/sensors > /tmp/user-read' </dev/null >/dev/null 2>&1 & p=$!
  sleep 0.5
  as_user 'echo from-user > /dev/baf/sensors' || return 1
  wait_for 5 grep -q from-user /tmp/user-read; rc=$?
  kill $p 2>/dev/null; wait $p 2>/dev/null; return $rc
}
check "in group baf the user can read and write" granted
own_topic() { as_user 'baf-setup create mine' && [ "$(stat -c '%U %G' /dev/baf/mine)" = "baf-user baf" ]; }
check "in group baf the user can create a topic of their own" own_topic
check "but cannot give one to root (exit 4)" exit_is 4 as_user 'baf-setup create theirs --owner root'
check "but cannot remove root's topic (exit 4), which stays" sh -c "! as_user 'baf-setup remove sensors' 2>/dev/null && [ -c /dev/baf/sensors ]"
check "and can remove a topic of their own" as_user 'baf-setup remove mine'
sed -i 's/^baf:x:900:baf-user$/baf:x:900:/' /etc/group

# --- levels: a topic and topics below it coexist -----------------------------------
levels() {
  rc=0
  baf-setup create sport > /dev/null || return 1
  [ -c /dev/baf/sport ] || { echo "sport alone is not /dev/baf/sport"; rc=1; }
  # A reader of sport, opened before its node moves, keeps reading.
  cat /dev/baf/sport > /tmp/sport.early 2>&1 & early=$!
  sleep 0.3
  baf-setup create sport/tennis > /dev/null && baf-setup create sport/tennis/player1 > /dev/null || rc=1
  for n in /dev/baf/sport/@ /dev/baf/sport/tennis/@ /dev/baf/sport/tennis/player1; do
    [ -c $n ] || { echo "no node $n"; rc=1; }
  done
  # The other order: the deepest first.
  baf-setup create game/set/match > /dev/null && baf-setup create game > /dev/null && baf-setup create game/set > /dev/null || rc=1
  for n in /dev/baf/game/@ /dev/baf/game/set/@ /dev/baf/game/set/match; do
    [ -c $n ] || { echo "no node $n"; rc=1; }
  done
  # Every one works by name through the tools.
  for t in sport sport/tennis sport/tennis/player1 game game/set game/set/match; do
    echo "to $t" | pubmsg $t || rc=1
    [ "$(submsg --from oldest -n 1 $t)" = "to $t" ] || { echo "$t does not work by name"; rc=1; }
    [ -c "$(sed -n 's/^DEVNAME=/\/dev\//p' /sys/class/baf/$(echo $t | tr / '!')/uevent)" ] || rc=1
  done
  wait_for 5 grep -qx "to sport" /tmp/sport.early || { echo "the early reader of sport lost it across the move"; rc=1; }
  kill $early 2>/dev/null; wait $early 2>/dev/null
  # A subscription to everything takes every level.
  submsg 'sport/#' 'game/#' sport game --from oldest -n 6 > /tmp/levels.out 2> /tmp/levels.err || { cat /tmp/levels.err; rc=1; }
  [ "$(sort /tmp/levels.out | tr '\n' ' ')" = "to game to game/set to game/set/match to sport to sport/tennis to sport/tennis/player1 " ] || { cat /tmp/levels.out; rc=1; }
  # Removing what is below a topic moves its node back.
  baf-setup remove sport/tennis/player1 && [ -c /dev/baf/sport/tennis ] && [ -c /dev/baf/sport/@ ] || { echo "sport/tennis did not move back"; find /dev/baf/sport; rc=1; }
  baf-setup remove sport/tennis && [ -c /dev/baf/sport ] || { echo "sport did not move back"; rc=1; }
  for t in sport game/set/match game/set game; do baf-setup remove $t || rc=1; done
  ! [ -e /dev/baf/sport ] && ! [ -e /dev/baf/game ] || { echo "nodes or directories left behind"; find /dev/baf; rc=1; }
  return $rc
}
check "sport, sport/tennis and sport/tennis/player1 coexist (nodes at <name>/@ when topics sit below), in any order" levels

# --- hardening: names, static topics, minors --------------------------------------
check "the control device's name is refused as a topic (exit 2), with no kernel warning" exit_is 2 baf-setup create baf-control
check "a static topic cannot be removed, even by root; it stays" sh -c '! baf-setup remove fanout0 2>/dev/null && [ -c /dev/fanout0 ]'
minors() {
  baf-setup create minor/a > /dev/null || return 1
  a=$(stat -c '%t:%T' /dev/baf/minor/a)
  mknod /tmp/old-a c $((0x${a%%:*})) $((0x${a##*:})) || return 1
  baf-setup remove minor/a && baf-setup create minor/b > /dev/null || return 1
  b=$(stat -c '%t:%T' /dev/baf/minor/b)
  rc=0
  [ "$a" != "$b" ] || { echo "minor $a given out again at once"; rc=1; }
  # A node copied by major:minor no longer opens anything.
  timeout 2 cat /tmp/old-a < /dev/null > /dev/null 2> /tmp/old.err
  grep -q "No such device" /tmp/old.err || { echo "a copied node of a removed topic opened:"; cat /tmp/old.err; rc=1; }
  rm -f /tmp/old-a; baf-setup remove minor/b; return $rc
}
check "a removed topic's minor is not reused at once; a copied node no longer opens" minors

# --- stats in sysfs and in baf-setup status -------------------------------------
stats() {
  s=/sys/class/baf/sensors
  before=$(cat $s/records) bytes_before=$(cat $s/bytes)
  cat /dev/baf/sensors </dev/null >/dev/null 2>&1 & p=$!
  sleep 0.3
  for i in 1 2 3; do echo "reading $i" > /dev/baf/sensors; done
  ok=1
  [ "$(cat $s/name)" = sensors ] || ok=0
  [ "$(cat $s/records)" = $((before + 3)) ] || ok=0
  [ "$(cat $s/bytes)" = $((bytes_before + 30)) ] || ok=0
  [ "$(cat $s/next_seq)" = $((before + 3)) ] || ok=0
  [ "$(cat $s/readers)" = 1 ] || ok=0
  [ "$(cat $s/ring_size)" = 262144 ] || ok=0
  kill $p; wait $p 2>/dev/null
  [ $ok = 1 ] || { grep . $s/*; return 1; }
  wait_for 5 sh -c "[ \$(cat $s/readers) = 0 ]"
}
check "sysfs stats: records, bytes, readers, seq, ring size" stats
status_table() {
  n=$(cat /sys/class/baf/sensors/records)
  baf-setup status > /tmp/st || return 1
  grep -q "^sensors .* $n .*/dev/baf/sensors 0660 root:baf\$" /tmp/st && grep -q "^robot/arm/joint1 " /tmp/st && grep -q "^fanout0 " /tmp/st || { cat /tmp/st; return 1; }
}
check "baf-setup status lists every topic" status_table
baf-setup status
check "baf-setup status --json" sh -c 'baf-setup status --json > /tmp/j && grep -q "\"name\":\"sensors\"" /tmp/j && grep -q "\"node\":\"/dev/baf/sensors\"" /tmp/j && grep -q "\"records\":$(cat /sys/class/baf/sensors/records)," /tmp/j'

# --- lossless topics (ABI 3) --------------------------------------------------------
fails_with() { # CODE TEXT COMMAND...: exits CODE with one line that contains TEXT
  code=$1 text=$2; shift 2
  exit_is "$code" "$@" || return 1
  grep -qF -- "$text" /tmp/out || { echo "no '$text' in:"; cat /tmp/out; return 1; }
}
sysfs_is() { # TOPIC ATTR VALUE
  v=$(cat "/sys/class/baf/$1/$2") || return 1
  [ "$v" = "$3" ] || { echo "$1/$2 is '$v', want '$3'"; return 1; }
}
check "create --lossless" baf-setup create ll --lossless
check "create --lossless makes sysfs lossless read 1" sysfs_is ll lossless 1
check "create --lossless without a timeout: the default stall_ms 10000" sysfs_is ll stall_ms 10000
check "create --lossless again (default timeout) succeeds" baf-setup create ll --lossless
check "a plain create makes sysfs lossless read 0" sh -c 'baf-setup create plain && [ "$(cat /sys/class/baf/plain/lossless)" = 0 ] && baf-setup remove plain'
check "create --lossless --stall-timeout 250ms" baf-setup create ll-stall --lossless --stall-timeout 250ms
check "--stall-timeout 250ms shows stall_ms 250" sysfs_is ll-stall stall_ms 250
check "--stall-timeout 250ms topic is lossless" sysfs_is ll-stall lossless 1
check "create --lossless again with the same settings succeeds" baf-setup create ll-stall --lossless --stall-timeout 250ms
check "--stall-timeout without --lossless fails (exit 2, says why)" fails_with 2 "--stall-timeout needs --lossless" baf-setup create no-ll --stall-timeout 1s
check "and creates nothing" sh -c '! [ -e /dev/baf/no-ll ] && ! [ -e /sys/class/baf/no-ll ]'
check "a bad --stall-timeout is refused (exit 2)" exit_is 2 baf-setup create no-ll --lossless --stall-timeout soon
check "a stall timeout over an hour is refused (exit 2)" exit_is 2 baf-setup create no-ll --lossless --stall-timeout 3601s
check "lossless topic created again without --lossless fails (exit 2)" fails_with 2 "already exists with other settings" baf-setup create ll
check "plain topic created again with --lossless fails (exit 2)" fails_with 2 "already exists with other settings" baf-setup create sensors --lossless
check "lossless topic created again with another timeout fails (exit 2)" fails_with 2 "already exists with other settings" baf-setup create ll-stall --lossless --stall-timeout 300ms
json_has() { # TOPIC FIELD... : the topic's object in status --json has every "key":value
  baf-setup status --json > /tmp/j || return 1
  # Objects are flat: one a line once split at '}'.
  obj=$(tr '}' '\n' < /tmp/j | grep "\"name\":\"$1\"") || { cat /tmp/j; return 1; }
  shift
  for f in "$@"; do
    case "$obj" in *"$f"*) ;; *) echo "no $f in $obj"; return 1 ;; esac
  done
}
check "status --json: lossless fields of a lossless topic" json_has ll-stall '"lossless":true' '"stall_ms":250' '"lossless_readers":0' '"writer_waits":0' '"demoted":0'
check "status --json: a plain topic is not lossless" json_has sensors '"lossless":false' '"stall_ms":0'
check "status table: LOSSLESS column" sh -c 'baf-setup status > /tmp/st && head -n 1 /tmp/st | grep -q " LOSSLESS  *L_READERS  *WAITS  *DEMOTED  NODE$" && grep -q "^ll-stall .* yes,250ms  *0  *0  *0  /dev/baf/ll-stall " /tmp/st && grep -q "^ll .* yes,10s  *0  *0  *0  /dev/baf/ll " /tmp/st && grep -q "^sensors .* no  *-  *-  *-  /dev/baf/sensors " /tmp/st || { cat /tmp/st; exit 1; }'

# --- apply -----------------------------------------------------------------------
check "apply --topics makes exactly that set (plus baf-test)" sh -c 'baf-setup apply --topics sensors,t1,t2 && [ "$(baf-setup list | grep -v ^fanout | tr "\n" " ")" = "baf-test sensors t1 t2 " ]'
check "apply is idempotent" sh -c 'baf-setup apply --topics sensors,t1,t2 2>/tmp/err && ! [ -s /tmp/err ]'
printf '# topics\nt1 size=32K\nt3 mode=0600 group=root\n' > /tmp/topics
check "apply --file with settings, --no-test-topic" sh -c 'baf-setup apply --file /tmp/topics --no-test-topic && [ "$(baf-setup list | grep -v ^fanout | tr "\n" " ")" = "t1 t3 " ] && [ "$(cat /sys/class/baf/t1/ring_size)" = 32768 ] && [ "$(stat -c "%a %G" /dev/baf/t3)" = "600 root" ]'
printf 't1 size=32K\nt4 lossless stall_timeout=1s\n' > /tmp/topics
check "apply --file with lossless stall_timeout=1s" sh -c 'baf-setup apply --file /tmp/topics --no-test-topic && [ "$(cat /sys/class/baf/t4/lossless)" = 1 ] && [ "$(cat /sys/class/baf/t4/stall_ms)" = 1000 ] && [ "$(cat /sys/class/baf/t1/lossless)" = 0 ] && ! [ -e /dev/baf/t3 ]'
check "apply with the same lossless settings is idempotent" sh -c 'baf-setup apply --file /tmp/topics --no-test-topic 2>/tmp/err && ! [ -s /tmp/err ]'
printf 't1 size=32K lossless=yes\nt4 lossless=no\n' > /tmp/topics
check "apply recreates topics whose lossless setting changed" sh -c 'baf-setup apply --file /tmp/topics --no-test-topic 2>/tmp/err && grep -q "recreated (settings changed): t1, t4" /tmp/err && [ "$(cat /sys/class/baf/t1/lossless)" = 1 ] && [ "$(cat /sys/class/baf/t4/lossless)" = 0 ] && [ "$(cat /sys/class/baf/t4/stall_ms)" = 0 ]'
printf 't1\nt5 stall_timeout=1s\n' > /tmp/topics
check "apply refuses stall_timeout without lossless (exit 2, names the line)" fails_with 2 "line 2: stall_timeout needs lossless" baf-setup apply --file /tmp/topics --no-test-topic
check "and changes nothing" sh -c '[ "$(cat /sys/class/baf/t1/lossless)" = 1 ] && ! [ -e /dev/baf/t5 ]'
# One bad entry after good ones: the whole file is checked first, so none
# of it is applied (no topic made, none removed), and the one-line error
# names the file and line. (Before, a bad group or size came up only when
# its topic's turn came: the topics not in the file were already removed
# and the ones before it made.)
bad_entry() { # LINE: the bad 4th line of a file whose first three are good
  printf 't1 size=32K lossless=yes\nfresh1\nfresh2 size=1M\n%s\n' "$1" > /tmp/topics
  fails_with 2 "baf-setup: /tmp/topics line 4: " baf-setup apply --file /tmp/topics --no-test-topic || return 1
  [ "$(wc -l < /tmp/out)" = 1 ] || { cat /tmp/out; return 1; }
  for t in fresh1 fresh2 bad; do
    ! [ -e /dev/baf/$t ] && ! [ -e /sys/class/baf/$t ] || { echo "$t was made"; return 1; }
  done
  [ -c /dev/baf/t4 ] || { echo "t4 (not in the file) was removed"; return 1; }
  [ "$(cat /sys/class/baf/t1/lossless)" = 1 ]
}
check "apply: a bad size after good entries applies none of them (exit 2, file and line)" bad_entry 'bad size=3M'
check "apply: an unknown group after good entries applies none of them" bad_entry 'bad group=no-such-group'
check "apply: a record_max too large for its ring applies none of them" bad_entry 'bad size=64K record_max=32K'
check "apply: a topic named twice applies none of them" bad_entry 'fresh1 mode=600'
check "remove of a missing topic is fine" baf-setup remove no-such-topic
check "apply with an empty set is refused without --allow-empty (exit 2); nothing removed" sh -c '! baf-setup apply --no-test-topic 2>/dev/null && [ -c /dev/baf/t1 ]'
dry_run() {
  baf-setup apply --topics t1,new1 --no-test-topic --dry-run > /tmp/plan || return 1
  cat /tmp/plan
  grep -q "would create:.*new1" /tmp/plan && ! [ -e /dev/baf/new1 ] && [ -c /dev/baf/t1 ]
}
check "apply --dry-run says what it would do and does nothing" dry_run
baf-setup apply --no-test-topic --allow-empty

# --- the caps hold while removed topics are still open (ABI 5) -------------------
# A removed topic's ring lives until its last file is closed, and counts
# against max_ring_mb until then: create, open, remove in a loop stops.
ring_caps() {
  rmmod fanout || return 1
  insmod /lib/fanout.ko devices=0 max_ring_mb=1 || return 1
  rc=0; holders=""
  for i in 1 2; do
    baf-setup create caps/a --size 512K > /dev/null || { echo "create $i failed"; rc=1; }
    sleep 1000 < /dev/baf/caps/a & holders="$holders $!"
    wait_for 5 sh -c '[ "$(cat /sys/class/baf/caps!a/readers)" = 1 ]' || rc=1
    baf-setup remove caps/a || rc=1
  done
  # Two removed, still open 512 KiB rings fill max_ring_mb=1.
  if baf-setup create caps/a --size 512K > /tmp/caps.err 2>&1; then
    echo "a third 512 KiB ring was made while two removed ones are open"; rc=1
  fi
  grep -qi "memory\|max_ring_mb" /tmp/caps.err || { cat /tmp/caps.err; rc=1; }
  # Closing them frees the room.
  for p in $holders; do kill $p; wait $p 2>/dev/null; done
  wait_for 5 baf-setup create caps/a --size 512K || { echo "closing the removed topics freed nothing"; rc=1; }
  baf-setup remove caps/a
  rmmod fanout || rc=1
  insmod /lib/fanout.ko devices=4 ring_size=262144 control_gid=900 || rc=1
  return $rc
}
check "max_ring_mb counts removed topics until their last file is closed" ring_caps
