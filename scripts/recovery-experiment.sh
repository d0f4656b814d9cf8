#!/usr/bin/env bash
# recovery-experiment.sh -- measure crash recovery on a local cluster:
# start a cluster (scripts/cluster.sh), fill one master with S MB of objects,
# optionally keep writers running, kill -9 that master, and measure the time
# to detection and until every object is readable again, the recovery
# bandwidth, and the acknowledged writes that are missing or stale (must be
# 0).  Prints a result table; writes a PNG timeline of client throughput and
# the recovery phases when gnuplot is installed.
#
#   recovery-experiment.sh [options]
#
# options (defaults in brackets):
#   --servers N         cram-servers [5]
#   --replicas R        replicas per segment [min(2, N-1)]
#   --durability MODE   buffered or sync [coordinator default: buffered]
#   --memory SIZE       log memory per server [1G]
#   --segment-size SIZE log segment size [8M]
#   --mb S              MB of object data on the master that is killed [100]
#   --size B            object (value) size in bytes [1000]
#   --writers W         client threads writing while the master dies [0]
#   --port-base P       ZooKeeper on P, coordinator P+1, servers P+10.. [23400]
#   --dir D             cluster dir: logs, pid files, results [./run/recovery-exp]
#   --bin DIR           where the programs are [$CRAM_BIN, else <repo>/build]
#   --keep              leave the cluster running afterwards (otherwise it is
#                       stopped and its backup replicas, R x the data, deleted;
#                       logs and results stay in D)
#   --coordinator-args "A..."  extra cram-coordinator arguments, split at
#                       spaces (e.g. "--partition-bytes 64M"), via cluster.sh
#   --server-args "A..."       extra cram-server arguments, likewise
#   --small-pages       run the servers without --hugepages (the default here
#                       backs every master's log with transparent huge pages:
#                       one fault per 2 MiB instead of per 4 KiB; see
#                       docs/benchmarks-recovery.md)
#   --backup-buffers SIZE  memory each backup keeps for replica buffers [1G]
#                       (cram-server --backup-buffers; during a recovery each
#                       backup takes the rebuilt segments of several recovery
#                       masters at once: about R x the crashed master's log
#                       / the other servers)
#   --no-prefault       run the servers without --prefault (the default here
#                       faults every server's log memory and backup buffers in
#                       at start, so a recovery does not pay for first-touch
#                       page faults; start-up then takes longer: on this VM
#                       about 2 s per GiB of all servers' memory together when
#                       that memory had gone back to the host, 0.1 s when warm)
#
# Output: the table, D/result.txt, D/timeline.dat(.events) and D/timeline.png.
# Last line: RESULT detect_ms=... recovery_ms=... mb_s=... objects_s=...
# lost=... stale=...   Exit status 0 when lost = stale = 0 and the recovery
# finished, 1 otherwise, 2 for usage errors.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

servers=5 replicas="" durability="" memory=1G segment=8M mb=100 size=1000 writers=0
port_base=23400 dir="$PWD/run/recovery-exp" bin="${CRAM_BIN:-}" keep=0
coordinator_args="" server_args="" hugepages=1 prefault=1 backup_buffers=1G

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --servers) servers="$2"; shift 2 ;;
    --replicas) replicas="$2"; shift 2 ;;
    --durability) durability="$2"; shift 2 ;;
    --memory) memory="$2"; shift 2 ;;
    --segment-size) segment="$2"; shift 2 ;;
    --mb) mb="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --writers) writers="$2"; shift 2 ;;
    --port-base) port_base="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --coordinator-args) coordinator_args="$2"; shift 2 ;;
    --server-args) server_args="$2"; shift 2 ;;
    --small-pages) hugepages=0; shift ;;
    --no-prefault) prefault=0; shift ;;
    --backup-buffers) backup_buffers="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "recovery-experiment.sh: unknown option '$1'" >&2; usage ;;
  esac
done
for v in servers mb size writers port_base; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "recovery-experiment.sh: --${v//_/-} must be a number" >&2; exit 2; }
done
[ "$servers" -ge 2 ] || { echo "recovery-experiment.sh: need at least 2 servers" >&2; exit 2; }
[ "$size" -ge 24 ] || { echo "recovery-experiment.sh: --size must be at least 24" >&2; exit 2; }
if [ -z "$bin" ]; then
  bin="$repo/build"
fi
[ -x "$bin/cram-recovery-exp" ] || { echo "recovery-experiment.sh: $bin/cram-recovery-exp not found (build it, or --bin DIR)" >&2; exit 2; }

