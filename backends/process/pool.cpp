// ProcessPoolExecutor: the parent's side.
//
//   submit() ──encode──▶ SubmissionQueue ──(one coalesced wake-up)──▶ I/O thread
//   (any thread)         (pending calls,                                 │ dispatch: a small
//                         mutex)                                         │ window of calls per
//                                                                        ▼ worker, in one write
//      Future ◀── complete ◀── reply frames ◀── pipe ◀── worker 1..N (own process group)
//
//   executor.cpp          the public ProcessPoolExecutor, forwarding to ProcessPoolCore
//   submission_queue.cpp  the pending queue, wake-up, shutdown/broken flags, worker pids
//   pool.cpp (this file)  the I/O thread: dispatch, windows, channels, retiring, shutdown
//   faults.cpp            the fault policy: start failure, crash, timeout, initializer
//                         failure, break_pool
//   wait_turn.cpp         the turn: a thread waiting for a result sends its call and takes
//                         the reply itself while the I/O thread stands by
//   launcher.cpp          starting a worker: descriptors, fork, spawn, CFX_WORKER marker
//   channel.cpp           frames and the FrameSplitter, both sides
//   worker.cpp            the worker's serve loop, cfx::init, cfx::is_worker_process
//
// One I/O thread runs an Asio io_context that owns every worker's two pipes, its process
// handle (pidfd: exit is an event, never polled) and its timer. Only that thread touches
// worker state (or, while it stands by, the waiting thread that holds the turn); submitters
// touch only the SubmissionQueue. A worker runs its calls in order
// and answers each (result, or skipped if it was withdrawn) before the next, and every reply
// names its call: anything else on the channel is a malformed reply, and kills the worker.
// Calls sent ahead stay pending until the worker claims their slot (channel.hpp), so they can
// be cancelled, or taken back and given to an idle worker. When a worker dies, its channel
// is read to its end first; then only the call whose slot says started fails (WorkerCrashed,
// TimeoutError, ...), and the calls behind it go back to the front of the queue.
// docs/process-backend.md has the full picture.
#include "backends/process/pool.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "cfx/detail/resumption.hpp"
#include "cfx/errors.hpp"
#include "lib/cores.hpp"

namespace cfx::detail {
namespace {

constexpr std::size_t kMaxWindow = 64;
constexpr double kWindowWorkSeconds = 0.001;  // keep about this much work queued per worker
constexpr std::size_t kReadBudget = std::size_t{4} << 20;  // bytes read from one worker a turn

/// Writes what it can of `bytes` to the non-blocking `fd` without waiting, counting it in
/// `done`; false if the write failed (not merely full).
bool write_now(int fd, const std::vector<char>& bytes, std::size_t& done) {
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
  }
  return true;
}

}  // namespace

std::size_t WorkerSlot::window() const {
  if (mean_service <= 0) return 2;
  auto w = static_cast<std::size_t>(kWindowWorkSeconds / mean_service);
  return std::clamp<std::size_t>(w, 1, kMaxWindow);
}

ProcessPoolCore::ProcessPoolCore(ProcessPoolOptions options)
    : options_(std::move(options)),
      max_workers_(options_.max_workers ? options_.max_workers : usable_cores()),
      guard_(asio::make_work_guard(io_)),
      queue_([this] {
        asio::post(io_, [self = shared_from_this()] { self->dispatch(); });
        rouse_if_unwatched();
      }) {}

void ProcessPoolCore::start() {
  make_helper();
  launch_thread_ = std::thread([this] { launch_io_.run(); });
  io_thread_ = std::thread([self = shared_from_this()] { self->run_io(); });
}

void ProcessPoolCore::start_driven() {
  driven_ = true;
  launch_thread_ = std::thread([this] { launch_io_.run(); });
  begin_io();
}

bool ProcessPoolCore::run_for(Clock::duration limit) {
  if (io_.stopped()) return false;
  io_.run_one_for(limit);
  io_.poll();
  if (!io_.stopped()) return true;
  end_io();
  return false;
}

