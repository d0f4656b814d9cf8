#!/usr/bin/env bash
# netns_bench.sh -- read latency and throughput of cram over tcp: on
# loopback, tcp: between network namespaces and xdp: between the same
# namespaces, in one run (the numbers in docs/transports.md).  Needs root
# and an xdp-enabled release build.
#
#   scripts/netns_bench.sh [--bin DIR] [--duration S] [--records N] [--polls "0 1000000"]
#                          [--prefix P] [--subnet 10.A.B] [--zk-port PORT] [--repeat K]
#                          [--switch-ns] [--latency-only] [--direct]
#
#   --bin DIR      release build directory [<repo>/build]
#   --duration S   seconds per measurement [5]
#   --records N    records loaded [10000]
#   --polls LIST   polling policies to run, each a --poll-us value given to
#                  BOTH the server (cram-server --poll-us) and the client
#                  (cram-bench --poll-us) ["0 1000000": both block at once /
#                  both spin while the run lasts]
#   --prefix P     namespace prefix (cramx* or cramtp*) [cramxbench]
#   --subnet S     their /24 [10.198.90]; --zk-port: ZooKeeper's port [24090]
#   --repeat K     measure every row K times, alternating paths, and print the
#                  median with the single values [1]
#   --switch-ns    the bridge in a namespace of its own with the bridge
#                  netfilter hooks off (scripts/netns.sh --switch-ns)
#   --latency-only skip the 16-client runs (16 spinning threads load the
#                  machine for the next latency run)
#   --direct       the "between namespaces" rows go over one veth pair joining
#                  the server's and the client's namespace back to back (two
#                  hosts on one cable, the layout of PLATFORM.md's bare AF_XDP
#                  ping-pong) instead of veth-bridge-veth; the bridge still
#                  carries ZooKeeper and the coordinator, which then runs in
#                  the server's namespace
#
# Layout (tests/integration/netns_it.sh: namespaces cramxbench-1..7 on one
# bridge, ZooKeeper on the bridge address 10.198.90.254:24090 -- see
# --prefix/--subnet/--zk-port): loopback --
# coordinator, server and cram-bench all in cramxbench-3 on 127.0.0.1;
# namespaces -- the server in cramxbench-1 listening on
# "tcp:host=10.198.90.1,...;xdp:host=10.198.90.1,port=24001", the
# coordinator in cramxbench-3, cram-bench in cramxbench-2 with CRAM_TRANSPORT
# unset (tcp:) or =xdp.  Workload: uniform reads of 30-byte keys and 100-byte
# values from one table on one server (R=0); latency with 1 client, throughput
# with 16 client threads (one handle and loop each).  Everything it starts is
# stopped and the namespaces removed at exit, also on failure or ^C.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin="$repo/build"; dur=5; records=10000; polls="0 1000000"
prefix=cramxbench; sub=10.198.90; zkport=24090; repeat=1; thr=1; direct=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2;;
    --duration) dur="$2"; shift 2;;
    --records) records="$2"; shift 2;;
    --polls) polls="$2"; shift 2;;
    --prefix) prefix="$2"; shift 2;;
    --subnet) sub="$2"; shift 2;;
    --zk-port) zkport="$2"; shift 2;;
    --repeat) repeat="$2"; shift 2;;
    --switch-ns) export NETNS_UP_OPTS=--switch-ns; shift;;
    --latency-only) thr=0; shift;;
    --direct) direct=1; shift;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    *) echo "netns_bench.sh: unknown option $1" >&2; exit 2;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "netns_bench.sh: needs root" >&2; exit 1; }
for p in cram-bench cram-server cram-coordinator cram; do
  [ -x "$bin/$p" ] || { echo "netns_bench.sh: $bin/$p missing" >&2; exit 1; }
done
work=$(mktemp -d /tmp/cram-netns-bench.XXXXXX)
fixture="$repo/tests/integration/netns_it.sh"
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  ip -n $prefix-1 link del cxd1 2>/dev/null || true
  bash "$fixture" down $prefix $sub $zkport "$work/zk" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bash "$fixture" up $prefix $sub $zkport "$work/zk" >/dev/null
zk="zk:$sub.254:$zkport"
ns_host=$sub.1; ns_coord=3; ns_chost=$sub.3; ns_label="between namespaces"
if [ "$direct" = 1 ]; then
  # One veth pair, cxd1 in namespace 1 (server) and cxd2 in namespace 2
  # (client), on the /24 after --subnet's; fixed MACs and permanent
  # neighbours as scripts/netns.sh sets them on the bridge ports.
  IFS=. read -r a b c <<<"$sub"; dsub="$a.$b.$((c + 1))"
  ip link add cxd1 address 02:cd:00:00:00:01 netns $prefix-1 type veth \
     peer name cxd2 address 02:cd:00:00:00:02 netns $prefix-2
  for i in 1 2; do
    ip -n $prefix-$i addr add $dsub.$i/24 dev cxd$i
    ip -n $prefix-$i link set cxd$i up
    ip -n $prefix-$i neigh replace $dsub.$((3 - i)) lladdr 02:cd:00:00:00:0$((3 - i)) dev cxd$i nud permanent
  done
  ns_host=$dsub.1; ns_coord=1; ns_chost=$sub.1; ns_label="between namespaces, direct veth"
