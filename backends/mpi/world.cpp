// Launch detection, MPI's start, byte messages and the backoff wait (world.hpp).
//
// MPI errors keep MPI's default handler, MPI_ERRORS_ARE_FATAL: an MPI call that fails aborts
// the whole job, which is loud and never hangs; cfx adds nothing that could do better.
#include "backends/mpi/world.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "backends/mpi/launch.hpp"
#include "cfx/errors.hpp"
#include "cfx/mpi_pool.hpp"

namespace cfx::detail {
namespace mpi {
namespace {

Launch& launch_state() {
  static Launch state;
  return state;
}

}  // namespace

const Launch& launch() {
  return launch_state();
}

std::string host_name() {
  char name[MPI_MAX_PROCESSOR_NAME];
  int n = 0;
  MPI_Get_processor_name(name, &n);
  return std::string(name, static_cast<std::size_t>(std::max(n, 0)));
}

std::optional<Message> poll(int source) {
  int flag = 0;
  MPI_Status status;
  MPI_Iprobe(source, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status);
  if (!flag) return std::nullopt;
  int n = 0;
  MPI_Get_count(&status, MPI_BYTE, &n);
  Message m{status.MPI_SOURCE, status.MPI_TAG, std::vector<char>(static_cast<std::size_t>(n))};
  MPI_Recv(m.bytes.data(), n, MPI_BYTE, m.source, m.tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return m;
}

Outbox::~Outbox() {
  drain(*this);
}

void Outbox::send(int dest, int tag, std::vector<char> bytes) {
  auto& s = sending_.emplace_back();
  s.bytes = std::move(bytes);
  MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, dest, tag, MPI_COMM_WORLD,
            &s.request);
}

bool Outbox::progress() {
  bool any = false;
  for (auto it = sending_.begin(); it != sending_.end();) {
    int done = 0;
    MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    if (done) {
      it = sending_.erase(it);
      any = true;
    } else {
      ++it;
    }
  }
  return any;
}

void Backoff::yield() {
  sched_yield();
}

void Backoff::wait() {
  if (Clock::now() - active_ < kSpin) {
    yield();
    return;
  }
  sleep_ = sleep_.count() ? std::min(sleep_ * 2, Clock::duration(kMaxSleep))
                          : Clock::duration(kMinSleep);
  std::this_thread::sleep_for(sleep_);
}

void drain(Outbox& out) {
  Backoff backoff;
  while (!out.empty()) {
    if (out.progress())
      backoff.reset();
    else
      backoff.wait();
  }
}

std::optional<Message> wait_message(int source, int tag, std::chrono::duration<double> limit) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(limit);
  Backoff backoff;
  while (Clock::now() < deadline) {
    if (auto m = poll(source)) {
      if (m->tag != tag)
        throw Error("MPI backend: rank " + std::to_string(m->source) + " sent message " +
                    std::to_string(m->tag) + " where " + std::to_string(tag) + " was expected");
      return m;
    }
    backoff.wait();
  }
  return std::nullopt;
}

void init_if_launched(int argc, char** argv) {
  auto& state = launch_state();
  if (state.initialized || !started_by_launcher()) return;
  state.by_launcher = true;
  int provided = 0;
  // One thread at a time calls MPI: rank 0's executor thread, or the main thread before it
  // starts and after it ends (finalize); a serving rank's main thread only.
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  state.initialized = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &state.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &state.size);
  if (provided < MPI_THREAD_SERIALIZED) {
    std::fprintf(stderr, "cfx: this MPI gives no MPI_THREAD_SERIALIZED support; aborting\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (state.rank > 0) serve_rank();
  std::atexit([] { cfx::finalize(); });  // rank 0: release the serving ranks at exit
}

}  // namespace mpi
}  // namespace cfx::detail
