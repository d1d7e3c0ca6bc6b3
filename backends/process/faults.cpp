// The process pool's fault policy: what the I/O thread does when a worker does not start,
// crashes, is killed from outside, runs a call past its timeout, is interrupted, outgrows
// worker_memory_limit, writes a malformed reply, or fails its initializer; how the pool
// breaks; and terminate_workers/kill_workers. The table in docs/process-backend.md
// ("Faults") is the contract.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "backends/process/pool.hpp"
#include "backends/process/worker.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {
namespace {

// waitid's id type for a pidfd (Linux 5.4); glibc 2.36's <sys/wait.h> does not name it.
constexpr int kPidfdIdType = 3;  // P_PIDFD in <linux/wait.h>

constexpr auto kStartupTimeout = std::chrono::seconds(5);
constexpr int kMaxStartFailures = 3;
// Workers SIGKILLed before their hello by someone else (an outside killer, the OOM killer)
// say nothing about the program: they get a larger budget of their own, still finite, so
// that a machine that kills every new worker does not keep the pool spawning forever.
constexpr int kMaxStartKills = 50;
// How often workers running a call are looked at: their memory (worker_memory_limit), and
// their reply mailboxes.
constexpr auto kBusyCheckPeriod = std::chrono::milliseconds(50);
// A worker that has not exited this long after its channel ended is killed.
constexpr auto kExitGrace = std::chrono::milliseconds(200);
// SIGKILL follows terminate_workers()' SIGTERM after this long.
constexpr auto kTerminateGrace = std::chrono::seconds(1);
// A call whose slot does not say started yet (its frame is still on its way) is looked at
// again after this long: its timeout counts from its start.
constexpr auto kStartPoll = std::chrono::milliseconds(5);

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

/// "was killed by SIGSEGV (signal 11)" / "exited with status 3". `pool_kill` is why the
/// pool killed the worker, empty if it did not: only a SIGKILL the pool did not send may be
/// the out-of-memory killer's.
std::string describe_status(int status, const std::string& pool_kill) {
  if (status == -1)  // a fork server's worker that the server could not reap
    return "ended; its exit status is unknown" +
           (pool_kill.empty() ? std::string() : ", killed by the pool: " + pool_kill);
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    std::string s = "was killed by " + signal_name(sig) + " (signal " + std::to_string(sig) + ")";
    if (sig == SIGKILL && !pool_kill.empty())
      s += ", sent by the pool: " + pool_kill;
    else if (sig == SIGKILL)
      s += "; nobody in this program sent it: the out-of-memory killer may have, or someone "
           "outside";
    return s;
  }
  if (WIFEXITED(status)) {
    int code = WEXITSTATUS(status);
    std::string s = "exited with status " + std::to_string(code);
    if (code == 0) s += " before returning a result";
    return s;
  }
  return "ended with raw status " + std::to_string(status);
}

bool is_init_call(RemoteTask* t) {
  return dynamic_cast<InitCall*>(t) != nullptr;
}

/// Resident memory of process `pid` in bytes; 0 if it cannot be read.
std::size_t resident_bytes(int pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  std::size_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

std::string mebibytes(std::size_t bytes) {
  return std::to_string(bytes / (1024 * 1024)) + " MiB";
}

std::string seconds(std::chrono::duration<double> d) {
  std::string s = std::to_string(d.count());
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.pop_back();
  return s + " s";
}

}  // namespace

void InitCall::complete(Reader&, std::uint32_t, std::exception_ptr error) noexcept {
  if (!error) return;
  try {
    std::string why = "the process pool's initializer failed";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      why += ": " + std::string(e.what());
    } catch (...) {
    }
    if (auto core = core_.lock()) core->break_pool(why);
  } catch (...) {
  }
}

// A worker that never says hello is a program that did not call cfx::init (or hung before
// it): do not wait forever for it. Its exit, expected or not, arrives through the pidfd.
void ProcessPoolCore::watch_start(const Worker& w) {
  w->timer.expires_after(kStartupTimeout);
  w->timer.async_wait([self = shared_from_this(), w](boost::system::error_code ec) {
    if (ec || w->ready || w->exit_status) return;
    self->start_failure("a worker process did not start serving within " +
                            std::to_string(kStartupTimeout.count()) +
                            " s: does main() call cfx::init(argc, argv) as its first line?",
                        true);
    self->kill_worker(w, KillCause::startup, 0, "it did not start serving in time");
  });
  watch_exit(w);
}

