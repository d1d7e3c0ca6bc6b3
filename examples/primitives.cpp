// primitives: the multiprocessing snippets, in C++ (docs/toolkit.md).
//
// Each part is one classic Python program: a Lock-guarded counter that two processes bring
// to exactly 200,000, a Barrier that several processes meet at, an Event that releases
// waiting processes. The processes here are plain fork() children, which inherit every
// object; the objects are the same when passed to cfx::Process or to pool tasks.
//
// Then a Queue between two producers and a consumer, and the dict of a Manager that three
// processes count words into.
//
// TODO(f9-handles): Value/Array with get_lock() and a Pipe, marked below; and cfx::Process in
// place of fork() (which also runs the children by spawn, as Python's default does).
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <cfx/queue.hpp>
#include <cfx/shared_dict.hpp>
#include <cfx/sync.hpp>

namespace {

/// Runs fn() in a fork()ed child, which exits with its result.
/// TODO(f9-handles): cfx::Process(task, args...).start() / join().
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
//   def add(counter, lock):
//       for _ in range(100_000):
//           with lock:
//               counter.value += 1
//   counter, lock = Value('l', 0, lock=False), Lock()
//   ps = [Process(target=add, args=(counter, lock)) for _ in range(2)]
//   for p in ps: p.start()
//   for p in ps: p.join()
//   print(counter.value)   # 200000
bool lock_guarded_counter() {
  // TODO(f9-handles): cfx::SharedValue<long> counter(0); (a plain shared mapping until then)
  void* memory =
      ::mmap(nullptr, sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return false;
  long& counter = *static_cast<long*>(memory);
  counter = 0;
  cfx::Lock lock;

  auto add = [&] {
    for (int i = 0; i < 100'000; ++i) {
      std::lock_guard guard(lock);  // `with lock:`
      ++counter;                    // a read, an add and a write: a race without the lock
    }
    return 0;
  };
  bool ok = join_all({start_child(add), start_child(add)});
  std::printf("Lock: two processes, 100,000 guarded increments each: counter = %ld\n", counter);
  ::munmap(memory, sizeof(long));
  return ok;
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

// TODO(f9-handles): Value/Array with get_lock():
//   arr = Array('d', 10); with arr.get_lock(): arr[0] += 1
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

// TODO(f9-handles): Pipe: parent_conn, child_conn = Pipe(); child_conn.send([42, None]);
//   parent_conn.recv()

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

int main() {
  bool ok = lock_guarded_counter();
  ok = barrier_phases() && ok;
  ok = event_release() && ok;
  ok = queue_producers() && ok;
  ok = manager_dict() && ok;
  return ok ? 0 : 1;
}
