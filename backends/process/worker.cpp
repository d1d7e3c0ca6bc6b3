// The worker process's side: cfx::init, which turns a spawned worker into one, and the
// worker loop: plain blocking reads and writes (no Asio, so it also runs in a child forked
// from the pool's I/O thread). Calls run in the order received; each reply is written before
// the next call starts, so a crash never takes a finished call's result with it, and the
// call slots tell the parent which call, if any, the crash interrupted.
#include "backends/process/worker.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
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
#include <thread>
#include <vector>

#include "backends/mpi/launch.hpp"
#include "backends/process/bulk_area.hpp"
#include "backends/process/channel.hpp"
#include "backends/process/fork_server.hpp"
#include "cfx/errors.hpp"
#include "cfx/process_pool.hpp"
#include "lib/cores.hpp"
#include "lib/remote_exception.hpp"
#include "lib/stack_trace.hpp"
#include "lib/toolkit/descriptors.hpp"

namespace cfx::detail {
namespace {

std::atomic<bool> worker_process{false};
bool one_call_process = false;  // a cfx::Process child: its exit status is the task's outcome

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

/// A cfx::Process child's SIGTERM (terminate(), or its parent's death): it passes the signal
/// to its group and dies of it, so that its exit code says SIGTERM, as Python's does.
void terminate_own_group(int) {
  ::signal(SIGTERM, SIG_DFL);
  ::kill(0, SIGTERM);
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

/// The worker's ends of the descriptor channel: what the pool sent (kept while the pool holds
/// the blocks), and what the results send back.
struct WorkerHandles {
  DescriptorInbox inbox{kWorkerHandlesFd, DescriptorInbox::Role::worker};
  DescriptorOutbox outbox{kWorkerHandlesFd};
  std::uint64_t messages = 0;  // read so far, against the pool's count in the slot page

  /// Answers call `id` with its arguments' handles at hand and its results' sent ahead.
  void answer(std::uint64_t id, Reader& body, std::vector<char>& out, int server,
              const std::atomic<std::uint64_t>* page) {
    if (page[slots::kDescriptorWord].load(std::memory_order_acquire) != messages)
      messages += inbox.drain();
    inbox.begin(id);
    HandleList results;
    {
      HandleSourceScope source(inbox);
      HandleCapture capture(results);
      answer_call(id, body, out, server);
    }
    if (!results.empty()) outbox.send(id, results, false);
  }
};

/// One-call mode (cfx::Process): runs the call of the first frame, writes no reply, and
/// returns 0, or 1 if the task threw (its exception is printed, as Python prints a Process's
/// traceback).
int run_one_call(int in_fd, WorkerHandles& handles, const std::atomic<std::uint64_t>* page) {
  FrameSplitter frames(max_frame_length());
  for (;;) {
    if (auto frame = frames.next()) {
      if (frame->kind != FrameKind::call) return 1;
      std::vector<char> out;
      handles.answer(frame->id, frame->body, out, ::getpid(), page);
      Reader reply(out.data(), out.size());
      reply.take(kFrameHeaderSize);
      Reply r = read_reply(reply);
      if (!r.error) return 0;
      try {
        std::rethrow_exception(r.error);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "cfx::Process: the task threw: %s\n", e.what());
      }
      return 1;
    }
    auto space = frames.space();
    ssize_t n = ::read(in_fd, space.data(), space.size());
    if (n == 0) return 1;  // no call came
    if (n < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    frames.commit(static_cast<std::size_t>(n));
  }
}

/// A worker's big blocks (a call's decoded arguments, a task's result) come from the heap and
/// go back to it, up to kKeepBufferBytes at its top, instead of a fresh mapping per block: the
/// next call's arguments land in memory already touched. Memory touched for the first time
/// costs far more than the copy into it (a page fault and zeroing per page; on the VMs this
/// project measures on, 2-3 ms per MiB). Blocks beyond that still go back to the system.
void keep_freed_blocks() {
  ::mallopt(M_MMAP_MAX, 0);
  ::mallopt(M_TRIM_THRESHOLD, static_cast<int>(kKeepBufferBytes));
}

/// Moves this thread to another of the cores it may run on: it found itself on the core of
/// the thread in the parent that watches for its replies (kWatcherCoreWord). Two threads that
/// watch each other on one core take turns, each spinning through the other's time slice,
/// while the other core idles: the scheduler does not move a thread that keeps running, and
/// a pipe's wake-up puts the woken thread on the writer's core. The thread's own set of
/// cores is put back at once; it stays where the move took it.
void leave_core(int core) {
  cpu_set_t allowed, others;
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  others = allowed;
  CPU_CLR(core, &others);
  if (CPU_COUNT(&others) == 0 || ::sched_setaffinity(0, sizeof(others), &others) != 0) return;
  ::sched_setaffinity(0, sizeof(allowed), &allowed);
}

/// Watches for the pool's next call on the core for up to kCallWatch, before the worker
/// sleeps in read(): a thread in the parent drives the pool, and its next call tends to
/// follow the answer at once. Waking a sleeping worker costs this VM about as much as the
/// call, and a system call a microsecond (docs/performance.md, "The tail of a round trip").
/// While it watches, kCallWatchWord tells the pool that it may put the call in the mailbox.
void watch_for_call(std::atomic<std::uint64_t>* page, std::uint64_t taken) {
  constexpr auto kCallWatch = std::chrono::microseconds(50);
  const auto& calls_written = page[slots::kCallsWrittenWord];
  const auto& watcher_core = page[slots::kWatcherCoreWord];
  // The core is offered to other threads now and then, not on every look: sched_yield() is a
  // system call, and one that the call arrives during delays it by a microsecond.
  constexpr auto kYieldEvery = std::chrono::microseconds(10);
  page[slots::kCallWatchWord].store(taken + 1);
  auto now = std::chrono::steady_clock::now();
  const auto until = now + kCallWatch;
  auto next_yield = now + kYieldEvery;
  while (calls_written.load(std::memory_order_acquire) == taken && now < until) {
    const int core = ::sched_getcpu();
    if (core >= 0 &&
        watcher_core.load(std::memory_order_relaxed) == static_cast<unsigned>(core) + 1)
      leave_core(core);
    for (int i = 0; i < 64 && calls_written.load(std::memory_order_acquire) == taken; ++i)
      cpu_relax();
    now = std::chrono::steady_clock::now();
    if (now >= next_yield) {
      std::this_thread::yield();
      next_yield = now + kYieldEvery;
    }
  }
}

/// The worker's replies on their way out: frames appended to `out`, then sent through the
/// pipe or, one small frame while the parent watches for it, through the reply mailbox.
class ReplySender {
 public:
  ReplySender(int fd, std::atomic<std::uint64_t>* page)
      : fd_(fd), page_(page), box_(page, slots::kReplyBoxOffset) {}

  std::vector<char> out;
  /// A frame was appended to `out`.
  void added() { ++frames_; }

  /// Sends what `out` holds; false if the pipe failed (the parent is gone).
  bool send() {
    if (out.empty()) return true;
    const bool mail = frames_ == 1 && out.size() <= MailBox::kCapacity &&
                      page_[slots::kWatchedWord].load() != 0 &&
                      page_[slots::kRepliesTakenWord].load(std::memory_order_acquire) == sent_ &&
                      box_.empty() && pipe_empty();
    sent_ += std::exchange(frames_, 0);
    if (mail) {
      box_.put(out);
      out.clear();
      if (page_[slots::kWatchedWord].load() != 0) return true;
      append_wake(out);  // the parent stopped watching: it waits in epoll for the pipe
    }
    if (!write_all(fd_, out.data(), out.size())) return false;
    page_[slots::kRepliesWrittenWord].fetch_add(1, std::memory_order_release);
    out.clear();
    if (out.capacity() > kKeepBufferBytes) std::vector<char>().swap(out);
    return true;
  }

 private:
  /// Nothing waits in the reply pipe. A task may have written there (a hostile one): its
  /// reply then follows those bytes down the pipe, so that the pool blames its call for them,
  /// not a later one. (The same for bytes a task left in the mailbox, which the pool takes
  /// before the pipe's.)
  bool pipe_empty() const {
    int waiting = 0;
    return ::ioctl(fd_, FIONREAD, &waiting) == 0 && waiting == 0;
  }

  int fd_;
  std::atomic<std::uint64_t>* page_;
  MailBox box_;
  std::uint64_t frames_ = 0;  // in `out`
  std::uint64_t sent_ = 0;    // frames sent, against kRepliesTakenWord
};

/// Serves calls read from in_fd, replying on out_fd, until the parent closes in_fd; starts a
/// call only by claiming its slot in the page mapped from slots_fd. Returns the exit status.
int serve_worker(int in_fd, int out_fd, int slots_fd) {
  worker_process.store(true);  // no pools of its own
  keep_freed_blocks();
  ::signal(SIGPIPE, SIG_IGN);  // a dead parent shows as EPIPE, and we exit
  ::signal(SIGINT, SIG_IGN);   // Ctrl-C is the parent's to handle
  capture_throw_stack_traces();
  void* page = ::mmap(nullptr, slots::kPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, slots_fd, 0);
  if (page == MAP_FAILED) return 1;
  ::fcntl(slots_fd, F_SETFD, FD_CLOEXEC);  // kept for the bulk areas, but not for programs
  auto* slot_page = static_cast<std::atomic<std::uint64_t>*>(page);
  WorkerHandles handles;
  if (slot_page[slots::kOneCallWord].load() != 0) {
    one_call_process = true;
    ::signal(kParentDeathSignal, terminate_own_group);
    return run_one_call(in_fd, handles, slot_page);
  }

  ReplySender replies(out_fd, slot_page);
  Writer reply(replies.out);
  auto hello = begin_frame(reply, FrameKind::hello, 0);
  reply.put(static_cast<std::int32_t>(::getpid()));
  finish_frame(reply, hello);
  replies.added();
  if (!replies.send()) return 1;

  FrameSplitter frames(max_frame_length());
  MailBox calls_box(slot_page, slots::kCallBoxOffset);
  std::vector<char> mail;
  // A frame in the mailbox is older than any still in the pipe (channel.hpp): taken first.
  auto next_frame = [&]() -> std::optional<Frame> {
    if (!calls_box.empty()) return calls_box.take(mail);
    return frames.next();
  };
  BulkArea calls_area(slots_fd, kCallsAreaOffset, &slot_page[slots::kCallsAreaWord]);
  BulkArea results_area(slots_fd, kResultsAreaOffset, &slot_page[slots::kResultsAreaWord]);
  const int server = ::getpid();
  std::uint64_t frames_taken = 0;  // against kCallsWrittenWord: a call not read yet
  for (;;) {
    while (auto frame = next_frame()) {
      if (frame->kind == FrameKind::wake) continue;
      ++frames_taken;
      const bool in_area = frame->kind == FrameKind::bulk;
      if (in_area) {
        *frame = calls_area.open(*frame, FrameKind::call);
      } else if (frame->kind != FrameKind::call) {
        return 1;  // only the pool writes to this pipe
      }
      if (!slots::move(slot_page, frame->id, slots::State::started)) {
        append_skipped(replies.out, frame->id);  // withdrawn or taken back: never started
        replies.added();
        if (in_area) calls_area.release();
        continue;
      }
      auto at = replies.out.size();
      handles.answer(frame->id, frame->body, replies.out, server, slot_page);
      replies.added();
      if (in_area) calls_area.release();  // the arguments are decoded: the area is free
      move_frame_to_area(results_area, replies.out, at);
      if (!replies.send()) return 1;
      // Above worker_memory_limit after a call: leave before starting another. The calls
      // sent ahead were not started (their slots say so), and the pool runs them elsewhere.
      if (above_memory_limit(slot_page)) return 0;
    }
    if (!replies.send()) return 1;  // skips, before waiting for more calls
    if (slot_page[slots::kWatchedWord].load(std::memory_order_relaxed) != 0)
      watch_for_call(slot_page, frames_taken);
    // Not watching (whatever a task wrote there), then one more look in the mailbox: a call
    // put there before the pool saw this sends no wake frame (channel.hpp, "Mailboxes").
    slot_page[slots::kCallWatchWord].store(0);
    if (!calls_box.empty()) continue;
    auto space = frames.space();
    ssize_t n = ::read(in_fd, space.data(), space.size());
    if (n == 0 && !calls_box.empty()) continue;  // its last call, then the end
    if (n == 0) return 0;                        // the parent closed the channel: shut down
    if (n < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    frames.commit(static_cast<std::size_t>(n));
  }
}

/// cfx::init's MPI step, through the hook that cfx-mpi registers. A program that does not link
/// cfx-mpi but was started by mpiexec runs main on every rank, as any program would.
void init_mpi_backend(int argc, char** argv) {
  if (auto init = mpi_hooks().init_if_launched) return init(argc, argv);
  if (started_by_launcher())
    std::fprintf(stderr,
                 "cfx: started by an MPI launcher, but this program is not linked with cfx's MPI "
                 "backend (cfx-mpi): every rank runs main\n");
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
  if (status == 0 && !one_call_process) kill_own_group(0);
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

void init(int argc, char** argv) {
  const char* marker = std::getenv(detail::kWorkerEnv);
  if (!marker) {
    detail::init_mpi_backend(argc, argv);  // a serving MPI rank serves and exits here
    return;
  }
  const bool fork_server = std::strstr(marker, detail::kForkServerMarker) != nullptr;
  const bool bind_now_set = std::strstr(marker, detail::kBindNowMarker) != nullptr;
  const bool tunables_set = std::strstr(marker, detail::kTunablesMarker) != nullptr;
  detail::kill_group_on_parent_death(std::atoi(marker));
  // Only this process is a worker: programs its tasks start must not inherit the marker, nor
  // what the pool set for the fork server alone.
  ::unsetenv(detail::kWorkerEnv);
  if (bind_now_set) ::unsetenv("LD_BIND_NOW");
  if (tunables_set) ::unsetenv("GLIBC_TUNABLES");
  std::fflush(nullptr);
  if (fork_server) detail::serve_fork_requests();
  detail::serve_and_exit();
}

}  // namespace cfx
