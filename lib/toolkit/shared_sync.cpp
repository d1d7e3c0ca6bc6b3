#include "cfx/detail/shared_sync.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "cfx/errors.hpp"

// ThreadSanitizer's runtime (GCC 12, LLVM 14) does not intercept pthread_mutex_clocklock, so
// it would not see those acquisitions and would report races on everything they guard.
// Under TSan, timed locks go through the intercepted pthread_mutex_timedlock instead.
// Its pthread_mutex_timedlock interceptor, unlike pthread_mutex_lock's, does not count an
// EOWNERDEAD return as an acquisition either, so that call is annotated by hand.
#if defined(__SANITIZE_THREAD__)
#define CFX_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CFX_TSAN 1
#endif
#endif
#ifdef CFX_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace cfx::detail {
namespace {

thread_local std::int32_t cached_tid = 0;

// After fork() the child's only thread has a new id; its copy of the cache must not survive.
[[maybe_unused]] const int reset_tid_after_fork =
    pthread_atfork(nullptr, nullptr, [] { cached_tid = 0; });

[[noreturn]] void fail(const std::string& what, int error) {
  throw Error("cfx: shared mutex: " + what + ": " + std::strerror(error));
}

bool passed(const SyncDeadline& deadline) {
  return deadline && *deadline <= std::chrono::steady_clock::now();
}

timespec to_timespec(std::chrono::nanoseconds since_epoch) {
  if (since_epoch < since_epoch.zero()) since_epoch = since_epoch.zero();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  return timespec{static_cast<time_t>(secs.count()),
                  static_cast<long>((since_epoch - secs).count())};
}

timespec monotonic_timespec(std::chrono::steady_clock::time_point deadline) {
  // libstdc++'s steady_clock is CLOCK_MONOTONIC, the futex's and clocklock's clock.
  return to_timespec(deadline.time_since_epoch());
}

int timed_lock(pthread_mutex_t* m, std::chrono::steady_clock::time_point deadline) {
#ifdef CFX_TSAN
  // CLOCK_REALTIME slices: a jump of the wall clock only moves a slice end; the loop keeps
  // to the monotonic deadline.
  for (;;) {
    auto left = deadline - std::chrono::steady_clock::now();
    if (left < left.zero()) left = left.zero();
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    auto when = std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) +
                std::chrono::duration_cast<std::chrono::nanoseconds>(left);
    timespec ts = to_timespec(when);
    int rc = ::pthread_mutex_timedlock(m, &ts);
    if (rc == EOWNERDEAD) {  // the acquisition the interceptor did not record
      __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
      __tsan_mutex_post_lock(m, __tsan_mutex_try_lock, 0);
    }
    if (rc != ETIMEDOUT || std::chrono::steady_clock::now() >= deadline) return rc;
  }
#else
  timespec ts = monotonic_timespec(deadline);
  return ::pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
}

}  // namespace

std::int32_t current_tid() noexcept {
  if (cached_tid == 0) cached_tid = static_cast<std::int32_t>(::gettid());
  return cached_tid;
}

void throw_bad_shared_offset(std::size_t offset, std::size_t size, std::size_t block_size) {
  throw Error("cfx: a shared object of " + std::to_string(size) + " bytes at offset " +
              std::to_string(offset) + " does not fit a shared block of " +
              std::to_string(block_size) + " bytes (a handle that does not match its memory)");
}

