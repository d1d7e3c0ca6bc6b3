// A serving rank (rank >= 1 of an MPI launch): receives calls from rank 0, runs them in a
// local process pool (backends/process, unchanged), and sends the results back.
//
// One thread does it all: the rank's main thread drives its local pool (it is the pool's I/O
// thread, ProcessPoolCore::start_driven), so a call from rank 0 is written into a worker's
// pipe by the thread that received it, and the worker's reply is read and sent to rank 0 by
// the same thread, with no hand-off between threads on the way. It waits in the pool's epoll,
// where its doorbell's FIFO (doorbell::wake_fd) wakes it for rank 0's messages as the
// workers' pipes do for their replies.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>

#include "backends/mpi/protocol.hpp"
#include "backends/mpi/relay.hpp"
#include "backends/mpi/world.hpp"
#include "backends/process/channel.hpp"
#include "backends/process/pool.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail::mpi {
namespace {

class RankServer;

/// Calls that take less than this (from arrival to answer) are watched for on the core.
constexpr double kShortCallSeconds = 100e-6;

/// A call from rank 0, run by the local pool: its outcome becomes a result frame for rank 0.
/// Everything here runs on the rank's one thread.
class Relay final : public RemoteTask {
 public:
  Relay(RankServer& server, std::uint64_t id) : server_(server), id_(id) {}
  bool attach(std::shared_ptr<CallSlots> slots, std::uint64_t local) noexcept override;
  void detach() noexcept override;
  void complete(Reader& results, std::uint32_t n, std::exception_ptr error) noexcept override;
  void fail(std::exception_ptr e) noexcept override {
    complete_with({nullptr, 0}, 0, std::move(e));
  }
  void cancel() noexcept override {
    fail(std::make_exception_ptr(CancelledError("cancelled on its rank")));
  }
  /// The pool lets go of it. A call it never answered was withdrawn (interrupted before it
  /// started): rank 0 still waits for its frame.
  void drop() noexcept override;
  /// Future::interrupt() on rank 0: kill its worker if it runs the call, else withdraw it.
  void interrupt() noexcept;

 private:
  void complete_with(Reader results, std::uint32_t n, std::exception_ptr error) noexcept;
  RankServer& server_;
  const std::uint64_t id_;
  const Clock::time_point since_ = Clock::now();  // for the server's mean_call_
  std::shared_ptr<CallSlots> slots_;
  std::uint64_t local_ = 0;
  bool answered_ = false;
};

class RankServer {
 public:
  RankServer()
      : host_(host_name()),
        where_("MPI rank " + std::to_string(launch().rank) + " on host " + host_) {}

  /// Serves until rank 0 says exit.
  void run() {
    for (;;) {
      // Taken before looking for work: a message from rank 0 that comes after the look
      // rings the doorbell, and the wait below ends at once.
      const auto ticket = doorbell::ticket();
      bool busy = send_results();  // what the wait below collected: rank 0 waits for it
      while (auto m = poll(0)) {
        if (m->tag == kExit) return;
        on_message(*m);  // calls go straight into the workers' pipes (the pool's dispatch)
        busy = true;
      }
      if (pool_) pool_->run_for(Clock::duration::zero());  // replies that are in, and dispatch
      busy |= send_results();
      busy |= sending_.progress();
      if (busy) {
        backoff_.reset();
        active_ = Clock::now();
        continue;
      }
      // Rank 0 on another node announces nothing: then the wait is bounded, to poll.
      wait(ticket, !sending_.empty() || !doorbell::quiet());
    }
  }

  /// Shuts the local pool down and runs it until every worker is reaped.
  void stop_pool() {
    if (!pool_) return;
    if (bell_) bell_->close();  // its wait would keep the pool's loop alive
    pool_->shutdown(false, false);
    while (pool_->run_for(std::chrono::milliseconds(100))) {
    }
    bell_.reset();
    pool_.reset();
  }

