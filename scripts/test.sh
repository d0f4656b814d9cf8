#!/usr/bin/env bash
# test.sh -- install what is missing, build, and run every test; exit non-zero
# if anything fails.  This is what CI runs (.ci/run).
#
#   scripts/test.sh [--release-only | --asan-only] [--no-deps]
#
# Steps:
#   1. scripts/deps.sh (Debian packages; nothing happens when all are present)
#   2. release build in build/ (CMAKE_BUILD_TYPE=Release)
#   3. ASan+UBSan build in build-asan/ (CRAM_SANITIZE=ON, Debug)
#   4. ctest in build/, then in build-asan/ with CRAM_TEST_TIME_SCALE=3:
#      unit and integration tests.  The ZooKeeper they need is started by
#      the CTest fixture test zk_start (scripts/zk.sh; release on port 26000,
#      ASan on 28000) and stopped by zk_stop; this script stops it too if
#      ctest is interrupted.
# Failed tests print their output (and the tail of every process log).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

do_release=1
do_asan=1
do_deps=1
for a in "$@"; do
  case "$a" in
    --release-only) do_asan=0 ;;
    --asan-only) do_release=0 ;;
    --no-deps) do_deps=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done

jobs="$(nproc 2>/dev/null || echo 2)"
t_start=$(date +%s)
failed=()

step() { echo; echo "=== $* ($(($(date +%s) - t_start)) s)"; }

# Whatever happens, leave no ZooKeeper of ours behind.
cleanup() {
  for d in build/test-zk build-asan/test-zk; do
    [ -f "$d/zk.pid" ] && bash "$here/zk.sh" stop --dir "$d" >/dev/null 2>&1
  done
  return 0
}
trap cleanup EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT TERM

if [ "$do_deps" = 1 ]; then
  step "dependencies"
  bash "$here/deps.sh" || { echo "test.sh: scripts/deps.sh failed" >&2; exit 1; }
fi

build() {  # build DIR CMAKE-ARGS...
  local dir="$1"
  shift
  step "configure and build $dir"
  cmake -S "$repo" -B "$repo/$dir" "$@" >"$repo/$dir/configure.log" 2>&1 ||
    { cat "$repo/$dir/configure.log" >&2; return 1; }
  # keep going past errors so every failure shows; progress lines are dropped
  local keep=-k
  grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$repo/$dir/CMakeCache.txt" && keep="-k0"
  cmake --build "$repo/$dir" -j "$jobs" -- "$keep" 2>&1 | grep -vE '^\[ *[0-9]+%\]|^g?make(\[[0-9]+\])?: (Entering|Leaving)'
  return "${PIPESTATUS[0]}"
}

run_ctest() {  # run_ctest DIR [ENV=VAL...]
  local dir="$1"
  shift
  step "ctest in $dir"
  env "$@" ctest --test-dir "$repo/$dir" --output-on-failure -j "$jobs" --timeout 600
}

# A build error does not stop the run: everything that did build is still
# tested (a test whose program is missing fails as "Not Run").
if [ "$do_release" = 1 ]; then
  mkdir -p build
  build build -DCMAKE_BUILD_TYPE=Release || failed+=("release build")
  if [ -f build/CTestTestfile.cmake ]; then
    run_ctest build || failed+=("release tests")
  fi
fi

if [ "$do_asan" = 1 ]; then
  mkdir -p build-asan
  build build-asan -DCMAKE_BUILD_TYPE=Debug -DCRAM_SANITIZE=ON || failed+=("ASan+UBSan build")
  if [ -f build-asan/CTestTestfile.cmake ]; then
    run_ctest build-asan CRAM_TEST_TIME_SCALE=3 \
      ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}" \
      UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" ||
      failed+=("ASan+UBSan tests")
  fi
fi

step "done"
if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: FAILED: ${failed[*]} (after $(($(date +%s) - t_start)) s)" >&2
  exit 1
fi
echo "test.sh: all builds and tests passed in $(($(date +%s) - t_start)) s"
