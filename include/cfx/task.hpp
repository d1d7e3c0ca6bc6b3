// Registering functions and exception types for the process backend
// (docs/tasks-and-serialisation.md).
//
//   std::pair<std::uint64_t, int> chain_length(std::uint64_t n);
//   CFX_TASK(chain_length);                   // registered as "chain_length"
//   CFX_TASK_AS(&ns::overloaded, "name");     // explicit name: overloads, templates
//   CFX_EXCEPTION(MyError);                   // rethrown as MyError in the parent
//
// The thread backend runs any callable; the process backend looks a function up by its
// address in the parent and by its name in the worker. Registration happens during static
// initialisation, so parent and worker (the same program) agree on every name. CFX_TASK
// compiles the codec of the function's argument and result types here, in the translation
// unit that registers it; executors reach it through the registry, so code that only
// submits work never compiles the codec.
//
// Thread safety: the macros run during static initialisation; the registry they fill is
// read-only afterwards and may be read from any thread.
#pragma once

#include <cstddef>
#include <exception>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "cfx/detail/registry.hpp"
#include "cfx/detail/remote_task.hpp"
#include "cfx/detail/wire.hpp"

namespace cfx::detail {

/// The codec and the call of one registered function type, erased into a TaskEntry.
template <class R, class... P>
struct TaskCodec {
  using Args = std::tuple<std::decay_t<P>...>;
  using Result = std::decay_t<R>;

  static TaskEntry entry(const char* name, const void* address) {
    return TaskEntry{name,
                     address,
                     &typeid(Args),
                     &typeid(Result),
                     &encode_args,
                     &encode_json_args,
                     &decode_result_into,
                     &run,
                     &encode_arg_refs};
  }

  static void encode_args(const TaskEntry& task, Writer& w, const void* tuples, std::size_t n) {
    const auto* args = static_cast<const Args*>(tuples);
    for (std::size_t i = 0; i < n; ++i)
      std::apply([&](const auto&... a) { (encode_arg(task, w, a), ...); }, args[i]);
  }

  static void encode_arg_refs(const TaskEntry& task, Writer& w, const void* refs, std::size_t n) {
    const auto* args = static_cast<const std::tuple<const std::decay_t<P>&...>*>(refs);
    for (std::size_t i = 0; i < n; ++i)
      std::apply([&](const auto&... a) { (encode_arg(task, w, a), ...); }, args[i]);
  }

  static void encode_json_args(const TaskEntry& task, Writer& w, const void* json) {
    const auto& j = *static_cast<const nlohmann::json*>(json);
    if (!j.is_array() || j.size() != sizeof...(P))
      throw ConfigError("arguments of task '" + task.name + "': " + j.dump() +
                        " is not allowed; expected a JSON array of " +
                        std::to_string(sizeof...(P)) + " value(s)");
    Args args = args_from_json(task, j, std::index_sequence_for<P...>{});
    encode_args(task, w, &args, 1);
  }

  /// Into `out`, a std::optional<Result>: decoded where it is when engaged (storage prepared
  /// ahead, RemoteTask::prepare_result), else emplaced.
  static void decode_result_into(const TaskEntry& task, Reader& r, void* out) {
    if constexpr (!std::is_void_v<Result>) {
      auto& result = *static_cast<std::optional<Result>*>(out);
      if constexpr (is_preparable_v<Result>) {
        if (result) return naming_task(task, "result", [&] { decode_value(r, *result); });
      }
      result.emplace(decode_as<Result>(task, r, "result"));
    }
  }

  static void run(const TaskEntry& task, Reader& in, Writer& out) {
    auto fn = reinterpret_cast<R (*)(P...)>(const_cast<void*>(task.address));
    // Braced initialisation decodes the arguments left to right, in the order they were sent.
    Args args{decode_as<std::decay_t<P>>(task, in, "argument")...};
    if constexpr (std::is_void_v<Result>) {
      std::apply(fn, std::move(args));
    } else {
      Result result = std::apply(fn, std::move(args));
      encode_arg(task, out, result, "result");
    }
  }

 private:
  /// Runs `codec`, and prefixes a SerializationError from it with `what` ("argument",
  /// "result") and the task's name.
  template <class Codec>
  static decltype(auto) naming_task(const TaskEntry& task, const char* what, Codec&& codec) {
    try {
      return codec();
    } catch (const SerializationError& e) {
      throw SerializationError(std::string(what) + " of task '" + task.name + "': " + e.what());
    }
  }