void SharedMutex::init(bool recursive) {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  // Recursion is counted here (depth_), so the native mutex never is: ERRORCHECK makes it
  // refuse a second lock by its holder instead of deadlocking.
  ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  int rc = ::pthread_mutex_init(&native_, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (rc != 0) fail("pthread_mutex_init", rc);
  owner_.store(0, std::memory_order_relaxed);
  depth_ = 0;
  recursive_ = recursive ? 1 : 0;
  recovered_ = 0;
}

bool SharedMutex::held_by_me() const noexcept {
  return owner_.load(std::memory_order_relaxed) == current_tid();
}

void SharedMutex::after_acquire(int rc) {
  recovered_ = 0;
  if (rc == EOWNERDEAD) {
    // The holder died holding it: the kernel handed it to us. Mark it usable again; the
    // state it guards is the caller's to judge (recovered()).
    ::pthread_mutex_consistent(&native_);
    recovered_ = 1;
  }
  depth_ = 1;
  owner_.store(current_tid(), std::memory_order_relaxed);
}

void SharedMutex::lock() {
  if (held_by_me()) {
    if (!recursive_) throw Error("cfx: lock already held by this thread (it is not recursive)");
    ++depth_;
    return;
  }
  int rc = ::pthread_mutex_lock(&native_);
  if (rc != 0 && rc != EOWNERDEAD) fail("lock", rc);
  after_acquire(rc);
}

bool SharedMutex::try_lock() {
  if (held_by_me()) {
    if (!recursive_) return false;
    ++depth_;
    return true;
  }
  int rc = ::pthread_mutex_trylock(&native_);
  if (rc == EBUSY) return false;
  if (rc != 0 && rc != EOWNERDEAD) fail("try_lock", rc);
  after_acquire(rc);
  return true;
}

bool SharedMutex::lock_until(const SyncDeadline& deadline) {
  if (!deadline) {
    lock();
    return true;
  }
  if (passed(deadline)) return try_lock();  // Python: a timeout <= 0 tries once
  if (held_by_me()) {
    if (!recursive_) throw Error("cfx: lock already held by this thread (it is not recursive)");
    ++depth_;
    return true;
  }
  int rc = timed_lock(&native_, *deadline);
  if (rc == ETIMEDOUT) return false;
  if (rc != 0 && rc != EOWNERDEAD) fail("timed lock", rc);
  after_acquire(rc);
  return true;
}

void SharedMutex::unlock() {
  if (!held_by_me()) throw Error("cfx: unlock of a lock this thread does not hold");
  if (--depth_ > 0) return;
  release_all();
}

std::uint32_t SharedMutex::release_all() noexcept {
  std::uint32_t depth = depth_;
  depth_ = 0;
  recovered_ = 0;
  owner_.store(0, std::memory_order_relaxed);
  ::pthread_mutex_unlock(&native_);
  return depth;
}

void SharedMutex::reacquire(std::uint32_t depth) {
  int rc = ::pthread_mutex_lock(&native_);
  if (rc != 0 && rc != EOWNERDEAD) fail("lock after a wait", rc);
  after_acquire(rc);
  depth_ = depth;
}

bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                const SyncDeadline& deadline) noexcept {
  if (passed(deadline)) return false;
  timespec ts{};
  if (deadline) ts = monotonic_timespec(*deadline);
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (plain FUTEX_WAIT a
  // relative one, which a retry after EINTR would have to recompute).
  long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET,
                      expected, deadline ? &ts : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
  return !(rc == -1 && errno == ETIMEDOUT);
}

void futex_wake(std::atomic<std::uint32_t>& word, int how_many) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, how_many, nullptr,
            nullptr, 0);
}

bool SharedCondition::wait(SharedMutex& m, const SyncDeadline& deadline) {
  if (!m.held_by_me()) throw Error("cfx: wait on a condition whose lock this thread does not hold");
  if (passed(deadline)) return false;
  // Read the counter while still holding the mutex: a notify that follows our unlock
  // changes it, and the futex then refuses to sleep on the stale value. Nothing is lost.
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  std::uint32_t seen = seq_.load(std::memory_order_seq_cst);
  std::uint32_t depth = m.release_all();
  bool in_time = futex_wait(seq_, seen, deadline);
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  m.reacquire(depth);
  // A notify may land just as the deadline passes: count it as a wake, not a timeout.
  return in_time || seq_.load(std::memory_order_relaxed) != seen;
}

void SharedCondition::notify_one() noexcept {
  seq_.fetch_add(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) != 0) futex_wake(seq_, 1);
}

void SharedCondition::notify_all() noexcept {
  seq_.fetch_add(1, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) != 0) futex_wake(seq_, INT_MAX);
}

}  // namespace cfx::detail
