// A thread waiting for a process future drives the pool itself while the I/O thread stands by
// (backends/process/wait_turn.cpp): what must stay true whoever does the work. Each test first
// runs round trips, so that the waiting thread has the turn when the case begins.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include <cfx/cfx.hpp>

#include "support/gate.hpp"

namespace {

int sum(int a, int b) {
  return a + b;
}
CFX_TASK(sum);

int own_pid() {
  return ::getpid();
}
CFX_TASK(own_pid);

/// sum(a, b) once the gate at `gate_path` opens.
int sum_after_gate(std::string gate_path, int a, int b) {
  cfx_test::wait_gate(gate_path);
  return a + b;
}
CFX_TASK(sum_after_gate);

std::size_t text_size(std::string text) {
  return text.size();
}
CFX_TASK(text_size);

using cfx_test::Gate;
using cfx_test::Signal;

/// Round trips one by one: the waiting thread watches each future, and takes the turn.
void round_trips(cfx::ProcessPoolExecutor& ex, int n) {
  for (int i = 0; i < n; ++i) REQUIRE(ex.submit(sum, i, 1).result() == i + 1);
}

bool pipe_signal_blocked() {
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, nullptr, &now);
  return sigismember(&now, SIGPIPE) == 1;
}

bool pipe_signal_pending() {
  sigset_t pending;
  sigpending(&pending);
  return sigismember(&pending, SIGPIPE) == 1;
}

/// Blocks until process `pid` has exited (its descriptors are closed then).
void wait_for_exit(int pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0 && errno == ESRCH) return;  // exited, and already reaped by the pool
  REQUIRE(fd >= 0);
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
  ::close(fd);
}

}  // namespace

TEST_SUITE("process wait turn") {
  TEST_CASE("done-callbacks run on the I/O thread, also when the waiting thread took the reply") {
    // The waiting thread completes the futures whose replies it reads, but runs none of their
    // user code: a callback runs on the I/O thread, where shutdown(wait=true) is refused and a
    // submit works, as always.
    const auto waiter = std::this_thread::get_id();
    for (int round = 0; round < 10; ++round) {
      cfx::Promise<bool> refused;  // was the callback's shutdown(wait=true) refused?
      auto ran = refused.get_future();
      cfx::Future<int> next;
      std::thread::id callback_thread;
      cfx::ProcessPoolExecutor ex({.max_workers = 1});  // destroyed first
      round_trips(ex, 50);
      // Not done before its callback is added (which would run it here, at once): the task
      // waits for the gate, opened once the callback is in.
      Gate gate;
      auto first = ex.submit(sum_after_gate, gate.path(), round, 1);
      first.add_done_callback([&](const cfx::Future<int>& f) {
        callback_thread = std::this_thread::get_id();
        next = ex.submit(sum, f.result(), 1);
        try {
          ex.shutdown(true);
          refused.set_result(false);
        } catch (const cfx::Error&) {
          refused.set_result(true);
        }
      });
      gate.open();
      CHECK(first.result() == round + 1);
      CHECK(ran.result());
      CHECK(callback_thread != waiter);
      CHECK(next.result() == round + 2);
    }
  }

  TEST_CASE("results no thread watches for still come: as_completed and a watch that gave up") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    for (int round = 0; round < 20; ++round) {
      round_trips(ex, 20);
      // as_completed sleeps at once: the I/O thread must take these replies in.
      std::vector<cfx::Future<int>> fs;
      for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(sum, round, i));
      std::set<int> got;
      for (auto& f : cfx::as_completed(fs)) got.insert(f.result());
      CHECK(got.size() == 8);
      CHECK(*got.begin() == round);
      // A watch that ends before its reply comes (the task waits at a gate): the waiting
      // thread leaves with the reply owed, and the I/O thread takes it in.
      Signal started;
      Gate gate;
      auto held = ex.submit(cfx_test::notify_then_wait, started.path(), gate.path(), round);
      REQUIRE(started.receive(1).size() == 1);
      CHECK_FALSE(held.wait_for(std::chrono::microseconds(200)));
      gate.open();
      CHECK(held.result() == round);
    }
  }

  TEST_CASE("a call written to a worker that has just died: no SIGPIPE escapes the wait") {
    // The dead worker's pipe refuses the waiting thread's write (EPIPE, and SIGPIPE to that
    // thread, which would end the program, or wait pending for a thread that blocks it); the
    // call runs on a new worker. Both with SIGPIPE as the program left it and blocked by the
    // thread itself, which must find it still blocked, and nothing pending.
    for (bool blocked_by_thread : {false, true}) {
      CAPTURE(blocked_by_thread);
      sigset_t pipe_set, before;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      REQUIRE(pthread_sigmask(blocked_by_thread ? SIG_BLOCK : SIG_UNBLOCK, &pipe_set, &before) ==
              0);
      cfx::ProcessPoolExecutor ex({.max_workers = 1});
      for (int round = 0; round < 10; ++round) {
        round_trips(ex, 20);
        const int pid = ex.submit(own_pid).result();
        REQUIRE(::kill(pid, SIGKILL) == 0);
        wait_for_exit(pid);
        // Bigger than a mailbox: written to the pipe, whatever the dead worker last said.
        CHECK(ex.submit(text_size, std::string(8192, 'x')).result() == 8192);
        auto f = ex.submit(sum, round, 2);
        CHECK(f.result() == round + 2);
        CHECK(ex.submit(own_pid).result() != pid);
        CHECK(pipe_signal_blocked() == blocked_by_thread);
        CHECK_FALSE(pipe_signal_pending());
      }
      pthread_sigmask(SIG_SETMASK, &before, nullptr);
    }
  }

  TEST_CASE("threads waiting on one pool at once all get their own results") {
    // Several watchers: one holds the turn, the others wait for it or for the I/O thread.
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    constexpr int kThreads = 4, kEach = 300;
    std::vector<std::thread> threads;
    std::vector<int> wrong(kThreads, 0);
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i)
          if (ex.submit(sum, t * 1000, i).result() != t * 1000 + i) ++wrong[t];
      });
    for (auto& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) CHECK(wrong[t] == 0);
  }
}
