// The process pool's manager: the I/O thread's side of ProcessPoolExecutor. Internal.
//
// pool.cpp holds the I/O thread's routine work (dispatch into windows, the channels, worker
// start-up, retiring, shutdown), faults.cpp the fault policy (start failures, crashes,
// timeouts, a failing initializer, breaking the pool), wait_turn.cpp the turn: threads
// waiting for a result doing that work while the I/O thread stands by. Submitters reach it
// only through enqueue and shutdown; what they share with the I/O thread lives in
// SubmissionQueue.
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
#include <unordered_map>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/writable_pipe.hpp>

#include "backends/process/bulk_area.hpp"
#include "backends/process/channel.hpp"
#include "backends/process/fork_server.hpp"
#include "backends/process/launcher.hpp"
#include "backends/process/submission_queue.hpp"
#include "cfx/detail/shared_state.hpp"
#include "cfx/process_pool.hpp"
#include "lib/handed_over_code.hpp"
#include "lib/toolkit/descriptors.hpp"

namespace cfx::detail {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

/// A call sent to a worker, in the order sent. `task` is null once the pool has taken the
/// call back to run it elsewhere; the worker then answers it with `skipped`.
struct SentCall {
  RemoteTask* task;
  std::uint64_t id;
};

/// Why the pool killed a worker: what the messages of its death say.
enum class KillCause {
  none,
  timeout,    // its call ran past its timeout
  interrupt,  // Future::interrupt() of its call
  memory,     // above worker_memory_limit while running a call
  malformed,  // it wrote something that is not the reply expected
  channel,    // it closed its reply channel but did not exit
  server,     // its fork server died, and it did not die with it
  startup,    // it did not say hello in time
  broken,     // the pool broke
  stopped,    // terminate_workers() / kill_workers()
};

class ProcessPoolCore;
struct WorkerSlot;

/// The call slots of one worker (channel.hpp), shared with the calls sent to it so that
/// cancel(), running() and interrupt() reach them from any thread.
class WorkerCalls final : public CallSlots {
 public:
  WorkerCalls(SlotPage page, std::weak_ptr<ProcessPoolCore> core)
      : page_(std::move(page)), core_(std::move(core)) {}
  bool withdraw(std::uint64_t id) noexcept override;
  bool started(std::uint64_t id) const noexcept override;
  void interrupt(std::uint64_t id) noexcept override;

  std::atomic<std::uint64_t>* page() const noexcept { return page_.get(); }
  int file() const noexcept { return page_.file(); }
  std::weak_ptr<WorkerSlot> worker;  // set once, on the I/O thread, before any call is sent

 private:
  SlotPage page_;
  std::weak_ptr<ProcessPoolCore> core_;
};

/// One worker process and its channel. Touched only on the I/O thread.
struct WorkerSlot {
  explicit WorkerSlot(asio::io_context& io) : to(io), from(io), exit_watch(io), timer(io) {}
  ~WorkerSlot();

  asio::writable_pipe to;               // calls
  asio::posix::stream_descriptor from;  // replies, read without waiting (read_available)
  // Its pidfd, readable once it exits; the pool reaps it with waitid (faults.cpp).
  asio::posix::stream_descriptor exit_watch;
  bool reaped = false;
  std::shared_ptr<ForkServer> server;  // whose child it is (forkserver); null: the pool's
  asio::steady_timer timer;            // startup deadline, then the timeout of the running call
  int pid = 0;
  std::shared_ptr<WorkerCalls> calls;

  std::deque<SentCall> in_flight;  // sent and not yet answered, in order
  std::uint64_t next_id = 1;
  Clock::time_point head_since{};  // when the front call became the front
  double mean_service = 0;         // seconds per call, smoothed
  int timer_deferrals = 0;         // timeouts put off because a reply was arriving

  Fd handles;  // the descriptor channel: arguments' descriptors out, results' in
  std::unique_ptr<DescriptorOutbox> outbox;
  std::unique_ptr<DescriptorInbox> inbox;

  // Big calls out and big results in, through the worker's shared file (bulk_area.hpp).
  std::optional<BulkArea> calls_area, results_area;
  // Small frames while the other end watches for them (channel.hpp, "Mailboxes").
  std::optional<MailBox> call_box, reply_box;
  std::vector<char> mail;           // the last reply taken from reply_box
  std::uint64_t replies_taken = 0;  // frames, counted in kRepliesTakenWord

