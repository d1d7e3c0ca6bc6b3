// multiprocessing.Queue between threads and processes (API section 6, docs/toolkit.md).
//
// A cheap copyable handle to an object in anonymous shared memory (a memfd, as every
// toolkit object, cfx/sync.hpp): every copy refers to the same object, between threads of one
// process and between processes sharing the memory (pool workers, cfx::Process children,
// plain fork() children). Items are stored in that memory, encoded with the codec of task
// arguments (cfx/detail/wire.hpp): any T a task argument may be; arithmetic values and
// pairs, tuples and arrays of them are copied as raw bytes.
//
// Constructing one makes a new queue: Queue<T>() or Queue<T>(maxsize) (maxsize 0, the
// default: no limit on the number of items). A moved-from handle refers to nothing; every
// operation on it throws cfx::Error (the decoder builds handles without making a queue,
// cfx/sync.hpp).
//
// Storage. A queue's items live in a ring of `capacity_bytes` (default 1 GiB) reserved up
// front as a sparse memfd: only the pages items occupy are ever backed by memory, and pages
// the consumers have passed are handed back to the system (1 MiB at a time), so an idle queue
// costs a few pages whatever its capacity. An item takes its encoded size plus 4 bytes; an
// item larger than the capacity is refused with cfx::Error; a put waits while the ring has no
// room for its item (as a bounded queue waits for a free slot).
//
// A process killed while it holds a queue's lock (SIGKILL in the middle of a put or get)
// hands the lock to the next user, and the queue stays consistent: an item is written in full
// before one store publishes it, so the dead process's operation happened entirely or not at
// all.
//
// Thread safety: distinct objects, and distinct or shared handles to one object: safe.
// Assigning to or destroying one handle object while another thread uses that same handle
// object is not, as for std::shared_ptr.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "cfx/detail/codec_scratch.hpp"
#include "cfx/detail/shared_block.hpp"
#include "cfx/detail/shared_sync.hpp"
#include "cfx/detail/wire.hpp"
#include "cfx/errors.hpp"
#include "cfx/sync.hpp"

namespace cfx {

namespace detail {

/// The untyped queue under every Queue<T>: records of bytes in a ring (lib/toolkit/queue.cpp).
struct QueueOps {
  static SharedBlock create(std::size_t maxsize, std::size_t capacity_bytes);
  /// False if `deadline` passed first. Throws cfx::Error if closed or the item can never fit.
  static bool put(const SharedBlock& block, std::size_t offset, const char* data, std::size_t n,
                  const SyncDeadline& deadline);
  /// Copies the first item into `out`; false if `deadline` passed first. Throws cfx::Error if
  /// the queue is closed and empty.
  static bool get(const SharedBlock& block, std::size_t offset, std::vector<char>& out,
                  const SyncDeadline& deadline);
  static std::size_t qsize(const SharedBlock& block, std::size_t offset);
  static std::size_t maxsize(const SharedBlock& block, std::size_t offset);
  static std::size_t capacity(const SharedBlock& block, std::size_t offset);
  static void close(const SharedBlock& block, std::size_t offset);
  static bool closed(const SharedBlock& block, std::size_t offset);
};

}  // namespace detail

/// multiprocessing.Queue: a FIFO between threads and processes, bounded (maxsize > 0 items)
/// or not. Unlike Python's, put() writes the item into shared memory before returning (no
/// feeder thread), so an item put is never lost when the putting process exits.
///
/// close() (Python: "no more data will be put") is seen by every handle: later puts throw
/// cfx::Error; gets return what is left, then throw cfx::Error instead of blocking, and so do
/// gets already blocked when it is closed.
template <class T>
class Queue final : public detail::SyncHandle {
  static_assert(detail::is_encodable_v<T> && detail::is_decodable_v<T>,
                "cfx::Queue<T>: T must be a task argument type (raw, or to_json/from_json)");

 public:
  static constexpr const char* type_name = "cfx::Queue";
  /// Bytes of shared memory reserved for items unless the constructor says otherwise.
  static constexpr std::size_t default_capacity_bytes = std::size_t{1} << 30;

  /// A new queue without a limit on the number of items.
  Queue() : Queue(0) {}
  /// A new queue holding at most `maxsize` items (0: no limit but the capacity) in
  /// `capacity_bytes` of shared memory (see the file comment; at least 4096).
  explicit Queue(std::size_t maxsize, std::size_t capacity_bytes = default_capacity_bytes)
      : SyncHandle(detail::QueueOps::create(maxsize, capacity_bytes), 0) {}

  /// Appends `item`, waiting for room as long as it takes.
  void put(const T& item) { put_until(item, std::nullopt); }
  /// Appends `item`, waiting up to `timeout` for room; cfx::QueueFull if none came.
  template <class Rep, class Period>
  void put(const T& item, std::chrono::duration<Rep, Period> timeout) {
    if (!put_until(item, detail::sync_deadline_after(timeout))) throw QueueFull();
  }
  /// Appends `item` if there is room now; cfx::QueueFull otherwise (Python's put_nowait).
  void put_nowait(const T& item) {
    if (!put_until(item, std::chrono::steady_clock::time_point::min())) throw QueueFull();
  }

  /// Removes and returns the first item, waiting for one as long as it takes.
  T get() { return *get_until(std::nullopt); }
  /// The same, waiting up to `timeout`; cfx::QueueEmpty if none came.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    auto item = get_until(detail::sync_deadline_after(timeout));
    if (!item) throw QueueEmpty();
    return std::move(*item);
  }
  /// The first item if there is one now (Python's get_nowait, with nullopt for Empty).
  /// Throws cfx::Error, as get() does, once the queue is closed and empty.
  std::optional<T> try_get() { return get_until(std::chrono::steady_clock::time_point::min()); }

  /// Items in the queue now (stale as soon as it returns).
  std::size_t qsize() const { return detail::QueueOps::qsize(shared(), offset_); }
  bool empty() const { return qsize() == 0; }
  /// Its maxsize (0: no limit).
  std::size_t maxsize() const { return detail::QueueOps::maxsize(shared(), offset_); }
  /// Its capacity in bytes of encoded items (each takes 4 bytes more).
  std::size_t capacity_bytes() const { return detail::QueueOps::capacity(shared(), offset_); }
  /// Closes it for every handle (see the class comment). Closing twice is harmless.
  void close() { detail::QueueOps::close(shared(), offset_); }
  bool closed() const { return detail::QueueOps::closed(shared(), offset_); }

 private:
  friend detail::HandleAccess;
  using SyncHandle::SyncHandle;

  const detail::SharedBlock& shared() const { return checked_block(type_name); }
  bool put_until(const T& item, const detail::SyncDeadline& deadline) {
    const auto& b = shared();
    const auto& bytes = detail::encode_to_scratch(item);
    return detail::QueueOps::put(b, offset_, bytes.data(), bytes.size(), deadline);
  }
  std::optional<T> get_until(const detail::SyncDeadline& deadline) {
    const auto& b = shared();
    auto& bytes = detail::scratch_buffer<detail::DecodeScratch>();
    if (!detail::QueueOps::get(b, offset_, bytes, deadline)) return std::nullopt;
    return detail::decode_bytes<T>(bytes.data(), bytes.size());
  }
};

}  // namespace cfx
