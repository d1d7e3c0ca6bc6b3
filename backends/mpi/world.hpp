// The MPI side shared by rank 0 (executor.cpp) and the serving ranks (server.cpp): whether
// this process was launched by MPI, byte messages sent without blocking, and waiting for
// messages without spinning on a core. Internal; the only headers besides the .cpp files
// that include <mpi.h>.
#pragma once

#define OMPI_SKIP_MPICXX 1  // Open MPI's deprecated C++ bindings warn under -Wextra
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace cfx::detail::mpi {

using Clock = std::chrono::steady_clock;

/// This process's place in the launch: set by init_if_launched.
struct Launch {
  bool by_launcher = false;  // an MPI launcher started it (mpiexec, srun)
  bool initialized = false;  // cfx::init initialised MPI
  int rank = 0;
  int size = 1;
};
const Launch& launch();

/// MPI_Get_processor_name: the host, for messages.
std::string host_name();

/// A received message.
struct Message {
  int source = 0;
  int tag = 0;
  std::vector<char> bytes;
};

/// The next message from `source` (MPI_ANY_SOURCE: anyone), if one has arrived.
std::optional<Message> poll(int source);

/// Messages being sent (MPI_Isend), each announced to its receiver (doorbell::announce): each
/// buffer stays here until MPI is done with it.
/// Nothing blocks, so two ranks sending large messages to each other cannot deadlock.
class Outbox {
 public:
  Outbox() = default;
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;
  ~Outbox();
  void send(int dest, int tag, std::vector<char> bytes);
  /// Releases the buffers of finished sends; true if any finished.
  bool progress();
  bool empty() const { return sending_.empty(); }

 private:
  struct Sending {
    int dest = 0;
    std::vector<char> bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::deque<Sending> sending_;
};

/// Waiting for work without spinning (docs/mpi.md, "Waiting"). MPI gives no wake-up: its
/// blocking calls spin a core at 100%. So every rank has a doorbell, a futex word in a page
/// that rank 0 shares with the serving ranks of its node (shm_open): whoever gives a rank
/// something to do rings it (a rank of the same node after sending it a message; a thread of
/// its own process after a local event), and the rank sleeps in the kernel until then: rank 0
/// on the futex, a serving rank in its pool's epoll, woken through its FIFO (wake_fd). A
/// message from another node rings nothing: while one may come, the sleep is bounded by a
/// backoff, so the rank polls as mpi4py does.
namespace doorbell {
/// Sets up the doorbells of this node's ranks: collective over MPI_COMM_WORLD, right after
/// MPI_Init.
void open();
/// Removes from `dir` the doorbell page and FIFOs (cfx-mpi-<pid>-...) of launches whose rank 0
/// (process <pid>) is gone. Their names live only until every rank has opened them, but a job
/// killed in that window leaves them behind. Rank 0's open() calls it on /dev/shm.
void remove_stale(const std::string& dir);
/// Rings `rank`'s doorbell if it shares this node (else it polls). Any thread.
void ring(int rank);
/// Tells `rank` that a message was sent to it, and rings. Outbox::send calls it.
void announce(int rank);
/// True when no message can be waiting: every rank that sends here announces its messages,
/// and all announced have been received (poll then skips MPI_Iprobe).
bool quiet();
/// poll received a message from `source`.
void count_received(int source);
/// True if `rank` shares this node, so that its messages ring this rank's doorbell.
bool local(int rank);
/// This rank's doorbell count: take it before looking for work, then wait(ticket).
std::uint32_t ticket();
/// A serving rank of rank 0's node: a descriptor that turns readable when this rank's
/// doorbell rings while a Sleeper exists, so that its thread can wait for rank 0 and for its
/// local pool's pipes in one epoll (server.cpp). -1 elsewhere (then a wait polls). Rank 0
/// rings it by writing a byte to it (a FIFO), where it would wake a futex.
int wake_fd();
/// Reads what the rings wrote to wake_fd().
void clear_wake_fd();
/// While one lives, rings of this rank's doorbell wake its sleeper: take the ticket, make a
/// Sleeper, look at the ticket again, then sleep.
class Sleeper {
 public:
  Sleeper();
  ~Sleeper();
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;
};
}  // namespace doorbell

/// A sleep that doubles from kMinSleep to kMaxSleep while nothing happens.
class Backoff {
 public:
  static constexpr auto kMinSleep = std::chrono::microseconds(20);
  static constexpr auto kMaxSleep = std::chrono::milliseconds(1);

  void reset() { sleep_ = {}; }
  Clock::duration next() {
    sleep_ = sleep_.count() ? std::min(sleep_ * 2, Clock::duration(kMaxSleep))
                            : Clock::duration(kMinSleep);
    return sleep_;
  }
  /// Sleeps the next step (no doorbell: handshakes and the last sends).
  void wait();

 private:
  Clock::duration sleep_{};
};

/// How a rank's MPI thread waits for its next piece of work.
class Idler {
 public:
  /// How long a wait may first watch the doorbell on the core, when an answer is expected
  /// at once (the caller says so): a sleep and its wake-up cost more than a short call.
  static constexpr auto kSpin = std::chrono::microseconds(100);
  static constexpr auto kIdleLimit = std::chrono::milliseconds(100);

  /// Something happened: the next bounded wait starts short again.
  void reset() {
    backoff_.reset();
    active_ = Clock::now();
  }
  /// Waits until this rank's doorbell rings after `ticket`. With `spin`, it first watches
  /// the doorbell on the core, yielding it, until kSpin after the last reset. Then it
  /// sleeps: with `poll` (a message may come unannounced: from another node, or one announced
  /// is not in yet, or a send of ours needs MPI to progress) for at most the next backoff
  /// step; else for at most kIdleLimit, a safety net only.
  void wait(std::uint32_t ticket, bool poll, bool spin = false);

 private:
  Backoff backoff_;
  Clock::time_point active_ = Clock::now();
};

/// Sends, then waits until every send of `out` finished (backing off).
void drain(Outbox& out);
/// Waits for the next message from `source` with tag `tag`, up to `limit`; nullopt past it.
/// A message with another tag is a protocol error (cfx::Error).
std::optional<Message> wait_message(int source, int tag, std::chrono::duration<double> limit);

/// The serving rank's life (server.cpp): serves until rank 0 says exit, then finalizes MPI
/// and exits the process with status 0.
[[noreturn]] void serve_rank();

/// MpiHooks::init_if_launched (launch.hpp): under a launcher, MPI_Init; a serving rank then
/// serves and exits; rank 0 arranges cfx::finalize at exit.
void init_if_launched(int argc, char** argv);

}  // namespace cfx::detail::mpi