  std::vector<char> out, writing;        // queued and in-progress writes
  std::uint64_t frames_unannounced = 0;  // frames in `out`, not yet in kCallsWrittenWord
  bool write_busy = false;
  FrameSplitter in{max_frame_length()};
  bool reading = false;                // a wait for readable (or the read of the rest) is pending
  std::uint64_t replies_seen = 0;      // its kRepliesWrittenWord when last read (wait_turn.cpp)
  std::uint64_t bytes_read = 0;        // from `from`, ever
  std::uint64_t read_before_mail = 0;  // bytes_read when the reply mailbox was last seen empty

  std::size_t calls_sent = 0;
  bool ready = false;              // said hello
  bool retiring = false;           // no more calls (max_tasks_per_child, memory): close when idle
  bool closing = false;            // its channel was closed on purpose: exit 0 is expected
  bool gone = false;               // its channel reached its end
  std::optional<int> exit_status;  // it exited; its death is handled once `gone`
  bool buried = false;             // its death was handled

  KillCause kill_cause = KillCause::none;
  std::uint64_t kill_call = 0;  // the call it was killed for (0: none in particular)
  std::string kill_reason;      // why, for the messages of its death

  /// How many calls it may hold: about kWindowWorkSeconds of work.
  std::size_t window() const;
  /// The slot state of call `id`.
  std::optional<slots::State> state(std::uint64_t id) const {
    return slots::state(calls->page(), id);
  }
};

class ProcessPoolCore;

/// A write of this thread's failed with EPIPE (a dead worker): if it is a thread that waits
/// for a result and holds the pool's turn, the SIGPIPE raised is taken back (wait_turn.cpp).
void note_pipe_signal() noexcept;
/// Before a write to a worker's pipe: a thread that waits for a result and holds the pool's
/// turn blocks SIGPIPE until its watch ends (wait_turn.cpp). A call sent through a mailbox
/// needs no write, and no change to the thread's signal mask.
void guard_pipe_writes() noexcept;

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

class ProcessPoolCore : public std::enable_shared_from_this<ProcessPoolCore>, private UserCodeSink {
 public:
  explicit ProcessPoolCore(ProcessPoolOptions options);

  void start();
  /// Instead of start(): the calling thread becomes the I/O thread and drives the pool with
  /// run_for() (an MPI serving rank, which waits for rank 0's calls and its workers' replies
  /// in one place: docs/mpi.md, "Design"). Only that thread may then call run_for(), and
  /// shutdown(false): it runs the pool down with run_for() until that returns false.
  void start_driven();
  /// A driven pool: runs the handlers that are ready, after waiting up to `limit` for the
  /// first one. Returns false once the pool has finished (shut down, every worker reaped).
  bool run_for(Clock::duration limit);
  asio::io_context& io_context() { return io_; }
  std::size_t max_workers() const { return max_workers_; }
  std::vector<int> worker_pids() const { return queue_.worker_pids(); }
  void enqueue(RemoteTask* task);
  void shutdown(bool wait, bool cancel_futures);
  /// Sends `signal` to every worker and shuts down: unstarted and running calls end
  /// cancelled. Returns when every worker is reaped.
  void stop_workers(int signal);
  /// Lets the I/O thread finish by itself (the executor is destroyed on that thread).
  void detach_if_on_io_thread();
  void join();
  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_; }
  /// Kills the worker of call `id` if it still runs it (Future::interrupt). Any thread.
  void interrupt(std::weak_ptr<WorkerSlot> worker, std::uint64_t id);
  /// Fails every queued and running call with BrokenProcessPool(message), and every later
  /// submit. I/O thread only.
  void break_pool(const std::string& message);

  // wait_turn.cpp: threads waiting for a result drive the pool while the I/O thread stands by
  /// A thread starts or stops watching one of this pool's futures (WaitHelper).
  void begin_help() noexcept;
  void end_help() noexcept;
  /// One look of a watching thread: if it gets the turn, it does the I/O thread's work (sends
  /// the calls queued, takes in replies); true if it did any.
  bool help() noexcept;

