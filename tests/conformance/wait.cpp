// cfx::wait and cfx::as_completed (CPython test_wait.py, test_as_completed.py), first on
// canned futures, then on futures of every backend.
//
// cfx differs from CPython on purpose: a cancelled future is done for wait/as_completed at
// once (no CANCELLED vs CANCELLED_AND_NOTIFIED), so the ported tests expect the cancelled
// canned future in `done`.
#include <deque>
#include <functional>
#include <latch>
#include <list>
#include <map>
#include <memory>
#include <ranges>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "backends.hpp"

using namespace conf;

namespace {

/// Raises std::runtime_error(message).
int fail_with(std::string message) {
  throw std::runtime_error(message);
}
CFX_TASK(fail_with);

// What as_completed and wait accept, checked where the compiler decides it.
template <class R>
concept as_completed_takes = requires(R&& r) {
  cfx::as_completed(std::forward<R>(r));
};
template <class R>
concept as_completed_with_timeout_takes = requires(R&& r) {
  cfx::as_completed(std::forward<R>(r), 1s);
};
template <class R>
concept wait_takes = requires(R&& r) {
  cfx::wait(std::forward<R>(r));
};
template <class R>
concept wait_with_timeout_takes = requires(R&& r) {
  cfx::wait(std::forward<R>(r), 1s, cfx::ReturnWhen::first_completed);
};
template <class R>
concept all_take = as_completed_takes<R> && as_completed_with_timeout_takes<R> && wait_takes<R> &&
    wait_with_timeout_takes<R>;
template <class R>
concept none_takes = !as_completed_takes<R> && !as_completed_with_timeout_takes<R> &&
                     !wait_takes<R> && !wait_with_timeout_takes<R>;

using F = cfx::Future<int>;
constexpr auto keep_all = [](const F&) { return true; };
using Filtered = decltype(std::declval<std::vector<F>&>() | std::views::filter(keep_all));

// Ranges of futures, as lvalues and as rvalues.
static_assert(all_take<std::vector<F>&> && all_take<std::vector<F>>);
static_assert(all_take<const std::vector<F>&>);
static_assert(all_take<std::list<F>&> && all_take<std::deque<F>>);
static_assert(all_take<std::set<F>&> && all_take<const std::unordered_set<F>&>);
static_assert(all_take<std::span<F>> && all_take<std::initializer_list<F>>);
static_assert(all_take<Filtered> && all_take<Filtered&>);
// Maps keyed by futures (their keys are used), whatever the mapped type.
static_assert(all_take<std::unordered_map<F, int>&> && all_take<std::unordered_map<F, int>>);
static_assert(all_take<const std::map<F, std::string>&> && all_take<std::map<F, std::string>>);
static_assert(all_take<std::vector<std::pair<F, int>>&>);
// Anything else is refused by the constraint, not by an error deep in the library.
static_assert(none_takes<std::vector<int>&>);
static_assert(none_takes<std::map<int, F>&>);  // futures as values, not keys
static_assert(none_takes<F&>);
static_assert(none_takes<std::vector<F*>&>);
static_assert(!cfx::FutureRange<std::map<F, int>> && cfx::FutureMap<std::map<F, int>>);
static_assert(cfx::FutureRange<std::set<F>> && !cfx::FutureMap<std::set<F>>);
// What iterating yields and what wait returns, for a map.
static_assert(
    std::is_same_v<decltype(*cfx::as_completed(std::declval<std::map<F, int>&>()).begin()), F&>);
static_assert(std::is_same_v<decltype(cfx::wait(std::declval<std::unordered_map<F, int>&>())),
                             cfx::DoneAndNotDone<int>>);

}  // namespace

// ---- On canned futures (no executor)

// test_20369 on canned futures
TEST_CASE("wait: duplicates collapse") {
  Canned c;
  auto [done, not_done] = cfx::wait(std::vector{c.success, c.success, c.exception, c.success});
  CHECK(done.size() == 2);
  CHECK(as_set(done) == set_of({c.success, c.exception}));
  CHECK(not_done.empty());
}

