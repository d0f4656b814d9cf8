#!/usr/bin/env bash
# test_cluster_sh.sh BUILD_DIR PORT_BASE -- scripts/cluster.sh start/status/stop.
#
#   - unknown options and commands exit 2
#   - cluster A (own ZooKeeper on PORT_BASE, 2 coordinators, 2 servers) and cluster B (the
#     fixture's ZooKeeper via --zk, 1 server, port base PORT_BASE+2) run at
#     once, each serving its own data
#   - every pid file holds the pid of the program itself (/proc/PID/cmdline)
#   - status exits 0 while running; stop ends exactly that cluster's processes
#   - --restart brings a stopped cluster back with its tables
#   - a cluster that cannot start (a server's port is taken) fails, names the
#     failing process and leaves nothing running
# Env: CRAM_TEST_ZK=127.0.0.1:PORT (the fixture's ZooKeeper).
set -uo pipefail

bin="$1"
base="$2"
here="$(cd "$(dirname "$0")" && pwd)"
cs="$here/../../scripts/cluster.sh"
cram="$bin/cram"
work="$(mktemp -d "${TMPDIR:-/tmp}/cram-it-cluster-sh-XXXXXX")"
A="$work/a"
B="$work/b"
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

cleanup() {
  bash "$cs" stop --dir "$A" >/dev/null 2>&1
  bash "$cs" stop --dir "$B" >/dev/null 2>&1
  bash "$cs" stop --dir "$work/c" >/dev/null 2>&1
}
trap cleanup EXIT

pid_alive() {  # prints the pid if it runs (not a zombie)
  local st
  st="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [ -n "$st" ] && [ "$st" != Z ] && echo "$1"
}

expect_rc() {  # expect_rc WANT DESCRIPTION CMD...
  local want="$1" what="$2" rc t0
  shift 2
  t0=$(date +%s.%N)
  "$@" >"$work/out" 2>&1
  rc=$?
  t0=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" = "$want" ]; then ok "$what (exit $rc, $t0 s)"; else fail "$what: exit $rc, want $want"; cat "$work/out" >&2; fi
}

# pids_real DIR PROGRAM...: each pid file's pid runs the program named for its role
pids_real() {
  local d="$1" f pid role want n=0
  for f in "$d"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    role="$(basename "$f" .pid)"
    case "$role" in
      zookeeper-*) want=ZooKeeperServerMain ;;
      coordinator-*) want=/cram-coordinator ;;
      server-*) want=/cram-server ;;
      *) fail "unexpected pid file $f"; continue ;;
    esac
    if [ -r "/proc/$pid/cmdline" ] && grep -qF -- "$want" <<<"$(tr '\0' '\n' <"/proc/$pid/cmdline")"; then
      n=$((n + 1))
    else
      fail "$f: pid $pid is not $want ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100))"
    fi
  done
  echo "$n"
}

# --- usage errors -----------------------------------------------------------
expect_rc 2 "unknown option" bash "$cs" start --bogus --dir "$A"
expect_rc 2 "unknown command" bash "$cs" frobnicate
expect_rc 2 "missing option value" bash "$cs" start --servers
expect_rc 2 "no command" bash "$cs"
expect_rc 2 "stop with a start-only option" bash "$cs" stop --servers 3
[ ! -e "$A/coordinator-0.pid" ] || fail "a failed start left a pid file"

# --- two clusters at once ----------------------------------------------------
expect_rc 0 "start A (own ZooKeeper, 2 coordinators, 2 servers)" bash "$cs" start --dir "$A" --port-base "$base" \
  --coordinators 2 --servers 2 --memory 32M --segment-size 1M --cluster it-sh-a --bin "$bin"
grep -q "^locator: zk:127.0.0.1:$base\$" "$work/out" && ok "A prints its locator" || { fail "A locator line"; cat "$work/out" >&2; }
expect_rc 0 "start B (--zk, 1 server)" bash "$cs" start --dir "$B" --port-base "$((base + 2))" \
  --servers 1 --memory 32M --segment-size 1M --cluster it-sh-b --zk "zk:$CRAM_TEST_ZK" --bin "$bin" \
  --coordinator-args "--partition-bytes 64M --stats-interval-ms 500" --server-args "--ping-timeout-ms 400"
# --coordinator-args / --server-args reach the programs, split at spaces
grep -q -- "--partition-bytes 64M --stats-interval-ms 500" <<<"$(tr '\0' ' ' <"/proc/$(cat "$B/coordinator-0.pid")/cmdline")" &&
  ok "B's coordinator got --coordinator-args" || fail "B's coordinator lacks --coordinator-args"
grep -q -- "--ping-timeout-ms 400" <<<"$(tr '\0' ' ' <"/proc/$(cat "$B/server-0.pid")/cmdline")" &&
  ok "B's server got --server-args" || fail "B's server lacks --server-args"
[ ! -e "$B/zookeeper-0.pid" ] && ok "B started no ZooKeeper" || fail "B started its own ZooKeeper"

