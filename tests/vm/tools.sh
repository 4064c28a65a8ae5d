# pubmsg and submsg end to end on the real module (busybox sh, sourced by
# suite.sh with the module loaded: devices=4 ring_size=262144, so
# /dev/fanout0..3 have 256 KiB rings and 64 KiB records, and the control
# device exists, so we run as root and may create topics).
#
# Every background process writes to files, never to the check's output
# pipe, and is stopped before its check returns.

# The helpers (mk, sub_bg, stop, exit_is...) are in helpers.sh, shared with
# record.sh.
. /tests/helpers.sh

# --- basics: help, version, man page, completions -----------------------------
for tool in pubmsg submsg; do
  check "$tool --help shows examples and exit codes" sh -c "$tool --help | grep -q Examples: && $tool --help | grep -q 'Exit codes'"
  check "$tool --version" sh -c "$tool --version | grep -q '^$tool [0-9]'"
  check "$tool --generate man|bash|zsh|fish from the clap definitions" sh -c \
    "$tool --generate man | grep -q '^.TH $tool' && $tool --generate bash | grep -q _$tool && $tool --generate zsh | grep -q '#compdef $tool' && $tool --generate fish | grep -q 'complete -c $tool'"
done

# --- one publisher, two subscribers, 100000 lines -------------------------------
# A 4 MiB ring holds the whole run (100000 records of 40 bytes with their
# headers), so the check is exactness, not speed.
hundred_k() {
  mk lines 4M
  seq 1 100000 > /tmp/want
  sub_bg /tmp/l1 -n 100000 lines; p1=$SUB
  sub_bg /tmp/l2 -n 100000 lines; p2=$SUB
  wait_for 10 has_readers lines 2 || { stop $p1 $p2; echo "subscribers did not start"; return 1; }
  seq 1 100000 | pubmsg lines || { stop $p1 $p2; return 1; }
  # -n 100000: each subscriber ends by itself after the last line.
  wait_for 120 gone $p1; wait_for 120 gone $p2
  stop $p1 $p2
  ok=0
  cmp /tmp/want /tmp/l1 && cmp /tmp/want /tmp/l2 && ok=1
  cat /tmp/l1.err /tmp/l2.err
  [ $ok = 1 ] && ! [ -s /tmp/l1.err ] && ! [ -s /tmp/l2.err ] && [ "$(sysfs lines records)" = 100000 ]
}
check "seq 1 100000 | pubmsg: two submsg each get exactly 1..100000 in order, nothing lost" hundred_k
# The same on a 256 KiB static ring (about 6500 of these records). The
# writer never waits for readers (that is the lossy topic's contract; lossless
# readers are a later issue), so with pubmsg batching a reader may be lapped
# here, depending on the host's load. What each reader gets must still be
# exact: strictly increasing lines of 1..100000 ending with 100000, nothing
# torn or repeated, and a loss report on stderr exactly when lines are missing.
hundred_k_small() {
  sub_bg /tmp/l1 /dev/fanout0; p1=$SUB
  sub_bg /tmp/l2 /dev/fanout0; p2=$SUB
  wait_for 10 has_readers fanout0 2 || { stop $p1 $p2; return 1; }
  seq 1 100000 | pubmsg /dev/fanout0 || { stop $p1 $p2; return 1; }
  wait_for 60 sh -c 'tail -n 1 /tmp/l1 | grep -qx 100000 && tail -n 1 /tmp/l2 | grep -qx 100000'
  stop $p1 $p2
  cat /tmp/l1.err /tmp/l2.err
  for f in /tmp/l1 /tmp/l2; do
    [ "$(tail -n 1 $f)" = 100000 ] || { echo "$f does not end with 100000"; return 1; }
    awk 'BEGIN { p = 0 } !/^[0-9]+$/ || $1 <= p || $1 > 100000 { print FILENAME ": line " NR " is \"" $0 "\" after " p; bad = 1; exit } { p = $1 } END { exit bad }' $f || return 1
    got=$(wc -l < $f)
    if [ "$got" = 100000 ]; then
      ! [ -s $f.err ] || { echo "$f: nothing lost, yet a loss report"; return 1; }
    else
      grep -q "lost [0-9]* records on topic fanout0" $f.err || { echo "$f: $((100000 - got)) lost, no report"; return 1; }
    fi
  done
}
check "the same through a 256 KiB ring (/dev/fanout0): in order, exact, any loss reported" hundred_k_small

# --- binary data: --len32 frames round-trip byte for byte ------------------------
be32() { # N: N as 4 big-endian bytes
  printf "\\$(printf %03o $(($1 >> 24 & 255)))\\$(printf %03o $(($1 >> 16 & 255)))\\$(printf %03o $(($1 >> 8 & 255)))\\$(printf %03o $(($1 & 255)))"
}
len32() {
  mk bin 1M
  : > /tmp/frames; : > /tmp/payloads
  for n in 1 3 255 256 4096 10000 65535 65536 7 100000; do
    head -c $n /dev/urandom > /tmp/one
    be32 $n >> /tmp/frames; cat /tmp/one >> /tmp/frames; cat /tmp/one >> /tmp/payloads
  done
  sub_bg /tmp/b1 --len32 -n 10 bin; p1=$SUB
  sub_bg /tmp/b2 -n 10 bin; p2=$SUB
  wait_for 10 has_readers bin 2 || { stop $p1 $p2; return 1; }
  pubmsg --len32 bin < /tmp/frames || { stop $p1 $p2; return 1; }
  wait_for 30 gone $p1; wait_for 30 gone $p2
  stop $p1 $p2
  [ "$(sysfs bin records)" = 10 ] || { echo "records: $(sysfs bin records)"; return 1; }
  cmp /tmp/frames /tmp/b1 && cmp /tmp/payloads /tmp/b2
}
check "pubmsg --len32 | submsg --len32: 10 random frames (1 B to 100 kB) byte for byte, one record each" len32
too_big() {
  { be32 300000; head -c 300000 /dev/zero; } > /tmp/big.frame
  exit_is 2 pubmsg --len32 bin < /tmp/big.frame && grep -q "record limit" /tmp/x.err
}
check "pubmsg --len32 refuses a frame above the record limit (exit 2, one line)" too_big
truncated() {
  printf '\000\000\000\011abc' > /tmp/trunc
  exit_is 2 pubmsg --len32 bin < /tmp/trunc && grep -q "ended inside a frame" /tmp/x.err
}
check "pubmsg --len32 refuses a truncated frame (exit 2, one line)" truncated

