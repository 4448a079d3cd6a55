#!/usr/bin/env bash
# tools/fuzz.sh [SECONDS] - fuzz the OCF parser (tests/fuzz/fuzz_ocf.c) with libFuzzer.
#
# Sets up build-fuzz/ with clang if needed, builds fuzz_ocf, runs it for SECONDS
# (default 60) over a copy of tests/fuzz/corpus (the committed corpus is not
# changed), with AddressSanitizer, UndefinedBehaviorSanitizer, LeakSanitizer and
# allocation limits (-malloc_limit_mb=256: no hostile length may make it allocate
# more). A crash, leak, sanitizer report, timeout or limit breach fails the run;
# the input that caused it is kept in build-fuzz/artifacts/.
# Last line: "fuzz: ok (<execs> runs)" or "fuzz: FAILED".
# Needs clang and libclang-rt-14-dev (tools/install-deps.sh --test).
set -uo pipefail

secs="${1:-60}"
case "$secs" in
'' | *[!0-9]*)
    echo "usage: tools/fuzz.sh [SECONDS]" >&2
    exit 2
    ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
bdir="$root/build-fuzz"

fail() {
    echo "$*" >&2
    echo "fuzz: FAILED"
    exit 1
}

command -v clang >/dev/null 2>&1 || fail "fuzz: clang is not installed"
# A build-fuzz configured with another compiler (or without -Dfuzz=true) is redone.
if [ -f "$bdir/build.ninja" ]; then
    if ! grep -q '"clang"' "$bdir/meson-info/intro-compilers.json" 2>/dev/null ||
        ! grep -q '"name": "fuzz", "value": true' "$bdir/meson-info/intro-buildoptions.json" 2>/dev/null; then
        rm -rf "$bdir"
    fi
fi
if [ ! -f "$bdir/build.ninja" ]; then
    CC=clang meson setup "$bdir" "$root" -Dfuzz=true -Db_lundef=false >"$root/build-fuzz.log" 2>&1 ||
        { cat "$root/build-fuzz.log" >&2; fail "fuzz: meson setup failed"; }
    mv "$root/build-fuzz.log" "$bdir/setup.log"
fi
ninja -C "$bdir" tests/fuzz/fuzz_ocf >"$bdir/ninja.log" 2>&1 ||
    { tail -40 "$bdir/ninja.log" >&2; fail "fuzz: build failed"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$bdir/artifacts"
cp "$root"/tests/fuzz/corpus/* "$work/corpus/"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
"$bdir/tests/fuzz/fuzz_ocf" "$work/corpus" \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=30 \
    -max_len=8192 -dict="$root/tests/fuzz/fuzz_ocf.dict" -print_final_stats=1 -artifact_prefix="$bdir/artifacts/" \
    >"$work/log" 2>&1
rc=$?
execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$work/log" | tail -1)"
cp "$work/log" "$bdir/last-run.log"
if [ "$rc" -ne 0 ] || [ -z "$execs" ]; then
    grep -v '^#[0-9]' "$work/log" | tail -60 >&2
    fail "fuzz: fuzz_ocf exited with $rc (log: $bdir/last-run.log, inputs: $bdir/artifacts/)"
fi
echo "fuzz: ok ($execs runs)"