void ProcessPoolCore::shutdown(bool wait, bool cancel_futures) {
  if (wait && driven_) throw Error("a driven process pool is run down with run_for()");
  if (wait && on_io_thread())
    throw Error(
        "shutdown(wait=true) called from a done-callback, which runs on the process pool's "
        "I/O thread: it would wait for itself; call shutdown(false) there");
  if (queue_.shut_down(cancel_futures))
    post_and_rouse([self = shared_from_this()] { self->begin_drain(); });
  if (wait) join();
}

void ProcessPoolCore::stop_workers(int signal) {
  if (on_io_thread())
    throw Error(
        "terminate_workers()/kill_workers() called from a done-callback, which runs on the "
        "process pool's I/O thread: it would wait for itself");
  queue_.shut_down(true);  // queued calls end cancelled
  post_and_rouse([self = shared_from_this(), signal] {
    self->stop_all(signal);
    self->begin_drain();
  });
  join();
}

void ProcessPoolCore::interrupt(std::weak_ptr<WorkerSlot> worker, std::uint64_t id) {
  post_and_rouse([core = weak_from_this(), worker = std::move(worker), id] {
    auto self = core.lock();
    auto w = worker.lock();
    if (self && w) self->on_interrupt(w, id);
  });
}

bool WorkerCalls::withdraw(std::uint64_t id) noexcept {
  if (slots::move(page(), id, slots::State::withdrawn)) return true;
  return slots::state(page(), id) == slots::State::taken_back;  // it will not run here
}

bool WorkerCalls::started(std::uint64_t id) const noexcept {
  return slots::state(page(), id) == slots::State::started;
}

void WorkerCalls::interrupt(std::uint64_t id) noexcept {
  try {
    if (auto core = core_.lock()) core->interrupt(worker, id);
  } catch (...) {  // out of memory posting it: the call is cancelled anyway, and finishes
  }
}

void ProcessPoolCore::detach_if_on_io_thread() {
  // A thread already in join() holds join_mutex_ and joins this one once it ends: the thread
  // is left to it then, as detaching under its join would be a data race on io_thread_.
  std::unique_lock lock(join_mutex_, std::try_to_lock);
  if (lock && on_io_thread() && io_thread_.joinable()) io_thread_.detach();
}

void ProcessPoolCore::join() {
  std::lock_guard lock(join_mutex_);
  if (io_thread_.joinable()) io_thread_.join();
}

// ---- I/O thread: dispatch and windows ---------------------------------------------------

// The I/O thread: runs io_'s handlers one at a time, and stands by (wait_turn.cpp) while
// threads waiting for results drive the pool themselves.
void ProcessPoolCore::run_io() {
  begin_io();
  while (!io_.stopped()) {
    if (stand_by_wanted()) {
      stand_by();
      continue;
    }
    io_.run_one();
  }
  end_io();
}

void ProcessPoolCore::begin_io() {
  io_thread_id_ = std::this_thread::get_id();
  mark_delivery_thread();  // coroutines awaiting our futures resume elsewhere (docs/async.md)
  // A write to a dead worker must fail with EPIPE, not kill the program. Blocking SIGPIPE
  // on this thread (which does every write) leaves the program's own disposition alone.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
}

void ProcessPoolCore::end_io() {
  // Every launch has ended (check_drained waits for them): the launcher thread is idle. Every
  // worker is reaped: the fork server, if any, is let go (it exits) and reaped there too.
  asio::post(launch_io_, [this] { fork_server_.reset(); });
  launch_guard_.reset();
  launch_thread_.join();
  io_thread_id_ = std::thread::id();  // ids are reused: a later thread must not look like us
}

void ProcessPoolCore::dispatch() {
  std::vector<RemoteTask*> cancelled;
  for (;;) {
    // Spawning blocks this thread for a few ms: fill the windows only when no worker is due.
    // With every worker started, the queue is looked at once, by fill_windows.
    if (workers_.size() + launching_ < max_workers_ && !start_failed_ && !stopping_) {
      auto queued = queue_.begin_dispatch();
      if (!queued) break;  // broken
      if (should_spawn(*queued)) {
        start_launch();
        continue;
      }
    }
    if (fill_windows(cancelled)) rebalance(cancelled);
    break;
  }
  for (auto* t : cancelled) t->drop();
  for (auto& w : workers_) flush(w);
  if (draining_) check_drained();
}

