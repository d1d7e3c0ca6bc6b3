// async: what awaiting a cfx future costs an Asio coroutine (issue 11). In one io_context,
// a coroutine awaits thread-pool futures with cfx::async_wait(f, use_awaitable); beside it,
// the floor for an Asio user: the same number of round trips to a boost::asio::thread_pool,
// `co_await asio::post(pool, use_awaitable)`. Both pools have 2 threads; same run, so that
// the ratio holds on a noisy machine.
//
//   async [--awaits N] [--repeat N]
//
// Two figures: one await at a time (submit, then await the running future: a round trip),
// and N coroutines in flight at once (each submits, then awaits). Goal: within 2x of Asio.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <latch>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cfx/asio.hpp>
#include <cfx/thread_pool.hpp>

#include "common.hpp"

namespace asio = boost::asio;

namespace {

constexpr std::size_t kWorkers = 2;

struct Config {
  std::size_t awaits = 10'000;
  int repeat = 5;
};

Config parse_args(int argc, char** argv) {
  Config c;
  bench::Flags("async", "cfx::async_wait in an Asio coroutine beside asio::post round trips")
      .value("--awaits", c.awaits, "awaits per figure")
      .value("--repeat", c.repeat, "runs per figure, the best is printed")
      .parse(argc, argv);
  c.repeat = std::max(c.repeat, 1);
  return c;
}

/// Starts both lazily created cfx threads.
void warm_up(cfx::ThreadPoolExecutor& ex) {
  std::latch both(kWorkers);
  std::vector<cfx::Future<void>> fs;
  for (std::size_t i = 0; i < kWorkers; ++i)
    fs.push_back(ex.submit([&] { both.arrive_and_wait(); }));
  for (auto& f : fs) f.result();
}

/// Runs `coroutines` coroutines of `awaits_each` awaits each, made by make(i), on one
/// io_context in this thread; the clock starts when the first is spawned.
template <class Make>
void run_coroutines(std::size_t coroutines, const std::function<void()>& start, Make make) {
  asio::io_context io(1);
  start();
  for (std::size_t i = 0; i < coroutines; ++i) asio::co_spawn(io, make(), asio::detached);
  io.run();
}

double cfx_awaits(std::size_t coroutines, std::size_t awaits_each, int repeat) {
  cfx::ThreadPoolExecutor pool({.max_workers = kWorkers});
  warm_up(pool);
  std::size_t sum = 0;
  double t = bench::best_time(repeat, [&](const std::function<void()>& start) {
    run_coroutines(coroutines, start, [&]() -> asio::awaitable<void> {
      for (std::size_t i = 0; i < awaits_each; ++i)
        sum += co_await cfx::async_wait(pool.submit([i] { return i + 1; }), asio::use_awaitable);
    });
  });
  // Every await must have delivered its value: a lost one would not be a figure.
  if (sum !=
      static_cast<std::size_t>(repeat) * coroutines * (awaits_each * (awaits_each + 1) / 2)) {
    std::fprintf(stderr, "async: awaits lost or wrong (sum %zu)\n", sum);
    std::exit(1);
  }
  return t;
}

double asio_round_trips(std::size_t coroutines, std::size_t awaits_each, int repeat) {
  asio::thread_pool pool(kWorkers);
  return bench::best_time(repeat, [&](const std::function<void()>& start) {
    run_coroutines(coroutines, start, [&]() -> asio::awaitable<void> {
      for (std::size_t i = 0; i < awaits_each; ++i)
        co_await asio::post(pool.get_executor(), asio::use_awaitable);
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
  Config c = parse_args(argc, argv);
  std::printf("async: %zu awaits in one io_context, pools of %zu threads, best of %d runs\n\n",
              c.awaits, kWorkers, c.repeat);
  bench::Table table({{"case", 34, bench::Align::left},
                      {"cfx async_wait", 15},
                      {"asio::post", 12},
                      {"cfx/asio time", 14}});
  table.header("(per await; lower is better)");
  struct Case {
    const char* name;
    std::size_t coroutines, each;
  };
  const Case cases[] = {{"one at a time (1 coroutine)", 1, c.awaits},
                        {"all at once (N coroutines)", c.awaits, 1}};
  bench::Goals goals(40, 12);
  std::vector<std::pair<std::string, double>> ratios;
  for (const Case& k : cases) {
    double cfx = cfx_awaits(k.coroutines, k.each, c.repeat);
    double peer = asio_round_trips(k.coroutines, k.each, c.repeat);
    double n = static_cast<double>(c.awaits);
    table.row({k.name, bench::fmt("%.2f us", cfx / n * 1e6), bench::fmt("%.2f us", peer / n * 1e6),
               bench::times(cfx / peer)});
    ratios.emplace_back(k.name, cfx / peer);
  }
  std::printf("\n");
  for (auto& [name, r] : ratios)
    goals(std::string("within 2x of asio::post, ") + name, r <= 2.0, bench::times(r));
  return 0;
}