# --- --json: provenance filled in by the kernel --------------------------------
json() {
  mk js 64K
  [ $HAVE_SETUP = 1 ] && chmod 666 /dev/baf/js
  sub_bg /tmp/j --json -n 3 js; p=$SUB
  wait_for 10 has_readers js 1 || { stop $p; return 1; }
  printf 'hello "world"\n' > /tmp/in
  pubmsg js < /tmp/in & pp=$!
  wait $pp
  printf '\377\376\n' | pubmsg js
  if [ $HAVE_SETUP = 1 ]; then
    su baf-user -s /bin/sh -c 'echo from-user | pubmsg js'
  else
    echo from-user | pubmsg js
  fi
  wait_for 10 gone $p; stop $p
  cat /tmp/j
  l1=$(sed -n 1p /tmp/j); l2=$(sed -n 2p /tmp/j); l3=$(sed -n 3p /tmp/j)
  echo "$l1" | grep -q "^{\"topic\":\"js\",\"seq\":0,\"timestamp\":[0-9]*,\"pid\":$pp,\"uid\":0,\"writer\":[1-9][0-9]*,\"lost\":0,\"payload\":\"hello \\\\\"world\\\\\"\\\\n\",\"encoding\":\"utf8\",\"time\":\"[^\"]*\"}\$" || return 1
  echo "$l2" | grep -q '"seq":1,.*"payload":"//4K","encoding":"base64","time":"[^"]*"}$' || return 1
  if [ $HAVE_SETUP = 1 ]; then
    echo "$l3" | grep -q '"seq":2,.*"uid":1000,.*"payload":"from-user\\n"' || return 1
  fi
  ts1=$(echo "$l1" | sed 's/.*"timestamp":\([0-9]*\).*/\1/'); ts2=$(echo "$l2" | sed 's/.*"timestamp":\([0-9]*\).*/\1/')
  [ "$ts2" -gt "$ts1" ] || return 1
  # Each pubmsg process has its own writer identity (a pidfs inode number).
  w1=$(echo "$l1" | sed 's/.*"writer":\([0-9]*\).*/\1/'); w2=$(echo "$l2" | sed 's/.*"writer":\([0-9]*\).*/\1/')
  [ "$w1" -gt 0 ] && [ "$w2" -gt 0 ] && [ "$w1" != "$w2" ]
}
check "submsg --json: topic, seq, timestamp, the publisher's pid, uid and writer identity, lost, payload (utf8 or base64)" json

# --- selection: names, lists, patterns, exclusions --------------------------------
# Each topic holds one record, its own name; submsg --from oldest reads it.
SEL_TOPICS="sel/a sel/b sel/c/d file.opened file.closed other"
if [ $HAVE_SETUP = 1 ]; then baf-setup apply --no-test-topic --allow-empty > /dev/null 2>&1; fi
for t in $SEL_TOPICS; do mk $t 64K; echo $t | pubmsg $t; done
select_is() { # "EXPECTED NAMES" SUBMSG-ARGS...: exactly those topics come out
  want=$(for t in $1; do echo "$t: $t"; done | sort); shift
  n=$(echo "$want" | grep -c .)
  sub_bg /tmp/sel --from oldest --prefix "$@"; p=$SUB
  wait_for 10 lines_are /tmp/sel "$n"
  sleep 0.3 # anything extra would show up by now
  stop $p
  got=$(sort /tmp/sel)
  [ "$got" = "$want" ] || { echo "want:"; echo "$want"; echo "got:"; echo "$got"; cat /tmp/sel.err; return 1; }
}
check "submsg sel/a,other (a comma list)" select_is "sel/a other" sel/a,other
check "submsg sel/a other (separate arguments)" select_is "sel/a other" sel/a other
check "submsg 'sel/+' (one level)" select_is "sel/a sel/b" 'sel/+'
check "submsg 'sel/#' (the subtree)" select_is "sel/a sel/b sel/c/d" 'sel/#'
check "submsg '+/+/d'" select_is "sel/c/d" '+/+/d'
check "submsg 'file.*' (prefix)" select_is "file.opened file.closed" 'file.*'
check "submsg 'sel/#' -e sel/b" select_is "sel/a sel/c/d" 'sel/#' -e sel/b
check "submsg '*' -e 'fanout*,sel/#' -e other" select_is "file.opened file.closed" '*' -e 'fanout*,sel/#' -e other
if [ $HAVE_SETUP = 1 ]; then
  check "submsg with no topic takes every topic (-e 'fanout*')" select_is "$SEL_TOPICS" -e 'fanout*'
fi
check "submsg with a pattern that matches nothing fails (exit 3, one line)" exit_is 3 submsg 'nothing/#'
check "submsg with a bad pattern fails (exit 2, one line)" exit_is 2 submsg 'a/#/b'

# --- history: --from ------------------------------------------------------------------
history() {
  mk hist 64K
  seq 1 10 | pubmsg hist
  [ "$(submsg hist --from last:3 -n 3 | tr '\n' ' ')" = "8 9 10 " ] || return 1
  [ "$(submsg hist --from oldest -n 10 | tr '\n' ' ')" = "1 2 3 4 5 6 7 8 9 10 " ] || return 1
  [ "$(submsg hist --from seq:4 -n 2 | tr '\n' ' ')" = "5 6 " ] || return 1
  [ "$(submsg hist --from last -n 1)" = 10 ]
}
check "submsg --from last:3, oldest, seq:4, last (the retained last value)" history

# --- --follow --------------------------------------------------------------------------
follow() {
  rm_topic late/x
  sub_bg /tmp/f --follow --prefix 'late/#'; p=$SUB
  # Publish only once submsg is watching (it says so): on a loaded host a
  # fixed sleep was sometimes too short, and late/x then existed at start.
  wait_for 10 grep -q "waiting for topics matching" /tmp/f.err || { stop $p; cat /tmp/f.err; return 1; }
  echo one | pubmsg late/x # created now, by pubmsg
  wait_for 10 grep -qx 'late/x: one' /tmp/f || { stop $p; cat /tmp/f /tmp/f.err; return 1; }
  if [ $HAVE_SETUP = 1 ]; then
    # Removed and made again: the old one is dropped, the new one joined.
    baf-setup remove late/x
    sleep 0.3
    echo two | pubmsg late/x
    wait_for 10 grep -qx 'late/x: two' /tmp/f || { stop $p; cat /tmp/f /tmp/f.err; return 1; }
    echo deep | pubmsg late/y/z
    wait_for 10 grep -qx 'late/y/z: deep' /tmp/f || { stop $p; cat /tmp/f /tmp/f.err; return 1; }
  fi
  echo other | pubmsg early-not-matching
  sleep 0.3
  kill -0 $p || { cat /tmp/f.err; return 1; }
  stop $p
  # stderr has only the line saying what it waits for.
  cat /tmp/f.err
  ! grep -q other /tmp/f && grep -q "waiting for topics matching 'late/#' to be created" /tmp/f.err &&
    [ "$(wc -l < /tmp/f.err)" = 1 ]
}
check "submsg --follow joins topics created later (levels too) and drops removed ones; says what it waits for" follow
removed_ends() {
  [ $HAVE_SETUP = 1 ] || return 0
  mk doomed 64K
  sub_bg /tmp/d doomed; p=$SUB
  wait_for 10 has_readers doomed 1 || { stop $p; return 1; }
  echo last | pubmsg doomed
  baf-setup remove doomed
  wait_for 10 gone $p || { stop $p; return 1; }
  wait $p; rc=$?
  [ $rc = 0 ] && [ "$(cat /tmp/d)" = last ]
}
check "without --follow, submsg ends (status 0) when its topic is removed, after its last record" removed_ends