TEST_CASE("wait: an empty input returns at once in every mode") {
  std::vector<cfx::Future<int>> none;
  for (auto when : {cfx::ReturnWhen::first_completed, cfx::ReturnWhen::first_exception,
                    cfx::ReturnWhen::all_completed}) {
    auto [done, not_done] = cfx::wait(none, when);
    CHECK(done.empty());
    CHECK(not_done.empty());
  }
}

// test_first_completed_some_already_completed [CORE]
TEST_CASE("wait: first_completed with some already completed returns at once") {
  Canned c;
  auto [done, not_done] =
      cfx::wait(std::vector{c.cancelled, c.success, c.pending}, cfx::ReturnWhen::first_completed);
  CHECK(as_set(done) == set_of({c.cancelled, c.success}));
  CHECK(as_set(not_done) == set_of({c.pending}));
}

// test_first_exception_one_already_failed
TEST_CASE("wait: first_exception with one already failed returns at once") {
  Canned c;
  auto [done, not_done] =
      cfx::wait(std::vector{c.exception, c.pending, c.running}, cfx::ReturnWhen::first_exception);
  CHECK(as_set(done) == set_of({c.exception}));
  CHECK(as_set(not_done) == set_of({c.pending, c.running}));
}

TEST_CASE("wait: first_exception does not count a cancelled future as an exception") {
  Canned c;
  auto start = std::chrono::steady_clock::now();
  auto [done, not_done] = cfx::wait(std::vector{c.cancelled, c.success, c.pending}, 50ms,
                                    cfx::ReturnWhen::first_exception);
  CHECK(seconds_since(start) >= 0.05);  // it waited: nothing failed
  CHECK(as_set(done) == set_of({c.cancelled, c.success}));
  CHECK(as_set(not_done) == set_of({c.pending}));
}

// test_timeout [CORE] on canned futures
TEST_CASE("wait: a timeout returns the unfinished futures in not_done, without throwing") {
  Canned c;
  auto start = std::chrono::steady_clock::now();
  cfx::DoneAndNotDone<int> r;
  CHECK_NOTHROW(
      r = cfx::wait(std::vector{c.cancelled, c.exception, c.success, c.pending, c.running}, 50ms,
                    cfx::ReturnWhen::all_completed));
  CHECK(seconds_since(start) >= 0.05);
  CHECK(as_set(r.done) == set_of({c.cancelled, c.exception, c.success}));
  CHECK(as_set(r.not_done) == set_of({c.pending, c.running}));
  // timeout 0: no wait at all
  auto zero = cfx::wait(std::vector{c.pending, c.success}, 0s);
  CHECK(as_set(zero.done) == set_of({c.success}));
  CHECK(as_set(zero.not_done) == set_of({c.pending}));
}

TEST_CASE("wait: wakes when another thread completes or cancels a future") {
  cfx::Promise<int> a, b, c;
  std::vector fs{a.get_future(), b.get_future(), c.get_future()};
  std::latch go(1);
  std::thread t([&] {
    go.wait();
    fs[1].cancel();
    a.set_result(1);
    c.set_exception(std::make_exception_ptr(CannedError()));
  });
  go.count_down();
  auto start = std::chrono::steady_clock::now();
  auto [done, not_done] = cfx::wait(fs, kLong, cfx::ReturnWhen::all_completed);
  CHECK(seconds_since(start) < kLong.count());
  t.join();
  CHECK(done.size() == 3);
  CHECK(not_done.empty());
}

TEST_CASE("wait: first_completed is woken by a cancel from another thread") {
  cfx::Promise<int> a, b;
  auto fa = a.get_future();
  auto fb = b.get_future();
  std::latch go(1);
  std::thread t([&] {
    go.wait();
    fb.cancel();
  });
  go.count_down();
  auto [done, not_done] = cfx::wait(std::vector{fa, fb}, kLong, cfx::ReturnWhen::first_completed);
  t.join();
  CHECK(as_set(done) == set_of({fb}));
  CHECK(as_set(not_done) == set_of({fa}));
}

