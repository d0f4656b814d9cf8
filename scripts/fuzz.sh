#!/usr/bin/env bash
# fuzz.sh -- build the libFuzzer targets (tests/fuzz, docs/fuzzing.md) with
# clang in build-fuzz/ and run each for a while, one at a time.
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [--no-build] [TARGET...]
#
#   -t SECONDS   run time per target (default 30)
#   -j JOBS      parallel build jobs (default 2)
#   --no-build   use the binaries already in build-fuzz/
#   TARGET       e.g. master_wire backup (default: every target)
#
# Each target starts from its committed seeds (tests/fuzz/corpus/<t>) plus
# what earlier runs found (build-fuzz/fuzz-corpus/<t>, kept between runs).
# A crash, leak, timeout (10 s per input) or out-of-memory input is written
# to build-fuzz/fuzz-crashes/<t>/ and reported below with the command that
# reproduces it.  Exit status: 0 when no target found anything, 1 otherwise
# (2 for a build or usage error).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bdir="$repo/build-fuzz"
secs=30
jobs=2
build=1
targets=()
all=(master_wire master backup coord_proto serverlist tcp xdp_proto segment locator client_parse)

while [ $# -gt 0 ]; do
  case "$1" in
    -t) secs="${2:?-t needs seconds}"; shift 2 ;;
    -j) jobs="${2:?-j needs a number}"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

if [ "$build" -eq 1 ]; then
  if ! command -v clang >/dev/null; then
    echo "fuzz.sh: clang not found (scripts/deps.sh installs it)" >&2
    exit 2
  fi
  CC=clang cmake -S "$repo" -B "$bdir" -DCRAM_FUZZ=ON -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 2
  cmake --build "$bdir" -j"$jobs" --target "${targets[@]/#/fuzz_}" >"$bdir/fuzz-build.log" 2>&1 || {
    tail -30 "$bdir/fuzz-build.log"; echo "fuzz.sh: build failed (see $bdir/fuzz-build.log)" >&2; exit 2; }
fi

found=0
for t in "${targets[@]}"; do
  bin="$bdir/tests/fuzz/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz.sh: $bin missing" >&2
    exit 2
  fi
  work="$bdir/fuzz-corpus/$t"
  crashes="$bdir/fuzz-crashes/$t"
  mkdir -p "$work" "$crashes"
  before=$(ls "$crashes" | wc -l)
  log="$bdir/fuzz-$t.log"
  echo "== $t: ${secs}s"
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
         -artifact_prefix="$crashes/" "$work" "$repo/tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" | sed 's/^/   /'
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed 's/^/   /'
  after=$(ls "$crashes" | wc -l)
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
    found=1
    echo "   FOUND (exit $rc), log: $log"
    grep -E '^==[0-9]+==ERROR|SUMMARY|runtime error|deadly signal|ALARM|out-of-memory' "$log" | head -5 | sed 's/^/   /'
    for f in $(ls -t "$crashes" | head -$((after - before > 0 ? after - before : 1))); do
      echo "   reproducer: $crashes/$f"
      echo "   replay:     $bin $crashes/$f"
    done
  fi
done
[ "$found" -eq 0 ] && echo "fuzz.sh: nothing found" || echo "fuzz.sh: findings above"
exit "$found"
