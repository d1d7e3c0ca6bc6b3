// Shared memory for processes: SharedArray<T> (multiprocessing.Array) and SharedValue<T>
// (multiprocessing.Value). API section 6; docs/toolkit.md.
//
//   cfx::SharedArray<std::uint64_t> big(10'000'000);   // zero-filled, anonymous memory
//   pool.submit(sum_range, big, 0, 1000);               // the worker maps it, copies nothing
//   cfx::SharedValue<std::int64_t> hits(0);
//   hits.fetch_add(1);                                  // atomic across processes
//
// Both are cheap copyable handles: every copy, in this process or another, refers to the same
// memory. As a task argument or result (either backend, cfx::Process) a handle travels as its
// descriptor and a few bytes, never its contents; a worker maps a block once and keeps it
// while the parent does, so the second call with the same array costs no mapping and no
// descriptor. The memory is a memfd: it is never a name in /dev/shm, and it is gone once the
// last process holding it exits, however it exits. A default-constructed SharedArray is an
// array of no elements that refers to nothing and allocates nothing; a default-constructed
// SharedValue is a new value T{} (Python's Value(typecode) starts at zero). The decoder
// builds either without allocating.
//
// Thread safety: the handles may be copied and used from any threads. SharedArray's elements
// are plain memory (guard them yourself, or use std::atomic_ref); SharedValue's operations
// are atomic.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <span>
#include <type_traits>
#include <utility>

#include <nlohmann/json_fwd.hpp>

#include "cfx/detail/handle_json.hpp"
#include "cfx/detail/shared_block.hpp"
#include "cfx/detail/shared_sync.hpp"
#include "cfx/errors.hpp"
#include "cfx/sync.hpp"

namespace cfx {

namespace detail {
/// A shared array's or value's block: a header (the element count at 0, the get_lock()
/// mutex at kSharedLock), then the payload at kSharedHeader, aligned for any T it takes.
inline constexpr std::size_t kSharedLock = 64;
inline constexpr std::size_t kSharedHeader = 128;
static_assert(sizeof(SharedMutex) <= kSharedHeader - kSharedLock &&
              kSharedLock % alignof(SharedMutex) == 0);

/// Makes the header's mutex (the creator, before the block is shared).
inline void init_shared_lock(const SharedBlock& block) {
  shared_at<SharedMutex>(block, kSharedLock).init(false);
}
/// The Lock of a shared array's or value's block.
inline Lock shared_lock(const SharedBlock& block) {
  if (!block) throw Error("get_lock(): a default-constructed shared object has no lock");
  return HandleAccess::make<Lock>(block, kSharedLock);
}
}  // namespace detail

/// A fixed-size array of trivially copyable T in shared memory.
template <class T>
class SharedArray {
  static_assert(std::is_trivially_copyable_v<T>, "SharedArray<T> needs a trivially copyable T");
  static_assert(alignof(T) <= detail::kSharedHeader);

 public:
  using value_type = T;

  SharedArray() = default;
  /// `n` zero-filled elements. Throws cfx::Error if the system refuses the memory.
  explicit SharedArray(std::size_t n) : block_(detail::kSharedHeader + n * sizeof(T)) {
    std::memcpy(block_.data(), &n, sizeof(n));
    detail::init_shared_lock(block_);
    attach();
  }
  /// A copy of `values`.
  static SharedArray from(std::span<const T> values) {
    SharedArray a(values.size());
    if (!values.empty()) std::memcpy(a.data(), values.data(), values.size_bytes());
    return a;
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T* data() const noexcept { return data_; }
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  std::span<T> span() const noexcept { return {data_, size_}; }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }
  /// The lock that comes with the array (multiprocessing.Array's get_lock()): the same in
  /// every process; the elements are not guarded by it unless the user takes it.
  Lock get_lock() const { return detail::shared_lock(block_); }
  /// Refers to some memory (not default-constructed).
  explicit operator bool() const noexcept { return static_cast<bool>(block_); }
  /// Copies of one array.
  friend bool operator==(const SharedArray& a, const SharedArray& b) noexcept {
    return a.block_ == b.block_;
  }

