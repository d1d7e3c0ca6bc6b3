// doctest main for programs whose tests start process pools: workers re-run this binary,
// and cfx::init turns those runs into workers before doctest sees the command line.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cfx/cfx.hpp>

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  return doctest::Context(argc, argv).run();
}
