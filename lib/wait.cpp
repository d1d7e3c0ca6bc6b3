// The completion queue shared by the waiter nodes of wait() and as_completed().
#include "cfx/wait.hpp"

namespace cfx::detail {

void CompletionQueue::push(std::size_t index) {
  // Notified under the lock: the consumer may destroy this queue as soon as it sees the
  // index, so nothing here may touch it after the mutex is released.
  std::lock_guard lock(mutex_);
  indices_.push_back(index);
  ready_.notify_one();
}

bool CompletionQueue::pop_all(
    std::vector<std::size_t>& out,
    const std::optional<std::chrono::steady_clock::time_point>& deadline) {
  std::unique_lock lock(mutex_);
  auto nonempty = [&] { return !indices_.empty(); };
  if (deadline) {
    if (!ready_.wait_until(lock, *deadline, nonempty)) return false;
  } else {
    ready_.wait(lock, nonempty);
  }
  out.insert(out.end(), indices_.begin(), indices_.end());
  indices_.clear();
  return true;
}

std::string unfinished_message(std::size_t pending, std::size_t total) {
  return std::to_string(pending) + " (of " + std::to_string(total) + ") futures unfinished";
}

}  // namespace cfx::detail
