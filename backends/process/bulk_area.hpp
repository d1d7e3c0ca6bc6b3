// Big frames: how a frame too big for the pipe travels between the pool and a worker. Internal.
//
// The worker's shared file (the memfd of its call slots) holds, besides the slot page, one
// bulk area per direction, at fixed offsets far apart: calls (pool -> worker) and results
// (worker -> pool). A frame of kBulkFrameBytes or more is written into its direction's area,
// and a small bulk frame [u64 length] goes down the pipe in its place, in order; the receiver
// reads the frame where it lies (no copy into a buffer of its own), then marks the area free
// again in the slot page. One frame at a time per area: while it is busy, big frames take the
// pipe as before.
//
// Both sides keep their mapping of an area, and its pages stay in the file between frames, so
// a payload reaches memory that is already mapped on both sides: no page fault per 4 KiB.
// Pages are populated in one system call (MADV_POPULATE_*) where they are not. Frames above
// kKeepBufferBytes take the pipe, so an area never holds more than that.
//
// The file is sized once, sparse, and sealed against shrinking: a task cannot truncate it
// under the pool's mapping (a SIGBUS in the pool). What a task writes into the results area
// is checked as a pipe frame would be (length bounds, kind, id) before it is read.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "backends/process/channel.hpp"
#include "cfx/detail/remote_task.hpp"

namespace cfx::detail {

/// Frames of this size or more travel through a bulk area when it is free (measured with
/// bench/payload: docs/wire-format.md, "Big payloads").
inline constexpr std::size_t kBulkFrameBytes = std::size_t{1} << 20;
/// Where the areas lie in the worker's shared file, and its (sparse) size.
inline constexpr std::uint64_t kCallsAreaOffset = std::uint64_t{1} << 40;
inline constexpr std::uint64_t kResultsAreaOffset = std::uint64_t{2} << 40;
inline constexpr std::uint64_t kSharedFileBytes = std::uint64_t{3} << 40;

/// One direction's area, as mapped by one side. Maps lazily; unmaps when destroyed.
class BulkArea {
 public:
  /// The area at `offset` in shared file `fd` (which must outlive this object), whose state
  /// word in the slot page is `word`: 0 free, else the id of the frame it holds.
  BulkArea(int fd, std::uint64_t offset, std::atomic<std::uint64_t>* word) noexcept
      : fd_(fd), offset_(offset), word_(word) {}
  BulkArea(const BulkArea&) = delete;
  BulkArea& operator=(const BulkArea&) = delete;
  ~BulkArea() { unmap(); }

  /// Sender: room for a frame of `n` bytes, mapped and populated, if the area is free and
  /// the memory can be had; nullptr otherwise (the frame then takes the pipe).
  char* room(std::size_t n) noexcept;
  /// Sender: marks the area as holding frame `id` and appends the bulk frame that stands for
  /// it, `n` bytes, to `out`.
  void hand_over(std::vector<char>& out, std::uint64_t id, std::size_t n) noexcept;
  /// Receiver: the frame that bulk frame `marker` stands for, read in place. Throws
  /// SerializationError unless its length is one an area carries, and the frame in the area
  /// has that length, is `kind` and is frame `marker.id`.
  Frame open(const Frame& marker, FrameKind kind);
  /// Receiver: the frame opened last has been read; the area is free again.
  void release() noexcept;

 private:
  char* map(std::size_t n, int advice) noexcept;
  void unmap() noexcept;

  int fd_;
  std::uint64_t offset_;
  std::atomic<std::uint64_t>* word_;
  char* base_ = nullptr;
  std::size_t mapped_ = 0;
  std::size_t populated_ = 0;  // bytes from base_ mapped in by a populate call
};

/// Sender of calls: writes call `id` of `task` into `area` and its bulk frame into `out` if
/// the frame is big enough and the area is free; false (nothing written) otherwise.
bool write_call_to_area(BulkArea& area, std::vector<char>& out, const RemoteTask& task,
                        std::uint64_t id);
/// Sender of results: moves the frame that starts at `out[at]` (up to the end) into `area`,
/// leaving its bulk frame there instead, if it is big enough and the area is free.
void move_frame_to_area(BulkArea& area, std::vector<char>& out, std::size_t at);

}  // namespace cfx::detail
