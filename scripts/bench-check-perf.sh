#!/usr/bin/env bash
# `etcdctl check perf --load=LOAD` (default l: 500 clients, a rate limit of 8,000 writes/s,
# 60 s) against a 3-node Cairn cluster and a 3-node etcd cluster, RUNS times (default 3), each
# run on fresh clusters of both, taking turns which goes first. Besides check perf's own
# verdict, each run prints what the servers saw in a steady window (from 15 s to 45 s):
#   - puts/s, from the revision (`etcdctl endpoint status`);
#   - the servers' and the client's CPU per put, in microseconds (/proc; the three servers
#     together; etcd's includes rendering /metrics for the samples below, about 60 times);
#   - the puts in flight at the servers, summed over the three: for Cairn, Little's law on its
#     `cairn_grpc_request_duration_seconds` histogram (time spent / window); for etcd, the mean
#     of 20 samples of `grpc_server_started_total - grpc_server_handled_total` (etcd keeps no
#     latency histogram by default);
#   - for Cairn, where a put's time goes, from its own histograms: the three logs' durable syncs
#     per put and their mean (write and fdatasync), the followers' mean round trip for a request
#     forwarded to the leader, and the leader's mean time from proposal to applied result.
# Few in flight out of check perf's 500 clients means the client, not the servers, sets the
# pace: its one request generator waits on a rate limiter between requests.
# Usage: scripts/bench-check-perf.sh [RUNS]     (results go to stdout)
#   CAIRN_BIN=...  another Cairn build;  ETCD_BIN=... / ETCDCTL_BIN=...  other etcd binaries
#   LOAD=m         another check perf load
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
load=${LOAD:-l}
window_start_s=15
window_s=30
etcd_samples=20
ticks_per_s=$(getconf CLK_TCK)