fi

# start_cluster NAME POLL COORD_NS COORD_HOST SERVER_NS LISTEN
start_cluster() {
  local name=$1 poll=$2 cns=$3 chost=$4 sns=$5 listen=$6 i
  ip netns exec $prefix-$cns "$bin/cram-coordinator" --zk "$zk" --cluster "$name" --reset \
      --listen "tcp:host=$chost,port=25000" --replicas 0 >"$work/$name-coord.log" 2>&1 & pids+=($!)
  ip netns exec $prefix-$sns "$bin/cram-server" --coordinator "$zk" --cluster "$name" \
      --listen "$listen" --memory 1G --poll-us "$poll" >"$work/$name-server.log" 2>&1 & pids+=($!)
  local out
  for i in $(seq 100); do
    out=$(ip netns exec $prefix-$cns "$bin/cram" -C "$zk" --cluster "$name" --timeout 1000 servers 2>/dev/null || true)
    if grep -q " up " <<<"$out"; then
      return 0
    fi
    sleep 0.1
  done
  echo "netns_bench.sh: cluster $name did not come up; logs:" >&2
  tail -n 20 "$work/$name-"*.log >&2
  exit 1
}

rows=()
declare -A P50 P99 R16
# measure LABEL NS POLL CLUSTER [env...]: read p50/p99 @1, read ops/s @16
measure() {
  local label=$1 ns=$2 poll=$3 name=$4; shift 4
  local b=(ip netns exec $prefix-$ns env "$@" "$bin/cram-bench" -C "$zk" --cluster "$name"
           --workload read --records "$records" --distribution uniform --duration "$dur"
           --poll-us "$poll")
  local load=()
  [ -n "${P50["$label|$poll"]:-}" ] && load=(--no-load)
  "${b[@]}" --clients 1 "${load[@]}" >"$work/r1.txt" 2>&1 || { cat "$work/r1.txt" >&2; exit 1; }
  if [ "$thr" = 1 ]; then
    "${b[@]}" --clients 16 --no-load >"$work/r16.txt" 2>&1 || { cat "$work/r16.txt" >&2; exit 1; }
  else
    echo "READ - -" >"$work/r16.txt"
  fi
  # op count ops/s mean p50 p99 p99.9 max errors
  local p50 p99 r16
  p50=$(awk '$1=="READ"{print $5}' "$work/r1.txt")
  p99=$(awk '$1=="READ"{print $6}' "$work/r1.txt")
  r16=$(awk '$1=="READ"{print $3}' "$work/r16.txt")
  P50["$label|$poll"]+="$p50 "; P99["$label|$poll"]+="$p99 "; R16["$label|$poll"]+="$r16 "
  echo "$label, --poll-us $poll: read p50 $p50 us, p99 $p99 us @1; $r16 reads/s @16 (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
row() {
  local k="$1|$2"
  if [ "$repeat" -gt 1 ]; then
    rows+=("| $1 | $2 | $(median "${P50[$k]}") (${P50[$k]% }) | $(median "${P99[$k]}") | $(median "${R16[$k]}") |")
  else
    rows+=("| $1 | $2 | ${P50[$k]% } | ${P99[$k]% } | ${R16[$k]% } |")
  fi
}

for poll in $polls; do
  start_cluster "lo$poll" "$poll" 3 127.0.0.1 3 "tcp:host=127.0.0.1,port=25001"
  for r in $(seq "$repeat"); do
    measure "tcp: loopback (one namespace)" 3 "$poll" "lo$poll" CRAM_TRANSPORT=tcp
  done
  stop_all
  start_cluster "ns$poll" "$poll" $ns_coord $ns_chost 1 "tcp:host=$ns_host,port=25001;xdp:host=$ns_host,port=24001"
  for r in $(seq "$repeat"); do       # alternating, so drifting load hits both alike
    measure "tcp: $ns_label" 2 "$poll" "ns$poll" CRAM_TRANSPORT=tcp
    measure "xdp: $ns_label" 2 "$poll" "ns$poll" CRAM_TRANSPORT=xdp
    grep -q "xdp: $([ "$direct" = 1 ] && echo cxd2 || echo xeth0)" "$work/r1.txt" ||
      { echo "netns_bench.sh: the xdp run did not open an xdp socket" >&2; exit 1; }
  done
  stop_all
  row "tcp: loopback (one namespace)" "$poll"
  row "tcp: $ns_label" "$poll"
  row "xdp: $ns_label" "$poll"
done
hdr="read p50 (us), 1 client"
[ "$repeat" -gt 1 ] && hdr="read p50 (us), 1 client: median (each run)"
printf '%s\n' "| path | --poll-us (server and client) | $hdr | read p99 (us), 1 client | reads/s, 16 clients |" \
  "|---|---|---|---|---|" "${rows[@]}"
