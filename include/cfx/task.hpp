// Registering functions and exception types for the process backend (API.md section 1).
//
//   std::pair<std::uint64_t, int> chain_length(std::uint64_t n);
//   CFX_TASK(chain_length);                   // registered as "chain_length"
//   CFX_TASK_AS(&ns::overloaded, "name");     // explicit name: overloads, templates
//   CFX_EXCEPTION(MyError);                   // rethrown as MyError in the parent
//
// The thread backend runs any callable; the process backend looks a function up here by its
// address in the parent and by its name in the worker. Registration happens during static
// initialisation, so parent and worker (the same program) agree on every name.
#pragma once

#include <exception>
#include <string>
#include <typeinfo>

#include "cfx/detail/registry.hpp"
#include "cfx/detail/remote_task.hpp"
#include "cfx/detail/wire.hpp"

namespace cfx::detail {

template <class R, class... Args>
struct TaskRegistrar {
  TaskRegistrar(R (*fn)(Args...), const char* name) {
    register_task(TaskEntry{name, reinterpret_cast<const void*>(fn), &serve_calls<R, Args...>});
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

#define CFX_DETAIL_CONCAT2(a, b) a##b
#define CFX_DETAIL_CONCAT(a, b) CFX_DETAIL_CONCAT2(a, b)

/// Registers `fn` (a function at namespace scope) under its own name.
#define CFX_TASK(fn) CFX_TASK_AS(&fn, #fn)

/// Registers the function pointer `fnptr` under `name`.
#define CFX_TASK_AS(fnptr, name)                                                \
  [[maybe_unused]] static const ::cfx::detail::TaskRegistrar CFX_DETAIL_CONCAT( \
      cfx_task_registrar_, __LINE__)(fnptr, name)

/// Registers an exception type (constructible from std::string) so that the process backend
/// rethrows it by type in the parent instead of as cfx::RemoteError.
#define CFX_EXCEPTION(Type)                                                                \
  [[maybe_unused]] static const ::cfx::detail::ExceptionRegistrar<Type> CFX_DETAIL_CONCAT( \
      cfx_exception_registrar_, __LINE__) {}
