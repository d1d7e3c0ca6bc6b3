// The start methods a process-pool test may run under, for tests that run a case under both.
//
// A pool's fork start method forks its launcher thread while the test's thread and the pool's
// own threads run on (docs/process-backend.md: unsafe once the program runs threads). glibc's
// malloc is safe across such a fork (it takes its locks in fork handlers); the allocator of
// AddressSanitizer (GCC 12's libasan) is not: a worker forked while another thread was
// refilling a size class inherits that class's lock held, and hangs in its first allocation of
// that size. Under ASan the pool cases therefore run with spawn only. A cfx::Process forked
// from the test's only thread, or a plain fork() before any thread starts, is safe everywhere
// and keeps the fork start method covered under ASan too.
#pragma once

#include <vector>

#include <cfx/process_pool.hpp>

namespace cfx::test {

/// True when a pool's fork start method may hang a worker in a threaded parent (ASan).
constexpr bool pool_fork_unsafe() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

/// Both start methods, or spawn only where a forking pool may hang (pool_fork_unsafe()).
inline std::vector<StartMethod> pool_start_methods() {
  if (pool_fork_unsafe()) return {StartMethod::spawn};
  return {StartMethod::spawn, StartMethod::fork};
}

/// fork for a pool case that prefers it (fast worker starts), spawn where it may hang.
constexpr StartMethod pool_fork_or_spawn() {
  return pool_fork_unsafe() ? StartMethod::spawn : StartMethod::fork;
}

/// Both start methods, for cfx::Process children started from the test's only thread.
inline std::vector<StartMethod> process_start_methods() {
  return {StartMethod::spawn, StartMethod::fork};
}

/// A start method's name, as the config spells it, for test messages.
inline const char* name(StartMethod m) {
  switch (m) {
    case StartMethod::spawn:
      return "spawn";
    case StartMethod::fork:
      return "fork";
    case StartMethod::forkserver:
      return "forkserver";
  }
  return "?";
}

}  // namespace cfx::test
