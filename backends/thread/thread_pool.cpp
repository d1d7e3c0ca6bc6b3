// ThreadPoolExecutor: an intrusive FIFO of LocalTasks under one mutex, drained by lazily
// started threads.
//
// Idle accounting: a worker counts itself idle, under the queue mutex, *before* it
// publishes a task's result, so a caller that sees the result and submits again finds the
// idle worker instead of starting a new thread (CPython's test_idle_thread_reuse race).
// The same lock section takes the next task, so a busy worker locks once per task.
//
// Stop tokens (API section 7): a worker lists the task it takes in its slot of
// stoppable_running_ (under the queue mutex it holds anyway) when the callable takes a
// std::stop_token, so that shutdown(cancel_futures = true) can request stop on it.
//
// CallOptions timeouts: one timer thread per pool (deadlines.hpp), started by the first
// submit with a timeout and joined after the workers at shutdown. A worker arms a call's
// deadline when the call starts and disarms it when it returns; the timer thread fails a
// call still running past its deadline with TimeoutError (then that call's done-callbacks
// run on the timer thread) and requests stop on its token.
#include "cfx/thread_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/execution_context.hpp>

#include "cfx/detail/pool_handlers.hpp"
#include "cfx/detail/resumption.hpp"
#include "cfx/errors.hpp"
#include "deadlines.hpp"
#include "lib/cores.hpp"
#include "lib/demangle.hpp"
#include "lib/intrusive_queue.hpp"

namespace cfx::detail {

namespace {

std::string default_prefix() {
  static std::atomic<unsigned> counter{0};
  return "ThreadPoolExecutor-" + std::to_string(counter++);
}

std::string describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return demangled_type_name(ex) + ": " + ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace

class ThreadPoolCore : public std::enable_shared_from_this<ThreadPoolCore> {
 public:
  explicit ThreadPoolCore(ThreadPoolOptions o)
      : max_workers_(o.max_workers ? o.max_workers : std::min<std::size_t>(32, usable_cores() + 4)),
        prefix_(o.thread_name_prefix.empty() ? default_prefix() : std::move(o.thread_name_prefix)),
        initializer_(std::move(o.initializer)) {}

  std::size_t max_workers() const { return max_workers_; }

  bool runs_this_worker() const noexcept { return current_worker_pool == this; }
  boost::asio::execution_context& asio_context() noexcept { return asio_context_; }

  std::size_t thread_count() {
    std::lock_guard lock(mutex_);
    return threads_.size();
  }

  void enqueue(LocalTask* task) {
    bool wake;
    {
      std::lock_guard lock(mutex_);
      if (broken_) throw BrokenThreadPool(*broken_);
      if (shutdown_) throw Error("cannot schedule new futures after shutdown");
      if (task->timeout && !timer_started_) start_timer();  // throws if it cannot
      wake = sleeping_ > 0;
      if (queue_.size() + 1 > idle_ && threads_.size() < max_workers_) {
        start_thread();  // may throw only when there is no thread at all to run the task
        wake = false;    // the new thread looks at the queue before it sleeps
      }
      queue_.push_back(task);
    }
    // Notified outside the lock, so the woken thread does not block on it at once.
    if (wake) work_ready_.notify_one();
  }

