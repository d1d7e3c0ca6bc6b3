// Throw-site stack traces and function_name with cfx linked as a shared library (libcfx.so):
// libbacktrace must then read two objects, this executable and libcfx.so, neither linked with
// -rdynamic. Prints the trace and exits 0 when every check holds.
#include <cstdio>
#include <stdexcept>
#include <string>

#include <cfx/cfx.hpp>

#include "lib/stack_trace.hpp"

namespace {

// Not inlined, so that it keeps a frame of its own in the trace.
constexpr int throw_line = __LINE__ + 2;
[[gnu::noinline]] int fail_deep(int x) {
  if (x > 0) throw std::length_error("too long");
  return x;
}
CFX_TASK(fail_deep);

int failures = 0;
void check(bool ok, const char* what, const std::string& got) {
  std::printf("%s: %s [%s]\n", ok ? "ok" : "FAIL", what, got.c_str());
  if (!ok) ++failures;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);

  std::string mine = cfx::detail::function_name(reinterpret_cast<const void*>(&fail_deep));
  check(mine == "(anonymous namespace)::fail_deep(int)", "names a function of the executable",
        mine);
  std::string lib = cfx::detail::function_name(reinterpret_cast<const void*>(&cfx::init));
  check(lib == "cfx::init(int, char**)", "names a function of libcfx.so", lib);

  if (!cfx::detail::throw_stack_traces_compiled()) {
    std::puts("throw-site stack traces are not compiled in; not checking them");
    return failures == 0 ? 0 : 1;
  }
  cfx::ProcessPoolExecutor pool({.max_workers = 1});
  std::string trace;
  try {
    (void)pool.submit(fail_deep, 1).result();
  } catch (const std::length_error& e) {
    try {
      std::rethrow_if_nested(e);
    } catch (const cfx::RemoteError& context) {
      trace = context.stack_trace();
    }
  }
  std::printf("remote stack trace:\n%s", trace.c_str());
  std::string first = trace.substr(0, trace.find('\n'));
  check(contains(first, "fail_deep(int)") &&
            contains(first, "shared_lib_trace.cpp:" + std::to_string(throw_line)),
        "the first frame is the throw site, with file:line", first);
  // The worker loop runs in libcfx.so, which has no debug info in a release build: its
  // frames must still have names, from the library's symbol table.
  check(contains(trace, "cfx::detail::"), "frames in libcfx.so are named", "");
  return failures == 0 ? 0 : 1;
}