# --- loss: a stopped reader is lapped, and says exactly how much it lost -----------
overrun() {
  mk ov 64K
  sub_bg /tmp/o ov; p=$SUB
  wait_for 10 has_readers ov 1 || { stop $p; return 1; }
  kill -STOP $p
  seq 1 20000 | pubmsg ov
  kill -CONT $p
  wait_for 20 grep -qx 20000 /tmp/o
  sleep 0.5
  stop $p
  got=$(wc -l < /tmp/o); lost=$((20000 - got))
  cat /tmp/o.err
  [ $lost -gt 0 ] || { echo "nothing was lost"; return 1; }
  # What came is the newest records, in order; stderr says exactly how many
  # went, as the kernel counted.
  seq $((lost + 1)) 20000 | cmp - /tmp/o || return 1
  [ "$(sysfs ov lost)" = $lost ] || { echo "kernel says $(sysfs ov lost), we saw $lost"; return 1; }
  [ "$(wc -l < /tmp/o.err)" = 1 ] && grep -q "lost $lost records on topic ov" /tmp/o.err || return 1
  # ... and says what to do about it.
  grep -q "read faster, give the topic a bigger ring (baf-setup create ov --size .*submsg --lossless" /tmp/o.err
}
check "a SIGSTOPped submsg is lapped; after SIGCONT it reports the exact loss on stderr, and what to do" overrun
# --- pubmsg --raw from a pipe: spliced into the topic (ABI 7) ----------------------
raw_spliced() {
  # pubmsg --raw from a pipe splices it into the topic: records within the
  # record limit, the bytes intact.
  baf-setup create raws --size 1M --record-max 64K > /dev/null || return 1
  head -c 300000 /dev/urandom > /tmp/raws.in
  cat /tmp/raws.in | pubmsg --raw raws || return 1
  n=$(sysfs raws records)
  [ "$n" -ge 5 ] && [ "$n" -le 300 ] || { echo "records: $n"; return 1; }
  [ "$(sysfs raws bytes)" = 300000 ] || { echo "bytes: $(sysfs raws bytes)"; return 1; }
  submsg raws --from oldest -n "$n" > /tmp/raws.out && cmp /tmp/raws.in /tmp/raws.out
}
check "cat FILE | pubmsg --raw (spliced): records within the record limit, the bytes intact" raw_spliced

# --- pubmsg lines from a pipe or a file: spliced, whole lines a pass (ABI 9) ----------
splicing_lines() { # a running pubmsg's topic file takes whole lines only
  for p in $(pidof pubmsg); do
    [ "$(grep -h '^fanout_mode' /proc/"$p"/fdinfo/* 2> /dev/null | head -1 | cut -f2)" = bytes,lines,whole ] && return 0
  done
  return 1
}
lines_spliced_pipe() {
  # pubmsg splices lines from its pipe (fdinfo: whole lines), and the
  # producer's writes end inside lines: a line cut by a pass is one record
  # all the same; a line longer than the record limit is cut there, with
  # one warning; the last line, without its newline, is a record.
  baf-setup create lsp --size 1M --record-max 4K > /dev/null || return 1
  { sleep 2; printf 'one\ntw'; sleep 0.3; printf 'o\nthree\n'; sleep 0.3
    head -c 10000 /dev/zero | tr '\000' x; sleep 0.3; printf '\nfour\nla'; sleep 0.3; printf 'st'
  } | pubmsg lsp 2> /tmp/lsp.err & w=$!
  # Waiting for its input, pubmsg is in splice, whole lines only.
  wait_for 5 splicing_lines; spliced=$?
  wait $w || { echo "pubmsg failed: $(cat /tmp/lsp.err)"; return 1; }
  [ $spliced = 0 ] || { echo "pubmsg's topic file was never in mode bytes,lines,whole (splice)"; return 1; }
  # one, two, three, the long line in 3 records, four, last: 8.
  [ "$(sysfs lsp records)" = 8 ] || { echo "records: $(sysfs lsp records)"; return 1; }
  [ "$(wc -l < /tmp/lsp.err)" = 1 ] && grep -q "record limit (4096 bytes)" /tmp/lsp.err || { cat /tmp/lsp.err; return 1; }
  { printf 'one\ntwo\nthree\n'; head -c 10000 /dev/zero | tr '\000' x; printf '\nfour\nlast'; } > /tmp/lsp.want
  submsg lsp --from oldest -n 8 > /tmp/lsp.out && cmp /tmp/lsp.want /tmp/lsp.out
}
check "lines from a pipe (spliced, whole lines a pass): lines cut by the producer's writes whole, a long one cut at the limit with a warning, the last without newline" lines_spliced_pipe
lines_spliced_file() {
  # From a regular file pubmsg sendfiles the lines, 64 KiB a pass, and the
  # passes end inside lines: each line is still one record, and the last
  # one, without its newline, too. The same from a pipe (cat moves the
  # file into it in pieces that end anywhere), and NUL-ended items (-0).
  # 16 MiB hold the 300003 records of 48 bytes, all read from the oldest.
  baf-setup create lsf --size 16M > /dev/null || return 1
  { seq 1 100000; printf end; } > /tmp/lsf.in
  pubmsg lsf < /tmp/lsf.in || return 1
  [ "$(sysfs lsf records)" = 100001 ] || { echo "file: records $(sysfs lsf records)"; return 1; }
  submsg lsf --from oldest -n 100001 > /tmp/lsf.out && cmp /tmp/lsf.in /tmp/lsf.out || return 1
  cat /tmp/lsf.in | pubmsg lsf || return 1
  [ "$(sysfs lsf records)" = 200002 ] || { echo "pipe: records $(sysfs lsf records)"; return 1; }
  tr '\n' '\000' < /tmp/lsf.in > /tmp/lsf.nul
  pubmsg -0 lsf < /tmp/lsf.nul || return 1
  [ "$(sysfs lsf records)" = 300003 ] || { echo "-0: records $(sysfs lsf records)"; return 1; }
  submsg lsf --from oldest -n 300003 > /tmp/lsf.out || return 1
  cat /tmp/lsf.in /tmp/lsf.in /tmp/lsf.nul | cmp - /tmp/lsf.out
}
check "lines from a file (sendfile), a pipe and -0: passes end inside lines, every line one record, the bytes intact" lines_spliced_file
lines_spliced_removed() {
  # The topic is removed while pubmsg splices into it: the next line fails
  # with exit 3 and one line saying so; the line before it was published.
  [ $HAVE_SETUP = 1 ] || return 0
  mk lsr 64K
  { echo first; sleep 2; echo second; } | pubmsg lsr > /tmp/lsr.out 2> /tmp/lsr.err & w=$!
  wait_for 5 sh -c '[ "$(cat /sys/class/baf/lsr/records 2> /dev/null)" = 1 ]' || { wait $w; return 1; }
  baf-setup remove lsr > /dev/null || { wait $w; return 1; }
  wait $w; rc=$?
  cat /tmp/lsr.err
  [ $rc = 3 ] && [ "$(wc -l < /tmp/lsr.err)" = 1 ] && grep -q "topic lsr was removed while publishing" /tmp/lsr.err
}
check "lines spliced into a topic that is removed meanwhile: exit 3, one line" lines_spliced_removed
rm -f /tmp/lsf.in /tmp/lsf.out /tmp/lsf.nul /tmp/lsp.want /tmp/lsp.out /tmp/lsr.out /tmp/lsr.err

