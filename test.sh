#!/usr/bin/env bash
# Installs what is missing, builds, runs every test, and ends with "N passed, N failed".
# CFX_SANITIZE=1 also runs the suite under AddressSanitizer + UBSan (build-asan/).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh
ensure_packages $CFX_BUILD_PACKAGES

run_suite() {
  local dir=$1
  shift
  configure_build "$dir" "$@"
  ninja -C "$dir" >/dev/null
  meson test -C "$dir" --print-errorlogs --num-processes 1 >"$dir/test-output.txt" 2>&1 || true
  grep -E '^ *[0-9]+/[0-9]+ |FAIL|ERROR' "$dir/test-output.txt" || true
  /usr/bin/python3 scripts/count_tests.py "$dir/meson-logs/testlog.json"
}

status=0
run_suite build -Dbenchmarks=disabled || status=1
if [ "${CFX_SANITIZE:-0}" = 1 ]; then
  echo "== AddressSanitizer + UBSan =="
  run_suite build-asan -Dbenchmarks=disabled -Dbuildtype=debug -Db_sanitize=address,undefined \
    -Db_lundef=false || status=1
fi
exit $status