// test_no_timeout [CORE] on canned futures
TEST_CASE("as_completed: yields every done future once") {
  Canned c;
  std::vector<cfx::Future<int>> seen;
  for (cfx::Future<int>& f : cfx::as_completed(std::vector{c.cancelled, c.exception, c.success}))
    seen.push_back(f);
  CHECK(seen.size() == 3);
  CHECK(as_set(seen) == set_of({c.cancelled, c.exception, c.success}));
}

TEST_CASE("as_completed: an empty input yields nothing") {
  std::vector<cfx::Future<int>> none;
  int n = 0;
  for (auto& f : cfx::as_completed(none)) {
    (void)f;
    ++n;
  }
  for (auto& f : cfx::as_completed(none, 0s)) {
    (void)f;
    ++n;
  }
  CHECK(n == 0);
}

// test_correct_timeout_exception_msg [CORE]
TEST_CASE("as_completed: the TimeoutError message is exactly \"N (of M) futures unfinished\"") {
  Canned c;
  std::vector<cfx::Future<int>> yielded;
  std::string message;
  try {
    for (cfx::Future<int>& f :
         cfx::as_completed(std::vector{c.cancelled, c.pending, c.running, c.success}, 0s))
      yielded.push_back(f);
    FAIL("as_completed did not time out");
  } catch (const cfx::TimeoutError& e) {
    message = e.what();
  }
  CHECK(message == "2 (of 4) futures unfinished");
  CHECK(as_set(yielded) == set_of({c.cancelled, c.success}));
}

// test_duplicate_futures [CORE] on a lazily generated range
TEST_CASE("as_completed: duplicates (from any range) are yielded once") {
  Canned c;
  auto repeated = std::views::iota(0, 3) | std::views::transform([&](int) { return c.success; });
  int n = 0;
  for (cfx::Future<int>& f : cfx::as_completed(repeated)) {
    CHECK(f == c.success);
    ++n;
  }
  CHECK(n == 1);
}

TEST_CASE("as_completed: done futures first, then completion order") {
  Canned c;
  cfx::Promise<int> a, b, d;
  std::vector fs{a.get_future(), b.get_future(), c.success, d.get_future()};
  std::vector<int> order;
  for (cfx::Future<int>& f : cfx::as_completed(fs, kLong)) {
    order.push_back(f.result());
    // Complete the next one only now, from inside the loop: b, then d, then a.
    if (order.size() == 1) b.set_result(2);
    if (order.size() == 2) d.set_result(4);
    if (order.size() == 3) a.set_result(1);
  }
  CHECK(order == std::vector<int>{42, 2, 4, 1});
}

TEST_CASE("as_completed: a cancel from another thread wakes it") {
  cfx::Promise<int> a, b;
  std::vector fs{a.get_future(), b.get_future()};
  std::latch go(1);
  std::thread t([&] {
    go.wait();
    fs[0].cancel();
    b.set_result(2);
  });
  go.count_down();
  int n = 0;
  CHECK_NOTHROW([&] {
    for (cfx::Future<int>& f : cfx::as_completed(fs, kLong)) {
      CHECK(f.done());
      ++n;
    }
  }());
  t.join();
  CHECK(n == 2);
}

// test_free_reference_yielded_future: once yielded (and dropped by the caller), a future must
// not be kept alive by the iteration.
TEST_CASE("as_completed: holds no reference to a future it has yielded") {
  constexpr int n = 4;
  std::vector<cfx::Promise<std::shared_ptr<int>>> ps(n);
  std::vector<std::weak_ptr<int>> values;
  std::vector<cfx::Future<std::shared_ptr<int>>> fs;
  for (auto& p : ps) {
    auto v = std::make_shared<int>(1);
    values.push_back(v);
    fs.push_back(p.get_future());
    p.set_result(std::move(v));
  }
  ps.clear();
  auto it_fs = fs;  // the range handed to as_completed
  auto iteration = cfx::as_completed(std::move(it_fs));
  for (auto& f : iteration) {
    std::erase(fs, f);  // the caller drops its own handle
  }
  // Every future has been yielded; the iteration object is still alive.
  for (auto& w : values) CHECK(w.expired());
}

