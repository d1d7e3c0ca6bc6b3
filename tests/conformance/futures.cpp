// cfx::Future and cfx::Promise without an executor: states, cancel, result/exception with
// timeouts, done-callbacks, invalid transitions (CPython test_future.py).
#include <atomic>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "backends.hpp"

using namespace conf;

TEST_CASE("future: a fresh Promise's future is pending") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  CHECK(f.valid());
  CHECK_FALSE(f.done());
  CHECK_FALSE(f.running());
  CHECK_FALSE(f.cancelled());
  CHECK_FALSE(cfx::Future<int>().valid());
}

// test_cancelled, test_done, test_running
TEST_CASE("future: cancelled(), running() and done() in each state") {
  Canned c;
  CHECK_FALSE(c.pending.cancelled());
  CHECK_FALSE(c.running.cancelled());
  CHECK(c.cancelled.cancelled());
  CHECK_FALSE(c.exception.cancelled());
  CHECK_FALSE(c.success.cancelled());

  CHECK_FALSE(c.pending.running());
  CHECK(c.running.running());
  CHECK_FALSE(c.cancelled.running());
  CHECK_FALSE(c.exception.running());
  CHECK_FALSE(c.success.running());

  CHECK_FALSE(c.pending.done());
  CHECK_FALSE(c.running.done());
  CHECK(c.cancelled.done());
  CHECK(c.exception.done());
  CHECK(c.success.done());
}

// test_cancel [CORE]
TEST_CASE("future: cancel() in each state") {
  Canned c;
  CHECK(c.pending.cancel());
  CHECK(c.pending.cancelled());
  CHECK(c.pending.done());

  CHECK_FALSE(c.running.cancel());
  CHECK(c.running.running());
  CHECK_FALSE(c.running.done());

  CHECK(c.cancelled.cancel());  // already cancelled: true, unchanged
  CHECK(c.cancelled.cancelled());

  CHECK_FALSE(c.exception.cancel());
  CHECK_FALSE(c.exception.cancelled());
  CHECK_FALSE(c.success.cancel());
  CHECK_FALSE(c.success.cancelled());
  CHECK(c.success.result() == 42);
}

// test_result_with_timeout [CORE]
TEST_CASE("future: result(0s) in each state") {
  Canned c;
  CHECK_THROWS_AS(c.pending.result(0s), cfx::TimeoutError);
  CHECK_THROWS_AS(c.running.result(0s), cfx::TimeoutError);
  CHECK_THROWS_AS(c.cancelled.result(0s), cfx::CancelledError);
  CHECK_THROWS_AS(c.exception.result(0s), CannedError);
  CHECK(c.success.result(0s) == 42);
  // A negative timeout does not block either, and a done future still answers.
  CHECK_THROWS_AS(c.pending.result(-1s), cfx::TimeoutError);
  CHECK(c.success.result(-1s) == 42);
  // Timeouts leave the future as it was.
  CHECK_FALSE(c.pending.done());
  CHECK(c.running.running());
}

// test_exception_with_timeout [CORE]
TEST_CASE("future: exception(0s) in each state") {
  Canned c;
  CHECK_THROWS_AS(c.pending.exception(0s), cfx::TimeoutError);
  CHECK_THROWS_AS(c.running.exception(0s), cfx::TimeoutError);
  CHECK_THROWS_AS(c.cancelled.exception(0s), cfx::CancelledError);
  std::exception_ptr e = c.exception.exception(0s);
  REQUIRE(e != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(e), CannedError);
  CHECK(c.success.exception(0s) == nullptr);
  CHECK(c.success.exception() == nullptr);
  CHECK_THROWS_AS(c.cancelled.exception(), cfx::CancelledError);
}

TEST_CASE("future: a short timeout really waits, then throws TimeoutError") {
  cfx::Promise<int> p;
  auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(p.get_future().result(50ms), cfx::TimeoutError);
  CHECK(seconds_since(start) >= 0.05);
  start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(p.get_future().exception(50ms), cfx::TimeoutError);
  CHECK(seconds_since(start) >= 0.05);
  CHECK_FALSE(p.get_future().done());
}

// test_result_with_success
TEST_CASE("future: result() wakes when another thread sets the result") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  std::latch waiting(1);
  std::thread setter([&] {
    waiting.wait();
    p.set_result(42);
  });
  waiting.count_down();
  CHECK(f.result(kLong) == 42);
  setter.join();
}

