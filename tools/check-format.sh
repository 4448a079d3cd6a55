#!/usr/bin/env bash
# Check that every C source and header follows the committed .clang-format.
# Prints the offending places and exits 1 if any file would be reformatted.
#   tools/check-format.sh            check
#   tools/check-format.sh --fix      reformat in place
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find src include tests tools -name '*.[ch]' -not -path '*/node_modules/*' | sort)
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
else
  clang-format --dry-run -Werror "${files[@]}"
fi
