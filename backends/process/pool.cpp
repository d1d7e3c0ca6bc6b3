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
//   launcher.cpp          starting a worker: descriptors, fork, spawn, CFX_WORKER marker
//   channel.cpp           frames and the FrameSplitter, both sides
//   worker.cpp            the worker's serve loop, cfx::init, cfx::is_worker_process
//
// One I/O thread runs an Asio io_context that owns every worker's two pipes, its process
// handle (pidfd: exit is an event, never polled) and its timer. Only that thread touches
// worker state; submitters touch only the SubmissionQueue. A worker runs its calls in order,
// so the head of its in-flight list is the one running: when a worker dies, that call fails
// (WorkerCrashed, or TimeoutError if the pool killed it) and the calls behind it, which never
// started, go back to the front of the queue. docs/process-backend.md has the full picture.
#include "backends/process/pool.hpp"

#include <signal.h>

#include <algorithm>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "cfx/errors.hpp"
#include "lib/cores.hpp"

namespace cfx::detail {
namespace {

constexpr std::size_t kMaxWindow = 64;
constexpr double kWindowWorkSeconds = 0.001;  // keep about this much work queued per worker

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
      queue_([this] { asio::post(io_, [self = shared_from_this()] { self->dispatch(); }); }) {}

void ProcessPoolCore::start() {
  io_thread_ = std::thread([self = shared_from_this()] { self->run_io(); });
}

void ProcessPoolCore::shutdown(bool wait, bool cancel_futures) {
  if (wait && on_io_thread())
    throw Error(
        "shutdown(wait=true) called from a done-callback, which runs on the process pool's "
        "I/O thread: it would wait for itself; call shutdown(false) there");
  if (queue_.shut_down(cancel_futures))
    asio::post(io_, [self = shared_from_this()] { self->begin_drain(); });
  if (wait) join();
}

void ProcessPoolCore::detach_if_on_io_thread() {
  if (on_io_thread()) io_thread_.detach();
}

void ProcessPoolCore::join() {
  std::lock_guard lock(join_mutex_);
  if (io_thread_.joinable()) io_thread_.join();
}

// ---- I/O thread: dispatch and windows ---------------------------------------------------

void ProcessPoolCore::run_io() {
  io_thread_id_ = std::this_thread::get_id();
  // A write to a dead worker must fail with EPIPE, not kill the program. Blocking SIGPIPE
  // on this thread (which does every write) leaves the program's own disposition alone.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
  io_.run();
}

void ProcessPoolCore::dispatch() {
  std::vector<RemoteTask*> cancelled;
  for (;;) {
    // Spawning blocks this thread for a few ms: fill the windows only when no worker is due.
    // With every worker started, the queue is looked at once, by fill_windows.
    if (workers_.size() < max_workers_ && !start_failed_) {
      auto queued = queue_.begin_dispatch();
      if (!queued) break;  // broken
      if (should_spawn(*queued)) {
        if (!spawn_worker()) break;
        continue;
      }
    }
    fill_windows(cancelled);
    break;
  }
  for (auto* t : cancelled) t->drop();
  for (auto& w : workers_) flush(w);
  if (draining_) check_drained();
}

bool ProcessPoolCore::should_spawn(std::size_t queued) {
  // More work than workers (and room for another): start one (Python spawns on demand too).
  return queued + in_flight_total() > workers_.size();
}

std::size_t ProcessPoolCore::in_flight_total() const {
  std::size_t n = 0;
  for (auto& w : workers_) n += w->in_flight.size();
  return n;
}

std::size_t ProcessPoolCore::room(const WorkerSlot& w) const {
  if (w.gone || w.retiring || w.closing || w.in_flight.size() >= w.window()) return 0;
  std::size_t room = w.window() - w.in_flight.size();
  // Not retiring: it may take max_tasks_per_child - calls_sent more, at least one.
  if (options_.max_tasks_per_child)
    room = std::min(room, options_.max_tasks_per_child - w.calls_sent);
  return room;
}

// Takes as many queued calls as the workers have room for, in one go so that submitters wait
// for the lock only while they are taken, then hands them out. A call cancelled while queued
// used no room: take more then, unless the queue ran out.
void ProcessPoolCore::fill_windows(std::vector<RemoteTask*>& cancelled) {
  for (;;) {
    std::size_t total = 0;
    for (auto& w : workers_) total += room(*w);
    auto calls = queue_.take(total);  // re-arms the wake-up, even with no room
    std::size_t taken = calls.size();
    std::size_t sent = hand_out(calls, cancelled);
    if (taken < total || sent == taken) return;
  }
}

// Round-robin over the workers with room; returns how many calls were sent.
std::size_t ProcessPoolCore::hand_out(SubmissionQueue::Calls& calls,
                                      std::vector<RemoteTask*>& cancelled) {
  std::size_t sent = 0;
  while (!calls.empty()) {
    bool progress = false;
    for (auto& w : workers_) {
      if (calls.empty()) break;
      if (room(*w) == 0) continue;
      RemoteTask* t = calls.pop_front();
      progress = true;
      if (!t->attach(nullptr, 0)) {
        cancelled.push_back(t);  // cancelled while queued: never sent
        continue;
      }
      send(w, t);
      ++sent;
    }
    if (!progress) {  // cannot happen while room() is exact; never spin if it is not
      queue_.give_back(calls);
      break;
    }
  }
  return sent;
}

void ProcessPoolCore::send(const Worker& w, RemoteTask* t) {
  w->in_flight.push_back(t);
  if (w->in_flight.size() == 1) head_changed(w);
  write_call_frame(w->out, *t);
  if (options_.max_tasks_per_child && !dynamic_cast<InitCall*>(t) &&
      ++w->calls_sent >= options_.max_tasks_per_child)
    w->retiring = true;
}

void ProcessPoolCore::head_changed(const Worker& w) {
  w->head_started = Clock::now();
  arm_task_timeout(w);
}

// ---- I/O thread: workers and their channels ---------------------------------------------

bool ProcessPoolCore::spawn_worker() {
  auto w = std::make_shared<WorkerSlot>(io_);
  try {
    LaunchedWorker launched = launch_worker(options_.start_method, io_.get_executor());
    w->proc.emplace(std::move(launched.process));
    w->started = std::move(launched.started);
    // assign() takes a descriptor only when it succeeds: release it from its Fd after.
    w->to.assign(launched.calls.get());
    launched.calls.release();
    w->from.assign(launched.replies.get());
    launched.replies.release();
  } catch (const std::exception& e) {
    start_failure(std::string("a worker process could not be started: ") + e.what(), true);
    return false;
  }
  w->pid = w->proc->id();
  workers_.push_back(w);
  queue_.add_worker(w->pid);
  watch_start(w);
  if (options_.initializer) send(w, new InitCall(*options_.initializer, weak_from_this()));
  start_reading(w);
  return true;
}

void ProcessPoolCore::flush(const Worker& w) {
  if (w->write_busy || w->out.empty() || w->gone || !w->to.is_open()) return;
  w->write_busy = true;
  w->writing.swap(w->out);
  asio::async_write(w->to, asio::buffer(w->writing),
                    [self = shared_from_this(), w](boost::system::error_code ec, std::size_t) {
                      w->write_busy = false;
                      w->writing.clear();
                      if (ec) return;  // EPIPE: the read side reports the death
                      self->flush(w);
                      if (w->closing && w->out.empty()) w->to.close();
                    });
}

void ProcessPoolCore::start_reading(const Worker& w) {
  auto space = w->in.space();
  w->from.async_read_some(
      asio::buffer(space.data(), space.size()),
      [self = shared_from_this(), w](boost::system::error_code ec, std::size_t n) {
        if (ec) {
          self->on_eof(w);
          return;
        }
        w->in.commit(n);
        self->on_frames(w);
        if (!w->gone) self->start_reading(w);
        self->dispatch();
      });
}

void ProcessPoolCore::on_frames(const Worker& w) {
  while (auto frame = w->in.next()) {
    try {
      auto kind = frame->get<FrameKind>();
      if (kind == FrameKind::hello) {
        w->ready = true;
        start_failures_ = 0;
        w->timer.cancel();
        head_changed(w);  // arms task_timeout for a call sent before the hello
      } else if (kind == FrameKind::result) {
        on_result(w, *frame);
      }
    } catch (const std::exception&) {
      kill_worker(w, "it wrote a malformed reply");  // this channel cannot be trusted any more
      return;
    }
  }
}

void ProcessPoolCore::on_result(const Worker& w, Reader& frame) {
  if (w->in_flight.empty()) throw SerializationError("a reply nobody asked for");
  Reply reply = read_reply(frame);  // before taking the call: a malformed reply kills the worker
  RemoteTask* t = w->in_flight.front();
  w->in_flight.pop_front();
  ++w->replies;
  double took = std::chrono::duration<double>(Clock::now() - w->head_started).count();
  w->mean_service = w->mean_service > 0 ? 0.8 * w->mean_service + 0.2 * took : took;
  head_changed(w);
  t->complete(reply.results, reply.count, std::move(reply.error));
  t->drop();
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
  if (workers_.empty()) guard_.reset();  // io_.run() returns once the last handler ran
}

}  // namespace cfx::detail
