#!/usr/bin/env bash
# Heartbeat load on a 3-node Cairn cluster (separate processes): N simulated datanodes x M regions
# at a 3 s interval, measured by `cairn bench heartbeat` with the leader's pid for CPU and RSS.
# The invented regions belong to no table: the cluster runs with the orphan-region reconciler off
# (--region-reconcile-interval-ms 0) so the leader does not close them mid-run.
# Usage: scripts/bench-heartbeat.sh [DURATION_SECS]
set -euo pipefail
secs=${1:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
cairn="$root/target/release/cairn"
[ -x "$cairn" ] || (cd "$root" && cargo build --release -p cairn)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ic="1=127.0.0.1:35380,2=127.0.0.1:35390,3=127.0.0.1:35400"
for i in 1 2 3; do
  base=$((35379 + 10 * (i - 1)))
  "$cairn" serve --node-id $i --data-dir "$work/$i" --initial-cluster "$ic" \
    --listen-client 127.0.0.1:$base --listen-peer 127.0.0.1:$((base + 1)) \
    --listen-http 127.0.0.1:$((base + 2)) --region-reconcile-interval-ms 0 2>"$work/node-$i.log" &
  pids[$i]=$!
done
sleep 3
eps=127.0.0.1:35379,127.0.0.1:35389,127.0.0.1:35399
leader=$("$cairn" ctl --endpoints "$eps" -o json leader show | awk -F': ' '/"leader_id"/ {gsub(/[^0-9]/,"",$2); print $2}')
echo "leader: node $leader (pid ${pids[$leader]})"
for n in 100 1000; do
  echo "\$ cairn bench heartbeat --endpoints $eps --datanodes $n --regions-per-node 1000 --interval-ms 3000 --duration-secs $secs --pid ${pids[$leader]}"
  "$cairn" bench heartbeat --endpoints "$eps" --datanodes "$n" --regions-per-node 1000 \
    --interval-ms 3000 --duration-secs "$secs" --pid "${pids[$leader]}"
done
