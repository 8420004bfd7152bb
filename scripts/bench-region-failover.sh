#!/usr/bin/env bash
# Datanode failover and drain on a 3-node Cairn cluster with in-process simulated datanodes:
# `cairn bench region-failover` (10 datanodes, 10,000 regions, 5 kills, then a drain), once with
# default settings and once with a fast setting (FAST_ARGS, the datanodes' interval FAST_INTERVAL);
# SERVE_ARGS go to both (e.g. "--region-followers 1": each run then also times replica-repair).
# Usage: scripts/bench-region-failover.sh [RUNS]   (default 5; results to stdout)
set -euo pipefail
runs=${1:-5}
fast_args=${FAST_ARGS:---node-heartbeat-interval-ms 500 --failure-acceptable-pause-ms 100 --region-lease-margin-ms 200}
fast_interval=${FAST_INTERVAL:-500}
source "$(dirname "$0")/lib/cluster.sh"
echo "machine: $(machine); load average: $(cut -d' ' -f1-3 /proc/loadavg)"

bench() {
  local interval=$1
  shift
  echo "\$ cairn serve $* (3 nodes); cairn bench region-failover --runs $runs --interval-ms $interval"
  start_cluster "$@"
  "$cairn" bench region-failover --endpoints "$eps" --runs "$runs" --interval-ms "$interval"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "${work:?}"/[123]
}
serve_args=${SERVE_ARGS:-}
# shellcheck disable=SC2086
bench 3000 $serve_args
# shellcheck disable=SC2086
bench "$fast_interval" $fast_args $serve_args
