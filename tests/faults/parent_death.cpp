// The parent's death, exit and Ctrl-C, watched from outside: orphan_helper (see its header)
// runs a pool in its own process group, and these tests kill it, interrupt it or let it exit,
// then check that its workers and everything their tasks started are gone within 1 s (API
// section 7). Rows 3.4 #30, #31 and 3.5 #45, #49, #50 of robust-pools.md.
//
// Not tested: 3.5 #49's "no task result becomes a spurious interrupted error" (the helper dies
// of the SIGINT, as a program without cfx would, so no result is left to look at).
#include <doctest/doctest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <climits>
#include <cstring>
#include <optional>

#include "faults/leaks.hpp"
#include "faults/tasks.hpp"

extern char** environ;

using namespace faults;
using cfx_test::Signal;

namespace {

std::string helper_path() {
  if (const char* p = std::getenv("CFX_ORPHAN_HELPER")) return p;
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return "orphan_helper";
  std::string self(buf, static_cast<std::size_t>(n));
  return self.substr(0, self.rfind('/') + 1) + "orphan_helper";
}

/// orphan_helper MODE PID_FILE SIGNAL, started in a process group of its own with the default
/// disposition of the signals the tests send; its stdin is a pipe from the test, and with
/// `capture` its stdout and stderr are one pipe to the test. Destroying it kills and reaps it,
/// and kills whatever pid it reported that is still running.
class Helper {
 public:
  Helper(const std::string& mode, const std::string& pid_file, const std::string& signal,
         bool capture = false)
      : pid_file_(pid_file) {
    int in[2], out[2] = {-1, -1};
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    if (capture) REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    if (capture) {
      ::posix_spawn_file_actions_adddup2(&actions, out[1], 1);
      ::posix_spawn_file_actions_adddup2(&actions, out[1], 2);
    }
    posix_spawnattr_t attr;
    ::posix_spawnattr_init(&attr);
    ::posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    ::posix_spawnattr_setpgroup(&attr, 0);  // its own group, led by itself
    sigset_t defaults, none;
    sigemptyset(&defaults);
    for (int sig : {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGPIPE}) sigaddset(&defaults, sig);
    sigemptyset(&none);
    ::posix_spawnattr_setsigdefault(&attr, &defaults);  // even if this test runs with SIG_IGN
    ::posix_spawnattr_setsigmask(&attr, &none);
    std::string path = helper_path();
    std::vector<std::string> args{path, mode, pid_file, signal};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int rc = ::posix_spawn(&pid_, path.c_str(), &actions, &attr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
    ::close(in[0]);
    in_ = in[1];
    if (capture) {
      ::close(out[1]);
      out_ = out[0];
    }
    if (rc != 0) pid_ = -1;
    REQUIRE_MESSAGE(rc == 0, "could not start " << path << ": " << std::strerror(rc));
  }
  Helper(const Helper&) = delete;
  Helper& operator=(const Helper&) = delete;
  ~Helper() {
    if (pid_ > 0 && !reaped_) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
    if (in_ >= 0) ::close(in_);
    if (out_ >= 0) ::close(out_);
    kill_survivors(read_pids(pid_file_));
  }

  int pid() const { return pid_; }

  /// Lets it go on to its ending (exit-static, exit-leaked).
  void go() {
    char c = 'g';
    CHECK(::write(in_, &c, 1) == 1);
  }

  /// Waits until it has ended or `by` passes, and reaps it; its wait status, or nullopt.
  std::optional<int> wait_exit(Clock::time_point by) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        if (fd >= 0) ::close(fd);
        return status;
      }
      if (Clock::now() >= by) break;
      if (fd >= 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(by - Clock::now());
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(std::max<long long>(1, left.count())));
      } else {
        ::usleep(1000);  // polling, with a deadline
      }
    }
    if (fd >= 0) ::close(fd);
    return std::nullopt;
  }

  /// Reads its captured output until end of file or `by`; the bytes read, or nullopt if the
  /// output did not end by then.
  std::optional<std::uint64_t> drain(Clock::time_point by) {
    std::vector<char> buf(1 << 20);
    std::uint64_t total = 0;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(by - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return std::nullopt;
      ssize_t n = ::read(out_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return total;
      total += static_cast<std::uint64_t>(n);
    }
  }

 private:
  std::string pid_file_;
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  bool reaped_ = false;
};

