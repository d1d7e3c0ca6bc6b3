// Future state machine: transitions, futex-based waiting, waiter and callback lists.
#include "cfx/detail/shared_state.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <ctime>
#include <thread>

#include "cfx/detail/resumption.hpp"
#include "cfx/errors.hpp"
#include "demangle.hpp"

namespace cfx::detail {
namespace {

// Sleeps while *word == expected, at most until `deadline` (nullptr: forever).
void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                const std::chrono::steady_clock::time_point* deadline) noexcept {
  auto* addr = reinterpret_cast<const std::uint32_t*>(&word);
  if (!deadline) {
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
    return;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, which steady_clock is.
  auto since_epoch = deadline->time_since_epoch();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(secs.count());
  ts.tv_nsec = static_cast<long>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - secs).count());
  syscall(SYS_futex, addr, FUTEX_WAIT_BITSET_PRIVATE, expected, &ts, nullptr,
          FUTEX_BITSET_MATCH_ANY);
}

void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

/// Where this thread's publish() hands user code instead of running it (DivertUserCode).
thread_local UserCodeSink* user_code_sink = nullptr;

const char* status_name(Status s) {
  switch (s) {
    case Status::pending:
      return "pending";
    case Status::running:
    case Status::completing:
      return "running";
    case Status::finished:
      return "finished";
    case Status::cancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace

void StateBase::lock() const noexcept {
  // Held only to push, unlink or swap list heads and to run waiters' short on_done.
  while (locked_.exchange(true, std::memory_order_acquire)) {
    while (locked_.load(std::memory_order_relaxed)) std::this_thread::yield();
  }
}

bool StateBase::claim() noexcept {
  auto w = word_.load(std::memory_order_relaxed);
  for (;;) {
    auto s = static_cast<Status>(w & kStatusMask);
    if (s != Status::pending && s != Status::running) return false;
    auto next = (w & ~(kStatusMask | kWasRunning)) |
                static_cast<std::uint32_t>(Status::completing) |
                (s == Status::running ? kWasRunning : 0);
    if (word_.compare_exchange_weak(w, next, std::memory_order_acquire)) return true;
  }
}

void StateBase::publish(Status final_status) noexcept {
  lock();
  auto old = word_.exchange(static_cast<std::uint32_t>(final_status), std::memory_order_acq_rel);
  WaiterNode* later = nullptr;  // after_unlock waiters, in registration order
  for (auto* w = waiters_; w;) {
    auto* next = w->next;  // on_done may let the waiter's owner free w
    if (w->after_unlock) {
      w->next = later;
      later = w;
    } else {
      w->on_done(*this);
    }
    w = next;
  }
  waiters_ = nullptr;
  CallbackNode* cbs = std::exchange(callbacks_, nullptr);
  unlock();
  if (old & kSleepers) futex_wake_all(word_);
  // A resumed coroutine or a callback may drop the last Future; keep the state alive.
  add_ref();
  // The list was built by pushing at the head: reverse it to run in registration order.
  CallbackNode* ordered = nullptr;
  while (cbs) {
    auto* next = cbs->next;
    cbs->next = ordered;
    ordered = cbs;
    cbs = next;
  }
  // After-unlock waiters run here even so: under DivertUserCode this thread counts as a
  // delivery thread, so they hand their coroutines on rather than resume them here.
  while (later) {
    auto* next = later->next;  // on_done may free the node (a coroutine frame)
    later->on_done(*this);
    later = next;
  }
  if (ordered && user_code_sink) return user_code_sink->take(*this, ordered);
  run_user_code(ordered);
}

void StateBase::run_user_code(CallbackNode* callbacks) noexcept {
  while (callbacks) {
    auto* next = callbacks->next;
    run_callback(callbacks, *this);
    callbacks = next;
  }
  release();
}

DivertUserCode::DivertUserCode(UserCodeSink& sink) noexcept
    : previous_(std::exchange(user_code_sink, &sink)), delivering_(set_delivery_thread(true)) {}

DivertUserCode::~DivertUserCode() {
  user_code_sink = previous_;
  set_delivery_thread(delivering_);
}

bool StateBase::cancel() {
  bool withdrawn = false;
  auto w = word_.load(std::memory_order_relaxed);
  for (;;) {
    auto s = static_cast<Status>(w & kStatusMask);
    if (s == Status::cancelled) return true;
    if (s == Status::completing && !running_seen(w)) {
      // A concurrent cancel (or set_result) has claimed a pending state: its outcome
      // decides ours, and it is published within a few instructions.
      w = await_final();
      continue;
    }
    if (s != Status::pending) return false;                     // running, completing or finished
    if (!withdrawn && !(withdrawn = withdraw())) return false;  // a worker started it
    auto next = (w & ~kStatusMask) | static_cast<std::uint32_t>(Status::completing);
    if (word_.compare_exchange_weak(w, next, std::memory_order_acquire)) break;
  }
  publish(Status::cancelled);
  return true;
}

bool StateBase::interrupt() {
  if (cancel()) return true;
  if (done()) return false;
  return interrupt_running();
}

bool StateBase::set_running_or_notify_cancel() {
  auto w = word_.load(std::memory_order_relaxed);
  for (;;) {
    auto s = static_cast<Status>(w & kStatusMask);
    if (s == Status::cancelled) return false;
    if (s == Status::completing && !running_seen(w)) {
      w = await_final();  // a cancel racing us: let it finish, then look again
      continue;
    }
    if (s != Status::pending) throw_invalid_state("set_running_or_notify_cancel");
    auto next = (w & ~kStatusMask) | static_cast<std::uint32_t>(Status::running);
    if (word_.compare_exchange_weak(w, next, std::memory_order_acq_rel)) return true;
  }
}

std::uint32_t StateBase::await_final() const noexcept {
  for (;;) {
    auto w = word_.load(std::memory_order_acquire);
    if (static_cast<Status>(w & kStatusMask) != Status::completing) return w;
    std::this_thread::yield();
  }
}

bool StateBase::try_set_exception(std::exception_ptr e) {
  if (!claim()) return false;
  publish_exception(std::move(e));
  return true;
}

namespace {
using SteadyClock = std::chrono::steady_clock;

/// How long a wait watches a future on the core before it sleeps. A pool's short calls answer
/// in 10-50 µs here, and waking a thread from a futex costs this VM as much again; the
/// wait yields the core on every look, to the thread that will answer
/// (docs/performance.md, "Waiting for a result").
constexpr auto kWatch = std::chrono::microseconds(100);

/// How long this thread's next wait watches: kWatch after a wait that so long a watch would
/// have seen end, half as long as before after one that it would not have. A thread taking
/// the results of long tasks soon stops spending the core on them.
thread_local SteadyClock::duration watch_budget = kWatch;

void learn_from_wait(SteadyClock::time_point start) noexcept {
  watch_budget =
      SteadyClock::now() - start <= kWatch ? SteadyClock::duration(kWatch) : watch_budget / 2;
}
}  // namespace

bool StateBase::watch(SteadyClock::time_point start,
                      SteadyClock::time_point deadline) const noexcept {
  if (watch_budget < std::chrono::microseconds(1)) return done();
  const auto until = std::min(deadline, start + watch_budget);
  const std::shared_ptr<WaitHelper> helper = this->helper();
  if (helper) helper->begin();
  bool seen = false;
  do {
    seen = done();
    if (seen) break;
    if (!helper || !helper->help()) std::this_thread::yield();
  } while (SteadyClock::now() < until);
  if (helper) helper->end();
  return seen || done();
}

void StateBase::wait() const noexcept {
  wait_until(SteadyClock::time_point::max());
}

bool StateBase::wait_until(SteadyClock::time_point deadline) const noexcept {
  if (done()) return true;
  const auto start = SteadyClock::now();
  if (watch(start, deadline)) {
    watch_budget = kWatch;
    return true;
  }
  for (;;) {
    auto w = word_.load(std::memory_order_acquire);
    auto s = static_cast<Status>(w & kStatusMask);
    if (s == Status::finished || s == Status::cancelled) break;
    if (SteadyClock::now() >= deadline) break;
    if (!(w & kSleepers) &&
        !word_.compare_exchange_weak(w, w | kSleepers, std::memory_order_acquire))
      continue;
    futex_wait(word_, w | kSleepers,
               deadline == SteadyClock::time_point::max() ? nullptr : &deadline);
  }
  learn_from_wait(start);
  return done();
}

void StateBase::rethrow_if_failed() const {
  if (status() == Status::cancelled) throw CancelledError();
  if (error_) std::rethrow_exception(error_);
}

std::exception_ptr StateBase::exception_when_done() const {
  if (status() == Status::cancelled) throw CancelledError();
  return error_;
}

void StateBase::add_callback(CallbackNode* cb) {
  lock();
  if (!done()) {
    cb->next = callbacks_;
    callbacks_ = cb;
    unlock();
    return;
  }
  unlock();
  run_callback(cb, *this);
}

bool StateBase::add_waiter(WaiterNode* w) noexcept {
  lock();
  bool pending = !done();
  if (pending) {
    w->next = waiters_;
    waiters_ = w;
  }
  unlock();
  return pending;
}

bool StateBase::remove_waiter(WaiterNode* w) noexcept {
  bool found = false;
  lock();
  for (WaiterNode** p = &waiters_; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      found = true;
      break;
    }
  }
  unlock();
  return found;
}

void StateBase::run_callback(CallbackNode* cb, StateBase& state) noexcept {
  try {
    cb->run(state);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cfx: exception calling callback for future %p: %s: %s\n",
                 static_cast<void*>(&state), demangled_type_name(e).c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "cfx: exception calling callback for future %p: unknown exception\n",
                 static_cast<void*>(&state));
  }
  delete cb;
}

void StateBase::throw_invalid_state(const char* what) const {
  throw InvalidStateError(std::string(what) + ": future is already " + status_name(status()));
}

}  // namespace cfx::detail
