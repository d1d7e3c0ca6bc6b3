#include "backends/process/channel.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include "cfx/errors.hpp"
#include "lib/remote_exception.hpp"

namespace cfx::detail {
namespace {

// A frame's buffer starts with room for a read this large, and grows ahead of the bytes
// received by at most as much as was received already (or this much, early on).
constexpr std::size_t kMinRead = 1 << 16;
// The buffer grows once the room left for a read is below this (or below what the frame still
// needs), so reads are never tiny and growths are few.
constexpr std::size_t kLeastRoom = kMinRead / 4;

/// A word in a page the kernel zeroes in every child made by fork() or clone() without
/// CLONE_VM (MADV_WIPEONFORK): 1 in a process that has answered calls, 0 in its children.
/// Null if the page could not be had; then every check asks for the pid.
std::atomic<int>* fork_marker() {
  static std::atomic<int>* marker = []() -> std::atomic<int>* {
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return nullptr;
    if (::madvise(page, 4096, MADV_WIPEONFORK) != 0) {
      ::munmap(page, 4096);
      return nullptr;
    }
    return new (page) std::atomic<int>(0);
  }();
  return marker;
}

/// A process a task forked that returns from the task (or throws out of it) is not the
/// worker: it must not answer on the worker's channel, where its reply would be taken for
/// the worker's, nor run the call's next items. It leaves at once, flushing nothing. The pid
/// is compared only when the marker says a fork happened: getpid(), a system call, cost
/// 0.4-1 µs a call on this VM, a fifth of a round trip and two thirds of a map of no-op
/// items. (A worker forked from such a process, the fork start method, finds its own pid and
/// goes on.) A child that shares the worker's memory (vfork, clone with CLONE_VM) is not told
/// apart: returning from the task in it runs on the worker's own stack, undefined already.
void leave_if_forked(int server) {
  auto* marker = fork_marker();
  if (marker && marker->load(std::memory_order_relaxed) != 0) return;
  if (::getpid() != server) ::_exit(0);
  if (marker) marker->store(1, std::memory_order_relaxed);
}

}  // namespace

std::size_t begin_frame(Writer& w, FrameKind kind, std::uint64_t id) {
  auto at = w.size();
  w.put(std::uint64_t{0});
  w.put(kind);
  w.put(id);
  return at;
}

void finish_frame(Writer& w, std::size_t at) {
  std::uint64_t n = w.size() - at - sizeof(std::uint64_t);
  std::memcpy(w.buffer().data() + at, &n, sizeof(n));
}

std::size_t call_frame_size(const RemoteTask& task) {
  return kFrameHeaderSize + sizeof(task.count) + sizeof(std::uint32_t) + task.task->name.size() +
         task.args.size();
}

void write_call_head(std::vector<char>& out, const RemoteTask& task, std::uint64_t id) {
  Writer w(out);
  auto at = begin_frame(w, FrameKind::call, id);
  w.put(task.count);
  w.put_string(task.task->name);
  std::uint64_t length = call_frame_size(task) - sizeof(std::uint64_t);
  std::memcpy(out.data() + at, &length, sizeof(length));
}

void write_call_frame(std::vector<char>& out, const RemoteTask& task, std::uint64_t id) {
  write_call_head(out, task, id);
  Writer(out).put_bytes(task.args.data(), task.args.size());
}

void check_reply_header(const FrameHeader& h, bool hello_expected,
                        std::optional<std::uint64_t> next_call) {
  auto kind = std::to_string(static_cast<int>(h.kind));
  if (h.kind == FrameKind::wake) {
    if (h.id != 0 || h.length != kMinFrameLength)
      throw SerializationError("a wake frame with an id or a body");
    return;
  }
  if (hello_expected) {
    if (h.kind != FrameKind::hello || h.id != 0 || h.length != kMinFrameLength + 4)
      throw SerializationError("a frame of kind " + kind +
                               " where the worker's hello was expected");
    return;
  }
  if (h.kind != FrameKind::result && h.kind != FrameKind::skipped && h.kind != FrameKind::bulk)
    throw SerializationError("a frame of kind " + kind + ", which a worker never sends");
  if (!next_call)
    throw SerializationError("an answer to call " + std::to_string(h.id) +
                             " while it held no call");
  if (h.id != *next_call)
    throw SerializationError("an answer to call " + std::to_string(h.id) + " where call " +
                             std::to_string(*next_call) + " was next");
  if (h.kind == FrameKind::skipped && h.length != kMinFrameLength)
    throw SerializationError("a skipped call's frame with a body");
  if (h.kind == FrameKind::bulk && h.length != kBulkFrameLength)
    throw SerializationError("a bulk frame of " + std::to_string(h.length) + " bytes");
  if (h.length < kMinFrameLength || h.length > max_frame_length())
    throw SerializationError("a reply of " + std::to_string(h.length) +
                             " bytes, outside what this machine's memory can hold");
}

Reply read_reply(Reader& body) {
  Reply reply;
  reply.count = body.get<std::uint32_t>();
  auto n = body.get<std::uint64_t>();
  reply.results = Reader(body.take(n), n);
  if (body.get<std::uint8_t>() != 0) reply.error = decode_exception(body);
  return reply;
}

void check_reply_count(const Reply& reply, std::uint32_t sent) {
  if (reply.count > sent || (!reply.error && reply.count != sent))
    throw SerializationError("a reply with " + std::to_string(reply.count) +
                             " results to a call of " + std::to_string(sent) +
                             (reply.error ? "" : ", and no exception"));
}

void answer_call(std::uint64_t id, Reader& body, std::vector<char>& out, int server) {
  auto count = body.get<std::uint32_t>();
  std::string name(body.get_string());
  Writer reply(out);
  auto at = begin_frame(reply, FrameKind::result, id);
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
        task->run(*task, body, reply);
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
  leave_if_forked(server);  // also after no item (a task that forked, then threw)
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
  if (end_ == 0 && buffer_.size() > kKeepBufferBytes) buffer_ = std::vector<char>(kMinRead);
  // Grow once the room left is small, to twice what has arrived (a read more, early on),
  // but not past what the frame needs and a read more: a header that lies about its length
  // cannot make us allocate for bytes nobody sends, and each growth nearly doubles the
  // buffer, so a big frame arriving a pipe's worth at a time is copied a few times in all,
  // not once per read.
  std::uint64_t need = kMinRead;  // what the frame still needs, as far as we know
  std::uint64_t target = std::max(end_ + kMinRead, 2 * end_);
  if (auto h = header()) {
    // A big frame grows fourfold instead: each growth touches fresh memory and copies what
    // came, and for a 200 MB frame doubling touched 452 MB (284 MB now). A lying header
    // still gets at most four times what was sent.
    if (h->length >= kBulkBytes) target = std::max(end_ + kMinRead, 4 * end_);
    std::uint64_t total = sizeof(std::uint64_t) + std::min(h->length, max_length_);
    need = total > end_ ? total - end_ : 0;
    target = std::min(target, std::max(total, end_ + kMinRead));
  }
  if (buffer_.size() - end_ < std::clamp<std::uint64_t>(need, 1, kLeastRoom)) {
    reserve_bulk(buffer_, static_cast<std::size_t>(target));
    buffer_.resize(static_cast<std::size_t>(target));
  }
  return {buffer_.data() + end_, buffer_.size() - end_};
}

FrameHeader read_frame_header(const char* bytes) {
  FrameHeader h;
  std::memcpy(&h.length, bytes, sizeof(h.length));
  std::memcpy(&h.kind, bytes + 8, sizeof(h.kind));
  std::memcpy(&h.id, bytes + 9, sizeof(h.id));
  return h;
}

std::optional<FrameHeader> FrameSplitter::header() const {
  if (end_ - begin_ < kFrameHeaderSize) return std::nullopt;
  return read_frame_header(buffer_.data() + begin_);
}

bool FrameSplitter::has_frame() const {
  auto h = header();
  return h && end_ - begin_ - sizeof(std::uint64_t) >= h->length;
}

std::optional<Frame> FrameSplitter::next() {
  auto h = header();
  if (!h) return std::nullopt;
  if (h->length < kMinFrameLength || h->length > max_length_)
    throw SerializationError("a frame of " + std::to_string(h->length) +
                             " bytes, outside the bounds of " + std::to_string(kMinFrameLength) +
                             " to " + std::to_string(max_length_));
  if (end_ - begin_ - sizeof(std::uint64_t) < h->length) return std::nullopt;
  const char* body = buffer_.data() + begin_ + kFrameHeaderSize;
  Frame frame{h->kind, h->id, Reader(body, h->length - kMinFrameLength)};
  begin_ += sizeof(std::uint64_t) + h->length;
  return frame;
}

void MailBox::put(const std::vector<char>& frame) noexcept {
  std::memcpy(bytes_, frame.data(), frame.size());
  length_->store(frame.size());  // sequentially consistent: see the top of channel.hpp
}

Frame MailBox::take(std::vector<char>& copy) {
  const std::uint64_t n = length_->load();
  if (n < kFrameHeaderSize || n > kCapacity)
    throw SerializationError("a mailbox holding " + std::to_string(n) + " bytes");
  copy.resize(n);
  std::memcpy(copy.data(), bytes_, n);
  length_->store(0);
  auto h = read_frame_header(copy.data());
  if (h.length != n - sizeof(std::uint64_t))
    throw SerializationError("a mailbox frame of " + std::to_string(h.length) + " bytes in " +
                             std::to_string(n));
  return Frame{h.kind, h.id, Reader(copy.data() + kFrameHeaderSize, h.length - kMinFrameLength)};
}

void append_wake(std::vector<char>& out) {
  Writer w(out);
  finish_frame(w, begin_frame(w, FrameKind::wake, 0));
}

std::uint64_t max_frame_length() {
  static const std::uint64_t bytes = [] {
    long pages = ::sysconf(_SC_PHYS_PAGES), size = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || size <= 0) return std::uint64_t{1} << 40;
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(size);
  }();
  return bytes;
}

}  // namespace cfx::detail
