// The type-erased unit of work of out-of-process backends, and the small templates that
// build it. Internal.
//
// A RemoteTask is a registered function's entry, `count` encoded argument tuples, and the
// future to complete. How it travels (frames, pipes) is the backend's business; what comes
// back is `count` encoded results and, if a call threw, its exception. The codec itself is
// reached through the registry entry (see registry.hpp), so nothing here needs nlohmann::json.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include "cfx/detail/bytes.hpp"
#include "cfx/detail/handles.hpp"
#include "cfx/detail/map_engine.hpp"
#include "cfx/detail/registry.hpp"
#include "cfx/detail/shared_state.hpp"
#include "cfx/detail/wire_traits.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {

/// Where calls sent ahead to a worker wait until it starts them: the worker's slots, which
/// the worker shares with the pool. A call's slot goes from queued to started (the worker
/// begins it), to withdrawn (cancel), or to taken back (the pool moves it to another worker).
/// Shared by the pool and the calls it has sent, and reached from any thread.
class CallSlots {
 public:
  virtual ~CallSlots() = default;
  /// queued -> withdrawn: the worker will skip call `id`. True also if the pool has taken
  /// it back; false once the worker has started it.
  virtual bool withdraw(std::uint64_t id) noexcept = 0;
  /// True once the worker has started call `id`.
  virtual bool started(std::uint64_t id) const noexcept = 0;
  /// Asks the pool to kill the worker if it still runs call `id`.
  virtual void interrupt(std::uint64_t id) noexcept = 0;
  /// StateBase::helper for a call held here: nullptr, or an object that lives as long as this.
  virtual WaitHelper* helper() noexcept { return nullptr; }
};

class RemoteTask {
 public:
  RemoteTask* next = nullptr;       // intrusive queue link, owned by the pool
  const TaskEntry* task = nullptr;  // the registered function
  std::uint32_t count = 0;          // argument tuples in `args`
  std::vector<char> args;           // the encoded argument tuples
  HandleList handles;  // descriptors the arguments refer to (handles.hpp), sent beside them
  std::optional<std::chrono::duration<double>> timeout;  // CallOptions::timeout
  std::uint32_t attempts = 0;  // runs cut short by the death of their worker (max_retries)
  /// What a thread waiting for this call can do meanwhile (StateBase::helper), set by a pool
  /// whose waiting threads help it whether or not a worker holds the call yet (null: the
  /// helper of the slots the call was sent to, if any).
  std::shared_ptr<WaitHelper> pool_helper;

  /// The pool is sending the call to a worker as call `id` of `slots`; false if it was
  /// cancelled meanwhile (do not send it then). The future stays pending until the worker
  /// starts the call.
  virtual bool attach(std::shared_ptr<CallSlots> slots, std::uint64_t id) noexcept = 0;
  /// The call is back in the pool's hands, unstarted (its worker died, or it was moved).
  virtual void detach() noexcept = 0;
  /// Publishes the outcome: `count` results encoded back to back in `results`, and the
  /// exception of the call that threw (nullptr if none did).
  virtual void complete(Reader& results, std::uint32_t count,
                        std::exception_ptr error) noexcept = 0;
  /// Fails the future (a crash, a broken pool), unless already done.
  virtual void fail(std::exception_ptr e) noexcept = 0;
  /// Cancels a call that is not running in a worker (shutdown with cancel_futures).
  virtual void cancel() noexcept = 0;
  /// Releases the pool's reference.
  virtual void drop() noexcept = 0;
  /// The result is expected to take about `bytes` (the task's last results did): a result
  /// that is a vector or string of trivially copyable elements gets its storage now, faulted
  /// in and written once, while the worker computes, and is decoded into it. Called by the
  /// thread that completes the call, never while it does; a hint only (out of memory: none).
  virtual void prepare_result(std::size_t bytes) noexcept { (void)bytes; }

 protected:
  ~RemoteTask() = default;
};

