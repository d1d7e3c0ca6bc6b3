// cfx/shared_dict.hpp: the untyped hash table under SharedDict.
//
// One block: a DictState in its first page, then an arena from which entries and the slot
// table are allocated (power-of-two size classes with a free list each, else a bump
// pointer). The table is open addressing with linear probing; a slot is one 64-bit word:
// 0 empty, 1 erased, else the entry's offset in the block with 16 bits of its hash on top.
// An entry is [u32 key bytes][u32 value bytes][key][value], never changed once published.
//
// Every change is ordered so that a process dying at any instruction leaves the table
// consistent (the mutex is robust; see the file comment of cfx/shared_dict.hpp):
//  - a new entry (or a grown table) is written in memory no slot refers to, then published
//    by one store (of its slot, or of `table`); the memory it replaces is freed after;
//  - allocating and freeing each publish with one store (a free list's head, the bump
//    pointer), so a death in between leaks a block at worst;
//  - `size` and `erased` are counted after the store that changes them, and recounted from
//    the table by the next locker when the mutex reports a dead holder.
#include <algorithm>
#include <atomic>
#include <bit>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>

#include "cfx/errors.hpp"
#include "cfx/shared_dict.hpp"

namespace cfx::detail {
namespace {

constexpr std::size_t page_bytes = 4096;
constexpr unsigned min_class_log2 = 5;  // 32-byte blocks
constexpr unsigned n_classes = 48 - min_class_log2;
constexpr std::uint64_t initial_slots = 16;
constexpr std::uint64_t slot_empty = 0;
constexpr std::uint64_t slot_erased = 1;
constexpr std::uint64_t offset_mask = (std::uint64_t{1} << 48) - 1;
constexpr std::size_t entry_header = 2 * sizeof(std::uint32_t);

struct DictState {
  SharedMutex mutex;
  std::uint64_t arena_begin;  // offsets in the block
  std::uint64_t arena_end;
  std::atomic<std::uint64_t> arena_next;  // bump pointer
  std::atomic<std::uint64_t> table;       // offset of [u64 slots][u64 slot...]
  std::atomic<std::uint64_t> size;        // live entries
  std::uint64_t erased;                   // erased slots in the table
  std::atomic<std::uint64_t> free_head[n_classes];
};
static_assert(sizeof(DictState) <= page_bytes);

using Guard = std::lock_guard<SharedMutex>;

/// The table as the operations see it, resolved once per locked operation.
class Table {
 public:
  Table(const SharedBlock& block, std::size_t offset)
      : base_(static_cast<char*>(block.data())), s_(shared_at<DictState>(block, offset)) {}

  DictState& state() const { return s_; }

  // --- hashing and lookup -------------------------------------------------------------

