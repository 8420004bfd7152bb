#!/usr/bin/env bash
# Where a 3-node Cairn cluster's CPU goes under `etcdctl check perf --load=l`, by node and thread
# kind: each thread's user+system CPU and its context switches (voluntary and not: each is the
# thread going to sleep or being put off a core) over a 20 s window (from 15 s), per put (puts
# counted from the revision). Threads of one kind on a node are summed (tokio-rt-worker: the
# async workers; cairn-log-write: the Raft log's writer, which syncs; cairn-log-delet: purged
# segments).
# Usage: scripts/bench-threads.sh        (results go to stdout)
#   ENDPOINTS=leader   check perf against the leader alone (default: all three nodes)
#   CAIRN_BIN=...      another build;  CAIRN_WORKER_THREADS=N  the nodes' worker count
set -euo pipefail
source "$(dirname "$0")/lib/cluster.sh"
etcdctl_bin=${ETCDCTL_BIN:-$(command -v etcdctl)}
window_start_s=15
window_s=20
start_cluster
leader=$(leader_id)
e=$eps
[ "${ENDPOINTS:-all}" = leader ] && e="127.0.0.1:$(client "$leader")"
ETCDCTL_API=3 "$etcdctl_bin" --endpoints "$e" check perf --load=l >"$work/cp.out" 2>&1 &
pids+=($!)
sleep "$window_start_s"
# NODE/THREAD-NAME TICKS SWITCHES, one line per thread kind.
threads() {
  local i t
  for i in 1 2 3; do
    for t in /proc/"${pids[$i]}"/task/*; do
      echo "$i/$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat") $(awk '
        /^voluntary_ctxt_switches/ {v = $2} /^nonvoluntary_ctxt_switches/ {n = $2}
        END {print v + n}' "$t/status")"
    done
  done | awk '{a[$1] += $2; c[$1] += $3} END {for (k in a) print k, a[k], c[k]}' | sort
}
r0=$(revision_at "$e"); threads >"$work/t0"; sleep "$window_s"; threads >"$work/t1"; r1=$(revision_at "$e")
puts=$((r1 - r0))
echo "machine: $(machine); leader: node $leader; endpoints: ${ENDPOINTS:-all}; $((puts / window_s)) puts/s"
us_per_tick=$((1000000 / $(getconf CLK_TCK)))
join "$work/t0" "$work/t1" | awk -v n="$puts" -v u="$us_per_tick" '
  {d = ($4 - $2) * u; w = $5 - $3; t += d; tw += w
   if (d > 0 || w > 0) printf "%-24s %7.1f us of CPU, %5.2f context switches per put\n", $1, d / n, w / n}
  END {printf "%-24s %7.1f us of CPU, %5.2f context switches per put\n", "all three", t / n, tw / n}'
