// cfx::Process and cfx::Pipe (issue 9): exit codes as Python's, join with a timeout, handles
// to the child by both start methods, EOF when the other end is closed or its process died.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "toolkit/tasks.hpp"

using namespace toolkit_test;
using namespace std::chrono_literals;

CFX_TASK(exit_ok);
CFX_TASK(throw_error);
CFX_TASK(wait_on);
CFX_TASK(echo_strings);
CFX_TASK(write_and_tell);

using cfx::test::name;

TEST_CASE("Process exit codes: 0, 1 when the task threw, minus the signal") {
  for (auto method : cfx::test::process_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessOptions opts{.start_method = method};
    cfx::Process ok(opts, exit_ok);
    CHECK_FALSE(ok.exitcode());
    ok.start();
    CHECK(ok.pid() > 0);
    ok.join();
    CHECK(ok.exitcode() == 0);
    CHECK_FALSE(ok.is_alive());

    cfx::Process bad(opts, throw_error);
    bad.start();
    bad.join();
    CHECK(bad.exitcode() == 1);

    for (int sig : {SIGKILL, SIGTERM}) {
      CAPTURE(sig);
      auto [mine, theirs] = cfx::Pipe<int>();
      cfx::Process p(opts, wait_on, theirs);
      p.start();
      theirs.close();
      CHECK(mine.recv() == 1);  // it runs
      CHECK(p.is_alive());
      CHECK_FALSE(p.exitcode());
      if (sig == SIGKILL)
        p.kill();
      else
        p.terminate();
      p.join();
      CHECK(p.exitcode() == -sig);
      CHECK_THROWS_AS(mine.recv(), cfx::Error);  // its end died with it
    }
  }
}

TEST_CASE("Process::join with a timeout returns false while the child runs") {
  auto [mine, theirs] = cfx::Pipe<int>();
  cfx::Process p(cfx::ProcessOptions{.start_method = cfx::StartMethod::fork}, wait_on, theirs);
  p.start();
  theirs.close();
  CHECK(mine.recv() == 1);
  CHECK_FALSE(p.join(20ms));
  CHECK(p.is_alive());
  mine.close();  // its recv() sees EOF and throws: exit code 1
  CHECK(p.join(20s));
  CHECK(p.exitcode() == 1);
}

TEST_CASE("Process misuse throws cfx::Error") {
  cfx::Process p(exit_ok);
  CHECK_THROWS_AS(p.join(), cfx::Error);
  p.start();
  CHECK_THROWS_AS(p.start(), cfx::Error);
  p.join();
}

TEST_CASE("a SharedArray reaches Process children of both start methods") {
  for (auto method : cfx::test::process_start_methods()) {
    CAPTURE(name(method));
    cfx::SharedArray<int> a(1000);
    auto [mine, theirs] = cfx::Pipe<int>();
    cfx::Process p(cfx::ProcessOptions{.start_method = method}, write_and_tell, a, 9, theirs);
    p.start();
    theirs.close();
    CHECK(mine.recv() == 9);
    CHECK(a[0] == 9);
    CHECK(a[999] == 9);
    p.join();
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("Pipe: values both ways, poll, EOF on close") {
  auto [left, right] = cfx::Pipe<std::string>();
  CHECK_FALSE(left.poll());
  right.send("hello");
  CHECK(left.poll(1s));
  CHECK(left.recv() == "hello");
  std::thread sender([l = left] { l.send(std::string(100000, 'x')); });  // over 64 KiB
  CHECK(right.recv().size() == 100000);  // larger than one read, and than the pipe holds
  sender.join();
  right.close();
  CHECK(left.poll(1s));  // EOF is readable
  CHECK_THROWS_AS(left.recv(), cfx::Error);
  CHECK_THROWS_AS(right.send("x"), cfx::Error);
}

TEST_CASE("Pipe: a send to an end closed everywhere throws; its SIGPIPE kills nothing") {
  auto [left, right] = cfx::Pipe<std::string>();
  left.close();
  CHECK_THROWS_WITH_AS(right.send("x"), doctest::Contains("the other end is gone"), cfx::Error);
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  CHECK_FALSE(sigismember(&pending, SIGPIPE));  // consumed, not left for the program
}

TEST_CASE("Pipe: a message larger than the pipe holds arrives whole") {
  auto [left, right] = cfx::Pipe<std::string>();
  std::string big(3 << 20, 'b');
  big.back() = 'e';
  std::thread reader([r = right] { r.send(r.recv()); });
  left.send(big);
  CHECK(left.recv() == big);
  reader.join();
}

TEST_CASE("Pipe between threads") {
  auto [left, right] = cfx::Pipe<int>();
  std::thread t([r = right] {
    for (int i = 0; i < 1000; ++i) r.send(r.recv() + 1);
  });
  int x = 0;
  for (int i = 0; i < 1000; ++i) {
    left.send(x);
    x = left.recv();
  }
  t.join();
  CHECK(x == 1000);
}

TEST_CASE("a Connection end crosses to Process children and pool workers") {
  for (auto method : cfx::test::process_start_methods()) {
    CAPTURE(name(method));
    auto [mine, theirs] = cfx::Pipe<std::string>();
    cfx::Process p(cfx::ProcessOptions{.start_method = method}, echo_strings, theirs);
    p.start();
    theirs.close();
    mine.send("ping");
    CHECK(mine.recv() == "ping");
    mine.close();  // the child's recv sees EOF; it returns
    p.join();
    CHECK(p.exitcode() == 0);
  }
  for (auto method : cfx::test::pool_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessPoolExecutor pool({.max_workers = 1, .start_method = method});
    auto [mine, theirs] = cfx::Pipe<std::string>();
    auto f = pool.submit(echo_strings, theirs);
    theirs.close();
    mine.send("pong");
    CHECK(mine.recv() == "pong");
    mine.close();
    f.result();  // the worker's copy of the end is closed with the call
  }
}

TEST_CASE("Pipe: recv throws EOF when the process holding the other end dies") {
  auto [mine, theirs] = cfx::Pipe<int>();
  cfx::Process p(cfx::ProcessOptions{.start_method = cfx::StartMethod::fork}, wait_on, theirs);
  p.start();
  theirs.close();
  CHECK(mine.recv() == 1);
  p.kill();
  CHECK_THROWS_AS(mine.recv(), cfx::Error);
  p.join();
}

TEST_CASE("Process and Pipe leave no descriptor open") {
  auto fds = open_fd_count();
  {
    auto [mine, theirs] = cfx::Pipe<std::string>();
    cfx::Process p(echo_strings, theirs);
    p.start();
    theirs.close();
    mine.send("a");
    CHECK(mine.recv() == "a");
    mine.close();
    p.join();
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("cpu_count is at least 1 and at most the hardware's") {
  CHECK(cfx::cpu_count() >= 1);
  CHECK(cfx::cpu_count() <= std::max(1u, std::thread::hardware_concurrency()));
}
