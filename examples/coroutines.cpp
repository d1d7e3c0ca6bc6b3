// coroutines: a process pool inside an Asio program (docs/async.md).
//
// One io_context runs two coroutines in this thread: the first awaits Collatz chunks that run
// in worker processes, the second prints progress from a timer meanwhile; neither blocks the
// thread. Then a chunk far too large for its deadline is raced against a timer with `||`:
// the timer wins, the cancellation reaches the task, and its worker process is killed and
// replaced, as the pids printed before and after show.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cfx/asio.hpp>
#include <cfx/cfx.hpp>

#include "collatz.hpp"

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

CFX_TASK_AS(&collatz::longest_in, "collatz_longest_in");

namespace {

int worker_pid() {
  return static_cast<int>(::getpid());
}
CFX_TASK(worker_pid);

constexpr std::uint64_t kLimit = 2'000'000;
constexpr std::uint64_t kChunks = 8;

struct Progress {
  std::size_t done = 0;
  bool finished = false;
};

/// Awaits every chunk of the search below kLimit, in order, and prints the answer.
asio::awaitable<void> search(cfx::ProcessPoolExecutor& pool, Progress& progress) {
  std::vector<cfx::Future<collatz::Best>> chunks;
  for (std::uint64_t i = 0; i < kChunks; ++i)
    chunks.push_back(
        pool.submit(collatz::longest_in, 1 + i * kLimit / kChunks, 1 + (i + 1) * kLimit / kChunks));
  collatz::Best best{0, 0};
  for (auto& chunk : chunks) {
    // Suspends this coroutine, not the thread: the progress timer runs meanwhile.
    best = collatz::better(best, co_await cfx::async_wait(chunk, asio::use_awaitable));
    ++progress.done;
  }
  progress.finished = true;
  std::printf("answer below %llu: start %llu, %d steps\n", static_cast<unsigned long long>(kLimit),
              static_cast<unsigned long long>(best.first), best.second);
}

/// Looks every 20 ms, until the search has finished, and prints how many chunks are done
/// when that has changed.
asio::awaitable<void> report(Progress& progress) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  std::size_t printed = static_cast<std::size_t>(-1);
  while (!progress.finished) {
    if (progress.done != printed)
      std::printf("progress: %zu of %llu chunks done\n", printed = progress.done,
                  static_cast<unsigned long long>(kChunks));
    tick.expires_after(20ms);
    co_await tick.async_wait(asio::use_awaitable);
  }
}

/// Gives a chunk of 10^12 starts half a second; its worker pays for the overrun.
asio::awaitable<void> give_up_on_slow_chunk(cfx::ProcessPoolExecutor& pool) {
  int before = co_await cfx::async_wait(pool.submit(worker_pid), asio::use_awaitable);
  auto slow = pool.submit(collatz::longest_in, 1, 1'000'000'000'000);
  asio::steady_timer deadline(co_await asio::this_coro::executor, 500ms);
  // || cancels the loser: the wait gets a terminal cancellation, which interrupts the task.
  auto winner = co_await (cfx::async_wait(slow, asio::use_awaitable) ||
                          deadline.async_wait(asio::use_awaitable));
  if (winner.index() == 1)
    std::printf("slow chunk: deadline passed after 500 ms, future cancelled: %s\n",
                slow.cancelled() ? "yes" : "no");
  int after = co_await cfx::async_wait(pool.submit(worker_pid), asio::use_awaitable);
  std::printf("its worker was replaced: pid %s (%d -> %d)\n", before != after ? "changed" : "same",
              before, after);
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // in a worker process: serve tasks and exit here
  asio::io_context io;
  cfx::ProcessPoolExecutor pool({.max_workers = 2});
  Progress progress;
  asio::co_spawn(io, search(pool, progress), asio::detached);
  asio::co_spawn(io, report(progress), asio::detached);
  io.run();

  // One worker, so that the task after the slow one runs where the slow one ran.
  cfx::ProcessPoolExecutor single({.max_workers = 1});
  asio::co_spawn(io, give_up_on_slow_chunk(single), asio::detached);
  io.restart();
  io.run();
}
