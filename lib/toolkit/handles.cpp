// Handles inside encoded values: the per-thread capture and source (handles.hpp), and how a
// SharedBlock converts (handle_json.hpp).
#include "cfx/detail/handles.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "cfx/detail/handle_json.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {
namespace {

std::atomic<std::uint64_t> mapped{0};
thread_local HandleList* capture = nullptr;
thread_local HandleSource* source = nullptr;

}  // namespace

/// This process's mappings of the blocks it has sent or received, by key, so that a block
/// that comes back (a worker's result) is the same mapping as the one sent: copies of one
/// block compare equal in every process, and a process maps a block once.
struct BlockAccess {
  using Mapping = SharedBlock::Mapping;

  static std::shared_ptr<const void> keep(const SharedBlock& b) { return b.mapping_; }

  static void remember(const SharedBlock& b) {
    std::lock_guard lock(mutex());
    auto& weak = known()[b.key()];
    if (weak.expired()) weak = b.mapping_;
    if (known().size() > 2 * swept_at()) sweep();
  }

  static SharedBlock find(const HandleKey& key) {
    std::lock_guard lock(mutex());
    SharedBlock b;
    if (auto it = known().find(key); it != known().end()) b.mapping_ = it->second.lock();
    return b;
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::unordered_map<HandleKey, std::weak_ptr<Mapping>, HandleKeyHash>& known() {
    static std::unordered_map<HandleKey, std::weak_ptr<Mapping>, HandleKeyHash> map;
    return map;
  }
  static std::size_t& swept_at() {
    static std::size_t n = 16;
    return n;
  }
  static void sweep() {  // drops released mappings; amortised over the insertions
    std::erase_if(known(), [](const auto& entry) { return entry.second.expired(); });
    swept_at() = std::max<std::size_t>(16, known().size());
  }
};

HandleKey handle_key(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw Error(std::string("cfx: fstat of a shared handle's descriptor failed: ") +
                std::strerror(errno));
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

HandleRef duplicate_handle(int fd, const HandleKey& key) {
  struct Owned {
    int fd;
    ~Owned() { ::close(fd); }
  };
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0)
    throw Error(std::string("cfx: duplicating a handle's descriptor failed: ") +
                std::strerror(errno));
  std::shared_ptr<Owned> owned(new Owned{copy});
  return {owned, copy, key, false};
}

HandleCapture::HandleCapture(HandleList& out) noexcept : previous_(capture) {
  capture = &out;
}
HandleCapture::~HandleCapture() {
  capture = previous_;
}

std::uint32_t capture_handle(HandleRef ref) {
  if (!capture)
    throw SerializationError(
        "a shared handle (SharedArray, Lock, Connection, ...) can travel only as a task's "
        "argument or result, or through a cfx::Pipe, not inside this value");
  capture->push_back(std::move(ref));
  return static_cast<std::uint32_t>(capture->size() - 1);
}

HandleSourceScope::HandleSourceScope(HandleSource& s) noexcept : previous_(source) {
  source = &s;
}
HandleSourceScope::~HandleSourceScope() {
  source = previous_;
}

int take_handle(std::uint32_t slot, const HandleKey& key) {
  if (!source) throw SerializationError("a shared handle arrived without its descriptor channel");
  return source->take(slot, key);
}

void adopted_handle(const HandleKey& key, std::shared_ptr<const void> keep) {
  if (source) source->adopted(key, std::move(keep));
}

void to_json_at(nlohmann::json& j, const SharedBlock& block, std::size_t offset) {
  nlohmann::json b;
  to_json(b, block);
  j = nlohmann::json::array({std::move(b), offset});
}

SharedBlock from_json_at(const nlohmann::json& j, std::size_t& offset) {
  if (!j.is_array() || j.size() != 2)
    throw SerializationError("a shared object's encoding is malformed");
  SharedBlock block;
  from_json(j[0], block);
  offset = j[1].get<std::size_t>();
  return block;
}

std::uint64_t blocks_mapped() noexcept {
  return mapped.load(std::memory_order_relaxed);
}

void to_json(nlohmann::json& j, const SharedBlock& block) {
  if (!block) {  // an empty handle: nothing to send
    j = nullptr;
    return;
  }
  BlockAccess::remember(block);
  auto key = block.key();
  auto slot = capture_handle({BlockAccess::keep(block), block.fd(), key, true});
  j = nlohmann::json::array({slot, key.dev, key.ino, block.size()});
}

void from_json(const nlohmann::json& j, SharedBlock& block) {
  if (j.is_null()) {
    block = SharedBlock();
    return;
  }
  if (!j.is_array() || j.size() != 4)
    throw SerializationError("a shared memory block's encoding is malformed");
  auto slot = j[0].get<std::uint32_t>();
  HandleKey key{j[1].get<std::uint64_t>(), j[2].get<std::uint64_t>()};
  auto bytes = j[3].get<std::size_t>();
  int fd = take_handle(slot, key);
  if (SharedBlock known = BlockAccess::find(key)) {  // this process maps it already
    if (fd >= 0) {  // sent again: the sender counts on this process keeping it from now on
      ::close(fd);
      adopted_handle(key, BlockAccess::keep(known));
    }
    block = std::move(known);
    return;
  }
  if (fd < 0)
    throw SerializationError("the descriptor of a shared memory block of " + std::to_string(bytes) +
                             " bytes did not arrive");
  if (handle_key(fd) != key) {
    ::close(fd);
    throw SerializationError("a shared memory block's descriptor is not the block named");
  }
  block = SharedBlock::adopt(fd, bytes);
  mapped.fetch_add(1, std::memory_order_relaxed);
  BlockAccess::remember(block);
  adopted_handle(key, BlockAccess::keep(block));
}

}  // namespace cfx::detail
