#!/usr/bin/env bash
# Static analysis: cppcheck over the daemon's and the unit tests' C sources.
# Prints each finding and exits 1 if there is any. A finding that is a
# deliberate pattern is suppressed where it occurs (// cppcheck-suppress ID),
# with a comment saying why.
#   tools/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec cppcheck --enable=warning,performance,portability --inline-suppr --std=c11 -I include \
  --error-exitcode=1 -q src tests/unit tests/fuzz tools/storectl.c tools/bench