void ProcessPoolCore::watch_exit(const Worker& w) {
  w->exit_watch.async_wait(
      asio::posix::stream_descriptor::wait_read,
      [self = shared_from_this(), w](boost::system::error_code ec) {
        if (ec == asio::error::operation_aborted) return;  // removed already
        siginfo_t info{};
        int r = ::waitid(static_cast<idtype_t>(kPidfdIdType), w->exit_watch.native_handle(), &info,
                         WEXITED | WNOHANG);
        if (r == 0 && info.si_pid == 0 && !ec) {
          self->watch_exit(w);  // a readiness without an exit: wait again
          return;
        }
        // The status in waitpid's encoding; -1 (no exit has it) if it could not be read.
        int status = -1;
        if (r != 0 && errno == ECHILD && w->server) {
          // A fork server's child: the server reaps it, once it has exited (waitid cannot tell
          // a readiness without an exit from one with it here; poll can).
          pollfd exited{w->exit_watch.native_handle(), POLLIN, 0};
          if (!ec && ::poll(&exited, 1, 0) == 0) {
            self->watch_exit(w);
            return;
          }
          status = w->server->reap(w->pid);
          w->reaped = true;
        } else {
          w->reaped = r == 0;
        }
        if (r == 0 && info.si_code == CLD_EXITED)
          status = W_EXITCODE(info.si_status, 0);
        else if (r == 0 && (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED))
          status = W_EXITCODE(0, info.si_status);
        self->on_exit(w, status);
      });
}

