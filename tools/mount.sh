#!/usr/bin/env bash
# Install what battlefs needs (Debian 12), build it, and mount it with the
# embedded default store (file://<state>/store). Idempotent: an existing
# battlefs mount on MOUNTPOINT is left as it is.
#   tools/mount.sh [MOUNTPOINT] [battlefs options...]   default MOUNTPOINT: /mnt/battle
set -euo pipefail
cd "$(dirname "$0")/.."
mnt=${1:-/mnt/battle}
shift || true
bash tools/install-deps.sh
bash tools/build.sh build -Dbuildtype=release -Dwerror=true >/dev/null
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
  echo "battlefs: $mnt is already mounted"
  exit 0
fi
build/battlefs "$mnt" "$@"
echo "battlefs mounted on $mnt (state: /var/lib/battlefs unless -o state=DIR; unmount: fusermount3 -u $mnt)"
