// The engine behind Executor::map / starmap / map_unordered. Internal.
//
// Inputs are cut into chunks of MapOptions::chunksize items; each chunk is one task whose
// result is a ChunkResult (the values of the items that ran, and the exception of the first
// item that threw, which ends the chunk). Without buffersize every chunk is submitted inside
// map(); with it, `buffersize` chunks are submitted there and one more each time a chunk
// starts being consumed (Python 3.14 semantics).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <type_traits>
#include <unordered_map>
#include <variant>
#include <vector>

#include "cfx/detail/bytes.hpp"
#include "cfx/future.hpp"

namespace cfx::detail {

/// What a map over a function returning R yields: R, or std::monostate for void.
template <class R>
using map_value_t = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

/// Room for every result of a map on threads, written in place: chunk c's task constructs
/// its results from at(c) on, and the consumer reads (and moves) them there. One allocation
/// for the whole map instead of a vector per chunk: on a machine where a fresh 4 KiB page
/// costs microseconds, per-chunk vectors cost more than the items. A big slab is the spare
/// byte buffer (take_spare_bytes) when that is big enough, and is given back to it: memory
/// already touched, where a fresh 40 MB slab, even on huge pages, took longer to fault in
/// than the 10,000,000 items it holds took to compute. Shared by the chunk tasks, their
/// results and the map; the last one frees it.
template <class V>
class ResultSlab {
 public:
  ResultSlab(std::size_t items, std::size_t chunksize)
      : chunksize_(chunksize), made_((items + chunksize - 1) / chunksize, 0) {
    if (items == 0) return;
    items_ = items;
    if (in_bytes()) {
      // The buffer's capacity is raw memory for the results: nothing is added to the
      // vector while the slab lives, and the results are destroyed before it is given back.
      reserve_bulk(bytes_, items * sizeof(V));
      data_ = reinterpret_cast<V*>(bytes_.data());
    } else {
      data_ = std::allocator<V>().allocate(items);
    }
  }
  ResultSlab(const ResultSlab&) = delete;
  ResultSlab& operator=(const ResultSlab&) = delete;
  ~ResultSlab() {
    for (std::size_t c = 0; c < made_.size(); ++c) destroy(c);
    if (in_bytes())
      give_spare_bytes(std::move(bytes_));
    else if (data_)
      std::allocator<V>().deallocate(data_, items_);
  }

  /// Where chunk c's results go.
  V* at(std::size_t c) { return data_ + c * chunksize_; }
  /// Chunk c's task constructed `n` results (before its future completes).
  void set_made(std::size_t c, std::size_t n) { made_[c] = n; }
  std::size_t made(std::size_t c) const { return made_[c]; }
  /// Ends chunk c's results once they are consumed (its future completed).
  void destroy(std::size_t c) {
    if constexpr (!std::is_trivially_destructible_v<V>) std::destroy_n(at(c), made_[c]);
    made_[c] = 0;
  }

 private:
  /// A slab big enough to be worth reusing, of results that a byte buffer's storage (aligned
  /// as operator new aligns) can hold.
  bool in_bytes() const {
    return items_ * sizeof(V) >= kBulkBytes && alignof(V) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__;
  }

  std::vector<char> bytes_;  // the storage of a slab in_bytes()
  V* data_ = nullptr;
  std::size_t items_ = 0;
  std::size_t chunksize_;
  std::vector<std::size_t> made_;  // chunk c's slot written only by its task, then the map
};

/// A view whose items live in it (a container map() was given by value) or are computed from
/// its own state (iota): a map may read them after map() returns. Any other input is the
/// caller's, and is copied during map().
template <class View>
inline constexpr bool owns_its_items_v = false;
template <class R>
inline constexpr bool owns_its_items_v<std::ranges::owning_view<R>> = true;
template <class W, class B>
inline constexpr bool owns_its_items_v<std::ranges::iota_view<W, B>> = true;

template <class V>
struct ChunkResult {
  using value_type = V;
  std::vector<V> values;     // outcomes of the items that ran, in input order
  std::exception_ptr error;  // the exception of the item after the last outcome, if one threw
  /// Set (maps on threads): the outcomes are chunk `chunk` of the slab, not `values`.
  std::shared_ptr<ResultSlab<V>> slab;
  std::size_t chunk = 0;
};

/// Produces and submits the next chunk; nullopt once the input (or the executor) is gone.
template <class V>
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  virtual std::optional<Future<ChunkResult<V>>> next() = 0;
};

using Deadline = std::optional<std::chrono::steady_clock::time_point>;

/// Completed chunk futures of an unordered map, filled by done-callbacks.
template <class V>
struct ArrivalQueue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Future<ChunkResult<V>>> done;

  void push(const Future<ChunkResult<V>>& f) {
    std::lock_guard lock(mutex);
    done.push_back(f);
    ready.notify_one();
  }
  std::optional<Future<ChunkResult<V>>> pop(const Deadline& deadline) {
    std::unique_lock lock(mutex);
    auto nonempty = [&] { return !done.empty(); };
    if (deadline) {
      if (!ready.wait_until(lock, *deadline, nonempty)) return std::nullopt;
    } else {
      ready.wait(lock, nonempty);
    }
    auto f = std::move(done.front());
    done.pop_front();
    return f;
  }
};

