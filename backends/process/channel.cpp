#include "backends/process/channel.hpp"

#include <unistd.h>

#include <cstring>
#include <string>

#include "cfx/errors.hpp"
#include "lib/remote_exception.hpp"

namespace cfx::detail {

std::size_t begin_frame(Writer& w, FrameKind kind) {
  auto at = w.size();
  w.put(std::uint64_t{0});
  w.put(kind);
  return at;
}

void finish_frame(Writer& w, std::size_t at) {
  std::uint64_t n = w.size() - at - sizeof(std::uint64_t);
  std::memcpy(w.buffer().data() + at, &n, sizeof(n));
}

void write_call_frame(std::vector<char>& out, const RemoteTask& task) {
  Writer w(out);
  auto at = begin_frame(w, FrameKind::call);
  w.put(task.count);
  w.put_string(task.task->name);
  w.put_bytes(task.args.data(), task.args.size());
  finish_frame(w, at);
}

Reply read_reply(Reader& frame) {
  Reply reply;
  reply.count = frame.get<std::uint32_t>();
  auto n = frame.get<std::uint64_t>();
  reply.results = Reader(frame.take(n), n);
  if (frame.get<std::uint8_t>() != 0) reply.error = decode_exception(frame);
  return reply;
}

/// A process a task forked that returns from the task (or throws out of it) is not the
/// worker: it must not answer on the worker's channel, where its reply would be taken for
/// the worker's and shift every later result by one. It leaves at once, flushing nothing.
void leave_if_forked(int server) {
  if (::getpid() != server) ::_exit(0);
}

void answer_call(Reader& call, std::vector<char>& out, int server) {
  auto count = call.get<std::uint32_t>();
  std::string name(call.get_string());
  Writer reply(out);
  auto at = begin_frame(reply, FrameKind::result);
  auto count_at = reply.size();
  reply.put(std::uint32_t{0});
  reply.put(std::uint64_t{0});
  auto results_at = reply.size();
  std::vector<char> failure;
  Writer failed(failure);
  std::uint32_t done = 0;
  const TaskEntry* task = find_task(name);
  try {
    if (!task)
      throw Error("task '" + name +
                  "' is not registered in the worker process: register it with CFX_TASK at "
                  "namespace scope in a file linked into this program");
    for (; done < count; ++done) {
      auto mark = reply.size();
      try {
        task->run(*task, call, reply);
        leave_if_forked(server);
      } catch (...) {
        leave_if_forked(server);
        out.resize(mark);  // drop a partly written result
        throw;
      }
    }
  } catch (...) {
    encode_current_exception(failed, name);
  }
  std::uint64_t results = reply.size() - results_at;
  std::memcpy(out.data() + count_at, &done, sizeof(done));
  std::memcpy(out.data() + count_at + sizeof(done), &results, sizeof(results));
  reply.put(static_cast<std::uint8_t>(failure.empty() ? 0 : 1));
  reply.put_bytes(failure.data(), failure.size());
  finish_frame(reply, at);
}

std::span<char> FrameSplitter::space() {
  if (begin_ > 0) {  // move the partial frame to the front
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  std::size_t want = end_ + 4096;  // room for a useful read
  if (end_ >= sizeof(std::uint64_t)) {
    std::uint64_t len;
    std::memcpy(&len, buffer_.data(), sizeof(len));
    want = std::max<std::size_t>(want, sizeof(len) + len);
  }
  if (buffer_.size() < want) buffer_.resize(std::max(want, buffer_.size() * 2));
  return {buffer_.data() + end_, buffer_.size() - end_};
}

std::optional<Reader> FrameSplitter::next() {
  std::uint64_t len;
  if (end_ - begin_ < sizeof(len)) return std::nullopt;
  std::memcpy(&len, buffer_.data() + begin_, sizeof(len));
  if (end_ - begin_ - sizeof(len) < len) return std::nullopt;
  Reader frame(buffer_.data() + begin_ + sizeof(len), len);
  begin_ += sizeof(len) + len;
  return frame;
}

}  // namespace cfx::detail
