// Stands in for the MPI backend (library cfx-mpi) when cfx is built without MPI (meson
// feature `mpi` not found or disabled): the same public symbols, each saying so. It
// registers no hooks, so "backend": "mpi" says so too (backends/mpi/config.cpp).
#include "cfx/errors.hpp"
#include "cfx/mpi_pool.hpp"

namespace cfx {
namespace detail {

class MpiPoolCore {};

}  // namespace detail

MpiPoolExecutor::MpiPoolExecutor(MpiPoolOptions) : Executor(true) {
  throw Error(
      "MpiPoolExecutor: cfx was built without MPI (install libopenmpi-dev and openmpi-bin, "
      "then reconfigure cfx with -Dmpi=enabled)");
}
MpiPoolExecutor::~MpiPoolExecutor() = default;
void MpiPoolExecutor::shutdown(bool, bool) {}
std::size_t MpiPoolExecutor::max_workers() const {
  return 0;
}
void MpiPoolExecutor::enqueue(detail::LocalTask*) {}
void MpiPoolExecutor::enqueue_remote(detail::RemoteTask*) {}

void finalize() {}

}  // namespace cfx
