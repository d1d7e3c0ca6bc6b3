// ProcessPoolExecutor: the parent's side.
//
//   submit() ──encode──▶ SubmissionQueue ──(one coalesced wake-up)──▶ I/O thread
//   (any thread)         (pending calls,                                 │ dispatch: a small
//                         mutex)                                         │ window of calls per
//                                                                        ▼ worker, in one write
//      Future ◀── complete ◀── reply frames ◀── pipe ◀── worker 1..N (own process group)
//
// One I/O thread runs an Asio io_context that owns every worker's two pipes, its process
// handle (pidfd: exit is an event, never polled) and its timer. Only that thread touches
// worker state; submitters touch only the SubmissionQueue. A worker runs its calls in order,
// so the head of its in-flight list is the one running: when a worker dies, that call fails
// (WorkerCrashed, or TimeoutError if the pool killed it) and the calls behind it, which never
// started, go back to the front of the queue. docs/process-backend.md has the full picture.
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/v2/process.hpp>

#include "backends/process/channel.hpp"
#include "backends/process/launcher.hpp"
#include "backends/process/submission_queue.hpp"
#include "backends/process/worker.hpp"
#include "cfx/errors.hpp"
#include "cfx/process_pool.hpp"
#include "lib/cores.hpp"
#include "lib/remote_exception.hpp"

namespace cfx::detail {
namespace {

namespace asio = boost::asio;
namespace bp = boost::process::v2;
using Clock = std::chrono::steady_clock;

constexpr auto kStartupTimeout = std::chrono::seconds(5);
constexpr int kMaxStartFailures = 3;
constexpr std::size_t kMaxWindow = 64;
constexpr double kWindowWorkSeconds = 0.001;  // keep about this much work queued per worker
constexpr std::size_t kCrashesPerWorkerPerSecond = 4;
constexpr std::chrono::steady_clock::duration kMinSpawnPause = std::chrono::milliseconds(50);
constexpr std::chrono::steady_clock::duration kMaxSpawnPause = std::chrono::seconds(1);

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

/// "was killed by SIGSEGV (signal 11)" / "exited with status 3".
std::string describe_status(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    std::string s = "was killed by " + signal_name(sig) + " (signal " + std::to_string(sig) + ")";
    if (sig == SIGKILL) s += "; if nobody killed it, the out-of-memory killer may have";
    return s;
  }
  if (WIFEXITED(status)) {
    int code = WEXITSTATUS(status);
    std::string s = "exited with status " + std::to_string(code);
    if (code == 0) s += " before returning a result";
    return s;
  }
  return "ended with raw status " + std::to_string(status);
}

}  // namespace

class ProcessPoolCore;

/// One worker process and its channel. Touched only on the I/O thread.
struct WorkerSlot {
  explicit WorkerSlot(asio::io_context& io) : to(io), from(io), timer(io) {}

  asio::writable_pipe to;           // calls
  asio::readable_pipe from;         // replies
  std::optional<bp::process> proc;  // emplaced: 1.81's move assignment breaks async_wait
  asio::steady_timer timer;         // startup deadline, then task_timeout of the head call
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

  /// True if the oldest unanswered call had started when the worker died.
  bool head_was_running() const { return started.count() > replies; }

  std::size_t window() const {
    if (mean_service <= 0) return 2;
    auto w = static_cast<std::size_t>(kWindowWorkSeconds / mean_service);
    return std::clamp<std::size_t>(w, 1, kMaxWindow);
  }
};

/// The initializer's call, sent first to every worker; its failure breaks the pool.
class InitCall final : public RemoteTask {
 public:
  InitCall(const TaskCall& call, std::weak_ptr<ProcessPoolCore> core) : core_(std::move(core)) {
    task = call.task;
    count = 1;
    args = call.args;
  }
  bool start() noexcept override { return true; }
  void complete(Reader& results, std::uint32_t n, std::exception_ptr error) noexcept override;
  void fail(std::exception_ptr) noexcept override {}
  void cancel() noexcept override {}
  void drop() noexcept override { delete this; }

