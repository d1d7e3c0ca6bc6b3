// cfx::as_completed and cfx::wait (docs/concepts.md, "as_completed" and "wait").
//
// Both take any input range of cfx::Future<T> (vector, list, set, unordered_set, a view, a
// braced list) or a map keyed by futures, whose keys are used: Python's
// `{executor.submit(fn, x): x for x in xs}` is a std::unordered_map<cfx::Future<R>, X> (or a
// std::map), and the futures they hand back can be looked up in it. The concepts
// cfx::FutureRange and cfx::FutureMap say what is accepted.
//
// Both install one small waiter node on every unfinished future; a completing future pushes
// its index into one shared queue, so the cost is O(n) in the number of futures, as in
// CPython's _base.py. Cancellation counts as done at once and wakes the waiters.
//
// Thread safety: as_completed and wait may be called from any thread, and several may
// watch the same futures at once. The object as_completed returns is not shared: iterate
// it from one thread (distinct objects: safe; shared objects: unsafe).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cfx/future.hpp"

namespace cfx {

namespace detail {
template <class F>
inline constexpr bool is_future_v = false;
template <class T>
inline constexpr bool is_future_v<Future<T>> = true;
}  // namespace detail

/// An input range whose elements are cfx::Future<T>: a std::vector, std::list, std::set,
/// std::unordered_set, std::span, a view (std::views::filter, transform...), ...
template <class Range>
concept FutureRange = std::ranges::input_range<Range> &&
    detail::is_future_v<std::remove_cv_t<std::ranges::range_value_t<Range>>>;

/// An input range of pairs whose `first` is a cfx::Future<T>: a std::unordered_map or std::map
/// keyed by futures (or a range of such pairs). as_completed and wait use the keys.
template <class Range>
concept FutureMap = std::ranges::input_range<Range> && requires {
  typename std::ranges::range_value_t<Range>::first_type;
} && detail::is_future_v<std::remove_cv_t<typename std::ranges::range_value_t<Range>::first_type>>;

/// What cfx::as_completed and cfx::wait accept.
template <class Range>
concept FutureRangeOrMap = FutureRange<Range> || FutureMap<Range>;

/// When cfx::wait returns.
enum class ReturnWhen { first_completed, first_exception, all_completed };

/// What cfx::wait returns: `auto [done, not_done] = cfx::wait(fs);`
template <class T>
struct DoneAndNotDone {
  std::vector<Future<T>> done;
  std::vector<Future<T>> not_done;
};

namespace detail {

/// Indices of futures that completed, in completion order.
class CompletionQueue {
 public:
  void push(std::size_t index);
  /// Moves every queued index into `out`; waits (until the deadline, if any) while empty.
  /// Returns false on timeout with nothing queued.
  bool pop_all(std::vector<std::size_t>& out,
               const std::optional<std::chrono::steady_clock::time_point>& deadline);

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<std::size_t> indices_;
};

struct QueueWaiter final : WaiterNode {
  CompletionQueue* queue = nullptr;
  std::size_t index = 0;
  void on_done(StateBase&) noexcept override { queue->push(index); }
};

/// The message of as_completed's TimeoutError.
std::string unfinished_message(std::size_t pending, std::size_t total);

/// The future in an element of a FutureRange (the element) or of a FutureMap (its key).
template <class E>
auto& future_in(E& element) noexcept {
  if constexpr (is_future_v<std::remove_cv_t<E>>)
    return element;
  else
    return element.first;
}

/// Whether unique_futures may move the futures out of `Range` rather than copy them: its
/// elements are temporaries (a transform view's), or it is a container handed over as an
/// rvalue. Never the futures behind a view or a borrowed range: they belong to someone else.
template <class Range>
inline constexpr bool may_take_futures_v =
    !std::is_lvalue_reference_v<std::ranges::range_reference_t<Range>> ||
    (!std::is_lvalue_reference_v<Range> && !std::ranges::view<std::remove_cvref_t<Range>> &&
     !std::ranges::borrowed_range<Range>);

/// Copies (or takes) the futures of a FutureRange or the keys of a FutureMap, dropping
/// duplicates but keeping first-seen order.
template <class T, class Range>
std::vector<Future<T>> unique_futures(Range&& futures) {
  std::vector<Future<T>> out;
  std::unordered_set<const void*> seen;
  if constexpr (std::ranges::sized_range<Range>) {
    out.reserve(static_cast<std::size_t>(std::ranges::size(futures)));
    seen.reserve(static_cast<std::size_t>(std::ranges::size(futures)));
  }
  for (auto&& element : futures) {
    auto& f = future_in(element);
    if (!seen.insert(state_of(f)).second) continue;
    if constexpr (may_take_futures_v<Range>)
      out.push_back(std::move(f));  // a copy where f is const (a map's key, a set's element)
    else
      out.push_back(f);
  }
  return out;
}

/// Installs a QueueWaiter on each future of `fs`; those already done go to `already_done`.
/// Removes the nodes that are still installed when destroyed.
template <class T>
class WaiterSet {
 public:
  WaiterSet(const std::vector<Future<T>>& fs, std::vector<std::size_t>& already_done)
      : fs_(fs), nodes_(fs.size()) {
    for (std::size_t i = 0; i < fs.size(); ++i) {
      nodes_[i].queue = &queue_;
      nodes_[i].index = i;
      if (!state_of(fs[i])->add_waiter(&nodes_[i])) {
        nodes_[i].queue = nullptr;  // never installed
        already_done.push_back(i);
      }
    }
  }
  WaiterSet(const WaiterSet&) = delete;
  WaiterSet& operator=(const WaiterSet&) = delete;
  ~WaiterSet() {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].queue) state_of(fs_[i])->remove_waiter(&nodes_[i]);
  }
  CompletionQueue& queue() noexcept { return queue_; }
  /// Future i has been handed out and completed: its node is no longer installed (publish
  /// unlinked it), so the destructor must not touch fs_[i], which may be gone.
  void forget(std::size_t i) noexcept { nodes_[i].queue = nullptr; }