 private:
  using Worker = std::shared_ptr<WorkerSlot>;

  // pool.cpp: dispatch and windows
  void run_io();
  void begin_io();
  void end_io();
  void dispatch();
  bool should_spawn(std::size_t queued);
  std::size_t in_flight_total() const;
  std::size_t room(const WorkerSlot& w) const;
  bool fill_windows(std::vector<RemoteTask*>& cancelled);
  std::size_t hand_out(SubmissionQueue::Calls& calls, std::vector<RemoteTask*>& cancelled);
  Worker least_loaded_with_room() const;
  bool send(const Worker& w, RemoteTask* t);
  bool send_handles(const Worker& w, RemoteTask* t, std::uint64_t id);
  void expect_result(const Worker& w, const RemoteTask& t, std::uint64_t id);
  void record_result_size(const TaskEntry* task, std::size_t bytes);
  void rebalance(std::vector<RemoteTask*>& cancelled);
  std::vector<RemoteTask*> take_back_unstarted(const Worker& w, bool keep_first);
  /// Puts calls back at the front of the queue; once the pool is broken, fails them with
  /// BrokenProcessPool instead and returns false.
  bool requeue(const std::vector<RemoteTask*>& calls);
  void head_changed(const Worker& w);
  // pool.cpp: workers and their channels
  void start_launch();
  LaunchedWorker launch_on_launcher_thread();
  void on_launched(std::optional<LaunchedWorker> launched, const std::string& error);
  bool adopt_worker(LaunchedWorker launched);
  void flush(const Worker& w);
  bool mail_call(const Worker& w);
  void start_reading(const Worker& w);
  void on_readable(const Worker& w, boost::system::error_code ec);
  enum class ReadOutcome { drained, more, ended };
  ReadOutcome read_available(const Worker& w);
  void read_to_end(const Worker& w);
  /// `n` bytes were read from the worker's reply pipe into `in`.
  void note_read(const Worker& w, std::size_t n);
  void on_frames(const Worker& w);
  bool take_mail(const Worker& w);
  void check_header(const WorkerSlot& w, const FrameHeader& h) const;
  void on_frame(const Worker& w, Frame& frame);
  void on_result(const Worker& w, Frame& frame);
  void close_channel(const Worker& w);
  void remove_worker(const Worker& w);
  void begin_drain();
  void check_drained();

  // wait_turn.cpp
  void make_helper();
  bool stand_by_wanted() const;
  void stand_by();
  bool look(bool send_first, Clock::duration spin);
  void look_round();
  bool watch_replies(Clock::duration spin) const;
  bool read_all_replies();
  bool read_mailbox(const Worker& w);
  static std::uint64_t replies_written(const WorkerSlot& w);
  /// `w` has written a reply since it was last read (or a task moved its count).
  static bool reply_waiting(const WorkerSlot& w);
  /// kWatchedWord in every worker's page, where it changed (`again`: in every page).
  void mark_watched(bool watched, bool again = false);
  /// kWatcherCoreWord in every worker's page: `core` plus one, or 0.
  void mark_watcher_core(unsigned core);
  bool owed() const;
  /// An async_write to a worker is pending (flush found its pipe full).
  bool writing() const;
  /// Wakes the I/O thread if it stands by, to run the user code handed over and to look at
  /// the pool.
  void rouse() noexcept;
  /// A call was queued: rouses the I/O thread if it stands by and nobody watches, unless a
  /// watch has just ended (kQuietGap, wait_turn.cpp).
  void rouse_if_unwatched() noexcept;
  void take(StateBase& state, CallbackNode* callbacks) noexcept override;
  /// asio::post to the I/O thread, rousing it if it stands by: for work that must not wait
  /// for a watching thread's next look.
  template <class F>
  void post_and_rouse(F&& f) {
    asio::post(io_, std::forward<F>(f));
    rouse();
  }