 private:
  std::weak_ptr<ProcessPoolCore> core_;
};

class ProcessPoolCore : public std::enable_shared_from_this<ProcessPoolCore> {
 public:
  explicit ProcessPoolCore(ProcessPoolOptions options)
      : options_(std::move(options)),
        max_workers_(options_.max_workers ? options_.max_workers : usable_cores()),
        guard_(asio::make_work_guard(io_)),
        queue_([this] { asio::post(io_, [self = shared_from_this()] { self->dispatch(); }); }) {}

  void start() {
    io_thread_ = std::thread([self = shared_from_this()] { self->run_io(); });
  }

  std::size_t max_workers() const { return max_workers_; }

  std::vector<int> worker_pids() const { return queue_.worker_pids(); }

  void enqueue(RemoteTask* task) { queue_.push(task); }

  void shutdown(bool wait, bool cancel_futures) {
    if (wait && std::this_thread::get_id() == io_thread_id_)
      throw Error(
          "shutdown(wait=true) called from a done-callback, which runs on the process pool's "
          "I/O thread: it would wait for itself; call shutdown(false) there");
    if (queue_.shut_down(cancel_futures))
      asio::post(io_, [self = shared_from_this()] { self->begin_drain(); });
    if (wait) join();
  }

  /// Lets the I/O thread finish by itself (the executor is destroyed on that thread).
  void detach_if_on_io_thread() {
    if (std::this_thread::get_id() == io_thread_id_) io_thread_.detach();
  }