 private:
  const std::vector<Future<T>>& fs_;
  CompletionQueue queue_;
  std::vector<QueueWaiter> nodes_;
};

template <class Range>
struct future_type_of;
template <FutureRange Range>
struct future_type_of<Range> {
  using type = std::remove_cv_t<std::ranges::range_value_t<Range>>;
};
template <FutureMap Range>
struct future_type_of<Range> {
  using type = std::remove_cv_t<typename std::ranges::range_value_t<Range>::first_type>;
};

/// R for a range of Future<R> or a map keyed by Future<R>.
template <FutureRangeOrMap Range>
using range_future_value_t = typename future_type_of<Range>::type::value_type;

}  // namespace detail

/// Iterates over futures as they complete; returned by cfx::as_completed. Not copyable; use
/// it directly in a range-for. Yields each distinct future once: those already done first,
/// then the others in completion order. With a timeout, counted from the as_completed()
/// call, the iteration throws TimeoutError("N (of M) futures unfinished") once it would
/// have to wait past the deadline.
///
/// Thread safety: distinct objects: safe; shared objects: unsafe.
template <class T>
class AsCompleted {
 public:
  class iterator {
   public:
    using value_type = Future<T>;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    Future<T>& operator*() const { return owner_->current(); }
    Future<T>* operator->() const { return &owner_->current(); }
    iterator& operator++() {
      owner_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return it.owner_->finished();
    }

   private:
    friend class AsCompleted;
    explicit iterator(AsCompleted* owner) : owner_(owner) {}
    AsCompleted* owner_ = nullptr;
  };

  /// Use cfx::as_completed rather than this.
  template <FutureRangeOrMap Range>
  AsCompleted(Range&& futures, std::optional<std::chrono::steady_clock::time_point> deadline)
      : futures_(detail::unique_futures<T>(std::forward<Range>(futures))),
        deadline_(deadline),
        waiters_(futures_, ready_) {}
  AsCompleted(const AsCompleted&) = delete;
  AsCompleted& operator=(const AsCompleted&) = delete;

  /// Positions on the first future (may block, may throw TimeoutError).
  iterator begin() {
    if (!started_) {
      started_ = true;
      advance();
    }
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }
  /// True once every future has been yielded.
  bool finished() const noexcept { return finished_; }

 private:
  Future<T>& current() { return current_; }

  void advance() {
    current_ = Future<T>();  // hold no reference to a future already yielded
    if (next_ < ready_.size()) {
      yield(ready_[next_++]);
      return;
    }
    std::size_t yielded = next_;
    ready_.clear();
    next_ = 0;
    if (yielded_total_ + yielded == futures_.size()) {
      yielded_total_ += yielded;
      finished_ = true;
      return;
    }
    yielded_total_ += yielded;
    if (!waiters_.queue().pop_all(ready_, deadline_))
      throw TimeoutError(
          detail::unfinished_message(futures_.size() - yielded_total_, futures_.size()));
    yield(ready_[next_++]);
  }

  void yield(std::size_t i) {
    waiters_.forget(i);
    current_ = std::move(futures_[i]);
  }

  std::vector<Future<T>> futures_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::vector<std::size_t> ready_;  // indices ready to yield, in order
  detail::WaiterSet<T> waiters_;
  std::size_t next_ = 0;
  std::size_t yielded_total_ = 0;
  Future<T> current_;
  bool started_ = false;
  bool finished_ = false;
};

