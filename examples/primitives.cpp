// primitives: the multiprocessing snippets, in C++ (docs/toolkit.md).
//
// Each part is one classic Python program: a Value that two cfx::Process children bring to
// exactly 200,000 under its get_lock(), an Array scaled under its lock, a Pipe to a child, a
// Barrier that several processes meet at, an Event that releases waiting processes, a Queue
// between two producers and a consumer, and the dict of a Manager that three processes count
// words into.
//
// The cfx::Process children run registered tasks, started by spawn (cfx's default), which is
// why main() calls cfx::init first. The later parts use plain fork() children, which inherit
// every object and may run lambdas; the objects are the same when passed to cfx::Process or
// to pool tasks.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <tuple>

#include <cfx/cfx.hpp>

namespace {

/// Runs fn() in a fork()ed child, which exits with its result.
template <class Fn>
pid_t start_child(Fn fn) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int status = fn();
    std::fflush(nullptr);  // _exit skips stdio's buffers
    ::_exit(status);
  }
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  return pid;
}

bool join_all(const std::vector<pid_t>& children) {
  bool ok = true;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  return ok;
}

// Python:
//   def add(counter):
//       for _ in range(100_000):
//           with counter.get_lock():
//               counter.value += 1
//   counter = Value('l', 0)
//   ps = [Process(target=add, args=(counter,)) for _ in range(2)]
//   for p in ps: p.start()
//   for p in ps: p.join()
//   print(counter.value)   # 200000
void add_under_lock(cfx::SharedValue<long> counter, int times) {
  auto lock = counter.get_lock();
  for (int i = 0; i < times; ++i) {
    std::lock_guard guard(lock);  // `with counter.get_lock():`
    // A read and a write: a race without the lock (fetch_add would need none).
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
}

bool lock_guarded_counter() {
  cfx::SharedValue<long> counter(0);
  cfx::Process a(add_under_lock, counter, 100'000), b(add_under_lock, counter, 100'000);
  a.start();
  b.start();
  a.join();
  b.join();
  std::printf("Value + get_lock(): two processes, 100,000 guarded increments each: %ld\n",
              counter.load());
  return a.exitcode() == 0 && b.exitcode() == 0 && counter.load() == 200'000;
}

// Python:
//   def scale(arr, k):
//       with arr.get_lock():
//           for i in range(len(arr)): arr[i] *= k
//   arr = Array('d', [1.0, 2.0, 3.0]); p = Process(target=scale, args=(arr, 10)); ...
void scale(cfx::SharedArray<double> arr, double k) {
  auto lock = arr.get_lock();
  std::lock_guard guard(lock);
  for (double& x : arr) x *= k;
}

bool array_scaled() {
  std::vector<double> start{1.0, 2.0, 3.0};
  auto arr = cfx::SharedArray<double>::from(start);
  cfx::Process p(scale, arr, 10.0);
  p.start();
  p.join();
  std::printf("Array + get_lock(): scaled in a child: %g %g %g\n", arr[0], arr[1], arr[2]);
  return p.exitcode() == 0 && arr[2] == 30.0;
}

// Python:
//   def f(conn):
//       conn.send([42, None, 'hello']); conn.close()
//   parent_conn, child_conn = Pipe()
//   p = Process(target=f, args=(child_conn,)); p.start()
//   print(parent_conn.recv()); p.join()
using Greeting = std::tuple<int, std::optional<int>, std::string>;
void greet(cfx::Connection<Greeting> conn) {
  conn.send({42, std::nullopt, "hello"});
  conn.close();
}

bool pipe_to_child() {
  auto [parent_conn, child_conn] = cfx::Pipe<Greeting>();
  cfx::Process p(greet, child_conn);
  p.start();
  child_conn.close();  // the child holds its own copy now
  auto [n, none, text] = parent_conn.recv();
  p.join();
  std::printf("Pipe: received [%d, %s, '%s'] from a child\n", n, none ? "?" : "None", text.c_str());
  return p.exitcode() == 0 && n == 42 && text == "hello";
}

// Python:
//   def work(barrier, i):
//       ...phase one...
//       n = barrier.wait()        # everyone finishes phase one before anyone starts two
//       ...phase two...
bool barrier_phases() {
  constexpr int parties = 3;
  cfx::Barrier barrier(parties);
  cfx::Lock print_lock;
  cfx::Event phase_two;  // set by whoever passes first

  auto work = [&] {
    barrier.wait();  // phase one done everywhere
    phase_two.set();
    std::size_t index = barrier.wait();  // and phase two
    if (index == 0) {
      std::lock_guard guard(print_lock);
      std::printf("Barrier: %d processes met twice (phase two seen: %s)\n", parties,
                  phase_two.is_set() ? "yes" : "no");
    }
    return 0;
  };
  std::vector<pid_t> children;
  for (int i = 0; i < parties - 1; ++i) children.push_back(start_child(work));
  work();
  return join_all(children);
}

// Python:
//   def waiter(event, i):
//       event.wait()
//       ...
//   event = Event(); start waiters; ...; event.set()
bool event_release() {
  cfx::Event go;
  cfx::Semaphore started(0);
  std::vector<pid_t> children;
  for (int i = 0; i < 3; ++i) {
    children.push_back(start_child([&] {
      started.release();
      return go.wait(std::chrono::seconds(60)) ? 0 : 1;
    }));
  }
  for (int i = 0; i < 3; ++i) started.acquire();
  std::printf("Event: 3 processes waiting, event set: %s\n", go.is_set() ? "yes" : "no");
  go.set();
  bool ok = join_all(children);
  std::printf("Event: set; every waiter went on: %s\n", ok ? "yes" : "no");
  return ok;
}

// Python:
//   def producer(q, first):
//       for i in range(first, first + 1000): q.put(i * i)
//       q.put(None)                          # this producer is done
//   q = Queue(); start two producers
//   done, total = 0, 0
//   while done < 2:
//       x = q.get()
//       if x is None: done += 1
//       else: total += x
bool queue_producers() {
  cfx::Queue<long> q(100);  // bounded: producers wait while 100 items wait
  auto producer = [&](long first) {
    return [&q, first] {
      for (long i = first; i < first + 1000; ++i) q.put(i * i);
      q.put(-1);  // the sentinel (Python's None)
      return 0;
    };
  };
  std::vector<pid_t> children{start_child(producer(0)), start_child(producer(1000))};
  long total = 0;
  for (int done = 0; done < 2;) {
    long x = q.get();
    if (x < 0) {
      ++done;
    } else {
      total += x;
    }
  }
  std::printf("Queue: two producers, 2,000 squares in all: sum = %ld\n", total);
  return join_all(children);
}

// Python:
//   def count(d, words):
//       for w in words:
//           with lock: d[w] = d.get(w, 0) + 1   # Manager dicts need the lock for this
//   d = Manager().dict(); start three workers; ...; dict(d)
bool manager_dict() {
  cfx::SharedDict<std::string, int> counts;
  auto count = [&](std::vector<std::string> words) {
    return [counts, words]() mutable {
      for (const auto& w : words)  // atomic per key: no lock of our own
        counts.update(w, [](std::optional<int> n) { return n.value_or(0) + 1; });
      return 0;
    };
  };
  std::vector<pid_t> children{start_child(count({"apple", "pear", "apple"})),
                              start_child(count({"pear", "fig"})), start_child(count({"apple"}))};
  bool ok = join_all(children);
  auto items = counts.items();
  std::sort(items.begin(), items.end());
  std::printf("Manager dict: %zu keys:", counts.size());
  for (const auto& [word, n] : items) std::printf(" %s=%d", word.c_str(), n);
  std::printf("\n");
  return ok;
}

}  // namespace

CFX_TASK(add_under_lock);
CFX_TASK(scale);
CFX_TASK(greet);

int main(int argc, char** argv) {
  cfx::init(argc, argv);  // a spawned child runs its task here and exits
  bool ok = lock_guarded_counter();
  ok = array_scaled() && ok;
  ok = pipe_to_child() && ok;
  ok = barrier_phases() && ok;
  ok = event_release() && ok;
  ok = queue_producers() && ok;
  ok = manager_dict() && ok;
  return ok ? 0 : 1;
}
