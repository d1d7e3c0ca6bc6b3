// A program that forgets cfx::init: its pool must fail with BrokenProcessPool naming
// cfx::init within seconds instead of hanging or running main() twice. Exits 0 when it does.
#include <chrono>
#include <cstdio>
#include <string>

#include <cfx/cfx.hpp>

int one() {
  return 1;
}
CFX_TASK(one);

int main() {
  auto start = std::chrono::steady_clock::now();
  cfx::ProcessPoolExecutor ex({.max_workers = 1});
  try {
    (void)ex.submit(one).result();
    std::puts("FAIL: a task ran although main() never called cfx::init");
    return 1;
  } catch (const cfx::BrokenProcessPool& e) {
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bool names_init = std::string(e.what()).find("cfx::init") != std::string::npos;
    std::printf("%s: %s (%.2f s)\n", names_init && secs < 10 ? "OK" : "FAIL", e.what(), secs);
    return names_init && secs < 10 ? 0 : 1;
  }
}
