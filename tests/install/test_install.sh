#!/usr/bin/env bash
# test_install.sh BUILD_DIR [EXTRA_CFLAGS] -- `cmake --install` gives a usable library:
# cram.h, libcram.a, libcram.so and a cram.pc with which
# `cc app.c $(pkg-config --cflags --libs cram)` builds a client program,
# dynamically and statically linked.  The program is the README's example.
set -euo pipefail
build="$1"
extra="${2:-}"     # e.g. the sanitizer flags of an instrumented build
src="$(cd "$(dirname "$0")/../.." && pwd)"
tmp=$(mktemp -d /tmp/cram-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
for f in include/cram.h lib/libcram.a lib/libcram.so lib/pkgconfig/cram.pc bin/cram bin/cram-server bin/cram-coordinator; do
  [ -e "$tmp/prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done

# the C example from README.md, verbatim
awk '/^```c$/ { on = 1; next } /^```$/ { if (on) exit } on' "$src/README.md" > "$tmp/app.c"
grep -q cram_connect "$tmp/app.c" || { echo "FAIL: no C example found in README.md"; exit 1; }

export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
cc $extra -Wall -Wextra -Werror "$tmp/app.c" $(pkg-config --cflags --libs cram) -o "$tmp/app_dyn"
# Capture ldd's output before matching: under pipefail, `ldd | grep -q` fails
# whenever grep exits at its first match while ldd is still writing (SIGPIPE).
dyn_deps=$(LD_LIBRARY_PATH="$tmp/prefix/lib" ldd "$tmp/app_dyn")
grep -q "libcram.so.0 => $tmp/prefix/lib" <<< "$dyn_deps" ||
  { echo "FAIL: app does not link the installed libcram.so"; echo "$dyn_deps"; exit 1; }
static_libs=$(pkg-config --static --libs-only-l cram | sed 's/-lcram //')
cc $extra -Wall -Wextra -Werror "$tmp/app.c" -o "$tmp/app_static" $(pkg-config --cflags cram) \
  "$tmp/prefix/lib/libcram.a" $static_libs
static_deps=$(ldd "$tmp/app_static" || true)
if grep -q libcram <<< "$static_deps"; then
  echo "FAIL: static build still needs libcram.so"; exit 1
fi
echo "install test: headers, libraries, programs and cram.pc installed; the README example builds (dynamic and static)"
echo "1 passed, 0 failed"
