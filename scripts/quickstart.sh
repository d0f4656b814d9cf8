#!/usr/bin/env bash
# quickstart.sh -- from a fresh Debian 12 machine to a serving local cluster.
#
#   scripts/quickstart.sh [cluster.sh start options, e.g. --port-base 23000]
#
# Installs what is missing (scripts/deps.sh), builds a release build in
# build/, starts one ZooKeeper, one cram-coordinator and three cram-servers on
# 127.0.0.1 (scripts/cluster.sh start; default ports 21800, 21801, 21810-21812;
# state in ./run/cluster), creates a table spread over the three servers,
# writes and reads a few objects, prints where each tablet lives, and leaves
# the cluster running.  A cluster that an earlier quickstart left running in
# the same dir is stopped first.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

dir=./run/cluster
cluster=main
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --dir) dir="${args[$((i + 1))]:-$dir}" ;;
    --dir=*) dir="${args[$i]#--dir=}" ;;
    --cluster) cluster="${args[$((i + 1))]:-$cluster}" ;;
    --cluster=*) cluster="${args[$i]#--cluster=}" ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  esac
done

echo "== installing missing packages (scripts/deps.sh)"
bash "$here/deps.sh"

echo "== building release in build/"
cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
rc=0
cmake --build "$repo/build" -j "$(nproc 2>/dev/null || echo 2)" 2>&1 |
  { grep -vE '^\[ *[0-9]+%\]|^g?make(\[[0-9]+\])?: (Entering|Leaving)' || true; } || rc=$?
[ "$rc" = 0 ] || { echo "quickstart: the build failed" >&2; exit 1; }

if bash "$here/cluster.sh" status --dir "$dir" >/dev/null 2>&1 ||
   ls "$dir"/*.pid >/dev/null 2>&1; then
  echo "== stopping the cluster an earlier run left in $dir"
  bash "$here/cluster.sh" stop --dir "$dir"
fi

echo "== starting a local cluster (scripts/cluster.sh start ${args[*]:-})"
out="$(bash "$here/cluster.sh" start --bin "$repo/build" "${args[@]}")"
echo "$out"
locator="$(sed -n 's/^locator: //p' <<<"$out")"
cram() { "$repo/build/cram" -C "$locator" --cluster "$cluster" "$@"; }

echo
echo "== servers"
cram servers
echo
echo "== create table 'demo' over 3 tablets"
cram create-table demo --span 3 >/dev/null
for i in 1 2 3 4 5 6; do
  cram put demo "user:$i" "hello from object $i"
done
echo "wrote user:1 .. user:6"
echo
echo "== read them back"
for i in 1 2 3 4 5 6; do
  printf 'user:%s = %s\n' "$i" "$(cram get demo "user:$i")"
done
echo
echo "== where each tablet of 'demo' lives"
cram tablets demo
echo
echo "== objects per server"
cram stats | grep -E '^server|objects'
echo
stopcmd="scripts/cluster.sh stop"
[ "$dir" = ./run/cluster ] || stopcmd="scripts/cluster.sh stop --dir $dir"
copt=""
[ "$cluster" = main ] || copt=" --cluster $cluster"
echo "The cluster keeps running (logs in $dir).  Try: build/cram -C $locator$copt get demo user:1"
echo "Stop it with: $stopcmd"
