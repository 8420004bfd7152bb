# Shared by the bench scripts (source it; it defines functions and variables, runs nothing but
# the build): a 3-node Cairn cluster of release binaries on free local ports, in a temporary
# directory removed on exit with every process started through it.
#   start_node I [EXTRA SERVE ARGS...]   starts node I (1..3); its pid goes to pids[I]
#   start_cluster [EXTRA SERVE ARGS...]  starts nodes 1..3 and waits for each /health
#   client I / peer I / http I           node I's ports;  eps: the three client endpoints
#   leader_id                            the leader's node id, from `cairn ctl leader show`
#   rss_mib PID / peak_mib PID           resident and peak resident memory, MiB
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# CAIRN_BIN runs another build (e.g. one kept from before a change); CARGO_TARGET_DIR is honoured.
cairn="${CAIRN_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/cairn}"
[ -x "$cairn" ] || [ -n "${CAIRN_BIN:-}" ] || (cd "$root" && cargo build --release -p cairn)
[ -x "$cairn" ] || { echo "no cairn binary at $cairn" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
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
machine() { echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"; }
