# Helpers of the tools' VM tests (busybox sh), sourced by tools.sh and
# record.sh: topics, their counters, background subscribers, exit codes.

sysfs() { # NAME ATTR: a topic's sysfs counter ('/' in names is '!' there)
  cat "/sys/class/baf/$(echo "$1" | tr / '!')/$2" 2>/dev/null
}
has_readers() { # NAME N: the topic has at least N open readers
  local n; n=$(sysfs "$1" readers); [ -n "$n" ] && [ "$n" -ge "$2" ]
}
sub_bg() { # OUT ARGS...: submsg ARGS > OUT 2> OUT.err in the background; pid in $SUB
  o=$1; shift
  submsg "$@" > "$o" 2> "$o.err" & SUB=$!
}
gone() { # PID: the process has ended (a zombie not yet reaped counts)
  ! [ -d "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}
stop() { # PID...: SIGTERM (submsg writes what it has read first), then reap
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for p in "$@"; do wait_for 10 gone "$p" || kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  return 0
}
lines_are() { # FILE N: FILE has exactly N lines
  [ "$(wc -l < "$1")" -eq "$2" ]
}
exit_is() { # CODE COMMAND...: fails with exactly that code and one line on stderr
  want=$1; shift
  "$@" > /tmp/x.out 2> /tmp/x.err; rc=$?
  [ "$rc" = "$want" ] || { echo "exit $rc, want $want:"; cat /tmp/x.err; return 1; }
  [ "$(wc -l < /tmp/x.err)" = 1 ] || { echo "not one line:"; cat /tmp/x.err; return 1; }
  cat /tmp/x.err
}
# Topics: with baf-setup's create when it has one (sizes of our choosing),
# else made by pubmsg itself (the defaults).
if baf-setup create --help > /dev/null 2>&1; then HAVE_SETUP=1; else HAVE_SETUP=0; fi
mk() { # NAME [SIZE]: a fresh, empty topic
  if [ $HAVE_SETUP = 1 ]; then
    baf-setup remove "$1" > /dev/null 2>&1
    baf-setup create "$1" ${2:+--size $2} > /dev/null 2>&1
  else
    pubmsg "$1" < /dev/null
  fi
}
rm_topic() { [ $HAVE_SETUP = 1 ] && baf-setup remove "$1" > /dev/null 2>&1; return 0; }