/// Yields the futures of `futures` as they complete, each as a `Future<T>&`. `futures` is a
/// range of Future<T> or a map keyed by Future<T> (its keys are yielded, so `m.at(f)` finds
/// a yielded future's value). The futures are copied from an lvalue range; from a container
/// handed over as an rvalue they may be moved. Thread-safe: any thread may call it; the
/// object it returns is used by one thread.
template <FutureRangeOrMap Range>
AsCompleted<detail::range_future_value_t<Range>> as_completed(Range&& futures) {
  return {std::forward<Range>(futures), std::nullopt};
}

/// As above, throwing TimeoutError from the iteration once `timeout`, counted from this
/// call, passes with futures still unfinished.
template <FutureRangeOrMap Range, class Rep, class Period>
AsCompleted<detail::range_future_value_t<Range>> as_completed(
    Range&& futures, std::chrono::duration<Rep, Period> timeout) {
  return {std::forward<Range>(futures), detail::StateBase::deadline_after(timeout)};
}

/// As above, on a braced list: `cfx::as_completed({f1, f2})`.
template <class T>
AsCompleted<T> as_completed(std::initializer_list<Future<T>> futures) {
  return {futures, std::nullopt};
}

/// As above, on a braced list, with a timeout.
template <class T, class Rep, class Period>
AsCompleted<T> as_completed(std::initializer_list<Future<T>> futures,
                            std::chrono::duration<Rep, Period> timeout) {
  return {futures, detail::StateBase::deadline_after(timeout)};
}

namespace detail {

template <class T>
bool failed(const Future<T>& f) {
  return f.done() && !f.cancelled() && f.exception() != nullptr;
}

template <class T>
DoneAndNotDone<T> wait_impl(std::vector<Future<T>> fs, ReturnWhen when,
                            std::optional<std::chrono::steady_clock::time_point> deadline) {
  std::vector<std::size_t> completed;
  {
    WaiterSet<T> waiters(fs, completed);
    std::size_t seen = 0;
    auto satisfied = [&] {
      if (completed.size() == fs.size()) return true;
      if (when == ReturnWhen::first_completed) return !completed.empty();
      if (when == ReturnWhen::first_exception) {
        for (; seen < completed.size(); ++seen)
          if (failed(fs[completed[seen]])) return true;
      }
      return false;
    };
    while (!satisfied())
      if (!waiters.queue().pop_all(completed, deadline)) break;
  }
  DoneAndNotDone<T> out;
  for (auto& f : fs) (f.done() ? out.done : out.not_done).push_back(std::move(f));
  return out;
}

}  // namespace detail

/// Waits until the condition `when` holds for `futures` (a range of Future<T>, or a map
/// keyed by Future<T>, whose keys are used); returns the done and not-done futures, in input
/// order, duplicates removed. The futures are copied from an lvalue range; from a container
/// handed over as an rvalue they may be moved. Thread-safe: any thread may call it.
template <FutureRangeOrMap Range>
DoneAndNotDone<detail::range_future_value_t<Range>> wait(
    Range&& futures, ReturnWhen when = ReturnWhen::all_completed) {
  using T = detail::range_future_value_t<Range>;
  return detail::wait_impl<T>(detail::unique_futures<T>(std::forward<Range>(futures)), when,
                              std::nullopt);
}

/// As above, returning (without throwing) when `timeout` passes first.
template <FutureRangeOrMap Range, class Rep, class Period>
DoneAndNotDone<detail::range_future_value_t<Range>> wait(
    Range&& futures, std::chrono::duration<Rep, Period> timeout,
    ReturnWhen when = ReturnWhen::all_completed) {
  using T = detail::range_future_value_t<Range>;
  return detail::wait_impl<T>(detail::unique_futures<T>(std::forward<Range>(futures)), when,
                              detail::StateBase::deadline_after(timeout));
}

/// As above, on a braced list: `cfx::wait({f1, f2})`.
template <class T>
DoneAndNotDone<T> wait(std::initializer_list<Future<T>> futures,
                       ReturnWhen when = ReturnWhen::all_completed) {
  return detail::wait_impl<T>(detail::unique_futures<T>(futures), when, std::nullopt);
}

/// As above, on a braced list, with a timeout.
template <class T, class Rep, class Period>
DoneAndNotDone<T> wait(std::initializer_list<Future<T>> futures,
                       std::chrono::duration<Rep, Period> timeout,
                       ReturnWhen when = ReturnWhen::all_completed) {
  return detail::wait_impl<T>(detail::unique_futures<T>(futures), when,
                              detail::StateBase::deadline_after(timeout));
}

}  // namespace cfx
