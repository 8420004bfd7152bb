#!/usr/bin/env bash
# Heartbeat load on a 3-node Cairn cluster (separate processes): N simulated datanodes x M regions
# at a 3 s interval, measured by `cairn bench heartbeat` with the leader's pid for CPU and RSS.
# The invented regions belong to no table: the cluster runs with the orphan-region reconciler off
# (--region-reconcile-interval-ms 0) so the leader does not close them mid-run.
# Usage: scripts/bench-heartbeat.sh [DURATION_SECS]
set -euo pipefail
secs=${1:-30}
source "$(dirname "$0")/lib/cluster.sh"
start_cluster --region-reconcile-interval-ms 0
leader=$(leader_id)
echo "machine: $(machine); leader: node $leader (pid ${pids[$leader]})"
for n in 100 1000; do
  echo "\$ cairn bench heartbeat --endpoints $eps --datanodes $n --regions-per-node 1000 --interval-ms 3000 --duration-secs $secs --pid ${pids[$leader]}"
  "$cairn" bench heartbeat --endpoints "$eps" --datanodes "$n" --regions-per-node 1000 \
    --interval-ms 3000 --duration-secs "$secs" --pid "${pids[$leader]}"
done
