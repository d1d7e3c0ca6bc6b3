// The type-erased unit of work of the process backend, and the templates that build it
// (parent side) and serve it (worker side). Internal.
//
// Frames on a worker's channel are [u64 length][body]. A call's body is
//   [u8 kind = call][u32 count][string task name][count encoded argument tuples]
// and its reply's body is
//   [u8 kind = result][u32 count][count encoded results][u8 failed][exception if failed].
// A single submit is a call with count 1; a map chunk is one call with count = chunk size.
// A worker runs its calls in the order received, so replies need no call id.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cfx/detail/map_engine.hpp"
#include "cfx/detail/registry.hpp"
#include "cfx/detail/shared_state.hpp"
#include "cfx/detail/wire.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {

enum class FrameKind : std::uint8_t { call = 1, result = 2, hello = 3 };

/// Reserves the frame's length field; finish_frame fills it in.
inline std::size_t begin_frame(Writer& w, FrameKind kind) {
  auto at = w.size();
  w.put(std::uint64_t{0});
  w.put(kind);
  return at;
}
inline void finish_frame(Writer& w, std::size_t at) {
  std::uint64_t n = w.size() - at - sizeof(std::uint64_t);
  std::memcpy(w.buffer().data() + at, &n, sizeof(n));
}

class RemoteTask {
 public:
  RemoteTask* next = nullptr;       // intrusive queue link, owned by the pool
  std::vector<char> frame;          // the complete call frame
  const TaskEntry* task = nullptr;  // for messages
  bool requeued = false;            // back in the queue from a dead worker, already running

  /// Marks the future running; false if it was cancelled (do not send it then).
  virtual bool start() noexcept = 0;
  /// Decodes a reply body (after the kind byte) and publishes the outcome.
  virtual void complete(Reader& reply) noexcept = 0;
  /// Fails the future (a crash, a broken pool), unless already done.
  virtual void fail(std::exception_ptr e) noexcept = 0;
  /// Cancels a task that is not running in a worker.
  virtual void cancel() noexcept = 0;
  /// Releases the pool's reference.
  virtual void drop() noexcept = 0;

 protected:
  ~RemoteTask() = default;
};

/// Reads a reply's optional exception; nullptr if the call did not fail.
inline std::exception_ptr read_failure(Reader& r) {
  if (r.get<std::uint8_t>() == 0) return nullptr;
  return decode_exception(r);
}

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
  bool start() noexcept override { return this->set_running_or_notify_cancel(); }
  /// Also ends a call that was marked running but came back unstarted from a dead worker.
  void cancel() noexcept override {
    if (!this->StateBase::cancel() && this->claim()) this->publish(Status::cancelled);
  }
  void fail(std::exception_ptr e) noexcept override { this->try_set_exception(std::move(e)); }
  void drop() noexcept override { this->release(); }

  void complete(Reader& r) noexcept override {
    if (!this->claim()) return;
    try {
      decode_into(r);
    } catch (...) {
      this->publish_exception(std::current_exception());
    }
  }

 private:
  void decode_into(Reader& r) {
    auto count = r.get<std::uint32_t>();
    if constexpr (is_chunk_result<R>::value) {
      R chunk;
      chunk.values.resize(count);
      for (auto& v : chunk.values) decode_result(r, v);
      chunk.error = read_failure(r);
      this->store_and_publish(std::move(chunk));
    } else if (count == 0) {
      this->publish_exception(read_failure(r));
    } else if constexpr (std::is_void_v<R>) {
      this->store_and_publish();
    } else {
      R value;
      decode_result(r, value);
      this->store_and_publish(std::move(value));
    }
  }

  template <class T>
  void decode_result(Reader& r, T& v) {
    if constexpr (std::is_same_v<T, std::monostate>) {
      // void results carry no bytes
    } else if constexpr (is_decodable_v<T>) {
      try {
        decode_value(r, v);
      } catch (const SerializationError& e) {
        throw SerializationError("result of task '" + task->name + "': " + e.what());
      }
    } else {
      throw SerializationError("result of task '" + task->name + "' has type " + type_name<T>() +
                               ", which cannot be decoded: give it from_json (nlohmann)");
    }
  }
};

template <class Fn>
struct fn_traits;
template <class R, class... P>
struct fn_traits<R (*)(P...)> {
  using result = R;
  using args = std::tuple<std::decay_t<P>...>;
};
template <class Fn>
inline constexpr bool is_fn_ptr_v =
    std::is_pointer_v<Fn>&& std::is_function_v<std::remove_pointer_t<Fn>>;

