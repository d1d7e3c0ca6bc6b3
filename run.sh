#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: the Collatz (Project Euler 14)
# comparison, sequential vs the thread backend vs the process backend.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh
ensure_packages $CFX_BUILD_PACKAGES
configure_build build -Dbenchmarks=disabled
ninja -C build >/dev/null
exec ./build/examples/cfx-collatz "$@"
