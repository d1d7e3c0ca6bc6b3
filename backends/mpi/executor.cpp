// Rank 0: MpiPoolExecutor and its MPI thread, which sends calls to the serving ranks and
// completes their futures from the results (docs/mpi.md, "Design").
//
// Submitters share only the SubmissionQueue (the process backend's, unchanged) with the MPI
// thread; everything else here belongs to that thread. A rank holds at most its window of
// calls (about a millisecond of work per slot, at least two calls per slot), so the backlog
// stays on rank 0, where a pending future can still be cancelled.
#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
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
#include "backends/process/submission_queue.hpp"
#include "cfx/errors.hpp"
#include "cfx/mpi_pool.hpp"

namespace cfx {
namespace detail {
namespace {

using mpi::Clock;

constexpr std::size_t kMaxWindowPerSlot = 64;
constexpr double kWindowWorkSeconds = 0.001;  // the process pool's figure (pool.cpp)
/// How long rank 0 waits for the serving ranks to answer open and close.
constexpr std::chrono::seconds kHandshakeLimit{60};

std::string ranks_hint(int size) {
  return "start the program with `mpiexec -n N+1 ./prog` (N serving ranks; as root add "
         "--allow-run-as-root, with more ranks than cores --oversubscribe) and call "
         "cfx::init(argc, argv) first in main" +
         (size > 0
              ? " (this launch has " + std::to_string(size) + " rank" + (size == 1 ? "" : "s") + ")"
              : std::string());
}

/// The calls sent to the serving ranks can no longer be withdrawn (they may be starting
/// there): to their futures they are running. interrupt() still reaches them.
class SentCalls final : public CallSlots {
 public:
  explicit SentCalls(std::function<void(std::uint64_t)> interrupt)
      : interrupt_(std::move(interrupt)) {}
  bool withdraw(std::uint64_t) noexcept override { return false; }
  bool started(std::uint64_t) const noexcept override { return true; }
  void interrupt(std::uint64_t id) noexcept override {
    try {
      interrupt_(id);
    } catch (...) {  // out of memory: the future is cancelled anyway; its call runs on
    }
  }

 private:
  std::function<void(std::uint64_t)> interrupt_;
};

}  // namespace

class MpiPoolCore : public std::enable_shared_from_this<MpiPoolCore> {
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
    for (int r = 1; r < size; ++r) sending_.send(r, mpi::kOpen, body);
    mpi::drain(sending_);
    for (int r = 1; r < size; ++r) {
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
      slots_ += rank.slots;
      ranks_.push_back(std::move(rank));
    }
  }

