// Respawning and the messages of a worker's death: a worker that had started is replaced at
// once however often it crashes, and a SIGKILL the pool sent says why instead of blaming the
// out-of-memory killer.
#include <doctest/doctest.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>

namespace {

int abort_worker(int) {
  std::abort();
}
CFX_TASK(abort_worker);

int plus_one(int x) {
  return x + 1;
}
CFX_TASK(plus_one);

void hang() {
  for (;;) ::pause();
}
CFX_TASK(hang);

template <class Error, class T>
std::string error_of(cfx::Future<T>& f) {
  try {
    (void)f.result();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no such error>";
}

}  // namespace

TEST_SUITE("process respawn") {
  TEST_CASE("a worker that had started is replaced after every crash, with no ceiling") {
    cfx::ProcessPoolExecutor pool({.max_workers = 1});
    REQUIRE(pool.submit(plus_one, 1).result() == 2);  // the worker has said hello
    constexpr int kCrashes = 40;
    std::vector<cfx::Future<int>> crashes;
    for (int i = 0; i < kCrashes; ++i) crashes.push_back(pool.submit(abort_worker, i));
    for (auto& f : crashes) {
      std::string what = error_of<cfx::WorkerCrashed>(f);
      CHECK(what.find("SIGABRT") != std::string::npos);
    }
    CHECK(pool.submit(plus_one, 41).result() == 42);  // not broken
  }

  TEST_CASE("a kill the pool made says why, without the out-of-memory hint") {
    cfx::ProcessPoolExecutor pool({.max_workers = 1,
                                   .task_timeout = std::chrono::milliseconds(300),
                                   .initializer = cfx::task_call(hang)});
    auto f = pool.submit(plus_one, 1);
    std::string what = error_of<cfx::BrokenProcessPool>(f);
    CHECK(what.find("sent by the pool") != std::string::npos);
    CHECK(what.find("task_timeout") != std::string::npos);
    CHECK(what.find("out-of-memory") == std::string::npos);
  }

  // A SIGKILL from outside keeps the hint: "a worker killed from outside ..." in process_pool.cpp.

}  // TEST_SUITE

namespace {

/// Forks; parent and child both return from the task. Only the worker may answer.
int fork_and_return(int x) {
  pid_t child = ::fork();
  (void)child;
  return x;
}
CFX_TASK(fork_and_return);

}  // namespace

TEST_SUITE("process respawn") {
  TEST_CASE("a process a task forks never answers on the worker's channel") {
    cfx::ProcessPoolExecutor pool({.max_workers = 1});
    REQUIRE(pool.submit(plus_one, 0).result() == 1);  // the worker is up: the calls below
                                                      // go to it together, in one window
    for (int round = 0; round < 5; ++round) {
      CAPTURE(round);
      std::vector<cfx::Future<int>> later;
      auto forked = pool.submit(fork_and_return, 7);
      for (int i = 0; i < 6; ++i) later.push_back(pool.submit(plus_one, i));
      // Had the child answered too, its reply would be taken for the next call's, and every
      // later result shifted by one.
      CHECK(forked.result() == 7);
      for (int i = 0; i < 6; ++i) CHECK(later[i].result() == i + 1);
    }
    auto chunked = pool.map(fork_and_return, std::vector<int>{1, 2, 3}, {.chunksize = 3});
    CHECK(chunked.to_vector() == std::vector<int>{1, 2, 3});
    CHECK(pool.submit(plus_one, 41).result() == 42);
  }

}  // TEST_SUITE
