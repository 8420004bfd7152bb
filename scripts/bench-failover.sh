#!/usr/bin/env bash
# Leader failover, Cairn and etcd side by side, then spurious leader changes under load.
# 1. `cairn bench leader-failover` (it starts, kills and restarts clusters of its own, default
#    settings): Cairn, an optional older Cairn (CAIRN_BEFORE_BIN) and etcd (ETCD_BIN, default
#    `etcd` from PATH; skipped when there is none).
# 2. A 3-node Cairn cluster with default settings under `cairn bench kv --clients 256` puts for
#    LOAD_SECS; each node's cairn_raft_leader_changes_total and the Raft term before and after:
#    any increase is a leader change (or an election) that no failure caused.
# Usage: scripts/bench-failover.sh [ROUNDS] [LOAD_SECS]   (defaults 20 and 300; results to stdout)
set -euo pipefail
rounds=${1:-20}
load_secs=${2:-300}
source "$(dirname "$0")/lib/cluster.sh"
etcd_bin=${ETCD_BIN:-$(command -v etcd || true)}
echo "machine: $(machine); load average: $(cut -d' ' -f1-3 /proc/loadavg)"

failover() {
  echo "\$ cairn bench leader-failover --rounds $rounds $*"
  "$cairn" bench leader-failover --rounds "$rounds" "$@"
}
failover --target cairn
[ -z "${CAIRN_BEFORE_BIN:-}" ] || failover --target cairn --cairn-bin "$CAIRN_BEFORE_BIN"
if [ -n "$etcd_bin" ]; then
  failover --target etcd --etcd-bin "$etcd_bin"
else
  echo "etcd not found (apt-get install etcd-server, or set ETCD_BIN): etcd rounds skipped" >&2
fi

leader_changes() {
  curl -sf "http://127.0.0.1:$(http "$1")/metrics" |
    awk '$1 == "cairn_raft_leader_changes_total" { print $2 }'
}
start_cluster
# /health answers before every node has seen the first leader; count from a settled cluster.
until [ "$(leader_id 2>/dev/null || echo null)" != null ]; do sleep 0.2; done
sleep 2
before=() && for i in 1 2 3; do before[$i]=$(leader_changes "$i"); done
leader_before=$(leader_id)
term() { "$cairn" ctl --endpoints "$eps" -o json leader show | jq -r .term; }
term_before=$(term)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "\$ cairn bench kv --endpoints $eps --clients 256 --duration-secs $load_secs --workload put"
"$cairn" bench kv --endpoints "$eps" --clients 256 --duration-secs "$load_secs" --workload put
leader_after=$(leader_id)
spurious=0
for i in 1 2 3; do
  delta=$(( $(leader_changes "$i") - before[i] ))
  spurious=$((spurious + delta))
  echo "node $i: cairn_raft_leader_changes_total +$delta during the load"
done
echo "leader before: node $leader_before, after: node $leader_after; term before: $term_before, after: $(term)"
echo "leader changes seen: $spurious"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