bool ProcessPoolCore::should_spawn(std::size_t queued) {
  // More work than workers (and room for another): start one (Python spawns on demand too).
  return queued + in_flight_total() > workers_.size() + launching_;
}

std::size_t ProcessPoolCore::in_flight_total() const {
  std::size_t n = 0;
  for (auto& w : workers_) n += w->in_flight.size();
  return n;
}

std::size_t ProcessPoolCore::room(const WorkerSlot& w) const {
  if (w.gone || w.exit_status || w.retiring || w.closing || w.kill_cause != KillCause::none ||
      w.in_flight.size() >= w.window())
    return 0;
  std::size_t room = w.window() - w.in_flight.size();
  // Not retiring: it may take max_tasks_per_child - calls_sent more, at least one.
  if (options_.max_tasks_per_child)
    room = std::min(room, options_.max_tasks_per_child - w.calls_sent);
  return room;
}

// Takes as many queued calls as the workers have room for, in one go so that submitters wait
// for the lock only while they are taken, then hands them out. A call cancelled while queued
// used no room: take more then, unless the queue ran out. Returns true if the queue ran out.
bool ProcessPoolCore::fill_windows(std::vector<RemoteTask*>& cancelled) {
  for (;;) {
    std::size_t total = 0;
    for (auto& w : workers_) total += room(*w);
    auto calls = queue_.take(total);  // re-arms the wake-up, even with no room
    std::size_t taken = calls.size();
    std::size_t sent = hand_out(calls, cancelled);
    if (taken < total) return true;
    if (sent == taken) return false;
  }
}

ProcessPoolCore::Worker ProcessPoolCore::least_loaded_with_room() const {
  Worker best;
  for (auto& w : workers_)
    if (room(*w) > 0 && (!best || w->in_flight.size() < best->in_flight.size())) best = w;
  return best;
}

// Each call goes to the worker with room that holds the fewest calls; returns how many were
// sent.
std::size_t ProcessPoolCore::hand_out(SubmissionQueue::Calls& calls,
                                      std::vector<RemoteTask*>& cancelled) {
  std::size_t sent = 0;
  while (!calls.empty()) {
    Worker w = least_loaded_with_room();
    if (!w) {  // cannot happen while room() is exact; never spin if it is not
      queue_.give_back(std::move(calls));
      break;
    }
    RemoteTask* t = calls.pop_front();
    if (send(w, t))
      ++sent;
    else
      cancelled.push_back(t);  // cancelled while queued: never sent
  }
  return sent;
}

bool ProcessPoolCore::send(const Worker& w, RemoteTask* t) {
  std::uint64_t id = w->next_id;
  slots::queue(w->calls->page(), id);  // before attach: cancel() may withdraw it at once
  if (!t->attach(w->calls, id)) return false;
  if (!send_handles(w, t, id)) return false;  // failed: the call's future has its error
  ++w->next_id;
  w->in_flight.push_back({t, id});
  if (w->in_flight.size() == 1) head_changed(w);
  if (!write_call_to_area(*w->calls_area, w->out, *t, id)) write_call_frame(w->out, *t, id);
  ++w->frames_unannounced;
  expect_result(w, *t, id);
  watch_busy();
  if (options_.max_tasks_per_child && !dynamic_cast<InitCall*>(t) &&
      ++w->calls_sent >= options_.max_tasks_per_child)
    w->retiring = true;
  return true;
}

// A task whose last two results took the same bulk-area size is expected to return that
// size again: the result's storage is prepared (RemoteTask::prepare_result) while the worker
// computes, so that decoding it is one copy into memory already written, not a first touch of
// fresh memory (docs/wire-format.md, "Prepared results"). Posted, to run once the calls of
// this turn have been written; a call answered by then is not found, and nothing is done.
void ProcessPoolCore::expect_result(const Worker& w, const RemoteTask& t, std::uint64_t id) {
  // Only a worker's one call in flight: at most one prepared result per worker, however many
  // big calls are queued for it.
  if (w->in_flight.size() != 1) return;
  auto it = result_sizes_.find(t.task);
  if (it == result_sizes_.end() || it->second.last != it->second.before) return;
  asio::post(io_, [w, id, bytes = it->second.last] {
    for (const auto& call : w->in_flight)
      if (call.id == id && call.task) return call.task->prepare_result(bytes);
  });
}

