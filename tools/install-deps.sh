#!/usr/bin/env bash
# Install the Debian 12 packages battlefs needs. Idempotent.
#   tools/install-deps.sh          build + run (libfuse3, avro-c, sqlite3, libcurl, libcrypto)
#   tools/install-deps.sh --test   also everything the test suite and benchmarks use
set -euo pipefail
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

pkgs=(build-essential pkg-config meson ninja-build fuse3 libfuse3-dev libavro-dev
      libsqlite3-dev libcurl4-openssl-dev libssl-dev libjansson-dev zlib1g-dev libdeflate-dev libsnappy-dev
      liblzma-dev libmicrohttpd-dev)
if [ "$want_test" = 1 ]; then
  pkgs+=(clang libclang-rt-14-dev llvm libcmocka-dev avro-bin python3-avro python3-pytest
         python3-pytest-xdist   # tools/test.sh runs the integration tests in two workers
         python3-botocore python3-snappy rsync sqlite3 curl procps psmisc clang-format cppcheck
         debhelper dpkg-dev lintian man-db systemd util-linux   # the Debian package test
         prometheus python3-matplotlib)   # promtool (metrics test), tools/bench/report.py
fi

missing=()
# Node.js with npm (for the s3rver test server): the machine's own, else Debian's.
if [ "$want_test" = 1 ] && ! command -v npm >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
