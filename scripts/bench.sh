#!/usr/bin/env bash
# bench.sh -- the measurements behind docs/benchmarks.md, in one run on one
# machine: cram next to redis-server and memcached (-t 1) driven by the same
# load generator (cram-bench, --peer for the peers), and the kernel's TCP
# ping-pong floor (cram-pingpong).
#
#   bench.sh [--bin DIR] [--duration S] [--records N] [--port-base P] [--out FILE]
#            [--sections LIST]
#
#   --bin DIR       release build directory [<repo>/build]
#   --duration S    seconds per measurement [5]
#   --records N     records loaded [100000]
#   --port-base P   ports P..P+30 on 127.0.0.1 [23500]
#   --out FILE      also write the markdown table here
#   --sections LIST comma-separated: base, durability [base,durability]
#
# Workload: 30-byte keys, 100-byte values, uniform keys; latency at 1 client
# (pure reads, pure writes), throughput at 16 clients.  cram runs one server
# (R=0: nothing to replicate) twice: --poll-us 0 (blocks at once) and the
# servers' default, --poll-us 50 (given explicitly: cluster.sh would pick 0
# on a small machine).  Clients always block in epoll/read (no spinning).
# Needs redis-server and memcached (scripts/deps.sh --bench).
#
# Durability section: write latency (p50/p99 at 1 client) and write
# throughput (16 clients) of a 4-server cluster for R = 0, 1, 2, 3 with
# durability buffered and R = 2 with sync, 100-byte values.  Throughput is
# measured twice: a table on one master (all 16 clients' writes go through
# one master's group commit) and a table with one tablet per master (4
# masters, 4 clients each, all sharing the machine's cores); latency uses
# the latter.  Each is next to
# Redis SET followed by WAIT 1 0 (one replica redis-server on
# this machine) and the same run's TCP ping-pong floor.  Polling policy:
# servers run --poll-us 0 (every dispatch thread blocks in epoll at once),
# plus one row of R=2 buffered with the program default --poll-us (spin 50 us
# after activity): with replication a write wakes 3-4 processes, and on a
# small machine a spinning master takes the core its backups need.  Clients,
# backups' disk workers, Redis and cram-pingpong always block.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin="$repo/build"; dur=5; records=100000; pb=23500; out=""; sections="base,durability"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2;;
    --duration) dur="$2"; shift 2;;
    --records) records="$2"; shift 2;;
    --port-base) pb="$2"; shift 2;;
    --out) out="$2"; shift 2;;
    --sections) sections="$2"; shift 2;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2;;
  esac
done
for p in cram-bench cram-pingpong cram-server cram-coordinator; do
  [ -x "$bin/$p" ] || { echo "bench.sh: $bin/$p missing (build a release build first)" >&2; exit 1; }
done
command -v redis-server >/dev/null && command -v memcached >/dev/null ||
  { echo "bench.sh: needs redis-server and memcached: scripts/deps.sh --bench" >&2; exit 1; }