json_lost() {
  mk ov2 64K
  sub_bg /tmp/o2 --json ov2; p=$SUB
  wait_for 10 has_readers ov2 1 || { stop $p; return 1; }
  kill -STOP $p
  seq 1 5000 | pubmsg ov2
  kill -CONT $p
  wait_for 20 grep -q '"payload":"5000\\n"' /tmp/o2
  stop $p
  first=$(head -1 /tmp/o2)
  lost=$(echo "$first" | sed 's/.*"lost":\([0-9]*\).*/\1/'); seq=$(echo "$first" | sed 's/.*"seq":\([0-9]*\).*/\1/')
  [ "$lost" = "$seq" ] && [ "$lost" -gt 0 ] && [ "$(sed -n 2p /tmp/o2 | sed 's/.*"lost":\([0-9]*\).*/\1/')" = 0 ]
}
check "submsg --json: the first record after a gap carries the lost count" json_lost

# --- a closed stdout ---------------------------------------------------------------------
head_one() {
  rm -f /tmp/sub.rc
  (submsg /dev/fanout0 2>/tmp/sub.err; echo $? > /tmp/sub.rc) | head -1 > /tmp/h &
  wait_for 10 has_readers fanout0 1
  echo first > /dev/fanout0
  wait_for 10 grep -q first /tmp/h || return 1
  # No second record needed: submsg sees its stdout close at once.
  wait_for 10 test -s /tmp/sub.rc || return 1
  [ "$(cat /tmp/sub.rc)" = 0 ] && ! [ -s /tmp/sub.err ] && [ "$(cat /tmp/h)" = first ]
}
check "submsg | head -1 ends quietly with status 0, at once" head_one
head_busy() {
  # A ring that holds the whole stream: a reader the emulated VM is slow to
  # schedule is not lapped (it would rightly report the loss on stderr).
  mk busy 4M
  rm -f /tmp/sub.rc
  (submsg busy 2>/tmp/sub.err; echo $? > /tmp/sub.rc) | head -1 > /tmp/h &
  wait_for 10 has_readers busy 1
  seq 1 50000 | pubmsg busy
  wait_for 10 test -s /tmp/sub.rc || { echo "submsg did not end"; return 1; }
  [ "$(cat /tmp/sub.rc)" = 0 ] && ! [ -s /tmp/sub.err ] && [ "$(cat /tmp/h)" = 1 ] || {
    echo "status $(cat /tmp/sub.rc), stderr: $(cat /tmp/sub.err), got: $(head -c 100 /tmp/h)"
    return 1
  }
}
check "submsg | head -1 under a stream of records: status 0, no message" head_busy