objects=$(( mb * 1000000 / size ))
[ "$objects" -ge 1 ] || objects=1
mkdir -p "$dir"
cargs=(start --servers "$servers" --port-base "$port_base" --dir "$dir" --memory "$memory"
       --segment-size "$segment" --cluster recovery-exp --bin "$bin")
[ -z "$replicas" ] || cargs+=(--replicas "$replicas")
[ -z "$durability" ] || cargs+=(--durability "$durability")
[ -z "$coordinator_args" ] || cargs+=(--coordinator-args "$coordinator_args")
[ "$hugepages" = 0 ] || server_args="--hugepages${server_args:+ $server_args}"
# faulting the servers' memory in at start can take tens of seconds
[ "$prefault" = 0 ] || { server_args="--prefault${server_args:+ $server_args}"; cargs+=(--timeout 600); }
server_args="--backup-buffers $backup_buffers $server_args"
[ -z "$server_args" ] || cargs+=(--server-args "$server_args")

stop_cluster() {
  if [ "$keep" = 0 ]; then
    "$here/cluster.sh" stop --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"/backup-[0-9]*
  fi
}
trap stop_cluster EXIT

echo "starting $servers servers (memory $memory, segments $segment, replicas ${replicas:-default}, durability ${durability:-default}, $([ "$hugepages" = 1 ] && echo "huge pages" || echo "small pages")$([ "$prefault" = 1 ] && echo ", memory faulted in at start"), backup buffers $backup_buffers)"
"$here/cluster.sh" "${cargs[@]}" >"$dir/cluster-start.out" 2>&1 || { cat "$dir/cluster-start.out" >&2; exit 1; }
zk="zk:127.0.0.1:$port_base"

set +e
"$bin/cram-recovery-exp" -C "$zk" --cluster recovery-exp --pid-dir "$dir" --port-base "$port_base" \
  --objects "$objects" --size "$size" --writers "$writers" --timeline "$dir/timeline.dat" | tee "$dir/result.txt" | grep -v "^RESULT"
rc=${PIPESTATUS[0]}
set -e
"$bin/cram" -C "$zk" --cluster recovery-exp recovery-status >"$dir/recovery-status.txt" 2>&1 || true
grep -h "recovery .* done: total" "$dir"/coordinator-*.log 2>/dev/null | tail -n 1 >"$dir/coordinator-summary.txt" || true

if command -v gnuplot >/dev/null 2>&1 && [ -s "$dir/timeline.dat" ]; then
  ev="$dir/timeline.dat.events"
  kill_t=$(awk '$1 == "kill" { print $2 }' "$ev")
  det_t=$(awk '$1 == "detected" { print $2 }' "$ev")
  rec_t=$(awk '$1 == "recovered" { print $2 }' "$ev")
  gnuplot <<EOF || echo "gnuplot failed; the data is in $dir/timeline.dat" >&2
set terminal png size 1000,500
set output "$dir/timeline.png"
set title "cram crash recovery: $mb MB in $objects objects of $size B, $servers servers, $writers writers"
set xlabel "time (s)"
set ylabel "acknowledged writes/s"
set yrange [0:*]
set arrow from $kill_t, graph 0 to $kill_t, graph 1 nohead lc rgb "red"
set label "kill -9" at $kill_t, graph 0.95 offset 0.5,0 tc rgb "red"
set arrow from $det_t, graph 0 to $det_t, graph 1 nohead lc rgb "orange"
set label "detected" at $det_t, graph 0.88 offset 0.5,0 tc rgb "orange"
set arrow from $rec_t, graph 0 to $rec_t, graph 1 nohead lc rgb "dark-green"
set label "all readable" at $rec_t, graph 0.81 offset 0.5,0 tc rgb "dark-green"
set object 1 rect from $det_t, graph 0 to $rec_t, graph 1 fc rgb "#ffeecc" fs solid 0.5 behind
plot "$dir/timeline.dat" using 1:2 with lines lw 2 title "client throughput"
EOF
  [ -s "$dir/timeline.png" ] && echo "timeline: $dir/timeline.png" >&2
else
  echo "gnuplot not installed (or no timeline): no PNG" >&2
fi
# the RESULT line comes last
tail -n 1 "$dir/result.txt" | grep '^RESULT' || echo "RESULT detect_ms=0 recovery_ms=0 mb_s=0 objects_s=0 lost=-1 stale=-1"
exit "$rc"
