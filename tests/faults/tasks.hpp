// Tasks of the fault-injection tests, shared by faults_tests and orphan_helper: hostile tasks
// (crashes, spins, forged replies on the worker's reply pipe) and tasks that start descendants
// and report their process ids in a file. No doctest here: orphan_helper includes it too.
//
// Process ids travel through files, not results, so that a task that then crashes, hangs or is
// killed has still reported them: each report is one write() of one line with O_APPEND, done
// before the fault, so the line is complete once the test sees the fault. read_pids reads them.
//
// Forged replies are written as raw bytes in the channel's frame format (API facts of issue 8):
//   [u64 length of the rest][u8 kind][u64 call id][body]   kinds: call 1, result 2, hello 3,
//   skipped 4; calls are numbered per worker from 1; hello has id 0. A result body is
//   [u32 count][u64 n][n bytes of results][u8 failed][exception if failed].
// They do not use backends/process/channel.hpp on purpose: the tests must not depend on how
// that header spells the format, only on the bytes.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <cfx/cfx.hpp>

#include "support/gate.hpp"

namespace faults {

/// The worker's end of its reply pipe (issue 8: calls on fd 3, replies on fd 4).
inline constexpr int kReplyFd = 4;

inline constexpr std::uint8_t kCall = 1;
inline constexpr std::uint8_t kResult = 2;
inline constexpr std::uint8_t kHello = 3;

/// Writes all of `bytes` to `fd`; false on an error other than EINTR.
inline bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t k = ::write(fd, bytes.data(), bytes.size());
    if (k < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(k));
  }
  return true;
}

/// Appends `line` and a newline to the file at `path` in one write (O_APPEND).
inline void append_line(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  write_all(fd, line + "\n");
  ::close(fd);
}

/// Every integer in the file at `path`, in order (an absent file: none).
inline std::vector<int> read_pids(const std::string& path) {
  std::vector<int> pids;
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return pids;
  int pid;
  while (std::fscanf(f, "%d", &pid) == 1) pids.push_back(pid);
  std::fclose(f);
  return pids;
}

