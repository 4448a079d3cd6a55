#!/usr/bin/env bash
# Configure (once) and build a meson build directory. Idempotent.
#   tools/build.sh [DIR [MESON-SETUP-ARGS...]]     default DIR: build
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "$@"
else
  meson configure "$dir" "$@" >/dev/null 2>&1 || true
fi
ninja -C "$dir"
