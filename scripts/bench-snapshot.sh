#!/usr/bin/env bash
# Snapshot stalls under write load (issue 8): a fresh 3-node cluster of `dist` binaries on free
# local ports with default snapshot settings (one snapshot every 100,000 log entries, so a load
# of 600k puts takes several on every node), then
#   cairn bench kv --clients 256 --total KEYS --key-space KEYS --value-size 100 --workload put
# and the latency tail it sees. Each binary x key count runs RUNS times, each on a new cluster,
# the binaries taking turns; the load average is printed before each run (other work on the
# machine shows in the tail).
# Usage: scripts/bench-snapshot.sh [KEYS...]      (default: 600000 1000000)
#   BINS="/path/cairn-before /path/cairn"  binaries to compare (default: this tree's `dist` build)
#   RUNS=2                                  runs per binary and key count
#   LOGS_DIR=/some/dir                      keep each run's node logs there
#   SERVE_ARGS="--snapshot-logs-since-last 1000000000"  extra `cairn serve` flags (this one: a
#                                           baseline without snapshots, to tell their share of
#                                           the tail from the machine's)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = "--one" ]; then
  # One run: cluster, load, summary line, teardown (cluster.sh's trap).
  keys=$2
  source "$here/lib/cluster.sh"
  # shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
  start_cluster ${SERVE_ARGS:-}
  cmd=(bench kv --endpoints "$eps" --clients 256 --total "$keys" --key-space "$keys" --value-size 100 --workload put -o json)
  # Every snapshot (built or installed) replaces snapshot.bin by a rename: count the distinct
  # files seen, whatever the binary logs.
  (while :; do
    for i in 1 2 3; do stat -c "$i %i %z" "$work/$i/snapshots/snapshot.bin" 2>/dev/null || true; done
    sleep 0.2
  done) >"$work/snapshot-inodes" &
  watcher=$!
  pids+=("$watcher")
  "$cairn" "${cmd[@]}" >"$work/bench.json"
  kill "$watcher"
  snapshots=$(sort -u "$work/snapshot-inodes" | wc -l)
  if [ -n "${LOGS_DIR:-}" ]; then
    mkdir -p "$LOGS_DIR"
    for i in 1 2 3; do cp "$work/node-$i.log" "$LOGS_DIR/$(basename "$cairn")-$keys-$$-node-$i.log"; done
  fi
  jq -r --arg keys "$keys" --arg snaps "$snapshots" '.workloads[0] |
    "\($keys) keys: \(.throughput_rps | floor) puts/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, p99.9 \(.latency_ms.p999) ms, max \(.latency_ms.max) ms, errors \(.errors); snapshot files written (all nodes): \($snaps)"' \
    "$work/bench.json"
  exit 0
fi

keys_list=("$@")
[ ${#keys_list[@]} -gt 0 ] || keys_list=(600000 1000000)
runs=${RUNS:-2}
if [ -n "${BINS:-}" ]; then
  read -r -a bins <<<"$BINS"
else
  source "$here/lib/binary.sh"
  bins=("$cairn")
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "\$ cairn bench kv --endpoints E1,E2,E3 --clients 256 --total KEYS --key-space KEYS --value-size 100 --workload put"
# Binaries take turns run by run, so that whatever else loads the machine meanwhile hits both.
for keys in "${keys_list[@]}"; do
  for run in $(seq 1 "$runs"); do
    for bin in "${bins[@]}"; do
      echo "[$(basename "$bin") run $run] load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
      CAIRN_BIN="$bin" "$0" --one "$keys"
    done
  done
done
