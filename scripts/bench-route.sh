#!/usr/bin/env bash
# Route lookups on a 3-node Cairn cluster of `dist` binaries on free local ports: GetRoutes
# served by one node (the leader, then a follower; linearizable and serializable; 100 and 1
# table ids per call) and a frontend's RouteCache (warm, 1 and 64 tasks). The first run creates
# TABLES tables x 8 regions (with simulated datanodes run for the setup only).
# Usage: scripts/bench-route.sh [TABLES] [DURATION_SECS]
set -euo pipefail
tables=${1:-10000}
secs=${2:-10}
source "$(dirname "$0")/lib/cluster.sh"
start_cluster
leader=$(leader_id)
follower=$(( leader % 3 + 1 ))
echo "machine: $(machine); leader: node $leader, follower measured: node $follower"

# Setup (creates the tables once), listing every endpoint so creates reach the leader.
"$cairn" bench route --endpoints "$eps" --tables "$tables" --batch 100 --clients 1 --duration-secs 1 -o json >/dev/null

summary=()
run() { # NAME NODE ARGS...
  local name=$1 node=$2; shift 2
  local cmd=(bench route --endpoints "127.0.0.1:$(client "$node")" --tables "$tables" --duration-secs "$secs" --pid "${pids[$node]}" "$@")
  echo "\$ cairn ${cmd[*]}"
  "$cairn" "${cmd[@]}" -o json >"$work/out.json"
  jq -c . "$work/out.json"
  summary+=("$name: $(jq -r '"\(.calls_per_sec | floor) calls/s, \(.routes_per_sec | floor) routes/s, p50 \(.latency_ms.p50 // "-") ms, p99 \(.latency_ms.p99 // "-") ms, errors \(.errors), node cpu \(.processes[0].cpu_cores) cores\(if .cache then ", hits \(.cache.hits), misses \(.cache.misses), fetches \(.cache.fetches)" else "" end)"' "$work/out.json")")
}
run "leader, 64 clients, 100 ids/call, linearizable" "$leader" --clients 64 --batch 100
run "leader, 64 clients, 100 ids/call, serializable" "$leader" --clients 64 --batch 100 --serializable
run "leader, 64 clients, 1 id/call, linearizable" "$leader" --clients 64 --batch 1
run "follower, 64 clients, 100 ids/call, linearizable" "$follower" --clients 64 --batch 100
run "follower, 64 clients, 100 ids/call, serializable" "$follower" --clients 64 --batch 100 --serializable
run "route cache (follower), 1 task" "$follower" --cache --clients 1
run "route cache (follower), 64 tasks" "$follower" --cache --clients 64

echo
echo "== summary ($tables tables x 8 regions, $secs s per run)"
printf '%s\n' "${summary[@]}"
