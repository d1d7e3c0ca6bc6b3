// cfx::Executor, the abstract pool that returns Futures (docs/concepts.md, "Executors").
//
// The templates here turn a call into one type-erased unit of work; a backend implements
// only the small virtual part (enqueue, shutdown, max_workers, backend), as concurrencpp's
// executor does. In-process backends receive a detail::LocalTask and never serialise;
// out-of-process backends receive a detail::RemoteTask: a registered function's name and
// its encoded arguments.
//
// Thread safety:
//  - Distinct objects: safe.
//  - Shared objects: safe. submit, map, starmap, map_unordered, shutdown and the queries
//    may be called from any thread at once, including from tasks and done-callbacks of the
//    same executor (but see shutdown). The object returned by map is not shared: iterate it
//    from one thread at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <stop_token>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "cfx/detail/local_task.hpp"
#include "cfx/detail/map_engine.hpp"
#include "cfx/detail/remote_task.hpp"
#include "cfx/future.hpp"

namespace cfx {

/// Options of map, starmap and map_unordered.
struct MapOptions {
  /// Counted from the call of map: iteration throws TimeoutError once it would wait past it.
  std::optional<std::chrono::duration<double>> timeout{};
  /// Items per dispatched unit of work (both backends). Must be at least 1.
  std::size_t chunksize = 1;
  /// Maximum chunks in flight; unset: every chunk is submitted inside map(). At least 1.
  std::optional<std::size_t> buffersize{};
};

/// Options of one call: ex.submit(cfx::CallOptions{.timeout = 2s}, fn, args...).
struct CallOptions {
  /// Counted from the call's start. Past it, a process task is killed with its worker (which
  /// is replaced) and its future gets TimeoutError; a thread task's future gets TimeoutError
  /// and its std::stop_token is requested. Unset: the pool's task_timeout, if any.
  std::optional<std::chrono::duration<double>> timeout{};
};

class Executor;

namespace detail {

/// Lets a live map result find its executor, and notice when it is gone.
struct ExecutorLink {
  std::mutex mutex;
  Executor* executor;
};

/// fn(args...) or, for a callable that takes a std::stop_token first and cannot be called
/// without one, fn(token, args...) (API section 7; thread backends pass the token).
template <class F, class... Args>
inline constexpr bool takes_stop_token_v =
    std::is_invocable_v<std::decay_t<F>, std::stop_token, std::decay_t<Args>...> &&
    !std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>;

template <bool StopToken, class F, class... Args>
struct submit_invoke_result : std::invoke_result<std::decay_t<F>, std::decay_t<Args>...> {};
template <class F, class... Args>
struct submit_invoke_result<true, F, Args...>
    : std::invoke_result<std::decay_t<F>, std::stop_token, std::decay_t<Args>...> {};

template <class F, class... Args>
using submit_result_t = std::remove_cvref_t<
    typename submit_invoke_result<takes_stop_token_v<F, Args...>, F, Args...>::type>;

}  // namespace detail

class Executor {
 public:
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  /// Backends shut down (wait = true) in their destructors.
  virtual ~Executor();

