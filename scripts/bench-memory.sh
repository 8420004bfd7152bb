#!/usr/bin/env bash
# Loads 1M keys with 100-byte values into a 3-node Cairn cluster, reports each node's resident
# memory, then SIGKILLs the leader and measures how long it takes to restart and be healthy again.
# Usage: scripts/bench-memory.sh [KEYS]
set -euo pipefail
keys=${1:-1000000}
source "$(dirname "$0")/lib/binary.sh"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ic="1=127.0.0.1:33380,2=127.0.0.1:33390,3=127.0.0.1:33400"
start() {
  local i=$1 base=$((33379 + 10 * ($1 - 1)))
  "$cairn" serve --node-id "$i" --data-dir "$work/$i" --initial-cluster "$ic" \
    --listen-client 127.0.0.1:$base --listen-peer 127.0.0.1:$((base + 1)) \
    --listen-http 127.0.0.1:$((base + 2)) 2>>"$work/node-$i.log" &
  pids[$i]=$!
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
for i in 1 2 3; do start $i; done
sleep 3
eps=127.0.0.1:33379,127.0.0.1:33389,127.0.0.1:33399
echo "\$ cairn bench kv --endpoints $eps --clients 256 --total $keys --key-space $keys --value-size 100 --workload put"
# Sequential keys: with --key-space equal to --total every key is written once.
"$cairn" bench kv --endpoints "$eps" --clients 256 --total "$keys" --key-space "$keys" --value-size 100 --workload put
count=$("$cairn" ctl --endpoints "$eps" -o json kv get bench/ --prefix --count-only | grep '"count"')
echo "keys stored: $count"
for i in 1 2 3; do echo "node $i RSS: $(( $(rss ${pids[$i]}) / 1024 )) MiB, data dir: $(du -sh "$work/$i" | cut -f1)"; done
leader=$("$cairn" ctl --endpoints "$eps" -o json leader show | awk -F': ' '/"leader_id"/ {gsub(/[^0-9]/,"",$2); print $2}')
echo "SIGKILL leader (node $leader), restart it, time until its /health is 200 (leader known, at most 1000 log entries unapplied)"
kill -9 "${pids[$leader]}"; wait "${pids[$leader]}" 2>/dev/null || true
t0=$(date +%s.%N)
start "$leader"
http=$((33381 + 10 * (leader - 1)))
until curl -sf "http://127.0.0.1:$http/health" >/dev/null; do sleep 0.05; done
t1=$(date +%s.%N)
echo "restart to healthy: $(echo "$t1 - $t0" | bc) s; RSS after restart: $(( $(rss ${pids[$leader]}) / 1024 )) MiB"
