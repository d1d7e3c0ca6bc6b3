// The process pool's turn: a thread waiting for one of the pool's results drives the pool
// itself while the I/O thread stands by.
//
// A round trip through the I/O thread has three threads in it on this machine's two cores:
// the waiting thread, the I/O thread (woken to send the call, woken again by the reply) and
// the worker, which sleeps in read() between calls. Every wake-up costs about as much as the
// call, and a system call a microsecond (docs/performance.md, "The tail of a round trip").
// So while a thread watches one of the pool's futures on the core (StateBase::wait), it does
// the I/O thread's work itself (help): it sends its call, watches in memory for the worker's
// reply count to move (kRepliesWrittenWord), reads the reply and completes its future, and
// now and then runs io_'s other handlers. The worker, told that a thread watches
// (kWatchedWord), watches in memory for the next call for a moment before it sleeps.
//
// The I/O thread meanwhile stands by (stand_by): it has left io_.run_one() and sleeps on a
// futex word of its own, so that replies no longer wake it. When no thread watches, it looks
// at the pool itself: when roused, every kStandByLimit, and every kUnwatchedLook while replies
// are owed; it goes back to io_ once no thread has begun to watch for kStandByLimit. While a
// thread watches it sleeps longer (kWatchedSleep): each of its wake-ups takes a core from a
// thread that is waiting for a reply or computing one. Only the
// holder of turn_ touches the pool's state while it stands by. The callbacks and coroutines
// of the futures a watching thread completes run on the I/O thread (DivertUserCode), as they
// would have.
#include <sched.h>
#include <signal.h>

#include <algorithm>

#include "backends/process/pool.hpp"
#include "cfx/detail/shared_sync.hpp"
#include "lib/cores.hpp"

namespace cfx::detail {
namespace {

/// The I/O thread stands by until no thread has begun to watch for this long.
constexpr auto kStandByLimit = std::chrono::milliseconds(1);
/// The I/O thread's sleep while a thread watches.
constexpr auto kWatchedSleep = std::chrono::milliseconds(8);
/// A submit that finds no thread watching rouses the I/O thread to send it, unless a watch
/// ended this recently: then the submitter, a loop of submit and result, is about to watch.
constexpr auto kQuietGap = std::chrono::microseconds(50);
/// Standing by with replies owed and no thread watching, the I/O thread looks this often.
constexpr auto kUnwatchedLook = std::chrono::microseconds(50);
/// A watching thread runs io_'s handlers at least this often, and between looks watches the
/// workers' reply counts in memory for up to kWatchSpin before it yields the core.
constexpr auto kLookEvery = std::chrono::microseconds(50);
constexpr auto kWatchSpin = std::chrono::microseconds(5);

/// The first look of a thread's watch sends the calls queued: its own is among them.
thread_local bool watch_first_look = false;

/// A write to a dead worker fails with EPIPE and raises SIGPIPE in the writing thread. A
/// watching thread blocks SIGPIPE while it holds the turn and, if one of its writes failed so
/// (note_pipe_signal), takes that signal back before it restores its mask: the program's
/// disposition is left alone, as on the I/O thread. A thread that blocked SIGPIPE itself
/// keeps it blocked, and keeps a SIGPIPE that was pending before.
class PipeSignalGuard {
 public:
  void block() noexcept {
    if (active_) return;
    sigset_t old;
    if (pthread_sigmask(SIG_BLOCK, &pipe_set(), &old) != 0) return;
    active_ = true;
    raised_ = false;
    restore_ = !sigismember(&old, SIGPIPE);
    pending_before_ = false;
    if (!restore_) {  // blocked already: a SIGPIPE may be waiting that is not ours to take
      sigset_t pending;
      pending_before_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    }
  }
  /// This thread holds the turn: block() before its first write to a pipe.
  void arm() noexcept { armed_ = true; }
  void block_if_armed() noexcept {
    if (armed_) block();
  }
  void note_raised() noexcept { raised_ = active_; }
  void unblock() noexcept {
    armed_ = false;
    if (!active_) return;
    active_ = false;
    if (raised_ && !pending_before_) {
      const timespec now{0, 0};
      while (sigtimedwait(&pipe_set(), nullptr, &now) < 0 && errno == EINTR) {
      }
    }
    if (restore_) pthread_sigmask(SIG_UNBLOCK, &pipe_set(), nullptr);
  }

 private:
  static const sigset_t& pipe_set() noexcept {
    static const sigset_t set = [] {
      sigset_t s;
      sigemptyset(&s);
      sigaddset(&s, SIGPIPE);
      return s;
    }();
    return set;
  }
  bool armed_ = false;           // the thread holds the turn: its writes need the block
  bool active_ = false;          // blocked by block(), not yet unblocked
  bool raised_ = false;          // a write of this thread's failed with EPIPE meanwhile
  bool restore_ = false;         // SIGPIPE was not blocked before
  bool pending_before_ = false;  // one was pending before (blocked by the thread itself)
};

thread_local PipeSignalGuard pipe_signal;

/// The WaitHelper of every call of one pool.
class PoolHelper final : public WaitHelper {
 public:
  explicit PoolHelper(std::weak_ptr<ProcessPoolCore> core) : core_(std::move(core)) {}
  void begin() noexcept override {
    watch_first_look = true;
    if (auto core = core_.lock()) core->begin_help();
  }
  bool help() noexcept override {
    auto core = core_.lock();
    return core && core->help();
  }
  void end() noexcept override {
    pipe_signal.unblock();
    if (auto core = core_.lock()) core->end_help();
  }

