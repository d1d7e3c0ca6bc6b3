// The MPI side shared by rank 0 (executor.cpp) and the serving ranks (server.cpp): whether
// this process was launched by MPI, byte messages sent without blocking, and waiting for
// messages without spinning on a core. Internal; the only headers besides the .cpp files
// that include <mpi.h>.
#pragma once

#define OMPI_SKIP_MPICXX 1  // Open MPI's deprecated C++ bindings warn under -Wextra
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
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

/// Messages being sent (MPI_Isend): each buffer stays here until MPI is done with it.
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
    std::vector<char> bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::deque<Sending> sending_;
};

/// How a thread waits for MPI messages, which come with no wake-up: Open MPI's blocking
/// calls spin a core at 100% (docs/mpi.md, "Waiting"). After activity it polls while yielding
/// the core for kSpin, so a reply that follows at once is seen in microseconds; then it sleeps,
/// from kMinSleep doubling to kMaxSleep, so an idle rank costs about nothing.
class Backoff {
 public:
  static constexpr auto kSpin = std::chrono::microseconds(200);
  static constexpr auto kMinSleep = std::chrono::microseconds(20);
  static constexpr auto kMaxSleep = std::chrono::milliseconds(1);

  void reset() {
    active_ = Clock::now();
    sleep_ = {};
  }
  /// Waits one step: yields within kSpin of the last activity, else sleeps on `cv` (so
  /// that a local event, signalled there, ends the sleep at once) until `woken`.
  template <class Pred>
  void wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Pred woken) {
    if (Clock::now() - active_ < kSpin) {
      lock.unlock();
      yield();
      lock.lock();
      return;
    }
    sleep_ = sleep_.count() ? std::min(sleep_ * 2, Clock::duration(kMaxSleep))
                            : Clock::duration(kMinSleep);
    cv.wait_for(lock, sleep_, woken);
  }
  /// Waits with nothing to signal it: yields, then sleeps.
  void wait();

 private:
  static void yield();
  Clock::time_point active_ = Clock::now();
  Clock::duration sleep_{};
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