void ProcessPoolCore::record_result_size(const TaskEntry* task, std::size_t bytes) {
  if (bytes < kBulkBytes || bytes > kKeepBufferBytes) {
    result_sizes_.erase(task);
    return;
  }
  auto& sizes = result_sizes_[task];
  sizes.before = sizes.last;
  sizes.last = bytes;
}

// The descriptors of call `id`'s handles that `w` lacks go ahead of its frame, and the count
// in the slot page tells the worker to read them. A call without handles to a worker that
// holds none costs nothing here. If the socket refuses, the call fails (false).
bool ProcessPoolCore::send_handles(const Worker& w, RemoteTask* t, std::uint64_t id) {
  if (t->handles.empty() && w->outbox->cached() == 0) return true;
  try {
    if (auto sent = w->outbox->send(id, t->handles, true))
      w->calls->page()[slots::kDescriptorWord].fetch_add(sent, std::memory_order_release);
    return true;
  } catch (...) {
    t->detach();
    t->fail(std::current_exception());
    return false;
  }
}

// No call waits behind a busy worker while another could run it: once the queue is empty
// and a worker is idle, the calls other workers hold behind their running call are taken
// back and handed out again, to the idle workers first (hand_out prefers the least loaded).
void ProcessPoolCore::rebalance(std::vector<RemoteTask*>& cancelled) {
  bool idle = false;
  for (auto& w : workers_) idle = idle || (w->ready && room(*w) > 0 && w->in_flight.empty());
  if (!idle) return;
  std::vector<RemoteTask*> moved;
  for (auto& w : workers_) {
    if (w->in_flight.size() < 2) continue;
    auto taken = take_back_unstarted(w, true);
    moved.insert(moved.end(), taken.begin(), taken.end());
  }
  if (moved.empty()) return;
  if (requeue(moved)) fill_windows(cancelled);
}

bool ProcessPoolCore::requeue(const std::vector<RemoteTask*>& calls) {
  if (calls.empty()) return true;
  auto broken = queue_.requeue(calls);
  if (!broken) return true;
  for (RemoteTask* t : calls) {
    t->fail(std::make_exception_ptr(BrokenProcessPool(*broken)));
    t->drop();
  }
  return false;
}

// Takes back the calls `w` holds and has not started (after its first one, if keep_first),
// in order; the worker will skip them. Calls already withdrawn by cancel() stay: their
// skipped reply releases them.
std::vector<RemoteTask*> ProcessPoolCore::take_back_unstarted(const Worker& w, bool keep_first) {
  std::vector<RemoteTask*> taken;
  bool first = true;
  for (auto& sent : w->in_flight) {
    if (!sent.task) continue;
    if (std::exchange(first, false) && keep_first) continue;
    if (dynamic_cast<InitCall*>(sent.task)) continue;
    if (!slots::move(w->calls->page(), sent.id, slots::State::taken_back)) continue;
    sent.task->detach();
    taken.push_back(std::exchange(sent.task, nullptr));
    if (w->calls_sent > 0) --w->calls_sent;
  }
  if (options_.max_tasks_per_child)
    w->retiring = w->retiring && w->calls_sent >= options_.max_tasks_per_child;
  return taken;
}

void ProcessPoolCore::head_changed(const Worker& w) {
  w->head_since = Clock::now();
  w->timer_deferrals = 0;
  arm_call_timer(w);
}

// ---- I/O thread: workers and their channels ---------------------------------------------

// Starting a worker takes milliseconds (a fork, or a posix_spawn and its exec): it runs on the
// launcher thread, so that the I/O thread keeps serving the other workers meanwhile (a crash storm
// would otherwise starve them).
void ProcessPoolCore::start_launch() {
  ++launching_;
  asio::post(launch_io_, [this] {
    auto launched = std::make_shared<std::optional<LaunchedWorker>>();
    std::string error;
    try {
      launched->emplace(launch_on_launcher_thread());
    } catch (const std::exception& e) {
      error = e.what();
    }
    post_and_rouse([self = shared_from_this(), launched, error = std::move(error)] {
      self->on_launched(std::move(*launched), error);
    });
  });
}