  void join() {
    std::lock_guard lock(join_mutex_);
    if (io_thread_.joinable()) io_thread_.join();
  }

  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_; }

  void break_pool(const std::string& message);

 private:
  // ---- I/O thread ----------------------------------------------------------------------

  void run_io() {
    io_thread_id_ = std::this_thread::get_id();
    // A write to a dead worker must fail with EPIPE, not kill the program. Blocking SIGPIPE
    // on this thread (which does every write) leaves the program's own disposition alone.
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
    io_.run();
  }

  std::size_t in_flight_total() const {
    std::size_t n = 0;
    for (auto& w : workers_) n += w->in_flight.size();
    return n;
  }

  void dispatch() {
    std::vector<RemoteTask*> cancelled;
    for (;;) {
      auto queued = queue_.begin_dispatch();
      if (!queued) break;  // broken
      // Spawning blocks this thread for a few ms: fill the windows only when no worker is due.
      if (!should_spawn(*queued)) {
        fill_windows(cancelled);
        break;
      }
      if (!spawn_worker()) break;
    }
    for (auto* t : cancelled) t->drop();
    for (auto& w : workers_) flush(w);
    if (draining_) check_drained();
  }

  bool should_spawn(std::size_t queued) {
    // More work than workers, and room for another: start one (Python spawns on demand too).
    if (workers_.size() >= max_workers_ || start_failed_) return false;
    if (queued + in_flight_total() <= workers_.size()) return false;
    if (Clock::now() >= next_spawn_) return true;
    retry_spawn_later();
    return false;
  }

  std::size_t room(const WorkerSlot& w) const {
    if (w.gone || w.retiring || w.closing || w.in_flight.size() >= w.window()) return 0;
    std::size_t room = w.window() - w.in_flight.size();
    // Not retiring: it may take max_tasks_per_child - calls_sent more, at least one.
    if (options_.max_tasks_per_child)
      room = std::min(room, options_.max_tasks_per_child - w.calls_sent);
    return room;
  }

  // Hands queued calls to workers with room, round-robin. It takes only as many calls as
  // there is room for, so submitters wait for the lock only while they are taken; a call
  // cancelled while queued uses no room, so another round takes more.
  void fill_windows(std::vector<RemoteTask*>& cancelled) {
    for (;;) {
      std::size_t total = 0;
      for (auto& w : workers_) total += room(*w);
      if (total == 0) return;
      auto calls = queue_.take(total);
      if (calls.empty()) return;
      while (!calls.empty()) {
        bool progress = false;
        for (auto& w : workers_) {
          if (calls.empty()) break;
          if (room(*w) == 0) continue;
          RemoteTask* t = calls.pop_front();
          progress = true;
          if (!std::exchange(t->requeued, false) && !t->start()) {
            cancelled.push_back(t);  // cancelled while queued: never sent
            continue;
          }
          send(w, t);
        }
        if (!progress) {  // cannot happen while room() is exact; never spin if it is not
          queue_.give_back(calls);
          return;
        }
      }
    }
  }

  /// Respawning is rate-limited: when workers die faster than kCrashesPerWorkerPerSecond
  /// each, new ones start only after a growing pause, so crash loops cannot spin the CPU.
  void note_crash() {
    auto now = Clock::now();
    recent_crashes_.push_back(now);
    while (!recent_crashes_.empty() && now - recent_crashes_.front() > std::chrono::seconds(1))
      recent_crashes_.pop_front();
    if (recent_crashes_.size() > kCrashesPerWorkerPerSecond * max_workers_) {
      spawn_pause_ = std::min(std::max(spawn_pause_ * 2, kMinSpawnPause), kMaxSpawnPause);
      next_spawn_ = now + spawn_pause_;
    } else {
      spawn_pause_ = {};
    }
  }

  void retry_spawn_later() {
    if (spawn_timer_armed_) return;
    spawn_timer_armed_ = true;
    spawn_timer_.expires_at(next_spawn_);
    spawn_timer_.async_wait([self = shared_from_this()](boost::system::error_code) {
      self->spawn_timer_armed_ = false;
      self->dispatch();
    });
  }

  void send(const std::shared_ptr<WorkerSlot>& w, RemoteTask* t) {
    w->in_flight.push_back(t);
    if (w->in_flight.size() == 1) head_changed(w);
    write_call_frame(w->out, *t);
    if (options_.max_tasks_per_child && !dynamic_cast<InitCall*>(t) &&
        ++w->calls_sent >= options_.max_tasks_per_child)
      w->retiring = true;
  }

  void head_changed(const std::shared_ptr<WorkerSlot>& w) {
    w->head_started = Clock::now();
    if (!options_.task_timeout || !w->ready) return;
    if (w->in_flight.empty()) {
      w->timer.cancel();
      return;
    }
    w->timer.expires_after(std::chrono::duration_cast<Clock::duration>(*options_.task_timeout));
    RemoteTask* head = w->in_flight.front();
    w->timer.async_wait([self = shared_from_this(), w, head](boost::system::error_code ec) {
      if (ec || w->gone || w->in_flight.empty() || w->in_flight.front() != head) return;
      w->timed_out = head;
      self->kill_worker(w);
    });
  }

  void flush(const std::shared_ptr<WorkerSlot>& w) {
    if (w->write_busy || w->out.empty() || w->gone || !w->to.is_open()) return;
    w->write_busy = true;
    w->writing.swap(w->out);
    asio::async_write(w->to, asio::buffer(w->writing),
                      [self = shared_from_this(), w](boost::system::error_code ec, std::size_t) {
                        w->write_busy = false;
                        w->writing.clear();
                        if (ec) return;  // EPIPE: the read side reports the death
                        self->flush(w);
                        if (w->closing && w->out.empty()) w->to.close();
                      });
  }

  bool spawn_worker();
  void start_reading(const std::shared_ptr<WorkerSlot>& w);
  void on_frames(const std::shared_ptr<WorkerSlot>& w);
  void on_result(const std::shared_ptr<WorkerSlot>& w, Reader& r);
  void on_eof(const std::shared_ptr<WorkerSlot>& w);
  void on_exit(const std::shared_ptr<WorkerSlot>& w, int status);
  void start_failure(const std::shared_ptr<WorkerSlot>& w, const std::string& why, bool fatal);
  void kill_worker(const std::shared_ptr<WorkerSlot>& w);
  void close_channel(const std::shared_ptr<WorkerSlot>& w);
  void remove_worker(const std::shared_ptr<WorkerSlot>& w);
  void requeue_unstarted(const std::shared_ptr<WorkerSlot>& w);
  void begin_drain();
  void check_drained();

  const ProcessPoolOptions options_;
  const std::size_t max_workers_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread io_thread_;
  std::atomic<std::thread::id> io_thread_id_{};
  std::mutex join_mutex_;
  SubmissionQueue queue_;

  // I/O thread only
  std::vector<std::shared_ptr<WorkerSlot>> workers_;
  int start_failures_ = 0;
  bool start_failed_ = false;
  bool draining_ = false;
  std::deque<Clock::time_point> recent_crashes_;
  Clock::time_point next_spawn_{};
  Clock::duration spawn_pause_{};
  asio::steady_timer spawn_timer_{io_};
  bool spawn_timer_armed_ = false;
};