  void shutdown(bool wait, bool cancel_futures, bool from_destructor) {
    bool on_own_thread = current_pool == this;
    if (wait && on_own_thread && !from_destructor)
      throw Error(
          "shutdown(wait=true) called from one of this ThreadPoolExecutor's own threads: it "
          "would wait for itself; call shutdown(false) there, or shut down from another thread");
    LocalTask* drained = nullptr;
    std::vector<LocalTask*> to_stop;  // running calls that take a stop token
    {
      std::lock_guard lock(mutex_);
      if (cancel_futures) to_stop.reserve(stoppable_running_.size());  // may throw: first
      shutdown_ = true;
      if (cancel_futures) {
        drained = queue_.take_all();
        for (LocalTask* t : stoppable_running_) {
          if (!t) continue;
          t->retain();  // its worker may finish and drop it once we unlock
          to_stop.push_back(t);
        }
      }
      work_ready_.notify_all();
    }
    for_each_and_drop(drained, [](LocalTask* t) { t->cancel(); });
    // Outside the lock: request_stop runs the task's std::stop_callbacks.
    for (LocalTask* t : to_stop) {
      t->request_stop();
      t->drop();
    }
    if (!wait) return;
    std::lock_guard join_lock(join_mutex_);
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      threads.swap(threads_);
    }
    for (auto& t : threads) join_unless_self(t);
    // After the workers: a call running until its timeout requests stop needs the timer.
    std::thread timer;
    {
      std::lock_guard lock(mutex_);
      timer.swap(timer_thread_);
    }
    if (timer.joinable()) {
      deadlines_.stop();
      join_unless_self(timer);
    }
  }

 private:
  static thread_local ThreadPoolCore* current_pool;         // workers and the timer thread
  static thread_local ThreadPoolCore* current_worker_pool;  // workers only: they run handlers

  template <class F>
  static void for_each_and_drop(LocalTask* list, F f) {
    while (list) {
      LocalTask* next = list->next;
      f(list);
      list->drop();
      list = next;
    }
  }

  void join_unless_self(std::thread& t) {
    if (t.get_id() == std::this_thread::get_id()) {
      std::fprintf(stderr,
                   "cfx: ThreadPoolExecutor destroyed on one of its own threads (%s): it "
                   "cannot wait for itself; that thread finishes on its own\n",
                   prefix_.c_str());
      t.detach();
    } else {
      t.join();
    }
  }

  // Called with mutex_ held.
  void start_timer() {
    timer_thread_ = std::thread([self = shared_from_this()] {
      current_pool = self.get();
      mark_delivery_thread();  // it completes timed-out calls of the whole pool
      self->name_this_thread("timer");
      self->deadlines_.run();
    });
    timer_started_ = true;
  }

  // Called with mutex_ held.
  void start_thread() {
    std::size_t index = threads_.size();
    try {
      stoppable_running_.resize(index + 1);
      threads_.emplace_back([self = shared_from_this(), index] { self->worker(index); });
    } catch (...) {
      if (threads_.empty()) throw;
      return;  // the existing threads will run the task
    }
    ++idle_;
  }

  void name_this_thread(const std::string& suffix) {
    std::string name = prefix_ + "_" + suffix;
    name.resize(std::min<std::size_t>(name.size(), 15));
    pthread_setname_np(pthread_self(), name.c_str());
  }

  // Runs the initializer; false (and the pool broken) if it threw.
  bool initialize() {
    if (!initializer_) return true;
    try {
      initializer_();
      return true;
    } catch (...) {
      std::string msg = "A thread initializer failed, the thread pool is not usable anymore (" +
                        describe(std::current_exception()) + ")";
      std::fprintf(stderr, "cfx: %s\n", msg.c_str());
      LocalTask* drained;
      {
        std::lock_guard lock(mutex_);
        broken_ = msg;
        drained = queue_.take_all();
        --idle_;
      }
      auto error = std::make_exception_ptr(BrokenThreadPool(msg));
      for_each_and_drop(drained, [&](LocalTask* t) { t->fail(error); });
      return false;
    }
  }

