// Rank 0: MpiPoolExecutor and its MPI thread, which sends calls to the serving ranks and
// completes their futures from the results (docs/mpi.md, "Design").
//
// Submitters share only the SubmissionQueue (the process backend's, unchanged) with the MPI
// thread; everything else here belongs to that thread. A rank holds at most its window of
// calls (about a millisecond of work per slot, at least two calls per slot), so the backlog
// stays on rank 0, where a pending future can still be cancelled.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backends/mpi/protocol.hpp"
#include "backends/mpi/world.hpp"
#include "backends/process/channel.hpp"
#include "backends/process/launcher.hpp"
#include "backends/process/submission_queue.hpp"
#include "cfx/detail/resumption.hpp"
#include "cfx/detail/shared_sync.hpp"
#include "cfx/errors.hpp"
#include "cfx/mpi_pool.hpp"
#include "lib/handed_over_code.hpp"

namespace cfx {
namespace detail {
class MpiPoolCore;

namespace {

using mpi::Clock;

constexpr std::size_t kMaxWindowPerSlot = 64;
constexpr double kWindowWorkSeconds = 0.001;  // the process pool's figure (pool.cpp)
/// A rank whose calls take less than this (round trip included) is watched on the core
/// while it owes results (mpi::Idler::kSpin).
constexpr double kShortCallSeconds = 100e-6;
/// How long rank 0 waits for the serving ranks to answer open and close.
constexpr std::chrono::seconds kHandshakeLimit{60};
/// The longest stand_by: the MPI thread looks round at least this often meanwhile.
constexpr auto kStandByLimit = std::chrono::milliseconds(1);

std::string ranks_hint(int size) {
  return "start the program with `mpiexec -n N+1 ./prog` (N serving ranks; as root add "
         "--allow-run-as-root, with more ranks than cores --oversubscribe) and call "
         "cfx::init(argc, argv) first in main" +
         (size > 0
              ? " (this launch has " + std::to_string(size) + " rank" + (size == 1 ? "" : "s") + ")"
              : std::string());
}

/// The calls sent to the serving ranks can no longer be withdrawn (they may be starting
/// there): to their futures they are running. interrupt() still reaches them, and a thread
/// waiting for one of them helps rank 0's MPI thread (MpiPoolCore::help).
class SentCalls final : public CallSlots, public WaitHelper {
 public:
  explicit SentCalls(std::weak_ptr<MpiPoolCore> core) : core_(std::move(core)) {}
  bool withdraw(std::uint64_t) noexcept override { return false; }
  bool started(std::uint64_t) const noexcept override { return true; }
  void interrupt(std::uint64_t id) noexcept override;
  WaitHelper* helper() noexcept override { return this; }
  void begin() noexcept override;
  bool help() noexcept override;
  void end() noexcept override;

