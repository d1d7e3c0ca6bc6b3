// Small calls and replies travel through a worker's mailboxes while the other end watches, and
// through the pipe otherwise (backends/process/channel.hpp, "Mailboxes"): whichever way each
// frame goes, calls run in the order sent, every reply reaches its own future, and no frame
// is left in a mailbox that nobody looks at.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>

namespace {

/// This worker's calls so far: a call that overtook an earlier one would get a smaller number.
int call_number(std::string /*padding*/) {
  static int calls = 0;
  return ++calls;
}
CFX_TASK(call_number);

/// A string of `n` copies of `c`: bigger than a mailbox once n is over 4 KiB.
std::string echo_size(int n, char c) {
  return std::string(static_cast<std::size_t>(n), c);
}
CFX_TASK(echo_size);

int next_int(int x) {
  return x + 1;
}
CFX_TASK(next_int);

/// Arguments and results of both sizes: a mailbox holds 4 KiB less its length word.
constexpr int kSmall = 16, kBig = 6000;

/// Spins for about `us` microseconds: round trips that start just as the other end gives up
/// watching (50 µs on either side), so that both ways of sending meet that moment.
void spin_for(int us) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < until) {
  }
}

}  // namespace

TEST_SUITE("process mailboxes") {
  TEST_CASE("calls through the mailbox and the pipe run in the order sent") {
    // One worker: each call's number is one more than the last, whichever way each came.
    cfx::ProcessPoolExecutor ex({.max_workers = 1});
    int expected = 0;
    for (int round = 0; round < 200; ++round) {
      // One at a time (the worker watches: small calls take the mailbox, big ones the pipe) ...
      const bool big = round % 3 == 0;
      CHECK(ex.submit(call_number, std::string(big ? kBig : kSmall, 'a')).result() == ++expected);
      // ... then a burst in flight at once, sizes mixed, taken in order.
      std::vector<cfx::Future<int>> burst;
      for (int i = 0; i < 6; ++i)
        burst.push_back(ex.submit(call_number, std::string((round + i) % 2 ? kBig : kSmall, 'b')));
      for (auto& f : burst) CHECK(f.result() == ++expected);
    }
  }

  TEST_CASE("replies through the mailbox and the pipe reach their own futures") {
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    for (int round = 0; round < 300; ++round) {
      const int n = round % 4 == 0 ? kBig + round : kSmall + round;
      const char c = static_cast<char>('a' + round % 26);
      CHECK(ex.submit(echo_size, n, c).result() == std::string(static_cast<std::size_t>(n), c));
      spin_for(round % 120);
    }
    std::vector<cfx::Future<std::string>> burst;
    for (int i = 0; i < 40; ++i) burst.push_back(ex.submit(echo_size, i % 2 ? kBig : kSmall, 'z'));
    for (int i = 0; i < 40; ++i)
      CHECK(burst[static_cast<std::size_t>(i)].result().size() ==
            static_cast<std::size_t>(i % 2 ? kBig : kSmall));
  }

  TEST_CASE("thousands in flight: replies read behind a mailbox reply are the worker's") {
    // Submit all, then take every result: the workers answer through the pipe and, whenever
    // the parent has caught up, through the mailbox, so the parent often reads the next
    // replies from the pipe before it takes the one in the mailbox. Those are no task's bytes.
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    for (int round = 0; round < 3; ++round) {
      std::vector<cfx::Future<int>> fs;
      fs.reserve(50000);
      for (int i = 0; i < 50000; ++i) fs.push_back(ex.submit(next_int, i));
      int wrong = 0;
      for (int i = 0; i < 50000; ++i) wrong += fs[static_cast<std::size_t>(i)].result() != i + 1;
      CHECK(wrong == 0);
    }
  }

  TEST_CASE("replies still come when the waiting thread leaves as they are written") {
    // Round trips (a thread watches, replies take the mailbox), then calls that nobody waits
    // for on a future: done-callbacks count them, and this thread sleeps on a condition
    // variable. The I/O thread gives up its stand-by meanwhile; a reply a worker put in its
    // mailbox just then must still be taken, and a call put in a mailbox as its worker went
    // to sleep must still run. A lost one fails the bounded wait below instead of hanging.
    cfx::ProcessPoolExecutor ex({.max_workers = 2});
    std::mutex mutex;
    std::condition_variable cv;
    for (int round = 0; round < 60; ++round) {
      for (int i = 0; i < 20; ++i) {
        REQUIRE(ex.submit(next_int, i).result() == i + 1);
        spin_for((round * 7 + i * 13) % 110);
      }
      constexpr int kCalls = 8;
      int done = 0, right = 0;
      for (int i = 0; i < kCalls; ++i)
        ex.submit(next_int, round + i).add_done_callback([&, i](const cfx::Future<int>& f) {
          std::lock_guard lock(mutex);
          right += f.result() == round + i + 1;
          ++done;
          cv.notify_all();
        });
      std::unique_lock lock(mutex);
      const bool all = cv.wait_for(lock, std::chrono::seconds(30), [&] { return done == kCalls; });
      REQUIRE(all);
      CHECK(right == kCalls);
    }
  }
}