[ "$(pids_real "$A")" = 5 ] && ok "A: 5 pid files with real pids" || fail "A pid files"
[ "$(pids_real "$B")" = 2 ] && ok "B: 2 pid files with real pids" || fail "B pid files"

ZA="zk:127.0.0.1:$base"
ZB="zk:$CRAM_TEST_ZK"
"$cram" -C "$ZA" --cluster it-sh-a create-table t --span 2 >/dev/null &&
"$cram" -C "$ZA" --cluster it-sh-a put t k from-a &&
"$cram" -C "$ZB" --cluster it-sh-b create-table t >/dev/null &&
"$cram" -C "$ZB" --cluster it-sh-b put t k from-b || fail "writes to A and B"
[ "$("$cram" -C "$ZA" --cluster it-sh-a get t k)" = from-a ] && ok "A serves its data" || fail "A get"
[ "$("$cram" -C "$ZB" --cluster it-sh-b get t k)" = from-b ] && ok "B serves its data" || fail "B get"

# a pid file naming another cluster's process (a recycled pid) is not obeyed
mkdir -p "$work/d"
cp "$B/server-0.pid" "$work/d/server-0.pid"
printf 'port_base=%s\n' "$((base + 6))" >"$work/d/cluster.env"
expect_rc 0 "stop of a dir whose pid file names B's server" bash "$cs" stop --dir "$work/d"
[ -n "$(pid_alive "$(cat "$B/server-0.pid")")" ] && ok "B's server survived" || fail "stop killed B's server through a foreign pid file"

expect_rc 0 "status A" bash "$cs" status --dir "$A"
grep -q "server-1 .*running" "$work/out" || fail "status A lists server-1 running"
expect_rc 1 "start A again while it runs" bash "$cs" start --dir "$A" --port-base "$base" --bin "$bin"

# --- stop A; B keeps serving -------------------------------------------------
apids="$(cat "$A"/*.pid)"
expect_rc 0 "stop A" bash "$cs" stop --dir "$A"
for p in $apids; do
  # gone, or a zombie waiting for PID 1 to reap it
  [ -n "$(pid_alive "$p")" ] && fail "pid $p of A still runs after stop"
done
ls "$A"/*.pid >/dev/null 2>&1 && fail "stop A left pid files"
[ "$("$cram" -C "$ZB" --cluster it-sh-b get t k)" = from-b ] && ok "B still serves after A stopped" || fail "B after stopping A"
expect_rc 3 "status A after stop" bash "$cs" status --dir "$A"
expect_rc 0 "stop A twice" bash "$cs" stop --dir "$A"

# --- restart A: same ZooKeeper data, tables kept ------------------------------
expect_rc 0 "restart A" bash "$cs" start --dir "$A" --restart --bin "$bin"
"$cram" -C "$ZA" --cluster it-sh-a tables >"$work/out" 2>&1 && grep -qw t "$work/out" &&
  ok "A's table survived --restart" || { fail "A table after --restart"; cat "$work/out" >&2; }
expect_rc 0 "stop A again" bash "$cs" stop --dir "$A"

# --- a fresh start wipes the cluster ----------------------------------------
expect_rc 0 "stop B" bash "$cs" stop --dir "$B"
expect_rc 0 "fresh start of B" bash "$cs" start --dir "$B" --port-base "$((base + 2))" \
  --servers 1 --memory 32M --segment-size 1M --cluster it-sh-b --zk "zk:$CRAM_TEST_ZK" --bin "$bin"
"$cram" -C "$ZB" --cluster it-sh-b tables >"$work/out" 2>&1
grep -qw t "$work/out" && fail "fresh start kept B's old table"

# --- failure to start: server-1's port is B's server port -------------------
expect_rc 1 "start with a taken server port fails" bash "$cs" start --dir "$work/c" --port-base "$((base + 1))" \
  --servers 2 --memory 32M --segment-size 1M --cluster it-sh-c --zk "zk:$CRAM_TEST_ZK" --bin "$bin" --timeout 20
grep -q "server-1" "$work/out" && ok "failure names server-1" || { fail "failure message"; cat "$work/out" >&2; }
"$cram" -C "$ZB" --cluster it-sh-b create-table t2 >/dev/null && "$cram" -C "$ZB" --cluster it-sh-b put t2 k v &&
  [ "$("$cram" -C "$ZB" --cluster it-sh-b get t2 k)" = v ] && ok "B unaffected by C's failed start" ||
  fail "B after C's failed start"
ls "$work/c"/*.pid >/dev/null 2>&1 && fail "failed start left pid files"
expect_rc 0 "stop B at the end" bash "$cs" stop --dir "$B"

if [ "$failures" = 0 ]; then
  echo "cluster.sh: all checks passed"
  rm -rf "$work"
  exit 0
fi
echo "cluster.sh: $failures checks failed; logs in $work" >&2
exit 1
