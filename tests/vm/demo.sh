# The demo (busybox sh, sourced by /init): real pub/sub on our module.
insmod /lib/fanout.ko devices=0
echo
echo "== baf demo: one publisher, two subscribers =="
echo "\$ baf-setup create demo"
baf-setup create demo
ls -l /dev/baf/demo
echo "\$ submsg demo > A &   # subscriber A"
submsg demo > /tmp/A 2>&1 &
echo "\$ submsg demo > B &   # subscriber B"
submsg demo > /tmp/B 2>&1 &
sleep 1
echo "\$ seq 3 | pubmsg demo"
seq 3 | pubmsg demo
wait_for 10 grep -qx 3 /tmp/A
wait_for 10 grep -qx 3 /tmp/B
sed 's/^/  subscriber A got: /' /tmp/A
sed 's/^/  subscriber B got: /' /tmp/B
echo
echo "== a lossless topic: a small ring, a slow reader, nothing lost =="
echo "\$ baf-setup create jobs --lossless --size 16K"
baf-setup create jobs --lossless --size 16K
echo "\$ seq 100000 | pubmsg --wait-readers 1 jobs &   # waits for its reader"
(seq 100000 | pubmsg --wait-readers 1 jobs 2>&1; echo "  pubmsg done") &
sleep 1
echo "\$ submsg --lossless -n 100000 jobs | (sleep 1; wc -l)   # a slow consumer"
submsg --lossless -n 100000 jobs | (sleep 1; wc -l) > /tmp/C &
wait_for 60 test -s /tmp/C
echo "  the slow consumer got $(cat /tmp/C) of 100000 lines"
echo "\$ baf-setup status"
baf-setup status
echo "== end of demo =="
if [ "$(cat /tmp/A)" = "$(seq 3)" ] && [ "$(cat /tmp/B)" = "$(seq 3)" ]; then
  t_ok "demo: both subscribers got 1 2 3"
else
  t_fail "demo: both subscribers got 1 2 3"
fi
if [ "$(cat /tmp/C)" = 100000 ]; then
  t_ok "demo: the slow lossless consumer got all 100000 lines"
else
  t_fail "demo: the slow lossless consumer got all 100000 lines"
fi
