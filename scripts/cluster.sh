#!/usr/bin/env bash
# cluster.sh -- start, stop and inspect a local cram cluster on 127.0.0.1:
# one ZooKeeper, one cram-coordinator and N cram-servers.
#
#   cluster.sh start  [options]      start a cluster and wait until it serves
#   cluster.sh stop   [--dir D]      stop what `start` started in D
#   cluster.sh status [--dir D]      show the processes and the server list
#
# start options (defaults in brackets):
#   --servers N         number of cram-servers [3]
#   --port-base P       ZooKeeper on P, coordinator j on P+1+j, server i on P+10+i [21800]
#   --coordinators M    coordinators (one leads, the others stand by) [1]
#   --dir D             pid files, logs and ZooKeeper data [./run/cluster]
#   --memory SIZE       log memory of each server [256M]
#   --segment-size SIZE log segment size [8M]
#   --cluster NAME      cluster name; its ZooKeeper root is /cram/NAME [main]
#   --zk LOCATOR        use a running ZooKeeper (zk:H:P) instead of starting one
#   --zk-nodes N        1, or 3: a ZooKeeper ensemble on P, P+90, P+91 (quorum
#                       ports P+92.., election ports P+95..); the locator then
#                       names all three [1]
#   --restart           keep the existing ZooKeeper data and cluster state
#                       (default: begin a fresh cluster: wipe the dir's data and
#                       the cluster's ZooKeeper tree via cram-coordinator --reset)
#   --replicas R        replicas per log segment, a cluster setting given to the
#                       coordinator [min(2, servers - 1)]
#   --durability MODE   buffered or sync, a cluster setting [coordinator default]
#   --poll-us N         dispatch threads spin N us after activity [0 when the
#                       machine has fewer cores than servers + 2, else the
#                       program default]
#   --bin DIR           where the programs are [$CRAM_BIN, else <repo>/build, else PATH]
#   --timeout S         give up when not serving after S seconds [30]
#   --netns N           run the servers as N "hosts": scripts/netns.sh makes
#                       network namespaces cramx<id>-1..N on one bridge; server
#                       i runs in namespace i+1 on its address 10.A.B.(i+1);
#                       ZooKeeper and the coordinators run in this namespace,
#                       listening on the bridge address 10.A.B.254 that every
#                       namespace reaches.  N >= servers; namespaces beyond the
#                       servers' are for clients.  Needs root.  `stop` removes
#                       the namespaces.  [0: everything on 127.0.0.1]
#   --coordinator-args "A..."  extra arguments for every cram-coordinator,
#                       split at spaces (e.g. "--partition-bytes 64M") [none]
#   --server-args "A..."       extra arguments for every cram-server, split at
#                       spaces (e.g. "--ping-timeout-ms 100") [none]
#   --transport T       tcp or xdp: with xdp (needs --netns) every server also
#                       listens on xdp:host=10.A.B.(i+1),port=24001; clients in
#                       a spare namespace reach it with CRAM_TRANSPORT=xdp (the
#                       coordinator and server-to-server traffic stay on tcp:) [tcp]
#
# `start` prints the locator clients use (zk:127.0.0.1:P) and returns once
# every server is listed as up by `cram servers`; otherwise it stops what it
# started, prints the tail of the failing log and exits 1.  Unknown options
# exit 2.  Pid files D/<role>-<i>.pid hold each program's own pid; logs are
# D/<role>-<i>.log; server i keeps its backup replicas in D/backup-<i>.  `stop` ends only processes whose pid file names them and
# whose /proc/PID/cmdline is still that program.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