template <class T>
void put_raw(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

/// A frame header and body in the wire format above; `length` replaces the true length of the
/// rest when given (a lie about the size).
inline std::string frame(std::uint8_t kind, std::uint64_t id, std::string_view body,
                         std::optional<std::uint64_t> length = std::nullopt) {
  std::string out;
  put_raw(out, length.value_or(1 + 8 + body.size()));
  put_raw(out, kind);
  put_raw(out, id);
  out.append(body);
  return out;
}

/// The body of a result frame holding one int (ints travel raw: 4 bytes).
inline std::string int_result_body(int value) {
  std::string body;
  put_raw(body, std::uint32_t{1});
  put_raw(body, std::uint64_t{sizeof(int)});
  put_raw(body, value);
  put_raw(body, std::uint8_t{0});
  return body;
}

// ---- tasks -----------------------------------------------------------------------------------

inline int add(int a, int b) {
  return a + b;
}

inline int get_pid() {
  return ::getpid();
}

/// Ends the worker process as `how` says: "segv", "abort", "exit0" (std::exit(0)), "exit3"
/// (std::exit(3)), "sigkill" (raise(SIGKILL)).
inline int crash(std::string how) {
  if (how == "segv") ::raise(SIGSEGV);
  if (how == "abort") std::abort();
  if (how == "exit0") std::exit(0);
  if (how == "exit3") std::exit(3);
  if (how == "sigkill") ::raise(SIGKILL);
  return -1;
}

/// Starts two processes that outlive the task unless someone kills them: a shell's background
/// `sleep 300`, and a fork of the worker that keeps the worker's channel descriptors (3 and 4)
/// open and waits forever. Appends "<worker pid> <sleep pid> <forked pid>" to `pid_file`.
inline void start_descendants(const std::string& pid_file) {
  int sleeper = -1;
  if (FILE* p = ::popen("sleep 300 </dev/null >/dev/null 2>&1 & echo $!", "r")) {
    if (std::fscanf(p, "%d", &sleeper) != 1) sleeper = -1;
    ::pclose(p);
  }
  pid_t forked = ::fork();
  if (forked == 0)
    for (;;) ::pause();  // keeps fds 3 and 4 of the worker open
  append_line(pid_file, std::to_string(::getpid()) + " " + std::to_string(sleeper) + " " +
                            std::to_string(forked));
}

/// start_descendants, then crash(how).
inline int descendants_then_crash(std::string pid_file, std::string how) {
  start_descendants(pid_file);
  return crash(how);
}

/// start_descendants, then notify(signal_path) and wait at the gate; returns 1.
inline int descendants_then_wait(std::string pid_file, std::string signal_path,
                                 std::string gate_path) {
  start_descendants(pid_file);
  cfx_test::notify(signal_path, 1);
  cfx_test::wait_gate(gate_path);
  return 1;
}

/// Burns CPU forever without a system call.
[[noreturn]] inline void spin() {
  volatile std::uint64_t counter = 0;
  for (;;) counter = counter + 1;
}

/// Appends this worker's pid to `pid_file`, notifies, then spins forever.
inline int report_then_spin(std::string pid_file, std::string signal_path) {
  append_line(pid_file, std::to_string(::getpid()));
  cfx_test::notify(signal_path, 1);
  spin();
}

/// As report_then_spin, with SIGTERM ignored first.
inline int ignore_sigterm_then_spin(std::string pid_file, std::string signal_path) {
  ::signal(SIGTERM, SIG_IGN);
  return report_then_spin(pid_file, signal_path);
}

/// start_descendants, notify, then spin forever.
inline int descendants_then_spin(std::string pid_file, std::string signal_path) {
  start_descendants(pid_file);
  cfx_test::notify(signal_path, 1);
  spin();
}

/// Blocks forever (an initializer or task that never returns).
inline void hang() {
  for (;;) ::pause();
}

inline std::string big_string(std::size_t n) {
  return std::string(n, 'r');
}

inline std::size_t string_size(std::string s) {
  return s.size();
}

/// Writes `n` bytes from a generator seeded with `seed` to the reply pipe; returns 0.
inline int write_random_reply_bytes(unsigned seed, int n) {
  std::mt19937 gen(seed);
  std::string bytes(static_cast<std::size_t>(n), '\0');
  for (auto& c : bytes) c = static_cast<char>(gen() & 0xff);
  write_all(kReplyFd, bytes);
  return 0;
}

/// Writes a frame header claiming `length` bytes, with `kind` and `id`, and nothing more, to the
/// reply pipe; returns 1 (whose real reply then follows the lie).
inline int write_header(std::uint64_t length, int kind, std::uint64_t id) {
  write_all(kReplyFd, frame(static_cast<std::uint8_t>(kind), id, {}, length));
  return 1;
}

/// Writes a well-formed result frame answering call `id` with `value`, then returns `then`.
inline int forge_result(std::uint64_t id, int value, int then) {
  write_all(kReplyFd, frame(kResult, id, int_result_body(value)));
  return then;
}

/// The worker's shared slot file, and where in it the reply mailbox lies: a small reply may
/// travel there instead of the pipe, as [u64 length of the frame][the frame].
inline constexpr int kSlotsFd = 5;
inline constexpr std::size_t kReplyMailbox = 12288, kSlotFileMapped = 16384;

/// Puts `frame_bytes` in the worker's reply mailbox with `length` as its length word, then
/// returns `then`.
inline int write_reply_mailbox(std::uint64_t length, std::string frame_bytes, int then) {
  void* page = ::mmap(nullptr, kSlotFileMapped, PROT_READ | PROT_WRITE, MAP_SHARED, kSlotsFd, 0);
  if (page == MAP_FAILED) return then;
  char* box = static_cast<char*>(page) + kReplyMailbox;
  std::memcpy(box + 8, frame_bytes.data(), std::min<std::size_t>(frame_bytes.size(), 4088));
  std::atomic_ref<std::uint64_t> word(*reinterpret_cast<std::uint64_t*>(box));
  word.store(length);
  ::munmap(page, kSlotFileMapped);
  return then;
}

/// The word of the worker's shared page that says a thread of the pool watches for replies
/// (slots::kWatchedWord): the worker then mails small replies and writes no wake frame.
inline constexpr std::size_t kWatchedMark = 516 * 8;
inline constexpr int kCallsFd = 3;

/// Starts a thread in the worker that outlives the call and writes the pool's watched mark
/// every 100 µs, over the pool's own. Returns 0.
inline int keep_marking_watched() {
  void* page = ::mmap(nullptr, kSlotFileMapped, PROT_READ | PROT_WRITE, MAP_SHARED, kSlotsFd, 0);
  if (page == MAP_FAILED) return -1;
  std::thread([page] {
    std::atomic_ref<std::uint64_t> mark(
        *reinterpret_cast<std::uint64_t*>(static_cast<char*>(page) + kWatchedMark));
    for (;;) {
      mark.store(1);
      const timespec pause{0, 100'000};  // a hostile thread's pace
      ::nanosleep(&pause, nullptr);
    }
  }).detach();
  return 0;
}

/// a + b after `ms` milliseconds of work.
inline int add_after_ms(int a, int b, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return a + b;
}

/// Waits until the pool has filled the worker's call pipe (the rest of its calls wait in an
/// async_write), says so on the Signal at `signal_path`, then waits forever. A pool that sent
/// no more calls behind this one (its window, from the calls' times on a loaded machine)
/// leaves the pipe short of full: after 2 s the task says so all the same.
inline int fill_calls_pipe_then_hang(std::string signal_path) {
  const int capacity = ::fcntl(kCallsFd, F_GETPIPE_SZ);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  int waiting = 0;
  // Full but for part of a page: the pool's write filled what room there was.
  while (::ioctl(kCallsFd, FIONREAD, &waiting) == 0 && waiting + 4096 < capacity &&
         std::chrono::steady_clock::now() < until)
    ::sched_yield();
  cfx_test::notify(signal_path, 1);
  for (;;) ::pause();
}

/// Starts a result frame for call `id` that claims a 64 MiB string result, writes 1 MiB of it,
/// then kills its own worker: the parent sees the channel end inside a frame.
inline int partial_result_then_die(std::uint64_t id) {
  constexpr std::uint64_t claimed = 64ull << 20;
  std::string body;
  put_raw(body, std::uint32_t{1});
  put_raw(body, claimed);
  std::string out = frame(kResult, id, body, 1 + 8 + body.size() + claimed + 1);
  out.append(1 << 20, 'x');
  write_all(kReplyFd, out);
  ::raise(SIGKILL);
  return 0;
}

}  // namespace faults

CFX_TASK_AS(&faults::add, "faults::add");
CFX_TASK_AS(&faults::get_pid, "faults::get_pid");
CFX_TASK_AS(&faults::crash, "faults::crash");
CFX_TASK_AS(&faults::descendants_then_crash, "faults::descendants_then_crash");
CFX_TASK_AS(&faults::descendants_then_wait, "faults::descendants_then_wait");
CFX_TASK_AS(&faults::report_then_spin, "faults::report_then_spin");
CFX_TASK_AS(&faults::ignore_sigterm_then_spin, "faults::ignore_sigterm_then_spin");
CFX_TASK_AS(&faults::descendants_then_spin, "faults::descendants_then_spin");
CFX_TASK_AS(&faults::hang, "faults::hang");
CFX_TASK_AS(&faults::big_string, "faults::big_string");
CFX_TASK_AS(&faults::string_size, "faults::string_size");
CFX_TASK_AS(&faults::write_random_reply_bytes, "faults::write_random_reply_bytes");
CFX_TASK_AS(&faults::write_header, "faults::write_header");
CFX_TASK_AS(&faults::forge_result, "faults::forge_result");
CFX_TASK_AS(&faults::write_reply_mailbox, "faults::write_reply_mailbox");
CFX_TASK_AS(&faults::partial_result_then_die, "faults::partial_result_then_die");
CFX_TASK_AS(&faults::keep_marking_watched, "faults::keep_marking_watched");
CFX_TASK_AS(&faults::add_after_ms, "faults::add_after_ms");
CFX_TASK_AS(&faults::fill_calls_pipe_then_hang, "faults::fill_calls_pipe_then_hang");
