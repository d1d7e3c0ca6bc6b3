// Plugs the MPI backend into libcfx (launch.hpp) when a program links cfx-mpi: libcfx does
// not link MPI, so this object, run at static initialisation, is the only link between them.
// The meson dependency cfx-mpi links this library whole, so that the linker keeps this
// object even though nothing names it.
#include "backends/mpi/launch.hpp"
#include "backends/mpi/world.hpp"

namespace cfx::detail {
namespace {

std::unique_ptr<Executor> make_mpi_pool(const MpiPoolOptions& options) {
  return std::make_unique<MpiPoolExecutor>(options);
}

[[maybe_unused]] const bool registered = [] {
  mpi_hooks() = MpiHooks{&make_mpi_pool, &mpi::init_if_launched};
  return true;
}();

}  // namespace
}  // namespace cfx::detail
