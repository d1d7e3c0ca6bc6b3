// cfx/queue.hpp: the untyped ring under Queue<T>.
//
// One block: a QueueState in its first page, then the ring. Records are [u32 length][bytes],
// written at monotonic byte positions (head, tail; the ring index is position % capacity), a
// record split in two where it crosses the ring's end. Every change happens under the
// robust mutex, in an order that leaves the state consistent wherever its process dies:
//  - put writes the record into free space, then publishes it with one store of tail, then
//    counts it;
//  - get copies the record out, then frees it with one store of head, then counts it.
// A dead process can therefore only leave `count` wrong, which the next locker recomputes
// from head and tail when the mutex reports the death (recovered()).
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>
#include <string>

#include "cfx/errors.hpp"
#include "cfx/queue.hpp"
#include "lib/cores.hpp"

namespace cfx::detail {
namespace {

constexpr std::size_t page_bytes = 4096;
// Pages the consumers have passed go back to the system in chunks this large (one madvise
// per chunk), for rings of at least release_min_chunks chunks; smaller rings keep theirs.
constexpr std::uint64_t release_chunk = std::uint64_t{1} << 20;
constexpr std::uint64_t release_min_chunks = 4;
constexpr std::size_t record_header = sizeof(std::uint32_t);
constexpr int spin_rounds = 200;  // pause instructions, a few microseconds in all

struct QueueState {
  SharedMutex mutex;
  SharedCondition not_empty;
  SharedCondition not_full;
  std::uint64_t capacity;     // ring bytes
  std::uint64_t maxsize;      // items; 0: no limit
  std::uint64_t ring_offset;  // of the ring from the block's start
  std::uint32_t releases;     // hand passed pages back (release_chunk divides capacity)
  std::atomic<std::uint32_t> closed;
  std::atomic<std::uint64_t> head;   // position of the first record
  std::atomic<std::uint64_t> tail;   // position after the last record
  std::atomic<std::uint64_t> count;  // records between them
};
static_assert(sizeof(QueueState) <= page_bytes);

using Guard = std::lock_guard<SharedMutex>;

QueueState& state_of(const SharedBlock& block, std::size_t offset) {
  return shared_at<QueueState>(block, offset);
}

char* ring_of(const SharedBlock& block, const QueueState& s) {
  return static_cast<char*>(block.data()) + s.ring_offset;
}

void ring_write(char* ring, std::uint64_t capacity, std::uint64_t pos, const void* src,
                std::size_t n) {
  auto at = pos % capacity;
  auto first = std::min<std::uint64_t>(n, capacity - at);
  std::memcpy(ring + at, src, first);
  if (n > first) std::memcpy(ring, static_cast<const char*>(src) + first, n - first);
}

void ring_read(const char* ring, std::uint64_t capacity, std::uint64_t pos, void* dst,
               std::size_t n) {
  auto at = pos % capacity;
  auto first = std::min<std::uint64_t>(n, capacity - at);
  std::memcpy(dst, ring + at, first);
  if (n > first) std::memcpy(static_cast<char*>(dst) + first, ring, n - first);
}

std::uint32_t record_length(const char* ring, const QueueState& s, std::uint64_t pos) {
  std::uint32_t n = 0;
  ring_read(ring, s.capacity, pos, &n, sizeof(n));
  return n;
}

std::uint64_t used_bytes(const QueueState& s) {
  return s.tail.load(std::memory_order_relaxed) - s.head.load(std::memory_order_relaxed);
}

/// After a holder died: count the records between head and tail again (the only value a
/// death can leave stale, see the file comment).
void recount(const SharedBlock& block, QueueState& s) {
  const char* ring = ring_of(block, s);
  std::uint64_t pos = s.head.load(std::memory_order_relaxed);
  std::uint64_t tail = s.tail.load(std::memory_order_relaxed);
  std::uint64_t n = 0;
  while (pos < tail) {
    pos += record_header + record_length(ring, s, pos);
    ++n;
  }
  s.count.store(n, std::memory_order_relaxed);
}

/// Spins a little while `busy()`: the other side of a queue usually finishes within a
/// microsecond, much less than falling asleep in the kernel and being woken costs both.
template <class Busy>
void spin_while(Busy busy) {
  for (int i = 0; i < spin_rounds && busy(); ++i) cpu_relax();
}

/// Takes the mutex (false if `deadline` passed first) and repairs the state if its last
/// holder died.
bool lock_state(const SharedBlock& block, QueueState& s, const SyncDeadline& deadline) {
  spin_while([&] { return s.mutex.owner_.load(std::memory_order_relaxed) != 0; });
  if (!s.mutex.lock_until(deadline)) return false;
  if (s.mutex.recovered()) recount(block, s);
  return true;
}

/// Notifies only when someone sleeps: the waiter counts itself under the mutex, which the
/// caller holds, so a zero here means nobody can miss this change.
void wake_one(SharedCondition& c) {
  if (c.waiters_.load(std::memory_order_relaxed) != 0) c.notify_one();
}
void wake_all(SharedCondition& c) {
  if (c.waiters_.load(std::memory_order_relaxed) != 0) c.notify_all();
}

/// Hands back the whole chunks that the get moving head from `from` to `to` passed, unless
/// the producers' next lap has already reached into them.
void release_passed_pages(char* ring, const QueueState& s, std::uint64_t from, std::uint64_t to) {
  if (!s.releases) return;
  std::uint64_t lo = from / release_chunk * release_chunk;
  std::uint64_t hi = to / release_chunk * release_chunk;
  std::uint64_t tail = s.tail.load(std::memory_order_relaxed);
  if (tail > lo + s.capacity)  // the next lap's records start inside [lo, ...)
    lo = (tail - s.capacity + release_chunk - 1) / release_chunk * release_chunk;
  while (lo < hi) {
    auto at = lo % s.capacity;
    auto len = std::min(hi - lo, s.capacity - at);
    ::madvise(ring + at, len, MADV_REMOVE);  // a refusal only keeps the pages
    lo += len;
  }
}

[[noreturn]] void throw_closed(const char* doing) {
  throw Error(std::string("cfx::Queue: ") + doing + " a closed queue");
}

}  // namespace

SharedBlock QueueOps::create(std::size_t maxsize, std::size_t capacity_bytes) {
  if (capacity_bytes < page_bytes)
    throw Error("cfx::Queue: capacity of " + std::to_string(capacity_bytes) +
                " bytes is below the minimum of " + std::to_string(page_bytes));
  std::uint64_t capacity = (capacity_bytes + page_bytes - 1) / page_bytes * page_bytes;
  bool releases = capacity % release_chunk == 0 && capacity / release_chunk >= release_min_chunks;
  SharedBlock block(page_bytes + capacity);  // sparse: pages appear where items are written
  auto& s = state_of(block, 0);
  s.mutex.init();
  s.not_empty.init();
  s.not_full.init();
  s.capacity = capacity;
  s.maxsize = maxsize;
  s.ring_offset = page_bytes;
  s.releases = releases ? 1 : 0;
  return block;
}

bool QueueOps::put(const SharedBlock& block, std::size_t offset, const char* data, std::size_t n,
                   const SyncDeadline& deadline) {
  auto& s = state_of(block, offset);
  std::uint64_t need = record_header + n;
  if (n > UINT32_MAX || need > s.capacity)
    throw Error("cfx::Queue: an item of " + std::to_string(n) +
                " bytes (encoded) does not fit the queue's capacity of " +
                std::to_string(s.capacity) + " bytes; make the queue with a larger capacity_bytes");
  if (!lock_state(block, s, deadline)) return false;
  Guard guard(s.mutex, std::adopt_lock);
  auto has_room = [&] {
    if (s.closed.load(std::memory_order_relaxed)) throw_closed("put on");
    return (s.maxsize == 0 || s.count.load(std::memory_order_relaxed) < s.maxsize) &&
           s.capacity - used_bytes(s) >= need;
  };
  if (!s.not_full.wait(s.mutex, deadline, has_room)) return false;
  auto tail = s.tail.load(std::memory_order_relaxed);
  auto length = static_cast<std::uint32_t>(n);
  char* ring = ring_of(block, s);
  ring_write(ring, s.capacity, tail, &length, sizeof(length));
  ring_write(ring, s.capacity, tail + record_header, data, n);
  s.tail.store(tail + need, std::memory_order_release);  // publishes the record
  s.count.store(s.count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  wake_one(s.not_empty);
  return true;
}

bool QueueOps::get(const SharedBlock& block, std::size_t offset, std::vector<char>& out,
                   const SyncDeadline& deadline) {
  auto& s = state_of(block, offset);
  auto nothing_yet = [&] {
    return s.count.load(std::memory_order_relaxed) == 0 &&
           !s.closed.load(std::memory_order_relaxed);
  };
  if (nothing_yet() && (!deadline || *deadline > std::chrono::steady_clock::now()))
    spin_while(nothing_yet);
  if (!lock_state(block, s, deadline)) return false;
  Guard guard(s.mutex, std::adopt_lock);
  auto has_item = [&] {
    if (s.count.load(std::memory_order_relaxed) != 0) return true;
    if (s.closed.load(std::memory_order_relaxed)) throw_closed("get from");
    return false;
  };
  if (!s.not_empty.wait(s.mutex, deadline, has_item)) return false;
  auto head = s.head.load(std::memory_order_relaxed);
  char* ring = ring_of(block, s);
  auto n = record_length(ring, s, head);
  out.resize(n);
  ring_read(ring, s.capacity, head + record_header, out.data(), n);
  auto next = head + record_header + n;
  s.head.store(next, std::memory_order_release);  // frees the record
  s.count.store(s.count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  release_passed_pages(ring, s, head, next);
  wake_all(s.not_full);  // all: the room freed may suit another waiter's item than the first's
  return true;
}

std::size_t QueueOps::qsize(const SharedBlock& block, std::size_t offset) {
  auto& s = state_of(block, offset);
  lock_state(block, s, std::nullopt);  // which repairs the count a dead holder left stale
  Guard guard(s.mutex, std::adopt_lock);
  return s.count.load(std::memory_order_relaxed);
}

std::size_t QueueOps::maxsize(const SharedBlock& block, std::size_t offset) {
  return state_of(block, offset).maxsize;
}

std::size_t QueueOps::capacity(const SharedBlock& block, std::size_t offset) {
  return state_of(block, offset).capacity;
}

void QueueOps::close(const SharedBlock& block, std::size_t offset) {
  auto& s = state_of(block, offset);
  lock_state(block, s, std::nullopt);
  Guard guard(s.mutex, std::adopt_lock);
  s.closed.store(1, std::memory_order_relaxed);
  wake_all(s.not_empty);
  wake_all(s.not_full);
}

bool QueueOps::closed(const SharedBlock& block, std::size_t offset) {
  return state_of(block, offset).closed.load(std::memory_order_relaxed) != 0;
}

}  // namespace cfx::detail
