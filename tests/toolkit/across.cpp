// Queue, SharedDict and Barrier between the parent and pool workers of both start methods
// (spawn only under ASan, support/start_methods.hpp), and between cfx::Process children: the
// handles cross as descriptors (handles.cpp tests the transport itself; queue.cpp, dict.cpp and
// sync.cpp test the objects between fork()ed children and threads).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>

#include "support/start_methods.hpp"

using cfx::test::name;

namespace {

void put_range(cfx::Queue<std::int64_t> q, std::int64_t from, std::int64_t to) {
  for (std::int64_t i = from; i < to; ++i) q.put(i);
}
CFX_TASK(put_range);

std::int64_t sum_of(cfx::Queue<std::string> q, int n) {
  std::int64_t sum = 0;
  for (int i = 0; i < n; ++i) sum += std::stoll(q.get(std::chrono::seconds(30)));
  return sum;
}
CFX_TASK(sum_of);

void count_words(cfx::SharedDict<std::string, int> d, std::vector<std::string> words) {
  for (const auto& w : words) d.update(w, [](std::optional<int> v) { return v.value_or(0) + 1; });
}
CFX_TASK(count_words);

std::size_t wait_at(cfx::Barrier b) {
  return b.wait(std::chrono::seconds(30));
}
CFX_TASK(wait_at);

}  // namespace

TEST_CASE("a Queue carries items from pool workers to the parent and back") {
  for (auto method : cfx::test::pool_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessPoolExecutor pool({.max_workers = 2, .start_method = method});
    cfx::Queue<std::int64_t> q(0);
    auto a = pool.submit(put_range, q, std::int64_t{0}, std::int64_t{500});
    auto b = pool.submit(put_range, q, std::int64_t{500}, std::int64_t{1000});
    std::int64_t sum = 0;
    for (int i = 0; i < 1000; ++i) sum += q.get(std::chrono::seconds(30));
    a.result();
    b.result();
    CHECK(sum == 999 * 1000 / 2);
    CHECK(q.qsize() == 0);

    cfx::Queue<std::string> strings(4);  // bounded: the parent waits for the worker to drain
    auto total = pool.submit(sum_of, strings, 100);
    for (int i = 1; i <= 100; ++i) strings.put(std::to_string(i), std::chrono::seconds(30));
    CHECK(total.result() == 5050);
  }
}

TEST_CASE("SharedDict::update is atomic per key across pool workers") {
  for (auto method : cfx::test::pool_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessPoolExecutor pool({.max_workers = 2, .start_method = method});
    cfx::SharedDict<std::string, int> d;
    std::vector<std::string> words(2000, "same");
    words.push_back("once");
    std::vector<cfx::Future<void>> fs;
    for (int i = 0; i < 4; ++i) fs.push_back(pool.submit(count_words, d, words));
    for (auto& f : fs) f.result();
    CHECK(d.get("same") == 8000);
    CHECK(d.get("once") == 4);
    CHECK(d.size() == 2);
  }
}

TEST_CASE("a Barrier releases the parent and two workers together") {
  for (auto method : cfx::test::pool_start_methods()) {
    CAPTURE(name(method));
    cfx::ProcessPoolExecutor pool({.max_workers = 2, .start_method = method});
    cfx::Barrier b(3);
    auto x = pool.submit(wait_at, b);
    auto y = pool.submit(wait_at, b);
    std::size_t mine = b.wait(std::chrono::seconds(30));
    std::vector<std::size_t> indices{mine, x.result(), y.result()};
    std::sort(indices.begin(), indices.end());
    CHECK(indices == std::vector<std::size_t>{0, 1, 2});
  }
}

TEST_CASE("Process children share a Queue and a SharedDict with the parent") {
  for (auto method : cfx::test::process_start_methods()) {
    CAPTURE(name(method));
    cfx::Queue<std::int64_t> q(0);
    cfx::SharedDict<std::string, int> d;
    cfx::Process producer(cfx::ProcessOptions{.start_method = method}, put_range, q,
                          std::int64_t{1}, std::int64_t{101});
    cfx::Process counter(cfx::ProcessOptions{.start_method = method}, count_words, d,
                         std::vector<std::string>(50, "w"));
    producer.start();
    counter.start();
    std::int64_t sum = 0;
    for (int i = 0; i < 100; ++i) sum += q.get(std::chrono::seconds(30));
    producer.join();
    counter.join();
    CHECK(sum == 5050);
    CHECK(producer.exitcode() == 0);
    CHECK(counter.exitcode() == 0);
    CHECK(d.get("w") == 50);
  }
}
