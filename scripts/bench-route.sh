#!/usr/bin/env bash
# Route lookups on a 3-node Cairn cluster of release binaries on free local ports: GetRoutes
# served by one node (the leader, then a follower; linearizable and serializable; 100 and 1
# table ids per call) and a frontend's RouteCache (warm, 1 and 64 tasks). The first run creates
# TABLES tables x 8 regions (with simulated datanodes run for the setup only).
# Usage: scripts/bench-route.sh [TABLES] [DURATION_SECS]
set -euo pipefail
tables=${1:-10000}
secs=${2:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
cairn="$root/target/release/cairn"
[ -x "$cairn" ] || (cd "$root" && cargo build --release -p cairn)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

read -r -a ports <<<"$(python3 -c 'import socket
socks = [socket.socket() for _ in range(9)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
client() { echo "${ports[$((3 * ($1 - 1)))]}"; }
peer() { echo "${ports[$((3 * ($1 - 1) + 1))]}"; }
http() { echo "${ports[$((3 * ($1 - 1) + 2))]}"; }
ic="1=127.0.0.1:$(peer 1),2=127.0.0.1:$(peer 2),3=127.0.0.1:$(peer 3)"
for i in 1 2 3; do
  "$cairn" serve --node-id "$i" --data-dir "$work/$i" --initial-cluster "$ic" \
    --listen-client "127.0.0.1:$(client "$i")" --listen-peer "127.0.0.1:$(peer "$i")" \
    --listen-http "127.0.0.1:$(http "$i")" 2>"$work/node-$i.log" &
  pids[$i]=$!
done
for i in 1 2 3; do until curl -sf "http://127.0.0.1:$(http "$i")/health" >/dev/null; do sleep 0.1; done; done
eps="127.0.0.1:$(client 1),127.0.0.1:$(client 2),127.0.0.1:$(client 3)"
leader=$("$cairn" ctl --endpoints "$eps" -o json leader show | jq -r .leader_id)
follower=$(( leader % 3 + 1 ))
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); leader: node $leader, follower measured: node $follower"

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