 private:
  std::weak_ptr<ProcessPoolCore> core_;
};

}  // namespace

void note_pipe_signal() noexcept {
  pipe_signal.note_raised();
}

void guard_pipe_writes() noexcept {
  pipe_signal.block_if_armed();
}

void ProcessPoolCore::make_helper() {
  helper_ = std::make_shared<PoolHelper>(weak_from_this());
}

void ProcessPoolCore::enqueue(RemoteTask* task) {
  if (!driven_) task->pool_helper = helper_;
  queue_.push(task);
}

void ProcessPoolCore::begin_help() noexcept {
  if (driven_) return;
  helpers_.fetch_add(1);
  helps_.fetch_add(1);
  // The I/O thread waits in io_: a handler brings it out to stand by.
  if (standing_by_.load() || stand_by_asked_.exchange(true)) return;
  try {
    asio::post(io_, [self = shared_from_this()] { self->stand_by_asked_.store(false); });
  } catch (...) {  // out of memory: the watcher waits for the I/O thread, as before
    stand_by_asked_.store(false);
  }
}

bool ProcessPoolCore::help() noexcept {
  if (driven_ || on_io_thread()) return false;
  std::unique_lock turn(turn_, std::try_to_lock);
  if (!turn || !standing_by_.load()) return false;
  pipe_signal.arm();
  DivertUserCode divert(*this);
  return look(std::exchange(watch_first_look, false), kWatchSpin);
}

void ProcessPoolCore::end_help() noexcept {
  // The last watcher to leave with replies owed rouses the I/O thread, which looks for them.
  if (driven_ || helpers_.fetch_sub(1) != 1) return;
  watch_ended_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  std::unique_lock turn(turn_, std::try_to_lock);
  if (!turn || (standing_by_.load() && owed())) rouse();
}

// One look at the pool by the holder of the turn: sends the calls queued (`send_first`: at
// once), takes in the replies the workers have written, and runs io_'s other handlers at
// least every kLookEvery. Watches the reply counts in memory for up to `spin` meanwhile.
// True if it did anything.
bool ProcessPoolCore::look(bool send_first, Clock::duration spin) {
  mark_watched(true);
  mark_watcher_core(static_cast<unsigned>(::sched_getcpu() + 1));
  bool did = false;
  if (send_first) {
    dispatch();
    did = true;
  } else if (watch_replies(spin) && read_all_replies()) {
    dispatch();  // the calls queued behind the replies
    did = true;
  }
  // However many replies come, the rest of io_'s work is never put off longer than this.
  if (Clock::now() - last_look_ >= kLookEvery) {
    last_look_ = Clock::now();
    // io_'s reactor goes on with a pending async_write in this thread: to a dead worker, a
    // SIGPIPE here.
    if (writing()) guard_pipe_writes();
    did = io_.poll() > 0 || did;
  }
  return did;
}

// The I/O thread's look while it stands by and no thread watches: everything, at once.
void ProcessPoolCore::look_round() {
  mark_watcher_core(0);  // this thread sleeps between looks
  last_look_ = Clock::now();
  read_all_replies();
  io_.poll();
  dispatch();
}

// Watches the workers' reply counts in memory for up to `spin`, or until the next run of
// io_'s handlers is due; true as soon as a worker has written a reply not yet read.
bool ProcessPoolCore::watch_replies(Clock::duration spin) const {
  const auto until = std::min(Clock::now() + spin, last_look_ + kLookEvery);
  for (;;) {
    for (auto& w : workers_)
      if (reply_waiting(*w)) return true;
    if (Clock::now() >= until) return false;
    for (int i = 0; i < 16; ++i) cpu_relax();
  }
}

// Reads the replies the workers have written since they were last read, without waiting for
// io_ to report them; true if any bytes came (a count moved by a task, not by a reply, reads
// none). A channel's end and a worker's death are left to io_'s handlers (on_readable,
// on_exit).
bool ProcessPoolCore::read_all_replies() {
  bool read = false;
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    Worker w = workers_[i];
    if (w->gone || w->exit_status) continue;
    if (read_mailbox(w)) read = true;
    if (replies_written(*w) == w->replies_seen) continue;  // nothing new in the pipe
    const auto before = w->bytes_read;
    read_available(w);
    read = read || w->bytes_read != before;
  }
  return read;
}

// Takes the frame waiting in the worker's reply mailbox (and the pipe's frames older than
// it); true if there was one. A channel that ended or a dead worker is left to io_'s handlers.
bool ProcessPoolCore::read_mailbox(const Worker& w) {
  if (w->gone || w->exit_status || w->reply_box->empty()) return false;
  on_frames(w);
  return true;
}

