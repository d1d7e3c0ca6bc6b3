// The process pool's fault policy: what the I/O thread does when a worker does not start,
// crashes, runs past task_timeout, or fails its initializer, and how the pool breaks. The
// table in docs/process-backend.md ("Faults") is the contract.
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include <algorithm>
#include <string>

#include "backends/process/pool.hpp"
#include "backends/process/worker.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {
namespace {

constexpr auto kStartupTimeout = std::chrono::seconds(5);
constexpr int kMaxStartFailures = 3;

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

/// "was killed by SIGSEGV (signal 11)" / "exited with status 3". `pool_kill` is why the
/// pool killed the worker, empty if it did not: only a SIGKILL the pool did not send may be
/// the out-of-memory killer's.
std::string describe_status(int status, const std::string& pool_kill) {
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
    if (ec || w->ready || w->gone) return;
    self->start_failure("a worker process did not start serving within " +
                            std::to_string(kStartupTimeout.count()) +
                            " s: does main() call cfx::init(argc, argv) as its first line?",
                        true);
    self->kill_worker(w, "it did not start serving in time");
  });
  w->proc->async_wait([self = shared_from_this(), w](boost::system::error_code, int) {
    self->on_exit(w, w->proc->native_exit_code());
  });
}

void ProcessPoolCore::arm_task_timeout(const Worker& w) {
  if (!options_.task_timeout || !w->ready) return;
  if (w->in_flight.empty()) {
    w->timer.cancel();
    return;
  }
  w->timer.expires_after(std::chrono::duration_cast<Clock::duration>(*options_.task_timeout));
  RemoteTask* head = w->in_flight.front();
  w->timer.async_wait([self = shared_from_this(), w, head](boost::system::error_code ec) {
    if (ec || w->gone || w->in_flight.empty() || w->in_flight.front() != head) return;
    w->timed_out = head;
    self->kill_worker(w, "its task ran longer than task_timeout");
  });
}

void ProcessPoolCore::kill_worker(const Worker& w, const char* reason) {
  if (w->killed || w->pid <= 0) return;
  w->killed = true;
  w->kill_reason = reason;   // empty: the worker was dead already
  ::kill(-w->pid, SIGKILL);  // the whole group: the worker and anything its task started
  ::kill(w->pid, SIGKILL);   // in case it had not yet made its own group
}

void ProcessPoolCore::on_eof(const Worker& w) {
  if (w->gone) return;
  w->gone = true;
  // A crash: make sure the process and its descendants are gone; its exit status arrives
  // through proc.async_wait. A worker we asked to stop exits by itself.
  if (w->closing && w->in_flight.empty()) return;
  // The worker is dead or dying (a crash closes its channel): the kill clears its process
  // group. It names no reason: whoever sent the fatal signal, it was not this kill, and a
  // check for "already dead" races with the kernel's exit, which closes descriptors first.
  kill_worker(w, "");
}

void ProcessPoolCore::on_exit(const Worker& w, int status) {
  w->gone = true;
  w->timer.cancel();
  bool expected =
      w->closing && w->in_flight.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!expected) {
    if (!w->ready)
      exited_before_ready(w, status);
    else if (!w->in_flight.empty() && w->head_was_running())
      crashed_running(w, status);
  }
  requeue_unstarted(w);
  remove_worker(w);
  dispatch();
  if (draining_) check_drained();
}

void ProcessPoolCore::exited_before_ready(const Worker& w, int status) {
  bool no_init = WIFEXITED(status) && WEXITSTATUS(status) == kNoInitExitStatus;
  start_failure(no_init ? "a worker process started the program's main() instead of "
                          "serving: main() must call cfx::init(argc, argv) as its first line"
                        : "a worker process (pid " + std::to_string(w->pid) + ") " +
                              describe_status(status, w->kill_reason) +
                              " before it was ready; does main() call cfx::init(argc, argv) "
                              "as its first line?",
                no_init);
}

// The head call was running when its worker died: it fails (or breaks the pool); the calls
// behind it never started and are requeued by the caller.
void ProcessPoolCore::crashed_running(const Worker& w, int status) {
  RemoteTask* head = w->in_flight.front();
  w->in_flight.pop_front();
  std::string task = head->task ? head->task->name : "?";
  // A worker that had started is replaced at once, however often: each crash ends the call
  // that caused it, so a crashing task cannot loop. (Workers that die before their hello
  // count against the start-up budget instead: start_failure.)
  std::string where = "worker process " + std::to_string(w->pid) + " running task '" + task + "'";
  if (is_init_call(head)) {
    head->drop();  // every new worker would die the same way: no respawn loop
    break_pool("the process pool's initializer '" + task + "' killed its worker: " + where + " " +
               describe_status(status, w->kill_reason));
  } else if (w->timed_out == head) {
    head->fail(std::make_exception_ptr(
        TimeoutError("task '" + task + "' ran longer than task_timeout (" +
                     std::to_string(options_.task_timeout->count()) + " s); its worker process " +
                     std::to_string(w->pid) + " was killed and will be replaced")));
    head->drop();
  } else if (options_.on_worker_crash == OnWorkerCrash::break_pool) {
    w->in_flight.push_front(head);
    break_pool("A process in the process pool was terminated abruptly: " + where + " " +
               describe_status(status, w->kill_reason));
  } else {
    head->fail(std::make_exception_ptr(
        WorkerCrashed(where + " " + describe_status(status, w->kill_reason))));
    head->drop();
  }
}

void ProcessPoolCore::requeue_unstarted(const Worker& w) {
  // Calls behind the head never started: run them elsewhere, in their original order. The
  // initializer's call is the worker's own. Futures are failed outside the queue's lock:
  // their callbacks may submit.
  std::vector<RemoteTask*> unstarted, dropped;
  for (RemoteTask* t : w->in_flight) (is_init_call(t) ? dropped : unstarted).push_back(t);
  w->in_flight.clear();
  std::optional<std::string> broken = queue_.requeue(unstarted);
  if (broken) dropped.insert(dropped.end(), unstarted.begin(), unstarted.end());
  for (RemoteTask* t : dropped) {
    if (broken) t->fail(std::make_exception_ptr(BrokenProcessPool(*broken)));
    t->drop();
  }
}

void ProcessPoolCore::start_failure(const std::string& why, bool fatal) {
  if (fatal || ++start_failures_ >= kMaxStartFailures) {
    start_failed_ = true;
    break_pool(why);
  }
}

void ProcessPoolCore::break_pool(const std::string& message) {
  auto queued = queue_.break_pool(message);
  if (!queued) return;  // broken already
  // Each future gets its own exception object.
  auto fail = [&](RemoteTask* t) {
    t->fail(std::make_exception_ptr(BrokenProcessPool(message)));
    t->drop();
  };
  while (!queued->empty()) fail(queued->pop_front());
  for (auto& w : workers_) {
    for (auto* t : w->in_flight) fail(t);
    w->in_flight.clear();
    kill_worker(w, "the pool broke");
  }
  if (draining_) check_drained();
}

}  // namespace cfx::detail
