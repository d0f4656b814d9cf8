#!/usr/bin/env bash
# netns.sh -- N network namespaces joined by veth pairs to a bridge, so a
# cram cluster can run as N "hosts" on one machine (xdp: transport tests).
#
#   scripts/netns.sh up N   [--prefix P] [--subnet 10.A.B] [--netem "loss 1%"] [--mtu M]
#                           [--switch-ns]
#   scripts/netns.sh down N [--prefix P]
#   scripts/netns.sh env N  [--prefix P]        # print the layout again
#
# up creates namespaces P-1..P-N (P defaults to "cramx"; names must start with
# "cramx" or "cramtp"), each holding one veth end "xeth0" with address 10.A.B.i/24 and a
# fixed MAC 02:cc:<id>:<i>, its lo up, and permanent neighbour entries for
# every other namespace.  The root-namespace ends join a new bridge that
# holds 10.A.B.254/24.  Addresses exist only inside the namespaces and on
# that bridge; nothing is routed anywhere else.  --subnet defaults to a free
# 10.199.x.0/24 (x derived from P).  --netem adds a netem qdisc on each
# bridge port (the namespaces' receive direction); `tc -s qdisc show dev
# <port>` then proves drops (needs sch_netem in the kernel).
#
# --switch-ns puts the bridge into a namespace of its own, P-sw, with the
# bridge netfilter hooks off there (net.bridge.bridge-nf-call-* = 0 in that
# namespace only; this machine has br_netfilter loaded and them on in the
# root namespace, so every bridged frame would run the iptables hooks --
# about 1 us a hop, which a real switch does not charge).  The root
# namespace reaches the bridge through one veth pair whose root end holds
# 10.A.B.254, so the addresses stay the same; the ports then live in P-sw
# (`tc -n P-sw ...`).
#
# It prints shell assignments (NS1=..., IP1=..., MAC1=..., IF=xeth0,
# BRIDGE=..., SUBNET=...), also saved in /run/cramx/P.env for `down`.
# down removes everything up made and is safe to run twice.  Needs root.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 2 ] || usage
cmd=$1; n=$2; shift 2
prefix=cramx; subnet=""; netem=""; mtu=""; swns=0
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --subnet) subnet=$2; shift 2 ;;
        --netem) netem=$2; shift 2 ;;
        --mtu) mtu=$2; shift 2 ;;
        --switch-ns) swns=1; shift ;;
        *) usage ;;
    esac
done
case $prefix in cramx*|cramtp*) ;; *) echo "netns.sh: prefix must start with cramx or cramtp" >&2; exit 2 ;; esac
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
    ip netns del "$prefix-sw" 2>/dev/null || true           # bridge, ports, uplink
    ip link del "cx${id}r" 2>/dev/null || true
    rm -f "$state"
}

print_env() {
    local i
    echo "PREFIX=$prefix"
    echo "BRIDGE=$bridge"
    [ "$swns" = 1 ] && echo "SWITCH_NS=$prefix-sw"
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
    sw=()                               # ip/tc arguments naming the bridge's namespace
    if [ "$swns" = 1 ]; then
        ip netns add "$prefix-sw"
        ip netns exec "$prefix-sw" sh -c 'for k in iptables ip6tables arptables; do
            f=/proc/sys/net/bridge/bridge-nf-call-$k; [ ! -e $f ] || echo 0 > $f; done'
        sw=(-n "$prefix-sw")
    fi
    ip "${sw[@]}" link add "$bridge" type bridge
    ip "${sw[@]}" link set "$bridge" up
    if [ "$swns" = 1 ]; then
        ip link add "cx${id}r" type veth peer name uplink netns "$prefix-sw"
        ip -n "$prefix-sw" link set uplink master "$bridge"
        ip -n "$prefix-sw" link set uplink up
        ip link set "cx${id}r" up
        ip addr add "$subnet.254/24" dev "cx${id}r"
    else
        ip addr add "$subnet.254/24" dev "$bridge"
    fi
    for i in $(seq 1 "$n"); do
        ns=$prefix-$i; port=cx${id}p$i
        ip netns add "$ns"
        ip "${sw[@]}" link add "$port" type veth peer name xeth0 netns "$ns"
        ip "${sw[@]}" link set "$port" master "$bridge"
        [ -n "$mtu" ] && ip "${sw[@]}" link set "$port" mtu "$mtu"
        ip "${sw[@]}" link set "$port" up
        ip -n "$ns" link set xeth0 address "$(mac "$i")"
        [ -n "$mtu" ] && ip -n "$ns" link set xeth0 mtu "$mtu"
        ip -n "$ns" addr add "$subnet.$i/24" dev xeth0
        ip -n "$ns" link set xeth0 up
        ip -n "$ns" link set lo up
        [ -n "$netem" ] && tc "${sw[@]}" qdisc add dev "$port" root netem $netem
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