  void start() {
    calls_ = std::make_shared<SentCalls>([weak = weak_from_this()](std::uint64_t id) {
      if (auto self = weak.lock()) self->request_interrupt(id);
    });
    thread_ = std::thread([self = shared_from_this()] {
      try {
        self->run();
      } catch (const std::exception& e) {
        // A malformed message, out of memory: the futures it owes could never end. Say why
        // and end the job, as MPI does with its own errors, rather than hang.
        std::fprintf(stderr, "cfx: MPI backend: rank 0's MPI thread failed: %s; aborting\n",
                     e.what());
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    });
  }

  std::size_t max_workers() const { return slots_; }
  void enqueue(RemoteTask* task) { queue_.push(task); }

  void shutdown(bool wait, bool cancel_futures) {
    if (wait && on_own_thread())
      throw Error(
          "shutdown(wait=true) called from a done-callback, which runs on the MPI executor's "
          "thread: it would wait for itself; call shutdown(false) there");
    if (queue_.shut_down(cancel_futures)) {
      std::lock_guard lock(mutex_);
      draining_ = true;
      woken_ = true;
      cv_.notify_one();
    }
    if (wait) join();
  }
  bool shut_down() {
    std::lock_guard lock(mutex_);
    return draining_;
  }
  void join() {
    std::lock_guard lock(join_mutex_);
    if (thread_.joinable() && !on_own_thread()) thread_.join();
  }
  bool on_own_thread() const { return std::this_thread::get_id() == thread_.get_id(); }
  void detach_if_on_own_thread() {
    if (on_own_thread() && thread_.joinable()) thread_.detach();
  }

 private:
  struct Rank {
    int rank = 0;
    std::size_t slots = 0;
    std::string host;
    std::size_t in_flight = 0;
    double mean_service = 0;  // seconds a call spends at the head of a slot, smoothed
    Clock::time_point last_done{};
    std::vector<char> out;  // calls to send in this round
    std::size_t window() const {
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

  void wake() {  // with the queue's lock held (SubmissionQueue's contract): never calls back
    std::lock_guard lock(mutex_);
    woken_ = true;
    cv_.notify_one();
  }
  void request_interrupt(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    interrupts_.push_back(id);
    woken_ = true;
    cv_.notify_one();
  }

  void run() {
    mpi::Backoff backoff;
    for (;;) {
      bool busy = receive();
      busy |= send_interrupts();
      busy |= dispatch();
      busy |= sending_.progress();
      if (busy) {
        backoff.reset();
        continue;
      }
      const bool owed = !sent_.empty() || !sending_.empty();
      const bool drained = queue_.drained();  // before mutex_: wake() nests them the other way
      std::unique_lock lock(mutex_);
      if (woken_) {
        woken_ = false;
        continue;
      }
      if (!owed && draining_ && drained) break;
      if (!owed) {
        // Nothing is owed by any rank: sleep until a submit, an interrupt or shutdown.
        cv_.wait(lock, [&] { return woken_; });
        backoff.reset();
      } else {
        backoff.wait(lock, cv_, [&] { return woken_; });
      }
    }
    close();
  }

  /// Takes every message that has arrived; true if any did.
  bool receive() {
    bool any = false;
    while (auto m = mpi::poll(MPI_ANY_SOURCE)) {
      any = true;
      if (m->tag != mpi::kResults) {
        std::fprintf(stderr, "cfx: MPI backend: unexpected message %d from rank %d\n", m->tag,
                     m->source);
        continue;
      }
      Reader in(m->bytes.data(), m->bytes.size());
      while (in.remaining() > 0) on_result(in);
    }
    return any;
  }

  void on_result(Reader& in) {
    auto length = in.get<std::uint64_t>();
    Reader frame(in.take(length), length);
    frame.get<FrameKind>();
    auto id = frame.get<std::uint64_t>();
    auto it = sent_.find(id);
    if (it == sent_.end()) return;
    Sent done = it->second;
    sent_.erase(it);
    Rank& rank = ranks_[done.rank];
    --rank.in_flight;
    auto now = Clock::now();
    double took = std::chrono::duration<double>(now - std::max(done.at, rank.last_done)).count();
    rank.last_done = now;
    rank.mean_service = rank.mean_service > 0 ? 0.8 * rank.mean_service + 0.2 * took : took;
    done.task->detach();
    try {
      Reply reply = read_reply(frame);
      check_reply_count(reply, done.task->count);
      done.task->complete(reply.results, reply.count, std::move(reply.error));
    } catch (...) {
      done.task->fail(std::current_exception());
    }
    done.task->drop();
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
      sending_.send(ranks_[it->second.rank].rank, mpi::kInterrupt, std::move(body));
    }
    return !ids.empty();
  }

  /// Fills each rank's window from the queue, one message per rank.
  bool dispatch() {
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
        task->fail(std::make_exception_ptr(
            SerializationError("the call of task '" + task->task->name +
                               "' encodes to more than the 2 GiB one MPI message can hold")));
        task->drop();
        continue;
      }
      sent_[id] = Sent{task, static_cast<std::size_t>(&rank - ranks_.data()), Clock::now()};
      ++rank.in_flight;
      if (rank.out.size() > mpi::kBatchBytes) flush(rank);
    }
    for (auto& r : ranks_) flush(r);
    return true;
  }

  Rank& least_loaded() {
    Rank* best = &ranks_.front();
    for (auto& r : ranks_)  // by the share of its slots in use
      if (r.in_flight * best->slots < best->in_flight * r.slots) best = &r;
    return *best;
  }

  void flush(Rank& rank) {
    if (rank.out.empty()) return;
    sending_.send(rank.rank, mpi::kCalls, std::move(rank.out));
    rank.out = {};
  }

  /// Every call has its result: the ranks stop their local pools.
  void close() {
    for (const auto& r : ranks_) sending_.send(r.rank, mpi::kClose, {});
    mpi::drain(sending_);
    for (const auto& r : ranks_)
      if (!mpi::wait_message(r.rank, mpi::kClosed, kHandshakeLimit))
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
  std::mutex join_mutex_;

  std::mutex mutex_;  // guards what submitters and interrupt() share with the MPI thread:
  std::condition_variable cv_;
  bool woken_ = false;
  bool draining_ = false;
  std::deque<std::uint64_t> interrupts_;
};

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
    for (int r = 1; r < launch.size; ++r) exits.send(r, detail::mpi::kExit, {});
  }  // drained
  MPI_Finalize();
}

}  // namespace cfx
