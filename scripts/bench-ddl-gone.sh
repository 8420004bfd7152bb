#!/usr/bin/env bash
# CREATE TABLE at 64 clients on a fresh 3-node cluster and on one where GONE simulated datanodes
# registered and then went silent (listed, down, for --node-idle-forget-ms: an hour by default),
# alternating fresh/gone for ROUNDS rounds, each on a new cluster (issue 10, item 6). Prints one
# JSON line per run: tables/s, the nodes the leader lists, the load average at its start.
#   PERF=1  also records the leader with `perf record -g` for PERF_SECS (10) while the gone nodes
#           sit idle, before the DDL run, into $PERF_DIR (default /tmp) as perf-gone-ROUND.data,
#           and during each DDL run as perf-ddl-KIND-ROUND.data; PERF_CALLGRAPH (default -g) sets
#           how stacks are taken, e.g. "--call-graph dwarf -F 300" for a build without frame pointers.
#   KINDS="gone" runs only that kind (default "fresh gone").
# TABLES (default 15,000: about 10 s of DDL; 3,000 lasted 1.5 s, too short to tell a rate from
# the leader's first second after the storm).
# Usage: scripts/bench-ddl-gone.sh [GONE] [ROUNDS] [TABLES]
set -euo pipefail
gone=${1:-10000}
rounds=${2:-2}
tables=${3:-15000}
source "$(dirname "$0")/lib/cluster.sh"
stop_cluster() {
  for i in 1 2 3; do kill "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true; done
  rm -rf "$work/1" "$work/2" "$work/3"
}
# N simulated datanodes (REGIONS each, default 1,000) register and go: `cairn sim` processes of
# SIM_BATCH nodes with consecutive ids, two at a time, each stopped after SIM_SECS (one stream
# per node; a single process with 10,000 streams on 2 cores times out its own streams and
# registers only about half).
register_and_leave() {
  local n=$1 batch=${SIM_BATCH:-1000} first=100000 sp
  while [ "$n" -gt 0 ]; do
    sp=()
    for _ in 1 2; do
      [ "$n" -gt 0 ] || break
      local k=$((n < batch ? n : batch))
      "$cairn" sim --endpoints "$eps" --datanodes "$k" --regions-per-node "${REGIONS:-1000}" --first-node-id "$first" \
        >/dev/null 2>>"$work/sim.log" &
      sp+=($!)
      first=$((first + k))
      n=$((n - k))
    done
    sleep "${SIM_SECS:-10}"
    kill -INT "${sp[@]}" 2>/dev/null || true
    wait "${sp[@]}" 2>/dev/null || true
  done
}
echo "machine: $(machine); cairn: $cairn" >&2
for round in $(seq 1 "$rounds"); do
  for kind in ${KINDS:-fresh gone}; do
    start_cluster
    first_leader=$(leader_id)
    if [ "$kind" = gone ]; then
      register_and_leave "$gone"
      # Past the lease (9 s) and the down judgement of every simulated node.
      sleep 20
    fi
    # Read again: the registration storm can move leadership (then the gone nodes are "unknown"
    # to the new leader, not down; the JSON line says so).
    leader=$(leader_id)
    lpid=${pids[$leader]}
    if [ "$kind" = gone ]; then
      if [ "${PERF:-0}" = 1 ]; then
        perf record ${PERF_CALLGRAPH:--g} -p "$lpid" -o "${PERF_DIR:-/tmp}/perf-gone-$round.data" -- sleep "${PERF_SECS:-10}" 2>/dev/null
      fi
    fi
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    perf_pid=
    if [ "${PERF:-0}" = 1 ]; then
      perf record ${PERF_CALLGRAPH:--g} -p "$lpid" -o "${PERF_DIR:-/tmp}/perf-ddl-$kind-$round.data" 2>/dev/null &
      perf_pid=$!
    fi
    "$cairn" bench ddl --endpoints "$eps" --clients 64 --tables "$tables" --datanodes 3 --pid "$lpid" \
      -o json >"$work/ddl.json"
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    listed=$("$cairn" ctl --endpoints "$eps" -o json node list | jq 'if type == "array" then length else (.nodes | length) end')
    jq -c --arg kind "$kind" --arg load "$load" --argjson round "$round" --argjson listed "$listed" \
      --argjson leader_changed "$([ "$leader" = "$first_leader" ] && echo false || echo true)" \
      '{round: $round, kind: $kind, listed: $listed, leader_changed: $leader_changed, tables_per_sec: (.tables_per_sec | floor), p50_ms: .latency_ms.p50, p99_ms: .latency_ms.p99, errors, leader_cpu_cores: (.processes[0].cpu_cores * 100 | round / 100), leader_rss_mib: (.processes[0].rss_kib / 1024 | floor), load: $load}' \
      "$work/ddl.json"
    stop_cluster
  done
done
