// The shared state behind Future<T> and Promise<T>. Internal: use Future/Promise.
//
// Layout is kept small (a pending Future<int> costs about 48 bytes): one atomic status word
// that is also the futex word timed waits sleep on, a one-byte spin lock that guards two
// intrusive lists (waiters of wait()/as_completed(), done-callbacks), the exception, the
// value, and an intrusive reference count.
//
// Completion is two-phase so that a value can be moved in without holding the lock:
// claim() moves pending/running to `completing` (nobody else can finish it now), the value
// is written, publish() makes it visible, notifies waiters under the lock and runs the
// callbacks after releasing it, in registration order.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <utility>

namespace cfx::detail {

enum class Status : std::uint32_t {
  pending = 0,
  running = 1,
  completing = 2,
  finished = 3,
  cancelled = 4
};

class StateBase;

/// Installed by wait()/as_completed() and by awaiters (co_await, cfx::async_wait). publish()
/// takes the node off the list under the state's lock, so removal under the same lock is
/// race-free, and calls on_done once: under that lock, where on_done must be short and must
/// not touch the state; or, for a node with `after_unlock` set, once the lock is released and
/// before the done-callbacks, where on_done may run user code (resume a coroutine) that frees
/// the node and drops the state.
struct WaiterNode {
  WaiterNode* next = nullptr;
  bool after_unlock = false;
  virtual void on_done(StateBase& state) noexcept = 0;

 protected:
  ~WaiterNode() = default;
};

/// A backend's work that a thread waiting for one of its futures can do while it watches the
/// future on the core (StateBase::wait): taking in results that have come, in place of the
/// backend's own thread, which would then have to hand them over.
class WaitHelper {
 public:
  /// A thread starts watching.
  virtual void begin() noexcept = 0;
  /// One look: moves the backend on if it can from this thread; true if it did something.
  virtual bool help() noexcept = 0;
  /// The thread stops watching (its future is done, or it goes to sleep).
  virtual void end() noexcept = 0;

 protected:
  ~WaitHelper() = default;
};

/// A done-callback; run outside the lock, then deleted.
struct CallbackNode {
  CallbackNode* next = nullptr;
  virtual ~CallbackNode() = default;
  virtual void run(StateBase& state) = 0;
};

/// Takes the done-callbacks of a completed future, to run them on another thread with
/// StateBase::run_user_code. Installed on a thread by DivertUserCode.
class UserCodeSink {
 public:
  /// The `callbacks` (in registration order) of `state`, which is done and holds a reference
  /// that run_user_code releases.
  virtual void take(StateBase& state, CallbackNode* callbacks) noexcept = 0;

 protected:
  ~UserCodeSink() = default;
};

/// While it lives, the futures this thread completes run no user code here: they hand their
/// done-callbacks to `sink`, and the coroutines awaiting them resume on cfx's resumer threads
/// (the thread counts as a delivery thread, resumption.hpp). A thread that completes others'
/// futures while it waits for its own (WaitHelper) runs none of their code but their decoding.
class DivertUserCode {
 public:
  explicit DivertUserCode(UserCodeSink& sink) noexcept;
  ~DivertUserCode();
  DivertUserCode(const DivertUserCode&) = delete;
  DivertUserCode& operator=(const DivertUserCode&) = delete;

 private:
  UserCodeSink* previous_;
  bool delivering_;  // whether the thread was a delivery thread before
};

class StateBase {
 public:
  StateBase() = default;
  StateBase(const StateBase&) = delete;
  StateBase& operator=(const StateBase&) = delete;

  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }

  /// Future handles (and done-callbacks not yet run, which each make one), counted apart
  /// from the backends' references: a value may be moved out by the last handle only.
  void add_handle() noexcept { handles_.fetch_add(1, std::memory_order_relaxed); }
  void drop_handle() noexcept { handles_.fetch_sub(1, std::memory_order_release); }
  /// True if the caller's handle is the only one: nobody else can read the value.
  bool sole_handle() const noexcept { return handles_.load(std::memory_order_acquire) == 1; }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy();
  }

  Status status() const noexcept {
    auto s = static_cast<Status>(word_.load(std::memory_order_acquire) & kStatusMask);
    return s == Status::completing ? Status::running : s;
  }
  bool done() const noexcept {
    auto s = static_cast<Status>(word_.load(std::memory_order_acquire) & kStatusMask);
    return s == Status::finished || s == Status::cancelled;
  }

  /// pending -> cancelled (true); cancelled -> true; running/finished -> false. A pending
  /// call that a worker has already started (see withdraw) counts as running.
  bool cancel();
  /// As cancel(); a running task is stopped as its backend can (interrupt_running).
  bool interrupt();
  /// Running, or pending here but started where it runs (started_elsewhere).
  bool running() const noexcept {
    auto s = status();
    return s == Status::running || (s == Status::pending && started_elsewhere());
  }
  /// pending -> running (true); cancelled -> false; anything else throws InvalidStateError.
  bool set_running_or_notify_cancel();
  /// Finishes with an exception; false if already done (nothing changes).
  bool try_set_exception(std::exception_ptr e);

  /// Blocks until done: watches on the core for a moment (watch), then sleeps.
  void wait() const noexcept;
  /// Blocks until done or the deadline passes; true if done.
  bool wait_until(std::chrono::steady_clock::time_point deadline) const noexcept;
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const noexcept {
    if (done()) return true;
    return wait_until(deadline_after(timeout));
  }

  /// Throws CancelledError or rethrows the task's exception; call only when done().
  void rethrow_if_failed() const;
  /// nullptr on success; throws CancelledError if cancelled; call only when done().
  std::exception_ptr exception_when_done() const;

  /// Runs the callbacks publish() handed to a UserCodeSink, and releases the state's
  /// reference.
  void run_user_code(CallbackNode* callbacks) noexcept;
  /// Runs cb now (in the caller) if done, else when the state completes.
  void add_callback(CallbackNode* cb);
  /// Installs w unless done; returns false (w not installed) if already done.
  bool add_waiter(WaiterNode* w) noexcept;
  /// Takes w off the list; false if it was not there (publish has taken it: its on_done is
  /// running or has run).
  bool remove_waiter(WaiterNode* w) noexcept;

  /// Saturating conversion of a relative timeout to a steady_clock deadline.
  template <class Rep, class Period>
  static std::chrono::steady_clock::time_point deadline_after(
      std::chrono::duration<Rep, Period> timeout) noexcept {
    using namespace std::chrono;
    auto now = steady_clock::now();
    if (timeout <= timeout.zero()) return now;
    auto limit = duration<double>(steady_clock::time_point::max() - now);
    if (duration<double>(timeout) >= limit) return steady_clock::time_point::max();
    return now + duration_cast<steady_clock::duration>(timeout);
  }

 protected:
  virtual ~StateBase() = default;
  virtual void destroy() noexcept { delete this; }

  // Hooks for backends that send a call ahead to where it runs (a worker's window) while
  // its future stays pending until it starts there.
  /// Makes sure the call never starts; false if it already has. Called by cancel() on a
  /// pending state, before the state changes.
  virtual bool withdraw() noexcept { return true; }
  /// True once a pending call has started where it runs.
  virtual bool started_elsewhere() const noexcept { return false; }
  /// Stops a running call as the backend can; true if the future ended cancelled.
  virtual bool interrupt_running() noexcept { return false; }
  /// What a thread that watches this pending future (wait) can do for its backend; nullptr
  /// for nothing.
  virtual std::shared_ptr<WaitHelper> helper() const noexcept { return nullptr; }

  /// The spin lock of the waiter and callback lists; backends may hold it briefly for their
  /// own fields (never across publish, which takes it).
  void lock() const noexcept;
  void unlock() const noexcept { locked_.store(false, std::memory_order_release); }

  /// Reserves completion for the caller; false if another completion or cancel won.
  bool claim() noexcept;
  /// Publishes a claimed state as `final_status` (finished or cancelled).
  void publish(Status final_status) noexcept;
  /// Stores an exception in a claimed state, not yet published.
  void store_error(std::exception_ptr e) noexcept { error_ = std::move(e); }
  /// Publishes a claimed state with an exception.
  void publish_exception(std::exception_ptr e) noexcept {
    store_error(std::move(e));
    publish(Status::finished);
  }
  bool has_value() const noexcept {
    return static_cast<Status>(word_.load(std::memory_order_acquire) & kStatusMask) ==
               Status::finished &&
           !error_;
  }
  [[noreturn]] void throw_invalid_state(const char* what) const;

 private:
  static constexpr std::uint32_t kStatusMask = 7;
  static constexpr std::uint32_t kSleepers = 8;
  static constexpr std::uint32_t kWasRunning = 16;  // `completing` was claimed from running

  static bool running_seen(std::uint32_t w) noexcept { return (w & kWasRunning) != 0; }
  /// Waits out a `completing` state (a few instructions); returns the final word.
  std::uint32_t await_final() const noexcept;
  /// Watches for done() on the core, yielding it, for a moment after `start` (less after
  /// waits that took longer) or until the deadline; true if done. Short calls end sooner
  /// than a sleeping thread wakes.
  bool watch(std::chrono::steady_clock::time_point start,
             std::chrono::steady_clock::time_point deadline) const noexcept;

  static void run_callback(CallbackNode* cb, StateBase& state) noexcept;

  mutable std::atomic<std::uint32_t> word_{0};  // Status | kSleepers; the futex word
  std::atomic<std::uint32_t> refs_{1};
  mutable std::atomic<bool> locked_{false};
  std::atomic<std::uint32_t> handles_{0};  // fits beside locked_: the state does not grow
  WaiterNode* waiters_ = nullptr;
  CallbackNode* callbacks_ = nullptr;
  std::exception_ptr error_;
};

