#!/usr/bin/env bash
# Install what the tests need (Debian 12 + pinned npm packages), build battlefs
# three times (normal, ASan+UBSan, ThreadSanitizer; every build with -Dtests=enabled,
# so a missing cmocka, clang-format or cppcheck fails the run instead of dropping
# tests), and run the tests: cmocka unit tests in every build (the style checks
# too in the first), the libFuzzer target for a bounded time, and the pytest
# suite on real mounts (normal build, then the sanitizer build, then the
# `concurrency` selection on the TSan build). Ends with one line
# "N passed, N failed". Idempotent; run as root (tests mount FUSE filesystems).
#   tools/test.sh                 everything
#   FUZZ_SECONDS=60 PYTEST_ARGS='-k roll' tools/test.sh
#   SKIP_ASAN_INTEGRATION=1       no pytest run on the ASan build
#   SKIP_TSAN=1                   no TSan build at all
#   SKIP_PACKAGE=1                no Debian package test (tests/integration/test_package.py)
#   PYTEST_WORKERS=N              pytest workers for the integration runs (2; 0: no xdist)
#   TSAN_OPTIONS=...              added to (and overriding) the options set below
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
fuzz_seconds=${FUZZ_SECONDS:-30}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

bash tools/install-deps.sh --test || exit 1
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null || { echo "npm ci failed"; exit 1; }
fi
export CFLAGS="${CFLAGS:-}"
skip_tsan=${SKIP_TSAN:-0}
bash tools/build.sh build-test -Dtests=enabled -Dfault_injection=true -Dwerror=true \
  >"$results/build-test.log" 2>&1 ||
  { cat "$results/build-test.log"; echo "0 passed, 1 failed"; exit 1; }
bash tools/build.sh build-asan -Dtests=enabled -Dfault_injection=true -Dwerror=true \
  -Db_sanitize=address,undefined -Db_lundef=false >"$results/build-asan.log" 2>&1 ||
  { cat "$results/build-asan.log"; echo "0 passed, 1 failed"; exit 1; }
# ThreadSanitizer: gcc's runtime (libtsan2, a shared library) by default, clang's with
# CC=clang. clang links its runtime into executables only, so meson wants b_lundef off
# with it (a shared library would not link without it; none is built today). gcc: no need.
if [ "$skip_tsan" != 1 ]; then
  bash tools/build.sh build-tsan -Dtests=enabled -Dfault_injection=true -Dwerror=true \
    -Db_sanitize=thread -Db_lundef=false >"$results/build-tsan.log" 2>&1 ||
    { cat "$results/build-tsan.log"; echo "0 passed, 1 failed"; exit 1; }
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
# LeakSanitizer: one suppression, for libfuse's own directory handles (tools/lsan.supp).
export LSAN_OPTIONS="suppressions=$root/tools/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# TSan: report every race and go on (halt_on_error=0), exit 66 at the end if any was
# reported (a unit test then fails; a daemon's report fails its test through mountlib's
# FATAL_RE and its exit status); both stacks of a lock-order inversion; longer access
# history (fewer "failed to restore the stack"); suppressions only for races inside
# uninstrumented libraries (tools/tsan.supp says why for each).
export TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1:history_size=4:\
suppressions=$root/tools/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

echo "== unit tests (build-test)"
meson test -C build-test --print-errorlogs --num-processes 2
echo "== unit tests (build-asan)"
# The style checks read the sources, not a build: once (build-test) is enough.
meson test -C build-asan --print-errorlogs --num-processes 2 --suite unit
if [ "$skip_tsan" != 1 ]; then
  tsan_start=$SECONDS
  echo "== unit tests (build-tsan)"
  meson test -C build-tsan --print-errorlogs --num-processes 2 --suite unit
  tsan_seconds=$((SECONDS - tsan_start))
fi

fuzz_rc=0
if [ "$fuzz_seconds" -gt 0 ]; then
  echo "== fuzzing the OCF parser for ${fuzz_seconds}s"
  bash tools/fuzz.sh "$fuzz_seconds" || fuzz_rc=1
fi

# Two pytest workers (pytest-xdist), each taking whole test files (--dist loadfile:
# a file's fixtures and its s3rver stay in one worker): most tests wait on fsyncs,
# timeouts and other processes, so two at a time take about half the time on the
# two cores (14 min -> 8 min for the three runs). PYTEST_WORKERS=0: one process.
workers=${PYTEST_WORKERS:-2}
run_pytest() {
  local build=$1 xml=$2
  shift 2
  local par=()
  [ "$workers" -gt 0 ] && par=(-n "$workers" --dist loadfile)
  echo "== integration tests ($build${*:+ $*})"
  BATTLEFS_BUILD="$root/$build" /usr/bin/python3 -m pytest tests/integration \
    -p no:cacheprovider -q "${par[@]}" --junitxml="$xml" "$@" ${PYTEST_ARGS:-}
}
run_pytest build-test "$results/pytest-test.xml"
if [ "${SKIP_ASAN_INTEGRATION:-0}" != 1 ]; then
  # The package test builds its own binaries (dpkg-buildpackage): once is enough.
  run_pytest build-asan "$results/pytest-asan.xml" -m "not package and not bulk"
fi
if [ "$skip_tsan" != 1 ]; then
  # The tests with concurrent writers, readers or rolls (pytest.ini's `concurrency` marker).
  tsan_start=$SECONDS
  run_pytest build-tsan "$results/pytest-tsan.xml" -m concurrency
  tsan_seconds=$((tsan_seconds + SECONDS - tsan_start))
  echo "== ThreadSanitizer unit and integration tests: ${tsan_seconds}s"
fi

/usr/bin/python3 - "$results" "$fuzz_rc" "$fuzz_seconds" "${SKIP_ASAN_INTEGRATION:-0}" \
  "$skip_tsan" <<'PY'
import glob, json, os, sys, xml.etree.ElementTree as ET
results, fuzz_rc, fuzz_seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
skip_asan = sys.argv[4] == "1"
skip_tsan = sys.argv[5] == "1"
passed = failed = skipped = 0
for build in ("build-test", "build-asan") + (() if skip_tsan else ("build-tsan",)):
    try:
        lines = open(f"{build}/meson-logs/testlog.json").read().splitlines()
    except OSError:
        failed += 1
        continue
    for line in lines:
        r = json.loads(line).get("result")
        if r == "OK": passed += 1
        elif r in ("SKIP", "EXPECTEDFAIL"): skipped += 1
        else: failed += 1
xmls = (["pytest-test.xml"] + ([] if skip_asan else ["pytest-asan.xml"])
        + ([] if skip_tsan else ["pytest-tsan.xml"]))
for name in xmls:
    xml = os.path.join(results, name)
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"no pytest report {name}: {e}")  # pytest crashed or never ran
        failed += 1
        continue
    for suite in root.iter("testsuite"):
        t, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        failed += f + e; skipped += s; passed += t - f - e - s
if fuzz_seconds > 0:
    if fuzz_rc: failed += 1
    else: passed += 1
if passed == 0:
    failed += 1  # a run that ran nothing is a failure
line = f"{passed} passed, {failed} failed"
if skipped: line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed else 0)
PY
