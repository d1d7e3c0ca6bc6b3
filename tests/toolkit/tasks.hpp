// Tasks and helpers shared by the toolkit tests (tests/toolkit/*.cpp) and toolkit_helper.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>

#include <cfx/cfx.hpp>
#include <cfx/detail/handle_json.hpp>

#include "support/start_methods.hpp"

namespace toolkit_test {

inline std::uint64_t sum_array(cfx::SharedArray<std::uint64_t> a) {
  return std::accumulate(a.begin(), a.end(), std::uint64_t{0});
}
inline void fill_array(cfx::SharedArray<int> a, int value) {
  for (auto& x : a) x = value;
}
/// How many blocks this worker has mapped from descriptors it was sent.
inline std::uint64_t mapped_by_worker(cfx::SharedArray<int> a) {
  if (a.size() == 0) throw std::logic_error("empty array");
  return cfx::detail::blocks_mapped();
}
inline cfx::SharedArray<int> make_iota(int n) {
  auto a = cfx::SharedArray<int>(static_cast<std::size_t>(n));
  std::iota(a.begin(), a.end(), 0);
  return a;
}
inline cfx::SharedArray<int> echo_array(cfx::SharedArray<int> a) {
  return a;
}
inline void add_many(cfx::SharedValue<std::int64_t> v, int n) {
  for (int i = 0; i < n; ++i) v.fetch_add(1);
}
/// Answers each string with itself until the other end is gone.
inline void echo_strings(cfx::Connection<std::string> c) {
  for (;;) {
    std::string s;
    try {
      s = c.recv();
    } catch (const cfx::Error&) {
      return;
    }
    c.send(s);
  }
}
inline void exit_ok() {}
inline void throw_error() {
  throw std::runtime_error("thrown on purpose");
}
/// Says it is running, then waits for a message (throws at EOF: exit code 1).
inline void wait_on(cfx::Connection<int> c) {
  c.send(1);
  c.recv();
}
/// Writes `value` into the array, then tells the parent.
inline void write_and_tell(cfx::SharedArray<int> a, int value, cfx::Connection<int> c) {
  for (auto& x : a) x = value;
  c.send(value);
}

/// `n` increments of a[0], each under the array's lock.
inline void locked_increments(cfx::SharedArray<std::int64_t> a, int n) {
  auto lock = a.get_lock();
  for (int i = 0; i < n; ++i) {
    std::lock_guard held(lock);
    a[0] = a[0] + 1;
  }
}
inline void set_event(cfx::Event e) {
  e.set();
}
inline bool lock_is_free(cfx::Lock l) {
  if (!l.try_lock()) return false;
  l.unlock();
  return true;
}

/// The names in /dev/shm.
inline std::set<std::string> dev_shm() {
  std::set<std::string> names;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d)) names.insert(e->d_name);
    ::closedir(d);
  }
  return names;
}

inline std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

}  // namespace toolkit_test
