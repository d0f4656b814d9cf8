#!/usr/bin/env bash
# netns.sh -- N network namespaces joined by veth pairs to a bridge, so a
# cram cluster can run as N "hosts" on one machine (xdp: transport tests).
#
#   scripts/netns.sh up N   [--prefix P] [--subnet 10.A.B] [--netem "loss 1%"] [--mtu M]
#   scripts/netns.sh down N [--prefix P]
#   scripts/netns.sh env N  [--prefix P]        # print the layout again
#
# up creates namespaces P-1..P-N (P defaults to "cramx"; names must start with
# "cramx"), each holding one veth end "xeth0" with address 10.A.B.i/24 and a
# fixed MAC 02:cc:<id>:<i>, its lo up, and permanent neighbour entries for
# every other namespace.  The root-namespace ends join a new bridge that
# holds 10.A.B.254/24.  Addresses exist only inside the namespaces and on
# that bridge; nothing is routed anywhere else.  --subnet defaults to a free
# 10.199.x.0/24 (x derived from P).  --netem adds a netem qdisc on each
# bridge port (the namespaces' receive direction); `tc -s qdisc show dev
# <port>` then proves drops (needs sch_netem in the kernel).
#
# It prints shell assignments (NS1=..., IP1=..., MAC1=..., IF=xeth0,
# BRIDGE=..., SUBNET=...), also saved in /run/cramx/P.env for `down`.
# down removes everything up made and is safe to run twice.  Needs root.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1; n=$2; shift 2
prefix=cramx; subnet=""; netem=""; mtu=""
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --subnet) subnet=$2; shift 2 ;;
        --netem) netem=$2; shift 2 ;;
        --mtu) mtu=$2; shift 2 ;;
        *) usage ;;
    esac
done
case $prefix in cramx*) ;; *) echo "netns.sh: prefix must start with cramx" >&2; exit 2 ;; esac
[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || { echo "netns.sh: N must be 1..200" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "netns.sh: needs root" >&2; exit 1; }

statedir=/run/cramx
state=$statedir/$prefix.env
# short id for interface names (15-char limit): 6 hex digits of the prefix
id=$(printf '%s' "$prefix" | cksum | awk '{printf "%06x", $1 % 16777216}')
bridge=cxb$id

down() {
    local i
    for i in $(seq 1 "$n"); do
        ip netns del "$prefix-$i" 2>/dev/null || true     # takes the veth pair with it
        ip link del "cx${id}p$i" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    rm -f "$state"
}

print_env() {
    local i
    echo "PREFIX=$prefix"
    echo "BRIDGE=$bridge"
    echo "SUBNET=$subnet"
    echo "IF=xeth0"
    echo "N=$n"
    for i in $(seq 1 "$n"); do
        echo "NS$i=$prefix-$i"
        echo "IP$i=$subnet.$i"
        echo "MAC$i=$(mac "$i")"
        echo "PORT$i=cx${id}p$i"
    done
}

mac() { printf '02:cc:%s:%s:%s:%02x' "${id:0:2}" "${id:2:2}" "${id:4:2}" "$1"; }

subnet_in_use() { grep -q "inet $1\." <<<"$(ip -4 addr show)"; }

case $cmd in
down)
    down
    ;;
env)
    [ -f "$state" ] || { echo "netns.sh: no state $state" >&2; exit 1; }
    cat "$state"
    ;;
up)
    if [ -z "$subnet" ]; then
        x=$(( 0x${id:0:4} % 250 ))
        for _ in $(seq 1 250); do
            subnet_in_use "10.199.$x" || break
            x=$(( (x + 1) % 250 ))
        done
        subnet=10.199.$x
    fi
    [[ $subnet =~ ^10\.[0-9]+\.[0-9]+$ ]] || { echo "netns.sh: subnet must be 10.A.B" >&2; exit 2; }
    if subnet_in_use "$subnet"; then echo "netns.sh: $subnet.0/24 already in use" >&2; exit 1; fi
    down                                # leftovers of an earlier run with this prefix
    trap 'down; echo "netns.sh: up failed, cleaned up" >&2' ERR
    mkdir -p "$statedir"
    ip link add "$bridge" type bridge
    ip link set "$bridge" up
    ip addr add "$subnet.254/24" dev "$bridge"
    for i in $(seq 1 "$n"); do
        ns=$prefix-$i; port=cx${id}p$i
        ip netns add "$ns"
        ip link add "$port" type veth peer name xeth0 netns "$ns"
        ip link set "$port" master "$bridge"
        [ -n "$mtu" ] && ip link set "$port" mtu "$mtu"
        ip link set "$port" up
        ip -n "$ns" link set xeth0 address "$(mac "$i")"
        [ -n "$mtu" ] && ip -n "$ns" link set xeth0 mtu "$mtu"
        ip -n "$ns" addr add "$subnet.$i/24" dev xeth0
        ip -n "$ns" link set xeth0 up
        ip -n "$ns" link set lo up
        [ -n "$netem" ] && tc qdisc add dev "$port" root netem $netem
    done
    for i in $(seq 1 "$n"); do
        for j in $(seq 1 "$n"); do
            [ "$i" = "$j" ] && continue
            ip -n "$prefix-$i" neigh replace "$subnet.$j" lladdr "$(mac "$j")" dev xeth0 nud permanent
        done
    done
    trap - ERR
    print_env > "$state"
    cat "$state"
    ;;
*) usage ;;
esac