  /// A call's outcome, from the local pool (on this thread): sent with the others at the end
  /// of the loop's turn, in one message.
  void answer(std::uint64_t id, Reader results, std::uint32_t n, std::exception_ptr error,
              std::string_view task, Clock::time_point since = {}) {
    append_result_frame(outbox_, id, n, results, std::move(error), task, where_);
    if (since == Clock::time_point{}) return;  // refused, not run
    const double took = std::chrono::duration<double>(Clock::now() - since).count();
    mean_call_ = mean_call_ > 0 ? 0.8 * mean_call_ + 0.2 * took : took;
  }
  void forget(std::uint64_t id) { relays_.erase(id); }

 private:
  /// Sleeps until rank 0 rings (a message) or the local pool has an event (a reply, a worker
  /// started or died, a timeout); with `poll`, for at most the next backoff step.
  void wait(std::uint32_t ticket, bool poll) {
    if (spin(ticket)) return;
    const int fd = doorbell::wake_fd();
    const auto limit = poll || fd < 0 ? backoff_.next() : Clock::duration(Idler::kIdleLimit);
    {
      doorbell::Sleeper sleeping;
      if (doorbell::ticket() != ticket) return;
      if (pool_) {
        if (bell_ && !bell_armed_) {
          bell_armed_ = true;
          bell_->async_wait(boost::asio::posix::descriptor_base::wait_read,
                            [this](boost::system::error_code) { bell_armed_ = false; });
        }
        pool_->run_for(limit);
      } else if (fd >= 0) {
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1,
               static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(limit).count()));
      } else {
        std::this_thread::sleep_for(limit);
      }
    }
    doorbell::clear_wake_fd();
  }

  /// When calls here take microseconds, the next message or reply is due as soon: for up to
  /// Idler::kSpin after the last activity, watch for it on the core (yielding it, to the
  /// worker that may be about to reply) rather than sleep, whose wake-up costs more than such
  /// a call. True if something came.
  bool spin(std::uint32_t ticket) {
    if (!pool_ || mean_call_ <= 0 || mean_call_ > kShortCallSeconds) return false;
    const auto until = active_ + Idler::kSpin;
    while (Clock::now() < until) {
      if (doorbell::ticket() != ticket) return true;
      pool_->run_for(Clock::duration::zero());
      if (!outbox_.empty()) return true;
      sched_yield();
    }
    return false;
  }

  void on_message(Message& m) {
    Reader in(m.bytes.data(), m.bytes.size());
    switch (m.tag) {
      case kOpen:
        return open(in);
      case kCalls:
        return calls(in);
      case kInterrupt:
        return interrupt(in.get<std::uint64_t>());
      case kClose:
        stop_pool();
        send_results();  // the answers of the last calls go before closed
        send(kClosed, {});
        return;
      default:
        std::fprintf(stderr, "cfx: %s: unknown message %d from rank 0\n", where_.c_str(), m.tag);
    }
  }

  void open(Reader& in) {
    stop_pool();
    ProcessPoolOptions o;
    o.max_workers = static_cast<std::size_t>(in.get<std::uint64_t>());
    o.max_tasks_per_child = static_cast<std::size_t>(in.get<std::uint64_t>());
    o.max_retries = static_cast<std::size_t>(in.get<std::uint64_t>());
    if (double timeout = in.get<double>(); timeout > 0)
      o.task_timeout = std::chrono::duration<double>(timeout);
    pool_ = std::make_shared<ProcessPoolCore>(o);
    pool_->start_driven();
    if (int fd = doorbell::wake_fd(); fd >= 0)
      if (int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0); own >= 0)
        bell_.emplace(pool_->io_context(), own);
    std::vector<char> ready;
    Writer w(ready);
    w.put(static_cast<std::uint64_t>(pool_->max_workers()));
    w.put_string(host_);
    w.put(static_cast<std::int64_t>(::getpid()));  // rank 0 watches it if on its node
    send(kReady, std::move(ready));
  }

  /// A message of [f64 timeout][call frame]... : each call goes to the local pool.
  void calls(Reader& in) {
    while (in.remaining() > 0) {
      double timeout = in.get<double>();
      auto length = in.get<std::uint64_t>();
      Reader frame(in.take(length), length);
      frame.get<FrameKind>();
      auto id = frame.get<std::uint64_t>();
      auto count = frame.get<std::uint32_t>();
      std::string_view name = frame.get_string();
      const TaskEntry* entry = find_task(name);
      if (!entry || !pool_) {
        auto why = !pool_ ? "no executor is open on this rank"
                          : "task '" + std::string(name) +
                                "' is not registered in this rank's program: register it "
                                "with CFX_TASK at namespace scope in a file linked into it";
        answer(id, {nullptr, 0}, 0, std::make_exception_ptr(Error(why)), name);
        continue;
      }
      auto* relay = new Relay(*this, id);
      relay->task = entry;
      relay->count = count;
      auto rest = frame.remaining();
      const char* args = frame.take(rest);
      relay->args.assign(args, args + rest);
      if (timeout > 0) relay->timeout = std::chrono::duration<double>(timeout);
      relays_[id] = relay;
      try {
        pool_->enqueue(relay);
      } catch (...) {  // the local pool is broken: that is this call's answer
        relay->fail(std::current_exception());
        relay->drop();
      }
    }
  }

  void interrupt(std::uint64_t id) {
    if (auto it = relays_.find(id); it != relays_.end()) it->second->interrupt();
  }

  /// Sends every result frame completed since the last call, as one message.
  bool send_results() {
    if (outbox_.empty()) return false;
    std::vector<char> out;
    out.swap(outbox_);
    send(kResults, std::move(out));
    return true;
  }

  /// Sends to rank 0 (which is rung).
  void send(Tag tag, std::vector<char> body) { sending_.send(0, tag, std::move(body)); }

  const std::string host_;
  const std::string where_;
  std::shared_ptr<ProcessPoolCore> pool_;
  // The doorbell's FIFO in the pool's epoll (a dup, closed with the pool), and whether a wait
  // on it is pending.
  std::optional<boost::asio::posix::stream_descriptor> bell_;
  bool bell_armed_ = false;
  Backoff backoff_;
  Clock::time_point active_{};  // when the loop last had something to do
  double mean_call_ = 0;        // seconds from a call's arrival to its answer, smoothed
  Outbox sending_;
  std::vector<char> outbox_;                          // result frames not yet sent
  std::unordered_map<std::uint64_t, Relay*> relays_;  // calls not yet answered, by id
};

