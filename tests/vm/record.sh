# baf-record on the real module (busybox sh, sourced by suite.sh after
# tools.sh, or by the "record" scenario, with the module loaded; helpers
# from helpers.sh: mk, sub_bg, stop, gone, has_readers, sysfs, exit_is).
# Every background process writes to files and is stopped before its check
# returns.

rec_bg() { # ERRFILE ARGS...: baf-record ARGS 2> ERRFILE in the background; pid in $REC
  e=$1; shift
  baf-record "$@" > /dev/null 2> "$e" & REC=$!
}
no_time() { # JSON lines without the "time" field (its clock offset is taken when printed)
  sed 's/,"time":"[^"]*"//'
}
info_field() { # FILE KEY: a top-level number of `baf-record info --json FILE`
  # (keys are sorted; "topics", whose objects repeat them, comes last)
  baf-record info --json "$1" | sed -n "s/^{[^{]*\"$2\":\([0-9]*\).*/\1/p"
}

check "baf-record --help shows examples and exit codes" sh -c "baf-record --help | grep -q Examples: && baf-record --help | grep -q 'Exit codes'"
check "baf-record --generate man from the clap definitions" sh -c "baf-record --generate man | grep -q '^.TH baf-record'"

# --- three topics, two lossy and one lossless, while their writers run ------------
# Each topic also has a submsg --json reader: the recording must give back
# exactly what it got (seq, timestamp, pid, uid, writer, payload), and the
# raw records must be exactly what was written.
rec_three() {
  mk rec/a 4M; mk rec/b 4M
  baf-setup remove rec/c > /dev/null 2>&1
  baf-setup create rec/c --size 64K --lossless > /dev/null || return 1
  rm -rf /tmp/rec; mkdir -p /tmp/rec
  rec_bg /tmp/rec.err record 'rec/#' --lossless -o /tmp/rec/three.mcap; rp=$REC
  wait_for 10 has_readers rec/a 1 && wait_for 10 has_readers rec/b 1 && wait_for 10 has_readers rec/c 1 \
    || { stop $rp; cat /tmp/rec.err; echo "the recorder did not join"; return 1; }
  # rec/c's writer waits for its lossless readers: the recorder and this
  # submsg (a lossy one could be lapped on its 64 KiB ring).
  sub_bg /tmp/sa.json --json -n 20000 rec/a; pa=$SUB
  sub_bg /tmp/sb.json --json -n 20000 rec/b; pb=$SUB
  sub_bg /tmp/sc.json --json -n 20000 --lossless rec/c; pc=$SUB
  wait_for 10 has_readers rec/a 2 && wait_for 10 has_readers rec/b 2 && wait_for 10 has_readers rec/c 2 || { stop $rp $pa $pb $pc; return 1; }
  seq 1 20000 > /tmp/want
  seq 1 20000 | pubmsg rec/a & w1=$!
  seq 1 20000 | pubmsg rec/b & w2=$!
  seq 1 20000 | pubmsg rec/c & w3=$!
  wait $w1 $w2 $w3
  wait_for 60 gone $pa; wait_for 60 gone $pb; wait_for 60 gone $pc
  stop $pa $pb $pc
  sleep 0.5
  kill -TERM $rp; wait_for 20 gone $rp || { kill -9 $rp; echo "SIGTERM did not end the recorder"; return 1; }
  wait $rp; rc=$?
  [ $rc = 0 ] || { echo "recorder exit $rc"; cat /tmp/rec.err; return 1; }
  # SIGTERM left a finished file: info reads it without --recover.
  baf-record info /tmp/rec/three.mcap > /tmp/rec.info || { cat /tmp/rec.info; return 1; }
  grep -q "state: finished" /tmp/rec.info || { cat /tmp/rec.info; return 1; }
  [ "$(info_field /tmp/rec/three.mcap records)" = 60000 ] || { cat /tmp/rec.info; return 1; }
  [ "$(info_field /tmp/rec/three.mcap lost)" = 0 ] || { cat /tmp/rec.info; return 1; }
  grep -q '^rec/c .* true$' /tmp/rec.info || { echo "rec/c not recorded losslessly"; cat /tmp/rec.info; return 1; }
  for t in a b c; do
    baf-record cat -t rec/$t /tmp/rec/three.mcap > /tmp/c$t || return 1
    cmp /tmp/want /tmp/c$t || { echo "rec/$t: the raw records differ from what was written"; return 1; }
    baf-record cat --json -t rec/$t /tmp/rec/three.mcap | no_time > /tmp/c$t.json
    no_time < /tmp/s$t.json > /tmp/s$t.nt
    cmp /tmp/s$t.nt /tmp/c$t.json || { echo "rec/$t: cat --json differs from submsg --json"; head -2 /tmp/s$t.nt /tmp/c$t.json; return 1; }
  done
}
check "record 3 topics (2 lossy, 1 lossless) while writers run: cat gives every record byte-exact with seq, pid, uid and writer; SIGTERM leaves a finished file" rec_three

