#!/usr/bin/env bash
# The five scheduling scenarios played live (`cairn sim --scenario NAME`) against a 3-node
# cluster of `dist` binaries, default scheduler settings, datanodes heartbeating every second.
# Prints each scenario's time series and summary.
#   scripts/bench-scenarios.sh [DATANODES (8)] [TABLES (100)] [TABLE_REGIONS (4)]
set -euo pipefail
source "$(dirname "$0")/lib/cluster.sh"
datanodes=${1:-8}
tables=${2:-100}
regions=${3:-4}
start_cluster --node-heartbeat-interval-ms 1000
echo "machine: $(machine); $(date -u +%F); build $(cd "$root" && git rev-parse --short HEAD)"
first=1000
for s in add-nodes remove-node hot-table zone-outage half-on-one; do
  # Fresh node ids per scenario: each starts from datanodes the cluster has not seen.
  "$cairn" sim --endpoints "$eps" --scenario "$s" --datanodes "$datanodes" --tables "$tables" \
    --table-regions "$regions" --interval-ms 1000 --first-node-id "$first" --duration-secs 600 \
    || echo "scenario $s: exit status $?"
  first=$((first + 1000))
done