void ProcessPoolCore::on_launched(std::optional<LaunchedWorker> launched,
                                  const std::string& error) {
  --launching_;
  if (!launched) {
    start_failure("a worker process could not be started: " + error, true);
  } else if (!adopt_worker(std::move(*launched))) {
    start_failure("a worker process could not be registered with the pool's I/O thread", true);
  }
  dispatch();
}

LaunchedWorker ProcessPoolCore::launch_on_launcher_thread() {
  if (options_.start_method != StartMethod::forkserver) return launch_worker(options_.start_method);
  // A server that died (killed from outside: its idle workers died with it) is replaced once.
  for (int attempt = 0;; ++attempt) {
    if (!fork_server_ || !fork_server_->alive()) fork_server_ = std::make_shared<ForkServer>();
    try {
      return launch_worker(StartMethod::forkserver, false, fork_server_);
    } catch (const std::system_error&) {
      if (attempt > 0 || fork_server_->alive()) throw;
    }
  }
}

bool ProcessPoolCore::adopt_worker(LaunchedWorker launched) {
  auto w = std::make_shared<WorkerSlot>(io_);
  w->pid = launched.pid;  // from here on ~WorkerSlot reaps it if the pool does not
  w->server = std::move(launched.server);
  boost::system::error_code ec;
  // assign() takes a descriptor only when it succeeds: release it from its Fd after.
  w->exit_watch.assign(launched.pidfd.get(), ec);
  if (ec) return false;
  launched.pidfd.release();
  w->calls = std::make_shared<WorkerCalls>(std::move(launched.slots), weak_from_this());
  w->calls->worker = w;
  auto* page = w->calls->page();
  page[slots::kMemoryLimitWord].store(options_.worker_memory_limit);
  w->calls_area.emplace(w->calls->file(), kCallsAreaOffset, &page[slots::kCallsAreaWord]);
  w->results_area.emplace(w->calls->file(), kResultsAreaOffset, &page[slots::kResultsAreaWord]);
  w->call_box.emplace(page, slots::kCallBoxOffset);
  w->reply_box.emplace(page, slots::kReplyBoxOffset);
  // assign() takes a descriptor only when it succeeds: release it from its Fd after.
  // Written without waiting first (flush), by whichever thread drives the pool.
  ::fcntl(launched.calls.get(), F_SETFL, ::fcntl(launched.calls.get(), F_GETFL) | O_NONBLOCK);
  w->to.assign(launched.calls.get(), ec);
  if (ec) return false;
  launched.calls.release();
  // Read without waiting (read_available), by whichever thread drives the pool.
  ::fcntl(launched.replies.get(), F_SETFL, ::fcntl(launched.replies.get(), F_GETFL) | O_NONBLOCK);
  w->from.assign(launched.replies.get(), ec);
  if (ec) return false;
  launched.replies.release();
  w->handles = std::move(launched.handles);
  w->outbox = std::make_unique<DescriptorOutbox>(w->handles.get());
  w->inbox = std::make_unique<DescriptorInbox>(w->handles.get(), DescriptorInbox::Role::pool);
  workers_.push_back(w);
  queue_.add_worker(w->pid);
  watch_server(w->server);
  watch_start(w);
  if (stopping_ || start_failed_) kill_worker(w, KillCause::stopped, 0, "the pool is stopping");
  if (options_.initializer) send(w, new InitCall(*options_.initializer, weak_from_this()));
  start_reading(w);
  return true;
}

WorkerSlot::~WorkerSlot() {
  // Normally reaped by the exit watch; a worker whose pool went away first (or whose watch
  // could not be set up) must not be left running or as a zombie.
  if (!reaped && pid > 0) kill_and_reap(pid, server.get());
}

