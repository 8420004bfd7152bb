#!/usr/bin/env bash
# A large cluster on one machine: CREATE TABLE of TABLES tables × 10 regions at 64 clients with
# 20 simulated datanodes heartbeating their regions (1M regions at the default 100,000 tables),
# against a 3-node cluster of `dist` binaries. Prints the DDL summary, then the leader's
# scheduling-pass gauges five times 4 s apart (the datanodes are gone by then: the bench ends
# them), each node's resident memory and heap in use (glibc's count of live allocations, the
# lowest of five readings a second apart: less noisy than resident memory) right after the load
# and 20 s later (MiB, and bytes per region), the leader's heap per routed region sampled every
# 2 s during the load's last tenth (the datanodes reporting, grants held, DDL in flight),
# and how often leader services started (more than once per node means the leader lost its
# quorum contact, or leadership, under the load).
#   scripts/bench-large-cluster.sh [TABLES (100000)]
set -euo pipefail
source "$(dirname "$0")/lib/cluster.sh"
tables=${1:-100000}
start_cluster
echo "machine: $(machine); $(date -u +%F); build $(cd "$root" && git rev-parse --short HEAD)"
leader=$(leader_id)
# The leader's heap in use and the regions its last scheduling pass saw, every 2 s of the load.
sample_during() {
  while sleep 2; do
    curl -s "http://127.0.0.1:$(http "$leader")/metrics" | awk '
      /^cairn_memory_heap_bytes / {h = $2} /^cairn_scheduler_pass_regions / {r = $2}
      END {if (h > 0 && r > 0) printf "%d %d\n", h, r}'
  done
}
sample_during > "$work/during.txt" &
sampler=$!
pids+=("$sampler") # stopped at exit with the nodes
"$cairn" bench ddl --endpoints "$eps" --clients 64 --tables "$tables" --regions-per-table 10 \
  --datanodes 20 --database bench_large --pid "${pids[$leader]}" -o json |
  jq -c '{created, errors, first_error, tables_per_sec: (.tables_per_sec | floor), latency_ms}'
kill "$sampler" 2>/dev/null || true
awk -v least=$((tables * 9)) '$2 >= least {b = $1 / $2; n++; if (!lo || b < lo) lo = b; if (b > hi) hi = b}
  END {if (n) printf "during the load (last tenth, %d samples): leader heap %d-%d B/region\n", n, lo, hi
       else print "during the load: no sample with 90% of the regions routed"}' "$work/during.txt"
heap_mib() { # NODE: heap in use, MiB
  curl -s "http://127.0.0.1:$(http "$1")/metrics" |
    awk '/^cairn_memory_heap_bytes / {printf "%d", $2 / 1048576}'
}
memory() { # WHEN
  local l i round
  l=$(leader_id)
  # Heap in use: the lowest of five readings a second apart, so that a Raft snapshot being
  # encoded at that moment (one buffer of ~110 MB, freed when sent) does not count.
  local -a heap=()
  for round in 1 2 3 4 5; do
    for i in 1 2 3; do
      local h; h=$(heap_mib "$i")
      # A failed scrape (or a build without the gauge) is no reading.
      [ -n "$h" ] || continue
      if [ -z "${heap[$i]:-}" ] || [ "$h" -lt "${heap[$i]}" ]; then heap[$i]=$h; fi
    done
    [ "$round" = 5 ] || sleep 1
  done
  for i in 1 2 3; do
    local r; r=$(rss_mib "${pids[$i]}")
    echo "$1: node $i$([ "$i" = "$l" ] && echo ' (leader)'): RSS $r MiB ($((r * 1048576 / (tables * 10))) B/region), heap in use ${heap[$i]:-?} MiB ($((${heap[$i]:-0} * 1048576 / (tables * 10))) B/region), peak $(peak_mib "${pids[$i]}") MiB"
  done
}
memory "after the load"
for _ in 1 2 3 4 5; do
  sleep 4
  l=$(leader_id)
  echo "leader $l: $(curl -s "http://127.0.0.1:$(http "$l")/metrics" | grep -E '^cairn_scheduler_pass' | tr '\n' ' ')"
done
memory "20 s later"
for i in 1 2 3; do
  echo "node $i: leader services started $(grep -c 'leader term started' "$work/node-$i.log" || true) times"
done