  SharedArray(SharedArray&& other) noexcept
      : block_(std::move(other.block_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  SharedArray& operator=(SharedArray&& other) noexcept {
    block_ = std::move(other.block_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }
  SharedArray(const SharedArray&) = default;
  SharedArray& operator=(const SharedArray&) = default;

  friend void to_json(nlohmann::json& j, const SharedArray& a) { detail::to_json(j, a.block_); }
  friend void from_json(const nlohmann::json& j, SharedArray& a) {
    detail::from_json(j, a.block_);
    a.attach();
  }

 private:
  void attach() {
    if (!block_) {
      data_ = nullptr;
      size_ = 0;
      return;
    }
    std::size_t n;
    std::memcpy(&n, block_.data(), sizeof(n));
    if (detail::kSharedHeader + n * sizeof(T) > block_.size())
      throw SerializationError("a SharedArray's block is smaller than its element count says");
    size_ = n;
    data_ = reinterpret_cast<T*>(static_cast<char*>(block_.data()) + detail::kSharedHeader);
  }

  detail::SharedBlock block_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// One T in shared memory, with atomic operations as std::atomic<T> (lock-free T).
template <class T>
class SharedValue {
  static_assert(std::is_trivially_copyable_v<T>, "SharedValue<T> needs a trivially copyable T");
  static_assert(alignof(T) <= detail::kSharedHeader);

 public:
  using value_type = T;

  /// A new value, T{}.
  SharedValue() : SharedValue(T{}) {}
  explicit SharedValue(T initial) : block_(detail::kSharedHeader + sizeof(T)) {
    detail::init_shared_lock(block_);
    attach();
    std::memcpy(static_cast<void*>(value_), &initial, sizeof(T));
  }

  T load(std::memory_order order = std::memory_order_seq_cst) const { return ref().load(order); }
  void store(T v, std::memory_order order = std::memory_order_seq_cst) const {
    ref().store(v, order);
  }
  /// Adds `d`; returns the value before, as std::atomic.
  T fetch_add(T d, std::memory_order order = std::memory_order_seq_cst) const requires
      requires(std::atomic_ref<T> r) {
    r.fetch_add(d);
  }
  { return ref().fetch_add(d, order); }
  T fetch_sub(T d, std::memory_order order = std::memory_order_seq_cst) const requires
      requires(std::atomic_ref<T> r) {
    r.fetch_sub(d);
  }
  { return ref().fetch_sub(d, order); }
  T exchange(T v, std::memory_order order = std::memory_order_seq_cst) const {
    return ref().exchange(v, order);
  }
  bool compare_exchange_strong(T& expected, T desired) const {
    return ref().compare_exchange_strong(expected, desired);
  }
  /// The lock that comes with the value (multiprocessing.Value's get_lock()), for updates
  /// that span several operations.
  Lock get_lock() const { return detail::shared_lock(block_); }
  /// The shared word itself, for operations not listed here. Throws cfx::Error on a
  /// moved-from handle.
  std::atomic_ref<T> ref() const {
    static_assert(std::atomic_ref<T>::is_always_lock_free,
                  "SharedValue's atomic operations need a lock-free T");
    if (!value_) throw Error("cfx::SharedValue: empty handle (moved from)");
    return std::atomic_ref<T>(*value_);
  }
  /// Refers to a value (false once moved from).
  explicit operator bool() const noexcept { return static_cast<bool>(block_); }
  friend bool operator==(const SharedValue& a, const SharedValue& b) noexcept {
    return a.block_ == b.block_;
  }

  SharedValue(SharedValue&& other) noexcept
      : block_(std::move(other.block_)), value_(std::exchange(other.value_, nullptr)) {}
  SharedValue& operator=(SharedValue&& other) noexcept {
    block_ = std::move(other.block_);
    value_ = std::exchange(other.value_, nullptr);
    return *this;
  }
  SharedValue(const SharedValue&) = default;
  SharedValue& operator=(const SharedValue&) = default;

 private:
  friend struct nlohmann::adl_serializer<SharedValue>;
  /// Refers to nothing: what the decoder fills in.
  explicit SharedValue(detail::NoObject) noexcept {}

  void attach() {
    if (block_ && block_.size() < detail::kSharedHeader + sizeof(T))
      throw SerializationError("a SharedValue's block is smaller than its type");
    value_ = block_
                 ? reinterpret_cast<T*>(static_cast<char*>(block_.data()) + detail::kSharedHeader)
                 : nullptr;
  }

  detail::SharedBlock block_;
  T* value_ = nullptr;
};

}  // namespace cfx

/// A SharedValue travels as its block; the decoder builds it without making a new value.
template <class T>
struct nlohmann::adl_serializer<cfx::SharedValue<T>> {
  static void to_json(nlohmann::json& j, const cfx::SharedValue<T>& v) {
    cfx::detail::to_json(j, v.block_);
  }
  static cfx::SharedValue<T> from_json(const nlohmann::json& j) {
    cfx::SharedValue<T> v(cfx::detail::NoObject{});
    cfx::detail::from_json(j, v.block_);
    v.attach();
    return v;
  }
};
