// See registry_header.hpp: a task registered on line 13 here and in the header, and two
// registrations on one line. (clang-format is off so that the line numbers stay put.)
// clang-format off
#include "core/registry_header.hpp"

namespace registry_test {
int from_cpp(int x) { return x + 2; }
int one(int x) { return x; }
int two(int x) { return x * 2; }
}  // namespace registry_test


CFX_TASK_AS(&registry_test::from_cpp, "registry_test::from_cpp");  // line 13, as in the header
CFX_TASK_AS(&registry_test::one, "registry_test::one"); CFX_TASK_AS(&registry_test::two, "registry_test::two");
// clang-format on
