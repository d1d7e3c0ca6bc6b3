// A user's program that links the MPI backend (cfx-mpi) and reaches it only through the
// config, as docs/mpi.md says a program may: started without mpiexec it must get the
// backend's own error (naming `mpiexec -n N+1`, or saying cfx was built without MPI), not the
// ConfigError that says to link cfx-mpi, which would mean the library was dropped at link.
#include <cstdio>
#include <string>

#include <cfx/cfx.hpp>

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  try {
    cfx::make_executor({{"backend", "mpi"}});
  } catch (const cfx::Error& e) {
    const std::string what = e.what();
    const bool linked = what.find("-lcfx-mpi") == std::string::npos &&
                        (what.find("mpiexec -n N+1") != std::string::npos ||
                         what.find("built without MPI") != std::string::npos);
    std::printf("mpi consumer: %s (%s)\n", linked ? "cfx-mpi linked" : "FAIL", what.c_str());
    return linked ? 0 : 1;
  }
  std::printf("mpi consumer: FAIL, an MPI executor without mpiexec\n");
  return 1;
}
