#!/bin/bash
# Run by baf-vm-test.service on the booted Debian 13 test machine of
# tests/debian13-test.sh (systemd as init, Debian's own kernel, the baf and
# fanout-dkms packages installed by dpkg, fanout.ko built by DKMS). Every
# result is one line "BAF-VM-RESULT ok NAME" or "BAF-VM-RESULT FAILED NAME"
# on the serial console, which the host counts; "BAF-VM-DONE" ends the run,
# then the machine powers off.
#
# /root/topics-want: the topics /etc/baf/topics declares, one a line
# "NAME RING_SIZE MODE", as the host wrote it. /root/before.list: every
# file of the machine before the packages were installed (pruned as the
# host's snapshot is), to compare with after the purge.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
ok() { echo "BAF-VM-RESULT ok $*"; }
bad() { echo "BAF-VM-RESULT FAILED $*"; }
check() { # NAME COMMAND...: passes when the command exits 0; shows its output when not
  local name=$1 out; shift
  if out=$("$@" 2>&1); then ok "$name"; else printf '%s\n' "$out" | tail -n 20; bad "$name"; fi
}
wait_for() { # SECONDS COMMAND...
  local n=$(($1 * 10)); shift
  while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; n=$((n - 1)); done
  return 1
}
# Every file of the machine but those of booting and running it (mkfs's
# lost+found, systemd-update-done's .updated stamps, its state); the host
# runs `check.sh --files` in the machine before the packages go in.
files() {
  find / -xdev \( -path /proc -o -path /dev -o -path /run -o -path /tmp -o -path /var/lib/dpkg -o -path /var/log \
    -o -path /var/cache -o -path /root -o -path /var/lib/systemd -o -path /var/tmp -o -path /etc/baf -o -path /lost+found \
    -o -path /etc/.updated -o -path /var/.updated \) -prune -o -print | sort
}
if [ "${1:-}" = --files ]; then files; exit 0; fi
kver=$(uname -r)
echo "kernel: $kver $(uname -v)"
echo "test unit started ${SECONDS}s after start, $(cut -d' ' -f1 /proc/uptime)s after boot"

# --- the module, loaded at boot through modules-load.d ---------------------------
check "systemd is init (PID 1 is $(cat /proc/1/comm))" test "$(cat /proc/1/comm)" = systemd
check "systemd-modules-load loaded fanout at boot (/sys/module/fanout)" \
  sh -c 'test -d /sys/module/fanout && systemctl is-active --quiet systemd-modules-load.service'
check "the module is DKMS's build for $kver" \
  sh -c "modinfo -n fanout | grep -q '^/lib/modules/$kver/updates/dkms/fanout.ko' && grep -q '^fanout ' /proc/modules"
check "devices=0 (the package's modprobe.d, and the module's default): no /dev/fanoutN" \
  sh -c 'modprobe -c | grep -qx "options fanout devices=0" && ! ls /dev/fanout* 2>/dev/null && ! ls /sys/class/baf | grep "^fanout"'
check "/dev/baf-control is root:baf 0660" \
  sh -c 'test "$(stat -c "%a %U %G" /dev/baf-control)" = "660 root baf"'

# --- /etc/baf/topics through baf-setup.service -----------------------------------
check "baf-setup.service is enabled and ran at boot (active)" \
  sh -c 'systemctl is-enabled --quiet baf-setup.service && systemctl is-active --quiet baf-setup.service || { systemctl status --no-pager baf-setup.service; exit 1; }'