// A fork server killed from outside takes its workers with it (their parent-death signal), but
// a task may block or ignore that signal: the pool kills what is left of them itself. Their
// calls fail as crashes, and the next launch starts a new server.
void ProcessPoolCore::watch_server(const std::shared_ptr<ForkServer>& server) {
  if (!server || server == watched_server_) return;
  boost::system::error_code ec;
  server_watch_.close(ec);  // the previous server's watch ends (operation_aborted)
  watched_server_ = server;
  int fd = ::fcntl(server->pidfd(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return;
  server_watch_.assign(fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  server_watch_.async_wait(
      asio::posix::stream_descriptor::wait_read,
      [self = shared_from_this(), weak = std::weak_ptr(server)](boost::system::error_code ec) {
        auto dead = weak.lock();
        if (ec || !dead) return;
        for (auto& w : self->workers_)
          if (w->server == dead) self->kill_worker(w, KillCause::server, 0, "its fork server died");
      });
}

// The timer of the front call: its own timeout (CallOptions) or task_timeout, counted from
// its start, which its slot tells.
void ProcessPoolCore::arm_call_timer(const Worker& w) {
  if (!w->ready || w->exit_status || w->kill_cause != KillCause::none) return;
  auto& front = w->in_flight;
  std::optional<std::chrono::duration<double>> timeout;
  if (!front.empty() && front.front().task) timeout = front.front().task->timeout;
  if (!timeout) timeout = options_.task_timeout;
  if (!front.empty() && is_init_call(front.front().task) &&
      options_.initializer_timeout.count() > 0 &&
      (!timeout || options_.initializer_timeout < *timeout))
    timeout = options_.initializer_timeout;
  if (front.empty() || !timeout) {
    w->timer.cancel();
    return;
  }
  std::uint64_t id = front.front().id;
  bool started = w->state(id) == slots::State::started;
  if (started)
    w->timer.expires_after(std::chrono::duration_cast<Clock::duration>(*timeout));
  else
    w->timer.expires_after(kStartPoll);
  w->timer.async_wait([self = shared_from_this(), w, id, started](boost::system::error_code ec) {
    if (ec || w->exit_status || w->in_flight.empty() || w->in_flight.front().id != id) return;
    if (!started)
      self->arm_call_timer(w);  // look again: it may have started now
    else
      self->on_call_timer(w, id);
  });
}

void ProcessPoolCore::on_call_timer(const Worker& w, std::uint64_t id) {
  // A reply may be in the pipe, not yet read: read it before judging (a call that finished
  // at its timeout is not killed, and the next one is not blamed), but not forever.
  int pending = 0;
  if (::ioctl(w->from.native_handle(), FIONREAD, &pending) == 0 && pending > 0 &&
      ++w->timer_deferrals < 100) {
    w->timer.expires_after(std::chrono::milliseconds(1));
    w->timer.async_wait([self = shared_from_this(), w, id](boost::system::error_code e) {
      if (!e && !w->exit_status && !w->in_flight.empty() && w->in_flight.front().id == id)
        self->on_call_timer(w, id);
    });
    return;
  }
  RemoteTask* t = w->in_flight.front().task;
  bool by_task_timeout =
      options_.task_timeout && (options_.initializer_timeout.count() <= 0 ||
                                *options_.task_timeout <= options_.initializer_timeout);
  if (is_init_call(t) && !by_task_timeout) {
    kill_worker(w, KillCause::timeout, id,
                "its initializer ran longer than initializer_timeout (" +
                    seconds(options_.initializer_timeout) + ")");
    return;
  }
  auto timeout = t && t->timeout ? *t->timeout : *options_.task_timeout;
  std::string which = t && t->timeout ? "its timeout" : "task_timeout";
  kill_worker(w, KillCause::timeout, id,
              "its task ran longer than " + which + " (" + seconds(timeout) + ")");
}

// Workers with calls in flight are looked at every kBusyCheckPeriod:
// - worker_memory_limit: the memory of each (and of every worker after each call:
//   check_memory from on_result);
// - their reply mailboxes. A worker told that the pool watches (kWatchedWord) puts its reply
//   there and writes no wake frame; a task that writes that mark itself, while io_ waits for
//   the pipes, would leave the reply there until the worker's next one.
void ProcessPoolCore::watch_busy() {
  if (watching_busy_) return;
  watching_busy_ = true;
  busy_timer_.expires_after(kBusyCheckPeriod);
  busy_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->watching_busy_ = false;
    if (ec) return;
    bool busy = false, mail = false;
    for (auto& w : std::vector<Worker>(self->workers_)) {
      if (w->in_flight.empty()) continue;
      busy = true;
      if (self->options_.worker_memory_limit) self->check_memory(w, false);
      if (self->read_mailbox(w)) mail = true;
    }
    if (mail) self->dispatch();
    if (busy) self->watch_busy();
  });
}

void ProcessPoolCore::check_memory(const Worker& w, bool between_calls) {
  if (w->exit_status || w->kill_cause != KillCause::none) return;
  std::size_t rss = resident_bytes(w->pid);
  std::size_t limit = options_.worker_memory_limit;
  if (rss <= limit) return;
  std::string why = "its resident memory (" + mebibytes(rss) + ") exceeded worker_memory_limit (" +
                    mebibytes(limit) + ", " + std::to_string(limit) + " bytes)";
  std::optional<std::uint64_t> running;
  for (auto& sent : w->in_flight)
    if (w->state(sent.id) == slots::State::started) running = sent.id;
  if (!between_calls && running) {
    kill_worker(w, KillCause::memory, *running, why);
    return;
  }
  // Between calls: replaced once idle; what it holds and has not started runs elsewhere.
  w->retiring = true;
  requeue(take_back_unstarted(w, running.has_value()));
  if (w->in_flight.empty()) close_channel(w);
}

void ProcessPoolCore::on_interrupt(const Worker& w, std::uint64_t id) {
  if (w->exit_status || w->in_flight.empty()) return;
  if (w->in_flight.front().id != id || w->state(id) != slots::State::started) return;
  kill_worker(w, KillCause::interrupt, id, "its call was interrupted (Future::interrupt)");
}

void ProcessPoolCore::stop_all(int signal) {
  stopping_ = true;
  for (auto& w : workers_) {
    if (w->exit_status) continue;
    w->kill_cause = KillCause::stopped;
    w->kill_reason = signal == SIGKILL ? "kill_workers()" : "terminate_workers()";
    signal_group(w->pid, signal);
  }
  if (signal == SIGKILL || workers_.empty()) return;
  // A task that ignores SIGTERM in a worker must not make terminate_workers() wait forever.
  stop_timer_.expires_after(kTerminateGrace);
  stop_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec) return;
    for (auto& w : self->workers_)
      if (!w->exit_status) signal_group(w->pid, SIGKILL);
  });
}

