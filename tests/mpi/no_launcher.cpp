// A program started without mpiexec: MpiPoolExecutor must throw a cfx::Error that says how
// to launch it (`mpiexec -n N+1`), at once, never hang; make_executor the same. Built
// without MPI, both say that instead. Exit status 0 when all holds.
#include <cstdio>
#include <string>

#include <cfx/cfx.hpp>

namespace {

int failures = 0;

template <class Make>
void expect_error(const char* what, Make make, const std::string& needle) {
  try {
    make();
    std::printf("FAIL %s: no exception\n", what);
    ++failures;
  } catch (const cfx::Error& e) {
    bool ok = std::string(e.what()).find(needle) != std::string::npos;
    std::printf("%s %s: %s\n", ok ? "ok" : "FAIL", what, e.what());
    failures += !ok;
  }
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  const bool built = argc < 2 || std::string(argv[1]) != "--without-mpi";
  const std::string needle = built ? "mpiexec -n N+1" : "built without MPI";
  expect_error(
      "MpiPoolExecutor", [] { cfx::MpiPoolExecutor ex; }, needle);
  expect_error(
      "make_executor",
      [] {
        cfx::make_executor({{"backend", "mpi"}});
      },
      needle);
  cfx::finalize();  // nothing to release: must not fail
  return failures == 0 ? 0 : 1;
}