std::uint64_t ProcessPoolCore::replies_written(const WorkerSlot& w) {
  return w.calls->page()[slots::kRepliesWrittenWord].load(std::memory_order_acquire);
}

bool ProcessPoolCore::reply_waiting(const WorkerSlot& w) {
  return replies_written(w) != w.replies_seen || !w.reply_box->empty();
}

void ProcessPoolCore::mark_watched(bool watched, bool again) {
  if (!again && watched == watched_marked_ && workers_.size() == workers_marked_) return;
  watched_marked_ = watched;
  workers_marked_ = workers_.size();
  for (auto& w : workers_)
    w->calls->page()[slots::kWatchedWord].store(watched ? 1 : 0);  // see the top of channel.hpp
}

void ProcessPoolCore::mark_watcher_core(unsigned core) {
  if (core == core_marked_ && workers_.size() == workers_core_marked_) return;
  core_marked_ = core;
  workers_core_marked_ = workers_.size();
  for (auto& w : workers_)
    w->calls->page()[slots::kWatcherCoreWord].store(core, std::memory_order_relaxed);
}

bool ProcessPoolCore::writing() const {
  return std::any_of(workers_.begin(), workers_.end(),
                     [](const Worker& w) { return w->write_busy; });
}

bool ProcessPoolCore::owed() const {
  return draining_ || launching_ > 0 || in_flight_total() > 0 || !queue_.drained();
}

void ProcessPoolCore::rouse_if_unwatched() noexcept {
  if (!standing_by_.load() || helpers_.load() > 0) return;
  const auto ended =
      Clock::time_point(Clock::duration(watch_ended_.load(std::memory_order_relaxed)));
  if (Clock::now() - ended >= kQuietGap) rouse();
}

void ProcessPoolCore::rouse() noexcept {
  rouse_.fetch_add(1);
  if (asleep_.load()) futex_wake(rouse_, 1);
}

bool ProcessPoolCore::stand_by_wanted() const {
  return !driven_ && helpers_.load() > 0;
}

// The I/O thread, out of io_ (run_io): sleeps while threads watch the pool's futures, and
// runs the user code they hand over. Roused, or with replies owed and no thread watching, it
// looks at the pool itself (every kUnwatchedLook), without waiting in io_. Returns once no
// thread has begun to watch for kStandByLimit, or the pool is shutting down.
void ProcessPoolCore::stand_by() {
  auto seq = rouse_.load();  // a rouse from here on ends the first sleep at once
  {
    std::lock_guard turn(turn_);
    standing_by_.store(true);
  }
  auto seen = helps_.load();
  auto last_help = Clock::now();
  bool look_soon = false;  // replies owed that no thread watches for
  for (;;) {
    user_code_.run();
    asleep_.store(true);
    Clock::duration sleep = kStandByLimit;
    if (look_soon)
      sleep = kUnwatchedLook;
    else if (helpers_.load() > 0)
      sleep = kWatchedSleep;
    futex_wait(rouse_, seq, Clock::now() + sleep);
    asleep_.store(false);
    seq = rouse_.load();
    const auto helps = helps_.load();
    const bool helped = helps != std::exchange(seen, helps);  // a watch began since the last look
    const auto now = Clock::now();
    if (helped) last_help = now;
    if (helpers_.load() > 0) {  // they drive, and rouse this thread as they leave
      look_soon = false;
      continue;
    }
    std::unique_lock turn(turn_, std::try_to_lock);
    if (!turn || helpers_.load() > 0) {  // one has just begun, or is just leaving: look again
      look_soon = true;
      continue;
    }
    look_round();  // what no watching thread did
    look_soon = owed();
    // Shutting down, or nobody watches any more (a reply owed that long is a long call's):
    // back to io_, which sleeps until what it waits for comes.
    if (io_.stopped() || draining_ || now - last_help >= kStandByLimit) {
      mark_watched(false, true);  // also over a mark a task wrote (watch_busy finds its mail)
      mark_watcher_core(0);
      // A worker that saw the mark before it went put its reply in the mailbox, and writes
      // no wake frame: looked for once more, now that io_ will wait for the pipes.
      if (read_all_replies()) dispatch();
      standing_by_.store(false);  // under the turn: no watching thread is in the pool now
      break;
    }
  }
  user_code_.run();
}

// UserCodeSink: the callbacks of a future a watching thread completed, for the I/O thread.
void ProcessPoolCore::take(StateBase& state, CallbackNode* callbacks) noexcept {
  if (!user_code_.keep(state, callbacks)) return;  // out of memory: it ran here
  // Run by stand_by once roused, or by this handler if the I/O thread no longer stands by (a
  // watcher's look that runs the handler leaves the code to the I/O thread).
  try {
    asio::post(io_, [self = shared_from_this()] {
      if (self->on_io_thread()) self->user_code_.run();
    });
  } catch (...) {  // out of memory: stand_by runs it, or the next of these handlers
  }
  rouse();
}

}  // namespace cfx::detail
