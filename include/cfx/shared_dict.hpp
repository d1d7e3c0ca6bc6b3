// The dict of a multiprocessing.Manager between threads and processes, without the manager
// process (API section 6, docs/toolkit.md).
//
// A cheap copyable handle to a hash table in anonymous shared memory (a memfd, as every
// toolkit object, cfx/sync.hpp): every copy refers to the same table, between threads of one
// process and between processes sharing the memory (pool workers, cfx::Process children,
// plain fork() children). Keys and values are stored in that memory, encoded with the codec
// of task arguments (cfx/detail/wire.hpp): any type a task argument may be; arithmetic values
// and pairs, tuples and arrays of them are copied as raw bytes. Keys are equal when their
// encodings are (so 0.0 and -0.0 are two keys, as are two NaNs with different bits).
//
// Constructing one makes a new, empty dict: SharedDict<K, V>() (Python's Manager().dict()),
// or SharedDict<K, V>(capacity_bytes). A moved-from handle refers to nothing; every operation
// on it throws cfx::Error (the decoder builds handles without making a dict, cfx/sync.hpp).
//
// Storage. Entries live in an arena of `capacity_bytes` (default 1 GiB) reserved up front as a
// sparse memfd: only the pages entries occupy are ever backed by memory. An entry takes its
// encoded key and value plus 8 bytes, rounded up to a power of two (at least 32); freed
// entries are reused. A set that finds no room throws cfx::Error and changes nothing.
//
// One robust process-shared mutex guards the table. A process killed while it holds it
// (SIGKILL in the middle of a set) hands it to the next user, and the dict stays consistent:
// an entry is written in full before one store publishes it, so the dead process's change
// happened entirely or not at all (at worst its memory is not reused).
//
// Thread safety: distinct dicts, and distinct or shared handles to one dict: safe. Assigning
// to or destroying one handle object while another thread uses that same handle object is
// not, as for std::shared_ptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "cfx/detail/codec_scratch.hpp"
#include "cfx/detail/shared_block.hpp"
#include "cfx/errors.hpp"
#include "cfx/sync.hpp"

namespace cfx {

namespace detail {

/// The untyped table under every SharedDict (lib/toolkit/shared_dict.cpp): keys and values
/// are encoded bytes.
struct DictOps {
  /// Makes the new value from the old one (found: false when the key is absent) into `out`;
  /// may throw, which changes nothing.
  using UpdateFn = void (*)(void* context, const char* old, std::size_t old_n, bool found,
                            std::vector<char>& out);

  static SharedBlock create(std::size_t capacity_bytes);
  /// Copies the value of `key` into `out`; false if absent.
  static bool get(const SharedBlock& block, std::size_t offset, const std::vector<char>& key,
                  std::vector<char>& out);
  static void set(const SharedBlock& block, std::size_t offset, const std::vector<char>& key,
                  const std::vector<char>& value);
  static bool erase(const SharedBlock& block, std::size_t offset, const std::vector<char>& key);
  static bool contains(const SharedBlock& block, std::size_t offset, const std::vector<char>& key);
  static std::size_t size(const SharedBlock& block, std::size_t offset);
  /// Every entry as [u32 key bytes][u32 value bytes][key][value], one after another; returns
  /// their number.
  static std::size_t items(const SharedBlock& block, std::size_t offset, std::vector<char>& out);
  /// Under the lock: fn(old), then stores what it made. The new value's bytes stay in `out`.
  static void update(const SharedBlock& block, std::size_t offset, const std::vector<char>& key,
                     void* context, UpdateFn fn, std::vector<char>& out);
};

struct KeyScratch;
struct ValueScratch;

}  // namespace detail

/// Manager().dict(): a map from K to V in shared memory. Operations are atomic, each under
/// the dict's lock; update(k, fn) is the atomic read-modify-write Python lacks.
template <class K, class V>
class SharedDict final : public detail::SyncHandle {
  static_assert(detail::is_encodable_v<K> && detail::is_decodable_v<K> &&
                    detail::is_encodable_v<V> && detail::is_decodable_v<V>,
                "cfx::SharedDict<K, V>: K and V must be task argument types (raw, or "
                "to_json/from_json)");

