# Shared by the bench scripts (source it; it defines functions and variables, runs nothing but
# the build): a 3-node Cairn cluster of `dist` binaries (the deployable build, Cargo.toml's
# `[profile.dist]`; built on first use) on free local ports, in a temporary
# directory removed on exit with every process started through it.
#   start_node I [EXTRA SERVE ARGS...]   starts node I (1..3); its pid goes to pids[I]
#   start_cluster [EXTRA SERVE ARGS...]  starts nodes 1..3 and waits for each /health
#   client I / peer I / http I           node I's ports;  eps: the three client endpoints
#   leader_id                            the leader's node id, from `cairn ctl leader show`
#   rss_mib PID / peak_mib PID           resident and peak resident memory, MiB
#   start_etcd BIN                       a 3-node etcd cluster of BIN beside it, on free ports,
#                                        healthy when it returns: endpoints in $ee, pids in epids
# KEEP_LOGS=DIR keeps the nodes' logs in DIR.
# CAIRN_BIN runs another build (e.g. one kept from before a change).
source "$(dirname "${BASH_SOURCE[0]}")/binary.sh"
work=$(mktemp -d)
pids=()
# KEEP_LOGS=DIR keeps the nodes' logs there (copied at exit, before the directory is removed).
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$work"/*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Nine free ports (client, peer, http per node), chosen by the kernel.
read -r -a ports <<<"$(python3 -c 'import socket
socks = [socket.socket() for _ in range(9)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
client() { echo "${ports[$((3 * ($1 - 1)))]}"; }
peer() { echo "${ports[$((3 * ($1 - 1) + 1))]}"; }
http() { echo "${ports[$((3 * ($1 - 1) + 2))]}"; }
ic="1=127.0.0.1:$(peer 1),2=127.0.0.1:$(peer 2),3=127.0.0.1:$(peer 3)"
eps="127.0.0.1:$(client 1),127.0.0.1:$(client 2),127.0.0.1:$(client 3)"
start_node() {
  local i=$1
  shift
  "$cairn" serve --node-id "$i" --data-dir "$work/$i" --initial-cluster "$ic" \
    --listen-client "127.0.0.1:$(client "$i")" --listen-peer "127.0.0.1:$(peer "$i")" \
    --listen-http "127.0.0.1:$(http "$i")" "$@" 2>>"$work/node-$i.log" &
  pids[$i]=$!
}
healthy() { until curl -sf "http://127.0.0.1:$(http "$1")/health" >/dev/null; do sleep 0.1; done; }
start_cluster() {
  for i in 1 2 3; do start_node "$i" "$@"; done
  for i in 1 2 3; do healthy "$i"; done
}
leader_id() { "$cairn" ctl --endpoints "$eps" -o json leader show | jq -r .leader_id; }
rss_mib() { echo $(( $(awk '/VmRSS/ {print $2}' "/proc/$1/status") / 1024 )); }
peak_mib() { echo $(( $(awk '/VmHWM/ {print $2}' "/proc/$1/status") / 1024 )); }
# The store revision at the first of ENDPOINTS (comma-separated), through etcdctl
# ($etcdctl_bin when the script set it): Cairn and etcd answer alike.
revision_at() {
  ETCDCTL_API=3 "${etcdctl_bin:-etcdctl}" --endpoints "${1%%,*}" endpoint status -w json |
    jq '.[0].Status.header.revision'
}
machine() { echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"; }

# A 3-node etcd cluster (the reference in side-by-side benchmarks), removed on exit with the rest.
epids=()
start_etcd() {
  local bin=$1 i c p eports eic
  read -r -a eports <<<"$(python3 -c 'import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
  eic="e1=http://127.0.0.1:${eports[1]},e2=http://127.0.0.1:${eports[3]},e3=http://127.0.0.1:${eports[5]}"
  ee="127.0.0.1:${eports[0]},127.0.0.1:${eports[2]},127.0.0.1:${eports[4]}"
  for i in 1 2 3; do
    c=${eports[$((2 * (i - 1)))]}; p=${eports[$((2 * (i - 1) + 1))]}
    "$bin" --name e$i --data-dir "$work/etcd/$i" \
      --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c \
      --listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \
      --initial-cluster "$eic" --initial-cluster-state new --initial-cluster-token bench \
      2>"$work/etcd-$i.log" &
    pids+=($!); epids+=($!)
  done
  for i in 1 2 3; do
    until curl -sf "http://127.0.0.1:${eports[$((2 * (i - 1)))]}/health" >/dev/null; do sleep 0.2; done
  done
}