std::string describe(int status) {
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return "wait status " + std::to_string(status);
}

/// The pids the helper's two tasks reported (worker, sleep, forked copy each), once the helper
/// is set up (the two tasks' bytes and its own).
std::vector<int> wait_for_setup(Signal& signal, const std::string& pid_file) {
  auto got = signal.receive(3);
  INFO("bytes from the helper and its tasks: " << got.size() << " of 3");
  REQUIRE(got.size() == 3);
  auto pids = read_pids(pid_file);
  REQUIRE(pids.size() == 6);
  return pids;
}

/// Sends `sig` (to the helper's whole group if `group`) and checks that the helper dies of it
/// and that every pid its tasks reported is gone within 1 s.
void kill_and_check(const std::string& mode, int sig, bool group) {
  CAPTURE(mode);
  NoLeaks leaks;
  TempDir dir;
  Signal signal;
  auto pid_file = dir.path("pids");
  Helper helper(mode, pid_file, signal.path());
  auto pids = wait_for_setup(signal, pid_file);
  REQUIRE(::kill(group ? -helper.pid() : helper.pid(), sig) == 0);
  auto since = Clock::now();
  auto status = helper.wait_exit(deadline());
  REQUIRE_MESSAGE(status, "the helper did not end within " << kBound.count() << " s");
  INFO("the helper " << describe(*status));
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == sig);
  check_gone(pids, since);
}

}  // namespace

TEST_SUITE("faults parent death") {
  TEST_CASE("3.4 #30 parent SIGKILLed: its workers and their tasks' descendants end within 1 s") {
    for (const char* mode : {"busy", "idle", "busy+forkserver", "idle+forkserver"})
      kill_and_check(mode, SIGKILL, false);
  }

  TEST_CASE("3.5 #49 Ctrl-C: one SIGINT to the process group ends the program as without cfx") {
    for (const char* mode : {"busy", "idle", "busy+forkserver"}) kill_and_check(mode, SIGINT, true);
  }

  TEST_CASE("3.5 #50 SIGTERM to the parent without a handler: it dies of it and leaves nothing") {
    kill_and_check("busy", SIGTERM, false);
  }

  TEST_CASE("3.4 #31 parent returns from main or calls std::exit without shutdown: nothing left") {
    // exit-static: idle workers, the pool destroyed in static destruction (which waits for its
    // work: there is none left). exit-leaked: busy workers, the pool never destroyed.
    for (std::string mode : {"exit-static", "exit-leaked"}) {
      CAPTURE(mode);
      NoLeaks leaks;
      TempDir dir;
      Signal signal;
      auto pid_file = dir.path("pids");
      Helper helper(mode, pid_file, signal.path());
      auto pids = wait_for_setup(signal, pid_file);
      helper.go();
      auto status = helper.wait_exit(deadline());
      auto since = Clock::now();
      REQUIRE_MESSAGE(status, "the helper did not exit within " << kBound.count() << " s");
      INFO("the helper " << describe(*status));
      CHECK(WIFEXITED(*status));
      CHECK(WEXITSTATUS(*status) == 0);
      check_gone(pids, since);
    }
  }

  TEST_CASE("3.5 #45 a task writes 100 MB to stdout and stderr: it passes through; no block") {
    NoLeaks leaks;
    TempDir dir;
    Helper helper("flood", dir.path("unused"), dir.path("unused-signal"), true);
    auto bytes = helper.drain(deadline());
    REQUIRE_MESSAGE(bytes, "the output did not end within " << kBound.count() << " s");
    CHECK(*bytes >= 100'000'000u);
    auto status = helper.wait_exit(deadline());
    REQUIRE(status);
    INFO("the helper " << describe(*status));
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
  }

}  // TEST_SUITE