TEST_CASE("as_completed and wait: futures key maps and sets (==, std::hash, <=>)") {
  Canned c;
  cfx::Future<int> copy = c.success;
  std::hash<cfx::Future<int>> hash;
  // Copies: equal, equal hashes, equivalent in the order.
  CHECK(copy == c.success);
  CHECK(hash(copy) == hash(c.success));
  CHECK((copy <=> c.success) == std::strong_ordering::equal);
  CHECK_FALSE(copy < c.success);
  CHECK_FALSE(c.success < copy);
  // Different tasks: unequal, and exactly one comes first.
  CHECK(c.success != c.exception);
  CHECK((c.success <=> c.exception) != std::strong_ordering::equal);
  CHECK((c.success < c.exception) != (c.exception < c.success));
  cfx::Promise<int> p;
  CHECK(p.get_future() == p.get_future());  // two handles from one promise: one task
  CHECK(hash(p.get_future()) == hash(p.get_future()));
  CHECK(p.get_future() != c.pending);
  // So both kinds of map and set see one key per task.
  std::vector all{c.pending, c.running, c.cancelled, c.exception, c.success, copy, c.pending};
  CHECK(std::set<cfx::Future<int>>(all.begin(), all.end()).size() == 5);
  CHECK(std::unordered_set<cfx::Future<int>>(all.begin(), all.end()).size() == 5);
  std::unordered_map<cfx::Future<int>, std::string> u{{c.success, "success"},
                                                      {c.exception, "exception"}};
  std::map<cfx::Future<int>, std::string> m{{c.success, "success"}, {c.exception, "exception"}};
  CHECK(u.at(copy) == "success");
  CHECK(m.at(copy) == "success");
  CHECK(u.at(c.exception) == "exception");
  CHECK(m.at(c.exception) == "exception");
  CHECK_FALSE(u.contains(c.pending));
  CHECK_FALSE(m.contains(c.pending));
}

TEST_CASE("wait: takes any range of futures, a braced list, or a map's keys") {
  Canned c;
  auto check = [&](const cfx::DoneAndNotDone<int>& r) {
    CHECK(r.done.size() == 2);
    CHECK(as_set(r.done) == set_of({c.success, c.cancelled}));
    CHECK(as_set(r.not_done) == set_of({c.pending}));
  };
  std::list<cfx::Future<int>> list{c.success, c.pending, c.cancelled, c.success};
  std::deque<cfx::Future<int>> deque(list.begin(), list.end());
  std::set<cfx::Future<int>> set(list.begin(), list.end());
  std::unordered_set<cfx::Future<int>> uset(list.begin(), list.end());
  std::vector<cfx::Future<int>> vec(list.begin(), list.end());
  std::map<cfx::Future<int>, int> map{{c.success, 1}, {c.pending, 2}, {c.cancelled, 3}};
  std::unordered_map<cfx::Future<int>, int> umap(map.begin(), map.end());
  std::vector<std::pair<cfx::Future<int>, int>> pairs(map.begin(), map.end());
  SUBCASE("list") {
    check(cfx::wait(list, 0s));
  }
  SUBCASE("deque") {
    check(cfx::wait(deque, 0s));
  }
  SUBCASE("set") {
    check(cfx::wait(set, 0s));
  }
  SUBCASE("unordered_set") {
    check(cfx::wait(uset, 0s));
  }
  SUBCASE("span") {
    check(cfx::wait(std::span(vec), 0s));
  }
  SUBCASE("braced list") {
    check(cfx::wait({c.success, c.pending, c.cancelled, c.success}, 0s));
    check(cfx::wait({c.success, c.pending, c.cancelled}, 0s, cfx::ReturnWhen::first_completed));
  }
  SUBCASE("map") {
    check(cfx::wait(map, 0s));
  }
  SUBCASE("unordered_map") {
    check(cfx::wait(umap, 0s));
  }
  SUBCASE("const map") {
    check(cfx::wait(std::as_const(map), 0s));
  }
  SUBCASE("map handed over") {
    check(cfx::wait(std::move(map), 0s));
  }
  SUBCASE("vector of pairs") {
    check(cfx::wait(pairs, 0s));
  }
  SUBCASE("filter view") {
    auto not_running = [&](const cfx::Future<int>& f) { return f != c.running; };
    vec.push_back(c.running);
    check(cfx::wait(vec | std::views::filter(not_running), 0s));
  }
}

