#!/usr/bin/env bash
# Runs `cairn bench kv` against a 3-node Cairn cluster and a 3-node etcd cluster (Debian's
# etcd-server) on this machine, same workload and flags, at 1, 16 and 256 clients.
# Usage: scripts/bench-compare.sh [TOTAL_PER_WORKLOAD]   (results go to stdout)
set -euo pipefail
total=${1:-20000}
source "$(dirname "$0")/lib/binary.sh"
command -v etcd >/dev/null || { echo "etcd not installed: apt-get install etcd-server" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Cairn: client ports 31379/31389/31399.
ic="1=127.0.0.1:31380,2=127.0.0.1:31390,3=127.0.0.1:31400"
for i in 1 2 3; do
  base=$((31379 + 10 * (i - 1)))
  "$cairn" serve --node-id $i --data-dir "$work/cairn/$i" --initial-cluster "$ic" \
    --listen-client 127.0.0.1:$base --listen-peer 127.0.0.1:$((base + 1)) \
    --listen-http 127.0.0.1:$((base + 2)) 2>"$work/cairn-$i.log" &
  pids+=($!)
done
# etcd: client ports 32379/32389/32399.
eic="e1=http://127.0.0.1:32380,e2=http://127.0.0.1:32390,e3=http://127.0.0.1:32400"
for i in 1 2 3; do
  base=$((32379 + 10 * (i - 1)))
  etcd --name e$i --data-dir "$work/etcd/$i" \
    --listen-client-urls http://127.0.0.1:$base --advertise-client-urls http://127.0.0.1:$base \
    --listen-peer-urls http://127.0.0.1:$((base + 1)) --initial-advertise-peer-urls http://127.0.0.1:$((base + 1)) \
    --initial-cluster "$eic" --initial-cluster-state new --initial-cluster-token bench \
    2>"$work/etcd-$i.log" &
  pids+=($!)
done
sleep 5
ce=127.0.0.1:31379,127.0.0.1:31389,127.0.0.1:31399
ee=127.0.0.1:32379,127.0.0.1:32389,127.0.0.1:32399
for clients in 1 16 256; do
  n=$total
  [ "$clients" = 1 ] && n=$((total / 10))
  for target in cairn etcd; do
    eps=$ce; [ $target = etcd ] && eps=$ee
    echo "== $target, $clients clients, $n requests per workload"
    echo "\$ cairn bench kv --endpoints $eps --clients $clients --total $n --workload all --value-size 256 --key-space 10000"
    "$cairn" bench kv --endpoints "$eps" --clients "$clients" --total "$n" --workload all \
      --value-size 256 --key-space 10000
  done
done
