// Shared handles crossing process boundaries (issue 9): SharedArray and SharedValue as task
// arguments and results, to pool workers of both start methods and to Process children;
// the worker's cache of blocks; no residue in /dev/shm; no descriptor left open.
#include <doctest/doctest.h>

#include <vector>

#include "toolkit/tasks.hpp"

using namespace toolkit_test;

CFX_TASK(sum_array);
CFX_TASK(fill_array);
CFX_TASK(mapped_by_worker);
CFX_TASK(make_iota);
CFX_TASK(echo_array);
CFX_TASK(add_many);
CFX_TASK(locked_increments);
CFX_TASK(set_event);
CFX_TASK(lock_is_free);

using cfx::test::name;

TEST_CASE("a default-constructed SharedArray refers to nothing and allocates nothing") {
  auto before = open_fd_count();
  cfx::SharedArray<double> a;
  CHECK(a.size() == 0);
  CHECK(a.data() == nullptr);
  CHECK_FALSE(a);
  CHECK_THROWS_AS((void)a.get_lock(), cfx::Error);
  CHECK(open_fd_count() == before);
}

TEST_CASE("a default-constructed SharedValue is a new zero; a moved-from one throws") {
  cfx::SharedValue<std::int64_t> v;
  CHECK(v);
  CHECK(v.load() == 0);
  v.fetch_add(2);
  auto taker = std::move(v);
  CHECK(taker.load() == 2);
  CHECK_FALSE(v);  // NOLINT(bugprone-use-after-move): the state under test
  CHECK_THROWS_AS((void)v.load(), cfx::Error);
  cfx::SharedArray<int> array(3);
  auto array_taker = std::move(array);
  CHECK(array.size() == 0);  // NOLINT(bugprone-use-after-move)
  CHECK(array.data() == nullptr);
}

TEST_CASE("the decoder builds handles without making objects") {
  // The encoding of an empty handle, as a worker receives it: decoding it allocates nothing
  // (the handles' default constructors would each make a memfd).
  auto before = open_fd_count();
  nlohmann::json empty_sync = nlohmann::json::array({nullptr, 0});
  CHECK_FALSE(empty_sync.get<cfx::Lock>().valid());
  CHECK_FALSE(empty_sync.get<cfx::Event>().valid());
  CHECK_FALSE(empty_sync.get<cfx::Semaphore>().valid());
  CHECK_FALSE((empty_sync.get<cfx::Queue<int>>().valid()));
  CHECK_FALSE((empty_sync.get<cfx::SharedDict<int, int>>().valid()));
  CHECK_FALSE(nlohmann::json(nullptr).get<cfx::SharedValue<int>>());
  CHECK_FALSE(nlohmann::json(nullptr).get<cfx::SharedArray<int>>());
  auto in_vector = nlohmann::json::array({empty_sync, empty_sync}).get<std::vector<cfx::Lock>>();
  CHECK(in_vector.size() == 2);
  CHECK(open_fd_count() == before);
}

TEST_CASE("SharedArray is zero-filled, and copies share the memory") {
  cfx::SharedArray<int> a(1000);
  CHECK(a.size() == 1000);
  CHECK(std::all_of(a.begin(), a.end(), [](int x) { return x == 0; }));
  auto b = a;
  b[7] = 42;
  CHECK(a[7] == 42);
  CHECK(a == b);
  std::vector<double> v{1.5, 2.5};
  auto c = cfx::SharedArray<double>::from(v);
  CHECK(c.size() == 2);
  CHECK(c.span()[1] == 2.5);
}

TEST_CASE("SharedValue: load, store, fetch_add return as std::atomic") {
  cfx::SharedValue<std::int64_t> v(5);
  CHECK(v.load() == 5);
  CHECK(v.fetch_add(3) == 5);
  CHECK(v.load() == 8);
  v.store(1);
  CHECK(v.load() == 1);
}

TEST_CASE("an array travels to pool workers as a handle, both ways, both start methods") {
  for (auto method : cfx::test::pool_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessPoolExecutor pool({.max_workers = 2, .start_method = method});
    cfx::SharedArray<std::uint64_t> big(100000);
    std::iota(big.begin(), big.end(), std::uint64_t{1});
    CHECK(pool.submit(sum_array, big).result() == 100000ull * 100001 / 2);

    cfx::SharedArray<int> a(1000);
    pool.submit(fill_array, a, 7).result();
    CHECK(std::all_of(a.begin(), a.end(), [](int x) { return x == 7; }));

    auto made = pool.submit(make_iota, 500).result();  // made in the worker, mapped here
    REQUIRE(made.size() == 500);
    CHECK(made[499] == 499);
    auto back = pool.submit(echo_array, a).result();
    CHECK(back == a);  // the same block, not a copy: this process maps it once

    cfx::SharedValue<std::int64_t> counter(0);
    std::vector<cfx::Future<void>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(pool.submit(add_many, counter, 1000));
    for (auto& f : fs) f.result();
    CHECK(counter.load() == 8000);
  }
}