void ProcessPoolCore::kill_worker(const Worker& w, KillCause cause, std::uint64_t call,
                                  std::string reason) {
  if (w->pid <= 0 || w->exit_status) return;
  if (w->kill_cause == KillCause::none) {  // the first reason is the one that counts
    w->kill_cause = cause;
    w->kill_call = call;
    w->kill_reason = std::move(reason);
  }
  w->timer.cancel();
  signal_group(w->pid, SIGKILL);
}

// The channel ended (EOF) or failed before the exit was seen. A crash closes the channel a
// moment before the exit is reported; a worker that closed it and lives on is killed.
void ProcessPoolCore::on_channel_end(const Worker& w) {
  w->gone = true;
  if (w->exit_status || w->kill_cause != KillCause::none) return;
  if (w->closing && w->in_flight.empty()) return;  // asked to stop: it exits by itself
  w->timer.expires_after(kExitGrace);
  w->timer.async_wait([self = shared_from_this(), w](boost::system::error_code ec) {
    if (ec || w->exit_status) return;
    self->kill_worker(w, KillCause::channel, 0, "it closed its reply channel but did not exit");
  });
}

void ProcessPoolCore::on_exit(const Worker& w, int status) {
  if (w->exit_status) return;
  w->exit_status = status;
  w->timer.cancel();
  // Whatever ended it, what its tasks started in its group goes with it. (Its pid names the
  // group until the group's last member is gone, so this cannot reach another process.)
  ::kill(-w->pid, SIGKILL);
  if (w->reading) {
    // The pending wait (cancelled here) or read of the rest completes, and then reads to the
    // end and buries: doing it here too would bury twice.
    boost::system::error_code ignored;
    w->from.cancel(ignored);
    return;
  }
  read_to_end(w);
  bury(w);
  dispatch();
}

// The worker is dead and its channel read to its end: every call it answered is complete.
// Now its death is charged: to the call whose slot says started, if any; the calls behind it
// never started and run elsewhere.
void ProcessPoolCore::bury(const Worker& w) {
  if (w->buried) return;
  w->buried = true;
  int status = *w->exit_status;
  bool expected =
      w->closing && w->in_flight.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!expected && !w->ready && w->kill_cause != KillCause::stopped) exited_before_ready(w, status);
  std::vector<RemoteTask*> unstarted;
  std::deque<SentCall> held;
  held.swap(w->in_flight);
  for (auto& sent : held) {
    RemoteTask* t = sent.task;
    if (!t) continue;  // taken back already
    t->detach();
    auto state = w->state(sent.id);
    if (state == slots::State::started) {
      charge_running(w, t, sent.id, status, unstarted);
    } else if (w->kill_cause == KillCause::stopped) {
      t->cancel();
      t->drop();
    } else if (is_init_call(t) ||
               !slots::move(w->calls->page(), sent.id, slots::State::taken_back)) {
      t->drop();  // the initializer is the worker's own; a withdrawn call's cancel() ends it
    } else {
      unstarted.push_back(t);
    }
  }
  requeue(unstarted);
  remove_worker(w);
  if (draining_) check_drained();
}

void ProcessPoolCore::exited_before_ready(const Worker& w, int status) {
  bool no_init = WIFEXITED(status) && WEXITSTATUS(status) == kNoInitExitStatus;
  if (no_init) {
    start_failure(
        "a worker process started the program's main() instead of serving: main() "
        "must call cfx::init(argc, argv) as its first line",
        true);
    return;
  }
  std::string seen = "a worker process (pid " + std::to_string(w->pid) + ") " +
                     describe_status(status, w->kill_reason) + " before it was ready";
  bool killed_outside =
      WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && w->kill_cause == KillCause::none;
  if (killed_outside) {
    if (++start_kills_ >= kMaxStartKills)
      start_failure(std::to_string(kMaxStartKills) +
                        " worker processes in a row were SIGKILLed before they were ready, "
                        "the last one: " +
                        seen,
                    true);
    return;
  }
  start_failure(seen + "; does main() call cfx::init(argc, argv) as its first line?", false);
}

