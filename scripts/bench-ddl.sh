#!/usr/bin/env bash
# CREATE TABLE throughput and leader memory on a 3-node Cairn cluster of `dist` binaries on free
# local ports. `cairn bench ddl` runs simulated datanodes in its own process, which open and close
# the regions they are told to.
#   1. 1 client, then 64 clients: TABLES tables x 8 hash regions (1 client: TABLES/10), 10
#      datanodes, then DROP DATABASE timed; the leader's pid for CPU and RSS.
#   2. Memory: MEMORY_TABLES tables x 10 regions (100k x 10 = 1M regions) on 20 datanodes; RSS
#      of every node with the datanodes attached (heartbeats carry 1M region stats), after they
#      left, and of the leader restarted (kill -9) holding only the metadata.
# Usage: scripts/bench-ddl.sh [TABLES] [MEMORY_TABLES]   (MEMORY_TABLES=0 skips step 2)
set -euo pipefail
tables=${1:-10000}
mem_tables=${2:-100000}
source "$(dirname "$0")/lib/cluster.sh"
start_cluster
leader=$(leader_id)
lpid=${pids[$leader]}
echo "machine: $(machine); leader: node $leader (pid $lpid)"

summary=()
for clients in 1 64; do
  n=$tables
  [ "$clients" = 1 ] && n=$((tables / 10))
  cmd=(bench ddl --endpoints "$eps" --clients "$clients" --tables "$n" --regions-per-table 8 --datanodes 10 --drop --pid "$lpid")
  echo "\$ cairn ${cmd[*]}"
  "$cairn" "${cmd[@]}" -o json | tee "$work/ddl-$clients.json"
  summary+=("$(jq -r '"\(.clients) clients: \(.created) tables x \(.regions_per_table) regions, \(.tables_per_sec | floor) tables/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, p99.9 \(.latency_ms.p999) ms, max \(.latency_ms.max) ms, errors \(.errors); drop database \(.drop.elapsed_secs) s; leader cpu \(.processes[0].cpu_cores) cores"' "$work/ddl-$clients.json")")
done

if [ "$mem_tables" -gt 0 ]; then
  cmd=(bench ddl --endpoints "$eps" --clients 64 --tables "$mem_tables" --regions-per-table 10 --datanodes 20 --database bench_memory --pid "$lpid")
  echo "\$ cairn ${cmd[*]}"
  "$cairn" "${cmd[@]}" -o json | tee "$work/memory.json"
  summary+=("$(jq -r '"memory load: \(.created) tables x \(.regions_per_table) regions (\(.regions_open) regions open on 20 datanodes), \(.tables_per_sec | floor) tables/s, p99 \(.latency_ms.p99) ms, errors \(.errors); leader RSS with datanodes attached \((.processes[0].rss_kib / 1024) | floor) MiB"' "$work/memory.json")")
  sleep 5
  for i in 1 2 3; do summary+=("node $i RSS after the datanodes left: $(rss_mib "${pids[$i]}") MiB (peak since start $(peak_mib "${pids[$i]}") MiB), data dir $(du -sh "$work/$i" | cut -f1)"); done
  count=$("$cairn" ctl --endpoints "$eps" -o json table list bench_memory --page-size 1000 --all | jq '.tables | length')
  summary+=("tables listed in bench_memory: $count")
  kill -9 "$lpid"; wait "$lpid" 2>/dev/null || true
  t0=$(date +%s.%N)
  start_node "$leader"
  healthy "$leader"
  t1=$(date +%s.%N)
  sleep 2
  summary+=("old leader (node $leader) kill -9 -> restarted -> /health 200: $(echo "$t1 - $t0" | bc) s; its RSS holding only the metadata: $(rss_mib "${pids[$leader]}") MiB")
fi

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