// test_result_with_cancel [CORE]
TEST_CASE("future: result() wakes with CancelledError when another thread cancels") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  std::latch waiting(1);
  bool cancelled = false;
  std::thread canceller([&] {
    waiting.wait();
    cancelled = f.cancel();
  });
  waiting.count_down();
  CHECK_THROWS_AS(f.result(kLong), cfx::CancelledError);
  canceller.join();
  CHECK(cancelled);
}

// test_exception_with_success
TEST_CASE("future: exception() wakes when another thread sets an exception") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  std::latch waiting(1);
  std::thread setter([&] {
    waiting.wait();
    p.set_exception(std::make_exception_ptr(CannedError()));
  });
  waiting.count_down();
  std::exception_ptr e = f.exception();
  setter.join();
  REQUIRE(e != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(e), CannedError);
  CHECK_THROWS_AS(f.result(), CannedError);
}

// test_done_callback_with_result [CORE]
TEST_CASE("future: done-callback runs on set_result and sees the result") {
  cfx::Promise<int> p;
  int seen = 0;
  int calls = 0;
  p.get_future().add_done_callback([&](const cfx::Future<int>& f) {
    ++calls;
    seen = f.result();
  });
  CHECK(calls == 0);
  p.set_result(5);
  CHECK(calls == 1);
  CHECK(seen == 5);
}

// test_done_callback_with_exception
TEST_CASE("future: done-callback runs on set_exception and sees the exception") {
  cfx::Promise<int> p;
  std::exception_ptr seen;
  p.get_future().add_done_callback([&](const cfx::Future<int>& f) { seen = f.exception(); });
  p.set_exception(std::make_exception_ptr(std::invalid_argument("test")));
  REQUIRE(seen != nullptr);
  try {
    std::rethrow_exception(seen);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "test");
  }
}

// test_done_callback_with_cancel [CORE]
TEST_CASE("future: done-callback runs on cancel and sees cancelled()") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  bool was_cancelled = false;
  int calls = 0;
  f.add_done_callback([&](const cfx::Future<int>& g) {
    ++calls;
    was_cancelled = g.cancelled();
  });
  CHECK(f.cancel());
  CHECK(calls == 1);
  CHECK(was_cancelled);
  CHECK(f.cancel());  // cancelling again does not run callbacks again
  CHECK(calls == 1);
  CHECK_FALSE(p.set_running_or_notify_cancel());
  CHECK(calls == 1);
}

// test_done_callback_raises [CORE]
TEST_CASE("future: a throwing done-callback is reported on stderr and the others still run") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  bool first = false, third = false, fourth = false;
  StderrCapture err;
  f.add_done_callback([&](const cfx::Future<int>&) { first = true; });
  f.add_done_callback([](const cfx::Future<int>&) { throw std::runtime_error("doh!"); });
  f.add_done_callback([&](const cfx::Future<int>&) { third = true; });
  f.add_done_callback([](const cfx::Future<int>&) { throw 7; });  // not a std::exception
  f.add_done_callback([&](const cfx::Future<int>&) { fourth = true; });
  CHECK_NOTHROW(p.set_result(5));
  CHECK(first);
  CHECK(third);
  CHECK(fourth);
  CHECK(f.result() == 5);
  std::string text = err.text();
  CHECK(text.find("doh!") != std::string::npos);
  CHECK(text.find("exception calling callback") != std::string::npos);
}

// test_done_callback_raises_already_succeeded
TEST_CASE("future: a throwing callback added to a done future is reported, not propagated") {
  cfx::Promise<int> p;
  p.set_result(1);
  StderrCapture err;
  CHECK_NOTHROW(p.get_future().add_done_callback(
      [](const cfx::Future<int>&) { throw std::runtime_error("doh!"); }));
  CHECK(err.text().find("doh!") != std::string::npos);
}

// test_done_callback_already_successful [CORE], _already_failed, _already_cancelled
TEST_CASE("future: done-callback added to a done future runs at once in the caller") {
  Canned c;
  auto caller = std::this_thread::get_id();
  int seen = 0;
  std::thread::id ran_on;
  c.success.add_done_callback([&](const cfx::Future<int>& f) {
    seen = f.result();
    ran_on = std::this_thread::get_id();
  });
  CHECK(seen == 42);
  CHECK(ran_on == caller);

  std::exception_ptr failed;
  c.exception.add_done_callback([&](const cfx::Future<int>& f) { failed = f.exception(); });
  REQUIRE(failed != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(failed), CannedError);

  bool cancelled = false;
  c.cancelled.add_done_callback([&](const cfx::Future<int>& f) { cancelled = f.cancelled(); });
  CHECK(cancelled);

  bool pending_ran = false;
  c.pending.add_done_callback([&](const cfx::Future<int>&) { pending_ran = true; });
  c.running.add_done_callback([&](const cfx::Future<int>&) { pending_ran = true; });
  CHECK_FALSE(pending_ran);
}