  template <class T>
  static void encode_arg(const TaskEntry& task, Writer& w, const T& v,
                         const char* what = "argument") {
    if constexpr (is_encodable_v<T>) {
      naming_task(task, what, [&] { encode_value(w, v); });
    } else {
      throw SerializationError(std::string(what) + " of task '" + task.name + "' has type " +
                               type_name<T>() +
                               ", which cannot be encoded: give it to_json (nlohmann)");
    }
  }

  template <class T>
  static T decode_as(const TaskEntry& task, Reader& r, const char* what) {
    if constexpr (is_decodable_v<T>) {
      return naming_task(task, what, [&] { return decode_value<T>(r); });
    } else {
      throw SerializationError(std::string(what) + " of task '" + task.name + "' has type " +
                               type_name<T>() +
                               ", which cannot be decoded: give it from_json (nlohmann)");
    }
  }

  template <std::size_t... I>
  static Args args_from_json(const TaskEntry& task, const nlohmann::json& j,
                             std::index_sequence<I...>) {
    return Args{arg_from_json<std::tuple_element_t<I, Args>>(task, j[I], I)...};
  }

  template <class T>
  static T arg_from_json(const TaskEntry& task, const nlohmann::json& j, std::size_t i) {
    if constexpr (requires { j.template get<T>(); }) {
      try {
        return j.template get<T>();
      } catch (const std::exception& e) {
        throw ConfigError("argument " + std::to_string(i + 1) + " of task '" + task.name +
                          "': " + j.dump() + " is not a " + type_name<T>() + " (" + e.what() + ")");
      }
    } else {
      throw ConfigError("argument " + std::to_string(i + 1) + " of task '" + task.name +
                        "' has type " + type_name<T>() + ", which cannot be read from JSON");
    }
  }
};

template <class R, class... P>
struct TaskRegistrar {
  TaskRegistrar(R (*fn)(P...), const char* name) {
    register_task(TaskCodec<R, P...>::entry(name, reinterpret_cast<const void*>(fn)));
  }
};

/// An exception of type E with `message`, with `context` nested in it.
template <class E>
std::exception_ptr make_nested(const std::string& message, std::exception_ptr context) {
  try {
    std::rethrow_exception(context);
  } catch (...) {
    try {
      std::throw_with_nested(E(message));
    } catch (...) {
      return std::current_exception();
    }
  }
}

template <class E>
struct ExceptionRegistrar {
  ExceptionRegistrar() { register_exception(typeid(E), &make_nested<E>); }
};

}  // namespace cfx::detail

namespace cfx {

/// A registered task and its encoded arguments, e.g. for ProcessPoolOptions::initializer.
struct TaskCall {
  const detail::TaskEntry* task = nullptr;
  std::vector<char> args{};
};

/// Binds a registered function to arguments: cfx::task_call(set_up, "config.json").
/// Throws cfx::Error if fn is not registered, SerializationError if an argument cannot be
/// encoded.
template <class Fn, class... Args>
TaskCall task_call(Fn fn, Args&&... args) {
  using Tuple = typename detail::fn_traits<Fn>::args;
  const detail::TaskEntry& entry = detail::registered_task(fn);
  const Tuple one(std::forward<Args>(args)...);
  return TaskCall{&entry, detail::encode_args(entry, &one, 1)};
}

}  // namespace cfx

#define CFX_DETAIL_CONCAT2(a, b) a##b
#define CFX_DETAIL_CONCAT(a, b) CFX_DETAIL_CONCAT2(a, b)
// __COUNTER__ is unique within a translation unit, so two registrations never collide: not
// on one line, nor one in a header and one in a .cpp on the same line number.
#define CFX_DETAIL_UNIQUE(prefix) CFX_DETAIL_CONCAT(prefix, __COUNTER__)

/// Registers `fn` (a function at namespace scope) under its own name.
#define CFX_TASK(fn) CFX_TASK_AS(&fn, #fn)

/// Registers the function pointer `fnptr` under `name`.
#define CFX_TASK_AS(fnptr, name)                                                \
  [[maybe_unused]] static const ::cfx::detail::TaskRegistrar CFX_DETAIL_UNIQUE( \
      cfx_task_registrar_)(fnptr, name)

/// Registers an exception type (constructible from std::string) so that the process backend
/// rethrows it by type in the parent instead of as cfx::RemoteError.
#define CFX_EXCEPTION(Type)                                                                \
  [[maybe_unused]] static const ::cfx::detail::ExceptionRegistrar<Type> CFX_DETAIL_UNIQUE( \
      cfx_exception_registrar_) {}