  static std::uint64_t hash(const std::vector<char>& key) { return hash(key.data(), key.size()); }
  static std::uint64_t hash(const char* key, std::size_t n) {
    std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then a final mix (murmur3's fmix64)
    for (std::size_t i = 0; i < n; ++i)
      h = (h ^ static_cast<unsigned char>(key[i])) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
  }

  std::uint64_t n_slots() const { return word(s_.table.load(std::memory_order_relaxed)); }
  std::atomic<std::uint64_t>& slot(std::uint64_t i) const {
    return atomic_word(s_.table.load(std::memory_order_relaxed) + 8 + 8 * i);
  }

  struct Found {
    std::uint64_t index;  // the key's slot, or where to insert it
    bool present;
  };
  /// Where `key` is, or the slot an insert should take (the first erased one on its path).
  Found find(const std::vector<char>& key, std::uint64_t h) const {
    std::uint64_t mask = n_slots() - 1;
    std::uint64_t tag = h >> 48;
    std::optional<std::uint64_t> reuse;
    for (std::uint64_t i = h & mask;; i = (i + 1) & mask) {
      std::uint64_t v = slot(i).load(std::memory_order_relaxed);
      if (v == slot_empty) return {reuse.value_or(i), false};
      if (v == slot_erased) {
        if (!reuse) reuse = i;
      } else if (v >> 48 == tag && key_equals(v & offset_mask, key)) {
        return {i, true};
      }
    }
  }

  // --- entries --------------------------------------------------------------------------

  std::uint32_t key_n(std::uint64_t entry) const { return u32(entry); }
  std::uint32_t value_n(std::uint64_t entry) const { return u32(entry + 4); }
  const char* key_at(std::uint64_t entry) const { return base_ + entry + entry_header; }
  const char* value_at(std::uint64_t entry) const { return key_at(entry) + key_n(entry); }
  bool key_equals(std::uint64_t entry, const std::vector<char>& key) const {
    return key_n(entry) == key.size() && std::memcmp(key_at(entry), key.data(), key.size()) == 0;
  }

  /// A new entry, written in full but not yet published.
  std::uint64_t write_entry(const std::vector<char>& key, const char* value, std::size_t value_n) {
    auto k = checked_u32(key.size(), "key");
    auto v = checked_u32(value_n, "value");
    std::uint64_t entry = allocate(entry_header + key.size() + value_n);
    std::memcpy(base_ + entry, &k, 4);
    std::memcpy(base_ + entry + 4, &v, 4);
    std::memcpy(base_ + entry + entry_header, key.data(), key.size());
    if (value_n) std::memcpy(base_ + entry + entry_header + key.size(), value, value_n);
    return entry;
  }
  void free_entry(std::uint64_t entry) {
    release(entry, entry_header + key_n(entry) + value_n(entry));
  }

  /// Publishes `entry` for `key` at the slot find() gave.
  void put(const Found& at, std::uint64_t h, std::uint64_t entry) {
    auto& s = slot(at.index);
    std::uint64_t before = s.load(std::memory_order_relaxed);
    s.store((h >> 48) << 48 | entry, std::memory_order_release);
    if (at.present) {
      free_entry(before & offset_mask);
      return;
    }
    s_.size.store(s_.size.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (before == slot_erased) --s_.erased;
  }

  void erase(std::uint64_t index) {
    auto& s = slot(index);
    std::uint64_t entry = s.load(std::memory_order_relaxed) & offset_mask;
    s.store(slot_erased, std::memory_order_release);
    s_.size.store(s_.size.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    ++s_.erased;
    free_entry(entry);
  }

  /// Grows (or cleans) the table before an insert would fill it past three quarters.
  void make_room_for_one() {
    std::uint64_t n = n_slots();
    std::uint64_t used = s_.size.load(std::memory_order_relaxed) + s_.erased + 1;
    if (used * 4 <= n * 3) return;
    std::uint64_t grown = std::max(initial_slots, std::bit_ceil((used + 1) * 2));
    std::uint64_t old_table = s_.table.load(std::memory_order_relaxed);
    std::uint64_t table = new_table(grown);
    for (std::uint64_t i = 0; i < n; ++i) {
      std::uint64_t v = slot(i).load(std::memory_order_relaxed);
      if (v == slot_empty || v == slot_erased) continue;
      std::uint64_t e = v & offset_mask;
      std::uint64_t h = hash_of_entry(e);
      for (std::uint64_t j = h & (grown - 1);; j = (j + 1) & (grown - 1)) {
        auto& w = atomic_word(table + 8 + 8 * j);
        if (w.load(std::memory_order_relaxed) == slot_empty) {
          w.store(v, std::memory_order_relaxed);
          break;
        }
      }
    }
    s_.table.store(table, std::memory_order_release);  // publishes the grown table
    s_.erased = 0;
    release(old_table, 8 + 8 * n);
  }

  /// Makes `size` and `erased` true again after a holder died between its store and its
  /// count.
  void recount() {
    std::uint64_t live = 0, erased = 0;
    for (std::uint64_t i = 0, n = n_slots(); i < n; ++i) {
      std::uint64_t v = slot(i).load(std::memory_order_relaxed);
      if (v == slot_erased) ++erased;
      if (v > slot_erased) ++live;
    }
    s_.size.store(live, std::memory_order_relaxed);
    s_.erased = erased;
  }

  std::uint64_t new_table(std::uint64_t slots) {
    std::uint64_t table = allocate(8 + 8 * slots);
    std::memset(base_ + table + 8, 0, 8 * slots);  // a reused block holds old bytes
    std::memcpy(base_ + table, &slots, 8);
    return table;
  }

 private:
  static std::uint32_t checked_u32(std::size_t n, const char* what) {
    if (n > UINT32_MAX)
      throw Error(std::string("cfx::SharedDict: a ") + what + " of " + std::to_string(n) +
                  " bytes (encoded) is over the 4 GiB an entry's part may take");
    return static_cast<std::uint32_t>(n);
  }
  std::uint64_t hash_of_entry(std::uint64_t entry) const {
    return hash(key_at(entry), key_n(entry));
  }
  std::uint32_t u32(std::uint64_t at) const {
    std::uint32_t v;
    std::memcpy(&v, base_ + at, 4);
    return v;
  }
  std::uint64_t word(std::uint64_t at) const {
    std::uint64_t v;
    std::memcpy(&v, base_ + at, 8);
    return v;
  }
  std::atomic<std::uint64_t>& atomic_word(std::uint64_t at) const {
    return *std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + at));
  }

  static unsigned size_class(std::uint64_t bytes) {
    unsigned log2 = static_cast<unsigned>(std::bit_width(std::max<std::uint64_t>(bytes, 32) - 1));
    return log2 - min_class_log2;
  }

  std::uint64_t allocate(std::uint64_t bytes) {
    unsigned c = size_class(bytes);
    if (c >= n_classes) throw_full(bytes);
    auto& head = s_.free_head[c];
    if (std::uint64_t block = head.load(std::memory_order_relaxed)) {
      head.store(atomic_word(block).load(std::memory_order_relaxed), std::memory_order_relaxed);
      return block;
    }
    std::uint64_t size = std::uint64_t{1} << (c + min_class_log2);
    std::uint64_t next = s_.arena_next.load(std::memory_order_relaxed);
    if (size > s_.arena_end - next) throw_full(bytes);
    s_.arena_next.store(next + size, std::memory_order_relaxed);
    return next;
  }
  void release(std::uint64_t block, std::uint64_t bytes) {
    auto& head = s_.free_head[size_class(bytes)];
    atomic_word(block).store(head.load(std::memory_order_relaxed), std::memory_order_relaxed);
    head.store(block, std::memory_order_release);
  }
  [[noreturn]] void throw_full(std::uint64_t bytes) const {
    throw Error("cfx::SharedDict: no room for an entry of " + std::to_string(bytes) +
                " bytes in its capacity of " + std::to_string(s_.arena_end - s_.arena_begin) +
                " bytes; make the dict with a larger capacity_bytes");
  }

  char* base_;
  DictState& s_;
};

/// The table, locked (and repaired if its last holder died) for one operation.
struct Locked {
  Table table;
  Guard guard;
  Locked(const SharedBlock& block, std::size_t offset)
      : table(block, offset), guard(table.state().mutex) {
    if (table.state().mutex.recovered()) table.recount();
  }
};

void store(Table& t, const std::vector<char>& key, std::uint64_t h, const char* value,
           std::size_t value_n) {
  t.make_room_for_one();
  auto at = t.find(key, h);
  t.put(at, h, t.write_entry(key, value, value_n));
}

}  // namespace

SharedBlock DictOps::create(std::size_t capacity_bytes) {
  if (capacity_bytes < page_bytes)
    throw Error("cfx::SharedDict: capacity of " + std::to_string(capacity_bytes) +
                " bytes is below the minimum of " + std::to_string(page_bytes));
  if (capacity_bytes > offset_mask - page_bytes)
    throw Error("cfx::SharedDict: capacity of " + std::to_string(capacity_bytes) +
                " bytes is over the 2^48 bytes a dict may address");
  SharedBlock block(page_bytes + capacity_bytes);  // sparse: pages appear where entries go
  auto& s = shared_at<DictState>(block, 0);
  s.mutex.init();
  s.arena_begin = page_bytes;
  s.arena_end = page_bytes + capacity_bytes;
  s.arena_next.store(page_bytes, std::memory_order_relaxed);
  Table t(block, 0);
  s.table.store(t.new_table(initial_slots), std::memory_order_relaxed);
  return block;
}

bool DictOps::get(const SharedBlock& block, std::size_t offset, const std::vector<char>& key,
                  std::vector<char>& out) {
  auto h = Table::hash(key);
  Locked l(block, offset);
  auto at = l.table.find(key, h);
  if (!at.present) return false;
  std::uint64_t entry = l.table.slot(at.index).load(std::memory_order_relaxed) & offset_mask;
  out.assign(l.table.value_at(entry), l.table.value_at(entry) + l.table.value_n(entry));
  return true;
}

void DictOps::set(const SharedBlock& block, std::size_t offset, const std::vector<char>& key,
                  const std::vector<char>& value) {
  auto h = Table::hash(key);
  Locked l(block, offset);
  store(l.table, key, h, value.data(), value.size());
}

bool DictOps::erase(const SharedBlock& block, std::size_t offset, const std::vector<char>& key) {
  auto h = Table::hash(key);
  Locked l(block, offset);
  auto at = l.table.find(key, h);
  if (!at.present) return false;
  l.table.erase(at.index);
  return true;
}

bool DictOps::contains(const SharedBlock& block, std::size_t offset, const std::vector<char>& key) {
  auto h = Table::hash(key);
  Locked l(block, offset);
  return l.table.find(key, h).present;
}

std::size_t DictOps::size(const SharedBlock& block, std::size_t offset) {
  Locked l(block, offset);  // which repairs the count a dead holder left stale
  return l.table.state().size.load(std::memory_order_relaxed);
}

std::size_t DictOps::items(const SharedBlock& block, std::size_t offset, std::vector<char>& out) {
  Locked l(block, offset);
  Writer w(out);
  std::size_t count = 0;
  for (std::uint64_t i = 0, n = l.table.n_slots(); i < n; ++i) {
    std::uint64_t v = l.table.slot(i).load(std::memory_order_relaxed);
    if (v <= slot_erased) continue;
    std::uint64_t e = v & offset_mask;
    w.put(l.table.key_n(e));
    w.put(l.table.value_n(e));
    w.put_bytes(l.table.key_at(e), l.table.key_n(e));
    w.put_bytes(l.table.value_at(e), l.table.value_n(e));
    ++count;
  }
  return count;
}

void DictOps::update(const SharedBlock& block, std::size_t offset, const std::vector<char>& key,
                     void* context, UpdateFn fn, std::vector<char>& out) {
  auto h = Table::hash(key);
  Locked l(block, offset);
  auto at = l.table.find(key, h);
  if (at.present) {
    std::uint64_t e = l.table.slot(at.index).load(std::memory_order_relaxed) & offset_mask;
    fn(context, l.table.value_at(e), l.table.value_n(e), true, out);
  } else {
    fn(context, nullptr, 0, false, out);
  }
  store(l.table, key, h, out.data(), out.size());
}

}  // namespace cfx::detail
