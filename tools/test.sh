#!/usr/bin/env bash
# Install what the tests need (Debian 12 + pinned npm packages), build battlefs
# twice (normal, and ASan+UBSan), and run every test: cmocka unit tests in both
# builds, the libFuzzer target for a bounded time, and the pytest suite on real
# mounts (normal build, then the sanitizer build). Ends with one line
# "N passed, N failed". Idempotent; run as root (tests mount FUSE filesystems).
#   tools/test.sh                 everything
#   FUZZ_SECONDS=60 PYTEST_ARGS='-k roll' tools/test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
fuzz_seconds=${FUZZ_SECONDS:-60}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

bash tools/install-deps.sh --test || exit 1
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null || { echo "npm ci failed"; exit 1; }
fi
export CFLAGS="${CFLAGS:-}"
bash tools/build.sh build-test -Dfault_injection=true -Dwerror=true >"$results/build-test.log" 2>&1 ||
  { cat "$results/build-test.log"; echo "0 passed, 1 failed"; exit 1; }
bash tools/build.sh build-asan -Dfault_injection=true -Dwerror=true \
  -Db_sanitize=address,undefined -Db_lundef=false >"$results/build-asan.log" 2>&1 ||
  { cat "$results/build-asan.log"; echo "0 passed, 1 failed"; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

echo "== unit tests (build-test)"
meson test -C build-test --print-errorlogs --num-processes 2
echo "== unit tests (build-asan)"
meson test -C build-asan --print-errorlogs --num-processes 2

fuzz_rc=0
if [ "$fuzz_seconds" -gt 0 ]; then
  echo "== fuzzing the OCF parser for ${fuzz_seconds}s"
  bash tools/fuzz.sh "$fuzz_seconds" || fuzz_rc=1
fi

run_pytest() {
  local build=$1 xml=$2
  echo "== integration tests ($build)"
  BATTLEFS_BUILD="$root/$build" /usr/bin/python3 -m pytest tests/integration \
    -p no:cacheprovider -q --junitxml="$xml" ${PYTEST_ARGS:-}
}
run_pytest build-test "$results/pytest-test.xml"
if [ "${SKIP_ASAN_INTEGRATION:-0}" != 1 ]; then
  run_pytest build-asan "$results/pytest-asan.xml"
fi

/usr/bin/python3 - "$results" "$fuzz_rc" "$fuzz_seconds" "${SKIP_ASAN_INTEGRATION:-0}" <<'PY'
import glob, json, os, sys, xml.etree.ElementTree as ET
results, fuzz_rc, fuzz_seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
skip_asan = sys.argv[4] == "1"
passed = failed = skipped = 0
for build in ("build-test", "build-asan"):
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
for name in ["pytest-test.xml"] + ([] if skip_asan else ["pytest-asan.xml"]):
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
