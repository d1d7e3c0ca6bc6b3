// Launch detection, MPI's start, byte messages and the backoff wait (world.hpp).
//
// MPI errors keep MPI's default handler, MPI_ERRORS_ARE_FATAL: an MPI call that fails aborts
// the whole job, which is loud and never hangs; cfx adds nothing that could do better.
#include "backends/mpi/world.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <random>
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
  if (doorbell::quiet()) return std::nullopt;  // MPI_Iprobe costs microseconds: skip it
  int flag = 0;
  MPI_Status status;
  // Open MPI's MPI_Iprobe looks for a match before it makes progress: a message that came
  // since the last call is taken in only by this one, and matched by the next. Probe twice,
  // so that a rank woken by its doorbell finds the message it was rung for.
  for (int i = 0; i < 2 && !flag; ++i)
    MPI_Iprobe(source, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status);
  if (!flag) return std::nullopt;
  int n = 0;
  MPI_Get_count(&status, MPI_BYTE, &n);
  Message m{status.MPI_SOURCE, status.MPI_TAG, std::vector<char>(static_cast<std::size_t>(n))};
  MPI_Recv(m.bytes.data(), n, MPI_BYTE, m.source, m.tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  doorbell::count_received(m.source);
  return m;
}

Outbox::~Outbox() {
  drain(*this);
}

void Outbox::send(int dest, int tag, std::vector<char> bytes) {
  auto& s = sending_.emplace_back();
  s.bytes = std::move(bytes);
  s.dest = dest;
  MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, dest, tag, MPI_COMM_WORLD,
            &s.request);
  doorbell::announce(dest);
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
      // Not all there yet (a large message, or MPI queued it): the receiver, rung when it
      // was sent, may have looked too early. Ring again.
      doorbell::ring(it->dest);
      ++it;
    }
  }
  return any;
}

namespace doorbell {
namespace {

/// One rank's doorbell, alone on its cache line. `count` goes up at every ring; `sleepers`
/// says whether anyone waits on it, so that a ring costs a futex call only then.
struct alignas(64) Bell {
  std::atomic<std::uint32_t> count;
  std::atomic<std::uint32_t> sleepers;
  std::atomic<std::uint32_t> present;   // its rank mapped the page (open)
  std::atomic<std::uint32_t> messages;  // messages sent to its rank by ranks that ring it
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// The bells this rank can ring, by world rank: its own, and on rank 0's node rank 0's and
/// (on rank 0) those of the serving ranks there; null for the others (and before open).
std::vector<Bell*>& bells() {
  static std::vector<Bell*> b;
  return b;
}

/// Messages this process received from ranks that ring it, against its bell's `messages`.
/// Written by whoever holds MPI (rank 0's turn); read by quiet() without it.
std::atomic<std::uint32_t> received{0};
/// Every rank that sends to this one rings it: no message comes unannounced.
bool all_ring = false;

/// The FIFOs that ring the serving ranks of this node (wake_fd), by world rank: on rank 0
/// their write ends, on a serving rank its own read end; -1 for the others.
std::vector<int>& wake_fds() {
  static std::vector<int> fds;
  return fds;
}

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t value, const timespec* limit) {
  // Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, value, limit, nullptr, 0);
}

Bell* own() {
  auto& b = bells();
  return launch().rank < static_cast<int>(b.size()) ? b[static_cast<std::size_t>(launch().rank)]
                                                    : nullptr;
}

constexpr char kNamePrefix[] = "cfx-mpi-";

}  // namespace

void remove_stale(const std::string& dir) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kNamePrefix)) continue;
    const char* digits = name.c_str() + sizeof kNamePrefix - 1;
    char* end = nullptr;
    const long pid = std::strtol(digits, &end, 10);
    if (end == digits || *end != '-' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH)
      std::filesystem::remove(entry.path(), error);  // another user's is not ours to remove
  }
}

