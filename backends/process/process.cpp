// cfx::Process (cfx/process.hpp): a one-call worker of the process backend, started by the
// pool's launcher, its call written before the channel is closed.
#include "cfx/process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "backends/process/channel.hpp"
#include "backends/process/launcher.hpp"
#include "lib/toolkit/descriptors.hpp"

namespace cfx {

struct Process::State {
  StartMethod method;
  const detail::TaskEntry* task;
  std::vector<char> args;
  detail::HandleList handles;

  std::mutex mutex;
  bool started = false;
  int pid = 0;
  detail::Fd pidfd;
  std::optional<int> exitcode;  // set once reaped
};

namespace {

/// Writes all of `bytes` to pipe `fd`; false if the reader is gone. SIGPIPE is blocked on
/// this thread meanwhile, and one it raised is consumed, so the program's disposition is
/// left alone.
bool write_call(int fd, const std::vector<char>& bytes) {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  bool ok = true;
  for (std::size_t at = 0; at < bytes.size();) {
    ssize_t k = ::write(fd, bytes.data() + at, bytes.size() - at);
    if (k < 0) {
      if (errno == EINTR) continue;
      ok = false;
      break;
    }
    at += static_cast<std::size_t>(k);
  }
  if (!ok && !sigismember(&old, SIGPIPE)) {
    timespec zero{};
    ::sigtimedwait(&pipe_set, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return ok;
}

int decode_status(int status) {
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

/// Reaps the child if it has ended; true then. Caller holds the state's mutex.
bool try_reap(Process::State& s);

}  // namespace

void Process::init(ProcessOptions options, const detail::TaskEntry& task, std::vector<char> args,
                   detail::HandleList handles) {
  state_.reset(new State());
  state_->method = options.start_method;
  state_->task = &task;
  state_->args = std::move(args);
  state_->handles = std::move(handles);
}

void Process::StateDeleter::operator()(State* s) const noexcept {
  delete s;
}

Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (state_ && state_->started) join();
    state_ = std::move(other.state_);
  }
  return *this;
}

Process::~Process() {
  if (!state_) return;
  try {
    if (state_->started) join();
  } catch (...) {  // nothing can be done about it here; the child is killed and reaped
    if (state_->pid > 0 && !state_->exitcode) detail::kill_and_reap(state_->pid);
  }
}

Process::State& Process::state() const {
  if (!state_) throw Error("cfx::Process: this Process was moved from");
  return *state_;
}

void Process::start() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.started) throw Error("cfx::Process::start: a process can be started only once");
  detail::LaunchedWorker child;
  try {
    child = detail::launch_worker(s.method, true);
  } catch (const std::exception& e) {
    throw Error(std::string("cfx::Process::start: the child could not be started: ") + e.what());
  }
  s.started = true;
  s.pid = child.pid;
  s.pidfd = std::move(child.pidfd);
  // The descriptors go first: the child reads them when the count in its page says so.
  detail::DescriptorOutbox outbox(child.handles.get());
  std::size_t sent = 0;
  try {
    sent = outbox.send(1, s.handles, false);
  } catch (...) {
    detail::kill_and_reap(s.pid);
    s.exitcode = -SIGKILL;
    throw;
  }
  child.slots.get()[detail::slots::kDescriptorWord].store(sent, std::memory_order_release);
  std::vector<char> frame;
  detail::Writer w(frame);
  auto at = detail::begin_frame(w, detail::FrameKind::call, 1);
  w.put(std::uint32_t{1});
  w.put_string(s.task->name);
  w.put_bytes(s.args.data(), s.args.size());
  detail::finish_frame(w, at);
  write_call(child.calls.get(), frame);  // a child that died already shows in its exit code
  s.handles.clear();                     // the child has its own descriptors now
  s.args.clear();
}

namespace {

bool try_reap(Process::State& s) {
  if (s.exitcode) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(s.pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r != s.pid) return false;
  s.exitcode = decode_status(status);
  s.pidfd.reset();
  return true;
}

}  // namespace

bool Process::join_for(double seconds) {
  State& s = state();
  int pidfd;
  {
    std::lock_guard lock(s.mutex);
    if (!s.started) throw Error("cfx::Process::join: the process was not started");
    if (try_reap(s)) return true;
    pidfd = s.pidfd.get();
  }
  // The pidfd becomes readable when the child ends; it stays open until it is reaped, and
  // only a reap (under the mutex) closes it.
  pollfd p{pidfd, POLLIN, 0};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    int ms = -1;
    if (seconds >= 0) {
      auto left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now());
      ms = left.count() <= 0 ? 0 : static_cast<int>(std::ceil(std::min(left.count(), 2e6) * 1e3));
    }
    int r = ::poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    std::lock_guard lock(s.mutex);
    if (try_reap(s)) return true;
    if (r == 0 && ms == 0) return false;
    if (r == 0 && seconds >= 0 && std::chrono::steady_clock::now() >= deadline) return false;
  }
}

void Process::join() {
  join_for(-1);
}

bool Process::is_alive() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  return s.started && !try_reap(s);
}

int Process::pid() const noexcept {
  return state_ ? state_->pid : 0;
}

std::optional<int> Process::exitcode() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (!s.started) return std::nullopt;
  try_reap(s);
  return s.exitcode;
}

void Process::terminate() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.started && !s.exitcode) ::kill(s.pid, SIGTERM);
}

void Process::kill() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.started && !s.exitcode) detail::signal_group(s.pid, SIGKILL);
}

}  // namespace cfx