TEST_CASE("as_completed: takes a braced list and a map's keys") {
  Canned c;
  std::vector<cfx::Future<int>> seen;
  for (cfx::Future<int>& f : cfx::as_completed({c.success, c.exception, c.success}))
    seen.push_back(f);
  CHECK(seen.size() == 2);
  CHECK(as_set(seen) == set_of({c.success, c.exception}));

  std::map<cfx::Future<int>, std::string> names{
      {c.success, "success"}, {c.exception, "exception"}, {c.cancelled, "cancelled"}};
  std::set<std::string> yielded;
  for (cfx::Future<int>& f : cfx::as_completed(names, 0s)) yielded.insert(names.at(f));
  CHECK(yielded == std::set<std::string>{"success", "exception", "cancelled"});
  CHECK(names.size() == 3);  // the map itself is untouched
}

TEST_CASE("as_completed and wait: never take the futures behind a view") {
  Canned c;
  std::vector fs{c.success, c.exception, c.cancelled};
  auto all = [](const cfx::Future<int>&) { return true; };
  // An rvalue view is handed over, but its elements still belong to fs.
  int n = 0;
  for (cfx::Future<int>& f : cfx::as_completed(fs | std::views::filter(all))) {
    CHECK(f.done());
    ++n;
  }
  CHECK(n == 3);
  auto [done, not_done] = cfx::wait(fs | std::views::filter(all));
  CHECK(done.size() == 3);
  auto again = cfx::wait(std::views::all(fs));
  CHECK(again.done.size() == 3);
  CHECK(fs == std::vector{c.success, c.exception, c.cancelled});
  for (auto& f : fs) CHECK(f.valid());
}

// ---- On futures of every backend

// test_20369 [CORE]
TEST_CASE_TEMPLATE("wait: duplicates of one executor future collapse", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  auto f = ex->submit(mul, 2, 2);
  auto [done, not_done] = cfx::wait(std::vector{f, f}, cfx::ReturnWhen::all_completed);
  CHECK(done.size() == 1);
  CHECK(done.at(0) == f);
  CHECK(not_done.empty());
  CHECK(f.result() == 4);
}

// test_first_completed [CORE]
TEST_CASE_TEMPLATE("wait: first_completed", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  Canned c;
  auto f1 = ex->submit(mul, 21, 2);
  auto f2 = ex->submit(value_after_gate, gate.path(), 1);
  auto start = std::chrono::steady_clock::now();
  auto [done, not_done] = cfx::wait(std::vector{f1, f2}, kLong, cfx::ReturnWhen::first_completed);
  CHECK(seconds_since(start) < kLong.count());
  CHECK(as_set(done) == set_of({f1}));
  CHECK(as_set(not_done) == set_of({f2}));
  // cfx: a cancelled future is done at once (CPython would leave CANCELLED_FUTURE in not_done).
  auto r = cfx::wait(std::vector{c.cancelled, f2}, cfx::ReturnWhen::first_completed);
  CHECK(as_set(r.done) == set_of({c.cancelled}));
  CHECK(as_set(r.not_done) == set_of({f2}));
  gate.open();
  CHECK(f2.result() == 1);
}

// test_first_completed_some_already_completed [CORE]
TEST_CASE_TEMPLATE("wait: first_completed with some already completed", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  Canned c;
  auto f1 = ex->submit(value_after_gate, gate.path(), 1);
  auto [done, not_done] =
      cfx::wait(std::vector{c.cancelled, c.success, f1}, cfx::ReturnWhen::first_completed);
  CHECK(as_set(done) == set_of({c.cancelled, c.success}));
  CHECK(as_set(not_done) == set_of({f1}));
}