void open() {
  const int size = launch().size, rank = launch().rank;
  const auto bytes = sizeof(Bell) * static_cast<std::size_t>(size);
  // Rank 0 makes the shared page and tells everyone its name; the ranks that can open it
  // share rank 0's node. (Not an MPI shared window: MPI_Finalize frees windows collectively,
  // and would wait for ever on a rank that died under --enable-recovery.)
  char name[64] = {};
  void* page = MAP_FAILED;
  auto map = [&](int flags) {
    int fd = ::shm_open(name, flags, 0600);
    if (fd < 0) return;
    // ftruncate fills with zeros: every bell starts silent. Rank 0 sizes the page before it
    // says its name: a rank that mapped it sooner would fault past its end.
    if (!(flags & O_CREAT) || ::ftruncate(fd, static_cast<off_t>(bytes)) == 0)
      page = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
  };
  if (rank == 0) {
    remove_stale("/dev/shm");
    std::random_device random;
    std::snprintf(name, sizeof name, "/%s%d-%08x%08x", kNamePrefix, static_cast<int>(::getpid()),
                  random(), random());
    map(O_RDWR | O_CREAT | O_EXCL);
    if (page == MAP_FAILED) {  // no shared memory here: every rank polls
      ::shm_unlink(name);
      name[0] = '\0';
    }
  }
  MPI_Bcast(name, sizeof name, MPI_CHAR, 0, MPI_COMM_WORLD);
  if (rank != 0 && name[0]) map(O_RDWR);
  static Bell alone{};  // this rank's bell when it shares no page with rank 0
  auto& b = bells();
  b.assign(static_cast<std::size_t>(size), nullptr);
  auto* shared = page == MAP_FAILED ? nullptr : static_cast<Bell*>(page);
  b[static_cast<std::size_t>(rank)] = shared ? &shared[rank] : &alone;
  if (shared) shared[rank].present.store(1);
  auto& fds = wake_fds();
  fds.assign(static_cast<std::size_t>(size), -1);
  auto fifo = [&](int r) { return "/dev/shm" + std::string(name) + "-" + std::to_string(r); };
  if (rank != 0 && shared && ::mkfifo(fifo(rank).c_str(), 0600) == 0) {
    // Read and write: with a writer of its own, the FIFO never reports a hang-up (rank 0
    // gone), which would keep an epoll waking.
    fds[static_cast<std::size_t>(rank)] =
        ::open(fifo(rank).c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  }
  MPI_Barrier(MPI_COMM_WORLD);  // every rank that could map the page has, and said so
  if (rank == 0) {
    if (shared) ::shm_unlink(name);
    if (shared)
      for (int r = 1; r < size; ++r) {
        if (!shared[r].present.load()) continue;
        b[static_cast<std::size_t>(r)] = &shared[r];
        // Without it (the rank made none: it polls instead), ring() uses the futex. Should
        // this open fail (out of descriptors), the rank's sleeps end by their kIdleLimit.
        fds[static_cast<std::size_t>(r)] =
            ::open(fifo(r).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        ::unlink(fifo(r).c_str());
      }
  } else if (shared) {
    b[0] = &shared[0];
  }
  all_ring = true;  // rank 0 hears from every serving rank, a serving rank from rank 0 only
  for (int r = rank == 0 ? 1 : 0; r < (rank == 0 ? size : 1); ++r) all_ring = all_ring && local(r);
}

bool local(int rank) {
  auto& b = bells();
  return rank >= 0 && rank < static_cast<int>(b.size()) && b[static_cast<std::size_t>(rank)];
}

void ring(int rank) {
  if (!local(rank)) return;
  Bell* bell = bells()[static_cast<std::size_t>(rank)];
  // count, then sleepers, both sequentially consistent, against wait's sleepers, then count:
  // either the ring sees the sleeper and wakes it, or the sleeper sees the new count.
  bell->count.fetch_add(1);
  if (bell->sleepers.load() == 0) return;
  if (int fd = wake_fds()[static_cast<std::size_t>(rank)]; fd >= 0) {
    const char byte = 1;  // a full FIFO (EAGAIN) is readable already
    [[maybe_unused]] auto n = ::write(fd, &byte, 1);
  } else {
    futex(&bell->count, FUTEX_WAKE, INT_MAX, nullptr);
  }
}

void announce(int rank) {
  if (!local(rank)) return;
  bells()[static_cast<std::size_t>(rank)]->messages.fetch_add(1);
  ring(rank);
}

bool quiet() {
  Bell* bell = own();
  return all_ring && bell && bell->messages.load() == received.load(std::memory_order_relaxed);
}

void count_received(int source) {
  if (local(source)) received.fetch_add(1, std::memory_order_relaxed);
}

std::uint32_t ticket() {
  Bell* bell = own();
  return bell ? bell->count.load() : 0;
}

int wake_fd() {
  auto& fds = wake_fds();
  const auto rank = static_cast<std::size_t>(launch().rank);
  return rank > 0 && rank < fds.size() ? fds[rank] : -1;
}

void clear_wake_fd() {
  char buf[64];
  if (int fd = wake_fd(); fd >= 0)
    while (::read(fd, buf, sizeof buf) == static_cast<ssize_t>(sizeof buf)) {
    }
}

Sleeper::Sleeper() {
  if (Bell* bell = own()) bell->sleepers.fetch_add(1);
}

Sleeper::~Sleeper() {
  if (Bell* bell = own()) bell->sleepers.fetch_sub(1);
}

}  // namespace doorbell

void Backoff::wait() {
  std::this_thread::sleep_for(next());
}

void Idler::wait(std::uint32_t ticket, bool poll, bool spin) {
  doorbell::Bell* bell = doorbell::own();
  if (!bell) {  // no doorbell (open() not run): poll
    std::this_thread::sleep_for(backoff_.next());
    return;
  }
  if (spin) {
    // Yielding: a thread this rank just rang (its serving rank, its submitter) may have been
    // queued on this very core.
    const auto until = active_ + kSpin;
    while (Clock::now() < until) {
      if (bell->count.load(std::memory_order_acquire) != ticket) return;
      sched_yield();
    }
  }
  const auto limit = poll ? backoff_.next() : Clock::duration(kIdleLimit);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count();
  const timespec relative{static_cast<time_t>(ns / 1'000'000'000),
                          static_cast<long>(ns % 1'000'000'000)};
  doorbell::Sleeper sleeping;
  if (bell->count.load() == ticket) doorbell::futex(&bell->count, FUTEX_WAIT, ticket, &relative);
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
  // Open MPI: no barrier at the start of MPI_Finalize. cfx needs none (every rank has seen
  // its sends through before it finalizes), and after a serving rank died under
  // `mpiexec --enable-recovery` that barrier would wait for it, sometimes for ever. A value
  // the user set stays.
  ::setenv("OMPI_MCA_async_mpi_finalize", "1", 0);
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
  doorbell::open();
  if (state.rank > 0) serve_rank();
  std::atexit([] { cfx::finalize(); });  // rank 0: release the serving ranks at exit
}

}  // namespace mpi
}  // namespace cfx::detail
