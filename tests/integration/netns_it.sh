#!/usr/bin/env bash
# netns_it.sh -- CTest fixture of the integration suite over xdp: (root only).
#
#   netns_it.sh up   PREFIX SUBNET ZKPORT ZKDIR
#   netns_it.sh down PREFIX SUBNET ZKPORT ZKDIR
#
# up makes namespaces PREFIX-1..7 on one bridge (scripts/netns.sh: servers
# 0..5 of a test run in PREFIX-1..6, the test process in PREFIX-7; SUBNET.i
# in PREFIX-i, SUBNET.254 on the bridge) and starts a ZooKeeper in the root
# namespace listening on SUBNET.254:ZKPORT only -- the bridge address, which
# every namespace reaches (scripts/zk.sh --bind).  down stops that ZooKeeper
# (zk.sh stop: only the JVM of ZKDIR/zoo.cfg) and removes the namespaces and the
# bridge; it is safe to repeat.  $NETNS_UP_OPTS adds netns.sh options to up
# (scripts/netns_bench.sh --switch-ns).  Not root: up and down do nothing (the tests
# then skip, saying why).
set -euo pipefail
[ $# -eq 5 ] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
cmd=$1 prefix=$2 subnet=$3 port=$4 dir=$5
N=7
here=$(cd "$(dirname "$0")" && pwd)
netns=$here/../../scripts/netns.sh

if [ "$(id -u)" != 0 ]; then
    echo "netns_it: SKIP: not root, no namespaces (the over-xdp tests skip too)"
    exit 0
fi

zk=$here/../../scripts/zk.sh

down() {
    bash "$zk" stop --dir "$dir" >/dev/null
    bash "$netns" down "$N" --prefix "$prefix" >/dev/null
}

case $cmd in
down)
    down
    echo "netns_it: $prefix-1..$N, its bridge and ZooKeeper removed"
    ;;
up)
    down                                # leftovers of an interrupted run
    trap 'down; echo "netns_it: up failed, cleaned up" >&2' ERR
    # shellcheck disable=SC2086  # NETNS_UP_OPTS: extra netns.sh options (benchmarks)
    bash "$netns" up "$N" --prefix "$prefix" --subnet "$subnet" ${NETNS_UP_OPTS:-} >/dev/null
    bash "$zk" start --clean --bind "$subnet.254" --port "$port" --dir "$dir" >/dev/null
    trap - ERR
    echo "netns_it: $prefix-1..$N on $subnet.0/24, ZooKeeper on $subnet.254:$port"
    ;;
*) echo "netns_it: unknown command '$cmd'" >&2; exit 2 ;;
esac
