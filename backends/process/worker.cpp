// The worker process's side: cfx::init, which turns a spawned worker into one, and the
// worker loop: plain blocking reads and writes (no Asio, so it also runs in a child forked
// from the pool's I/O thread). Calls run in the order received; each reply is written before
// the next call starts, so a crash never takes a finished call's result with it, and the
// call slots tell the parent which call, if any, the crash interrupted.
#include "backends/process/worker.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backends/process/channel.hpp"
#include "cfx/errors.hpp"
#include "cfx/process_pool.hpp"
#include "lib/remote_exception.hpp"
#include "lib/stack_trace.hpp"

namespace cfx::detail {
namespace {

std::atomic<bool> worker_process{false};

bool write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t k = ::write(fd, data, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

void kill_own_group(int) {
  ::kill(0, SIGKILL);  // the worker and everything its tasks started in its group
}

/// True if this process's resident memory is above the limit the pool wrote in the slot
/// page (worker_memory_limit; 0: none).
bool above_memory_limit(const std::atomic<std::uint64_t>* page) {
  std::uint64_t limit = page[slots::kMemoryLimitWord].load(std::memory_order_relaxed);
  if (limit == 0) return false;
  std::FILE* statm = std::fopen("/proc/self/statm", "r");
  if (!statm) return false;
  unsigned long size = 0, resident = 0;
  int read = std::fscanf(statm, "%lu %lu", &size, &resident);
  std::fclose(statm);
  return read == 2 && resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) > limit;
}

void append_skipped(std::vector<char>& out, std::uint64_t id) {
  Writer w(out);
  finish_frame(w, begin_frame(w, FrameKind::skipped, id));
}

/// Serves calls read from in_fd, replying on out_fd, until the parent closes in_fd; starts a
/// call only by claiming its slot in the page mapped from slots_fd. Returns the exit status.
int serve_worker(int in_fd, int out_fd, int slots_fd) {
  worker_process.store(true);  // no pools of its own
  ::signal(SIGPIPE, SIG_IGN);  // a dead parent shows as EPIPE, and we exit
  ::signal(SIGINT, SIG_IGN);   // Ctrl-C is the parent's to handle
  capture_throw_stack_traces();
  void* page = ::mmap(nullptr, slots::kPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, slots_fd, 0);
  if (page == MAP_FAILED) return 1;
  ::close(slots_fd);
  auto* slot_page = static_cast<std::atomic<std::uint64_t>*>(page);

  std::vector<char> out;
  Writer reply(out);
  auto hello = begin_frame(reply, FrameKind::hello, 0);
  reply.put(static_cast<std::int32_t>(::getpid()));
  finish_frame(reply, hello);
  if (!write_all(out_fd, out.data(), out.size())) return 1;
  out.clear();

  FrameSplitter frames(max_frame_length());
  const int server = ::getpid();
  for (;;) {
    while (auto frame = frames.next()) {
      if (frame->kind != FrameKind::call) return 1;  // only the pool writes to this pipe
      if (!slots::move(slot_page, frame->id, slots::State::started)) {
        append_skipped(out, frame->id);  // withdrawn or taken back: never started
        continue;
      }
      answer_call(frame->id, frame->body, out, server);
      if (!write_all(out_fd, out.data(), out.size())) return 1;
      out.clear();
      if (out.capacity() > kKeepBufferBytes) std::vector<char>().swap(out);
      // Above worker_memory_limit after a call: leave before starting another. The calls
      // sent ahead were not started (their slots say so), and the pool runs them elsewhere.
      if (above_memory_limit(slot_page)) return 0;
    }
    if (!out.empty()) {  // skips, before waiting for more calls
      if (!write_all(out_fd, out.data(), out.size())) return 1;
      out.clear();
    }
    auto space = frames.space();
    ssize_t n = ::read(in_fd, space.data(), space.size());
    if (n == 0) return 0;  // the parent closed the channel: shut down
    if (n < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    frames.commit(static_cast<std::size_t>(n));
  }
}

}  // namespace

void serve_and_exit() noexcept {
  // Nothing may leave this function: in a forked worker an exception (say bad_alloc from a
  // huge frame) would unwind into the parent's copied code and run the pool's I/O loop in
  // the child.
  int status = 1;
  try {
    status = serve_worker(kWorkerInFd, kWorkerOutFd, kWorkerSlotsFd);
  } catch (...) {
    std::fputs("cfx: a worker's serve loop failed; the worker exits\n", stderr);
  }
  std::fflush(nullptr);
  // The channel's end is also how a worker learns that the pool died: the kernel closes a
  // dying parent's descriptors before it sends the parent-death signal, so an idle worker can
  // see EOF and leave before its handler runs. Whatever ended the channel, what the tasks
  // started in this group must not outlive the worker: it takes its group with it.
  if (status == 0) kill_own_group(0);
  ::_exit(status);
}

void kill_group_on_parent_death(int parent) noexcept {
  struct sigaction action {};
  action.sa_handler = kill_own_group;
  sigemptyset(&action.sa_mask);
  ::sigaction(kParentDeathSignal, &action, nullptr);
  ::prctl(PR_SET_PDEATHSIG, kParentDeathSignal);
  if (::getppid() != parent) kill_own_group(0);  // it died before prctl
}

void refuse_pool_in_worker() {
  if (worker_process.load())
    throw Error(
        "a worker process cannot start a ProcessPoolExecutor of its own (nested process pools "
        "are refused, so that a task cannot fork-bomb the machine)");
  if (std::getenv(kWorkerEnv)) {
    // This process was spawned as a worker, but main() did not hand it to cfx::init and is
    // now running as if it were the parent. Stop before it spawns workers of its own.
    std::fprintf(stderr,
                 "cfx: this process was started as a ProcessPoolExecutor worker, but main() did "
                 "not call cfx::init(argc, argv) first; exiting\n");
    std::fflush(stderr);
    ::_exit(kNoInitExitStatus);
  }
}

}  // namespace cfx::detail

namespace cfx {

bool is_worker_process() noexcept {
  return detail::worker_process.load();
}

void init(int, char**) {
  const char* marker = std::getenv(detail::kWorkerEnv);
  if (!marker) return;
  detail::kill_group_on_parent_death(std::atoi(marker));
  // Only this process is a worker: programs its tasks start must not inherit the marker.
  ::unsetenv(detail::kWorkerEnv);
  std::fflush(nullptr);
  detail::serve_and_exit();
}

}  // namespace cfx
