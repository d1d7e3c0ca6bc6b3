// What every fault-injection test asserts besides its outcome (robust-pools.md section 3:
// "the call returns within a bounded time; every future ends; no worker process, shared-memory
// segment or file descriptor is left over"), and the means to assert it without hanging:
//
//   NoLeaks leaks;                  // first in the test: snapshots descriptors and children
//   Pool pool({.max_workers = 2});  // a ProcessPoolExecutor whose destruction is bounded
//   auto f = pool->submit(...);
//   REQUIRE(ends(f, deadline()));   // bounded wait (kBound), never a sleep
//   check_gone(pids, since);        // pids a task reported end within 1 s (API section 7)
//   // end of scope: pool destroyed within kBound, then no new descriptor or child process
//
// A test that fails must not hang the suite: Pool's destructor gives up after kBound, kills
// the workers to free the pool, and abandons it if even that does not help; check_gone kills
// whatever survived its check.
#pragma once

#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <exception>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <cfx/cfx.hpp>

#include "process/tasks.hpp"  // proc_test::open_fds, proc_test::child_pids
#include "support/gate.hpp"

namespace faults {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// How long anything that must happen may take before the test calls it a failure (never
/// reached when the library works: it turns a hang into a failed check).
inline constexpr std::chrono::seconds kBound{20};
/// API section 7: processes are gone within 1 s of the event that must end them.
inline constexpr std::chrono::seconds kGone{1};

inline Clock::time_point deadline(Clock::duration d = kBound) {
  return Clock::now() + d;
}

/// Waits until `f` is done or `by` passes; true if it is done.
template <class T>
bool ends(const cfx::Future<T>& f, Clock::time_point by) {
  auto left = std::max<Clock::duration>(by - Clock::now(), Clock::duration::zero());
  return f.wait_for(left);
}

/// Waits until every future is done or `by` passes; true if all are done.
template <class T>
bool all_end(const std::vector<cfx::Future<T>>& fs, Clock::time_point by) {
  bool all = true;
  for (const auto& f : fs) all = ends(f, by) && all;
  return all;
}

/// How many of `fs` are not done.
template <class T>
std::size_t unfinished(const std::vector<cfx::Future<T>>& fs) {
  return static_cast<std::size_t>(
      std::count_if(fs.begin(), fs.end(), [](const auto& f) { return !f.done(); }));
}

/// The what() of the exception being handled, or what it is if it is no std::exception.
inline std::string describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& x) {
    return x.what() ? x.what() : "(null what())";
  } catch (...) {
    return "not a std::exception";
  }
}

/// The message of the exception of type E that `f` (done) failed with, or a description of
/// what happened instead: "<not done>", "<no exception>", "<other exception: ...>".
template <class E, class T>
std::string error_of(const cfx::Future<T>& f) {
  if (!f.done()) return "<not done>";
  if (f.cancelled()) return "<cancelled>";
  std::exception_ptr e = f.exception();
  if (!e) return "<no exception>";
  try {
    std::rethrow_exception(e);
  } catch (const E& x) {
    return x.what() ? x.what() : "<null what()>";
  } catch (...) {
    return "<other exception: " + describe_current_exception() + ">";
  }
}

/// True if `f` (done) failed with an exception of type E.
template <class E, class T>
bool fails_with(const cfx::Future<T>& f) {
  if (!f.done() || f.cancelled() || !f.exception()) return false;
  try {
    std::rethrow_exception(f.exception());
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
}

inline bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

/// The out-of-memory hint that only a SIGKILL the pool did not send may carry.
inline bool oom_hint(const std::string& s) {
  return has(s, "out-of-memory") || has(s, "out of memory") || has(s, "OOM");
}

/// The state letter of /proc/<pid>/stat, or '\0' if there is no such process.
inline char proc_state(int pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return '\0';
  char buf[512];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  std::string s(buf);
  auto close = s.rfind(')');
  if (close == std::string::npos || close + 2 >= s.size()) return '\0';
  return s[close + 2];
}

/// " <pid> (<state>)", for messages.
inline std::string describe_process(int pid) {
  std::string s = " ";
  s.append(std::to_string(pid)).append(" (").push_back(proc_state(pid));
  s.push_back(')');
  return s;
}

/// True once `pid` has ended: no such process, or a zombie (dead; a zombie of this process is
/// a leak that NoLeaks reports, one of another parent is that parent's to reap).
inline bool gone(int pid) {
  if (pid <= 0) return true;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  char s = proc_state(pid);
  return s == '\0' || s == 'Z' || s == 'X';
}

/// Those of `pids` still running at `by`. Waits on a pidfd per process (readable once it has
/// exited); where pidfds are missing, polls kill(pid, 0) until `by`.
inline std::vector<int> still_running_at(const std::vector<int>& pids, Clock::time_point by) {
  std::vector<int> running;
  for (int pid : pids) {
    if (gone(pid)) continue;
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd >= 0) {
      for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(by - Clock::now());
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count())));
        if (r < 0 && errno == EINTR) continue;
        break;
      }
      ::close(fd);
    } else {
      while (!gone(pid) && Clock::now() < by) ::usleep(1000);  // polling, with a deadline
    }
    if (!gone(pid)) running.push_back(pid);
  }
  return running;
}

