// The process pool's manager: the I/O thread's side of ProcessPoolExecutor. Internal.
//
// pool.cpp holds the I/O thread's routine work (dispatch into windows, the channels, worker
// start-up, retiring, shutdown), faults.cpp the fault policy (start failures, crashes,
// timeouts, a failing initializer, breaking the pool). Submitters reach it only through
// enqueue and shutdown; what they share with the I/O thread lives in SubmissionQueue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/process/v2/process.hpp>

#include "backends/process/channel.hpp"
#include "backends/process/launcher.hpp"
#include "backends/process/submission_queue.hpp"
#include "cfx/process_pool.hpp"

namespace cfx::detail {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

/// One worker process and its channel. Touched only on the I/O thread.
struct WorkerSlot {
  explicit WorkerSlot(asio::io_context& io) : to(io), from(io), timer(io) {}

  asio::writable_pipe to;    // calls
  asio::readable_pipe from;  // replies
  // Emplaced: 1.81's move assignment breaks async_wait.
  std::optional<boost::process::v2::process> proc;
  asio::steady_timer timer;  // startup deadline, then task_timeout of the head call
  int pid = 0;

  std::deque<RemoteTask*> in_flight;  // sent, in order; the front one is running
  Clock::time_point head_started{};
  RemoteTask* timed_out = nullptr;  // the head call the pool killed it for
  double mean_service = 0;          // seconds per call, smoothed

  std::vector<char> out, writing;  // queued and in-progress writes
  bool write_busy = false;
  FrameSplitter in;

  std::size_t calls_sent = 0;
  std::uint64_t replies = 0;  // answered calls (init included)
  CounterPage started;        // calls the worker began (shared page)
  bool ready = false;         // said hello
  bool retiring = false;      // reached max_tasks_per_child: no more calls
  bool closing = false;       // its channel was closed on purpose: exit 0 is expected
  bool gone = false;          // EOF seen
  bool killed = false;
  std::string kill_reason;  // why the pool killed it, for the messages of its death

  /// True if the oldest unanswered call had started when the worker died.
  bool head_was_running() const { return started.count() > replies; }
  /// How many calls it may hold: about kWindowWorkSeconds of work.
  std::size_t window() const;
};

class ProcessPoolCore;

/// The initializer's call, sent first to every worker; its failure breaks the pool.
class InitCall final : public RemoteTask {
 public:
  InitCall(const TaskCall& call, std::weak_ptr<ProcessPoolCore> core) : core_(std::move(core)) {
    task = call.task;
    count = 1;
    args = call.args;
  }
  bool attach(std::shared_ptr<CallSlots>, std::uint64_t) noexcept override { return true; }
  void detach() noexcept override {}
  void complete(Reader& results, std::uint32_t n, std::exception_ptr error) noexcept override;
  void fail(std::exception_ptr) noexcept override {}
  void cancel() noexcept override {}
  void drop() noexcept override { delete this; }

 private:
  std::weak_ptr<ProcessPoolCore> core_;
};

class ProcessPoolCore : public std::enable_shared_from_this<ProcessPoolCore> {
 public:
  explicit ProcessPoolCore(ProcessPoolOptions options);

  void start();
  std::size_t max_workers() const { return max_workers_; }
  std::vector<int> worker_pids() const { return queue_.worker_pids(); }
  void enqueue(RemoteTask* task) { queue_.push(task); }
  void shutdown(bool wait, bool cancel_futures);
  /// Lets the I/O thread finish by itself (the executor is destroyed on that thread).
  void detach_if_on_io_thread();
  void join();
  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_; }
  /// Fails every queued and running call with BrokenProcessPool(message), and every later
  /// submit. I/O thread only.
  void break_pool(const std::string& message);

 private:
  using Worker = std::shared_ptr<WorkerSlot>;

  // pool.cpp: dispatch and windows
  void run_io();
  void dispatch();
  bool should_spawn(std::size_t queued);
  std::size_t in_flight_total() const;
  std::size_t room(const WorkerSlot& w) const;
  void fill_windows(std::vector<RemoteTask*>& cancelled);
  std::size_t hand_out(SubmissionQueue::Calls& calls, std::vector<RemoteTask*>& cancelled);
  void send(const Worker& w, RemoteTask* t);
  void head_changed(const Worker& w);
  // pool.cpp: workers and their channels
  bool spawn_worker();
  void flush(const Worker& w);
  void start_reading(const Worker& w);
  void on_frames(const Worker& w);
  void on_result(const Worker& w, Reader& r);
  void close_channel(const Worker& w);
  void remove_worker(const Worker& w);
  void begin_drain();
  void check_drained();

  // faults.cpp: the fault policy
  void watch_start(const Worker& w);
  void arm_task_timeout(const Worker& w);
  void on_eof(const Worker& w);
  void on_exit(const Worker& w, int status);
  void exited_before_ready(const Worker& w, int status);
  void crashed_running(const Worker& w, int status);
  void requeue_unstarted(const Worker& w);
  void start_failure(const std::string& why, bool fatal);
  /// SIGKILLs the worker's process group; `reason` says why, in the messages of its death.
  void kill_worker(const Worker& w, const char* reason);

  const ProcessPoolOptions options_;
  const std::size_t max_workers_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  // Asio creates its reactor (an epoll and an eventfd descriptor) with the first timer. Made
  // here, with the pool, it exists before any launch; made lazily at a worker's first timer,
  // it would throw on the I/O thread when descriptors run out.
  asio::steady_timer reactor_{io_};
  std::thread io_thread_;
  std::atomic<std::thread::id> io_thread_id_{};
  std::mutex join_mutex_;
  SubmissionQueue queue_;

  // I/O thread only
  std::vector<Worker> workers_;
  int start_failures_ = 0;
  bool start_failed_ = false;
  bool draining_ = false;
};

}  // namespace cfx::detail