template <class T>
struct is_chunk_result : std::false_type {};
template <class V>
struct is_chunk_result<ChunkResult<V>> : std::true_type {};

/// A call whose result is one R (submit) or a ChunkResult (map).
template <class R>
class RemoteCall final : public SharedState<R>, public RemoteTask {
 public:
  explicit RemoteCall(const TaskEntry* entry) {
    task = entry;
    this->add_ref();  // the pool's reference
  }
  bool attach(std::shared_ptr<CallSlots> slots, std::uint64_t id) noexcept override {
    this->lock();
    bool ok = !withdrawn_;
    if (ok) {
      slots_.swap(slots);
      id_ = id;
    }
    this->unlock();
    return ok;  // `slots` (swapped out) is released outside the lock
  }
  void detach() noexcept override {
    std::shared_ptr<CallSlots> old;
    this->lock();
    old.swap(slots_);
    this->unlock();
  }
  void cancel() noexcept override { this->StateBase::cancel(); }
  void fail(std::exception_ptr e) noexcept override { this->try_set_exception(std::move(e)); }
  void drop() noexcept override {
    if constexpr (is_preparable_v<R>) prepared_.reset();  // not kept while the future lives
    this->release();
  }
  void prepare_result(std::size_t bytes) noexcept override {
    if constexpr (is_preparable_v<R>) {
      using E = typename R::value_type;
      try {
        prepared_.emplace();
        reserve_bulk(*prepared_, bytes / sizeof(E));
        touch_pages(prepared_->data(), prepared_->capacity() * sizeof(E));
      } catch (...) {
        prepared_.reset();
      }
    } else {
      (void)bytes;
    }
  }

  void complete(Reader& results, std::uint32_t n, std::exception_ptr error) noexcept override {
    if (!this->claim()) return;
    try {
      publish_decoded(results, n, std::move(error));
    } catch (...) {
      this->publish_exception(std::current_exception());
    }
  }

 protected:
  bool withdraw() noexcept override {
    this->lock();
    bool ok = !slots_ || slots_->withdraw(id_);
    if (ok) withdrawn_ = true;  // attach refuses it from now on
    this->unlock();
    return ok;
  }
  bool started_elsewhere() const noexcept override {
    this->lock();
    bool started = slots_ && slots_->started(id_);
    this->unlock();
    return started;
  }
  std::shared_ptr<WaitHelper> helper() const noexcept override {
    if (pool_helper) return pool_helper;
    std::shared_ptr<CallSlots> slots = current_slots().first;
    WaitHelper* h = slots ? slots->helper() : nullptr;
    return h ? std::shared_ptr<WaitHelper>(std::move(slots), h) : nullptr;
  }
  bool interrupt_running() noexcept override {
    auto [slots, id] = current_slots();
    if (!slots || !slots->started(id) || !this->claim()) return false;
    this->publish(Status::cancelled);
    slots->interrupt(id);  // the pool kills the worker if it still runs this call
    return true;
  }

 private:
  std::shared_ptr<CallSlots> slots_;  // guarded by the state's lock
  std::uint64_t id_ = 0;
  bool withdrawn_ = false;  // cancelled before it could start: never to be sent
  // prepare_result's storage, taken by the decoding; the completing thread's alone.
  [[no_unique_address]] std::conditional_t<is_preparable_v<R>, std::optional<R>, std::monostate>
      prepared_;
  /// The slots the call was sent to (null while it is not with a worker) and its id there,
  /// read together under the state's lock.
  std::pair<std::shared_ptr<CallSlots>, std::uint64_t> current_slots() const noexcept {
    this->lock();
    std::pair<std::shared_ptr<CallSlots>, std::uint64_t> at{slots_, id_};
    this->unlock();
    return at;
  }
  void publish_decoded(Reader& results, std::uint32_t n, std::exception_ptr error) {
    if constexpr (is_chunk_result<R>::value) {
      R chunk;
      chunk.values.reserve(n);
      for (std::uint32_t i = 0; i < n; ++i)
        chunk.values.push_back(decode_one<typename R::value_type>(results));
      chunk.error = std::move(error);
      this->store_and_publish(std::move(chunk));
    } else if (n == 0) {
      if (!error) error = std::make_exception_ptr(SerializationError("a reply without a result"));
      this->publish_exception(std::move(error));
    } else if constexpr (std::is_void_v<R>) {
      this->store_and_publish();
    } else if constexpr (is_preparable_v<R>) {
      std::optional<R> v = std::move(prepared_);
      prepared_.reset();
      if (v && !fits(*v, results)) v.reset();  // freed before the result's own storage
      task->decode_result(*task, results, &v);
      this->store_and_publish(std::move(*v));
    } else {
      this->store_and_publish(decode_one<R>(results));
    }
  }

