// Throw-site stack traces for worker processes, by interposing __cxa_throw: the frames are
// captured (cheaply, as return addresses into a fixed buffer) when an exception is thrown and
// symbolised only when it is sent to the parent.
//
// Symbolising goes through Boost.Stacktrace's libbacktrace backend (GCC's libbacktrace, linked
// statically): it reads the program's own ELF symbol table and DWARF, so function names need
// no -rdynamic and file:line appear wherever the code has debug info. The basic backend only
// had dladdr, which sees exported symbols alone.
//
// Sanitizers intercept __cxa_throw themselves, so under them, and when built with
// -Dthrow_traces=false (CFX_NO_THROW_TRACES), no interposer is compiled. function_name()
// is there in every build.

// One libbacktrace state per process instead of Boost's default of one per thread: a state
// holds the parsed symbol and line tables and is never freed, and building one can take
// half a second for a large program with debug info, so per-thread states would cost that
// again, and leak it, for every thread that names a function. One state is not safe for
// concurrent use, so every call into it below holds `symbolise_mutex` (lock_symbolising()).
#define BOOST_STACKTRACE_USE_BACKTRACE
#define BOOST_STACKTRACE_BACKTRACE_FORCE_STATIC
#include "stack_trace.hpp"

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <mutex>

#include <pthread.h>

#include <boost/stacktrace.hpp>

#if defined(CFX_NO_THROW_TRACES) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CFX_THROW_TRACES 0
#else
#define CFX_THROW_TRACES 1
#endif

#if CFX_THROW_TRACES
#include <cxxabi.h>
#include <dlfcn.h>
#endif

namespace cfx::detail {
namespace {
std::atomic<bool> capturing{false};
std::mutex symbolise_mutex;

// Also held across fork(): a worker forked (StartMethod::fork) while another thread was
// symbolising would otherwise inherit a locked mutex, and a half-built state, and hang on its
// first trace.
std::unique_lock<std::mutex> lock_symbolising() {
  static const int at_fork =
      ::pthread_atfork([] { symbolise_mutex.lock(); }, [] { symbolise_mutex.unlock(); },
                       [] { symbolise_mutex.unlock(); });
  (void)at_fork;
  return std::unique_lock(symbolise_mutex);
}
}  // namespace

void capture_throw_stack_traces() {
  capturing.store(true, std::memory_order_relaxed);
}

bool throw_stack_traces_compiled() noexcept {
  return CFX_THROW_TRACES != 0;
}

std::string function_name(const void* address) {
  if (address == nullptr) return {};
  auto lock = lock_symbolising();
  return boost::stacktrace::frame(address).name();  // demangled; empty if unknown
}

#if CFX_THROW_TRACES
namespace {
constexpr std::size_t max_frames = 32;
// The last throw's return addresses, innermost first, and how many. A fixed buffer: nothing
// is allocated while throwing, which matters when the exception is std::bad_alloc.
thread_local const void* last_frames[max_frames + 1];  // + safe_dump_to's terminating null
thread_local std::size_t last_depth = 0;

// Not inlined, so that the frames to skip are always this one and __cxa_throw.
[[gnu::noinline]] void record_throw() noexcept {
  if (!capturing.load(std::memory_order_relaxed)) return;
  std::size_t stored = boost::stacktrace::safe_dump_to(2, last_frames, sizeof last_frames);
  last_depth = stored > 0 ? stored - 1 : 0;  // without the terminating null frame
}
}  // namespace

std::string last_throw_stack_trace() {
  if (!capturing.load(std::memory_order_relaxed) || last_depth == 0) return {};
  std::string out;
  auto lock = lock_symbolising();
  for (std::size_t i = 0; i < last_depth; ++i) {
    // Each frame is a return address, the byte after a call. Boost looks up the address as
    // given, which can name the line after the call or, past a function's last instruction
    // (a call that never returns may be one), the next function. One byte back is the call.
    boost::stacktrace::frame frame(static_cast<const char*>(last_frames[i]) - 1);
    char index[24];
    std::snprintf(index, sizeof index, "%2zu# ", i);
    out += index;
    out += boost::stacktrace::to_string(frame);
    out += '\n';
  }
  return out;
}
#else
std::string last_throw_stack_trace() {
  return {};
}
#endif

}  // namespace cfx::detail

#if CFX_THROW_TRACES
// Same declaration as <cxxabi.h>; this definition takes precedence over libstdc++'s, which it
// calls after recording the stack. Documented for users in include/cfx/process_pool.hpp and
// docs/errors.md.
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
