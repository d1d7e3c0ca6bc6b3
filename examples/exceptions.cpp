// exceptions: what a caller catches when a task fails, on threads and on processes.
//
// The same five failing tasks run on both backends. On the thread backend an exception
// comes back as the very object the task threw. On the process backend it is rebuilt by
// type: standard types and types registered with CFX_EXCEPTION come back as themselves,
// anything else as cfx::RemoteError; each carries the remote context (task, worker pid,
// stack) as a nested cfx::RemoteError, as Python chains the remote traceback.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include <cfx/cfx.hpp>

/// A user error type, registered: the process backend rethrows it as QuotaExceeded.
struct QuotaExceeded : std::runtime_error {
  explicit QuotaExceeded(const std::string& what) : std::runtime_error(what) {}
};
CFX_EXCEPTION(QuotaExceeded);

/// Not registered: from a worker process it comes back as cfx::RemoteError.
struct DiskFull : std::runtime_error {
  explicit DiskFull(const std::string& what) : std::runtime_error(what) {}
};

int parse_count(std::string text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
    throw std::invalid_argument("'" + text + "' is not a count");
  return std::stoi(text);
}
CFX_TASK(parse_count);

int charge(int cents) {
  throw QuotaExceeded("monthly quota exceeded by " + std::to_string(cents));
}
CFX_TASK(charge);

int save(std::string name) {
  throw DiskFull("no space left for " + name);
}
CFX_TASK(save);

int crash(int) {
  std::abort();
}
CFX_TASK(crash);

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
CFX_TASK(sleep_ms);

namespace {

/// Where the exception was raised: the nested remote context, if there is one.
void print_context(const std::exception& e) {
  try {
    std::rethrow_if_nested(e);
    std::puts("      raised in this process (no remote context)");
  } catch (const cfx::RemoteError& ctx) {
    auto frames = std::count(ctx.stack_trace().begin(), ctx.stack_trace().end(), '\n');
    std::printf("      remote context: task '%s', worker pid %d, stack trace of %td frames\n",
                ctx.task().c_str(), ctx.pid(), frames);
  }
}

/// Waits for `f` and prints what a caller's catch clauses would see.
template <class T>
void report(const char* label, const cfx::Future<T>& f) {
  std::printf("  %-16s -> ", label);
  try {
    f.result();
    std::puts("no exception");
    return;
  } catch (const QuotaExceeded& e) {
    std::printf("caught QuotaExceeded: %s\n", e.what());
    print_context(e);
  } catch (const DiskFull& e) {
    std::printf("caught DiskFull: %s\n", e.what());
    print_context(e);
  } catch (const std::invalid_argument& e) {
    std::printf("caught std::invalid_argument: %s\n", e.what());
    print_context(e);
  } catch (const cfx::RemoteError& e) {
    std::printf("caught cfx::RemoteError: %s\n", e.what());
    print_context(e);
  } catch (const cfx::WorkerCrashed& e) {
    std::printf("caught cfx::WorkerCrashed: %s\n", e.what());
  }
}

void run_cases(cfx::Executor& ex) {
  std::printf("%s backend:\n", std::string(ex.backend()).c_str());
  report("invalid_argument", ex.submit(parse_count, std::string("12x")));
  report("registered", ex.submit(charge, 250));
  report("unregistered", ex.submit(save, std::string("report.pdf")));
  if (ex.backend() == "process")
    report("crash", ex.submit(crash, 0));
  else
    std::printf("  %-16s -> skipped: std::abort() in a thread ends the whole program\n", "crash");

  // result(timeout) gives up waiting; the task itself keeps running.
  auto slow = ex.submit(sleep_ms, 300);
  try {
    slow.result(std::chrono::milliseconds(20));
  } catch (const cfx::TimeoutError& e) {
    std::printf("  %-16s -> caught cfx::TimeoutError: %s; later result() = %d\n", "result(20ms)",
                e.what(), slow.result());
  }
}

/// ProcessPoolOptions::task_timeout kills a task that runs too long, with its worker.
void task_timeout() {
  cfx::ProcessPoolExecutor pool({.max_workers = 1, .task_timeout = std::chrono::seconds(1)});
  std::puts("process backend with task_timeout = 1s:");
  try {
    pool.submit(sleep_ms, 60'000).result();
  } catch (const cfx::TimeoutError& e) {
    std::printf("  %-16s -> caught cfx::TimeoutError: %s\n", "sleep_ms(60000)", e.what());
  }
  std::printf("  %-16s -> %d (a fresh worker took over)\n", "sleep_ms(1)",
              pool.submit(sleep_ms, 1).result());
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // in a worker process: serve tasks and exit here
  {
    cfx::ThreadPoolExecutor threads({.max_workers = 2});
    run_cases(threads);
  }
  {
    cfx::ProcessPoolExecutor processes({.max_workers = 2});
    run_cases(processes);
  }
  task_timeout();
}
