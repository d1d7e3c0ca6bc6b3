// The resumer threads of co_await (include/cfx/detail/resumption.hpp).
//
// A process-wide pool, started on demand and never stopped: it lives for the whole program
// (a coroutine may be resumed from a pool's I/O thread while static destructors run), so it
// is never destroyed, and its idle threads sleep on a condition variable until the process
// exits. A new thread starts only when a handle is queued and no thread is idle.
#include "cfx/detail/resumption.hpp"

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "cores.hpp"

namespace cfx::detail {
namespace {

thread_local bool delivery_thread = false;

class Resumer {
 public:
  /// False if h could not be queued for a thread to resume (nothing changed then).
  bool post(std::coroutine_handle<> h) noexcept {
    {
      std::lock_guard lock(mutex_);
      try {
        queue_.push_back(h);
      } catch (...) {
        return false;
      }
      if (idle_ == 0 && threads_ < max_threads_) {
        try {
          start_thread();
        } catch (...) {
          if (threads_ == 0) {  // nobody would ever resume it
            queue_.pop_back();
            return false;
          }
        }
      }
    }
    ready_.notify_one();
    return true;
  }

 private:
  // Called with mutex_ held.
  void start_thread() {
    std::thread([this, index = threads_] { run(index); }).detach();
    ++threads_;
    ++idle_;
  }

  void run(std::size_t index) {
    std::string name = "cfx_resume_" + std::to_string(index);
    pthread_setname_np(pthread_self(), name.c_str());
    std::unique_lock lock(mutex_);
    for (;;) {
      ready_.wait(lock, [&] { return !queue_.empty(); });
      auto h = queue_.front();
      queue_.pop_front();
      --idle_;
      lock.unlock();
      h.resume();
      lock.lock();
      ++idle_;
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::coroutine_handle<>> queue_;
  std::size_t threads_ = 0;
  std::size_t idle_ = 0;  // started threads not resuming a coroutine
  const std::size_t max_threads_ = std::max<std::size_t>(2, usable_cores());
};

Resumer& resumer() noexcept {
  static auto* r = new Resumer;  // never destroyed: see the file comment
  return *r;
}

}  // namespace

void mark_delivery_thread() noexcept {
  delivery_thread = true;
}

bool set_delivery_thread(bool delivering) noexcept {
  return std::exchange(delivery_thread, delivering);
}

bool on_delivery_thread() noexcept {
  return delivery_thread;
}

void resume_on_resumer(std::coroutine_handle<> h) noexcept {
  // Out of memory or threads: resuming it here is better than never.
  if (!resumer().post(h)) h.resume();
}

}  // namespace cfx::detail