// Call `t` was running when its worker died. If the pool killed the worker for it, it ends
// as the kill says; if the pool killed the worker for another call (which finished just
// before the kill), it is not to blame and runs again; otherwise it crashed the worker.
void ProcessPoolCore::charge_running(const Worker& w, RemoteTask* t, std::uint64_t id, int status,
                                     std::vector<RemoteTask*>& retry) {
  std::string task = t->task ? t->task->name : "?";
  std::string where = "worker process " + std::to_string(w->pid) + " running task '" + task + "'";
  auto fail = [&](auto error) {
    t->fail(std::make_exception_ptr(std::move(error)));
    t->drop();
  };
  KillCause cause = w->kill_cause;
  bool for_this_call = w->kill_call == id;
  if (is_init_call(t)) {
    t->drop();  // every new worker would die the same way: no respawn loop
    if (cause != KillCause::stopped && cause != KillCause::broken)
      break_pool("the process pool's initializer '" + task + "' killed its worker: " + where + " " +
                 describe_status(status, w->kill_reason));
  } else if (cause == KillCause::stopped) {
    t->cancel();
    t->drop();
  } else if (cause == KillCause::broken) {
    fail(BrokenProcessPool("the process pool broke while " + where));
  } else if (cause != KillCause::none && cause != KillCause::channel &&
             cause != KillCause::server && !for_this_call) {
    retry.push_back(t);  // killed for another call, which finished just before the kill
  } else if (cause == KillCause::timeout) {
    fail(TimeoutError("task '" + task + "' ran longer than its timeout: " + where +
                      " was killed (" + w->kill_reason + ") and will be replaced"));
  } else if (cause == KillCause::interrupt) {
    t->cancel();  // interrupt() has cancelled it already
    t->drop();
  } else if (cause == KillCause::malformed) {
    fail(Error(where + " wrote a malformed reply, so it was killed and will be replaced: " +
               w->kill_reason));
  } else if (cause == KillCause::memory) {
    fail(WorkerCrashed(where + " was killed: " + w->kill_reason));
  } else if (options_.on_worker_crash == OnWorkerCrash::break_pool) {
    w->in_flight.push_front({t, id});
    break_pool("A process in the process pool was terminated abruptly: " + where + " " +
               describe_status(status, w->kill_reason));
  } else if (++t->attempts <= options_.max_retries) {
    retry.push_back(t);  // run it again, on a fresh worker
  } else {
    std::string attempts;
    if (options_.max_retries)
      attempts = " (attempt " + std::to_string(t->attempts) + " of " +
                 std::to_string(options_.max_retries + 1) + "; every attempt's worker died)";
    fail(WorkerCrashed(where + " " + describe_status(status, w->kill_reason) + attempts));
  }
}

void ProcessPoolCore::start_failure(const std::string& why, bool fatal) {
  if (fatal || ++start_failures_ >= kMaxStartFailures) {
    start_failed_ = true;
    break_pool(fatal || kMaxStartFailures == 1
                   ? why
                   : std::to_string(kMaxStartFailures) +
                         " worker processes in a row failed to start; the last one: " + why);
  }
}

void ProcessPoolCore::break_pool(const std::string& message) {
  auto queued = queue_.break_pool(message);
  if (!queued) return;  // broken already
  // Each future gets its own exception object.
  auto fail = [&](RemoteTask* t) {
    t->detach();
    t->fail(std::make_exception_ptr(BrokenProcessPool(message)));
    t->drop();
  };
  while (!queued->empty()) fail(queued->pop_front());
  for (auto& w : workers_) {
    for (auto& sent : w->in_flight)
      if (sent.task) fail(std::exchange(sent.task, nullptr));
    kill_worker(w, KillCause::broken, 0, "the pool broke");
  }
  if (draining_) check_drained();
}

}  // namespace cfx::detail