void ProcessPoolCore::flush(const Worker& w) {
  if (w->write_busy || w->out.empty() || w->gone || w->exit_status || !w->to.is_open()) return;
  if (mail_call(w)) {
    if (w->closing) w->to.close();  // the worker takes the call from its mailbox, then ends
    return;
  }
  guard_pipe_writes();
  // Most writes fit in the pipe at once. Made here, they are over here: the next call's
  // flush finds the channel free, with no completion handler to run first (a watching thread
  // sends each call itself, wait_turn.cpp).
  std::size_t done = 0;
  const bool failed = !write_now(w->to.native_handle(), w->out, done);
  if (failed && errno == EPIPE) note_pipe_signal();
  // A worker watching in memory (worker.cpp, watch_for_call) reads now, and waits in read()
  // for the rest of a big call.
  if (w->frames_unannounced > 0)
    w->calls->page()[slots::kCallsWrittenWord].fetch_add(std::exchange(w->frames_unannounced, 0),
                                                         std::memory_order_release);
  if (failed || done == w->out.size()) {  // failed: EPIPE; the read side reports the death
    w->out.clear();
    if (w->out.capacity() > kKeepBufferBytes) std::vector<char>().swap(w->out);
    if (!failed && w->closing) w->to.close();
    return;
  }
  // The pipe is full: the rest goes as the worker reads. Asio's own completion conditions
  // write at most 64 KiB per write(): a 64 MiB argument took 1024 trips through the I/O loop,
  // each waiting for the worker to drain the pipe. Offering all that is left lets each
  // write() fill the whole (1 MiB) pipe.
  w->write_busy = true;
  w->writing.swap(w->out);
  const std::size_t rest = w->writing.size() - done;
  auto all_that_is_left = [rest](const boost::system::error_code& ec, std::size_t n) {
    return ec ? 0 : rest - n;
  };
  asio::async_write(w->to, asio::buffer(w->writing.data() + done, rest), all_that_is_left,
                    [self = shared_from_this(), w](boost::system::error_code ec, std::size_t) {
                      w->write_busy = false;
                      w->writing.clear();
                      if (w->writing.capacity() > kKeepBufferBytes)
                        std::vector<char>().swap(w->writing);
                      if (ec == asio::error::broken_pipe) note_pipe_signal();
                      if (ec) return;  // EPIPE: the read side reports the death
                      self->flush(w);
                      if (w->closing && w->out.empty() && !w->write_busy) w->to.close();
                    });
}

// Puts the one call in `out` in the worker's call mailbox if the worker watches for it in
// memory, having taken every frame sent before (channel.hpp, "Mailboxes"); true if it did.
// If the worker stopped watching meanwhile, a wake frame is left in `out` for the pipe.
bool ProcessPoolCore::mail_call(const Worker& w) {
  auto* page = w->calls->page();
  auto& written = page[slots::kCallsWrittenWord];
  if (w->frames_unannounced != 1 || w->out.size() > MailBox::kCapacity ||
      read_frame_header(w->out.data()).length + sizeof(std::uint64_t) != w->out.size() ||
      page[slots::kCallWatchWord].load() != written.load() + 1)
    return false;
  w->call_box->put(w->out);
  w->out.clear();
  w->frames_unannounced = 0;
  written.fetch_add(1);
  if (page[slots::kCallWatchWord].load() != 0) return true;
  append_wake(w->out);  // it may be on its way to sleep in read()
  return false;
}

// The reply pipe is read by whoever drives the pool (the I/O thread, or a watching thread:
// wait_turn.cpp), without waiting: Asio only says when it is readable. A pending read would
// hold a buffer that a watching thread's read could move.
void ProcessPoolCore::start_reading(const Worker& w) {
  w->reading = true;
  w->from.async_wait(
      asio::posix::stream_descriptor::wait_read,
      [self = shared_from_this(), w](boost::system::error_code ec) { self->on_readable(w, ec); });
}

void ProcessPoolCore::on_readable(const Worker& w, boost::system::error_code ec) {
  w->reading = false;
  ReadOutcome read = ReadOutcome::drained;
  if (!ec && !w->exit_status) read = read_available(w);
  if (w->exit_status) {
    read_to_end(w);  // the worker is dead: what it wrote is all in the pipe now
    bury(w);
  } else if (ec || read == ReadOutcome::ended) {
    on_channel_end(w);
  } else if (read == ReadOutcome::more) {
    // Edge-triggered: no new readiness comes for bytes already waiting. Read them on the
    // next turn of the loop, after the other workers' replies.
    w->reading = true;
    asio::post(io_, [self = shared_from_this(), w] { self->on_readable(w, {}); });
  } else if (!w->gone) {
    start_reading(w);
  }
  dispatch();
}