/// The registry entry of a callable, or a cfx::Error that says how to register it.
template <class Fn>
const TaskEntry& registered_task(const Fn& fn) {
  if constexpr (is_fn_ptr_v<Fn>) {
    if (const TaskEntry* e = find_task(reinterpret_cast<const void*>(fn))) return *e;
    throw Error(
        "this function is not registered as a task, so it cannot run in a worker process: add "
        "CFX_TASK(function_name); at namespace scope after its definition (or "
        "CFX_TASK_AS(&function, \"name\") for overloads and templates)");
  } else {
    throw Error(
        "the process backend runs only functions registered with CFX_TASK(function_name); "
        "lambdas, functors and bound member functions cannot be sent to a worker process");
  }
}

/// Encodes one argument tuple; throws SerializationError naming the task and the type.
template <class Tuple>
void encode_args(Writer& w, const Tuple& args, const TaskEntry& task) {
  std::apply(
      [&](const auto&... a) {
        [[maybe_unused]] auto one = [&](const auto& v) {
          using T = std::remove_cvref_t<decltype(v)>;
          if constexpr (is_encodable_v<T>) {
            try {
              encode_value(w, v);
            } catch (const SerializationError& e) {
              throw SerializationError("argument of task '" + task.name + "': " + e.what());
            }
          } else {
            throw SerializationError("argument of task '" + task.name + "' has type " +
                                     type_name<T>() +
                                     ", which cannot be encoded: give it to_json (nlohmann)");
          }
        };
        (one(a), ...);
      },
      args);
}

/// Builds a call frame for `items` (argument tuples of the registered function).
template <class Tuple>
std::vector<char> call_frame(const TaskEntry& task, const std::vector<Tuple>& items) {
  std::vector<char> buf;
  Writer w(buf);
  auto at = begin_frame(w, FrameKind::call);
  w.put(static_cast<std::uint32_t>(items.size()));
  w.put_string(task.name);
  for (const auto& t : items) encode_args(w, t, task);
  finish_frame(w, at);
  return buf;
}

// ---- worker side ----------------------------------------------------------------------

/// Runs `count` calls of the registered function `fn` on the arguments in `args`, writing
/// the reply's count, results and failure. Stops at the first failure.
template <class R, class... P>
void serve_calls(const void* fn_address, const TaskEntry& task, Reader& args, std::uint32_t count,
                 Writer& out) {
  auto fn = reinterpret_cast<R (*)(P...)>(const_cast<void*>(fn_address));
  using Args = std::tuple<std::decay_t<P>...>;
  auto count_at = out.size();
  out.put(std::uint32_t{0});
  std::uint32_t done = 0;
  bool failed = false;
  for (; done < count && !failed; ++done) {
    auto mark = out.size();
    try {
      Args a;
      std::apply(
          [&](auto&... v) {
            [[maybe_unused]] auto one = [&](auto& x) {
              using T = std::remove_cvref_t<decltype(x)>;
              if constexpr (is_decodable_v<T>) {
                try {
                  decode_value(args, x);
                } catch (const SerializationError& e) {
                  throw SerializationError("argument of task '" + task.name + "': " + e.what());
                }
              } else {
                throw SerializationError("argument of task '" + task.name + "' has type " +
                                         type_name<T>() + ", which cannot be decoded");
              }
            };
            (one(v), ...);
          },
          a);
      if constexpr (std::is_void_v<R>) {
        std::apply(fn, std::move(a));
      } else {
        using V = std::decay_t<R>;
        V result = std::apply(fn, std::move(a));
        if constexpr (is_encodable_v<V>) {
          try {
            encode_value(out, result);
          } catch (const SerializationError& e) {
            throw SerializationError("result of task '" + task.name + "': " + e.what());
          }
        } else {
          throw SerializationError("result of task '" + task.name + "' has type " + type_name<V>() +
                                   ", which cannot be encoded");
        }
      }
    } catch (...) {
      out.buffer().resize(mark);  // drop a partly written result
      out.put(std::uint8_t{1});
      encode_current_exception(out, task.name);
      failed = true;
      break;
    }
  }
  std::uint32_t n = done;
  std::memcpy(out.buffer().data() + count_at, &n, sizeof(n));
  if (!failed) out.put(std::uint8_t{0});
}

}  // namespace cfx::detail