topics_made() {
  local name ring mode rc=0 node list
  [ -s /root/topics-want ] || { echo "no /root/topics-want"; return 1; }
  list=$(baf-setup list) || return 1
  while read -r name ring mode; do
    node=/dev/baf/$name
    [ -c "$node" ] || { echo "no $node"; rc=1; continue; }
    [ "$(stat -c "%a %G" "$node")" = "$mode baf" ] || { echo "$node is $(stat -c "%a %U:%G" "$node")"; rc=1; }
    [ "$(cat "/sys/class/baf/${name//\//!}/ring_size")" = "$ring" ] || { echo "$name: ring $(cat "/sys/class/baf/${name//\//!}/ring_size")"; rc=1; }
  done < /root/topics-want
  [ "$(echo "$list" | sort | tr '\n' ' ')" = "$(cut -d' ' -f1 /root/topics-want | sort | tr '\n' ' ')" ] ||
    { echo "topics: $(echo "$list" | tr '\n' ' ')"; rc=1; }
  return $rc
}
check "the unit applied /etc/baf/topics: exactly its topics under /dev/baf, with their sizes and modes" topics_made

# --- a pipeline ------------------------------------------------------------------------
# sensors is a lossless topic: the writer waits for the lossless reader
# (the emulated machine is slow), so every record arrives.
pipeline() {
  seq 1 20000 > /tmp/want
  submsg --lossless -n 20000 sensors > /tmp/got 2> /tmp/sub.err & local sub=$!
  seq 1 20000 | timeout 120 pubmsg --wait-readers 1 sensors || { kill $sub; return 1; }
  wait_for 60 sh -c "! kill -0 $sub" || { kill $sub; echo "submsg did not end: $(wc -l < /tmp/got) lines"; }
  wait $sub; local rc=$?
  cat /tmp/sub.err
  [ $rc = 0 ] && cmp /tmp/want /tmp/got
}
check "seq 1 20000 | pubmsg --wait-readers 1 sensors, submsg --lossless -n 20000 sensors: all, in order" pipeline
check "baf-setup status shows the records" \
  sh -c 'baf-setup status | grep -q "^sensors .* 20000 "  || { baf-setup status; exit 1; }'

# --- the purge ------------------------------------------------------------------------
# prerm stops and disables the unit (systemd is running) and DKMS removes
# the module from /lib/modules; the loaded module stays until rmmod.
check "dpkg --purge fanout-dkms baf" \
  sh -c 'for p in baf fanout-dkms; do dpkg-query -W -f="\${Status}\n" $p | grep -qx "install ok installed" || { echo "$p is not installed"; exit 1; }; done
         dpkg --purge fanout-dkms baf > /tmp/purge.log 2>&1 || { cat /tmp/purge.log; exit 1; }
         ! dpkg-query -W baf fanout-dkms 2>/dev/null | grep -q .'
check "the purge disabled and stopped baf-setup.service, and DKMS removed fanout.ko" \
  sh -c "! systemctl is-active --quiet baf-setup.service && ! test -e /usr/lib/systemd/system/baf-setup.service &&
         ! ls /etc/systemd/system/*.wants/baf-setup.service 2>/dev/null && [ -z \"\$(find /lib/modules/$kver -name 'fanout.ko*')\" ] &&
         ! modinfo fanout >/dev/null 2>&1"
check "rmmod fanout after the purge (no topic open; the topics go with it)" \
  sh -c 'rmmod fanout && ! test -d /sys/module/fanout && ! test -e /dev/baf-control'
# What is left: what the packages made, not what booting makes (systemd's
# state, the journal), nor /etc/baf (the admin's own file) or group baf.
files > /tmp/after.list
[ -s /root/before.list ] && [ -s /tmp/after.list ] || { echo "no list of the files before: /root/before.list"; bad "the purge leaves nothing behind"; }
left=$(comm -13 /root/before.list /tmp/after.list | grep -vxE '/etc/(group|gshadow|passwd|shadow)-?|/var/lib/dkms/mok\.(key|pub)' || true)
if [ ! -s /root/before.list ]; then :; elif [ -z "$left" ]; then ok "the purge leaves nothing behind"; else printf 'left: %s\n' $left; bad "the purge leaves nothing behind"; fi
echo BAF-VM-DONE
# (No logind here: straight to poweroff.target.)
systemctl --no-block --job-mode=replace-irreversibly start poweroff.target
