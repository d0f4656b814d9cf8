#!/usr/bin/env bash
# Install the Debian packages cram needs to build, test and benchmark.
# Idempotent: packages already present are not touched, and apt is not run
# at all when nothing is missing.  Usage: scripts/deps.sh [--bench]
#   --bench   also install redis-server, memcached and gnuplot (the peers
#             cram-bench compares against, and the recovery plot)
set -euo pipefail

pkgs=(build-essential cmake pkg-config git
      libprotobuf-c-dev protobuf-c-compiler
      libcunit1-dev
      libzookeeper-mt-dev zookeeperd default-jre-headless
      libxxhash-dev libisal-dev
      libibverbs-dev librdmacm-dev
      libxdp-dev libbpf-dev clang libclang-rt-14-dev
      iproute2 procps)
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(redis-server memcached gnuplot-nox)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
