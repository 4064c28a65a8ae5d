#!/usr/bin/env bash
# The test suite's check of the peer benchmark's harness (the benchmark
# itself runs in the bench VM: scripts/bench.sh): mosquitto and nats-server
# started on loopback ports of their own, then `baf-peer-bench smoke`
# moves messages both ways through MQTT, NATS, Zenoh and iceoryx2. baf's
# own rows need the module: the VM suite covers those paths.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$REPO"

cargo build --quiet -p baf-peer-bench
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Free loopback ports, chosen by the kernel.
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mq=$(port) nats=$(port) zn=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mq" > "$work/mosquitto.conf"
[ "$(id -u)" = 0 ] && echo "user root" >> "$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
/usr/sbin/nats-server -a 127.0.0.1 -p "$nats" > "$work/nats.log" 2>&1 &
pids+=($!)
listening() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null; }
for _ in $(seq 100); do
  listening "$mq" && listening "$nats" && break
  sleep 0.1
done
listening "$mq" || { cat "$work/mosquitto.log"; die "mosquitto did not start"; }
listening "$nats" || { cat "$work/nats.log"; die "nats-server did not start"; }

# iceoryx2 keeps its state in /dev/shm and /tmp; the harness names its
# services per run.
"$REPO/target/debug/baf-peer-bench" --mqtt "127.0.0.1:$mq" --nats "127.0.0.1:$nats" --zenoh-port "$zn" \
  smoke mqtt nats zenoh iceoryx2 iceoryx2-busy
