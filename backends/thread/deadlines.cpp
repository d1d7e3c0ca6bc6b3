// Deadlines of a ThreadPoolExecutor's CallOptions timeouts (deadlines.hpp).
#include "deadlines.hpp"

namespace cfx::detail {

std::optional<Deadlines::Key> Deadlines::arm(LocalTask* task) {
  auto when = StateBase::deadline_after(*task->timeout);
  if (when == Clock::time_point::max()) return std::nullopt;
  bool earliest;
  Key key;
  {
    std::lock_guard lock(mutex_);
    key = Key(when, armed_count_++);
    auto it = armed_.emplace_hint(armed_.end(), key, task);
    earliest = it == armed_.begin();
    task->retain();
  }
  if (earliest) changed_.notify_one();  // the timer sleeps until a later deadline, or for ever
  return key;
}

void Deadlines::disarm(const Key& key) noexcept {
  LocalTask* task = nullptr;
  {
    std::lock_guard lock(mutex_);
    auto it = armed_.find(key);
    if (it == armed_.end()) return;  // expired (or dropped by stop)
    task = it->second;
    armed_.erase(it);
  }
  // The timer may wake for this deadline for nothing; that is cheaper than waking it now.
  task->drop();
}

void Deadlines::run() noexcept {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (armed_.empty()) {
      changed_.wait(lock);
      continue;
    }
    auto first = armed_.begin();
    // A copy: wait_until reads it after waking, when disarm may have freed the entry.
    const Clock::time_point when = first->first.first;
    if (Clock::now() < when) {
      changed_.wait_until(lock, when);
      continue;
    }
    LocalTask* task = first->second;
    armed_.erase(first);
    lock.unlock();
    task->expire();  // runs the future's done-callbacks in this thread
    task->drop();
    lock.lock();
  }
  auto left = std::move(armed_);
  armed_.clear();
  lock.unlock();
  for (auto& entry : left) entry.second->drop();
}

void Deadlines::stop() noexcept {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
}

}  // namespace cfx::detail
