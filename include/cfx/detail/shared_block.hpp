// One block of anonymous shared memory, the storage under every object of API section 6.
// Internal.
//
// A SharedBlock is a reference-counted mapping of a memfd (never a name in /dev/shm): copies
// share one mapping, and the memory is gone once the last process holding the descriptor or
// a mapping of it exits, however it exits. A default-constructed block refers to nothing and
// allocates nothing (the worker's decoder makes one before filling it in).
//
// Thread safety: copies may be used from any threads; the bytes themselves are the user's
// (the toolkit objects built on a block bring their own synchronisation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "cfx/detail/handles.hpp"

namespace cfx::detail {

class SharedBlock {
 public:
  SharedBlock() = default;
  /// `bytes` (at least 1) of zero-filled shared memory. Throws cfx::Error if the system
  /// refuses (the message names the size and the errno text).
  explicit SharedBlock(std::size_t bytes);

  /// Adopts descriptor `fd` of a memfd of `bytes` bytes (one received from another process)
  /// and maps it; the block owns `fd` from here on, also when this throws.
  static SharedBlock adopt(int fd, std::size_t bytes);

  void* data() const noexcept { return mapping_ ? mapping_->data : nullptr; }
  std::size_t size() const noexcept { return mapping_ ? mapping_->bytes : 0; }
  /// The memfd, for passing the block to another process; -1 for an empty block.
  int fd() const noexcept { return mapping_ ? mapping_->fd : -1; }
  explicit operator bool() const noexcept { return mapping_ != nullptr; }
  /// Same mapping (copies of one block).
  friend bool operator==(const SharedBlock& a, const SharedBlock& b) noexcept {
    return a.mapping_ == b.mapping_;
  }
  /// The memfd's identity, the same in every process that holds the block.
  HandleKey key() const noexcept { return mapping_ ? mapping_->key : HandleKey{}; }

 private:
  friend struct BlockAccess;  // handles.cpp: weak references, for the per-process registry
  struct Mapping {
    int fd = -1;
    void* data = nullptr;
    std::size_t bytes = 0;
    HandleKey key;
    Mapping() = default;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();
  };
  std::shared_ptr<Mapping> mapping_;
};

/// How many blocks' mappings this process has released so far (a pool compares it between
/// calls to learn when to tell its workers to drop blocks they keep for it).
std::uint64_t blocks_released() noexcept;

}  // namespace cfx::detail
