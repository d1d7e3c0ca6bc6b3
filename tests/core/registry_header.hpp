// A task registered in a header, on line 13; registry_header.cpp registers another on the
// same line number after including this file. With registrars named after __LINE__ the two
// collided; they must not. (clang-format is off so that the line numbers stay put.)
#pragma once
// clang-format off

#include <cfx/task.hpp>

namespace registry_test {
inline int from_header(int x) { return x + 1; }
}  // namespace registry_test

CFX_TASK_AS(&registry_test::from_header, "registry_test::from_header");  // line 13
// clang-format on
