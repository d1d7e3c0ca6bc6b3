// Registering functions as tasks that may run in another process (API.md section 1).
//
//   std::pair<std::uint64_t, int> chain_length(std::uint64_t n);
//   CFX_TASK(chain_length);                   // registered as "chain_length"
//   CFX_TASK_AS(&ns::overloaded, "name");     // explicit name: overloads, templates
//
// The thread backend runs any callable; the process backend looks a function up here by its
// address in the parent and by its name in the worker.
#pragma once

#include <string>
#include <string_view>

namespace cfx::detail {

/// One registered task. `invoke` is filled by the process backend's wire layer.
struct TaskEntry {
  std::string name;
  const void* address = nullptr;
};

/// Adds an entry at static-initialisation time; a second name for the same function, or the
/// same name for two functions, is reported on stderr and the first registration kept.
void register_task(TaskEntry entry);
/// The entry for a function address, or nullptr.
const TaskEntry* find_task(const void* address);
/// The entry for a name, or nullptr.
const TaskEntry* find_task(std::string_view name);

template <class R, class... Args>
struct TaskRegistrar {
  TaskRegistrar(R (*fn)(Args...), const char* name) {
    register_task(TaskEntry{name, reinterpret_cast<const void*>(fn)});
  }
};

/// Filled in by the process backend's wire layer.
template <class E>
struct ExceptionRegistrar {};

}  // namespace cfx::detail

#define CFX_DETAIL_CONCAT2(a, b) a##b
#define CFX_DETAIL_CONCAT(a, b) CFX_DETAIL_CONCAT2(a, b)

/// Registers `fn` (a function at namespace scope) under its own name.
#define CFX_TASK(fn) CFX_TASK_AS(&fn, #fn)
/// Registers an exception type (constructible from std::string) so that the process backend
/// rethrows it by type in the parent.
#define CFX_EXCEPTION(Type)                                                                \
  [[maybe_unused]] static const ::cfx::detail::ExceptionRegistrar<Type> CFX_DETAIL_CONCAT( \
      cfx_exception_registrar_, __LINE__) {}

/// Registers the function pointer `fnptr` under `name`.
#define CFX_TASK_AS(fnptr, name)                                                    \
  [[maybe_unused]] static const ::cfx::detail::TaskRegistrar CFX_DETAIL_CONCAT( \
      cfx_task_registrar_, __LINE__)(fnptr, name)