TEST_CASE("future: callbacks run once, in registration order, in the completing thread") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  for (int i = 0; i < 5; ++i)
    f.add_done_callback([&, i](const cfx::Future<int>&) {
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
    });
  std::thread::id completer;
  std::thread t([&] {
    completer = std::this_thread::get_id();
    p.set_result(1);
  });
  t.join();
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
  for (auto id : threads) CHECK(id == completer);
  CHECK_THROWS_AS(p.set_result(2), cfx::InvalidStateError);
  CHECK(order.size() == 5);
}

TEST_CASE("future: a callback may query its future and add another callback") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  int inner = 0;
  f.add_done_callback([&](const cfx::Future<int>& g) {
    CHECK(g.done());
    CHECK(g.result(0s) == 3);
    cfx::Future<int> copy = g;
    copy.add_done_callback([&](const cfx::Future<int>& h) { inner = h.result(); });
  });
  p.set_result(3);
  CHECK(inner == 3);
}

TEST_CASE("future: a callback may drop the last handle to its future") {
  auto holder = std::make_shared<cfx::Future<std::string>>();
  int seen = 0;
  {
    cfx::Promise<std::string> p;
    *holder = p.get_future();
    holder->add_done_callback([&, holder](const cfx::Future<std::string>& f) {
      *holder = cfx::Future<std::string>();  // drops one reference while running
      seen = static_cast<int>(f.result().size());
    });
    p.set_result(std::string(100, 'x'));
  }
  CHECK(seen == 100);
}

// test_multiple_set_result [CORE], test_multiple_set_exception
TEST_CASE("future: a second set_result or set_exception throws InvalidStateError") {
  cfx::Promise<int> p;
  p.set_result(1);
  CHECK_THROWS_AS(p.set_result(2), cfx::InvalidStateError);
  CHECK_THROWS_AS(p.set_exception(std::make_exception_ptr(CannedError())), cfx::InvalidStateError);
  CHECK(p.get_future().done());
  CHECK(p.get_future().result() == 1);

  cfx::Promise<int> q;
  q.set_exception(std::make_exception_ptr(std::invalid_argument("first")));
  CHECK_THROWS_AS(q.set_exception(std::make_exception_ptr(CannedError())), cfx::InvalidStateError);
  CHECK_THROWS_AS(q.set_result(1), cfx::InvalidStateError);
  CHECK_THROWS_WITH_AS(q.get_future().result(), "first", std::invalid_argument);

  cfx::Promise<int> r;
  CHECK(r.get_future().cancel());
  CHECK_THROWS_AS(r.set_result(1), cfx::InvalidStateError);
  CHECK_THROWS_AS(r.get_future().result(), cfx::CancelledError);
}

TEST_CASE("future: set_running_or_notify_cancel in each state") {
  cfx::Promise<int> pending;
  CHECK(pending.set_running_or_notify_cancel());
  CHECK(pending.get_future().running());
  CHECK_FALSE(pending.get_future().cancel());
  // running -> again: invalid
  CHECK_THROWS_AS(pending.set_running_or_notify_cancel(), cfx::InvalidStateError);
  pending.set_result(3);  // running -> finished
  CHECK(pending.get_future().result() == 3);
  CHECK_THROWS_AS(pending.set_running_or_notify_cancel(), cfx::InvalidStateError);

  cfx::Promise<int> cancelled;
  CHECK(cancelled.get_future().cancel());
  CHECK_FALSE(cancelled.set_running_or_notify_cancel());
  CHECK(cancelled.get_future().cancelled());

  // set_result does not need set_running_or_notify_cancel first.
  cfx::Promise<int> direct;
  direct.set_result(9);
  CHECK(direct.get_future().result() == 9);
}