 private:
  std::weak_ptr<MpiPoolCore> core_;
};

/// The serving ranks that died in this job (under `mpiexec --enable-recovery` the job goes
/// on): later executors leave them out, and so does cfx::finalize.
class DeadRanks {
 public:
  void add(int rank) {
    std::lock_guard lock(mutex_);
    ranks_.push_back(rank);
  }
  std::vector<int> list() const {
    std::lock_guard lock(mutex_);
    return ranks_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<int> ranks_;
};

DeadRanks& dead_ranks() {
  static DeadRanks& d = *new DeadRanks;  // never destroyed: finalize runs at exit
  return d;
}

/// A pidfd of a process of this node (not a child: a rank started by MPI's daemon); an
/// empty Fd where the kernel has none (before Linux 5.3): that rank's death goes unseen.
Fd open_pidfd(int pid) {
  return Fd(pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1);
}

bool exited(const Fd& pidfd) {
  if (pidfd.get() < 0) return false;
  pollfd p{pidfd.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

/// Watches the pidfds of the serving ranks of this node from a thread of its own, so that
/// the MPI thread, asleep on its doorbell, learns of a death at once: it rings rank 0's
/// doorbell, and the MPI thread buries the rank. Without a rank to watch, no thread.
class RankWatcher {
 public:
  RankWatcher() = default;
  RankWatcher(const RankWatcher&) = delete;
  RankWatcher& operator=(const RankWatcher&) = delete;
  ~RankWatcher() { stop(); }

  template <class Ranks>
  void start(const Ranks& ranks) {
    for (const auto& r : ranks)
      if (r.exit.get() >= 0) fds_.push_back({r.exit.get(), POLLIN, 0});
    if (fds_.empty()) return;
    stop_ = Fd(::eventfd(0, EFD_CLOEXEC));
    if (stop_.get() < 0) return;  // out of descriptors: deaths go unseen, as on another node
    fds_.push_back({stop_.get(), POLLIN, 0});
    thread_ = std::thread([this] { watch(); });
  }
  /// True once a watched rank has exited.
  bool fired() const { return fired_.load(std::memory_order_acquire); }
  void stop() {
    if (!thread_.joinable()) return;
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }

 private:
  void watch() {
    while (!fds_.empty()) {
      if (::poll(fds_.data(), fds_.size(), -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds_.back().revents) return;  // stop
      for (std::size_t i = 0; i + 1 < fds_.size();) {
        if (fds_[i].revents) {
          fired_.store(true, std::memory_order_release);
          fds_.erase(fds_.begin() + static_cast<std::ptrdiff_t>(i));
        } else {
          ++i;
        }
      }
      if (fired()) mpi::doorbell::ring(0);
      if (fds_.size() == 1) return;  // every rank watched has died
    }
  }

  std::vector<pollfd> fds_;  // the pidfds, then the stop eventfd
  Fd stop_;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

}  // namespace

class MpiPoolCore : public std::enable_shared_from_this<MpiPoolCore>, private UserCodeSink {
 public:
  explicit MpiPoolCore(const MpiPoolOptions& options)
      : queue_([this] { wake(); }), options_(options) {}

  /// Opens the executor on every serving rank (their local pools start) and learns their
  /// slots. Runs on the constructing thread, before the MPI thread exists.
  void open() {
    const int size = mpi::launch().size;
    std::vector<char> body;
    Writer w(body);
    w.put(static_cast<std::uint64_t>(options_.workers_per_rank));
    w.put(static_cast<std::uint64_t>(options_.max_tasks_per_child));
    w.put(static_cast<std::uint64_t>(options_.max_retries));
    w.put(options_.task_timeout ? options_.task_timeout->count() : 0.0);
    const auto dead = dead_ranks().list();
    auto live = [&](int r) { return std::find(dead.begin(), dead.end(), r) == dead.end(); };
    for (int r = 1; r < size; ++r) {
      if (!live(r)) continue;
      sending_.send(r, mpi::kOpen, body);
    }
    mpi::drain(sending_);
    for (int r = 1; r < size; ++r) {
      if (!live(r)) continue;
      auto m = mpi::wait_message(r, mpi::kReady, kHandshakeLimit);
      if (!m)
        throw BrokenExecutor("MPI backend: serving rank " + std::to_string(r) +
                             " did not answer within " + std::to_string(kHandshakeLimit.count()) +
                             " s");
      Reader in(m->bytes.data(), m->bytes.size());
      Rank rank;
      rank.rank = r;
      rank.slots = static_cast<std::size_t>(in.get<std::uint64_t>());
      rank.host = std::string(in.get_string());
      rank.pid = static_cast<int>(in.get<std::int64_t>());
      if (mpi::doorbell::local(r)) rank.exit = open_pidfd(rank.pid);
      slots_ += rank.slots;
      ranks_.push_back(std::move(rank));
    }
    if (ranks_.empty())
      throw BrokenExecutor("MPI backend: every serving rank of this job has died");
  }

  void start() {
    watcher_.start(ranks_);
    calls_ = std::make_shared<SentCalls>(weak_from_this());
    thread_ = std::thread([self = shared_from_this(), ended = ended_]() mutable {
      self->thread_id_.store(std::this_thread::get_id());
      mark_delivery_thread();  // coroutines awaiting our futures resume elsewhere (docs/async.md)
      try {
        self->run();
      } catch (const std::exception& e) {
        abort_job("rank 0's MPI thread", e);
      }
      self.reset();  // the core may end here: before a joiner of a detached thread goes on
      ended->store(true);
      ended->notify_all();
    });
  }

  std::size_t max_workers() const { return slots_; }

  /// Queues the call for the MPI thread. A call to an executor with nothing in flight (one
  /// call at a time: submit, result, submit) the submitting thread sends itself, if the MPI
  /// thread is not at its turn: handing it over cost a wake-up or a yield, 10% of a round
  /// trip. Calls that follow others in flight wait for the MPI thread, which sends them
  /// several to a message.
  void enqueue(RemoteTask* task) {
    // (From a done-callback, the MPI thread holds the turn already.)
    if (!idle_.load(std::memory_order_acquire) || on_own_thread()) return queue_.push(task);
    std::vector<RemoteTask*> too_big;
    {
      std::unique_lock turn(turn_, std::try_to_lock);
      if (!turn || !sent_.empty()) return queue_.push(task);
      queue_.push(task, false);  // not rung: the MPI thread would only find it gone
      try {
        dispatch(&too_big);
        sending_.progress();
      } catch (const std::exception& e) {  // as on the MPI thread: calls taken would hang
        abort_job("a thread sending its call", e);
      }
      // Left unsent (no rank had room), or a send not finished: for the MPI thread.
      if (!queue_.drained() || !sending_.empty()) wake();
    }
    // Failed outside the turn: their callbacks may submit, or shut the executor down.
    for (RemoteTask* t : too_big) fail_too_big(t);
  }

  /// A thread waiting for one of this executor's futures does the MPI thread's round, if no
  /// one else holds the turn: takes in the results that have come, sends the calls queued
  /// behind them, and moves sends on. The MPI thread would do the same, and then hand the
  /// results over: one more wake-up or watch per round trip (docs/mpi.md, "Design"). The
  /// futures are completed after the turn: their callbacks may submit, or shut down.
  bool help() noexcept {
    if (on_own_thread()) return false;  // a callback of the MPI thread's: it holds the turn
    std::vector<mpi::Message> messages;
    std::vector<Answered> answered;
    std::vector<RemoteTask*> too_big;
    {
      std::unique_lock turn(turn_, std::try_to_lock);
      if (!turn || closed_) return false;
      try {
        while (auto m = mpi::poll(MPI_ANY_SOURCE)) {
          messages.push_back(std::move(*m));
          take_results(messages.back(), answered);
        }
        if (!answered.empty()) dispatch(&too_big);
        sending_.progress();
      } catch (const std::exception& e) {
        abort_job("a thread waiting for a result", e);
      }
      // The next submit may send its call itself (enqueue), as after a turn of the MPI thread.
      idle_.store(sent_.empty() && sending_.empty(), std::memory_order_release);
      if (answered.empty() && too_big.empty()) return !messages.empty();
      std::lock_guard lock(mutex_);
      ++finishing_;  // the MPI thread does not leave before these futures are complete
    }
    {
      // Their callbacks and coroutines run on the MPI thread, as for the results it takes in:
      // this thread only waits for its own.
      DivertUserCode divert(*this);
      for (auto& a : answered) finish(a);
      for (RemoteTask* t : too_big) fail_too_big(t);
    }
    std::lock_guard lock(mutex_);
    if (--finishing_ == 0 && draining_) wake();
    return true;
  }
  /// Future::interrupt() of a call sent: the MPI thread passes it on to the call's rank.
  void request_interrupt(std::uint64_t id) {
    {
      std::lock_guard lock(mutex_);
      interrupts_.push_back(id);
    }
    wake();
  }

  /// A thread starts or stops helping. While one helps, the MPI thread stands by (stand_by);
  /// the last to stop rouses it if results are still owed.
  void begin_help() noexcept { helpers_.fetch_add(1); }
  void end_help() noexcept {
    if (helpers_.fetch_sub(1) == 1 && owed_.load() > 0) rouse();
  }

  void shutdown(bool wait, bool cancel_futures) {
    if (wait && on_own_thread())
      throw Error(
          "shutdown(wait=true) called from a done-callback, which runs on the MPI executor's "
          "thread: it would wait for itself; call shutdown(false) there");
    if (queue_.shut_down(cancel_futures)) {
      {
        std::lock_guard lock(mutex_);
        draining_ = true;
      }
      wake();
    }
    if (wait) join();
  }
  bool shut_down() {
    std::lock_guard lock(mutex_);
    return draining_;
  }
  /// Returns once the MPI thread has ended, also one that detached (the next executor and
  /// cfx::finalize must not use MPI beside it). Not on the MPI thread itself.
  void join() {
    std::unique_lock lock(join_mutex_);
    if (on_own_thread()) return;
    if (thread_.joinable()) return thread_.join();
    const bool wait_for_end = detached_;
    lock.unlock();
    if (wait_for_end) ended_->wait(false);
  }
  bool on_own_thread() const { return std::this_thread::get_id() == thread_id_.load(); }
  /// Lets the MPI thread, which is destroying the executor, finish alone. A thread already in
  /// join() holds join_mutex_ and joins this one once it ends: then the thread is left to it,
  /// as detaching under its join would be a data race on thread_.
  void detach_if_on_own_thread() {
    std::unique_lock lock(join_mutex_, std::try_to_lock);
    if (!lock || !on_own_thread() || !thread_.joinable()) return;
    thread_.detach();
    detached_ = true;
  }

 private:
  struct Rank {
    int rank = 0;
    std::size_t slots = 0;
    std::string host;
    int pid = 0;
    Fd exit;            // its pidfd, readable once it exits (ranks on this node only)
    bool dead = false;  // it died: no more calls go to it
    std::size_t in_flight = 0;
    double mean_service = 0;  // seconds a call spends at the head of a slot, smoothed
    Clock::time_point last_done{};
    std::vector<char> out;  // calls to send in this round
    std::size_t window() const {
      if (dead) return 0;
      if (mean_service <= 0) return 2 * slots;
      auto per_slot = static_cast<std::size_t>(kWindowWorkSeconds / mean_service);
      return slots * std::clamp<std::size_t>(per_slot, 2, kMaxWindowPerSlot);
    }
  };
  struct Sent {
    RemoteTask* task;
    std::size_t rank;  // index in ranks_
    Clock::time_point at;
  };

  /// UserCodeSink: the user code of a future a waiting thread completed (help), for the MPI
  /// thread to run.
  void take(StateBase& state, CallbackNode* callbacks) noexcept override {
    if (user_code_.keep(state, callbacks)) wake();
  }
  /// Runs the user code waiting threads handed over; true if there was any.
  bool run_user_code() { return user_code_.run(); }

  /// Ends the MPI thread's wait. With the queue's lock held (SubmissionQueue's contract):
  /// takes no lock.
  void wake() {
    mpi::doorbell::ring(0);
    rouse();
  }
  /// Ends the MPI thread's stand_by.
  void rouse() noexcept {
    rouse_.fetch_add(1);
    if (standing_by_.load()) futex_wake(rouse_, 1);
  }
  /// While threads that wait for results take them in (help), the MPI thread sleeps off the
  /// doorbell: a serving rank's ring then costs it no futex call, and this thread no wake-up
  /// and no turn. A submit that queues its call, an interrupt, shutdown and the last helper
  /// to leave with results owed rouse it; it looks round every kStandByLimit anyway.
  void stand_by(std::uint32_t ticket) {
    const auto seq = rouse_.load();
    standing_by_.store(true);
    if (helpers_.load() > 0 && mpi::doorbell::ticket() == ticket)
      futex_wait(rouse_, seq, Clock::now() + kStandByLimit);
    standing_by_.store(false);
  }

  void run() {
    mpi::Idler idler;
    for (;;) {
      // Taken before looking for work: a ring after the look (a submit, an interrupt, a
      // result) ends the wait below at once.
      const auto ticket = mpi::doorbell::ticket();
      const bool ran = run_user_code();  // before the turn: it may submit, or shut down
      std::unique_lock turn(turn_, std::try_to_lock);
      if (!turn) {  // a submitter is sending its call (enqueue): a few microseconds
        std::this_thread::yield();
        continue;
      }
      bool busy = ran | receive();
      if (watcher_.fired()) busy |= bury_dead_ranks();
      busy |= send_interrupts();
      busy |= dispatch();
      busy |= sending_.progress();
      if (busy) {
        idler.reset();
        continue;
      }
      const bool owed = !sent_.empty();
      const bool sending = !sending_.empty();
      const bool watch = !owed || short_calls();
      const bool drained = queue_.drained();  // before mutex_: wake() nests them the other way
      {
        std::lock_guard lock(mutex_);
        if (!owed && !sending && draining_ && drained && finishing_ == 0 && user_code_.empty())
          break;
      }
      idle_.store(!owed && !sending, std::memory_order_release);
      turn.unlock();
      // Results ring this rank's doorbell when they come from its node; from another node, or
      // while a send needs MPI to progress, or a message announced is not in yet, the wait is
      // bounded, to poll. When the answer
      // should come at once (short calls out, or a submit that tends to follow a result), the
      // wait first watches the doorbell on the core for a moment.
      if (helpers_.load() > 0 && !sending)
        stand_by(ticket);
      else
        idler.wait(ticket, sending || !mpi::doorbell::quiet(), watch);
      idle_.store(false, std::memory_order_relaxed);
    }
    std::lock_guard turn(turn_);
    closed_ = true;
    close();
    watcher_.stop();
  }

  /// A serving rank of this node died (the watcher saw its pidfd): its calls fail, it gets no
  /// more, and the job is told. Without `mpiexec --enable-recovery`, MPI ends the whole job
  /// at once anyway (docs/mpi.md, "What happens on each fault"); rank 0 reports it first.
  bool bury_dead_ranks() {
    bool any = false;
    for (auto& rank : ranks_) {
      if (rank.dead || !exited(rank.exit)) continue;
      any = true;
      rank.dead = true;
      dead_ranks().add(rank.rank);
      const std::string who = "MPI serving rank " + std::to_string(rank.rank) + " (pid " +
                              std::to_string(rank.pid) + " on host " + rank.host + ")";
      std::fprintf(stderr,
                   "cfx: %s died with %zu call(s) in flight; they fail with BrokenExecutor. "
                   "MPI ends the job when one of its ranks dies, unless mpiexec runs with "
                   "--enable-recovery\n",
                   who.c_str(), rank.in_flight);
      std::fflush(stderr);
      const auto index = static_cast<std::size_t>(&rank - ranks_.data());
      for (auto it = sent_.begin(); it != sent_.end();) {
        if (it->second.rank != index) {
          ++it;
          continue;
        }
        RemoteTask* task = it->second.task;
        it = sent_.erase(it);
        task->detach();
        task->fail(std::make_exception_ptr(BrokenExecutor(
            who + " died while it held this call of task '" + task->task->name + "'")));
        task->drop();
      }
      rank.in_flight = 0;
    }
    owed_.store(sent_.size());
    if (std::all_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.dead; }))
      if (auto calls = queue_.break_pool("MPI backend: every serving rank has died"))
        while (!calls->empty()) {
          RemoteTask* task = calls->pop_front();
          task->fail(
              std::make_exception_ptr(BrokenExecutor("MPI backend: every serving rank has died")));
          task->drop();
        }
    return any;
  }

  /// A call a serving rank has answered, taken off the books: `frame` is the rest of its
  /// result frame after the kind and id (in the message it came in), to complete its future
  /// with.
  struct Answered {
    RemoteTask* task;
    Reader frame;
  };

  /// Takes every message that has arrived and completes the calls they answer; true if any
  /// did.
  bool receive() {
    bool any = false;
    std::vector<Answered> answered;
    while (auto m = mpi::poll(MPI_ANY_SOURCE)) {
      any = true;
      take_results(*m, answered);
      for (auto& a : answered) finish(a);
      answered.clear();
    }
    return any;
  }

  /// Takes the calls that message `m` answers off the books, into `answered`.
  void take_results(const mpi::Message& m, std::vector<Answered>& answered) {
    if (m.tag != mpi::kResults) {
      std::fprintf(stderr, "cfx: MPI backend: unexpected message %d from rank %d\n", m.tag,
                   m.source);
      return;
    }
    Reader in(m.bytes.data(), m.bytes.size());
    while (in.remaining() > 0) {
      auto length = in.get<std::uint64_t>();
      Reader frame(in.take(length), length);
      frame.get<FrameKind>();
      auto it = sent_.find(frame.get<std::uint64_t>());
      if (it == sent_.end()) continue;
      Sent done = it->second;
      sent_.erase(it);
      Rank& rank = ranks_[done.rank];
      --rank.in_flight;
      auto now = Clock::now();
      double took = std::chrono::duration<double>(now - std::max(done.at, rank.last_done)).count();
      rank.last_done = now;
      rank.mean_service = rank.mean_service > 0 ? 0.8 * rank.mean_service + 0.2 * took : took;
      answered.push_back({done.task, frame});
    }
    owed_.store(sent_.size());
  }

  /// Completes an answered call's future from its result frame. Needs no turn.
  static void finish(Answered& a) noexcept {
    a.task->detach();
    try {
      Reply reply = read_reply(a.frame);
      check_reply_count(reply, a.task->count);
      a.task->complete(reply.results, reply.count, std::move(reply.error));
    } catch (...) {
      a.task->fail(std::current_exception());
    }
    a.task->drop();
  }

  bool send_interrupts() {
    std::deque<std::uint64_t> ids;
    {
      std::lock_guard lock(mutex_);
      ids.swap(interrupts_);
    }
    for (auto id : ids) {
      auto it = sent_.find(id);
      if (it == sent_.end()) continue;  // answered already
      std::vector<char> body;
      Writer(body).put(id);
      send(ranks_[it->second.rank].rank, mpi::kInterrupt, std::move(body));
    }
    return !ids.empty();
  }

  /// Fills each rank's window from the queue, one message per rank. A call too big for one
  /// message fails at once, or goes to `too_big` for the caller to fail.
  bool dispatch(std::vector<RemoteTask*>* too_big = nullptr) {
    std::size_t room = 0;
    for (const auto& r : ranks_) room += r.window() > r.in_flight ? r.window() - r.in_flight : 0;
    if (room == 0) return false;
    auto calls = queue_.take(room);
    if (calls.empty()) return false;
    while (!calls.empty()) {
      RemoteTask* task = calls.pop_front();
      Rank& rank = least_loaded();
      std::uint64_t id = next_id_++;
      if (!task->attach(calls_, id)) {  // cancelled while queued: its future is done
        task->drop();
        continue;
      }
      auto at = rank.out.size();
      Writer w(rank.out);
      w.put(task->timeout ? task->timeout->count() : 0.0);
      write_call_frame(rank.out, *task, id);
      if (rank.out.size() - at > static_cast<std::size_t>(mpi::kMaxMessageBytes)) {
        rank.out.resize(at);
        task->detach();
        if (too_big)
          too_big->push_back(task);
        else
          fail_too_big(task);
        continue;
      }
      sent_[id] = Sent{task, static_cast<std::size_t>(&rank - ranks_.data()), Clock::now()};
      ++rank.in_flight;
      if (rank.out.size() > mpi::kBatchBytes) flush(rank);
    }
    for (auto& r : ranks_) flush(r);
    owed_.store(sent_.size());
    return true;
  }

  static void fail_too_big(RemoteTask* task) noexcept {
    try {
      task->fail(std::make_exception_ptr(
          SerializationError("the call of task '" + task->task->name +
                             "' encodes to more than the 2 GiB one MPI message can hold")));
    } catch (...) {  // out of memory for the message: it fails all the same
      task->fail(std::current_exception());
    }
    task->drop();
  }

  /// A malformed message, out of memory: the futures rank 0 owes could never end. Says why
  /// and ends the job, as MPI does with its own errors, rather than hang.
  [[noreturn]] static void abort_job(const char* who, const std::exception& e) {
    std::fprintf(stderr, "cfx: MPI backend: %s failed: %s; aborting\n", who, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();  // MPI_Abort does not return
  }

  /// True if some rank that owes results answers its calls within Idler::kSpin or so.
  bool short_calls() const {
    for (const auto& r : ranks_)
      if (r.in_flight > 0 && r.mean_service < kShortCallSeconds) return true;
    return false;
  }

  Rank& least_loaded() {  // dispatch() calls it only while some rank has room
    Rank* best = nullptr;
    for (auto& r : ranks_)  // by the share of its slots in use
      if (!r.dead && (!best || r.in_flight * best->slots < best->in_flight * r.slots)) best = &r;
    return *best;
  }

  void flush(Rank& rank) {
    if (rank.out.empty()) return;
    send(rank.rank, mpi::kCalls, std::move(rank.out));
    rank.out = {};
  }

  void send(int rank, mpi::Tag tag, std::vector<char> body) {
    sending_.send(rank, tag, std::move(body));
  }

  /// Every call has its result: the ranks stop their local pools.
  void close() {
    for (const auto& r : ranks_)
      if (!r.dead) send(r.rank, mpi::kClose, {});
    mpi::drain(sending_);
    for (const auto& r : ranks_)
      if (!r.dead && !mpi::wait_message(r.rank, mpi::kClosed, kHandshakeLimit))
        std::fprintf(stderr, "cfx: MPI backend: rank %d did not close its pool within %lld s\n",
                     r.rank, static_cast<long long>(kHandshakeLimit.count()));
  }

  SubmissionQueue queue_;
  const MpiPoolOptions options_;
  std::vector<Rank> ranks_;
  std::size_t slots_ = 0;
  std::shared_ptr<SentCalls> calls_;
  mpi::Outbox sending_;
  std::unordered_map<std::uint64_t, Sent> sent_;  // calls sent, not yet answered
  std::uint64_t next_id_ = 1;
  std::thread thread_;
  // thread_'s id, for on_own_thread(): read by any thread, while join or detach change thread_.
  std::atomic<std::thread::id> thread_id_{};
  std::mutex join_mutex_;
  bool detached_ = false;  // guarded by join_mutex_
  // Set by the MPI thread as it ends, after it let go of this core: shared, as the thread's
  // last reference may be the one that destroys the core.
  std::shared_ptr<std::atomic<bool>> ended_ = std::make_shared<std::atomic<bool>>(false);

  RankWatcher watcher_;

  // Rank 0's MPI traffic and what goes with it (ranks_, sent_, sending_, next_id_) belong to
  // whoever holds turn_: the MPI thread for a round, or a submitter sending a call to an
  // idle executor (enqueue). One at a time, as MPI_THREAD_SERIALIZED demands.
  std::mutex turn_;
  std::atomic<bool> idle_{false};  // nothing owed or being sent, as of the last turn
  bool closed_ = false;            // the MPI thread has left its loop: nothing more to receive

  std::atomic<int> helpers_{0};           // threads watching a future of this executor (help)
  std::atomic<std::size_t> owed_{0};      // sent_.size(), as of the last turn
  std::atomic<std::uint32_t> rouse_{0};   // stand_by's futex word
  std::atomic<bool> standing_by_{false};  // the MPI thread sleeps in stand_by

  HandedOverCode user_code_;  // by waiting threads (take)

  std::mutex mutex_;  // guards what submitters and interrupt() share with the MPI thread:
  bool draining_ = false;
  std::deque<std::uint64_t> interrupts_;
  int finishing_ = 0;  // waiting threads completing futures they took in
};

void SentCalls::interrupt(std::uint64_t id) noexcept {
  try {
    if (auto core = core_.lock()) core->request_interrupt(id);
  } catch (...) {  // out of memory: the future is cancelled anyway; its call runs on
  }
}
void SentCalls::begin() noexcept {
  if (auto core = core_.lock()) core->begin_help();
}
bool SentCalls::help() noexcept {
  auto core = core_.lock();
  return core && core->help();
}
void SentCalls::end() noexcept {
  if (auto core = core_.lock()) core->end_help();
}

namespace {

/// Rank 0's one open executor, and whether MPI was finalized.
struct Session {
  std::mutex mutex;
  std::shared_ptr<MpiPoolCore> current;
  bool finalized = false;
};
Session& session() {
  static Session& s = *new Session;  // never destroyed: finalize runs at exit
  return s;
}

}  // namespace
}  // namespace detail

MpiPoolExecutor::MpiPoolExecutor(MpiPoolOptions options) : Executor(true) {
  const auto& launch = detail::mpi::launch();
  if (!launch.by_launcher)
    throw Error(
        "MpiPoolExecutor: no MPI launcher started this program, so there is no rank to "
        "serve tasks: " +
        detail::ranks_hint(0));
  if (launch.size < 2)
    throw Error("MpiPoolExecutor: no serving rank: " + detail::ranks_hint(launch.size));
  if (options.workers_per_rank < 1)
    throw std::invalid_argument("MpiPoolOptions::workers_per_rank must be at least 1");
  auto& s = detail::session();
  std::lock_guard lock(s.mutex);
  if (s.finalized) throw Error("MpiPoolExecutor: cfx::finalize() has released the serving ranks");
  if (s.current) {
    if (!s.current->shut_down())
      throw Error(
          "MpiPoolExecutor: another MpiPoolExecutor is open; the serving ranks serve one at a "
          "time: shut it down first");
    s.current->join();
  }
  core_ = std::make_shared<detail::MpiPoolCore>(options);
  core_->open();
  s.current = core_;
  core_->start();
}

MpiPoolExecutor::~MpiPoolExecutor() {
  detach_maps();
  if (core_->on_own_thread()) {  // destroyed by a done-callback: the thread finishes alone
    core_->shutdown(false, false);
    core_->detach_if_on_own_thread();
    return;
  }
  core_->shutdown(true, false);
}

void MpiPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  core_->shutdown(wait, cancel_futures);
}

std::size_t MpiPoolExecutor::max_workers() const {
  return core_->max_workers();
}

void MpiPoolExecutor::enqueue(detail::LocalTask*) {
  throw Error("MpiPoolExecutor runs only registered tasks");
}

void MpiPoolExecutor::enqueue_remote(detail::RemoteTask* task) {
  core_->enqueue(task);
}

void finalize() {
  const auto& launch = detail::mpi::launch();
  if (!launch.initialized || launch.rank != 0) return;
  auto& s = detail::session();
  std::lock_guard lock(s.mutex);
  if (s.finalized) return;
  s.finalized = true;
  if (s.current) {
    s.current->shutdown(true, false);
    s.current.reset();
  }
  {
    detail::mpi::Outbox exits;
    const auto dead = detail::dead_ranks().list();
    for (int r = 1; r < launch.size; ++r) {
      if (std::find(dead.begin(), dead.end(), r) != dead.end()) continue;
      exits.send(r, detail::mpi::kExit, {});
    }
  }  // drained
  MPI_Finalize();
}

}  // namespace cfx
