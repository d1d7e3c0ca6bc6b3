// The task registry's entries. Internal: register with CFX_TASK (cfx/task.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cfx::detail {

class Reader;
class Writer;
struct TaskEntry;

/// Runs `count` calls of a registered function in a worker (see serve_calls).
using ServeFn = void (*)(const void* fn, const TaskEntry& task, Reader& args, std::uint32_t count,
                         Writer& reply);

struct TaskEntry {
  std::string name;
  const void* address = nullptr;
  ServeFn serve = nullptr;
};

/// Adds an entry at static-initialisation time; a second name for the same function, or the
/// same name for two functions, is reported on stderr and the first registration kept.
void register_task(TaskEntry entry);
/// The entry for a function address, or nullptr.
const TaskEntry* find_task(const void* address);
/// The entry for a name, or nullptr.
const TaskEntry* find_task(std::string_view name);

}  // namespace cfx::detail