// CPython serialises both under the future's lock: either set_running_or_notify_cancel wins
// (returns true; cancel returns false) or cancel wins (it returns false), never an error.
TEST_CASE("future: set_running_or_notify_cancel racing cancel never throws") {
  constexpr int kRounds = 20000;
  std::vector<cfx::Promise<int>> ps(kRounds);
  std::vector<cfx::Future<int>> fs;
  for (auto& p : ps) fs.push_back(p.get_future());
  std::vector<int> started(kRounds), cancelled(kRounds);
  std::atomic<int> at_a{-1}, at_b{-1};
  std::thread a([&] {
    for (int i = 0; i < kRounds; ++i) {
      at_a.store(i);
      while (at_b.load() < i) {
      }
      try {
        started[i] = ps[i].set_running_or_notify_cancel() ? 1 : 0;
      } catch (const cfx::InvalidStateError&) {
        started[i] = -1;
      }
    }
  });
  for (int i = 0; i < kRounds; ++i) {
    at_b.store(i);
    while (at_a.load() < i) {
    }
    cancelled[i] = fs[i].cancel() ? 1 : 0;
  }
  a.join();
  int threw = 0, inconsistent = 0;
  for (int i = 0; i < kRounds; ++i) {
    if (started[i] < 0)
      ++threw;
    else if (started[i] == cancelled[i])
      ++inconsistent;
  }
  CHECK(threw == 0);
  CHECK(inconsistent == 0);
}

TEST_CASE("future: an enormous timeout means no timeout") {
  cfx::Promise<int> p;
  auto f = p.get_future();
  std::latch go(1);
  std::thread t([&] {
    go.wait();
    p.set_result(3);
  });
  go.count_down();
  CHECK(f.result(std::chrono::hours::max()) == 3);
  CHECK(f.exception(std::chrono::duration<double>(1e300)) == nullptr);
  t.join();
  auto [done, not_done] = cfx::wait(std::vector{f}, std::chrono::hours::max());
  CHECK(done.size() == 1);
  int n = 0;
  for (auto& g : cfx::as_completed(std::vector{f}, std::chrono::nanoseconds::max()))
    n += g.result();
  CHECK(n == 3);
}

TEST_CASE("future: Future<void>") {
  cfx::Promise<void> p;
  auto f = p.get_future();
  bool called = false;
  f.add_done_callback([&](const cfx::Future<void>& g) {
    called = true;
    CHECK(g.exception() == nullptr);
  });
  CHECK_THROWS_AS(f.result(0s), cfx::TimeoutError);
  p.set_result();
  CHECK(called);
  CHECK_NOTHROW(f.result());
  CHECK_NOTHROW(f.result(0s));
  CHECK_THROWS_AS(p.set_result(), cfx::InvalidStateError);

  cfx::Promise<void> q;
  q.set_exception(std::make_exception_ptr(CannedError()));
  CHECK_THROWS_AS(q.get_future().result(), CannedError);
}

TEST_CASE("future: copies are handles to the same state") {
  cfx::Promise<std::vector<int>> p;
  auto a = p.get_future();
  auto b = a;
  cfx::Promise<std::vector<int>> other;
  CHECK(a == b);
  CHECK_FALSE(a == other.get_future());
  CHECK(std::hash<cfx::Future<std::vector<int>>>{}(a) ==
        std::hash<cfx::Future<std::vector<int>>>{}(b));
  p.set_result(std::vector<int>{1, 2, 3});
  CHECK(b.done());
  CHECK(a.result() == std::vector<int>{1, 2, 3});
  CHECK(b.result() == std::vector<int>{1, 2, 3});  // result() does not consume the value
}

TEST_CASE("future: a Promise destroyed without an outcome fails its future with cfx::Error") {
  cfx::Future<int> f;
  {
    cfx::Promise<int> p;
    f = p.get_future();
  }
  REQUIRE(f.done());
  CHECK_FALSE(f.cancelled());
  CHECK_THROWS_AS(f.result(), cfx::Error);

  cfx::Future<int> kept;
  {
    cfx::Promise<int> p;
    kept = p.get_future();
    p.set_result(4);
  }
  CHECK(kept.result() == 4);
}

TEST_CASE("future: error hierarchy") {
  CHECK_THROWS_AS(throw cfx::CancelledError(), cfx::Error);
  CHECK_THROWS_AS(throw cfx::TimeoutError(), cfx::Error);
  CHECK_THROWS_AS(throw cfx::InvalidStateError("x"), cfx::Error);
  CHECK_THROWS_AS(throw cfx::BrokenThreadPool("x"), cfx::BrokenExecutor);
  CHECK_THROWS_AS(throw cfx::WorkerCrashed("x"), cfx::BrokenProcessPool);
  CHECK_THROWS_AS(throw cfx::BrokenProcessPool("x"), cfx::BrokenExecutor);
  CHECK_THROWS_AS(throw cfx::Error("x"), std::runtime_error);
  cfx::RemoteError r("MyType", "message");
  CHECK(r.type_name() == "MyType");
  CHECK(r.message() == "message");
  CHECK(std::string(r.what()) == "MyType: message");
}

