// Throw-site stack traces for worker processes, by interposing __cxa_throw: the frames are
// captured (cheaply, as addresses) when an exception is thrown and formatted only when it is
// sent to the parent. Sanitizers intercept __cxa_throw themselves, so under them this is off.
#include "stack_trace.hpp"

#include <atomic>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CFX_THROW_TRACES 0
#else
#define CFX_THROW_TRACES 1
#endif

#if CFX_THROW_TRACES
#include <cxxabi.h>
#include <dlfcn.h>

#include <boost/stacktrace.hpp>
#endif

namespace cfx::detail {
namespace {
std::atomic<bool> capturing{false};
}

#if CFX_THROW_TRACES
namespace {
thread_local boost::stacktrace::stacktrace last_trace{0, 0};
}

void capture_throw_stack_traces() {
  capturing.store(true, std::memory_order_relaxed);
}

std::string last_throw_stack_trace() {
  if (!capturing.load(std::memory_order_relaxed) || last_trace.empty()) return {};
  return boost::stacktrace::to_string(last_trace);
}

void record_throw() {
  if (capturing.load(std::memory_order_relaxed)) last_trace = boost::stacktrace::stacktrace(2, 32);
}
#else
void capture_throw_stack_traces() {
  capturing.store(true, std::memory_order_relaxed);
}
std::string last_throw_stack_trace() {
  return {};
}
#endif

}  // namespace cfx::detail

#if CFX_THROW_TRACES
// Same declaration as <cxxabi.h>; this definition takes precedence over libstdc++'s.
namespace __cxxabiv1 {
extern "C" void __cxa_throw(void* object, std::type_info* type, void (*destroy)(void*)) {
  using Fn = void (*)(void*, std::type_info*, void (*)(void*));
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "__cxa_throw"));
  cfx::detail::record_throw();
  real(object, type, destroy);
  __builtin_unreachable();
}
}  // namespace __cxxabiv1
#endif