  // faults.cpp: the fault policy
  void watch_start(const Worker& w);
  void watch_exit(const Worker& w);
  void watch_server(const std::shared_ptr<ForkServer>& server);
  void arm_call_timer(const Worker& w);
  void on_call_timer(const Worker& w, std::uint64_t id);
  void watch_busy();
  void check_memory(const Worker& w, bool between_calls);
  void on_interrupt(const Worker& w, std::uint64_t id);
  void stop_all(int signal);
  void on_channel_end(const Worker& w);
  void on_exit(const Worker& w, int status);
  void bury(const Worker& w);
  void exited_before_ready(const Worker& w, int status);
  void charge_running(const Worker& w, RemoteTask* t, std::uint64_t id, int status,
                      std::vector<RemoteTask*>& retry);
  void start_failure(const std::string& why, bool fatal);
  /// SIGKILLs the worker's process group; `cause` and `reason` say why, in the messages of
  /// its death, and `call` which call it was killed for.
  void kill_worker(const Worker& w, KillCause cause, std::uint64_t call, std::string reason);

  const ProcessPoolOptions options_;
  const std::size_t max_workers_;
  // The launcher thread starts workers (start_launch); it lives as long as the I/O thread.
  // Its io_context is used by no other thread (launch_worker's requirement).
  asio::io_context launch_io_;
  asio::executor_work_guard<asio::io_context::executor_type> launch_guard_{
      asio::make_work_guard(launch_io_)};
  std::thread launch_thread_;
  std::shared_ptr<ForkServer> fork_server_;        // StartMethod::forkserver; launcher thread only
  asio::steady_timer launch_reactor_{launch_io_};  // made now: see reactor_ below
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  // Asio creates its reactor (an epoll and an eventfd descriptor) with the first timer. Made
  // here, with the pool, it exists before any launch; made lazily at a worker's first timer,
  // it would throw on the I/O thread when descriptors run out.
  asio::steady_timer reactor_{io_};
  asio::steady_timer busy_timer_{io_};  // looks at workers running calls (watch_busy)
  asio::steady_timer stop_timer_{io_};  // terminate_workers(): SIGKILL after a grace
  // forkserver: the death of the newest workers' fork server (faults.cpp, watch_server)
  std::shared_ptr<ForkServer> watched_server_;
  asio::posix::stream_descriptor server_watch_{io_};
  std::thread io_thread_;
  std::atomic<std::thread::id> io_thread_id_{};
  bool driven_ = false;  // start_driven: the owner's thread runs io_
  std::mutex join_mutex_;
  SubmissionQueue queue_;

  // The turn (wait_turn.cpp). While the I/O thread stands by, the thread that holds turn_
  // drives the pool in its place.
  std::shared_ptr<WaitHelper> helper_;  // set on every call: its waiters help this pool
  std::mutex turn_;
  std::atomic<bool> standing_by_{false};     // changes under turn_
  std::atomic<bool> stand_by_asked_{false};  // a watcher posted to bring the I/O thread out
  std::atomic<bool> asleep_{false};          // the I/O thread sleeps on rouse_
  std::atomic<std::uint32_t> rouse_{0};      // the stand-by's futex word
  std::atomic<int> helpers_{0};              // threads watching now
  std::atomic<std::uint64_t> helps_{0};      // watches begun, ever
  std::atomic<Clock::rep> watch_ended_{0};   // when the last watcher left (end_help)
  Clock::time_point last_look_{};            // the last io_.poll() while standing by (turn_)
  bool watched_marked_ = false;              // kWatchedWord as last stored (turn_)
  std::size_t workers_marked_ = 0;           // in how many workers' pages
  unsigned core_marked_ = 0;                 // kWatcherCoreWord as last stored (turn_)
  std::size_t workers_core_marked_ = 0;      // in how many workers' pages
  HandedOverCode user_code_;                 // by watching threads (take)

  // I/O thread only (while it stands by: the holder of turn_)
  std::vector<Worker> workers_;
  int start_failures_ = 0;  // workers in a row that failed before their hello
  int start_kills_ = 0;     // workers in a row SIGKILLed from outside before their hello
  bool start_failed_ = false;
  bool draining_ = false;
  std::size_t launching_ = 0;  // launches posted to the launcher thread, not yet adopted
  bool stopping_ = false;      // stop_workers: every call ends cancelled, no new worker
  bool watching_busy_ = false;
  // The encoded sizes of each task's last two single results, when big (expect_result).
  struct ResultSizes {
    std::size_t last = 0;
    std::size_t before = 0;
  };
  std::unordered_map<const TaskEntry*, ResultSizes> result_sizes_;
};

}  // namespace cfx::detail