// test_first_exception [CORE]
TEST_CASE_TEMPLATE("wait: first_exception", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(3);
  Gate gate;
  auto f1 = ex->submit(mul, 21, 2);
  f1.wait();
  auto f2 = ex->submit(fail_with, std::string("this is an exception"));
  auto f3 = ex->submit(value_after_gate, gate.path(), 3);
  auto start = std::chrono::steady_clock::now();
  auto [done, not_done] =
      cfx::wait(std::vector{f1, f2, f3}, kLong, cfx::ReturnWhen::first_exception);
  CHECK(seconds_since(start) < kLong.count());
  CHECK(as_set(done) == set_of({f1, f2}));
  CHECK(as_set(not_done) == set_of({f3}));
  CHECK_THROWS_WITH_AS(f2.result(), "this is an exception", std::runtime_error);
}

// test_first_exception_some_already_complete [CORE]
TEST_CASE_TEMPLATE("wait: first_exception with some already complete", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  Canned c;
  auto f1 = ex->submit(fail_with, std::string("boom"));
  auto f2 = ex->submit(value_after_gate, gate.path(), 2);
  auto [done, not_done] = cfx::wait(std::vector{c.success, c.cancelled, f1, f2}, kLong,
                                    cfx::ReturnWhen::first_exception);
  CHECK(as_set(done) == set_of({c.success, c.cancelled, f1}));
  CHECK(as_set(not_done) == set_of({f2}));
}

// test_all_completed [CORE]
TEST_CASE_TEMPLATE("wait: all_completed", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Canned c;
  auto f1 = ex->submit(fail_with, std::string("boom"));
  auto f2 = ex->submit(mul, 2, 21);
  auto [done, not_done] = cfx::wait(std::vector{c.success, c.cancelled, c.exception, f1, f2},
                                    cfx::ReturnWhen::all_completed);
  CHECK(as_set(done) == set_of({c.success, c.cancelled, c.exception, f1, f2}));
  CHECK(not_done.empty());
  CHECK(f2.result() == 42);
}

// test_timeout [CORE]
TEST_CASE_TEMPLATE("wait: timeout returns without throwing", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  Canned c;
  auto f = ex->submit(value_after_gate, gate.path(), 6);
  auto start = std::chrono::steady_clock::now();
  cfx::DoneAndNotDone<int> r;
  CHECK_NOTHROW(r = cfx::wait(std::vector{c.cancelled, c.exception, c.success, f}, 50ms,
                              cfx::ReturnWhen::all_completed));
  CHECK(seconds_since(start) >= 0.05);
  CHECK(as_set(r.done) == set_of({c.cancelled, c.exception, c.success}));
  CHECK(as_set(r.not_done) == set_of({f}));
  gate.open();
  CHECK(f.result() == 6);
}

// test_pending_calls_race
TEST_CASE_TEMPLATE("wait: 100 futures released at once", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(4);
  Gate gate;
  std::vector<cfx::Future<int>> fs;
  for (int i = 0; i < 100; ++i) fs.push_back(ex->submit(value_after_gate, gate.path(), i));
  std::thread opener([&] { gate.open(); });
  auto [done, not_done] = cfx::wait(fs, kLong);
  opener.join();
  CHECK(done.size() == 100);
  CHECK(not_done.empty());
  for (int i = 0; i < 100; ++i) CHECK(fs[static_cast<std::size_t>(i)].result() == i);
}

// test_no_timeout [CORE]
TEST_CASE_TEMPLATE("as_completed: no timeout", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Canned c;
  auto f1 = ex->submit(mul, 2, 3);
  auto f2 = ex->submit(mul, 3, 4);
  std::vector<cfx::Future<int>> seen;
  for (cfx::Future<int>& f :
       cfx::as_completed(std::vector{c.cancelled, c.exception, c.success, f1, f2}))
    seen.push_back(f);
  CHECK(seen.size() == 5);
  CHECK(as_set(seen) == set_of({c.cancelled, c.exception, c.success, f1, f2}));
}

