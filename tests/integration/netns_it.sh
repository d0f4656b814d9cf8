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
# every namespace reaches.  down stops that ZooKeeper (only the JVM named by
# ZKDIR/zk.pid whose command line is ours) and removes the namespaces and the
# bridge; it is safe to repeat.  Not root: up and down do nothing (the tests
# then skip, saying why).
set -euo pipefail
[ $# -eq 5 ] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
cmd=$1 prefix=$2 subnet=$3 port=$4 dir=$5
N=7
here=$(cd "$(dirname "$0")" && pwd)
netns=$here/../../scripts/netns.sh
CP=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar

if [ "$(id -u)" != 0 ]; then
    echo "netns_it: SKIP: not root, no namespaces (the over-xdp tests skip too)"
    exit 0
fi

zk_ok() {
    local ans
    ans="$(timeout 1 bash -c "exec 3<>/dev/tcp/$subnet.254/$port && printf ruok >&3 && cat <&3" 2>/dev/null || true)"
    [ "$ans" = imok ]
}

zk_stop() {
    local pid i
    [ -f "$dir/zk.pid" ] || return 0
    pid=$(cat "$dir/zk.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "ZooKeeperServerMain $dir/zoo.cfg"; then
        kill "$pid" 2>/dev/null || true
        for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/zk.pid"
}

down() {
    zk_stop
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
    bash "$netns" up "$N" --prefix "$prefix" --subnet "$subnet" >/dev/null
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    dir=$(realpath "$dir")
    cat >"$dir/zoo.cfg" <<CFG
# written by tests/integration/netns_it.sh
tickTime=1000
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=$subnet.254
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
CFG
    ( exec setsid java -Xmx256m -cp "$CP" -Dzookeeper.root.logger=WARN,CONSOLE \
        org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
        </dev/null >"$dir/zk.log" 2>&1 ) &
    echo $! >"$dir/zk.pid"
    for _ in $(seq 300); do
        if zk_ok; then
            trap - ERR
            echo "netns_it: $prefix-1..$N on $subnet.0/24, ZooKeeper on $subnet.254:$port"
            exit 0
        fi
        kill -0 "$(cat "$dir/zk.pid")" 2>/dev/null || break
        sleep 0.05
    done
    echo "netns_it: ZooKeeper did not answer on $subnet.254:$port; tail of $dir/zk.log:" >&2
    tail -n 20 "$dir/zk.log" >&2 || true
    down
    exit 1
    ;;
*) echo "netns_it: unknown command '$cmd'" >&2; exit 2 ;;
esac
