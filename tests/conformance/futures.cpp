#include <doctest/doctest.h>

#include <cfx/cfx.hpp>

TEST_CASE("smoke") {
  cfx::ThreadPoolExecutor ex({.max_workers = 2});
  auto f = ex.submit([](int a, int b) { return a + b; }, 2, 3);
  CHECK(f.result() == 5);
  std::vector<int> in{1, 2, 3, 4, 5};
  auto r = ex.map([](int x) { return x * x; }, in, {.chunksize = 2}).to_vector();
  CHECK(r == std::vector<int>{1, 4, 9, 16, 25});
  std::vector<cfx::Future<int>> fs;
  for (int i = 0; i < 10; ++i) fs.push_back(ex.submit([i] { return i; }));
  int n = 0;
  for (cfx::Future<int>& g : cfx::as_completed(fs)) n += g.result();
  CHECK(n == 45);
  auto [done, not_done] = cfx::wait(fs);
  CHECK(done.size() == 10);
  CHECK(not_done.empty());
}

namespace {
int twice(int x) { return 2 * x; }
CFX_TASK(twice);
}  // namespace

TEST_CASE("registry") {
  auto* e = cfx::detail::find_task(reinterpret_cast<const void*>(&twice));
  REQUIRE(e != nullptr);
  CHECK(e->name == "twice");
}
