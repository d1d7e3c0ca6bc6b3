#!/usr/bin/env bash
# Builds a tiny consumer three ways, as a user would, and runs each, beside one that links the
# opt-in MPI backend (cfx-mpi; run without mpiexec, it checks that the backend was linked):
#   1. against the installed tree with pkg-config,
#   2. against the installed tree with CMake find_package(cfx),
#   3. with cfx as a meson subproject.
# Usage: check.sh SOURCE_ROOT BUILD_ROOT
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d /tmp/cfx-packaging-XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

meson install -C "$build" --destdir "$work/dest" --quiet >/dev/null
# DESTDIR keeps the configured prefix below it; find where it put the library.
root=$(dirname "$(dirname "$(find "$work/dest" -name cfx.pc -print -quit)")")
libdir=$(dirname "$(find "$work/dest" -name 'libcfx.so' -print -quit)")
# build_option NAME: the value of a meson option of the build under test (a list, as newer
# meson gives b_sanitize, comes back comma-joined).
build_option() {
  meson introspect "$build" --buildoptions | /usr/bin/python3 -c '
import json, sys
v = [o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]][0]
print(",".join(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v)' "$1"
}
prefix=$work/dest$(build_option prefix)
# A sanitized libcfx needs consumers built with the same -fsanitize: an executable that links
# an ASan library without the ASan runtime aborts at start ("ASan runtime does not come first").
sanitize=$(build_option b_sanitize)
san_flags=""
[ "$sanitize" = none ] || [ -z "$sanitize" ] || san_flags="-fsanitize=$sanitize"
export LD_LIBRARY_PATH=$libdir
status=0

echo "== pkg-config"
export PKG_CONFIG_PATH=$root/pkgconfig
# The installed cfx.pc names the configured prefix; point it at the DESTDIR copy.
g++ -std=c++20 $san_flags "$src/tests/packaging/src/consumer.cpp" -o "$work/pc-consumer" \
  $(pkg-config --define-variable=prefix="$prefix" --cflags --libs cfx)
"$work/pc-consumer" || status=1
g++ -std=c++20 $san_flags "$src/tests/packaging/src/mpi_consumer.cpp" -o "$work/pc-mpi-consumer" \
  $(pkg-config --define-variable=prefix="$prefix" --cflags --libs cfx-mpi)
"$work/pc-mpi-consumer" || status=1

echo "== cmake find_package"
# Ninja, not CMake's default Makefile generator: ninja-build is a dependency already, and
# make is not installed on a machine that took g++ and cmake without recommended packages.
# CMake passes CMAKE_CXX_FLAGS to the link line too, so -fsanitize reaches both.
cmake -G Ninja -S "$src/tests/packaging/cmake" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$san_flags" >/dev/null
cmake --build "$work/cmake" >/dev/null
"$work/cmake/consumer" || status=1
"$work/cmake/mpi_consumer" || status=1

echo "== meson subproject"
cp -r "$src/tests/packaging/meson" "$work/meson"
mkdir -p "$work/meson/subprojects"
ln -s "$src" "$work/meson/subprojects/cfx"
sed -i "s|'../src/|'$src/tests/packaging/src/|" "$work/meson/meson.build"
# b_* options belong to the top project and apply to its subprojects: cfx is compiled from
# source here with the same sanitizers (and b_lundef, which a sanitized shared libcfx needs).
meson setup "$work/meson/build" "$work/meson" -Db_sanitize="$sanitize" \
  -Db_lundef="$(build_option b_lundef)" >/dev/null
ninja -C "$work/meson/build" >/dev/null
"$work/meson/build/consumer" || status=1
"$work/meson/build/mpi_consumer" || status=1

[ $status -eq 0 ] && echo "packaging: the consumers built and ran, three ways"
exit $status