/// A state with a value of type T (no storage for void).
template <class T>
class SharedState : public StateBase {
 public:
  template <class U>
  bool try_set_value(U&& v) {
    if (!claim()) return false;
    store_and_publish(std::forward<U>(v));
    return true;
  }
  /// The caller has claim()ed; stores v and publishes (an exception from T's constructor
  /// becomes the outcome).
  template <class U>
  void store_and_publish(U&& v) noexcept {
    try {
      emplace_value(std::forward<U>(v));
    } catch (...) {
      store_error(std::current_exception());
    }
    publish(Status::finished);
  }
  /// Constructs the value in a claimed state, not yet published (may throw).
  template <class U>
  void emplace_value(U&& v) {
    ::new (static_cast<void*>(&storage_)) T(std::forward<U>(v));
  }
  const T& value() const noexcept { return *std::launder(reinterpret_cast<const T*>(&storage_)); }
  T& value() noexcept { return *std::launder(reinterpret_cast<T*>(&storage_)); }

  using StateBase::claim;
  using StateBase::publish;
  using StateBase::publish_exception;
  using StateBase::store_error;

 protected:
  ~SharedState() override {
    if (has_value()) value().~T();
  }

 private:
  alignas(T) unsigned char storage_[sizeof(T)];
};

template <>
class SharedState<void> : public StateBase {
 public:
  bool try_set_value() {
    if (!claim()) return false;
    publish(Status::finished);
    return true;
  }
  void store_and_publish() noexcept { publish(Status::finished); }
  using StateBase::claim;
  using StateBase::publish;
  using StateBase::publish_exception;
  using StateBase::store_error;
};

/// Intrusive owning pointer to a state.
template <class S>
class Ref {
 public:
  Ref() = default;
  /// Adopts one reference already counted for the caller.
  static Ref adopt(S* p) noexcept {
    Ref r;
    r.p_ = p;
    return r;
  }
  /// Takes a new reference.
  static Ref share(S* p) noexcept {
    if (p) p->add_ref();
    return adopt(p);
  }
  Ref(const Ref& o) noexcept : p_(o.p_) {
    if (p_) p_->add_ref();
  }
  Ref(Ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Ref& operator=(Ref o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~Ref() {
    if (p_) p_->release();
  }
  S* get() const noexcept { return p_; }
  S* operator->() const noexcept { return p_; }
  S& operator*() const noexcept { return *p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  S* p_ = nullptr;
};

}  // namespace cfx::detail