namespace {
int twice(int x) {
  return 2 * x;
}
CFX_TASK(twice);
}  // namespace

TEST_CASE("registry") {
  auto* e = cfx::detail::find_task_at(reinterpret_cast<const void*>(&twice));
  REQUIRE(e != nullptr);
  CHECK(e->name == "twice");
  auto* gate = cfx::detail::find_task_at(reinterpret_cast<const void*>(&cfx_test::wait_gate));
  REQUIRE(gate != nullptr);
  CHECK(gate->name == "cfx_test::wait_gate");
  // (A string literal would pick the address overload: const char* -> const void*.)
  auto* mul = cfx::detail::find_task(std::string_view("mul"));
  REQUIRE(mul != nullptr);
  CHECK(mul->address == reinterpret_cast<const void*>(&conf::mul));
}

// ---- result() copies nothing the user did not ask for (API section 2)

namespace {

/// Counts its copies (moves are free), in this process.
struct Counted {
  std::vector<int> values;
  static inline std::atomic<int> copies{0};
  Counted() = default;
  explicit Counted(std::vector<int> v) : values(std::move(v)) {}
  Counted(const Counted& o) : values(o.values) { ++copies; }
  Counted(Counted&&) noexcept = default;
  Counted& operator=(const Counted& o) {
    values = o.values;
    ++copies;
    return *this;
  }
  Counted& operator=(Counted&&) noexcept = default;
};
void to_json(nlohmann::json& j, const Counted& c) {
  j = c.values;
}
void from_json(const nlohmann::json& j, Counted& c) {
  j.get_to(c.values);
}

Counted make_counted(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return Counted(std::move(v));
}
CFX_TASK(make_counted);

}  // namespace

TEST_CASE("future: result() on a handle is a reference to one value, for every handle") {
  cfx::Promise<Counted> p;
  auto f = p.get_future();
  auto g = f;
  p.set_result(make_counted(3));
  Counted::copies = 0;
  const Counted& a = f.result();
  CHECK(&a == &f.result(0s));
  CHECK(&a == &g.result());
  f = cfx::Future<Counted>();  // the reference lives as long as any handle: g's
  CHECK(a.values == std::vector<int>{0, 1, 2});
  CHECK(Counted::copies == 0);
}

TEST_CASE("future: result() on the only handle moves the value out; shared, it copies") {
  cfx::Promise<Counted> p;
  auto f = p.get_future();
  p.set_result(make_counted(4));
  auto g = f;
  Counted::copies = 0;
  Counted copied = std::move(f).result();  // g shares the task: copied, left intact
  CHECK(Counted::copies == 1);
  CHECK(g.result().values.size() == 4);
  f = cfx::Future<Counted>();
  Counted moved = std::move(g).result(0s);  // g is the last handle now
  CHECK(Counted::copies == 1);
  CHECK(moved.values == std::vector<int>{0, 1, 2, 3});
  CHECK(copied.values == moved.values);
}

TEST_CASE("future: a pending done-callback counts as a handle that may read the value") {
  cfx::Promise<Counted> p;
  auto f = p.get_future();
  std::size_t seen = 0;
  f.add_done_callback([&](const cfx::Future<Counted>& h) { seen = h.result().values.size(); });
  p.set_result(make_counted(5));
  CHECK(seen == 5);
  Counted::copies = 0;
  Counted moved = std::move(f).result();  // the callback has run: f is the only handle
  CHECK(Counted::copies == 0);
  CHECK(moved.values.size() == 5);
}

TEST_CASE_TEMPLATE("future: ex.submit(f, x).result() copies nothing", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Counted::copies = 0;
  Counted c = ex->submit(make_counted, 1000).result();
  CHECK(c.values.size() == 1000);
  CHECK(c.values[999] == 999);
  auto f = ex->submit(make_counted, 10);
  const Counted& a = f.result(kLong);
  CHECK(&a == &f.result());
  CHECK(Counted::copies == 0);
  std::vector<Counted> all;
  for (auto& v : ex->map(make_counted, std::vector<int>{1, 2, 3}, {.chunksize = 2}))
    all.push_back(std::move(v));
  CHECK(all.size() == 3);
  CHECK(all[2].values.size() == 3);
  CHECK(Counted::copies == 0);  // map results move out as they are consumed
}
