// Handles that hold a descriptor (shared memory blocks, Pipe ends) inside encoded values.
// Internal.
//
// The value codec stays generic: a handle's to_json (nlohmann, found by ADL) does not write
// its descriptor, it hands it to the HandleCapture active on this thread and writes the slot
// number it got back, plus the handle's identity (HandleKey). Whoever encoded the value (the
// submitting thread for a task's arguments, the worker for its results) keeps the collected
// HandleList beside the bytes, and the channel ships the descriptors with SCM_RIGHTS ahead of
// the frame (docs/wire-format.md, "Descriptors"). On the other side a HandleSource is active
// while the bytes are decoded; a handle's from_json asks it for the descriptor of its slot.
//
// Thread safety: captures and sources are per thread; nothing here is shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace cfx::detail {

/// Identity of a descriptor's open file across processes: the device and inode that fstat
/// reports (a memfd's or a socket's inode is unique among the files that exist).
struct HandleKey {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  friend bool operator==(const HandleKey&, const HandleKey&) = default;
};
struct HandleKeyHash {
  std::size_t operator()(const HandleKey& k) const noexcept {
    return std::hash<std::uint64_t>()(k.ino * 0x9e3779b97f4a7c15ull ^ k.dev);
  }
};
/// The key of descriptor `fd`; throws cfx::Error if fstat fails.
HandleKey handle_key(int fd);

/// One descriptor an encoded value refers to.
struct HandleRef {
  std::shared_ptr<const void> keep;  // keeps the descriptor open until it has been sent
  int fd = -1;
  HandleKey key;
  /// Memory blocks are cached by a worker (sent once per worker); other handles (Pipe ends)
  /// are sent with every call, so that a worker never keeps a copy open after the task.
  bool cached = false;
};
using HandleList = std::vector<HandleRef>;
/// A handle on a copy of `fd` (F_DUPFD_CLOEXEC), for handles whose descriptor the user may
/// close before the value is sent (a Connection). Throws cfx::Error if dup fails.
HandleRef duplicate_handle(int fd, const HandleKey& key);

/// While alive, the handles encoded on this thread are appended to `out` (captures nest:
/// the innermost one collects).
class HandleCapture {
 public:
  explicit HandleCapture(HandleList& out) noexcept;
  ~HandleCapture();
  HandleCapture(const HandleCapture&) = delete;
  HandleCapture& operator=(const HandleCapture&) = delete;

 private:
  HandleList* previous_;
};
/// Called by a handle's to_json: adds `ref` to the active capture and returns its slot.
/// Throws SerializationError if no capture is active (the value is being encoded for
/// something that cannot carry descriptors).
std::uint32_t capture_handle(HandleRef ref);

/// Gives the descriptors that arrived with the value being decoded.
class HandleSource {
 public:
  virtual ~HandleSource() = default;
  /// The descriptor sent for `slot` (whose handle has `key`), now owned by the caller; -1 if
  /// none arrived.
  virtual int take(std::uint32_t slot, const HandleKey& key) = 0;
  /// A cached handle was decoded from a descriptor that arrived: a worker keeps `keep` so
  /// that later calls need not send it again.
  virtual void adopted(const HandleKey&, std::shared_ptr<const void>) {}
};
/// While alive, handles decoded on this thread take their descriptors from `source`.
class HandleSourceScope {
 public:
  explicit HandleSourceScope(HandleSource& source) noexcept;
  ~HandleSourceScope();
  HandleSourceScope(const HandleSourceScope&) = delete;
  HandleSourceScope& operator=(const HandleSourceScope&) = delete;

 private:
  HandleSource* previous_;
};
/// Called by a handle's from_json: the descriptor of `slot` from the active source (owned by
/// the caller), or -1 if none arrived. Throws SerializationError if no source is active.
int take_handle(std::uint32_t slot, const HandleKey& key);
/// Called by a cached handle's from_json after it made a mapping from a taken descriptor.
void adopted_handle(const HandleKey& key, std::shared_ptr<const void> keep);

}  // namespace cfx::detail
