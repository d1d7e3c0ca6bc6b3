// The task registry: filled during static initialisation, read-only afterwards.
#include <cstdio>
#include <map>
#include <mutex>
#include <unordered_map>

#include "cfx/detail/registry.hpp"
#include "cfx/detail/remote_task.hpp"
#include "cfx/errors.hpp"
#include "stack_trace.hpp"

namespace cfx::detail {
namespace {

struct Registry {
  std::mutex mutex;  // registration may run from several shared objects' initialisers
  std::unordered_map<const void*, TaskEntry> by_address;
  std::map<std::string, const void*, std::less<>> by_name;
};

Registry& registry() {
  // Constructed on first use (safe from other static initialisers) and never destroyed: a
  // pool's I/O thread may still look a task up while exit() runs static destructors.
  static Registry& r = *new Registry;
  return r;
}

}  // namespace

void register_task(TaskEntry entry) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  if (auto it = r.by_name.find(entry.name); it != r.by_name.end()) {
    if (it->second != entry.address)
      std::fprintf(stderr,
                   "cfx: task name \"%s\" registered for two functions; keeping the first\n",
                   entry.name.c_str());
    return;
  }
  if (r.by_address.count(entry.address)) {
    std::fprintf(stderr, "cfx: function registered again as \"%s\"; keeping its first name\n",
                 entry.name.c_str());
    return;
  }
  r.by_name.emplace(entry.name, entry.address);
  r.by_address.emplace(entry.address, std::move(entry));
}

const TaskEntry* find_task_at(const void* address) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.by_address.find(address);
  return it == r.by_address.end() ? nullptr : &it->second;
}

const TaskEntry* find_task(std::string_view name) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.by_name.find(name);
  if (it == r.by_name.end()) return nullptr;
  return &r.by_address.at(it->second);
}

const TaskEntry& registered_task(const void* address, const std::type_info& args) {
  const TaskEntry* e = find_task_at(address);
  if (!e) {
    std::string name = function_name(address);
    std::string which = name.empty() ? "this function" : "function '" + name + "'";
    throw Error(which +
                " is not registered as a task, so it cannot run in a worker process: add "
                "CFX_TASK(function_name); at namespace scope after its definition (or "
                "CFX_TASK_AS(&function, \"name\") for overloads and templates)");
  }
  if (*e->args_type != args)
    throw Error("task '" + e->name + "' was called through a function pointer of another type");
  return *e;
}

void throw_not_a_task() {
  throw Error(
      "the process backend runs only functions registered with CFX_TASK(function_name); "
      "lambdas, functors and bound member functions cannot be sent to a worker process");
}

}  // namespace cfx::detail