  void worker(std::size_t index) {
    current_pool = this;
    current_worker_pool = this;
    name_this_thread(std::to_string(index));
    if (!initialize()) return;
    LocalTask* done = nullptr;  // executed, result not yet published
    bool skipped = false;       // the last task taken was cancelled: idle again
    for (;;) {
      LocalTask* next = nullptr;
      {
        std::unique_lock lock(mutex_);
        if (done || std::exchange(skipped, false)) {
          ++idle_;
          stoppable_running_[index] = nullptr;
        }
        while (queue_.empty() && !shutdown_) {
          if (done) {  // publish before sleeping: never hold a finished result back
            lock.unlock();
            finish(std::exchange(done, nullptr));
            lock.lock();
            continue;
          }
          ++sleeping_;
          work_ready_.wait(lock);
          --sleeping_;
        }
        if (!queue_.empty()) {
          next = queue_.pop_front();
          --idle_;
          if (next->stoppable()) stoppable_running_[index] = next;
        }
      }
      if (done) finish(std::exchange(done, nullptr));
      if (!next) return;  // shut down and nothing left
      if (run(next, index))
        done = next;
      else
        skipped = true;
    }
  }

  // Starts and executes a task taken from the queue (not yet published); false if it did
  // not run (cancelled while queued, or no memory to arm its timeout) and is dropped.
  bool run(LocalTask* task, std::size_t index) {
    std::optional<Deadlines::Key> deadline;
    bool started = task->start();
    if (started && task->timeout) {
      try {
        deadline = deadlines_.arm(task);
      } catch (...) {
        task->fail(std::current_exception());
        started = false;
      }
    }
    if (!started) {
      if (task->stoppable()) {  // unlist it before it may be freed
        std::lock_guard lock(mutex_);
        stoppable_running_[index] = nullptr;
      }
      task->drop();
      return false;
    }
    task->execute();
    if (deadline) deadlines_.disarm(*deadline);
    return true;
  }

  static void finish(LocalTask* t) {
    t->publish();
    t->drop();
  }

  const std::size_t max_workers_;
  const std::string prefix_;
  const std::function<void()> initializer_;

  std::mutex mutex_;
  std::condition_variable work_ready_;
  IntrusiveQueue<LocalTask> queue_;
  std::size_t idle_ = 0;      // started threads not running a task
  std::size_t sleeping_ = 0;  // threads waiting on work_ready_
  bool shutdown_ = false;
  std::optional<std::string> broken_;
  std::vector<std::thread> threads_;
  std::vector<LocalTask*> stoppable_running_;  // by worker index: its task, if stoppable
  bool timer_started_ = false;
  std::thread timer_thread_;  // expires CallOptions timeouts; started by the first one
  Deadlines deadlines_;
  std::mutex join_mutex_;
  // For ThreadPoolExecutor::AsioExecutor: services attached to the pool live here. Last, so
  // that it is destroyed first, while the pool's fields still exist.
  boost::asio::execution_context asio_context_;
};

thread_local ThreadPoolCore* ThreadPoolCore::current_pool = nullptr;
thread_local ThreadPoolCore* ThreadPoolCore::current_worker_pool = nullptr;

void enqueue_handler(ThreadPoolCore& pool, LocalTask* task) {
  pool.enqueue(task);
}

bool runs_handlers_here(const ThreadPoolCore& pool) noexcept {
  return pool.runs_this_worker();
}

boost::asio::execution_context& asio_context(ThreadPoolCore& pool) noexcept {
  return pool.asio_context();
}

void report_handler_exception(std::exception_ptr e) noexcept {
  try {
    std::fprintf(stderr, "cfx: exception escaped an Asio handler run on a thread pool: %s\n",
                 describe(e).c_str());
  } catch (...) {
  }
}

}  // namespace cfx::detail

namespace cfx {

ThreadPoolExecutor::ThreadPoolExecutor(ThreadPoolOptions options)
    : core_(std::make_shared<detail::ThreadPoolCore>(std::move(options))) {}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  detach_maps();
  core_->shutdown(true, false, true);
}

void ThreadPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  core_->shutdown(wait, cancel_futures, false);
}

std::size_t ThreadPoolExecutor::max_workers() const {
  return core_->max_workers();
}

std::size_t ThreadPoolExecutor::thread_count() const {
  return core_->thread_count();
}

void ThreadPoolExecutor::enqueue(detail::LocalTask* task) {
  core_->enqueue(task);
}

}  // namespace cfx
