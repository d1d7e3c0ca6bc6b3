#include "backends/process/submission_queue.hpp"

#include <algorithm>

#include "cfx/errors.hpp"

namespace cfx::detail {

void SubmissionQueue::push(RemoteTask* task, bool wake) {
  std::lock_guard lock(mutex_);
  if (broken_) throw BrokenProcessPool(*broken_);
  if (shutdown_) throw Error("cannot schedule new futures after shutdown");
  pending_.push_back(task);
  if (wake_posted_ || !wake) return;  // one wake-up covers every push until dispatch runs
  wake_posted_ = true;
  wake_();
}

bool SubmissionQueue::shut_down(bool cancel_futures) {
  RemoteTask* cancelled = nullptr;
  bool first;
  {
    std::lock_guard lock(mutex_);
    first = !std::exchange(shutdown_, true);
    if (cancel_futures) cancelled = pending_.take_all();
  }
  // Outside the lock: a cancelled future's callbacks may call back into the pool.
  while (cancelled) {
    RemoteTask* next = cancelled->next;
    cancelled->cancel();
    cancelled->drop();
    cancelled = next;
  }
  return first;
}

std::vector<int> SubmissionQueue::worker_pids() const {
  std::lock_guard lock(mutex_);
  return pids_;
}

std::optional<std::size_t> SubmissionQueue::begin_dispatch() {
  std::lock_guard lock(mutex_);
  wake_posted_ = false;
  if (broken_) return std::nullopt;
  return pending_.size();
}

SubmissionQueue::Calls SubmissionQueue::take(std::size_t n) {
  Calls taken;
  std::lock_guard lock(mutex_);
  wake_posted_ = false;
  if (broken_) return taken;
  while (n-- > 0 && !pending_.empty()) taken.push_back(pending_.pop_front());
  return taken;
}

void SubmissionQueue::give_back(Calls calls) {
  std::vector<RemoteTask*> in_order;
  while (!calls.empty()) in_order.push_back(calls.pop_front());
  std::lock_guard lock(mutex_);
  for (auto it = in_order.rbegin(); it != in_order.rend(); ++it) pending_.push_front(*it);
}

std::optional<std::string> SubmissionQueue::requeue(const std::vector<RemoteTask*>& calls) {
  std::lock_guard lock(mutex_);
  if (broken_) return broken_;
  for (auto it = calls.rbegin(); it != calls.rend(); ++it) {
    pending_.push_front(*it);
  }
  return std::nullopt;
}

std::optional<SubmissionQueue::Calls> SubmissionQueue::break_pool(const std::string& message) {
  std::lock_guard lock(mutex_);
  if (broken_) return std::nullopt;
  broken_ = message;
  Calls queued;
  std::swap(queued, pending_);
  return queued;
}

bool SubmissionQueue::drained() const {
  std::lock_guard lock(mutex_);
  return pending_.empty() || broken_;
}

void SubmissionQueue::add_worker(int pid) {
  std::lock_guard lock(mutex_);
  pids_.push_back(pid);
}

void SubmissionQueue::remove_worker(int pid) {
  std::lock_guard lock(mutex_);
  pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
}

}  // namespace cfx::detail
