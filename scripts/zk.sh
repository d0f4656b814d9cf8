#!/usr/bin/env bash
# zk.sh -- run one standalone ZooKeeper server for cram without systemd.
#
#   zk.sh start  [--port P] [--bind ADDR] [--dir D] [--pid-file F] [--clean]
#   zk.sh stop   [--dir D] [--pid-file F]
#   zk.sh status [--dir D] [--pid-file F]
#
#   --port P      client port, bound on 127.0.0.1 only (default 21800)
#   --bind ADDR   bind the client port on ADDR instead of 127.0.0.1 (e.g. a
#                 bridge address network namespaces reach; cluster.sh --netns)
#   --dir D       config, data and log live here: D/zoo.cfg, D/data, D/zk.log
#                 (default ./run/zk)
#   --pid-file F  pid file holding the JVM's own pid (default D/zk.pid)
#   --clean       start: wipe D/data first (a fresh, empty ZooKeeper)
#   --peers LIST  start: run as member --id of an ensemble instead of alone;
#                 LIST is CLIENT:QUORUM:ELECTION ports of every member on
#                 the --bind address, comma-separated ("21800:21892:21895,..."); this
#                 member's client port is its entry's CLIENT (--port ignored)
#   --id I        start with --peers: this member's number, 1..members
#
# start returns once the server answers `ruok` with `imok` (polled every
# 50 ms for up to 15 s), or exits 1 with the tail of D/zk.log.  If a
# ZooKeeper started from the same pid file still runs and answers, start says
# so and exits 0 (with --clean it is restarted).  stop ends only the JVM named
# by the pid file, after checking /proc/PID/cmdline is that ZooKeeper.
# status exits 0 when it runs and answers, 3 when it does not run.
#
# tickTime is 1000 ms, so clients may ask for session timeouts down to 2 s.
# An ensemble member answers `imok` before a quorum has formed: start the
# members one after the other; clients connect once a majority runs.
set -euo pipefail

# usage [full]: the header comment above (with "full") or a one-line hint; exit 2
usage() {
  if [ "${1:-}" = full ]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  else
    echo "usage: zk.sh start|stop|status [options]   (zk.sh --help for the options)" >&2
  fi
  exit 2
}

cmd="${1:-}"
[ -n "$cmd" ] || usage
shift
port=21800
bind=127.0.0.1
dir=./run/zk
pidfile=""
clean=0
peers=""
myid=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --bind) bind="${2:?--bind needs a value}"; shift 2 ;;
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --pid-file) pidfile="${2:?--pid-file needs a value}"; shift 2 ;;
    --clean) clean=1; shift ;;
    --peers) peers="${2:?--peers needs a value}"; shift 2 ;;
    --id) myid="${2:?--id needs a value}"; shift 2 ;;
    -h|--help) usage full ;;
    *) echo "zk.sh: unknown option '$1'" >&2; usage ;;
  esac
done
# ensemble: this member's client port from its --peers entry
peer_lines=""
if [ -n "$peers" ]; then
  case "$myid" in ''|*[!0-9]*|0) echo "zk.sh: --peers needs --id 1..members" >&2; exit 2 ;; esac
  IFS=, read -r -a peer_list <<<"$peers"
  [ "$myid" -le "${#peer_list[@]}" ] || { echo "zk.sh: --id $myid but only ${#peer_list[@]} peers" >&2; exit 2; }
  for k in "${!peer_list[@]}"; do
    IFS=: read -r cp qp ep extra <<<"${peer_list[$k]}"
    for v in "$cp" "$qp" "$ep"; do
      case "$v" in ''|*[!0-9]*) echo "zk.sh: bad --peers entry '${peer_list[$k]}' (CLIENT:QUORUM:ELECTION)" >&2; exit 2 ;; esac
    done
    [ -z "${extra:-}" ] || { echo "zk.sh: bad --peers entry '${peer_list[$k]}'" >&2; exit 2; }
    peer_lines+="server.$((k + 1))=$bind:$qp:$ep"$'\n'
    [ "$((k + 1))" != "$myid" ] || port="$cp"
  done
