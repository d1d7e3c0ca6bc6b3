// Byte buffers for the wire format: Writer appends, Reader reads back. Internal.
//
// Kept apart from the value codec (wire.hpp, which needs nlohmann::json) so that the
// executor's headers can hand encoded bytes around without compiling the codec.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "cfx/errors.hpp"

namespace cfx::detail {

/// Buffers this large are backed by huge pages where the kernel allows (THP "madvise").
inline constexpr std::size_t kBulkBytes = std::size_t{4} << 20;
/// Room a big buffer is given beyond what is written into it (Writer::put_bytes).
inline constexpr std::size_t kBulkSlack = std::size_t{64} << 10;

/// Big buffers up to this capacity are kept for reuse (frame buffers, give_spare_bytes); above
/// it they are freed once empty, so that one 200 MB payload does not pin 200 MB for good.
inline constexpr std::size_t kKeepBufferBytes = std::size_t{128} << 20;

/// A byte buffer of at least `n` bytes' capacity, empty, that give_spare_bytes kept; or an
/// empty vector without capacity. A fresh buffer costs a page fault and the zeroing of each
/// page on first write (on this project's VMs, 20-40 ms for 64 MiB even on huge pages, several
/// times the copy itself): the encoded arguments of a finished call are reused for the next.
std::vector<char> take_spare_bytes(std::size_t n);
/// Keeps `buffer` for take_spare_bytes if it is big (kBulkBytes to kKeepBufferBytes) and
/// bigger than the one kept; frees it otherwise. Any thread.
void give_spare_bytes(std::vector<char>&& buffer) noexcept;

/// The smallest page: what madvise takes whole, and what a first write faults in.
inline constexpr std::size_t kSmallPageBytes = 4096;

/// Calls madvise(advice) on the whole pages of `page` bytes inside [data, data + bytes), if
/// any (advice only: a refusal changes nothing).
inline void advise_pages(const void* data, std::size_t bytes, std::uintptr_t page, int advice) {
  auto begin = reinterpret_cast<std::uintptr_t>(data);
  std::uintptr_t lo = (begin + page - 1) & ~(page - 1);
  std::uintptr_t hi = (begin + bytes) & ~(page - 1);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, advice);
}

/// Advises [data, data + bytes) to huge pages, the whole 2 MiB pages inside it.
inline void advise_huge(const void* data, std::size_t bytes) {
  advise_pages(data, bytes, std::uintptr_t{2} << 20, MADV_HUGEPAGE);
}

/// Faults in the pages of [data, data + bytes) in one system call, where the kernel can
/// (Linux 5.14). Measured on a fresh 64 MiB on huge pages: 19 ms every time, where faulting
/// them in one by one took 22 to 93 ms.
inline void populate(const void* data, std::size_t bytes) {
#ifdef MADV_POPULATE_WRITE
  advise_pages(data, bytes, kSmallPageBytes, MADV_POPULATE_WRITE);
#else
  (void)data, (void)bytes;
#endif
}

/// Writes a byte into each 4 KiB page of [data, data + bytes), which must be storage that may
/// be overwritten. On this project's VMs the host backs a page only at the first write from
/// user space, even after populate(): a fresh 64 MiB took 4 ms to populate and then 11-13 ms
/// to copy into, against 4 ms into memory already written. Touched ahead of time (while a
/// worker computes), that cost leaves the copy.
inline void touch_pages(void* data, std::size_t bytes) {
  auto* p = static_cast<volatile char*>(data);
  for (std::size_t i = 0; i < bytes; i += kSmallPageBytes) p[i] = 0;
}

/// Room for `n` elements in `v` (a vector or string), of which the first `filling` are about
/// to be written. A big buffer is first written by a resize, a read or the copy of what it
/// held: advised to huge pages and populated before any of that, it takes a page fault per
/// 2 MiB instead of per 4 KiB, and those faults, not the copies, dominate moving a fresh
/// 64 MiB payload.
template <class V>
void reserve_bulk(V& v, std::size_t n, std::size_t filling) {
  using E = typename V::value_type;
  if (n <= v.capacity()) return;
  if (n * sizeof(E) < kBulkBytes) {
    v.reserve(n);
    return;
  }
  if (v.empty()) V().swap(v);  // nothing to keep: freed before the new storage, not after
  V fresh;
  if constexpr (std::is_same_v<V, std::vector<char>>) fresh = take_spare_bytes(n);
  if (fresh.capacity() < n) {
    fresh.reserve(n);
    advise_huge(fresh.data(), fresh.capacity() * sizeof(E));
    populate(fresh.data(), std::min(filling, n) * sizeof(E));
  }
  fresh.insert(fresh.end(), std::make_move_iterator(v.begin()), std::make_move_iterator(v.end()));
  v.swap(fresh);
}

/// reserve_bulk for `n` elements that are all about to be written.
template <class V>
void reserve_bulk(V& v, std::size_t n) {
  reserve_bulk(v, n, n);
}

/// Appends `n` bytes to `out`, which holds kBulkBytes or more with them. It grows as the vector
/// would (doubling: many big pieces must not each copy all that came before), but through
/// reserve_bulk, and with room for the small fields that follow a big value (a result frame's
/// trailer): the vector's own growth for that one byte copied the whole 64 MiB into fresh
/// 4 KiB pages. The bytes are copied into the spare capacity at once, not over zeros written
/// by a resize (one more pass over the value).
void append_bulk(std::vector<char>& out, const void* data, std::size_t n);

/// Appends fixed-size values (host byte order) and length-prefixed strings to a buffer.
class Writer {
 public:
  explicit Writer(std::vector<char>& out) : out_(out) {}
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put_bytes(&v, sizeof(T));
  }
  void put_bytes(const void* data, std::size_t n) {
    auto at = out_.size();
    if (at + n >= kBulkBytes) return append_bulk(out_, data, n);
    out_.resize(at + n);
    if (n) std::memcpy(out_.data() + at, data, n);
  }
  /// A u32 length and the bytes; a string of 4 GiB or more is refused, never cut short.
  void put_string(std::string_view s) {
    if (s.size() > UINT32_MAX)
      throw SerializationError("a string of " + std::to_string(s.size()) +
                               " bytes, more than the 4 GiB a name or message may take");
    put(static_cast<std::uint32_t>(s.size()));
    put_bytes(s.data(), s.size());
  }
  std::size_t size() const { return out_.size(); }
  std::vector<char>& buffer() { return out_; }

 private:
  std::vector<char>& out_;
};

/// Reads what Writer wrote; throws SerializationError on truncated input.
class Reader {
 public:
  Reader(const char* data, std::size_t size) : p_(data), end_(data + size) {}
  template <class T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  const char* take(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n)
      throw SerializationError("truncated message from the other process");
    auto* at = p_;
    p_ += n;
    return at;
  }
  /// Bytes not yet read.
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
  std::string_view get_string() {
    auto n = get<std::uint32_t>();
    return {take(n), n};
  }

 private:
  const char* p_;
  const char* end_;
};

}  // namespace cfx::detail
