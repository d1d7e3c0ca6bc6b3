# Sourced by run.sh, test.sh and bench/run.sh: installs what is missing, quietly.
# Boost comes only as the versioned 1.81 packages: an unversioned libboost-*-dev pulls 1.74,
# which conflicts with them (see docs/building.md).
# dpkg-dev gives meson dpkg-architecture, from which it takes Debian's libdir
# (lib/x86_64-linux-gnu). Without it (g++ installed without recommended packages) meson falls
# back to lib64, which Debian's CMake, pkg-config and ld.so do not search, so an installed cfx
# is not found.
# Open MPI (libopenmpi-dev, openmpi-bin) builds the MPI backend and runs its tests under
# mpiexec; python3-mpi4py is bench/mpi's peer (mpi4py.futures).

CFX_BUILD_PACKAGES="g++ pkgconf meson ninja-build cmake dpkg-dev libboost1.81-dev
  libboost-filesystem1.81-dev libboost-stacktrace1.81-dev doctest-dev nlohmann-json3-dev
  libcli11-dev libopenmpi-dev openmpi-bin"
CFX_BENCH_PACKAGES="libtbb-dev libthread-pool-dev python3 python3-joblib python3-pebble
  python3-mpi4py"

# ensure_packages PKG...: apt-get install the ones dpkg does not report as installed.
ensure_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# configure_build DIR [meson options...]: meson setup once; later calls only rebuild.
configure_build() {
  local dir=$1
  shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null
  fi
}
