// cfx/sync.hpp: each object is a plain struct at the start of its own SharedBlock, built
// on detail::SharedMutex and detail::SharedCondition (cfx/detail/shared_sync.hpp).
#include "cfx/sync.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>

#include "cfx/errors.hpp"

namespace cfx {
namespace detail {

void SyncHandle::throw_empty(const char* type) {
  throw Error(std::string(type) +
              ": empty handle (moved from, or decoded from one that was); make the object "
              "with its constructor");
}

namespace {

struct SemaphoreState {
  SharedMutex mutex;
  SharedCondition cond;
  std::int64_t value;
  std::int64_t bound;  // -1: unbounded
};

struct EventState {
  SharedMutex mutex;
  SharedCondition cond;
  std::atomic<std::uint32_t> flag;
};

struct ConditionState {
  SharedMutex lock;
  SharedCondition cond;
};

// A generation ends when the last party arrives (tripped) or when abort(), reset() or a
// timeout breaks it. A waiter wakes when the generation it joined has ended and reads how
// from broken_bits (bit generation % 64): exact unless 64 later generations end before it
// gets the mutex back.
struct BarrierState {
  SharedMutex mutex;
  SharedCondition cond;
  std::uint64_t parties;
  std::uint64_t count;  // arrived in the current generation
  std::uint64_t generation;
  std::uint64_t broken_bits;
  std::uint32_t broken;  // aborted or timed out, until reset()
};

/// A new block holding one State, initialised by `init` before anyone else can see it.
template <class State, class Init>
SharedBlock make_block(Init init) {
  SharedBlock block(sizeof(State));
  init(shared_at<State>(block));
  return block;
}

}  // namespace
}  // namespace detail

using detail::BarrierState;
using detail::ConditionState;
using detail::EventState;
using detail::make_block;
using detail::SemaphoreState;
using detail::SharedMutex;
using detail::SyncDeadline;
using Guard = std::lock_guard<SharedMutex>;

// Lock, RLock

Lock::Lock() : MutexHandle(make_block<SharedMutex>([](SharedMutex& m) { m.init(false); }), 0) {}

RLock::RLock() : MutexHandle(make_block<SharedMutex>([](SharedMutex& m) { m.init(true); }), 0) {}

// Semaphore, BoundedSemaphore

Semaphore::Semaphore(std::ptrdiff_t value) : Semaphore(value, -1) {}

Semaphore::Semaphore(std::ptrdiff_t value, std::ptrdiff_t bound) {
  const char* type = bound < 0 ? "cfx::Semaphore" : "cfx::BoundedSemaphore";
  if (value < 0)
    throw Error(std::string(type) + ": initial value " + std::to_string(value) + " is negative");
  block_ = make_block<SemaphoreState>([&](SemaphoreState& s) {
    s.mutex.init();
    s.cond.init();
    s.value = value;
    s.bound = bound;
  });
}

void Semaphore::acquire() {
  acquire_until(std::nullopt);
}

bool Semaphore::try_acquire() {
  return acquire_until(std::chrono::steady_clock::time_point::min());
}

bool Semaphore::acquire_until(const SyncDeadline& deadline) {
  auto& s = state<SemaphoreState>("cfx::Semaphore");
  if (!s.mutex.lock_until(deadline)) return false;
  Guard guard(s.mutex, std::adopt_lock);
  if (!s.cond.wait(s.mutex, deadline, [&] { return s.value > 0; })) return false;
  --s.value;
  return true;
}

void Semaphore::release(std::ptrdiff_t update) {
  auto& s = state<SemaphoreState>("cfx::Semaphore");
  if (update < 0)
    throw Error("cfx::Semaphore: release(" + std::to_string(update) + "): negative update");
  Guard guard(s.mutex);
  if (s.bound >= 0 && update > s.bound - s.value)
    throw Error("cfx::BoundedSemaphore: released too many times (value " + std::to_string(s.value) +
                ", bound " + std::to_string(s.bound) + ", release " + std::to_string(update) + ")");
  if (update > std::numeric_limits<std::int64_t>::max() - s.value)
    throw Error("cfx::Semaphore: release(" + std::to_string(update) + ") overflows its value");
  s.value += update;
  if (update == 1) {
    s.cond.notify_one();
  } else if (update > 1) {
    s.cond.notify_all();
  }
}

std::ptrdiff_t Semaphore::value() const {
  auto& s = state<SemaphoreState>("cfx::Semaphore");
  Guard guard(s.mutex);
  return static_cast<std::ptrdiff_t>(s.value);
}

// Event

Event::Event()
    : SyncHandle(make_block<EventState>([](EventState& s) {
                   s.mutex.init();
                   s.cond.init();
                   s.flag.store(0, std::memory_order_relaxed);
                 }),
                 0) {}

void Event::set() {
  auto& s = state<EventState>("cfx::Event");
  Guard guard(s.mutex);
  s.flag.store(1, std::memory_order_release);
  s.cond.notify_all();
}

void Event::clear() {
  auto& s = state<EventState>("cfx::Event");
  Guard guard(s.mutex);
  s.flag.store(0, std::memory_order_release);
}

bool Event::is_set() const {
  return state<EventState>("cfx::Event").flag.load(std::memory_order_acquire) != 0;
}

void Event::wait() {
  wait_deadline(std::nullopt);
}

bool Event::wait_deadline(const SyncDeadline& deadline) {
  auto& s = state<EventState>("cfx::Event");
  auto is_set = [&] { return s.flag.load(std::memory_order_acquire) != 0; };
  if (is_set()) return true;
  if (!s.mutex.lock_until(deadline)) return is_set();
  Guard guard(s.mutex, std::adopt_lock);
  return s.cond.wait(s.mutex, deadline, is_set);
}

// Condition

Condition::Condition()
    : SyncHandle(make_block<ConditionState>([](ConditionState& s) {
                   s.lock.init();
                   s.cond.init();
                 }),
                 0) {}

void Condition::lock() {
  state<ConditionState>("cfx::Condition").lock.lock();
}

bool Condition::try_lock() {
  return state<ConditionState>("cfx::Condition").lock.try_lock();
}

void Condition::unlock() {
  state<ConditionState>("cfx::Condition").lock.unlock();
}

Lock Condition::get_lock() const {
  state<ConditionState>("cfx::Condition");
  return detail::HandleAccess::make<Lock>(block_, offsetof(ConditionState, lock));
}

bool Condition::wait_deadline(const SyncDeadline& deadline) {
  auto& s = state<ConditionState>("cfx::Condition");
  if (!s.lock.held_by_me())
    throw Error("cfx::Condition: wait() without holding its lock (lock it first)");
  return s.cond.wait(s.lock, deadline);
}

void Condition::notify_one() {
  auto& s = state<ConditionState>("cfx::Condition");
  if (!s.lock.held_by_me())
    throw Error("cfx::Condition: notify_one() without holding its lock (lock it first)");
  s.cond.notify_one();
}

void Condition::notify_all() {
  auto& s = state<ConditionState>("cfx::Condition");
  if (!s.lock.held_by_me())
    throw Error("cfx::Condition: notify_all() without holding its lock (lock it first)");
  s.cond.notify_all();
}

// Barrier

namespace {

void end_generation(BarrierState& s, bool broken) {
  std::uint64_t bit = std::uint64_t{1} << (s.generation % 64);
  s.broken_bits = broken ? (s.broken_bits | bit) : (s.broken_bits & ~bit);
  ++s.generation;
  s.count = 0;
  s.cond.notify_all();
}

void break_barrier(BarrierState& s) {
  if (s.broken) return;
  s.broken = 1;
  end_generation(s, true);
}

}  // namespace

Barrier::Barrier(std::size_t parties) {
  if (parties == 0) throw Error("cfx::Barrier: parties must be at least 1");
  block_ = make_block<BarrierState>([&](BarrierState& s) {
    s.mutex.init();
    s.cond.init();
    s.parties = parties;
  });
}

std::size_t Barrier::wait_deadline(const SyncDeadline& deadline) {
  auto& s = state<BarrierState>("cfx::Barrier");
  Guard guard(s.mutex);
  if (s.broken) throw BrokenBarrierError();
  std::uint64_t joined = s.generation;
  std::uint64_t index = s.count++;
  if (s.count == s.parties) {
    end_generation(s, false);
    return index;
  }
  while (s.generation == joined) {
    if (!s.cond.wait(s.mutex, deadline) && s.generation == joined) {
      break_barrier(s);
      throw BrokenBarrierError(
          "cfx::Barrier: wait timed out, which breaks the barrier until reset()");
    }
  }
  if ((s.broken_bits >> (joined % 64)) & 1) throw BrokenBarrierError();
  return index;
}

void Barrier::abort() {
  auto& s = state<BarrierState>("cfx::Barrier");
  Guard guard(s.mutex);
  break_barrier(s);
}

void Barrier::reset() {
  auto& s = state<BarrierState>("cfx::Barrier");
  Guard guard(s.mutex);
  if (s.broken) {
    s.broken = 0;  // its generation already ended, broken
  } else if (s.count > 0) {
    end_generation(s, true);
  }
}

std::size_t Barrier::parties() const {
  return state<BarrierState>("cfx::Barrier").parties;
}

std::size_t Barrier::n_waiting() const {
  auto& s = state<BarrierState>("cfx::Barrier");
  Guard guard(s.mutex);
  return s.count;
}

bool Barrier::broken() const {
  auto& s = state<BarrierState>("cfx::Barrier");
  Guard guard(s.mutex);
  return s.broken != 0;
}

}  // namespace cfx