# usage [full]: the header comment above (with "full") or a one-line hint; exit 2
usage() {
  if [ "${1:-}" = full ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  else
    echo "usage: cluster.sh start|stop|status [options]   (cluster.sh --help for the options)" >&2
  fi
  exit 2
}
die() { echo "cluster.sh: $*" >&2; exit 1; }

# ---- options ---------------------------------------------------------------
# Each start option is one row: name, variable, kind (value|flag).  New
# options (--replicas, --durability, --coordinators, --zk-nodes, ...) get a
# row here and are then used where the processes are started.
start_opts=(
  "servers      servers      value"
  "coordinators coordinators value"
  "port-base    port_base    value"
  "dir          dir          value"
  "memory       memory       value"
  "segment-size segment_size value"
  "cluster      cluster      value"
  "zk           zk           value"
  "zk-nodes     zk_nodes     value"
  "restart      restart      flag"
  "replicas     replicas     value"
  "durability   durability   value"
  "poll-us      poll_us      value"
  "bin          bin          value"
  "timeout      timeout_s    value"
  "netns        netns        value"
  "transport    transport    value"
  "coordinator-args coordinator_args value"
  "server-args  server_args  value"
)
stop_opts=(
  "dir          dir          value"
)

servers=3
coordinators=1
port_base=21800
dir=./run/cluster
memory=256M
segment_size=8M
cluster=main
zk=""
zk_nodes=1
restart=0
replicas=""
durability=""
poll_us=""
bin="${CRAM_BIN:-}"
timeout_s=30
netns=0
transport=tcp
coordinator_args=""
server_args=""
netns_prefix=""
subnet=""
declare -A given=()
# cluster.sh's own `cram` calls (readiness, status) go over tcp: from this
# namespace, whatever the caller's clients prefer
unset CRAM_TRANSPORT

# parse_opts TABLE-NAME ARGS... : sets the variables named in the table
parse_opts() {
  local -n table="$1"
  shift
  while [ $# -gt 0 ]; do
    local arg="$1" name value="" hasval=0 row found=0
    case "$arg" in
      -h|--help) usage full ;;
      --*=*) name="${arg%%=*}"; name="${name#--}"; value="${arg#*=}"; hasval=1 ;;
      --*) name="${arg#--}" ;;
      *) echo "cluster.sh: unexpected argument '$arg'" >&2; usage ;;
    esac
    for row in "${table[@]}"; do
      read -r oname ovar okind <<<"$row"
      [ "$oname" = "$name" ] || continue
      found=1
      if [ "$okind" = flag ]; then
        [ "$hasval" = 0 ] || { echo "cluster.sh: --$name takes no value" >&2; usage; }
        printf -v "$ovar" 1
        shift
      else
        if [ "$hasval" = 0 ]; then
          [ $# -ge 2 ] || { echo "cluster.sh: --$name needs a value" >&2; usage; }
          value="$2"
          shift
        fi
        printf -v "$ovar" '%s' "$value"
        shift
      fi
      given[$ovar]=1
      break
    done
    [ "$found" = 1 ] || { echo "cluster.sh: unknown option '$arg'" >&2; usage; }
  done
}

is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }

# ---- process helpers -------------------------------------------------------
# running PID: the process exists and is not a zombie (an exited child of a
# finished script is reaped by PID 1, which may take a while)
running() {
  local st
  st="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# prog_of ROLE: the program name a role's pid must be running
prog_of() {
  case "$1" in
    zookeeper) echo org.apache.zookeeper.server ;;   # standalone or ensemble member
    coordinator) echo cram-coordinator ;;
    server) echo cram-server ;;
  esac
}

# mark_of PIDFILE: a string only this process of this cluster has in its
# command line (its listen port, or its zoo.cfg path); empty when unknown
mark_of() {
  local name i
  name="$(basename "$1" .pid)"
  i="${name##*-}"
  case "$name" in
    zookeeper-0) echo "$dir/zookeeper/zoo.cfg" ;;
    zookeeper-*) echo "$dir/zookeeper-$i/zoo.cfg" ;;
    coordinator-*) [ -z "$port_base" ] || ! is_uint "$i" || echo "port=$((port_base + 1 + i))" ;;
    server-*) [ -z "$port_base" ] || ! is_uint "$i" || echo "port=$((port_base + 10 + i))" ;;
  esac
}

# pid_of PIDFILE ROLE: prints the pid if it is alive and still that program
# (and, when known, that instance of it: a recycled pid is not ours)
pid_of() {
  local pid cmd mark
  [ -f "$1" ] || return 0
  pid="$(cat "$1" 2>/dev/null || true)"
  is_uint "$pid" || return 0
  [ -r "/proc/$pid/cmdline" ] || return 0
  cmd="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 0
  grep -q -- "$(prog_of "$2")" <<<"$cmd" || return 0
  mark="$(mark_of "$1")"
  case "$mark" in
    '') ;;
    port=*) grep -qE -- "$mark([^0-9]|\$)" <<<"$cmd" || return 0 ;;
    *) grep -qF -- "$mark" <<<"$cmd" || return 0 ;;
  esac
  echo "$pid"
}

