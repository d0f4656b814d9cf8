#!/usr/bin/env bash
# test_recovery_experiment.sh BUILD_DIR PORT_BASE -- scripts/recovery-experiment.sh
# end to end, small: 4 servers, R=2 (own ZooKeeper on PORT_BASE, coordinator
# PORT_BASE+1, servers PORT_BASE+10..13), 3 MB of 1 KB objects on the master
# that is killed, 2 writer threads running through the crash.  It must exit 0
# and its last line must be a RESULT with detect_ms, recovery_ms > 0 and
# lost=0 stale=0; the cluster is stopped and its backup replicas deleted.
set -uo pipefail

bin="$1"
base="$2"
here="$(cd "$(dirname "$0")" && pwd)"
exp="$here/../../scripts/recovery-experiment.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/cram-it-recexp-XXXXXX")"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
cleanup() {
  bash "$here/../../scripts/cluster.sh" stop --dir "$work/run" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

bash "$exp" --bogus >/dev/null 2>&1
[ $? = 2 ] && ok "unknown option exits 2" || fail "unknown option did not exit 2"

bash "$exp" --servers 4 --mb 3 --size 1000 --writers 2 --memory 256M --segment-size 1M \
  --backup-buffers 8M --port-base "$base" --bin "$bin" --dir "$work/run" >"$work/out.txt" 2>&1
rc=$?
[ $rc = 0 ] && ok "experiment exits 0" || fail "experiment exited $rc"
last="$(tail -n 1 "$work/out.txt")"
echo "last line: $last"
if [[ $last =~ ^RESULT\ detect_ms=([0-9]+)\ recovery_ms=([0-9]+)\ mb_s=[0-9.]+\ objects_s=[0-9]+\ lost=([0-9]+)\ stale=([0-9]+)$ ]]; then
  ok "RESULT line is machine-readable"
  [ "${BASH_REMATCH[1]}" -gt 0 ] && ok "detected" || fail "detect_ms=0: crash not detected"
  [ "${BASH_REMATCH[2]}" -gt 0 ] && ok "recovered" || fail "recovery_ms=0: objects never readable"
  [ "${BASH_REMATCH[3]}" = 0 ] && [ "${BASH_REMATCH[4]}" = 0 ] && ok "0 lost, 0 stale" ||
    fail "lost=${BASH_REMATCH[3]} stale=${BASH_REMATCH[4]}"
else
  fail "last line is not a RESULT line"
fi
out="$(cat "$work/out.txt")"
if [[ $out =~ writer\ threads\ +2\ \(([0-9]+)\ acknowledged,\ ([0-9]+)\ errors\) ]]; then
  [ "${BASH_REMATCH[1]}" -gt 0 ] && [ "${BASH_REMATCH[2]}" = 0 ] &&
    ok "writers: ${BASH_REMATCH[1]} acknowledged, 0 errors" ||
    fail "writers: ${BASH_REMATCH[1]} acknowledged, ${BASH_REMATCH[2]} errors"
else
  fail "no writer line"
fi
[[ $out == *"lost acknowledged writes"* && $out == *"PARTITION"* ]] && ok "result table printed" ||
  fail "no result table"
grep -q "done: total" "$work/run/coordinator-summary.txt" 2>/dev/null && ok "coordinator summary kept" ||
  fail "no coordinator summary"
[ -s "$work/run/timeline.dat" ] && ok "timeline data written" || fail "no timeline data"
# the default --prefault: every server faulted its log and backup buffers in at start
n_log=$(grep -l "log: 256.0 MiB faulted in at start" "$work/run"/server-*.log 2>/dev/null | wc -l)
n_buf=$(grep -l "backup: 8 buffers of 1024 KiB faulted in at start" "$work/run"/server-*.log 2>/dev/null | wc -l)
[ "$n_log" = 4 ] && [ "$n_buf" = 4 ] && ok "servers prefaulted (log and backup buffers)" ||
  fail "prefault: $n_log logs and $n_buf backups of 4 servers faulted in at start"
ls -d "$work/run"/backup-[0-9]* >/dev/null 2>&1 && fail "backup replicas left behind" || ok "backup replicas deleted"
if [ "$failures" -ne 0 ]; then
  echo "--- output" >&2; cat "$work/out.txt" >&2
  tail -n 20 "$work/run"/coordinator-*.log >&2 2>/dev/null
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all passed"