template <class V>
class MapEngine {
 public:
  MapEngine(std::unique_ptr<ChunkSource<V>> source, std::optional<std::size_t> buffersize,
            Deadline deadline, bool ordered)
      : source_(std::move(source)),
        deadline_(deadline),
        buffered_(buffersize.has_value()),
        ordered_(ordered) {
    if (!ordered_) arrivals_ = std::make_shared<ArrivalQueue<V>>();
    std::size_t eager = buffersize.value_or(static_cast<std::size_t>(-1));
    for (std::size_t i = 0; i < eager; ++i)
      if (!submit_one()) break;
    if (!buffered_) source_.reset();  // the whole input is consumed
  }
  MapEngine(const MapEngine&) = delete;
  MapEngine& operator=(const MapEngine&) = delete;
  /// Dropping a map result cancels the tasks that have not started.
  ~MapEngine() { cancel_all(); }

  V& current() { return data_[index_]; }
  bool finished() const noexcept { return finished_; }

  /// Moves to the next item; rethrows an item's exception when it is reached, throws
  /// TimeoutError past the deadline. After a throw the map is finished.
  void advance() {
    if (index_ + 1 < size_) {  // within the chunk: the per-item path, small enough to inline
      ++index_;
      return;
    }
    next_item();
  }

 private:
  void next_item() {
    if (finished_) return;
    if (started_) ++index_;
    started_ = true;
    while (index_ >= size_) {
      if (chunk_.error) fail(std::exchange(chunk_.error, nullptr));
      if (chunk_.slab) chunk_.slab->destroy(chunk_.chunk);  // consumed
      auto next = next_chunk();
      if (!next) {
        finished_ = true;
        return;
      }
      try {
        chunk_ = take_result(*next, deadline_);  // only this engine reads its chunks
      } catch (...) {
        next->cancel();
        fail(std::current_exception());
      }
      index_ = 0;
      if (chunk_.slab) {
        data_ = chunk_.slab->at(chunk_.chunk);
        size_ = chunk_.slab->made(chunk_.chunk);
      } else {
        data_ = chunk_.values.data();
        size_ = chunk_.values.size();
      }
    }
  }

  [[noreturn]] void fail(std::exception_ptr e) {
    cancel_all();
    std::rethrow_exception(e);
  }

  void cancel_all() noexcept {
    finished_ = true;
    size_ = 0;  // advance() stays on the slow path, which sees finished_
    for (auto& f : inflight_) f.cancel();
    inflight_.clear();
    for (auto& [key, f] : unordered_inflight_) f.cancel();
    unordered_inflight_.clear();
    source_.reset();
  }

  bool submit_one() {
    if (!source_) return false;
    auto f = source_->next();
    if (!f) {
      source_.reset();
      return false;
    }
    if (ordered_) {
      inflight_.push_back(std::move(*f));
    } else {
      unordered_inflight_.emplace(state_of(*f), *f);
      f->add_done_callback([q = arrivals_](const Future<ChunkResult<V>>& done) { q->push(done); });
    }
    return true;
  }

  /// The next chunk to consume (submitting one more first when buffered).
  std::optional<Future<ChunkResult<V>>> next_chunk() {
    if (buffered_) {
      try {
        submit_one();
      } catch (...) {
        fail(std::current_exception());
      }
    }
    if (ordered_) {
      if (inflight_.empty()) return std::nullopt;
      auto f = std::move(inflight_.front());
      inflight_.pop_front();
      return f;
    }
    if (unordered_inflight_.empty()) return std::nullopt;
    auto f = arrivals_->pop(deadline_);
    if (!f) fail(std::make_exception_ptr(TimeoutError()));
    unordered_inflight_.erase(state_of(*f));
    return f;
  }

  std::unique_ptr<ChunkSource<V>> source_;
  Deadline deadline_;
  bool buffered_;
  bool ordered_;
  std::deque<Future<ChunkResult<V>>> inflight_;  // ordered: submission order
  std::unordered_map<const void*, Future<ChunkResult<V>>> unordered_inflight_;
  std::shared_ptr<ArrivalQueue<V>> arrivals_;
  ChunkResult<V> chunk_;
  V* data_ = nullptr;     // chunk_'s outcomes, in its values or its slab
  std::size_t size_ = 0;  // how many
  std::size_t index_ = 0;
  bool started_ = false;
  bool finished_ = false;
};

}  // namespace cfx::detail

namespace cfx {

/// The result of Executor::map, starmap and map_unordered: an input range, consumed once.
/// Move-only. Destroying it cancels the chunks that have not started.
///
/// Thread safety: distinct objects: safe; shared objects: unsafe (iterate it from one thread
/// at a time). It may outlive its executor, which then submits no further chunk.
template <class V>
class MapResult {
 public:
  using value_type = V;

  class iterator {
   public:
    using value_type = V;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    V& operator*() const { return engine_->current(); }
    V* operator->() const { return &engine_->current(); }
    iterator& operator++() {
      engine_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return it.engine_->finished();
    }

   private:
    friend class MapResult;
    explicit iterator(detail::MapEngine<V>* e) : engine_(e) {}
    detail::MapEngine<V>* engine_ = nullptr;
  };

  explicit MapResult(std::unique_ptr<detail::MapEngine<V>> engine) : engine_(std::move(engine)) {}

  /// Waits for the first item (may rethrow its exception or throw TimeoutError).
  iterator begin() {
    if (!begun_) {
      begun_ = true;
      engine_->advance();
    }
    return iterator(engine_.get());
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  /// Collects every item into a vector (rethrows the first exception).
  std::vector<V> to_vector() {
    std::vector<V> out;
    for (auto& v : *this) out.push_back(std::move(v));
    return out;
  }

 private:
  std::unique_ptr<detail::MapEngine<V>> engine_;
  bool begun_ = false;
};

}  // namespace cfx
