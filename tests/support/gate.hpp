// Cross-process synchronisation for tests: tasks that block until the test releases them, and
// tasks that tell the test they have started. Both work between threads of one process and
// between processes (a worker process only needs the path, a plain std::string argument), so
// the same test runs on every backend without sleeps.
//
//   Gate gate;                    // closed: holds LOCK_EX on a fresh file in /tmp
//   ex.submit(wait_gate, gate.path());   // the task blocks in flock(LOCK_SH)
//   gate.open();                  // releases LOCK_EX: every waiter (and every later one) passes
//
//   Signal started;               // a FIFO in a fresh /tmp directory, read by the test
//   ex.submit(notify_then_wait, started.path(), gate.path(), 7);
//   started.receive(1);           // blocks until the task has written its byte (here 7)
//
// Rules that keep a failing test from hanging:
// - Declare the executor BEFORE its gates, so that the gates are destroyed (opened) first and
//   the executor's destructor does not wait for tasks blocked on them.
// - notify() never blocks: it gives up if nobody reads the Signal any more.
// - wait_gate() returns at once if the gate's file is gone.
// - Signal::receive() gives up after a timeout and returns what it got; check its size.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <cfx/task.hpp>

namespace cfx_test {

[[noreturn]] inline void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

/// A gate that tasks wait at until the test opens it. Not copyable.
class Gate {
 public:
  Gate() {
    std::string templ = "/tmp/cfx-gate-XXXXXX";
    int fd = ::mkostemp(templ.data(), O_CLOEXEC);
    if (fd < 0) throw_errno("mkostemp");
    if (::flock(fd, LOCK_EX) != 0) {
      ::close(fd);
      ::unlink(templ.c_str());
      throw_errno("flock(LOCK_EX)");
    }
    path_ = std::move(templ);
    fd_.store(fd);
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  ~Gate() {
    open();
    ::unlink(path_.c_str());
  }

  /// The file to pass to wait_gate (and to tasks that call it).
  const std::string& path() const noexcept { return path_; }

  /// Lets every waiter through, now and later. Idempotent; any thread may call it.
  void open() noexcept {
    int fd = fd_.exchange(-1);
    if (fd < 0) return;
    // LOCK_UN releases the lock even if a forked child still holds a copy of the descriptor.
    ::flock(fd, LOCK_UN);
    ::close(fd);
  }

 private:
  std::string path_;
  std::atomic<int> fd_{-1};
};

/// Task: blocks until the gate at `gate_path` is open (or no longer exists).
inline void wait_gate(std::string gate_path) {
  int fd = ::open(gate_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;  // the gate is gone: its test is over
  while (::flock(fd, LOCK_SH) != 0 && errno == EINTR) {
  }
  ::close(fd);
}

/// Task: writes the byte `value & 0xff` to the Signal at `signal_path`. Never blocks: if the
/// Signal is gone or nobody reads it, nothing happens.
inline void notify(std::string signal_path, int value) {
  int fd = ::open(signal_path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return;
  auto byte = static_cast<unsigned char>(value & 0xff);
  while (::write(fd, &byte, 1) < 0 && errno == EINTR) {
  }
  ::close(fd);
}

/// Task: notify(signal_path, value), then wait_gate(gate_path); returns value.
inline int notify_then_wait(std::string signal_path, std::string gate_path, int value) {
  notify(signal_path, value);
  wait_gate(gate_path);
  return value;
}

/// Bytes sent by tasks with notify(), received by the test in the order they were written.
/// A FIFO opened read-write by the test, so that writers never block and reads wait for data.
class Signal {
 public:
  static constexpr std::chrono::milliseconds default_timeout{30000};

  Signal() {
    std::string templ = "/tmp/cfx-signal-XXXXXX";
    if (!::mkdtemp(templ.data())) throw_errno("mkdtemp");
    dir_ = templ;
    path_ = dir_ + "/fifo";
    if (::mkfifo(path_.c_str(), 0600) != 0) {
      ::rmdir(dir_.c_str());
      throw_errno("mkfifo");
    }
    fd_ = ::open(path_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
      ::unlink(path_.c_str());
      ::rmdir(dir_.c_str());
      throw_errno("open fifo");
    }
  }
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  ~Signal() {
    ::close(fd_);
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  /// The FIFO to pass to notify (and to tasks that call it).
  const std::string& path() const noexcept { return path_; }

  /// Waits until `n` bytes have arrived or `timeout` passes; returns the bytes received.
  std::vector<int> receive(std::size_t n, std::chrono::milliseconds timeout = default_timeout) {
    using clock = std::chrono::steady_clock;
    auto deadline = clock::now() + timeout;
    std::vector<int> got;
    while (got.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count())));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;  // timed out
      unsigned char buf[256];
      ssize_t k = ::read(fd_, buf, std::min(n - got.size(), sizeof buf));
      if (k > 0) got.insert(got.end(), buf, buf + k);
    }
    return got;
  }

  /// The bytes that have arrived so far, without waiting.
  std::vector<int> drain() { return receive(static_cast<std::size_t>(-1), {}); }

 private:
  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

}  // namespace cfx_test

// Registered so that worker processes can run them; inline functions have one address per
// program, so registering them in every translation unit is harmless.
CFX_TASK_AS(&cfx_test::wait_gate, "cfx_test::wait_gate");
CFX_TASK_AS(&cfx_test::notify, "cfx_test::notify");
CFX_TASK_AS(&cfx_test::notify_then_wait, "cfx_test::notify_then_wait");