// test_future_times_out [CORE]
TEST_CASE_TEMPLATE("as_completed: times out after yielding the done futures", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  Canned c;
  auto blocked = ex->submit(value_after_gate, gate.path(), 1);
  for (auto timeout : {0ms, 100ms}) {
    CAPTURE(timeout.count());
    std::vector<cfx::Future<int>> seen;
    std::string message;
    auto start = std::chrono::steady_clock::now();
    try {
      for (cfx::Future<int>& f :
           cfx::as_completed(std::vector{c.cancelled, c.exception, c.success, blocked}, timeout))
        seen.push_back(f);
      FAIL("as_completed did not time out");
    } catch (const cfx::TimeoutError& e) {
      message = e.what();
    }
    CHECK(seconds_since(start) >= std::chrono::duration<double>(timeout).count());
    CHECK(as_set(seen) == set_of({c.cancelled, c.exception, c.success}));
    CHECK(seen.size() == 3);
    CHECK(message == "1 (of 4) futures unfinished");
  }
  gate.open();
  CHECK(blocked.result() == 1);
}

// test_duplicate_futures [CORE]
TEST_CASE_TEMPLATE("as_completed: an executor future repeated is yielded once", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(2);
  auto f = ex->submit(mul, 5, 5);
  int n = 0;
  for (cfx::Future<int>& g : cfx::as_completed(std::vector{f, f, f})) {
    CHECK(g == f);
    ++n;
  }
  CHECK(n == 1);
  CHECK(f.result() == 25);
}

TEST_CASE_TEMPLATE("as_completed: yields in completion order", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(3);
  Gate first, second;
  auto a = ex->submit(value_after_gate, first.path(), 1);
  auto b = ex->submit(value_after_gate, second.path(), 2);
  auto c = ex->submit(mul, 3, 1);
  std::vector<int> order;
  for (cfx::Future<int>& f : cfx::as_completed(std::vector{a, b, c}, kLong)) {
    order.push_back(f.result());
    if (order.size() == 1) second.open();
    if (order.size() == 2) first.open();
  }
  CHECK(order == std::vector<int>{3, 2, 1});
}

TEST_CASE_TEMPLATE("wait and as_completed on Future<void>", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Signal sig;
  std::vector<cfx::Future<void>> fs;
  for (int i = 0; i < 5; ++i) fs.push_back(ex->submit(cfx_test::notify, sig.path(), i));
  auto [done, not_done] = cfx::wait(fs, kLong);
  CHECK(done.size() == 5);
  CHECK(not_done.empty());
  int n = 0;
  for (cfx::Future<void>& f : cfx::as_completed(fs, 0s)) {
    CHECK_NOTHROW(f.result());
    ++n;
  }
  CHECK(n == 5);
  CHECK(sig.drain().size() == 5);
}

// Python's {executor.submit(fn, x): x for x in xs} with as_completed.
TEST_CASE_TEMPLATE("as_completed: an unordered_map keyed by futures", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  std::unordered_map<cfx::Future<int>, int> m;
  for (int x = 1; x <= 8; ++x) m.emplace(ex->submit(mul, x, 3), x);
  m.emplace(ex->submit(value_after_gate, gate.path(), -3), -1);  // last: it blocks a worker
  REQUIRE(m.size() == 9);
  std::vector<int> xs;
  for (cfx::Future<int>& f : cfx::as_completed(m, kLong)) {
    CHECK(f.result() == m.at(f) * 3);
    xs.push_back(m.at(f));
    if (xs.size() == 8) gate.open();  // the gated one can only come last
  }
  REQUIRE(xs.size() == 9);
  CHECK(xs.back() == -1);
  CHECK(std::unordered_set<int>(xs.begin(), xs.end()).size() == 9);
  CHECK(m.size() == 9);
  for (auto& [f, x] : m) CHECK(f.valid());  // an lvalue map keeps its keys
}

