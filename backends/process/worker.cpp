// The worker loop: plain blocking reads and writes (no Asio, so it also runs in a child
// forked from the pool's I/O thread). Calls run in the order received; each reply is written
// before the next call starts, so a crash never takes a finished call's result with it, and
// the started-calls counter tells the parent which call the crash interrupted.
#include "backends/process/worker.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cfx/detail/remote_task.hpp"
#include "cfx/errors.hpp"
#include "lib/stack_trace.hpp"

namespace cfx::detail {
namespace {

std::atomic<bool> worker_process{false};

bool write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t k = ::write(fd, data, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

void reply_to_call(Reader& call, Writer& reply) {
  auto count = call.get<std::uint32_t>();
  std::string name(call.get_string());
  auto at = begin_frame(reply, FrameKind::result);
  const TaskEntry* task = find_task(name);
  if (task) {
    task->serve(task->address, *task, call, count, reply);
  } else {
    reply.put(std::uint32_t{0});
    reply.put(std::uint8_t{1});
    try {
      throw Error("task '" + name +
                  "' is not registered in the worker process: register it with CFX_TASK at "
                  "namespace scope in a file linked into this program");
    } catch (...) {
      encode_current_exception(reply, name);
    }
  }
  finish_frame(reply, at);
}

}  // namespace

void mark_worker_process() noexcept {
  worker_process.store(true);
}

bool worker_process_flag() noexcept {
  return worker_process.load();
}

int serve_worker(int in_fd, int out_fd, int counter_fd) {
  mark_worker_process();
  ::signal(SIGPIPE, SIG_IGN);  // a dead parent shows as EPIPE, and we exit
  ::signal(SIGINT, SIG_IGN);   // Ctrl-C is the parent's to handle
  capture_throw_stack_traces();
  void* page =
      ::mmap(nullptr, sizeof(std::uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, counter_fd, 0);
  if (page == MAP_FAILED) return 1;
  ::close(counter_fd);
  auto* started = static_cast<std::atomic<std::uint64_t>*>(page);

  std::vector<char> out;
  Writer reply(out);
  auto hello = begin_frame(reply, FrameKind::hello);
  reply.put(static_cast<std::int32_t>(::getpid()));
  finish_frame(reply, hello);
  if (!write_all(out_fd, out.data(), out.size())) return 1;
  out.clear();

  std::vector<char> in(1 << 16);
  std::size_t begin = 0, end = 0;
  for (;;) {
    while (end - begin >= sizeof(std::uint64_t)) {
      std::uint64_t len;
      std::memcpy(&len, in.data() + begin, sizeof(len));
      if (end - begin - sizeof(len) < len) {
        if (in.size() < len + sizeof(len)) in.resize(len + sizeof(len));  // a large frame
        break;
      }
      Reader frame(in.data() + begin + sizeof(len), len);
      if (frame.get<FrameKind>() == FrameKind::call) {
        started->fetch_add(1, std::memory_order_relaxed);
        reply_to_call(frame, reply);
        if (!write_all(out_fd, out.data(), out.size())) return 1;
        out.clear();
      }
      begin += sizeof(len) + len;
    }
    if (begin > 0) {
      std::memmove(in.data(), in.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    if (end == in.size()) in.resize(in.size() * 2);
    ssize_t n = ::read(in_fd, in.data() + end, in.size() - end);
    if (n == 0) return 0;  // the parent closed the channel: shut down
    if (n < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    end += static_cast<std::size_t>(n);
  }
}

}  // namespace cfx::detail