fi
case "$port" in ''|*[!0-9]*) echo "zk.sh: bad port '$port'" >&2; exit 2 ;; esac
[[ $bind =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "zk.sh: bad --bind '$bind' (an IPv4 address)" >&2; exit 2; }
[ "$cmd" != start ] || mkdir -p "$dir"
# absolute, so the JVM's command line names this dir wherever we are called from
dir="$(realpath -m "$dir")"
[ -n "$pidfile" ] || pidfile="$dir/zk.pid"

CP=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar

# running PID: the process exists and is not a zombie (an exited child of a
# finished script is reaped by PID 1, which may take a while)
running() {
  local st
  st="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# ruok -> imok on $bind:$1 (one try, at most 1 s)
zk_ok() {
  local ans
  ans="$(timeout 1 bash -c "exec 3<>/dev/tcp/$bind/$1 && printf ruok >&3 && cat <&3" 2>/dev/null || true)"
  [ "$ans" = "imok" ]
}

# pid from the pid file if that process is our ZooKeeper (same zoo.cfg), else empty
zk_pid() {
  local pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  case "$pid" in ''|*[!0-9]*) return 0 ;; esac
  if [ -r "/proc/$pid/cmdline" ] &&
     grep -qE "(ZooKeeperServerMain|QuorumPeerMain) $dir/zoo.cfg" <<<"$(tr '\0' ' ' <"/proc/$pid/cmdline")"; then
    echo "$pid"
  fi
}

cfg_port() {
  sed -n 's/^clientPort=//p' "$dir/zoo.cfg" 2>/dev/null || true
}

cfg_bind() {
  sed -n 's/^clientPortAddress=//p' "$dir/zoo.cfg" 2>/dev/null || true
}

do_stop() {
  local pid i
  pid="$(zk_pid)"
  if [ -z "$pid" ]; then
    rm -f "$pidfile"
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  # a clean shutdown takes about 2 s; the data dir survives kill -9 as well
  for i in $(seq 60); do
    running "$pid" || break
    sleep 0.05
  done
  if running "$pid"; then
    kill -9 "$pid" 2>/dev/null || true
    for i in $(seq 40); do running "$pid" || break; sleep 0.05; done
  fi
  rm -f "$pidfile"
  echo "zookeeper stopped (pid $pid)"
}

do_start() {
  local pid i
  pid="$(zk_pid)"
  if [ -n "$pid" ]; then
    if [ "$clean" = 1 ] || [ "$(cfg_port)" != "$port" ] || [ "$(cfg_bind)" != "$bind" ]; then
      do_stop >/dev/null
    elif zk_ok "$port"; then
      echo "zookeeper already running (pid $pid, $bind:$port)"
      return 0
    fi
  fi
  if zk_ok "$port"; then
    echo "zk.sh: something else already answers on $bind:$port" >&2
    return 1
  fi
  [ "$clean" = 1 ] && rm -rf "$dir/data"
  mkdir -p "$dir/data"
  cat >"$dir/zoo.cfg" <<EOF
# written by scripts/zk.sh
tickTime=1000
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=$bind
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
EOF
  local main=org.apache.zookeeper.server.ZooKeeperServerMain
  if [ -n "$peer_lines" ]; then
    # ensemble member: quorum and election ports on the --bind address, its id in myid
    printf '%s' "$peer_lines" >>"$dir/zoo.cfg"
    echo "$myid" >"$dir/data/myid"
    main=org.apache.zookeeper.server.quorum.QuorumPeerMain
  fi
  # The subshell execs setsid, which execs java: $! is the JVM's own pid.
  # setsid keeps terminal hang-ups and the caller's signals away from it.
  ( exec setsid java -Xmx256m -cp "$CP" -Dzookeeper.root.logger=WARN,CONSOLE \
      "$main" "$dir/zoo.cfg" \
      </dev/null >"$dir/zk.log" 2>&1 ) &
  pid=$!
  echo "$pid" >"$pidfile"
  for i in $(seq 300); do
    if zk_ok "$port"; then
      echo "zookeeper running (pid $pid, $bind:$port, dir $dir)"
      return 0
    fi
    if ! running "$pid"; then
      break
    fi
    sleep 0.05
  done
  echo "zk.sh: ZooKeeper did not answer on $bind:$port within 15 s; tail of $dir/zk.log:" >&2
  tail -n 20 "$dir/zk.log" >&2 || true
  do_stop >/dev/null
  return 1
}

do_status() {
  local pid p
  pid="$(zk_pid)"
  if [ -z "$pid" ]; then
    echo "zookeeper not running (dir $dir)"
    return 3
  fi
  p="$(cfg_port)"
  bind="$(cfg_bind)"; bind="${bind:-127.0.0.1}"
  if zk_ok "$p"; then
    echo "zookeeper running (pid $pid, $bind:$p)"
    return 0
  fi
  echo "zookeeper process $pid exists but $bind:$p does not answer"
  return 1
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  -h|--help|help) usage full ;;
  *) echo "zk.sh: unknown command '$cmd'" >&2; usage ;;
esac
