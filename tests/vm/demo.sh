# The demo (busybox sh, sourced by /init): real pub/sub on our module.
insmod /lib/fanout.ko devices=1
echo
echo "== baf demo: one publisher, two subscribers on /dev/fanout0 =="
submsg /dev/fanout0 | sed 's/^/  reader A got: /' & a=$!
submsg /dev/fanout0 | sed 's/^/  reader B got: /' & b=$!
sleep 0.5
echo "\$ seq 3 | pubmsg /dev/fanout0"
seq 3 | pubmsg /dev/fanout0
sleep 1
echo "\$ baf-setup status"
baf-setup status
kill $a $b 2>/dev/null; sleep 0.2
echo "== end of demo =="
t_ok demo