void InitCall::complete(Reader&, std::uint32_t, std::exception_ptr error) noexcept {
  if (!error) return;
  try {
    std::string why = "the process pool's initializer failed";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      why += ": " + std::string(e.what());
    } catch (...) {
    }
    if (auto core = core_.lock()) core->break_pool(why);
  } catch (...) {
  }
}

bool ProcessPoolCore::spawn_worker() {
  auto w = std::make_shared<WorkerSlot>(io_);
  try {
    LaunchedWorker launched = launch_worker(options_.start_method, io_.get_executor());
    w->proc.emplace(std::move(launched.process));
    w->started = std::move(launched.started);
    // assign() takes a descriptor only when it succeeds: release it from its Fd after.
    w->to.assign(launched.calls.get());
    launched.calls.release();
    w->from.assign(launched.replies.get());
    launched.replies.release();
  } catch (const std::exception& e) {
    start_failure(w, std::string("a worker process could not be started: ") + e.what(), true);
    return false;
  }
  w->pid = w->proc->id();
  workers_.push_back(w);
  queue_.add_worker(w->pid);
  // A worker that never says hello is a program that did not call cfx::init (or hung
  // before it): do not wait forever for it.
  w->timer.expires_after(kStartupTimeout);
  w->timer.async_wait([self = shared_from_this(), w](boost::system::error_code ec) {
    if (ec || w->ready || w->gone) return;
    self->start_failure(w,
                        "a worker process did not start serving within " +
                            std::to_string(kStartupTimeout.count()) +
                            " s: does main() call cfx::init(argc, argv) as its first line?",
                        true);
    self->kill_worker(w);
  });
  w->proc->async_wait([self = shared_from_this(), w](boost::system::error_code, int) {
    self->on_exit(w, w->proc->native_exit_code());
  });
  if (options_.initializer) send(w, new InitCall(*options_.initializer, weak_from_this()));
  start_reading(w);
  return true;
}

void ProcessPoolCore::start_reading(const std::shared_ptr<WorkerSlot>& w) {
  auto space = w->in.space();
  w->from.async_read_some(
      asio::buffer(space.data(), space.size()),
      [self = shared_from_this(), w](boost::system::error_code ec, std::size_t n) {
        if (ec) {
          self->on_eof(w);
          return;
        }
        w->in.commit(n);
        self->on_frames(w);
        if (!w->gone) self->start_reading(w);
        self->dispatch();
      });
}