// Reads what the worker has written, up to a budget so that one worker's stream of bytes
// cannot starve the others: until the pipe is empty (a short read), its end, or the budget.
ProcessPoolCore::ReadOutcome ProcessPoolCore::read_available(const Worker& w) {
  const int fd = w->from.native_handle();
  w->replies_seen = replies_written(*w);  // before reading: a later reply shows as new
  on_frames(w);                           // the reply mailbox's frame first
  std::size_t budget = kReadBudget;
  while (!w->gone) {
    auto space = w->in.space();
    ssize_t n = ::read(fd, space.data(), space.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? ReadOutcome::drained : ReadOutcome::ended;
    if (n == 0) {
      on_frames(w);  // a reply the worker put in the mailbox before it ended
      return ReadOutcome::ended;
    }
    const auto got = static_cast<std::size_t>(n);
    note_read(w, got);
    on_frames(w);
    if (got < space.size()) return ReadOutcome::drained;
    if (got >= budget) return ReadOutcome::more;
    budget -= got;
  }
  return ReadOutcome::drained;
}

// Reads what is left in a dead worker's pipe, without waiting: every byte the worker wrote
// is there once it has exited. A descendant that escaped its group may still write: read no
// more than the pipe can hold, twice over.
void ProcessPoolCore::read_to_end(const Worker& w) {
  if (w->gone || !w->from.is_open()) return;
  int fd = w->from.native_handle();
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  int capacity = std::max(::fcntl(fd, F_GETPIPE_SZ), 1 << 16);
  std::size_t budget = 2 * static_cast<std::size_t>(capacity);
  on_frames(w);  // the reply mailbox's frame first
  while (budget > 0 && !w->gone) {
    auto space = w->in.space();
    ssize_t n = ::read(fd, space.data(), std::min(space.size(), budget));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      w->gone = n == 0;
      break;
    }
    budget -= static_cast<std::size_t>(n);
    note_read(w, static_cast<std::size_t>(n));
    on_frames(w);
  }
  on_frames(w);  // a reply the worker put in the mailbox after the last look
  w->gone = true;
}

void ProcessPoolCore::note_read(const Worker& w, std::size_t n) {
  w->bytes_read += n;
  w->in.commit(n);
  // Seen empty after the read: a reply put there later was put after these bytes came.
  if (w->reply_box->empty()) w->read_before_mail = w->bytes_read;
}

void ProcessPoolCore::on_frames(const Worker& w) {
  try {
    for (;;) {
      if (take_mail(w)) continue;                         // older than any frame still in the pipe
      if (auto h = w->in.header()) check_header(*w, *h);  // before its body is read
      auto frame = w->in.next();
      if (!frame) return;
      on_frame(w, *frame);
    }
  } catch (const std::exception& e) {
    // Someone else wrote on this channel (a task, or a process it started): it cannot be
    // trusted any more. The call it was running fails; the others run elsewhere.
    std::uint64_t running = w->in_flight.empty() ? 0 : w->in_flight.front().id;
    kill_worker(w, KillCause::malformed, running,
                std::string("it wrote a malformed reply (") + e.what() + ")");
    w->in = FrameSplitter(max_frame_length());  // nothing more is read from it
    w->gone = true;
  }
}

// Takes the frame in the worker's reply mailbox, if there is one.
bool ProcessPoolCore::take_mail(const Worker& w) {
  if (!w->reply_box || w->reply_box->empty()) return false;
  // The worker mails a reply only once every frame it sent before was taken and nothing
  // waits in the pipe, so bytes read before the mailbox was last seen empty came first. Whole
  // frames among them are taken first (a wake frame, counted by neither side; what a task
  // wrote, which then fails the call this mail answers). A part of a frame there is no frame
  // of the worker's: a task wrote it, during the call this mail answers.
  if (w->bytes_read - w->in.buffered() < w->read_before_mail) {
    if (w->in.has_frame()) return false;
    throw SerializationError(
        std::to_string(w->read_before_mail - (w->bytes_read - w->in.buffered())) +
        " bytes on the pipe before the reply that are no frame of the worker's");
  }
  Frame frame = w->reply_box->take(w->mail);
  check_header(*w, read_frame_header(w->mail.data()));
  on_frame(w, frame);
  return true;
}

