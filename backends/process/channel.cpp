#include "backends/process/channel.hpp"

#include <cstring>

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
