#!/usr/bin/env bash
# Issue 12's figures: the write path, Cairn beside etcd in the same run, each a fresh 3-node
# cluster of `dist` binaries on free local ports (etcd: Debian's etcd-server 3.4 by default,
# ETCD_BIN=... for another), the same client for both:
#   1. `cairn bench kv --workload put` (256-byte values) at each of CLIENTS (default "1 16 256"),
#      over all three endpoints; one client's put also to the leader alone and to a follower
#      alone (over all three, a single client's endpoint is the leader or not by chance);
#   2. `etcdctl check perf --load=LOAD` (default l; 60 s each) against each cluster.
# Usage: scripts/bench-write.sh [SECONDS_PER_PUT_RUN]   (results go to stdout)
#   PERF=1   records the Cairn leader with perf during the put at PERF_CLIENTS clients (default 16;
#            to $PERF_OUT, default /tmp/perf-cairn.data; PERF_ARGS="-F 499 -g" by default:
#            `dist` builds keep no frame pointers, so "--call-graph dwarf -F 99" for callers)
#   SKIP_CHECK_PERF=1   leaves out part 2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-10}
clients_list=${CLIENTS:-"1 16 256"}
load=${LOAD:-l}
source "$here/lib/cluster.sh"
etcd_bin=${ETCD_BIN:-$(command -v etcd || true)}
[ -x "$etcd_bin" ] || { echo "no etcd (apt-get install etcd-server, or ETCD_BIN=...)" >&2; exit 1; }
etcdctl_bin=${ETCDCTL_BIN:-$(command -v etcdctl)}
echo "machine: $(machine); etcd: $("$etcd_bin" --version | head -1); cairn: $(cd "$root" && git rev-parse --short HEAD)"

start_cluster
start_etcd "$etcd_bin"

cpu_ticks() { # PIDS... -> their user+system CPU, in clock ticks
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
put() { # ENDPOINTS CLIENTS SERVER-PIDS...
  local e=$1 c=$2; shift 2
  local before; before=$(cpu_ticks "$@")
  echo "\$ cairn bench kv --endpoints E --clients $c --duration-secs $secs --workload put --value-size 256 --key-space 10000"
  "$cairn" bench kv --endpoints "$e" --clients "$c" --duration-secs "$secs" --workload put \
    --value-size 256 --key-space 10000 | tee "$work/put.out"
  local used=$(( $(cpu_ticks "$@") - before )) n
  n=$(awk -F'|' '/^\| put/ {gsub(/ /, "", $3); print $3}' "$work/put.out")
  echo "servers' CPU: $((used * 10)) ms for $n puts, $(( used * 10000000 / (n > 0 ? n : 1) )) us per 1000 puts"
}
# etcd's leader's client endpoint, from `etcdctl endpoint status` (ids compared exactly).
etcd_leader_ep() {
  ETCDCTL_API=3 "$etcdctl_bin" --endpoints "$ee" endpoint status -w json | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["Status"]["header"]["member_id"] == s["Status"]["leader"]:
        print(s["Endpoint"].replace("http://", ""))'
}
echo; echo "== 1. put"
cl=$(leader_id); cf=$((cl % 3 + 1))
el=$(etcd_leader_ep)
ef=$(tr , '\n' <<<"$ee" | grep -v -x "$el" | head -1)
for t in cairn etcd; do
  for to in leader follower; do
    if [ $t = cairn ]; then
      sp=("${pids[1]}" "${pids[2]}" "${pids[3]}")
      e=127.0.0.1:$(client "$cl"); [ $to = follower ] && e=127.0.0.1:$(client "$cf")
    else
      sp=("${epids[@]}"); e=$el; [ $to = follower ] && e=$ef
    fi
    echo "-- $t, 1 client, to the $to ($e)"
    put "$e" 1 "${sp[@]}"
  done
done
for c in $clients_list; do
  for t in cairn etcd; do
    e=$eps; sp=("${pids[1]}" "${pids[2]}" "${pids[3]}")
    [ $t = etcd ] && e=$ee && sp=("${epids[@]}")
    echo "-- $t, $c clients"
    if [ "$t" = cairn ] && [ "$c" = "${PERF_CLIENTS:-16}" ] && [ -n "${PERF:-}" ]; then
      lp=${pids[$(leader_id)]}
      perf record ${PERF_ARGS:--F 499 -g} -p "$lp" -o "${PERF_OUT:-/tmp/perf-cairn.data}" 2>/dev/null &
      perf_pid=$!
      put "$e" "$c" "${sp[@]}"
      kill -INT "$perf_pid"; wait "$perf_pid" || true
    else
      put "$e" "$c" "${sp[@]}"
    fi
  done
done

if [ -z "${SKIP_CHECK_PERF:-}" ]; then
  echo; echo "== 2. etcdctl check perf --load=$load"
  for t in cairn etcd; do
    e=$eps; [ $t = etcd ] && e=$ee
    echo "-- $t"
    ETCDCTL_API=3 "$etcdctl_bin" --endpoints "$e" check perf --load="$load" 2>&1 | tr "\r" "\n" | grep -v '^ *[0-9]* / [0-9]*' | tail -6 || true
  done
fi