# --- rotation ---------------------------------------------------------------------
rotation() {
  mk rot 4M
  rm -rf /tmp/rot; mkdir -p /tmp/rot
  rec_bg /tmp/rot.err record rot --split-size 64K --max-files 3 -o /tmp/rot/; rp=$REC
  wait_for 10 has_readers rot 1 || { stop $rp; return 1; }
  i=0
  while [ $i -lt 10 ]; do
    seq 1 2000 | sed 's/$/ xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/' | pubmsg rot || { stop $rp; return 1; }
    sleep 0.2; i=$((i + 1))
  done
  sleep 1
  stop $rp
  n=$(ls /tmp/rot/*.mcap | wc -l)
  [ "$n" = 3 ] || { echo "$n files kept, want 3"; ls -l /tmp/rot; cat /tmp/rot.err; return 1; }
  for f in /tmp/rot/*.mcap; do baf-record info "$f" > /dev/null || return 1; done
  last=$(ls /tmp/rot/*.mcap | tail -n 1)
  [ "$(baf-record cat "$last" | tail -n 1)" = "2000 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" ]
}
check "--split-size 64K --max-files 3: 1.5 MB recorded into many files, the 3 newest kept, each finished" rotation

# --- dashcam ---------------------------------------------------------------------
# One record every 50 ms; a trigger (SIGUSR1) after about 3 s. The file must
# hold exactly the records stamped from T - 1 s to T + 1 s, where T is the
# trigger time the recorder reports, as an independent submsg saw them.
tick() { # TOPIC N: N records, one every 50 ms
  i=0; while [ $i -lt $2 ]; do echo "tick $i" > /dev/baf/$1; i=$((i + 1)); sleep 0.05; done
}
window_is() { # FILE FROM TO SUBMSG_JSON: the file has exactly the records stamped in [FROM, TO]
  baf-record cat --json "$1" | no_time > /tmp/got.json
  no_time < "$4" | awk -v a="$2" -v b="$3" '{ t = $0; sub(/.*"timestamp":/, "", t); sub(/,.*/, "", t); if (t + 0 >= a + 0 && t + 0 <= b + 0) print }' > /tmp/want.json
  n=$(wc -l < /tmp/want.json)
  # A window worth comparing: ticks are due every 50 ms, but a loaded debug
  # kernel takes up to about 100 ms a tick (14 in a 1.3 s window, seen).
  [ "$n" -ge 8 ] || { echo "only $n records in the window"; return 1; }
  cmp /tmp/want.json /tmp/got.json || { echo "the window differs: $(wc -l < /tmp/got.json) records, want $n"; return 1; }
}
dashcam() {
  mk dash 1M
  rm -rf /tmp/dash; mkdir -p /tmp/dash
  rec_bg /tmp/dash.err record dash --before 1s --after 1s -o /tmp/dash/; rp=$REC
  sub_bg /tmp/dash.json --json dash; s=$SUB
  wait_for 10 has_readers dash 2 || { stop $rp $s; return 1; }
  tick dash 120 & w=$!
  sleep 3; kill -USR1 $rp
  wait $w
  sleep 1.5
  stop $rp $s
  n=$(ls /tmp/dash/*.mcap 2>/dev/null | wc -l)
  [ "$n" = 1 ] || { echo "$n files, want 1"; cat /tmp/dash.err; return 1; }
  t=$(sed -n 's/.*trigger at \([0-9]*\) ns.*/\1/p' /tmp/dash.err)
  [ -n "$t" ] || { cat /tmp/dash.err; return 1; }
  window_is /tmp/dash/*.mcap $((t - 1000000000)) $((t + 1000000000)) /tmp/dash.json
}
check "dashcam --before 1s --after 1s: SIGUSR1 writes exactly the records stamped from T-1s to T+1s" dashcam
dash_topic() {
  mk dash 1M; mk alarm 64K
  rm -rf /tmp/dash; mkdir -p /tmp/dash
  rec_bg /tmp/dash.err record dash --before 500ms --after 500ms --trigger alarm -o /tmp/dash/; rp=$REC
  sub_bg /tmp/dash.json --json dash; s=$SUB
  wait_for 10 has_readers dash 2 && wait_for 10 has_readers alarm 1 || { stop $rp $s; return 1; }
  tick dash 80 & w=$!
  sleep 2; echo fire > /dev/baf/alarm
  sleep 0.3; echo again > /dev/baf/alarm   # during the capture: extends it
  wait $w
  sleep 1
  stop $rp $s
  n=$(ls /tmp/dash/*.mcap 2>/dev/null | wc -l)
  [ "$n" = 1 ] || { echo "$n files, want 1 (the second trigger extends the capture)"; cat /tmp/dash.err; return 1; }
  t=$(sed -n 's/.*trigger at \([0-9]*\) ns.*/\1/p' /tmp/dash.err)
  a2=$(submsg --json --last alarm | sed -n 's/.*"timestamp":\([0-9]*\).*/\1/p')
  window_is /tmp/dash/*.mcap $((t - 500000000)) $((a2 + 500000000)) /tmp/dash.json
}
check "dashcam --trigger TOPIC: a record on it triggers; a second one extends the capture; exactly that window" dash_topic

# --- play -------------------------------------------------------------------------
play() {
  mk pl 1M
  rm -rf /tmp/pl; mkdir -p /tmp/pl
  rec_bg /tmp/pl.err record pl --compression zstd -o /tmp/pl/pl.mcap; rp=$REC
  wait_for 10 has_readers pl 1 || { stop $rp; return 1; }
  i=0; while [ $i -lt 20 ]; do echo "p $i" > /dev/baf/pl; i=$((i + 1)); sleep 0.1; done
  sleep 0.5; stop $rp
  baf-setup remove replay/pl > /dev/null 2>&1
  sub_bg /tmp/rp.json --json -n 20 replay/pl; s=$SUB
  wait_for 10 has_readers replay/pl 1 || { stop $s; return 1; }
  baf-record play /tmp/pl/pl.mcap --into replay/ --rate 1 2> /tmp/play.err || { cat /tmp/play.err; stop $s; return 1; }
  wait_for 10 gone $s; stop $s
  baf-record cat /tmp/pl/pl.mcap > /tmp/orig
  sed -n 's/.*"payload":"\([^"]*\)\\n".*/\1/p' /tmp/rp.json > /tmp/replayed
  [ "$(wc -l < /tmp/orig)" = 20 ] || { echo "$(wc -l < /tmp/orig) records recorded, want 20"; return 1; }
  cmp /tmp/orig /tmp/replayed || { echo "the replayed payloads differ"; return 1; }
  # Spacing: each gap within 10% of the original one.
  baf-record cat --json /tmp/pl/pl.mcap | sed -n 's/.*"timestamp":\([0-9]*\).*/\1/p' > /tmp/t0
  sed -n 's/.*"timestamp":\([0-9]*\).*/\1/p' /tmp/rp.json > /tmp/t1
  paste /tmp/t0 /tmp/t1 | awk 'NR > 1 { d0 = $1 - p0; d1 = $2 - p1; e = d1 - d0; if (e < 0) e = -e; if (e > d0 / 10) { print "gap " NR ": " d1 " ns, original " d0; bad = 1 } } { p0 = $1; p1 = $2 } END { exit bad }'
}
check "play --into replay/ --rate 1: the same records in order, each gap within 10% of the original" play

# --- a lapped recorder: the exact gap is in the file --------------------------------
lapped() {
  mk lap 16K
  rm -rf /tmp/lap; mkdir -p /tmp/lap
  rec_bg /tmp/lap.err record lap --compression lz4 -o /tmp/lap/lap.mcap; rp=$REC
  wait_for 10 has_readers lap 1 || { stop $rp; return 1; }
  seq 1 100 | pubmsg lap; sleep 0.5
  kill -STOP $rp
  seq 101 5000 | pubmsg lap
  kill -CONT $rp
  sleep 0.5; seq 5001 5100 | pubmsg lap; sleep 0.5
  stop $rp
  recs=$(info_field /tmp/lap/lap.mcap records); lost=$(info_field /tmp/lap/lap.mcap lost)
  [ "$lost" -gt 0 ] || { echo "no loss recorded"; return 1; }
  [ $((recs + lost)) = 5100 ] || { echo "$recs records + $lost lost != 5100"; return 1; }
  [ "$(sysfs lap lost)" = "$lost" ] || { echo "the kernel counted $(sysfs lap lost) lost, the file $lost"; return 1; }
  # cat --json puts the loss on the record after the gap.
  [ "$(baf-record cat --json /tmp/lap/lap.mcap | sed -n 's/.*"lost":\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s }')" = "$lost" ]
}
check "a lapped recorder: the file reports the exact gap (records + lost = written, = the kernel's count)" lapped

# --- killed, cut short, corrupt, bad input ---------------------------------------------
killed() {
  mk kil 4M
  rm -rf /tmp/kil; mkdir -p /tmp/kil
  rec_bg /tmp/kil.err record kil -o /tmp/kil/k.mcap; rp=$REC
  wait_for 10 has_readers kil 1 || { stop $rp; return 1; }
  seq 1 30000 | pubmsg kil; sleep 1.5
  kill -9 $rp; wait $rp 2>/dev/null
  exit_is 2 baf-record info /tmp/kil/k.mcap || return 1
  grep -q -- "--recover" /tmp/x.err || return 1
  baf-record cat --recover /tmp/kil/k.mcap > /tmp/kil.got 2> /tmp/kil.cat.err || { cat /tmp/kil.cat.err; return 1; }
  n=$(wc -l < /tmp/kil.got)
  [ "$n" -gt 0 ] || { echo "nothing recovered"; return 1; }
  seq 1 "$n" | cmp - /tmp/kil.got || return 1
  echo "recovered $n of 30000 records (the recorder flushes a chunk every half second)"
}
check "a killed recorder's file is refused (exit 2) but read with --recover up to its last chunk, in order" killed
bad_input() {
  exit_is 2 baf-record record 'a/#/b' -o /tmp/x/ || return 1
  exit_is 2 baf-record record x -o /proc/no-such-dir/ || return 1
  head -c 3000 /tmp/rec/three.mcap > /tmp/cut.mcap
  exit_is 2 baf-record cat /tmp/cut.mcap || return 1
  [ ! -s /tmp/x.out ] || { echo "cat printed something"; return 1; }
  exit_is 2 baf-record play /tmp/cut.mcap || return 1
  printf 'not mcap' > /tmp/junk.mcap
  exit_is 2 baf-record info /tmp/junk.mcap
}
check "bad input: a bad pattern, an unwritable directory, a cut-short or non-MCAP file: one line, exit 2, nothing printed" bad_input

# --- the files for an independent reader ------------------------------------------
# Every finished file the tests above wrote goes out on the console (gzip,
# base64, each line tagged), with baf-record's own count per channel;
# tests/vm.sh decodes them and the Python mcap package reads each one
# (scripts/mcap-check.sh --vm), outside the VM.
export_files() {
  for f in /tmp/rec/three.mcap /tmp/rot/*.mcap /tmp/dash/*.mcap /tmp/pl/pl.mcap /tmp/lap/lap.mcap; do
    [ -f "$f" ] || continue
    name=$(echo "${f#/tmp/}" | tr / _)
    echo "BAF-MCAPINFO $name $(baf-record info --json "$f")"
    gzip -c "$f" | base64 | sed "s|^|BAF-MCAP $name |"
  done
}
export_files
for t in rec/a rec/b rec/c rot dash alarm pl replay/pl lap kil; do rm_topic $t; done