if [ "${1:-}" = "--one" ]; then
  first=$2
  source "$here/lib/cluster.sh"
  etcd_bin=${ETCD_BIN:-$(command -v etcd)}
  etcdctl_bin=${ETCDCTL_BIN:-$(command -v etcdctl)}
  start_cluster
  start_etcd "$etcd_bin"
  ctl() { ETCDCTL_API=3 "$etcdctl_bin" "$@"; }
  ticks() { # PIDS... -> their user+system CPU, in clock ticks
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
  }
  # Cairn, summed over the three nodes: the Put histogram's sum (seconds), then the sum and
  # count of the log's syncs, of the forwarded requests' round trips and of the leader's
  # proposals (their histograms).
  cairn_sums() {
    local i
    for i in 1 2 3; do
      curl -s "http://127.0.0.1:$(http "$i")/metrics" | awk '
        /^cairn_grpc_request_duration_seconds_sum\{method="Put"\}/ {p = $2}
        /^cairn_wal_sync_duration_seconds_sum / {ws = $2}
        /^cairn_wal_sync_duration_seconds_count / {wc = $2}
        /^cairn_forward_round_trip_seconds_sum / {fs = $2}
        /^cairn_forward_round_trip_seconds_count / {fc = $2}
        /^cairn_raft_proposal_duration_seconds_sum / {ps = $2}
        /^cairn_raft_proposal_duration_seconds_count / {pc = $2}
        END {print p + 0, ws + 0, wc + 0, fs + 0, fc + 0, ps + 0, pc + 0}'
    done | awk '{for (i = 1; i <= NF; i++) s[i] += $i} END {for (i = 1; i <= 7; i++) printf "%s ", s[i] + 0; print ""}'
  }
  # etcd: Puts started and not yet handled, over the three members, now.
  etcd_in_flight() {
    local e
    for e in ${ee//,/ }; do
      curl -s "http://$e/metrics" | awk '
        /^grpc_server_started_total\{.*grpc_method="Put"/ {s += $2}
        /^grpc_server_handled_total\{.*grpc_method="Put"/ {h += $2}
        END {print s - h}'
    done | awk '{n += $1} END {print n + 0}'
  }
  run() { # NAME ENDPOINTS SERVER-PIDS...
    local name=$1 e=$2
    shift 2
    # Started directly, so that $! is the client itself (its CPU is measured). Global, for the
    # trap that stops it should this script stop early.
    ETCDCTL_API=3 "$etcdctl_bin" --endpoints "$e" check perf --load="$load" >"$work/cp-$name.out" 2>&1 &
    client=$!
    trap 'kill "$client" 2>/dev/null || true; cleanup' EXIT
    sleep "$window_start_s"
    if ! kill -0 "$client" 2>/dev/null; then
      echo "$name: check perf ended early:" >&2
      tr '\r' '\n' <"$work/cp-$name.out" | tail -5 >&2
      return 1
    fi
    local r0 s0 c0 l0 t0 samples=""
    r0=$(revision_at "$e"); s0=$(ticks "$@"); c0=$(ticks "$client"); t0=$(date +%s.%N)
    if [ "$name" = cairn ]; then
      read -r -a l0 <<<"$(cairn_sums)"
      sleep "$window_s"
    else
      local k
      for k in $(seq 1 "$etcd_samples"); do
        samples+=" $(etcd_in_flight)"
        # On a schedule from the window's start, whatever the scrapes take.
        sleep "$(echo "$t0 + $k * $window_s / $etcd_samples - $(date +%s.%N)" | bc -l | sed 's/^-.*/0/')"
      done
    fi
    local n s c secs in_flight
    n=$(($(revision_at "$e") - r0)); s=$(($(ticks "$@") - s0)); c=$(($(ticks "$client") - c0))
    secs=$(echo "$(date +%s.%N) - $t0" | bc -l)
    if [ "$name" = cairn ]; then
      local l1 d
      read -r -a l1 <<<"$(cairn_sums)"
      for d in 0 1 2 3 4 5 6; do l1[$d]=$(echo "${l1[$d]} - ${l0[$d]}" | bc -l); done
      in_flight=$(echo "${l1[0]} / $secs" | bc -l)
    else
      in_flight=$(tr ' ' '\n' <<<"$samples" | awk 'NF {s += $1; n++} END {print s / n}')
    fi
    wait "$client" || true # check perf exits 1 when it reports a FAIL
    local verdict
    verdict=$(tr '\r' '\n' <"$work/cp-$name.out" | grep -oE '(PASS|FAIL)[^|]*writes/s' | tail -1) ||
      verdict="(no verdict)"
    if [ "$n" -le 0 ]; then
      printf '%-6s %s | window: no puts\n' "$name" "$verdict"
      return 0
    fi
    # CPU in clock ticks: 1,000,000 / ticks_per_s microseconds each.
    printf '%-6s %s | window: %.0f puts/s, servers %.1f us and client %.1f us of CPU per put, %.1f puts in flight at the servers\n' \
      "$name" "$verdict" "$(echo "$n / $secs" | bc -l)" \
      "$(echo "$s * 1000000 / $ticks_per_s / $n" | bc -l)" "$(echo "$c * 1000000 / $ticks_per_s / $n" | bc -l)" "$in_flight"
    if [ "$name" = cairn ]; then
      # Where a put's time goes, from the nodes' own histograms (means over the window).
      mean_us() { [ "$(echo "$2 > 0" | bc)" = 1 ] && echo "$1 * 1000000 / $2" | bc -l || echo 0; }
      printf '%-6s log syncs: %.2f per put (three nodes), %.0f us each | forwarded round trip %.0f us | proposal to result on the leader %.0f us\n' \
        "" "$(echo "${l1[2]} / $n" | bc -l)" "$(mean_us "${l1[1]}" "${l1[2]}")" \
        "$(mean_us "${l1[3]}" "${l1[4]}")" "$(mean_us "${l1[5]}" "${l1[6]}")"
    fi
  }
  for t in $first; do
    if [ "$t" = cairn ]; then
      run cairn "$eps" "${pids[1]}" "${pids[2]}" "${pids[3]}"
    else
      run etcd "$ee" "${epids[@]}"
    fi
  done
  exit 0
fi

runs=${1:-3}
source "$here/lib/cluster.sh" # for `machine` and the build; its own cluster is never started
built=$(cd "$root" && git rev-parse --short HEAD)
[ -n "${CAIRN_BIN:-}" ] && built="$CAIRN_BIN (tree at $built)"
echo "machine: $(machine); etcd: $("${ETCD_BIN:-$(command -v etcd)}" --version | head -1); cairn: $built"
echo "\$ etcdctl check perf --load=$load, against each (window: ${window_start_s}-$((window_start_s + window_s)) s)"
for r in $(seq 1 "$runs"); do
  order="cairn etcd"
  [ $((r % 2)) = 0 ] && order="etcd cairn"
  echo "-- run $r"
  "$0" --one "$order"
done