# --- one topic into a pipe: splice ----------------------------------------------------------
# submsg's reader of a single topic, printed as it is into a pipe, is in
# bytes mode (fdinfo), where its payloads go out with splice; through a
# mapping or with record-mode reads it would say `record`.
submsg_mode() { # PID: the fanout_mode of the submsg's topic file
  grep -h '^fanout_mode' /proc/"$1"/fdinfo/* 2> /dev/null | head -1 | cut -f2
}
splice_pipe() {
  mk sp 1M
  seq 1 3000 | pubmsg sp || return 1
  rm -f /tmp/sp.out /tmp/sp.pid
  ( (submsg sp --from oldest 2> /tmp/sub.err & echo $! > /tmp/sp.pid; wait; echo $? > /tmp/sub.rc) | cat > /tmp/sp.out ) & w=$!
  wait_for 10 has_readers sp 1 || return 1
  mode=$(submsg_mode "$(cat /tmp/sp.pid)")
  [ "$mode" = bytes ] || { echo "submsg's topic file is in mode '$mode', not bytes (splice)"; stop "$(cat /tmp/sp.pid)"; return 1; }
  seq 3001 6000 | pubmsg sp || return 1
  # One record of 200000 bytes (one write(); the record limit is 256 KiB),
  # three times what the pipe holds: it goes in pieces, nothing between.
  head -c 200000 /dev/urandom > /tmp/sp.big
  dd if=/tmp/sp.big of=/dev/baf/sp bs=200000 conv=notrunc 2> /dev/null || return 1
  echo end | pubmsg sp || return 1
  { seq 1 6000; cat /tmp/sp.big; echo end; } > /tmp/sp.want
  # Removed once the writer is done: submsg moves what is left and ends.
  wait_for 20 sh -c '[ "$(wc -c < /tmp/sp.out)" -ge "$(wc -c < /tmp/sp.want)" ]'
  rm_topic sp
  wait $w
  [ "$(cat /tmp/sub.rc)" = 0 ] && ! [ -s /tmp/sub.err ] || { echo "status $(cat /tmp/sub.rc), stderr: $(cat /tmp/sub.err)"; return 1; }
  cmp /tmp/sp.want /tmp/sp.out
}
check "submsg TOPIC | consumer: payloads moved by splice, all of them, in order, a record larger than the pipe whole; ends with the topic" splice_pipe
splice_loss() {
  # A 64 KiB ring and a consumer that waits 3 s: submsg fills the pipe
  # and waits for room while the writer laps it. What comes out is whole
  # lines in order, and what it says it lost is exactly what is missing.
  mk spl 64K
  rm -f /tmp/spl.out /tmp/spl.pid
  ( (submsg spl 2> /tmp/spl.err & echo $! > /tmp/spl.pid; wait) | (sleep 3; cat > /tmp/spl.out) ) & w=$!
  wait_for 10 has_readers spl 1 || return 1
  mode=$(submsg_mode "$(cat /tmp/spl.pid)")
  [ "$mode" = bytes ] || { echo "mode '$mode', not bytes (splice)"; stop "$(cat /tmp/spl.pid)"; return 1; }
  seq 1 20000 | pubmsg spl || return 1
  sleep 4
  rm_topic spl
  wait $w
  lost=$(submsg_lost /tmp/spl.err)
  got=$(wc -l < /tmp/spl.out)
  awk 'BEGIN { p = 0 } $0 !~ /^[0-9]+$/ || $1 <= p { bad = 1 } { p = $1 } END { exit bad }' /tmp/spl.out || { echo "a line torn or out of order"; return 1; }
  [ "$lost" -gt 0 ] && [ $((got + lost)) = 20000 ] || { echo "got $got lines, reported $lost lost: $(cat /tmp/spl.err)"; return 1; }
}
check "submsg TOPIC | slow consumer (splice): whole lines in order, and the loss it reports is exactly what is missing" splice_loss

# --- one publisher per topic ----------------------------------------------------------------
exclusive() {
  mk solo 64K
  mkfifo /tmp/solo.fifo 2>/dev/null
  pubmsg solo < /tmp/solo.fifo 2>/tmp/solo1.err & p=$!
  exec 3> /tmp/solo.fifo
  echo one >&3
  wait_for 10 sh -c '[ "$(cat /sys/class/baf/solo/records)" = 1 ]' || { exec 3>&-; stop $p; return 1; }
  exit_is 5 pubmsg solo < /dev/null || { exec 3>&-; stop $p; return 1; }
  grep -q "already has a publisher" /tmp/x.err || { exec 3>&-; stop $p; return 1; }
  exec 3>&-
  wait $p || return 1
  # The lock died with the first publisher: a new one may publish.
  echo two | pubmsg solo && [ "$(sysfs solo records)" = 2 ]
}
check "a second pubmsg on a topic is refused (exit 5, one line), a later one is fine" exclusive
killed_holder() {
  mkfifo /tmp/solo2.fifo 2>/dev/null
  pubmsg solo < /tmp/solo2.fifo & p=$!
  exec 4> /tmp/solo2.fifo
  echo three >&4
  wait_for 10 sh -c '[ "$(cat /sys/class/baf/solo/records)" = 3 ]' || { exec 4>&-; stop $p; return 1; }
  kill -9 $p; wait $p 2>/dev/null
  exec 4>&-
  echo four | pubmsg solo
}
check "the publisher lock dies with a killed pubmsg (no stale lock)" killed_holder

# --- awkward input ----------------------------------------------------------------------
awkward() { # NAME INPUT-FILE RECORDS: what goes in comes out, as that many records
  mk "$1" 1M
  before=$(sysfs "$1" records)
  sub_bg /tmp/aw "$1"; p=$SUB
  wait_for 10 has_readers "$1" 1 || { stop $p; return 1; }
  pubmsg "$1" < "$2" 2> /tmp/aw.perr || { stop $p; cat /tmp/aw.perr; return 1; }
  [ "$(($(sysfs "$1" records) - before))" = "$3" ] || { echo "records: $(sysfs "$1" records)"; stop $p; return 1; }
  size=$(wc -c < "$2")
  wait_for 10 sh -c "[ \$(wc -c < /tmp/aw) -ge $size ]"
  stop $p
  cmp "$2" /tmp/aw && ! [ -s /tmp/aw.perr ]
}
printf 'a\000b\nc\000\n\000' > /tmp/nul
check "stdin with NUL bytes (and a final line without newline)" awkward nul /tmp/nul 3
printf 'caf\351\n\377\376\375\n\300\200' > /tmp/latin
check "stdin that is not UTF-8" awkward latin /tmp/latin 3
: > /tmp/empty
check "empty stdin: exit 0, no record" awkward empty /tmp/empty 0
ten_mib() {
  # A 10 MiB line through a 4 MiB ring with 64 KiB records: pubmsg sends it
  # as 161 records (160 x 64 KiB, then the newline), with one warning. The
  # ring holds 63 such records, so a reader in the emulated VM keeps up; this
  # checks splitting and reassembly, not lapping (a ring of 3 records, as
  # /dev/fanout0 has, is lapped whenever the host is busy).
  baf-setup create ten --size 4M --record-max 64K >/dev/null || return 1
  head -c 65536 /dev/zero | tr '\000' x > /tmp/chunk
  for i in $(seq 160); do cat /tmp/chunk; done > /tmp/want10; echo >> /tmp/want10
  before=$(sysfs ten records)
  sub_bg /tmp/ten ten; p=$SUB
  wait_for 10 has_readers ten 1 || { stop $p; return 1; }
  { for i in $(seq 160); do cat /tmp/chunk; sleep 0.02; done; echo; } | pubmsg ten 2> /tmp/ten.perr
  rc=$?
  wait_for 30 sh -c '[ $(wc -c < /tmp/ten) -ge 10485761 ]'
  stop $p
  cat /tmp/ten.perr /tmp/ten.err
  [ $rc = 0 ] && [ "$(($(sysfs ten records) - before))" = 161 ] || return 1
  [ "$(wc -l < /tmp/ten.perr)" = 1 ] && grep -q "record limit (65536 bytes)" /tmp/ten.perr || return 1
  cmp /tmp/want10 /tmp/ten
}
check "a 10 MiB line: split into record-limit pieces with one warning, reassembled exactly" ten_mib
rm -f /tmp/want10 /tmp/chunk /tmp/ten

# --- errors: one line, distinct exit codes -----------------------------------------------
check "pubmsg --no-create to a missing topic: exit 3" exit_is 3 pubmsg --no-create no/such/topic
check "submsg --no-create on a missing topic: exit 3" exit_is 3 submsg --no-create no/such/topic
check "pubmsg to a bad name: exit 2" exit_is 2 pubmsg 'a b'
check "pubmsg with a bad flag: exit 2, one line" exit_is 2 pubmsg --bogus t
check "submsg --from nonsense: exit 2, one line" exit_is 2 submsg --from nonsense t
if [ $HAVE_SETUP = 1 ]; then
  # baf-user is not in group baf: cannot read or write 0660 root:baf topics,
  # nor create topics.
  check "pubmsg without permission on the topic: exit 4" exit_is 4 su baf-user -s /bin/sh -c 'echo x | pubmsg hist'
  check "submsg without permission on the topic: exit 4" exit_is 4 su baf-user -s /bin/sh -c 'submsg hist'
  check "pubmsg to a missing topic it may not create: exit 3, says how to create it" sh -c \
    "su baf-user -s /bin/sh -c 'echo x | pubmsg not-mine' 2> /tmp/x.err; [ \$? = 3 ] && grep -q 'baf-setup create not-mine' /tmp/x.err"
fi
created() {
  rm_topic auto/made
  echo x | pubmsg auto/made && [ -c /dev/baf/auto/made ] && [ "$(stat -c %a /dev/baf/auto/made)" = 660 ]
}
check "pubmsg creates a missing topic (mode 0660) when it may" created
sub_created() {
  rm_topic auto/sub
  sub_bg /tmp/as auto/sub; p=$SUB
  wait_for 10 has_readers auto/sub 1 || { stop $p; cat /tmp/as.err; return 1; }
  echo hi | pubmsg auto/sub
  wait_for 10 grep -qx hi /tmp/as; rc=$?
  stop $p; return $rc
}
check "submsg creates a missing topic it is given by name, and reads it" sub_created

# --- habits of mosquitto_pub/sub users (issue 23) ---------------------------------
same() { # FILE CONTENT(printf format): FILE holds exactly that
  printf "$2" > /tmp/same.want
  cmp /tmp/same.want "$1" || { echo "got:"; od -c "$1" | head; echo "want:"; od -c /tmp/same.want | head; return 1; }
}
pub_m() {
  mk mq 64K
  echo not-this | pubmsg mq -m one --message 'two words' || return 1
  [ "$(sysfs mq records)" = 2 ] || { echo "records: $(sysfs mq records)"; return 1; }
  submsg mq --from oldest -n 2 > /tmp/mq.out && same /tmp/mq.out 'one\ntwo words\n' || return 1
  # --raw: the bytes alone; -0: a NUL instead of the newline.
  pubmsg --raw -m abc mq && pubmsg -0 -m def mq || return 1
  submsg mq --from last:2 -n 2 > /tmp/mq.out && same /tmp/mq.out 'abcdef\000'
}
check "pubmsg -m MSG (repeatable): each message one record, a newline added (none with --raw, a NUL with -0); stdin unread" pub_m
pub_m_big() {
  # A 64 KiB ring takes records of 16 KiB: a longer -m is refused whole.
  big=$(head -c 20000 /dev/zero | tr '\000' x)
  exit_is 2 pubmsg mq -m small -m "$big" || return 1
  grep -q "message 2 (-m) has 20001 bytes, more than the topic's record limit of 16384: nothing was published" /tmp/x.err || return 1
  [ "$(sysfs mq records)" = 4 ] || { echo "records: $(sysfs mq records)"; return 1; }
}
check "pubmsg -m with a message above the record limit: exit 2, one line, nothing published" pub_m_big
pub_f() {
  mk mf 1M
  seq 1 3000 > /tmp/mf.in
  echo WRONG | pubmsg -f /tmp/mf.in mf || return 1
  [ "$(sysfs mf records)" = 3000 ] || { echo "records: $(sysfs mf records)"; return 1; }
  submsg mf --from oldest -n 3000 | cmp /tmp/mf.in -
}
check "pubmsg -f FILE publishes the file's lines, not stdin" pub_f
pub_f_missing() {
  rm_topic mf/none
  exit_is 2 pubmsg -f /tmp/no-such-file mf/none || return 1
  grep -q "cannot open /tmp/no-such-file (-f): No such file or directory" /tmp/x.err || return 1
  ! [ -e /dev/baf/mf/none ] || { echo "the topic was created"; return 1; }
}
check "pubmsg -f with a file that is not there: exit 2, one line, no topic created" pub_f_missing
nul_io() {
  mk nul0 64K
  printf 'a b\000c\nd\000\000last' > /tmp/nul0.in
  pubmsg -0 nul0 < /tmp/nul0.in || return 1
  [ "$(sysfs nul0 records)" = 4 ] || { echo "records: $(sysfs nul0 records)"; return 1; }
  # Raw output is the input, byte for byte; -0 ends every record with one NUL.
  submsg nul0 --from oldest -n 4 > /tmp/nul0.raw && cmp /tmp/nul0.in /tmp/nul0.raw || return 1
  submsg -0 nul0 --from oldest -n 4 > /tmp/nul0.out && same /tmp/nul0.out 'a b\000c\nd\000\000last\000' || return 1
  # Lines too: their newline becomes the NUL; --prefix and -v prefix each record once.
  mk nul1 64K
  printf 'x\ny\n' | pubmsg nul1; pubmsg --raw -m 'multi
line' nul1
  submsg -0 nul1 --from oldest -n 3 > /tmp/nul1.out && same /tmp/nul1.out 'x\000y\000multi\nline\000' || return 1
  submsg -0 -v nul1 --from oldest -n 3 > /tmp/nul1.out && same /tmp/nul1.out 'nul1 x\000nul1 y\000nul1 multi\nline\000' || return 1
  # --json: each object ends with a NUL, not a newline.
  submsg -0 --json nul1 --from oldest -n 2 > /tmp/nul1.out || return 1
  [ "$(tr -cd '\000' < /tmp/nul1.out | wc -c)" = 2 ] && [ "$(tr -cd '\n' < /tmp/nul1.out | wc -c)" = 0 ] &&
    [ "$(tail -c 1 /tmp/nul1.out | tr '\000' Z)" = Z ] || { cat /tmp/nul1.out; return 1; }
}
check "pubmsg -0 (NUL-separated items, one record each) and submsg -0 (a NUL after each record)" nul_io
sub_v() {
  submsg -v mq --from oldest -n 2 > /tmp/v.out && same /tmp/v.out 'mq one\nmq two words\n' || return 1
  printf '1\n2' | pubmsg --raw mq
  submsg -v mq --from last -n 1 > /tmp/v.out && same /tmp/v.out 'mq 1\nmq 2\n'
}
check "submsg -v prints 'topic line' (as mosquitto_sub -v), each line of a record" sub_v
raw_file() {
  # pubmsg --raw -f: each read of the file (at most the 64 KiB record
  # limit) is one record, written as it is; the bytes come back intact.
  baf-setup create rawf --size 1M --record-max 64K > /dev/null || return 1
  head -c 300000 /dev/urandom > /tmp/rawf.in
  pubmsg --raw -f /tmp/rawf.in rawf || return 1
  n=$(sysfs rawf records)
  [ "$n" -ge 5 ] && [ "$n" -le 300 ] || { echo "records: $n"; return 1; }
  submsg rawf --from oldest -n "$n" > /tmp/rawf.out && cmp /tmp/rawf.in /tmp/rawf.out
}
check "pubmsg --raw -f FILE: each read one record within the record limit, the bytes intact" raw_file
shared() {
  mk sh1 64K
  mkfifo /tmp/sh1.fifo 2>/dev/null
  pubmsg sh1 < /tmp/sh1.fifo 2>/tmp/sh1.err & p=$!
  exec 5> /tmp/sh1.fifo
  echo held >&5
  wait_for 10 sh -c '[ "$(cat /sys/class/baf/sh1/records)" = 1 ]' || { exec 5>&-; stop $p; return 1; }
  # The lock is held: a plain pubmsg is refused, a --shared one is not.
  exit_is 5 pubmsg -m refused sh1 || { exec 5>&-; stop $p; return 1; }
  grep -q "or publish alongside it with pubmsg --shared" /tmp/x.err || { exec 5>&-; stop $p; return 1; }
  pubmsg --shared -m s1 sh1 && echo s2 | pubmsg --shared sh1 || { exec 5>&-; stop $p; return 1; }
  echo held2 >&5
  exec 5>&-
  wait $p || return 1
  [ "$(sysfs sh1 records)" = 4 ] || { echo "records: $(sysfs sh1 records)"; return 1; }
  submsg sh1 --from oldest -n 4 | sort > /tmp/sh1.out && same /tmp/sh1.out 'held\nheld2\ns1\ns2\n' || return 1
  # A --shared publisher holds no lock: a plain pubmsg may start meanwhile.
  mkfifo /tmp/sh2.fifo 2>/dev/null
  pubmsg --shared sh1 < /tmp/sh2.fifo & p=$!
  exec 6> /tmp/sh2.fifo
  echo shared-running >&6
  wait_for 10 sh -c '[ "$(cat /sys/class/baf/sh1/records)" = 5 ]' || { exec 6>&-; stop $p; return 1; }
  pubmsg -m exclusive sh1; rc=$?
  exec 6>&-; wait $p
  [ $rc = 0 ] && [ "$(sysfs sh1 records)" = 6 ]
}
check "pubmsg --shared publishes without the lock: beside a lock holder, and without keeping one out" shared
timeout_none() {
  mk wt 64K
  t0=$(date +%s)
  exit_is 7 submsg -W 1 wt || return 1
  t1=$(date +%s)
  grep -qx "submsg: no record arrived in 1 s (-W 1)" /tmp/x.err || return 1
  [ $((t1 - t0)) -ge 1 ] && [ $((t1 - t0)) -le 5 ] || { echo "took $((t1 - t0)) s"; return 1; }
}
check "submsg -W 1 with nothing published: exit 7 after about 1 s, one line" timeout_none
timeout_some() {
  echo early | pubmsg wt
  submsg -W 0.5 --from oldest wt > /tmp/wt.out 2> /tmp/wt.err; rc=$?
  [ $rc = 0 ] && same /tmp/wt.out 'early\n' && ! [ -s /tmp/wt.err ] || { echo "exit $rc"; cat /tmp/wt.err; return 1; }
  # Records arriving while it waits; -n ends it sooner, -W still bounds it.
  sub_bg /tmp/wt2 -W 3 wt; p=$SUB
  wait_for 10 has_readers wt 1 || { stop $p; return 1; }
  echo during | pubmsg wt
  wait_for 10 gone $p || { stop $p; echo "-W 3 did not end it"; return 1; }
  wait $p; rc=$?
  [ $rc = 0 ] && same /tmp/wt2 'during\n' || { echo "exit $rc"; cat /tmp/wt2.err; return 1; }
  # --follow waiting for a topic that never comes: -W ends that too.
  submsg -F -W 0.5 'never/#' > /dev/null 2> /tmp/wt3.err; rc=$?
  [ $rc = 7 ] && grep -q "waiting for topics matching 'never/#'" /tmp/wt3.err && grep -q "no record arrived in 0.5 s" /tmp/wt3.err ||
    { echo "exit $rc"; cat /tmp/wt3.err; return 1; }
}
check "submsg -W: exit 0 when records came by then; ends a waiting --follow too (exit 7)" timeout_some
last() {
  for t in last/a last/b last/c; do mk $t 64K; done
  seq 1 5 | pubmsg last/a; printf 'b1\nb2\n' | pubmsg last/b
  # It ends by itself: a submsg that waited for more records would be killed
  # by timeout (exit 124). (A bound of a few seconds failed on a loaded debug
  # kernel, where starting the tools alone can take that long.)
  t0=$(date +%s)
  timeout 60 submsg --last --prefix 'last/#' > /tmp/last.out 2> /tmp/last.err; rc=$?
  echo "note: --last took $(($(date +%s) - t0)) s"
  [ $rc = 0 ] || { echo "exit $rc"; cat /tmp/last.err; return 1; }
  sort /tmp/last.out > /tmp/last.sorted && same /tmp/last.sorted 'last/a: 5\nlast/b: b2\n' && ! [ -s /tmp/last.err ] || return 1
  submsg --last last/a,last/c > /tmp/last.out && same /tmp/last.out '5\n'
}
check "submsg --last: the latest record of each matching topic (none for an empty one), then exit 0" last
last_missing() {
  rm_topic last/none
  exit_is 3 submsg --last last/none || return 1
  grep -q "topic last/none does not exist (--last)" /tmp/x.err && ! [ -e /dev/baf/last/none ]
}
check "submsg --last on a missing named topic: exit 3, one line, nothing created" last_missing
json_time() {
  mk jt 64K
  d1=$(date -u +%Y-%m-%dT%H:%M)
  echo now | pubmsg jt
  line=$(submsg --json --last jt)
  d2=$(date -u +%Y-%m-%dT%H:%M)
  echo "$line"
  time=$(echo "$line" | sed -n 's/.*,"time":"\([^"]*\)"}$/\1/p')
  echo "$time" | grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z$' || { echo "time: '$time'"; return 1; }
  minute=$(echo "$time" | cut -c1-16)
  [ "$minute" = "$d1" ] || [ "$minute" = "$d2" ] || { echo "time $time is not now ($d1 .. $d2)"; return 1; }
  # The fields before it are as they were.
  echo "$line" | grep -q '^{"topic":"jt","seq":0,"timestamp":[0-9]*,"pid":[0-9]*,"uid":0,"writer":[0-9]*,"lost":0,"payload":"now\\n","encoding":"utf8","time":"'
}
check "submsg --json has the wall-clock time (RFC 3339, UTC, ns) of the kernel's timestamp" json_time
named_missing() {
  rm_topic nt/x
  sub_bg /tmp/nt nt/x -n 1; p=$SUB
  wait_for 10 has_readers nt/x 1 || { stop $p; cat /tmp/nt.err; return 1; }
  echo hello | pubmsg nt/x
  wait_for 10 gone $p || { stop $p; return 1; }
  stop $p
  same /tmp/nt 'hello\n' || return 1
  grep -qx "submsg: topic nt/x did not exist: created it, waiting for its records (--no-wait fails instead)" /tmp/nt.err ||
    { cat /tmp/nt.err; return 1; }
  # Named and there: no notice.
  sub_bg /tmp/nt2 nt/x -n 1; p=$SUB
  wait_for 10 has_readers nt/x 1 || { stop $p; return 1; }
  echo again | pubmsg nt/x
  wait_for 10 gone $p; stop $p
  ! [ -s /tmp/nt2.err ] || { cat /tmp/nt2.err; return 1; }
}
check "submsg on a named topic that does not exist yet: says so on stderr, creates it, waits for its records" named_missing
no_wait() {
  rm_topic nt/y
  exit_is 3 submsg --no-wait nt/y || return 1
  grep -qx "submsg: topic nt/y does not exist (--no-wait): see \`baf-setup list\`, or create it with \`baf-setup create nt/y\`" /tmp/x.err || return 1
  ! [ -e /dev/baf/nt/y ] || { echo "created it"; return 1; }
  exit_is 3 submsg --no-wait -F 'other/#,nt/y' || return 1
  # A topic that is there is read as usual.
  echo z | pubmsg nt/x
  [ "$(submsg --no-wait --from last -n 1 nt/x)" = z ]
}
check "submsg --no-wait on a named topic that does not exist: exit 3, one line, nothing created" no_wait
if [ $HAVE_SETUP = 1 ]; then
  all_readable() {
    baf-setup remove pub/open > /dev/null 2>&1; baf-setup remove pub/secret > /dev/null 2>&1
    baf-setup create pub/open --mode 0666 > /dev/null && baf-setup create pub/secret --mode 0600 > /dev/null || return 1
    echo hello | pubmsg pub/open; echo hidden | pubmsg pub/secret
    # Every topic (none named): those baf-user may not read are skipped without a word.
    su baf-user -s /bin/sh -c 'submsg --last --prefix' > /tmp/ar.out 2> /tmp/ar.err; rc=$?
    [ $rc = 0 ] && grep -qx 'pub/open: hello' /tmp/ar.out && ! grep -q hidden /tmp/ar.out && ! [ -s /tmp/ar.err ] ||
      { echo "exit $rc"; cat /tmp/ar.out /tmp/ar.err; return 1; }
    su baf-user -s /bin/sh -c 'submsg -W 1 --from oldest' > /tmp/ar.out 2> /tmp/ar.err; rc=$?
    [ $rc = 0 ] && grep -qx 'hello' /tmp/ar.out && ! [ -s /tmp/ar.err ] || { echo "exit $rc"; cat /tmp/ar.err; return 1; }
    # A pattern still says what it skips; a named topic still fails.
    su baf-user -s /bin/sh -c "submsg --last 'pub/#'" > /tmp/ar.out 2> /tmp/ar.err
    grep -q "submsg: skipping topic pub/secret" /tmp/ar.err || { cat /tmp/ar.err; return 1; }
    exit_is 4 su baf-user -s /bin/sh -c 'submsg --last pub/secret'
  }
  check "submsg with no topic named skips, silently, the topics this user may not read" all_readable
  rm_topic pub/open; rm_topic pub/secret
fi
check "submsg -f (not a submsg flag: --follow is -F): exit 2, one line" exit_is 2 submsg -f x
check "baf-setup apply -n (not a baf-setup flag: -n is submsg's count): exit 2, one line" exit_is 2 baf-setup apply -n
check "pubmsg -m with no message: exit 2, one line" exit_is 2 pubmsg mq -m
for t in mq mf nul0 nul1 sh1 wt last/a last/b last/c jt nt/x; do rm_topic $t; done

# --- lossless topics: a pipeline loses nothing ----------------------------------
# A tar stream of 3 MiB through a 64 KiB ring: pubmsg starts first and waits
# for its two lossless readers; one of them is throttled (16 KiB every
# 10 ms), so the writer must wait for it many times; a lossy third reader is
# SIGSTOPped the whole time and does not slow anyone down. Both lossless
# outputs must equal the tar file byte for byte.
throttle() { # OUT: copy stdin to OUT, 16 KiB at a time, 10 ms apart
  : > "$1"
  while :; do
    n=$(dd bs=16384 count=1 2>/dev/null | tee -a "$1" | wc -c)
    [ "$n" = 0 ] && break
    usleep 10000
  done
}
lossless_tar() {
  baf-setup remove ll/tar > /dev/null 2>&1
  baf-setup create ll/tar --size 64K --lossless > /dev/null || return 1
  rm -rf /tmp/tree; mkdir -p /tmp/tree/sub
  for i in 1 2 3; do dd if=/dev/urandom of=/tmp/tree/sub/f$i bs=65536 count=16 2>/dev/null; done
  seq 1 20000 > /tmp/tree/lines
  tar c -C /tmp tree > /tmp/tree.tar
  rm -f /tmp/pub.rc
  (tar c -C /tmp tree | pubmsg --raw --wait-readers 2 ll/tar 2> /tmp/pub.err; echo $? > /tmp/pub.rc) &
  pp=$!
  sub_bg /tmp/t3 ll/tar; p3=$SUB
  wait_for 10 has_readers ll/tar 1 || { stop $p3; return 1; }
  kill -STOP $p3
  sleep 1
  # Waiting, not writing: no reader is lossless yet.
  [ "$(sysfs ll/tar records)" = 0 ] || { echo "pubmsg wrote before its readers came"; kill -CONT $p3; stop $p3 $pp; return 1; }
  grep -q "waiting for 2 lossless reader" /tmp/pub.err || { cat /tmp/pub.err; kill -CONT $p3; stop $p3 $pp; return 1; }
  sub_bg /tmp/t1 --lossless ll/tar; p1=$SUB
  (submsg --lossless ll/tar 2> /tmp/t2.err | throttle /tmp/t2) & p2=$!
  wait_for 120 test -s /tmp/pub.rc || { echo "pubmsg did not finish"; kill -CONT $p3; stop $p1 $p2 $p3 $pp; return 1; }
  [ "$(cat /tmp/pub.rc)" = 0 ] || { cat /tmp/pub.err; kill -CONT $p3; stop $p1 $p2 $p3; return 1; }
  waits=$(sysfs ll/tar writer_waits)
  # Removal ends the readers after they have read everything.
  baf-setup remove ll/tar
  wait_for 60 gone $p1; wait_for 60 gone $p2
  kill -CONT $p3; wait_for 20 gone $p3
  stop $p1 $p2 $p3; wait $pp
  cat /tmp/t1.err /tmp/t2.err
  cmp /tmp/tree.tar /tmp/t1 || { echo "the first lossless reader's copy differs"; return 1; }
  cmp /tmp/tree.tar /tmp/t2 || { echo "the throttled lossless reader's copy differs"; return 1; }
  [ "$waits" -gt 0 ] || { echo "the writer never waited: not a test of backpressure"; return 1; }
  got3=$(wc -c < /tmp/t3); all=$(wc -c < /tmp/tree.tar)
  [ "$got3" -lt "$all" ] || { echo "the stopped lossy reader lost nothing ($got3 of $all)"; return 1; }
  grep -q "lost [0-9]* records on topic ll/tar" /tmp/t3.err || { echo "no loss report from the lossy reader:"; cat /tmp/t3.err; return 1; }
  echo "writer waited $waits times; the stopped lossy reader got $got3 of $all bytes"
}
if [ $HAVE_SETUP = 1 ]; then
  check "lossless: tar c | pubmsg --raw --wait-readers 2, two submsg --lossless (one throttled) byte-exact; a stopped lossy reader loses, slows nobody" lossless_tar
  ll_refused() {
    mk ll/plain 64K
    exit_is 4 submsg --lossless ll/plain && grep -q -- "--lossless" /tmp/x.err
  }
  check "submsg --lossless on a topic that does not allow it: exit 4, says how" ll_refused
  check "pubmsg --wait-readers on a topic without lossless readers: exit 2, one line" \
    exit_is 2 sh -c 'echo x | pubmsg --wait-readers 1 ll/plain'
  ll_follow() {
    baf-setup remove ll/f/a > /dev/null 2>&1
    sub_bg /tmp/lf --lossless --follow 'll/f/#'; p=$SUB
    sleep 1
    baf-setup create ll/f/a --size 64K --lossless > /dev/null
    wait_for 10 sh -c '[ "$(cat /sys/class/baf/ll!f!a/lossless_readers)" = 1 ]' || { stop $p; cat /tmp/lf.err; echo "the followed topic has no lossless reader"; return 1; }
    seq 1 30000 | pubmsg ll/f/a
    wait_for 30 sh -c 'tail -n 1 /tmp/lf | grep -qx 30000'
    stop $p
    seq 1 30000 | cmp - /tmp/lf && [ "$(sysfs ll/f/a lost)" = 0 ]
  }
  check "submsg --lossless --follow: a topic created later is read losslessly (30000 lines, 64 KiB ring)" ll_follow
  ll_status() {
    baf-setup remove ll/st > /dev/null 2>&1
    baf-setup create ll/st --lossless --stall-timeout 2s > /dev/null || return 1
    sub_bg /tmp/ls --lossless ll/st; p=$SUB
    wait_for 10 sh -c '[ "$(cat /sys/class/baf/ll!st/lossless_readers)" = 1 ]' || { stop $p; return 1; }
    baf-setup status --json > /tmp/st.json
    stop $p
    grep -q '"lossless_readers": *1' /tmp/st.json && grep -q '"stall_ms": *2000' /tmp/st.json || { cat /tmp/st.json; return 1; }
  }
  check "baf-setup status shows a lossless topic's readers and stall timeout" ll_status
  for t in ll/plain ll/f/a ll/st; do rm_topic $t; done
fi

if [ $HAVE_SETUP = 1 ]; then baf-setup apply --no-test-topic --allow-empty > /dev/null 2>&1; fi
