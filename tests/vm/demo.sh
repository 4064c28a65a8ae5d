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
echo "\$ baf-setup status"
baf-setup status
echo "== end of demo =="
if [ "$(cat /tmp/A)" = "$(seq 3)" ] && [ "$(cat /tmp/B)" = "$(seq 3)" ]; then
  t_ok "demo: both subscribers got 1 2 3"
else
  t_fail "demo: both subscribers got 1 2 3"
fi