/// SIGKILLs those of `pids` still running, so that one failed check does not spill over.
inline void kill_survivors(const std::vector<int>& pids) {
  for (int pid : pids)
    if (!gone(pid)) ::kill(pid, SIGKILL);
}

/// Checks that every process of `pids` has ended within kGone of `since`, then kills the ones
/// that did not.
inline void check_gone(const std::vector<int>& pids, Clock::time_point since) {
  auto left = still_running_at(pids, since + kGone);
  std::string listing;
  for (int pid : left) listing += describe_process(pid);
  INFO("processes still running 1 s later:" << listing);
  CHECK(left.empty());
  kill_survivors(left);
}

/// What /proc/self/fd/<fd> points to, for messages.
inline std::string fd_target(int fd) {
  char buf[256];
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  return n < 0 ? "?" : std::string(buf, static_cast<std::size_t>(n));
}

/// Snapshots this process's descriptors and child processes; at the end of its scope (declare
/// it first in the test, so that it ends last) checks that no descriptor and no child process,
/// live or zombie, was added. Skipped while a failed REQUIRE unwinds: that is the report.
class NoLeaks {
 public:
  NoLeaks() : fds_(open_set()), children_(children()) {}
  NoLeaks(const NoLeaks&) = delete;
  NoLeaks& operator=(const NoLeaks&) = delete;
  ~NoLeaks() {
    if (std::uncaught_exceptions() == 0) check();
  }

  void check() const {
    std::string extra;
    for (int fd : open_set())
      if (!fds_.count(fd))
        extra.append(" ").append(std::to_string(fd)).append("->").append(fd_target(fd));
    INFO("descriptors left open:" << extra);
    CHECK(extra.empty());
    std::string kids;
    for (int pid : children())
      if (!children_.count(pid)) kids += describe_process(pid);
    INFO("child processes left (state):" << kids);
    CHECK(kids.empty());
  }

 private:
  static std::set<int> open_set() {
    auto v = proc_test::open_fds();
    return {v.begin(), v.end()};
  }
  static std::set<int> children() {
    auto v = proc_test::child_pids();
    return {v.begin(), v.end()};
  }
  std::set<int> fds_;
  std::set<int> children_;
};

/// A ProcessPoolExecutor whose destruction is bounded (see the top of this file).
class Pool {
 public:
  explicit Pool(cfx::ProcessPoolOptions options)
      : pool_(std::make_unique<cfx::ProcessPoolExecutor>(std::move(options))) {}
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() { destroy(); }

  cfx::ProcessPoolExecutor* operator->() const { return pool_.get(); }
  cfx::ProcessPoolExecutor& operator*() const { return *pool_; }

  /// SIGKILLs every worker and its process group.
  void kill_workers_now() const {
    if (!pool_) return;
    for (int pid : pool_->worker_pids()) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
  }

  /// Waits until `f` is done or `by` passes; if it is not done by then, kills the workers (so
  /// that a REQUIRE on the result fails fast instead of waiting for the destructor too).
  template <class T>
  bool ends(const cfx::Future<T>& f, Clock::time_point by) const {
    if (faults::ends(f, by)) return true;
    kill_workers_now();
    return false;
  }

  /// Destroys the pool now. If the destructor has not returned after kBound, fails the test,
  /// kills the workers to free it, and abandons it if that does not help within kBound either.
  /// Returns how long the destructor took (kBound or more: it did not return in time).
  Clock::duration destroy() {
    if (!pool_) return {};
    auto pids = pool_->worker_pids();
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    auto start = Clock::now();
    std::thread t([p = pool_.release(), done] {
      delete p;
      done->set_value();
    });
    if (finished.wait_for(kBound) == std::future_status::ready) {
      t.join();
      return Clock::now() - start;
    }
    for (int pid : pids) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
    bool freed = finished.wait_for(kBound) == std::future_status::ready;
    if (freed)
      t.join();
    else
      t.detach();
    std::string why =
        "the pool's destructor did not return within " + std::to_string(kBound.count()) + " s; ";
    why += freed ? "it did once the test killed its workers"
                 : "even killing its workers did not help: abandoned";
    FAIL_CHECK(why);
    return Clock::now() - start;
  }

 private:
  std::unique_ptr<cfx::ProcessPoolExecutor> pool_;
};

/// A fresh directory in /tmp for the files of one test, removed with its files at the end.
class TempDir {
 public:
  TempDir() {
    std::string templ = "/tmp/cfx-faults-XXXXXX";
    if (!::mkdtemp(templ.data())) cfx_test::throw_errno("mkdtemp");
    dir_ = templ;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (auto* e = ::readdir(d))
        if (e->d_name[0] != '.') ::unlink((dir_ + "/" + e->d_name).c_str());
      ::closedir(d);
    }
    ::rmdir(dir_.c_str());
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

/// Resets this process's peak resident size (VmHWM); false where the kernel refuses.
inline bool reset_peak_rss() {
  int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, "5", 1) == 1;
  ::close(fd);
  return ok;
}

/// A size field of /proc/self/status ("VmRSS", "VmHWM"), in KiB; -1 if absent.
inline long status_kib(const std::string& field) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::string(line).rfind(field + ":", 0) == 0) {
      kib = std::atol(line + field.size() + 1);
      break;
    }
  std::fclose(f);
  return kib;
}

inline bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  return false;
#endif
}

}  // namespace faults