bool Relay::attach(std::shared_ptr<CallSlots> slots, std::uint64_t local) noexcept {
  slots_ = std::move(slots);
  local_ = local;
  return true;
}

void Relay::detach() noexcept {
  slots_.reset();
}

void Relay::complete(Reader& results, std::uint32_t n, std::exception_ptr error) noexcept {
  complete_with(results, n, std::move(error));
}

void Relay::complete_with(Reader results, std::uint32_t n, std::exception_ptr error) noexcept {
  if (answered_) return;
  answered_ = true;
  try {
    server_.answer(id_, results, n, std::move(error), task ? task->name : "", since_);
  } catch (...) {  // out of memory for the frame: rank 0 would wait forever, so stop
    std::fputs("cfx: a serving rank could not encode a result; aborting the job\n", stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

void Relay::drop() noexcept {
  if (!answered_) cancel();
  server_.forget(id_);
  delete this;
}

void Relay::interrupt() noexcept {
  if (!slots_) return;
  if (!slots_->withdraw(local_)) slots_->interrupt(local_);
}

}  // namespace

void serve_rank() {
  RankServer server;
  try {
    server.run();
    server.stop_pool();
  } catch (const std::exception& e) {
    // MPI_Abort ends the job here, before the server (and a pool not run down) is destroyed.
    std::fprintf(stderr, "cfx: serving rank %d failed: %s\n", launch().rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  std::fflush(nullptr);
  std::exit(0);
}

}  // namespace cfx::detail::mpi