  /// Schedules fn(args...) and returns its Future. As std::async: the callable and the
  /// arguments are decayed and stored by value, then passed to the call as rvalues, once.
  /// Throws cfx::Error after shutdown, BrokenExecutor if the pool is broken; an executor
  /// whose tasks run in other processes throws cfx::Error for a callable it cannot send.
  /// In-process executors (threads): a callable that takes a std::stop_token first, and
  /// cannot be called without it, is called as fn(token, args...); Future::interrupt(), a
  /// CallOptions timeout and shutdown(cancel_futures = true) request stop on that token.
  template <class F, class... Args>
  requires(!std::is_same_v<std::remove_cvref_t<F>, CallOptions>)
      Future<detail::submit_result_t<F, Args...>> submit(F&& fn, Args&&... args) {
    return submit(CallOptions{}, std::forward<F>(fn), std::forward<Args>(args)...);
  }
  /// As submit(fn, args...), with options for this call only (API section 7).
  template <class F, class... Args>
  Future<detail::submit_result_t<F, Args...>> submit(const CallOptions& options, F&& fn,
                                                     Args&&... args) {
    using R = detail::submit_result_t<F, Args...>;
    if (remote_)
      return submit_registered<R, std::decay_t<F>>(options, fn, std::forward<Args>(args)...);
    if constexpr (detail::takes_stop_token_v<F, Args...>) {
      auto call = [fn = std::decay_t<F>(std::forward<F>(fn)),
                   args = std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)](
                      std::stop_token token) mutable -> R {
        return std::apply(
            [&](auto&&... a) -> R {
              return std::invoke(std::move(fn), std::move(token), std::forward<decltype(a)>(a)...);
            },
            std::move(args));
      };
      return submit_local<R, true>(std::move(call), options);
    } else {
      auto call =
          [fn = std::decay_t<F>(std::forward<F>(fn)),
           args = std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)]() mutable -> R {
        return std::apply(std::move(fn), std::move(args));
      };
      return submit_local<R>(std::move(call), options);
    }
  }

  /// fn(item) for each item of `inputs`, results in input order. Without
  /// opts.buffersize the whole input is consumed and submitted before map returns.
  template <class F, class Range>
  auto map(F&& fn, Range&& inputs, MapOptions opts = {}) {
    return map_impl<false>(std::forward<F>(fn), std::forward<Range>(inputs), opts, true);
  }
  /// std::apply(fn, tuple) for each tuple of `tuples`, results in input order.
  template <class F, class Range>
  auto starmap(F&& fn, Range&& tuples, MapOptions opts = {}) {
    return map_impl<true>(std::forward<F>(fn), std::forward<Range>(tuples), opts, true);
  }
  /// As map, but yields results in completion order (by chunk).
  template <class F, class Range>
  auto map_unordered(F&& fn, Range&& inputs, MapOptions opts = {}) {
    return map_impl<false>(std::forward<F>(fn), std::forward<Range>(inputs), opts, false);
  }

  /// Stops accepting work. wait: block until every started and queued task has finished.
  /// cancel_futures: cancel the queued tasks that have not started. Safe to call again.
  /// shutdown(wait = true) from one of the executor's own workers throws cfx::Error.
  virtual void shutdown(bool wait = true, bool cancel_futures = false) = 0;
  /// The largest number of tasks run at once.
  virtual std::size_t max_workers() const = 0;
  /// "thread", "process", ...
  virtual std::string_view backend() const = 0;

 protected:
  /// remote: tasks run in other processes (submit sends registered functions' names and
  /// encoded arguments to enqueue_remote instead of callables to enqueue).
  explicit Executor(bool remote = false);
  /// Queues a task. On success the executor owns it and must end it (run, cancel or fail
  /// it) exactly once; if it throws, ownership stays with the caller.
  virtual void enqueue(detail::LocalTask* task) = 0;
  /// As enqueue, for executors constructed with remote = true.
  virtual void enqueue_remote(detail::RemoteTask* task);
  /// Called first in backends' destructors: live map results stop submitting.
  void detach_maps() noexcept;

 private:
  /// Stoppable: call takes the task's std::stop_token.
  template <class R, bool Stoppable = false, class Call>
  Future<R> submit_local(Call&& call, const CallOptions& options = {}) {
    using Task = detail::LocalCall<R, std::decay_t<Call>, Stoppable>;
    auto* task = new Task(std::forward<Call>(call));
    task->timeout = options.timeout;
    auto future = detail::make_future<R>(detail::Ref<detail::SharedState<R>>::adopt(task));
    try {
      enqueue(task);
    } catch (...) {
      task->drop();
      throw;
    }
    return future;
  }

  /// Sends fn(args...) to an executor whose tasks run in other processes: fn must be a
  /// registered function pointer. An encoding failure fails the returned future with
  /// SerializationError; the pool is not involved.
  template <class R, class Fn, class... Args>
  Future<R> submit_registered(const CallOptions& options, const Fn& fn, Args&&... args) {
    if constexpr (!detail::is_fn_ptr_v<Fn>) {
      detail::throw_not_a_task();
    } else {
      const detail::TaskEntry& task = detail::registered_task(fn);
      using Tuple = typename detail::fn_traits<Fn>::args;
      if constexpr (std::is_same_v<Tuple, std::tuple<std::decay_t<Args>...>>) {
        // The arguments have the parameters' types: encoded where they are, not copied.
        const typename detail::fn_traits<Fn>::arg_refs refs(args...);
        return submit_encoded<R>(task, 1, options, [&](detail::HandleList& handles) {
          return detail::encode_arg_refs(task, refs, handles);
        });
      } else if constexpr (std::is_constructible_v<Tuple, Args&&...>) {
        const Tuple one(std::forward<Args>(args)...);
        return submit_remote<R>(task, &one, 1, options);
      } else {
        throw Error("the arguments given for task '" + task.name +
                    "' do not convert to its parameter types");
      }
    }
  }

  /// Encodes `count` argument tuples of `task` as one call and queues it.
  template <class R, class Tuple>
  Future<R> submit_remote(const detail::TaskEntry& task, const Tuple* tuples, std::size_t count,
                          const CallOptions& options = {}) {
    return submit_encoded<R>(task, count, options, [&](detail::HandleList& handles) {
      return detail::encode_args(task, tuples, count, handles);
    });
  }

  /// Queues a call of `count` argument tuples of `task`, encoded by encode(handles).
  template <class R, class Encode>
  Future<R> submit_encoded(const detail::TaskEntry& task, std::size_t count,
                           const CallOptions& options, Encode encode) {
    auto* call = new detail::RemoteCall<R>(&task);
    auto future = detail::make_future<R>(detail::Ref<detail::SharedState<R>>::adopt(call));
    call->count = static_cast<std::uint32_t>(count);
    call->timeout = options.timeout;
    try {
      call->args = encode(call->handles);
    } catch (const SerializationError&) {
      call->fail(std::current_exception());
      call->drop();
      return future;
    }
    try {
      enqueue_remote(call);
    } catch (...) {
      call->drop();
      throw;
    }
    return future;
  }

  template <bool Star, class Fn, class Item>
  static decltype(auto) invoke_item(Fn& fn, Item& item) {
    if constexpr (Star)
      return std::apply(fn, item);
    else
      return std::invoke(fn, item);
  }

  template <bool Star, class Fn, class Item>
  using item_result_t =
      std::remove_cvref_t<decltype(invoke_item<Star>(std::declval<Fn&>(), std::declval<Item&>()))>;

  /// Submits one chunk of items as a single task.
  template <bool Star, class V, class Fn, class Item>
  Future<detail::ChunkResult<V>> submit_chunk(const Fn& fn, std::vector<Item> items) {
    if (remote_) return submit_remote_chunk<Star, V>(fn, items);
    return submit_local<detail::ChunkResult<V>>([fn, items = std::move(items)]() mutable {
      detail::ChunkResult<V> out;
      out.values.reserve(items.size());
      for (auto& item : items) {
        try {
          if constexpr (std::is_same_v<V, std::monostate> &&
                        std::is_void_v<decltype(invoke_item<Star>(fn, item))>) {
            invoke_item<Star>(fn, item);
            out.values.emplace_back();
          } else {
            out.values.push_back(invoke_item<Star>(fn, item));
          }
        } catch (...) {
          out.error = std::current_exception();
          break;
        }
      }
      return out;
    });
  }

  /// What the chunks of an in-place map share: the input's first item (the view owns the
  /// input if map was given an rvalue), and the slab the results go to.
  template <class V, class View>
  struct SliceShared {
    SliceShared(View v, std::size_t chunksize)
        : view(std::move(v)),
          first(std::ranges::begin(view)),
          slab(std::make_shared<detail::ResultSlab<V>>(std::ranges::size(view), chunksize)) {}
    View view;
    std::ranges::iterator_t<View> first;
    std::shared_ptr<detail::ResultSlab<V>> slab;
  };

  /// Submits items [lo, hi) of a random-access input as chunk c of an in-place map: read
  /// where they are, their results constructed in the slab. No vector per chunk, no copy of
  /// the items but the one each call gets (as from a chunk's vector), no lock per item.
  template <bool Star, class V, class Fn, class Shared>
  Future<detail::ChunkResult<V>> submit_slice(const Fn& fn, std::shared_ptr<Shared> shared,
                                              std::size_t c, std::size_t lo, std::size_t hi) {
    return submit_local<detail::ChunkResult<V>>(
        [fn, shared = std::move(shared), c, lo, hi]() mutable {
          using Item = std::remove_cvref_t<decltype(*shared->first)>;
          detail::ChunkResult<V> out;
          V* place = shared->slab->at(c);
          auto it = shared->first + static_cast<std::ptrdiff_t>(lo);
          std::size_t made = 0;
          try {
            for (; made < hi - lo; ++made, ++it) {
              Item item = *it;
              if constexpr (std::is_same_v<V, std::monostate> &&
                            std::is_void_v<decltype(invoke_item<Star>(fn, item))>) {
                invoke_item<Star>(fn, item);
                std::construct_at(place + made);
              } else {
                std::construct_at(place + made, invoke_item<Star>(fn, item));
              }
            }
          } catch (...) {
            out.error = std::current_exception();
          }
          shared->slab->set_made(c, made);
          out.slab = shared->slab;
          out.chunk = c;
          return out;
        });
  }

  template <bool Star, class V, class Fn, class Item>
  Future<detail::ChunkResult<V>> submit_remote_chunk(const Fn& fn, std::vector<Item>& items) {
    if constexpr (!detail::is_fn_ptr_v<Fn>) {
      detail::throw_not_a_task();
    } else {
      const detail::TaskEntry& task = detail::registered_task(fn);
      using Tuple = typename detail::fn_traits<Fn>::args;
      constexpr bool convertible = Star ? requires(Item & i) {
        std::make_from_tuple<Tuple>(std::move(i));
      }
                                        : std::is_constructible_v<Tuple, Item&&>;
                                        if constexpr (convertible) {
                                          std::vector<Tuple> tuples;
                                          tuples.reserve(items.size());
                                          for (auto& item : items) {
                                            if constexpr (Star)
                                              tuples.push_back(
                                                  std::make_from_tuple<Tuple>(std::move(item)));
                                            else
                                              tuples.emplace_back(std::move(item));
                                          }
                                          return submit_remote<detail::ChunkResult<V>>(
                                              task, tuples.data(), tuples.size());
                                        } else {
                                          throw Error("the items given for task '" + task.name +
                                                      "' do not convert to its parameter types");
                                        }
    }
  }

  template <bool Star, class V, class Fn, class View>
  class Source final : public detail::ChunkSource<V> {
   public:
    Source(std::shared_ptr<detail::ExecutorLink> link, Fn fn, View view, std::size_t chunksize)
        : link_(std::move(link)),
          fn_(std::move(fn)),
          view_(std::move(view)),
          it_(std::ranges::begin(view_)),
          chunksize_(chunksize) {}
    std::optional<Future<detail::ChunkResult<V>>> next() override {
      std::lock_guard lock(link_->mutex);
      if (!link_->executor || it_ == std::ranges::end(view_)) return std::nullopt;
      std::vector<Item> items;
      items.reserve(chunksize_);
      for (; items.size() < chunksize_ && it_ != std::ranges::end(view_); ++it_)
        items.emplace_back(*it_);
      return link_->executor->template submit_chunk<Star, V>(fn_, std::move(items));
    }

   private:
    using Item = std::remove_cvref_t<std::ranges::range_reference_t<View>>;
    std::shared_ptr<detail::ExecutorLink> link_;
    Fn fn_;
    View view_;
    std::ranges::iterator_t<View> it_;
    std::size_t chunksize_;
  };

  /// The chunks of a map on threads over a sized random-access input, all submitted at once
  /// (no buffersize): each a slice of the input, its results written in place.
  template <bool Star, class V, class Fn, class View>
  class SliceSource final : public detail::ChunkSource<V> {
   public:
    SliceSource(std::shared_ptr<detail::ExecutorLink> link, Fn fn, View view, std::size_t chunksize)
        : link_(std::move(link)),
          fn_(std::move(fn)),
          shared_(std::make_shared<SliceShared<V, View>>(std::move(view), chunksize)),
          size_(std::ranges::size(shared_->view)),
          chunksize_(chunksize) {}
    std::optional<Future<detail::ChunkResult<V>>> next() override {
      std::lock_guard lock(link_->mutex);
      if (!link_->executor || next_ >= size_) return std::nullopt;
      std::size_t lo = next_;
      std::size_t hi = lo + std::min(chunksize_, size_ - lo);
      auto f =
          link_->executor->template submit_slice<Star, V>(fn_, shared_, lo / chunksize_, lo, hi);
      next_ = hi;
      return f;
    }

   private:
    std::shared_ptr<detail::ExecutorLink> link_;
    Fn fn_;
    std::shared_ptr<SliceShared<V, View>> shared_;
    std::size_t size_;
    std::size_t chunksize_;
    std::size_t next_ = 0;
  };

  template <bool Star, class F, class Range>
  auto map_impl(F&& fn, Range&& inputs, const MapOptions& opts, bool ordered) {
    using Fn = std::decay_t<F>;
    using View = std::views::all_t<Range>;
    using Item = std::remove_cvref_t<std::ranges::range_reference_t<View>>;
    using V = detail::map_value_t<item_result_t<Star, Fn, Item>>;
    if (opts.chunksize < 1) throw std::invalid_argument("chunksize must be >= 1");
    if (opts.buffersize && *opts.buffersize < 1)
      throw std::invalid_argument("buffersize must be unset or > 0");
    detail::Deadline deadline;
    if (opts.timeout) deadline = detail::StateBase::deadline_after(*opts.timeout);
    std::unique_ptr<detail::ChunkSource<V>> source;
    if constexpr (std::ranges::random_access_range<View> && std::ranges::sized_range<View>) {
      if (!remote_ && !opts.buffersize) {  // with buffersize, results stay per chunk
        if constexpr (detail::owns_its_items_v<View>) {
          source = std::make_unique<SliceSource<Star, V, Fn, View>>(
              link_, std::forward<F>(fn), std::views::all(std::forward<Range>(inputs)),
              opts.chunksize);
        } else {
          // The input belongs to the caller, who may change it once map() returns: it is
          // consumed now, as without buffersize it always is, in one copy for all chunks.
          std::vector<Item> owned;
          detail::reserve_bulk(owned, std::ranges::size(inputs));
          for (auto&& item : inputs) owned.emplace_back(item);
          using Owned = std::ranges::owning_view<std::vector<Item>>;
          source = std::make_unique<SliceSource<Star, V, Fn, Owned>>(
              link_, std::forward<F>(fn), Owned(std::move(owned)), opts.chunksize);
        }
      }
    }
    if (!source)
      source = std::make_unique<Source<Star, V, Fn, View>>(
          link_, std::forward<F>(fn), std::views::all(std::forward<Range>(inputs)), opts.chunksize);
    return MapResult<V>(std::make_unique<detail::MapEngine<V>>(std::move(source), opts.buffersize,
                                                               deadline, ordered));
  }

  std::shared_ptr<detail::ExecutorLink> link_;
  bool remote_;
};

}  // namespace cfx
