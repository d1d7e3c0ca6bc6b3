// See registry_header.hpp: a task registered on line 11 here and in the header.
#include "core/registry_header.hpp"

namespace registry_test {
int from_cpp(int x) {
  return x + 2;
}
int one(int x) {
  return x;
}
int two(int x) {
  return x * 2;
}
}  // namespace registry_test

// Line 11 registers from_cpp, as line 11 of the header registers from_header.
CFX_TASK_AS(&registry_test::from_cpp, "registry_test::from_cpp");
// Two registrations on one line.
// clang-format off
CFX_TASK_AS(&registry_test::one, "registry_test::one"); CFX_TASK_AS(&registry_test::two, "registry_test::two");
// clang-format on
