#!/bin/bash
# Run from the repository root after `cargo build --release -p p2p-node`.
# 13 p2p-node processes on 127.0.0.1xx, publish a 64 MiB file through the API of node 1,
# wait until every node has it, report each node's peak RSS (VmHWM).
set -euo pipefail
BIN=${BIN:-target/release/p2p-node}
PEERS=${PEERS:-'"all"'}
N=13
ROOT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf $ROOT' EXIT
for i in $(seq 1 $N); do
  d=$ROOT/m$i; mkdir -p $d; addr=127.0.0.$((150+i))
  $BIN keygen --out $d > $d/id.txt
  echo "$(cat $d/id.txt) $addr:4100" >> $ROOT/members.txt
done
{ echo "version = 1"; echo "member_count = $N"
  while read -r id addr; do printf '\n[[member]]\nid = "%s"\naddr = "%s"\n' "$id" "$addr"; done < $ROOT/members.txt
} > $ROOT/registry.toml
for i in $(seq 1 $N); do
  d=$ROOT/m$i; addr=127.0.0.$((150+i)); cp $ROOT/registry.toml $d/
  cat > $d/node.toml <<EOT
listen = "$addr:4100"
key = "key.pem"
cert = "cert.pem"
registry = "registry.toml"
api = "$addr:9000"
deliveries_dir = "received"
log_level = "warn"
[tuning]
peers = $PEERS
auto_relay = true
EOT
  (cd $d && MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456 exec $BIN run --config node.toml > run.log 2>&1) &
  echo $! > $d/pid
done
sleep 3
head -c $((64<<20)) /dev/urandom > $ROOT/big.bin
t0=$(date +%s.%N)
ID=$($BIN publish $ROOT/big.bin --kind 1 --api 127.0.0.151:9000)
for i in $(seq 2 $N); do
  until [ -s $ROOT/m$i/received/$ID ] && [ $(stat -c %s $ROOT/m$i/received/$ID) -eq $((64<<20)) ]; do sleep 0.05; done
done
t1=$(date +%s.%N)
echo "all 12 received in $(echo "$t1 - $t0" | bc) s"
for i in $(seq 1 $N); do
  pid=$(pgrep -P $(cat $ROOT/m$i/pid) p2p-node || cat $ROOT/m$i/pid)
  cmp -s $ROOT/big.bin $ROOT/m$i/received/$ID 2>/dev/null && ok=same || ok=-
  echo "node $i $(grep VmHWM /proc/$pid/status) $ok"
done