void ProcessPoolCore::on_frames(const std::shared_ptr<WorkerSlot>& w) {
  while (auto frame = w->in.next()) {
    try {
      auto kind = frame->get<FrameKind>();
      if (kind == FrameKind::hello) {
        w->ready = true;
        start_failures_ = 0;
        w->timer.cancel();
        head_changed(w);  // arms task_timeout for a call sent before the hello
      } else if (kind == FrameKind::result) {
        on_result(w, *frame);
      }
    } catch (const std::exception&) {
      kill_worker(w);  // a malformed frame: this channel cannot be trusted any more
      return;
    }
  }
}

void ProcessPoolCore::on_result(const std::shared_ptr<WorkerSlot>& w, Reader& frame) {
  if (w->in_flight.empty()) throw SerializationError("a reply nobody asked for");
  Reply reply = read_reply(frame);  // before taking the call: a malformed reply kills the worker
  RemoteTask* t = w->in_flight.front();
  w->in_flight.pop_front();
  ++w->replies;
  double took = std::chrono::duration<double>(Clock::now() - w->head_started).count();
  w->mean_service = w->mean_service > 0 ? 0.8 * w->mean_service + 0.2 * took : took;
  head_changed(w);
  t->complete(reply.results, reply.count, std::move(reply.error));
  t->drop();
  if (w->retiring && w->in_flight.empty()) close_channel(w);
}

void ProcessPoolCore::close_channel(const std::shared_ptr<WorkerSlot>& w) {
  if (w->closing) return;
  w->closing = true;
  if (!w->write_busy && w->out.empty() && w->to.is_open()) w->to.close();
}

void ProcessPoolCore::kill_worker(const std::shared_ptr<WorkerSlot>& w) {
  if (w->killed || w->pid <= 0) return;
  w->killed = true;
  ::kill(-w->pid, SIGKILL);  // the whole group: the worker and anything its task started
  ::kill(w->pid, SIGKILL);   // in case it had not yet made its own group
}

void ProcessPoolCore::on_eof(const std::shared_ptr<WorkerSlot>& w) {
  if (w->gone) return;
  w->gone = true;
  // A crash: make sure the process and its descendants are gone; its exit status arrives
  // through proc.async_wait. A worker we asked to stop exits by itself.
  if (!w->closing || !w->in_flight.empty()) kill_worker(w);
}

void ProcessPoolCore::on_exit(const std::shared_ptr<WorkerSlot>& w, int status) {
  w->gone = true;
  w->timer.cancel();
  bool expected =
      w->closing && w->in_flight.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!expected) {
    if (!w->ready) {
      bool no_init = WIFEXITED(status) && WEXITSTATUS(status) == kNoInitExitStatus;
      start_failure(w,
                    no_init ? "a worker process started the program's main() instead of "
                              "serving: main() must call cfx::init(argc, argv) as its first line"
                            : "a worker process (pid " + std::to_string(w->pid) + ") " +
                                  describe_status(status) +
                                  " before it was ready; does main() call cfx::init(argc, argv) "
                                  "as its first line?",
                    no_init);
    } else if (!w->in_flight.empty() && w->head_was_running()) {
      RemoteTask* head = w->in_flight.front();
      w->in_flight.pop_front();
      std::string task = head->task ? head->task->name : "?";
      std::string where =
          "worker process " + std::to_string(w->pid) + " running task '" + task + "'";
      note_crash();
      if (dynamic_cast<InitCall*>(head)) {
        head->drop();  // every new worker would die the same way: no respawn loop
        break_pool("the process pool's initializer '" + task + "' killed its worker: " + where +
                   " " + describe_status(status));
      } else if (w->timed_out == head) {
        head->fail(std::make_exception_ptr(TimeoutError(
            "task '" + task + "' ran longer than task_timeout (" +
            std::to_string(options_.task_timeout->count()) + " s); its worker process " +
            std::to_string(w->pid) + " was killed and will be replaced")));
        head->drop();
      } else if (options_.on_worker_crash == OnWorkerCrash::break_pool) {
        w->in_flight.push_front(head);
        break_pool("A process in the process pool was terminated abruptly: " + where + " " +
                   describe_status(status));
      } else {
        head->fail(std::make_exception_ptr(WorkerCrashed(where + " " + describe_status(status))));
        head->drop();
      }
    }
  }
  requeue_unstarted(w);
  remove_worker(w);
  dispatch();
  if (draining_) check_drained();
}

