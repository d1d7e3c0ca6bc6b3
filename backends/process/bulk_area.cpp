#include "backends/process/bulk_area.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <thread>

#include "cfx/errors.hpp"

namespace cfx::detail {
namespace {

// Mappings grow to powers of two from here, so that growing payloads remap a few times only.
constexpr std::size_t kLeastMapping = std::size_t{16} << 20;

/// The frames an area carries: from kBulkFrameBytes (below, the pipe is as fast) to
/// kKeepBufferBytes (above, the area's pages would be kept, or touched afresh every time).
bool carried(std::size_t n) {
  return n >= kBulkFrameBytes && n <= kKeepBufferBytes;
}

/// Copies `n` bytes into or out of an area. From kParallelCopyBytes on, a second thread
/// copies the second half: measured on this VM, 64 MiB into or out of an area took 4.2-6.0 ms
/// on one thread and 2.3-2.8 ms on two, thread start included (a scratch program, six rounds).
/// Object stores copy big buffers the same way (Apache Arrow's parallel memcopy, used by
/// Ray's). One thread where the machine has one core.
constexpr std::size_t kParallelCopyBytes = std::size_t{16} << 20;

void copy_bulk(char* to, const char* from, std::size_t n) {
  static const bool one_core = std::thread::hardware_concurrency() < 2;  // a file read: once
  if (n < kParallelCopyBytes || one_core) {
    std::memcpy(to, from, n);
    return;
  }
  const std::size_t half = (n / 2) & ~(kSmallPageBytes - 1);
  std::thread second;
  try {
    second = std::thread([=] { std::memcpy(to + half, from + half, n - half); });
  } catch (...) {  // no thread to be had: one does it all
    std::memcpy(to, from, n);
    return;
  }
  std::memcpy(to, from, half);
  second.join();
}

}  // namespace

char* BulkArea::map(std::size_t n, int advice) noexcept {
  if (n > mapped_) {
    unmap();
    std::size_t size = std::max(std::bit_ceil(n), kLeastMapping);
    void* at =
        ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, static_cast<off_t>(offset_));
    if (at == MAP_FAILED) return nullptr;
    base_ = static_cast<char*>(at);
    mapped_ = size;
    populated_ = 0;
  }
  // One system call maps (and, for writing, allocates) every page of the frame, instead of a
  // fault per 4 KiB; once per page of this mapping, as its pages stay in the file and mapped
  // (walking 64 MiB of mapped pages again took as long as a tenth of copying them). ENOMEM:
  // the memory cannot be had, and the pipe is used instead; EINVAL: a kernel older than 5.14,
  // where the pages fault in as they are touched.
  if (n > populated_) {
    const std::size_t from = populated_ & ~(kSmallPageBytes - 1);  // madvise takes whole pages
    if (::madvise(base_ + from, n - from, advice) != 0 && errno != EINVAL) return nullptr;
    populated_ = n;
  }
  return base_;
}

void BulkArea::unmap() noexcept {
  if (base_) ::munmap(base_, mapped_);
  base_ = nullptr;
  mapped_ = 0;
  populated_ = 0;
}

char* BulkArea::room(std::size_t n) noexcept {
  if (!carried(n) || word_->load(std::memory_order_acquire) != 0) return nullptr;
  return map(n, MADV_POPULATE_WRITE);
}

void BulkArea::hand_over(std::vector<char>& out, std::uint64_t id, std::size_t n) noexcept {
  word_->store(id, std::memory_order_release);
  Writer w(out);
  auto at = begin_frame(w, FrameKind::bulk, id);
  w.put(static_cast<std::uint64_t>(n));
  finish_frame(w, at);
}

Frame BulkArea::open(const Frame& marker, FrameKind kind) {
  Reader body = marker.body;
  auto n = body.get<std::uint64_t>();
  // Checked before anything is mapped: populating a shared mapping allocates its pages, so a
  // length the sender would never use (a task writing on the channel) must not make this
  // process allocate it.
  if (!carried(n))
    throw SerializationError("a bulk frame of " + std::to_string(n) +
                             " bytes, outside what a bulk area carries");
  const char* at = map(n, MADV_POPULATE_READ);
  if (!at)
    throw SerializationError("a bulk frame of " + std::to_string(n) +
                             " bytes that cannot be mapped");
  // The header is copied out once: the other side can still write to the area, so what was
  // checked must be what is used.
  FrameHeader h = read_frame_header(at);
  if (h.length + sizeof(std::uint64_t) != n || h.kind != kind || h.id != marker.id)
    throw SerializationError("a bulk frame whose area holds another frame");
  return {h.kind, h.id, Reader(at + kFrameHeaderSize, n - kFrameHeaderSize)};
}

void BulkArea::release() noexcept {
  word_->store(0, std::memory_order_release);
}

bool write_call_to_area(BulkArea& area, std::vector<char>& out, const RemoteTask& task,
                        std::uint64_t id) {
  std::size_t n = call_frame_size(task);
  char* room = area.room(n);
  if (!room) return false;
  // The arguments are copied once, into the area, behind the frame's head.
  std::vector<char> head;
  write_call_head(head, task, id);
  std::memcpy(room, head.data(), head.size());
  copy_bulk(room + head.size(), task.args.data(), task.args.size());
  area.hand_over(out, id, n);
  return true;
}

void move_frame_to_area(BulkArea& area, std::vector<char>& out, std::size_t at) {
  std::size_t n = out.size() - at;
  char* room = area.room(n);
  if (!room) return;
  std::uint64_t id = read_frame_header(out.data() + at).id;
  copy_bulk(room, out.data() + at, n);
  out.resize(at);
  area.hand_over(out, id, n);
}

}  // namespace cfx::detail