# stop_group ROLE PIDFILE...: SIGTERM to every live one at once, wait up to
# 10 s for all, then SIGKILL the rest; pid files are removed
stop_group() {
  local role="$1" f pid i
  shift
  local pids=() names=()
  for f in "$@"; do
    [ -e "$f" ] || continue
    pid="$(pid_of "$f" "$role")"
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$(basename "$f" .pid)")
    fi
    rm -f "$f"
  done
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    local n
    for n in $(seq 200); do
      running "$pid" || break
      sleep 0.05
    done
    if running "$pid"; then
      echo "cluster.sh: ${names[$i]} (pid $pid) ignored SIGTERM for 10 s; killing" >&2
      kill -9 "$pid" 2>/dev/null || true
      for n in $(seq 40); do running "$pid" || break; sleep 0.05; done
    fi
    echo "stopped ${names[$i]} (pid $pid)"
  done
}

# launch NAME LOG PROGRAM ARGS...: start PROGRAM in the background with its
# own pid (exec; setsid keeps terminal hang-ups away) and write D/NAME.pid
launch() {
  local name="$1" log="$2"
  shift 2
  echo "+ $*" >>"$log"
  ( exec setsid "$@" </dev/null >>"$log" 2>&1 ) &
  echo $! >"$dir/$name.pid"
}

find_bin() {
  local p
  for p in "$bin" "$repo/build"; do
    if [ -n "$p" ] && [ -x "$p/cram-server" ] && [ -x "$p/cram-coordinator" ] && [ -x "$p/cram" ]; then
      (cd "$p" && pwd)
      return 0
    fi
  done
  if p="$(command -v cram-server 2>/dev/null)"; then
    dirname "$p"
    return 0
  fi
  die "cannot find cram-server, cram-coordinator and cram (build first: cmake -S $repo -B $repo/build && cmake --build $repo/build; or pass --bin DIR)"
}

# count of servers `cram servers` lists as up on this cluster's ports
servers_up() {
  local out i n=0
  out="$("$bin/cram" -C "$zk" --cluster "$cluster" --timeout 2000 servers 2>/dev/null)" || { echo 0; return 0; }
  for i in $(seq 0 $((servers - 1))); do
    if grep -E "port=$((port_base + 10 + i))([^0-9]|$)" <<<"$out" | grep -iw up >/dev/null; then
      n=$((n + 1))
    fi
  done
  echo "$n"
}

# first process in D that died, as "name", or empty
dead_process() {
  local f role
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    role="$(basename "$f" .pid)"
    role="${role%-*}"
    if [ -z "$(pid_of "$f" "$role")" ]; then
      basename "$f" .pid
      return 0
    fi
  done
}

fail_start() {
  local what="$1" log="$2"
  echo "cluster.sh: $what" >&2
  if [ -n "$log" ] && [ -f "$log" ]; then
    echo "--- tail of $log ---" >&2
    tail -n 20 "$log" >&2
  fi
  do_stop >/dev/null 2>&1 || true
  exit 1
}

# ---- commands --------------------------------------------------------------
save_settings() {
  cat >"$dir/cluster.env" <<EOF
# written by cluster.sh start; read by --restart, status and stop
servers=$servers
coordinators=$coordinators
port_base=$port_base
memory=$memory
segment_size=$segment_size
cluster=$cluster
zk=$zk
own_zk=$own_zk
zk_nodes=$zk_nodes
replicas=$replicas
durability=$durability
poll_us=$poll_us
netns=$netns
transport=$transport
netns_prefix=$netns_prefix
subnet=$subnet
EOF
}

# load_settings: take saved values for every option not given on the command line
load_settings() {
  local line k v
  [ -f "$dir/cluster.env" ] || return 0
  while IFS= read -r line; do
    case "$line" in '#'*|'') continue ;; esac
    k="${line%%=*}"
    v="${line#*=}"
    case "$k" in
      servers|coordinators|port_base|memory|segment_size|cluster|zk|own_zk|zk_nodes|replicas|durability|poll_us|netns|transport|netns_prefix|subnet)
        if [ -z "${given[$k]:-}" ]; then printf -v "$k" '%s' "$v"; fi ;;
    esac
  done <"$dir/cluster.env"
}

