// A program linked with cfx but not with cfx-mpi: "backend": "mpi" must throw ConfigError
// saying how to link the backend (or, built without MPI, that cfx was), and the binary must
// not load libmpi (checked by the test through /proc/self/maps). Exit status 0 when all holds.
#include <cstdio>
#include <fstream>
#include <string>

#include <cfx/cfx.hpp>

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  const bool built = argc < 2 || std::string(argv[1]) != "--without-mpi";
  const std::string needle = built ? "-lcfx-mpi" : "built without MPI";
  int failures = 0;
  try {
    cfx::make_executor({{"backend", "mpi"}});
    std::printf("FAIL make_executor: no exception\n");
    ++failures;
  } catch (const cfx::ConfigError& e) {
    bool ok = std::string(e.what()).find(needle) != std::string::npos;
    std::printf("%s make_executor: %s\n", ok ? "ok" : "FAIL", e.what());
    failures += !ok;
  }
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find("libmpi") != std::string::npos) {
      std::printf("FAIL libmpi is loaded: %s\n", line.c_str());
      ++failures;
      break;
    }
  return failures == 0 ? 0 : 1;
}