void ProcessPoolCore::requeue_unstarted(const std::shared_ptr<WorkerSlot>& w) {
  // Calls behind the head never started: run them elsewhere, in their original order. The
  // initializer's call is the worker's own. Futures are failed outside the queue's lock:
  // their callbacks may submit.
  std::vector<RemoteTask*> unstarted, dropped;
  for (RemoteTask* t : w->in_flight)
    (dynamic_cast<InitCall*>(t) ? dropped : unstarted).push_back(t);
  w->in_flight.clear();
  std::optional<std::string> broken = queue_.requeue(unstarted);
  if (broken) dropped.insert(dropped.end(), unstarted.begin(), unstarted.end());
  for (RemoteTask* t : dropped) {
    if (broken) t->fail(std::make_exception_ptr(BrokenProcessPool(*broken)));
    t->drop();
  }
}

void ProcessPoolCore::remove_worker(const std::shared_ptr<WorkerSlot>& w) {
  boost::system::error_code ignored;
  w->to.close(ignored);
  w->from.close(ignored);
  workers_.erase(std::remove(workers_.begin(), workers_.end(), w), workers_.end());
  queue_.remove_worker(w->pid);
}

void ProcessPoolCore::start_failure(const std::shared_ptr<WorkerSlot>&, const std::string& why,
                                    bool fatal) {
  if (fatal || ++start_failures_ >= kMaxStartFailures) {
    start_failed_ = true;
    break_pool(why);
  }
}

void ProcessPoolCore::break_pool(const std::string& message) {
  auto queued = queue_.break_pool(message);
  if (!queued) return;  // broken already
  // Each future gets its own exception object.
  auto fail = [&](RemoteTask* t) {
    t->fail(std::make_exception_ptr(BrokenProcessPool(message)));
    t->drop();
  };
  while (!queued->empty()) fail(queued->pop_front());
  for (auto& w : workers_) {
    for (auto* t : w->in_flight) fail(t);
    w->in_flight.clear();
    kill_worker(w);
  }
  if (draining_) check_drained();
}

void ProcessPoolCore::begin_drain() {
  draining_ = true;
  check_drained();
}

void ProcessPoolCore::check_drained() {
  if (!queue_.drained()) return;  // queued work still runs
  for (auto& w : workers_)
    if (!w->in_flight.empty()) return;
  for (auto& w : workers_) close_channel(w);
  if (workers_.empty()) guard_.reset();  // io_.run() returns once the last handler ran
}

}  // namespace cfx::detail

namespace cfx {

ProcessPoolExecutor::ProcessPoolExecutor(ProcessPoolOptions options) : Executor(true) {
  detail::refuse_pool_in_worker();
  core_ = std::make_shared<detail::ProcessPoolCore>(std::move(options));
  core_->start();
}

ProcessPoolExecutor::~ProcessPoolExecutor() {
  detach_maps();
  if (core_->on_io_thread()) {
    core_->shutdown(false, false);
    core_->detach_if_on_io_thread();
    return;
  }
  core_->shutdown(true, false);
}

void ProcessPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  core_->shutdown(wait, cancel_futures);
}

std::size_t ProcessPoolExecutor::max_workers() const {
  return core_->max_workers();
}

std::vector<int> ProcessPoolExecutor::worker_pids() const {
  return core_->worker_pids();
}

void ProcessPoolExecutor::enqueue(detail::LocalTask*) {
  throw Error("ProcessPoolExecutor runs only registered tasks");
}

void ProcessPoolExecutor::enqueue_remote(detail::RemoteTask* task) {
  core_->enqueue(task);
}

}  // namespace cfx