# wait_leader: until a client can reach a leading coordinator (up to --timeout)
wait_leader() {
  local deadline=$(($(date +%s) + timeout_s)) dead
  until "$bin/cram" -C "$zk" --cluster "$cluster" --timeout 2000 tables >/dev/null 2>&1; do
    dead="$(dead_process)"
    [ -z "$dead" ] || fail_start "$dead exited during start-up" "$dir/$dead.log"
    [ "$(date +%s)" -lt "$deadline" ] || fail_start "no coordinator leads after ${timeout_s} s" "$dir/coordinator-0.log"
    sleep 0.1
  done
}

do_start() {
  local running i port t0 deadline dead n f r
  parse_opts start_opts "$@"
  is_uint "$servers" && [ "$servers" -ge 1 ] && [ "$servers" -le 80 ] || die "--servers must be 1..80"
  is_uint "$coordinators" && [ "$coordinators" -ge 1 ] && [ "$coordinators" -le 9 ] || die "--coordinators must be 1..9"
  is_uint "$port_base" && [ "$port_base" -ge 1024 ] && [ "$port_base" -le 65400 ] || die "--port-base must be 1024..65400"
  is_uint "$timeout_s" || die "--timeout must be a number of seconds"
  [ -z "$poll_us" ] || is_uint "$poll_us" || die "--poll-us must be a number"
  case "$zk_nodes" in 1|3) ;; *) die "--zk-nodes must be 1 or 3" ;; esac
  [ "$zk_nodes" = 1 ] || [ -z "${given[zk]:-}" ] || die "--zk-nodes starts ZooKeeper: not with --zk"
  [ -z "$replicas" ] || is_uint "$replicas" || die "--replicas must be a number"
  case "$durability" in ''|buffered|sync) ;; *) die "--durability must be buffered or sync" ;; esac
  is_uint "$netns" && [ "$netns" -le 200 ] || die "--netns must be 0..200"
  case "$transport" in tcp|xdp) ;; *) die "--transport must be tcp or xdp" ;; esac
  [ "$transport" = tcp ] || [ "$netns" -gt 0 ] || die "--transport xdp needs --netns N (AF_XDP cannot reach this host's own addresses)"
  if [ "$netns" -gt 0 ]; then
    [ "$netns" -ge "$servers" ] || die "--netns $netns: fewer namespaces than the $servers servers"
    [ "$(id -u)" = 0 ] || die "--netns needs root"
  fi
  mkdir -p "$dir"
  dir="$(realpath -m "$dir")"

  own_zk=1
  if [ "$restart" = 1 ]; then
    load_settings
  fi
  if [ -n "${given[zk]:-}" ]; then own_zk=0; fi
  local host=127.0.0.1
  # namespaces named after the dir, so two clusters' never collide
  [ "$netns" = 0 ] || netns_prefix="cramx$(printf '%s' "$dir" | cksum | awk '{print $1 % 1000000}')"
  if [ "$own_zk" = 1 ]; then zk="zk:127.0.0.1:$port_base"; fi
  # masters replicate to other servers only: with N servers at most N-1 backups
  if [ -z "$replicas" ]; then replicas=$((servers - 1 < 2 ? servers - 1 : 2)); fi
  case "$zk" in zk:*) ;; *) die "--zk wants zk:HOST:PORT[,HOST:PORT...], got '$zk'" ;; esac
  bin="$(find_bin)"

  # (port_base emptied: any live program of ours named by a pid file counts)
  running="$(port_base=""; for f in "$dir"/*.pid; do [ -e "$f" ] || continue; r="$(basename "$f" .pid)"; pid_of "$f" "${r%-*}"; done)"
  [ -z "$running" ] || die "a cluster started from $dir is still running (pids $(echo $running)); run: $0 stop --dir $dir"
  rm -f "$dir"/*.pid

  if [ "$restart" = 0 ]; then
    # fresh cluster: drop the logs, replicas and ZooKeeper data of any earlier one
    rm -rf "$dir/zookeeper" "$dir"/zookeeper-[0-9] "$dir"/*.log "$dir"/backup-*
  fi
  save_settings
  if [ "$netns" -gt 0 ]; then
    local nsout
    nsout="$(bash "$here/netns.sh" up "$netns" --prefix "$netns_prefix")" ||
      fail_start "scripts/netns.sh up $netns --prefix $netns_prefix failed" ""
    subnet="$(sed -n 's/^SUBNET=//p' <<<"$nsout")"
    host="$subnet.254"
    if [ "$own_zk" = 1 ]; then zk="zk:$host:$port_base"; fi
    save_settings
  fi

  if [ "$own_zk" = 1 ] && [ "$zk_nodes" = 1 ]; then
    local zkargs=(start --port "$port_base" --bind "$host" --dir "$dir/zookeeper" --pid-file "$dir/zookeeper-0.pid")
    if ! "$here/zk.sh" "${zkargs[@]}" >"$dir/zk-start.out" 2>&1; then
      cat "$dir/zk-start.out" >&2
      fail_start "ZooKeeper did not start" "$dir/zookeeper/zk.log"
    fi
  elif [ "$own_zk" = 1 ]; then
    # ensemble: member k (0..2) in zookeeper (k = 0) or zookeeper-k; the
    # locator names all three
    zk="zk:$host:$port_base,$host:$((port_base + 90)),$host:$((port_base + 91))"
    save_settings
    local peers="" k zdir
    local cports=("$port_base" "$((port_base + 90))" "$((port_base + 91))")
    for k in 0 1 2; do
      peers+="${peers:+,}${cports[$k]}:$((port_base + 92 + k)):$((port_base + 95 + k))"
    done
    for k in 0 1 2; do
      zdir="$dir/zookeeper"; [ "$k" = 0 ] || zdir="$dir/zookeeper-$k"
      if ! "$here/zk.sh" start --peers "$peers" --id "$((k + 1))" --bind "$host" --dir "$zdir" \
           --pid-file "$dir/zookeeper-$k.pid" >"$dir/zk-start.out" 2>&1; then
        cat "$dir/zk-start.out" >&2
        fail_start "ZooKeeper member $((k + 1)) did not start" "$zdir/zk.log"
      fi
    done
  fi

  local common=(--cluster "$cluster")
  # Spinning dispatch threads pay off only with cores to spare: on a machine
  # with fewer cores than processes they take the cores that backups and
  # clients need (measured: R=2 writes 5x slower with --poll-us 50 on 2
  # cores), so a local cluster blocks at once unless told otherwise.
  if [ -z "$poll_us" ] && [ $((servers + 2)) -gt "$(nproc 2>/dev/null || echo 1)" ]; then
    poll_us=0
  fi
  [ -z "$poll_us" ] || common+=(--poll-us "$poll_us")
  local cargs=(--zk "$zk" "${common[@]}" --replicas "$replicas")
  [ -z "$durability" ] || cargs+=(--durability "$durability")
  local extra_c=() extra_s=()
  read -ra extra_c <<<"$coordinator_args"
  read -ra extra_s <<<"$server_args"
  cargs+=("${extra_c[@]}")
  # the first coordinator resets a fresh cluster's tree and is started alone,
  # so the standbys cannot have joined the election before the wipe
  local reset=()
  [ "$restart" = 1 ] || reset=(--reset)
  launch coordinator-0 "$dir/coordinator-0.log" "$bin/cram-coordinator" "${cargs[@]}" "${reset[@]}" \
    --listen "tcp:host=$host,port=$((port_base + 1))"
  if [ "$coordinators" -gt 1 ]; then
    wait_leader
    for i in $(seq 1 $((coordinators - 1))); do
      launch "coordinator-$i" "$dir/coordinator-$i.log" "$bin/cram-coordinator" "${cargs[@]}" \
        --listen "tcp:host=$host,port=$((port_base + 1 + i))"
    done
  fi

  for i in $(seq 0 $((servers - 1))); do
    port=$((port_base + 10 + i))
    local listen="tcp:host=127.0.0.1,port=$port" nsexec=()
    if [ "$netns" -gt 0 ]; then
      # tcp: first: the coordinator and the other servers use it
      listen="tcp:host=$subnet.$((i + 1)),port=$port"
      [ "$transport" = tcp ] || listen+=";xdp:host=$subnet.$((i + 1)),port=24001"
      nsexec=(ip netns exec "$netns_prefix-$((i + 1))")
    fi
    launch "server-$i" "$dir/server-$i.log" "${nsexec[@]}" "$bin/cram-server" --coordinator "$zk" "${common[@]}" \
      --listen "$listen" --memory "$memory" --segment-size "$segment_size" \
      --backup-dir "$dir/backup-$i" "${extra_s[@]}"
  done

  t0=$(date +%s)
  deadline=$((t0 + timeout_s))
  while :; do
    dead="$(dead_process)"
    [ -z "$dead" ] || fail_start "$dead exited during start-up" "$dir/$dead.log"
    n="$(servers_up)"
    [ "$n" -lt "$servers" ] || break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail_start "only $n of $servers servers up after ${timeout_s} s (cram servers: $("$bin/cram" -C "$zk" --cluster "$cluster" --timeout 2000 servers 2>&1 | tail -n 5 | tr '\n' ' '))" "$dir/coordinator-0.log"
    fi
    sleep 0.1
  done
  echo "cluster '$cluster' serving: $servers servers, $coordinators coordinator(s) from tcp:host=$host,port=$((port_base + 1))"
  echo "locator: $zk"
  if [ "$netns" -gt 0 ]; then
    echo "namespaces: $netns_prefix-1..$netns on $subnet.0/24 (server i in $netns_prefix-<i+1>), transport $transport"
    if [ "$netns" -gt "$servers" ]; then
      local cl=(ip netns exec "$netns_prefix-$((servers + 1))")
      [ "$transport" = tcp ] || cl+=(env CRAM_TRANSPORT=xdp)
      echo "a client: ${cl[*]} $bin/cram -C $zk --cluster $cluster servers"
    fi
  fi
  echo "logs and pid files: $dir"
}

do_stop() {
  [ -d "$dir" ] || { echo "no cluster in $dir"; return 0; }
  dir="$(realpath -m "$dir")"
  [ -n "${given[port_base]:-}" ] || port_base=""
  load_settings
  # servers first, then the coordinator, ZooKeeper last
  stop_group server "$dir"/server-*.pid
  stop_group coordinator "$dir"/coordinator-*.pid
  stop_group zookeeper "$dir"/zookeeper-*.pid
  if [ -n "$netns_prefix" ] && [ "${netns:-0}" -gt 0 ]; then
    bash "$here/netns.sh" down "$netns" --prefix "$netns_prefix" >/dev/null 2>&1 || true
    echo "removed namespaces $netns_prefix-1..$netns"
  fi
  return 0
}

do_status() {
  local f name role pid n=0 up=0
  [ -d "$dir" ] || { echo "no cluster in $dir"; return 3; }
  dir="$(realpath -m "$dir")"
  port_base=""
  load_settings
  echo "cluster '$cluster' in $dir (locator $zk)"
  [ "${netns:-0}" = 0 ] || echo "  namespaces $netns_prefix-1..$netns on $subnet.0/24, transport $transport"
  for f in "$dir"/zookeeper-*.pid "$dir"/coordinator-*.pid "$dir"/server-*.pid; do
    [ -e "$f" ] || continue
    name="$(basename "$f" .pid)"
    role="${name%-*}"
    pid="$(pid_of "$f" "$role")"
    n=$((n + 1))
    if [ -n "$pid" ]; then
      up=$((up + 1))
      printf '  %-14s pid %-8s running\n' "$name" "$pid"
    else
      printf '  %-14s pid %-8s NOT running (log %s)\n' "$name" "$(cat "$f" 2>/dev/null)" "$dir/$name.log"
    fi
  done
  if [ "$n" = 0 ]; then
    echo "  no processes"
    return 3
  fi
  if bin="$(find_bin 2>/dev/null)"; then
    "$bin/cram" -C "$zk" --cluster "$cluster" --timeout 5000 servers 2>&1 | sed 's/^/  /' || true
  fi
  [ "$up" = "$n" ]
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
shift
case "$cmd" in
  start) do_start "$@" ;;
  stop) parse_opts stop_opts "$@"; do_stop ;;
  status) parse_opts stop_opts "$@"; do_status ;;
  -h|--help|help) usage full ;;
  *) echo "cluster.sh: unknown command '$cmd'" >&2; usage ;;
esac