  /// True if prepared storage suits the result encoded at `results` (a count, then the
  /// elements): room for it, and not more than twice the room it needs, which the future
  /// would hold on to.
  template <class V>
  static bool fits(const V& prepared, Reader results) {
    if (results.remaining() < sizeof(std::uint64_t)) return false;
    const auto n = results.get<std::uint64_t>();
    return n <= prepared.capacity() && n >= prepared.capacity() / 2;
  }

  template <class V>
  V decode_one(Reader& results) {
    if constexpr (std::is_same_v<V, std::monostate>) {
      return {};  // void results carry no bytes
    } else {
      std::optional<V> v;
      task->decode_result(*task, results, &v);
      return std::move(*v);
    }
  }
};

template <class Fn>
struct fn_traits;
template <class R, class... P>
struct fn_traits<R (*)(P...)> {
  using result = R;
  using args = std::tuple<std::decay_t<P>...>;
  using arg_refs = std::tuple<const std::decay_t<P>&...>;
};
template <class R, class... P>
struct fn_traits<R (*)(P...) noexcept> : fn_traits<R (*)(P...)> {};

template <class Fn>
inline constexpr bool is_fn_ptr_v =
    std::is_pointer_v<Fn>&& std::is_function_v<std::remove_pointer_t<Fn>>;

/// The registry entry of the function at `address`, whose argument tuple has type `args`;
/// throws a cfx::Error that names the function and says how to register it.
const TaskEntry& registered_task(const void* address, const std::type_info& args);
/// Throws the cfx::Error for a callable that is not a function pointer (a lambda, ...).
[[noreturn]] void throw_not_a_task();

/// The registry entry of a function pointer, or a cfx::Error that says how to register it.
template <class Fn>
requires is_fn_ptr_v<Fn>
const TaskEntry& registered_task(Fn fn) {
  return registered_task(reinterpret_cast<const void*>(fn), typeid(typename fn_traits<Fn>::args));
}

/// Encodes `count` argument tuples of `task`, starting at `tuples`.
template <class Tuple>
std::vector<char> encode_args(const TaskEntry& task, const Tuple* tuples, std::size_t count) {
  std::vector<char> out;
  Writer w(out);
  task.encode_args(task, w, tuples, count);
  return out;
}

/// As encode_args for one call, from references to arguments of the parameters' types
/// (TaskEntry::encode_arg_refs): a 64 MiB vector is encoded, not copied and then encoded.
template <class Refs>
std::vector<char> encode_arg_refs(const TaskEntry& task, const Refs& refs, HandleList& handles) {
  HandleCapture capture(handles);
  std::vector<char> out;
  Writer w(out);
  task.encode_arg_refs(task, w, &refs, 1);
  return out;
}

/// As above; the handles the arguments refer to (SharedArray, Connection, ...) go to
/// `handles`, whose descriptors travel beside the bytes.
template <class Tuple>
std::vector<char> encode_args(const TaskEntry& task, const Tuple* tuples, std::size_t count,
                              HandleList& handles) {
  HandleCapture capture(handles);
  return encode_args(task, tuples, count);
}

}  // namespace cfx::detail