 public:
  static constexpr const char* type_name = "cfx::SharedDict";
  /// Bytes of shared memory reserved for entries unless the constructor says otherwise.
  static constexpr std::size_t default_capacity_bytes = std::size_t{1} << 30;

  /// A new, empty dict whose entries may take up to default_capacity_bytes.
  SharedDict() : SharedDict(default_capacity_bytes) {}
  /// A new, empty dict whose entries may take up to `capacity_bytes` (at least 4096).
  explicit SharedDict(std::size_t capacity_bytes)
      : SyncHandle(detail::DictOps::create(capacity_bytes), 0) {}

  /// The value of `key`, or nullopt (Python's d.get(k)).
  std::optional<V> get(const K& key) const {
    auto& out = detail::scratch_buffer<detail::DecodeScratch>();
    if (!detail::DictOps::get(shared(), offset_, encode_key(key), out)) return std::nullopt;
    return detail::decode_bytes<V>(out.data(), out.size());
  }
  /// d[k] = v.
  void set(const K& key, const V& value) {
    auto& v = detail::scratch_buffer<detail::ValueScratch>();
    detail::Writer w(v);
    detail::encode_value(w, value);
    detail::DictOps::set(shared(), offset_, encode_key(key), v);
  }
  /// del d[k], without KeyError: false if it was absent.
  bool erase(const K& key) { return detail::DictOps::erase(shared(), offset_, encode_key(key)); }
  bool contains(const K& key) const {
    return detail::DictOps::contains(shared(), offset_, encode_key(key));
  }
  std::size_t size() const { return detail::DictOps::size(shared(), offset_); }
  bool empty() const { return size() == 0; }
  /// A snapshot of every entry, in no particular order.
  std::vector<std::pair<K, V>> items() const {
    auto& bytes = detail::scratch_buffer<detail::DecodeScratch>();
    std::size_t n = detail::DictOps::items(shared(), offset_, bytes);
    std::vector<std::pair<K, V>> result;
    result.reserve(n);
    detail::Reader r(bytes.data(), bytes.size());
    for (std::size_t i = 0; i < n; ++i) {
      auto key_n = r.get<std::uint32_t>();
      auto value_n = r.get<std::uint32_t>();
      const char* k = r.take(key_n);
      const char* v = r.take(value_n);
      result.emplace_back(detail::decode_bytes<K>(k, key_n), detail::decode_bytes<V>(v, value_n));
    }
    return result;
  }
  /// Atomically d[k] = fn(d.get(k)) and returns the new value: no other operation on this
  /// dict, from any thread or process, comes in between. fn: V(std::optional<V>); it runs
  /// under the dict's lock, so it must not use this dict (that throws cfx::Error); if it
  /// throws, nothing changes and the exception propagates.
  template <class Fn>
  V update(const K& key, Fn fn) {
    std::vector<char> k;  // its own buffer: fn may use other toolkit objects
    detail::Writer kw(k);
    detail::encode_value(kw, key);
    std::optional<V> made;
    auto call = [&](const char* old, std::size_t n, bool found, std::vector<char>& out) {
      std::optional<V> before;
      if (found) before = detail::decode_bytes<V>(old, n);
      made.emplace(fn(std::move(before)));
      detail::Writer w(out);
      detail::encode_value(w, *made);
    };
    using Call = decltype(call);
    std::vector<char> out;
    detail::DictOps::update(
        shared(), offset_, k, &call,
        [](void* c, const char* old, std::size_t n, bool found, std::vector<char>& o) {
          (*static_cast<Call*>(c))(old, n, found, o);
        },
        out);
    return std::move(*made);
  }

 private:
  friend detail::HandleAccess;
  using SyncHandle::SyncHandle;

  const detail::SharedBlock& shared() const { return checked_block(type_name); }
  static const std::vector<char>& encode_key(const K& key) {
    auto& k = detail::scratch_buffer<detail::KeyScratch>();
    detail::Writer w(k);
    detail::encode_value(w, key);
    return k;
  }
};

}  // namespace cfx