void ProcessPoolCore::check_header(const WorkerSlot& w, const FrameHeader& h) const {
  if (w.kill_cause == KillCause::malformed) throw SerializationError("after a malformed reply");
  std::optional<std::uint64_t> next;
  if (!w.in_flight.empty()) next = w.in_flight.front().id;
  check_reply_header(h, !w.ready, next);
}

void ProcessPoolCore::on_frame(const Worker& w, Frame& frame) {
  if (frame.kind == FrameKind::wake) return;  // its frame was in the mailbox
  // The worker may put its next reply in the mailbox once it sees this count.
  w->calls->page()[slots::kRepliesTakenWord].store(++w->replies_taken, std::memory_order_release);
  if (frame.kind == FrameKind::hello) {
    w->ready = true;
    start_failures_ = start_kills_ = 0;
    w->timer.cancel();
    head_changed(w);  // arms the timeout of a call sent before the hello
  } else if (frame.kind == FrameKind::skipped) {
    SentCall skipped = w->in_flight.front();
    w->in_flight.pop_front();
    head_changed(w);
    if (skipped.task) {  // withdrawn by cancel(), which ends its future
      skipped.task->detach();
      skipped.task->drop();
    }
  } else if (frame.kind == FrameKind::bulk) {
    Frame result = w->results_area->open(frame, FrameKind::result);
    on_result(w, result);
    w->results_area->release();
  } else {
    on_result(w, frame);
  }
}

void ProcessPoolCore::on_result(const Worker& w, Frame& frame) {
  Reply reply = read_reply(frame.body);  // before taking the call: a malformed reply kills
  SentCall done = w->in_flight.front();
  if (done.task) check_reply_count(reply, done.task->count);
  w->in_flight.pop_front();
  double took = std::chrono::duration<double>(Clock::now() - w->head_since).count();
  w->mean_service = w->mean_service > 0 ? 0.8 * w->mean_service + 0.2 * took : took;
  head_changed(w);
  if (done.task) {
    if (reply.count == 1) record_result_size(done.task->task, reply.results.remaining());
    done.task->detach();
    w->inbox->begin(done.id);  // the results' descriptors, if any, came before the frame
    HandleSourceScope source(*w->inbox);
    // The arguments' handles are not needed again: released now, not with the future (a
    // Connection end kept open here would hide the EOF its peer waits for).
    done.task->handles.clear();
    done.task->complete(reply.results, reply.count, std::move(reply.error));
    give_spare_bytes(std::move(done.task->args));  // for the next big call's arguments
    done.task->drop();
  }
  if (options_.worker_memory_limit) check_memory(w, true);
  if (w->retiring && w->in_flight.empty()) close_channel(w);
}

void ProcessPoolCore::close_channel(const Worker& w) {
  if (w->closing) return;
  w->closing = true;
  if (!w->write_busy && w->out.empty() && w->to.is_open()) w->to.close();
}

void ProcessPoolCore::remove_worker(const Worker& w) {
  boost::system::error_code ignored;
  w->to.close(ignored);
  w->from.close(ignored);
  w->exit_watch.close(ignored);
  workers_.erase(std::remove(workers_.begin(), workers_.end(), w), workers_.end());
  queue_.remove_worker(w->pid);
}

void ProcessPoolCore::begin_drain() {
  draining_ = true;
  check_drained();
}

void ProcessPoolCore::check_drained() {
  if (!queue_.drained()) return;  // queued work still runs
  for (auto& w : workers_)
    if (!w->in_flight.empty()) return;
  for (auto& w : workers_) close_channel(w);
  if (workers_.empty() && launching_ == 0) {
    busy_timer_.cancel();
    stop_timer_.cancel();
    boost::system::error_code ignored;
    server_watch_.close(ignored);
    watched_server_.reset();
    guard_.reset();  // io_.run() returns once the last handler ran
  }
}

}  // namespace cfx::detail
