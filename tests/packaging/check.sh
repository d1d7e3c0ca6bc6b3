#!/usr/bin/env bash
# Builds a tiny consumer three ways, as a user would, and runs each:
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
prefix=$work/dest$(meson introspect "$build" --buildoptions |
  /usr/bin/python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
export LD_LIBRARY_PATH=$libdir
status=0

echo "== pkg-config"
export PKG_CONFIG_PATH=$root/pkgconfig
# The installed cfx.pc names the configured prefix; point it at the DESTDIR copy.
g++ -std=c++20 "$src/tests/packaging/src/consumer.cpp" -o "$work/pc-consumer" \
  $(pkg-config --define-variable=prefix="$prefix" --cflags --libs cfx)
"$work/pc-consumer" || status=1

echo "== cmake find_package"
cmake -S "$src/tests/packaging/cmake" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake" >/dev/null
"$work/cmake/consumer" || status=1

echo "== meson subproject"
cp -r "$src/tests/packaging/meson" "$work/meson"
mkdir -p "$work/meson/subprojects"
ln -s "$src" "$work/meson/subprojects/cfx"
sed -i "s|'../src/consumer.cpp'|'$src/tests/packaging/src/consumer.cpp'|" "$work/meson/meson.build"
meson setup "$work/meson/build" "$work/meson" >/dev/null
ninja -C "$work/meson/build" >/dev/null
"$work/meson/build/consumer" || status=1

[ $status -eq 0 ] && echo "packaging: all three consumers built and ran"
exit $status