TEST_CASE("a worker maps a block once: the second call with the same array sends nothing") {
  for (auto method : cfx::test::pool_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessPoolExecutor pool({.max_workers = 1, .start_method = method});
    cfx::SharedArray<int> a(10), b(10);
    auto first = pool.submit(mapped_by_worker, a).result();
    CHECK(pool.submit(mapped_by_worker, a).result() == first);
    CHECK(pool.submit(mapped_by_worker, a).result() == first);
    CHECK(pool.submit(mapped_by_worker, b).result() == first + 1);
    CHECK(pool.submit(mapped_by_worker, a).result() == first + 1);
  }
}

TEST_CASE("a block the parent released is dropped by the worker and can be sent again") {
  cfx::ProcessPoolExecutor pool(
      {.max_workers = 1, .start_method = cfx::test::pool_fork_or_spawn()});
  std::uint64_t first;
  {
    cfx::SharedArray<int> a(10);
    first = pool.submit(mapped_by_worker, a).result();
  }
  cfx::SharedArray<int> b(10);
  CHECK(pool.submit(mapped_by_worker, b).result() == first + 1);
  CHECK(pool.submit(mapped_by_worker, b).result() == first + 1);
}

TEST_CASE("map over a shared array: every chunk sees the same memory") {
  cfx::ProcessPoolExecutor pool({.max_workers = 2});
  cfx::SharedArray<std::uint64_t> a(1000);
  std::iota(a.begin(), a.end(), std::uint64_t{0});
  std::vector<cfx::SharedArray<std::uint64_t>> inputs(20, a);
  std::uint64_t total = 0;
  for (auto s : pool.map(sum_array, inputs, {.chunksize = 4})) total += s;
  CHECK(total == 20 * (999ull * 1000 / 2));
}

TEST_CASE("the thread backend passes handles as they are") {
  cfx::ThreadPoolExecutor pool({.max_workers = 2});
  cfx::SharedArray<int> a(100);
  pool.submit(fill_array, a, 3).result();
  CHECK(a[99] == 3);
}

TEST_CASE("shared handles leave no descriptor open and nothing in /dev/shm") {
  auto shm = dev_shm();
  auto fds = open_fd_count();
  {
    cfx::ProcessPoolExecutor pool(
        {.max_workers = 2, .start_method = cfx::test::pool_fork_or_spawn()});
    cfx::SharedArray<int> a(1 << 20);
    pool.submit(fill_array, a, 1).result();
    auto made = pool.submit(make_iota, 10).result();
    CHECK(made[9] == 9);
    CHECK(pool.submit(echo_array, made).result() == made);
    CHECK(dev_shm() == shm);
  }
  CHECK(open_fd_count() == fds);
  CHECK(dev_shm() == shm);
}

TEST_CASE("a handle inside a value that cannot carry descriptors is refused clearly") {
  nlohmann::json j;
  cfx::SharedArray<int> a(4);
  CHECK_THROWS_AS(j = a, cfx::SerializationError);
}

TEST_CASE("get_lock() guards an array across Process children of both start methods") {
  cfx::SharedArray<std::int64_t> a(1);
  cfx::Process p(cfx::ProcessOptions{.start_method = cfx::StartMethod::spawn}, locked_increments, a,
                 20000);
  cfx::Process q(cfx::ProcessOptions{.start_method = cfx::StartMethod::fork}, locked_increments, a,
                 20000);
  p.start();
  q.start();
  locked_increments(a, 20000);
  p.join();
  q.join();
  CHECK(p.exitcode() == 0);
  CHECK(q.exitcode() == 0);
  CHECK(a[0] == 60000);
  cfx::SharedValue<int> v(0);
  CHECK_FALSE(v.get_lock() == a.get_lock());
  CHECK(v.get_lock() == v.get_lock());
}

TEST_CASE("synchronisation handles travel to pool workers as the same object") {
  for (auto method : cfx::test::pool_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessPoolExecutor pool({.max_workers = 1, .start_method = method});
    cfx::Event e;
    pool.submit(set_event, e).result();
    CHECK(e.is_set());
    cfx::Lock l;
    CHECK(pool.submit(lock_is_free, l).result());
    std::lock_guard held(l);
    CHECK_FALSE(pool.submit(lock_is_free, l).result());
  }
}