work=$(mktemp -d /tmp/cram-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$repo/scripts/cluster.sh" stop --dir "$work/cluster" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

has_section() { [[ ",$sections," == *",$1,"* ]]; }
rows=()
# run NAME TARGET-ARGS...: read latency @1, write latency @1, read throughput @16
measure() {
  local name="$1"; shift
  local r1 w1 r16
  "$bin/cram-bench" "$@" --workload write --records "$records" --clients 1 --duration "$dur" \
      --distribution uniform > "$work/w1.txt" 2>&1
  "$bin/cram-bench" "$@" --workload read --records "$records" --clients 1 --duration "$dur" \
      --distribution uniform --no-load > "$work/r1.txt" 2>&1
  "$bin/cram-bench" "$@" --workload read --records "$records" --clients 16 --duration "$dur" \
      --distribution uniform --no-load > "$work/r16.txt" 2>&1
  # op count ops/s mean p50 p99 p99.9 max errors
  r1=$(awk '$1=="READ"{print $5" / "$6}' "$work/r1.txt")
  w1=$(awk '$1=="UPDATE"||$1=="WRITE"{print $5" / "$6}' "$work/w1.txt")
  r16=$(awk '$1=="READ"{print $3}' "$work/r16.txt")
  rows+=("| $name | $r1 | $w1 | $r16 |")
  echo "$name: read p50/p99 us $r1; write p50/p99 us $w1; read ops/s @16 $r16" >&2
}

# the floor (also the reference of the durability section)
floor1=$("$bin/cram-pingpong" --clients 1 --duration "$dur")
floor16=$("$bin/cram-pingpong" --clients 16 --duration "$dur")
fl_p50=$(sed -E 's/.*p50_us=([0-9.]+).*/\1/' <<<"$floor1")
fl_p99=$(sed -E 's/.*p99_us=([0-9.]+).*/\1/' <<<"$floor1")
fl_ops=$(sed -E 's/.*ops_s=([0-9]+).*/\1/' <<<"$floor16")
rows+=("| TCP ping-pong floor (cram-pingpong) | $fl_p50 / $fl_p99 | - | $fl_ops |")

if has_section base; then
redis-server --port $((pb+2)) --bind 127.0.0.1 --dir "$work" --save '' --appendonly no --daemonize no \
  > "$work/redis.log" 2>&1 & pids+=($!)
memcached -u root -l 127.0.0.1 -p $((pb+3)) -t 1 -m 1024 > "$work/memcached.log" 2>&1 & pids+=($!)
sleep 0.5
measure "redis-server 7 (1 thread)" --peer "redis:127.0.0.1:$((pb+2))"
measure "memcached 1.6 (-t 1)" --peer "memcached:127.0.0.1:$((pb+3))"

for poll in 0 50; do
  popt=(--poll-us "$poll")
  "$repo/scripts/cluster.sh" start --servers 1 --port-base "$pb" --dir "$work/cluster" \
      --memory 1G --cluster bench --bin "$bin" "${popt[@]}" > "$work/cluster.txt"
  measure "cram, 1 server, --poll-us $poll" -C "zk:127.0.0.1:$pb" --cluster bench
  "$repo/scripts/cluster.sh" stop --dir "$work/cluster" > /dev/null
done
fi

table=$(printf '%s\n' "| system | read p50 / p99 (us), 1 client | write p50 / p99 (us), 1 client | read ops/s, 16 clients |" \
  "|---|---|---|---|" "${rows[@]}")
has_section base || table=""

# ---- durability: replicated writes ------------------------------------------
drows=(); r0=0; r2=0; r0one=0; r2one=0; last_ops=0; last_one=0
# dmeasure NAME ONE-MASTER-ARGS -- TARGET-ARGS...: write latency @1, write
# throughput @16 (on the table of TARGET-ARGS, and on a one-tablet table
# when ONE-MASTER-ARGS is not "-")
dmeasure() {
  local name="$1" one="$2"; shift 3
  "$bin/cram-bench" "$@" --workload write --records "$records" --clients 1 --duration "$dur" \
      --distribution uniform > "$work/dw1.txt" 2>&1
  "$bin/cram-bench" "$@" --workload write --records "$records" --clients 16 --duration "$dur" \
      --distribution uniform --no-load > "$work/dw16.txt" 2>&1
  local w1 w16 e1 e16 w16one="-" e16one=""
  if [ "$one" != "-" ]; then
    "$bin/cram-bench" "$@" --table bench1 --span 1 --workload write --records "$records" \
        --clients 16 --duration "$dur" --distribution uniform > "$work/dw16one.txt" 2>&1
    w16one=$(awk '$1=="UPDATE"||$1=="WRITE"{print $3}' "$work/dw16one.txt")
    e16one=$(awk '$1=="UPDATE"||$1=="WRITE"{print $9}' "$work/dw16one.txt")
    [ -n "$w16one" ] || { echo "bench.sh: $name: no result:" >&2; cat "$work/dw16one.txt" >&2; exit 1; }
  fi
  w1=$(awk '$1=="UPDATE"||$1=="WRITE"{print $5" / "$6}' "$work/dw1.txt")
  w16=$(awk '$1=="UPDATE"||$1=="WRITE"{print $3}' "$work/dw16.txt")
  e1=$(awk '$1=="UPDATE"||$1=="WRITE"{print $9}' "$work/dw1.txt")
  e16=$(awk '$1=="UPDATE"||$1=="WRITE"{print $9}' "$work/dw16.txt")
  [ -n "$w1" ] && [ -n "$w16" ] || { echo "bench.sh: $name: no result:" >&2; cat "$work/dw1.txt" "$work/dw16.txt" >&2; exit 1; }
  local p50=${w1%% /*}
  local vsfloor; vsfloor=$(awk -v a="$p50" -v b="$fl_p50" 'BEGIN{printf "%.2fx", a/b}')
  # a peer is one primary: its one figure goes in the 1-master column
  [ "$one" != "-" ] || { w16one=$w16; e16one=$e16; w16="-"; e16="-"; }
  drows+=("| $name | $w1 | $vsfloor | $w16one | $w16 | ${e1:-0} / ${e16one:-0} / ${e16:-0} |")
  echo "$name: write p50/p99 us $w1 ($vsfloor floor); write ops/s @16 $w16one (1 master), $w16 (4 masters)" >&2
  last_ops=$w16; last_one=$w16one
}
if has_section durability; then
  redis-server --port $((pb+4)) --bind 127.0.0.1 --dir "$work" --save '' --appendonly no --daemonize no \
    > "$work/redis-p.log" 2>&1 & pids+=($!)
  redis-server --port $((pb+5)) --bind 127.0.0.1 --dir "$work" --save '' --appendonly no --daemonize no \
    --replicaof 127.0.0.1 $((pb+4)) > "$work/redis-r.log" 2>&1 & pids+=($!)
  # until the replica is attached (WAIT 1 would block forever otherwise)
  for _ in $(seq 100); do
    grep -q 'sync: Finished with success' "$work/redis-r.log" 2>/dev/null && break
    sleep 0.1
  done
  dmeasure "redis-server 7, SET + WAIT 1 0 (1 replica)" - -- --peer "redis:127.0.0.1:$((pb+4))" --peer-wait 1
  for cfg in "0 buffered 0" "1 buffered 0" "2 buffered 0" "3 buffered 0" "2 sync 0" "2 buffered 50"; do
    set -- $cfg
    popt=(--poll-us "$3")
    "$repo/scripts/cluster.sh" start --servers 4 --port-base "$pb" --dir "$work/cluster" \
        --memory 1G --cluster bench --bin "$bin" --replicas "$1" --durability "$2" "${popt[@]}" \
        > "$work/cluster.txt"
    dmeasure "cram R=$1 $2, --poll-us $3" one -- -C "zk:127.0.0.1:$pb" --cluster bench
    [ "$2 $3" = "buffered 0" ] && [ "$1" = 0 ] && { r0=$last_ops; r0one=$last_one; }
    [ "$2 $3" = "buffered 0" ] && [ "$1" = 2 ] && { r2=$last_ops; r2one=$last_one; }
    "$repo/scripts/cluster.sh" stop --dir "$work/cluster" > /dev/null
  done
  dtable=$(printf '%s\n' "| system (4 servers for cram) | write p50 / p99 (us), 1 client | p50 / TCP floor p50 | write ops/s, 16 clients, 1 master | write ops/s, 16 clients, 4 masters | errors @1 / @16 / @16 |" \
    "|---|---|---|---|---|---|" "| TCP ping-pong floor (cram-pingpong) | $fl_p50 / $fl_p99 | 1.00x | $fl_ops (round trips) | - | - |" "${drows[@]}")
  dtable+=$'\n\n'"write ops/s at 16 clients, R=2 buffered vs R=0 (--poll-us 0): $(awk -v a="$r2one" -v b="$r0one" 'BEGIN{printf "%.0f%%", b ? 100*a/b : 0}') on 1 master, $(awk -v a="$r2" -v b="$r0" 'BEGIN{printf "%.0f%%", b ? 100*a/b : 0}') on 4 masters"
  table=$(printf '%s\n\n%s\n' "$table" "$dtable")
fi

echo "$table"
[ -z "$out" ] || echo "$table" > "$out"
