// A serving rank (rank >= 1 of an MPI launch): receives calls from rank 0, runs them in a
// local process pool (backends/process, unchanged), and sends the results back.
//
// Two threads touch a call: this rank's main thread (it receives calls and sends results)
// and the local pool's I/O thread (which completes them). A completed call's result frame
// goes into `outbox_`; the I/O thread sends it to rank 0 itself if the main thread is not
// using MPI at that moment, else it rings the rank's own doorbell so that the main thread
// sends it at once.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backends/mpi/protocol.hpp"
#include "backends/mpi/relay.hpp"
#include "backends/mpi/world.hpp"
#include "backends/process/channel.hpp"
#include "backends/process/pool.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail::mpi {
namespace {

class RankServer;

/// A call from rank 0, run by the local pool: its outcome becomes a result frame for rank 0.
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
  /// Called under the server's mutex.
  void interrupt() noexcept;

 private:
  void complete_with(Reader results, std::uint32_t n, std::exception_ptr error) noexcept;
  RankServer& server_;
  const std::uint64_t id_;
  std::shared_ptr<CallSlots> slots_;  // guarded by the server's mutex
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
    Idler idler;
    for (;;) {
      // Taken before looking for work: a call from rank 0 or a result of the local pool that
      // comes after the look rings the doorbell, and the wait below ends at once.
      const auto ticket = doorbell::ticket();
      // MPI is held only to receive and send: handing a call to the local pool wakes its
      // I/O thread, which may take this core, and must then find MPI free (answer).
      std::vector<Message> received;
      bool busy = false, sending = false;
      {
        std::lock_guard mpi(mpi_mutex_);
        while (auto m = poll(0)) received.push_back(std::move(*m));
      }
      for (auto& m : received) {
        if (m.tag == kExit) return;
        on_message(m);
        busy = true;
      }
      {
        std::lock_guard mpi(mpi_mutex_);
        busy |= send_results();
        busy |= sending_.progress();
        sending = !sending_.empty();
      }
      if (busy) {
        idler.reset();
        continue;
      }
      // Rank 0 on another node announces nothing: then the wait is bounded, to poll.
      idler.wait(ticket, sending || !doorbell::quiet());
    }
  }

  void stop_pool() {
    if (!pool_) return;
    pool_->shutdown(true, false);
    pool_.reset();
  }

  // ---- the local pool's I/O thread -------------------------------------------------------
  /// A call's outcome. The I/O thread sends it to rank 0 itself when the main thread is not
  /// using MPI (it sleeps: the usual case for one call in flight), which saves a wake-up on
  /// the way back; else the main thread sends it with the others, in one message.
  void answer(std::uint64_t id, Reader results, std::uint32_t n, std::exception_ptr error,
              std::string_view task) {
    {
      std::lock_guard lock(mutex_);
      append_result_frame(outbox_, id, n, results, std::move(error), task, where_);
    }
    if (std::this_thread::get_id() != main_thread_) {
      std::unique_lock mpi(mpi_mutex_, std::try_to_lock);
      if (mpi.owns_lock()) {
        send_results();
        sending_.progress();
        if (sending_.empty()) return;  // else the main thread sees the send through
      }
    }
    doorbell::ring(launch().rank);
  }
  std::mutex& mutex() { return mutex_; }
  void forget(std::uint64_t id) { relays_.erase(id); }  // under mutex()

 private:
  void on_message(Message& m) {
    Reader in(m.bytes.data(), m.bytes.size());
    switch (m.tag) {
      case kOpen:
        return open(in);
      case kCalls:
        return calls(in);
      case kInterrupt:
        return interrupt(in.get<std::uint64_t>());
      case kClose: {
        stop_pool();
        std::lock_guard mpi(mpi_mutex_);
        send(kClosed, {});
        return;
      }
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
    pool_->start();
    std::vector<char> ready;
    Writer w(ready);
    w.put(static_cast<std::uint64_t>(pool_->max_workers()));
    w.put_string(host_);
    w.put(static_cast<std::int64_t>(::getpid()));  // rank 0 watches it if on its node
    std::lock_guard mpi(mpi_mutex_);
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
      {
        std::lock_guard lock(mutex_);
        relays_[id] = relay;
      }
      try {
        pool_->enqueue(relay);
      } catch (...) {  // the local pool is broken: that is this call's answer
        relay->fail(std::current_exception());
        relay->drop();
      }
    }
  }

  void interrupt(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    if (auto it = relays_.find(id); it != relays_.end()) it->second->interrupt();
  }

  /// Sends every result frame completed since the last call, as one message. With
  /// mpi_mutex_ held.
  bool send_results() {
    std::vector<char> out;
    {
      std::lock_guard lock(mutex_);
      if (outbox_.empty()) return false;
      out.swap(outbox_);
    }
    send(kResults, std::move(out));
    return true;
  }

  /// Sends to rank 0 (which is rung). With mpi_mutex_ held.
  void send(Tag tag, std::vector<char> body) { sending_.send(0, tag, std::move(body)); }

  const std::string host_;
  const std::string where_;
  const std::thread::id main_thread_ = std::this_thread::get_id();
  std::shared_ptr<ProcessPoolCore> pool_;
  // MPI is initialised MPI_THREAD_SERIALIZED: whoever calls MPI holds this, the main thread
  // or the I/O thread sending a result (answer), which only tries.
  std::mutex mpi_mutex_;
  Outbox sending_;  // guarded by mpi_mutex_
  std::mutex mutex_;
  std::vector<char> outbox_;                          // result frames not yet sent
  std::unordered_map<std::uint64_t, Relay*> relays_;  // calls not yet answered, by id
};

bool Relay::attach(std::shared_ptr<CallSlots> slots, std::uint64_t local) noexcept {
  std::lock_guard lock(server_.mutex());
  slots_ = std::move(slots);
  local_ = local;
  return true;
}

void Relay::detach() noexcept {
  std::shared_ptr<CallSlots> old;
  std::lock_guard lock(server_.mutex());
  old.swap(slots_);
}

void Relay::complete(Reader& results, std::uint32_t n, std::exception_ptr error) noexcept {
  complete_with(results, n, std::move(error));
}

void Relay::complete_with(Reader results, std::uint32_t n, std::exception_ptr error) noexcept {
  if (answered_) return;
  answered_ = true;
  try {
    server_.answer(id_, results, n, std::move(error), task ? task->name : "");
  } catch (...) {  // out of memory for the frame: rank 0 would wait forever, so stop
    std::fputs("cfx: a serving rank could not encode a result; aborting the job\n", stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

void Relay::drop() noexcept {
  if (!answered_) cancel();
  {
    std::lock_guard lock(server_.mutex());
    server_.forget(id_);
  }
  delete this;
}

void Relay::interrupt() noexcept {
  if (!slots_) return;
  if (!slots_->withdraw(local_)) slots_->interrupt(local_);
}

}  // namespace

void serve_rank() {
  int status = 0;
  try {
    RankServer server;
    server.run();
    server.stop_pool();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cfx: serving rank %d failed: %s\n", launch().rank, e.what());
    status = 1;
  }
  if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
  MPI_Finalize();
  std::fflush(nullptr);
  std::exit(0);
}

}  // namespace cfx::detail::mpi