// Python's {executor.submit(fn, x): x for x in xs} with wait.
TEST_CASE_TEMPLATE("wait: an unordered_map keyed by futures", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  std::unordered_map<cfx::Future<int>, int> m;
  for (int x = 0; x < 4; ++x) m.emplace(ex->submit(mul, x, x), x);
  auto blocked = ex->submit(value_after_gate, gate.path(), -1);
  m.emplace(blocked, -1);
  for (auto& [f, x] : m)
    if (x >= 0) REQUIRE(f.wait_for(kLong));
  auto [done, not_done] = cfx::wait(m, 0s);
  CHECK(done.size() == 4);
  for (cfx::Future<int>& f : done) CHECK(f.result() == m.at(f) * m.at(f));
  REQUIRE(not_done.size() == 1);
  CHECK(not_done[0] == blocked);
  CHECK(m.at(not_done[0]) == -1);
  gate.open();
  auto all = cfx::wait(m, kLong, cfx::ReturnWhen::all_completed);
  CHECK(all.done.size() == 5);
  CHECK(all.not_done.empty());
  CHECK(m.at(blocked) == blocked.result());
}

TEST_CASE_TEMPLATE("as_completed and wait: a std::map keyed by futures", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  std::map<cfx::Future<int>, std::string> m;
  for (int x = 1; x <= 6; ++x) m.emplace(ex->submit(mul, x, 10), std::to_string(x));
  REQUIRE(m.size() == 6);
  std::set<std::string> seen;
  for (cfx::Future<int>& f : cfx::as_completed(m, kLong)) {
    CHECK(std::to_string(f.result()) == m.at(f) + "0");
    seen.insert(m[f]);
  }
  CHECK(seen.size() == 6);
  CHECK(m.size() == 6);  // m[f] found every key: nothing was inserted
  auto [done, not_done] = cfx::wait(m, 0s);
  CHECK(done.size() == 6);
  CHECK(not_done.empty());
  for (cfx::Future<int>& f : done) CHECK(m.contains(f));
}

TEST_CASE_TEMPLATE("as_completed and wait: a std::set of futures", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  std::set<cfx::Future<int>> s;
  for (int x = 0; x < 5; ++x) {
    auto f = ex->submit(ipow, 2, x);
    s.insert(f);
    s.insert(f);  // a copy is the same key
  }
  REQUIRE(s.size() == 5);
  std::set<int> results;
  for (cfx::Future<int>& f : cfx::as_completed(s, kLong)) {
    CHECK(s.contains(f));
    results.insert(f.result());
  }
  CHECK(results == std::set<int>{1, 2, 4, 8, 16});
  auto [done, not_done] = cfx::wait(s, 0s);
  CHECK(done.size() == 5);
  CHECK(not_done.empty());
}

TEST_CASE_TEMPLATE("as_completed and wait: a filter view over futures", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(2);
  Gate gate;
  std::vector<cfx::Future<int>> fs;
  for (int x = 0; x < 6; ++x) fs.push_back(ex->submit(inc, x));
  auto blocked = ex->submit(value_after_gate, gate.path(), -1);
  fs.push_back(blocked);
  auto unblocked = [&](const cfx::Future<int>& f) { return f != blocked; };
  // If the filter were ignored, both would wait for `blocked` until kLong and fail.
  std::set<int> results;
  for (cfx::Future<int>& f : cfx::as_completed(fs | std::views::filter(unblocked), kLong))
    results.insert(f.result());
  CHECK(results == std::set<int>{1, 2, 3, 4, 5, 6});
  auto view = fs | std::views::filter(unblocked);
  auto [done, not_done] = cfx::wait(view, kLong);
  CHECK(done.size() == 6);
  CHECK(not_done.empty());
  CHECK(as_set(done).count(blocked) == 0);
  // The view's futures were copied, never taken from fs.
  REQUIRE(fs.size() == 7);
  for (auto& f : fs) CHECK(f.valid());
  CHECK(fs.back() == blocked);
  gate.open();
  CHECK(blocked.result() == -1);
}
