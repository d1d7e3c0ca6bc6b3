// The task registry's entries. Internal: register with CFX_TASK (cfx/task.hpp).
//
// An entry is type-erased: CFX_TASK instantiates, in the user's translation unit, the codec
// of the function's argument and result types and stores pointers to it here, so that
// Executor::submit and the worker reach it through plain function pointers and neither has
// to compile nlohmann::json.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <typeinfo>

namespace cfx::detail {

class Reader;
class Writer;
struct TaskEntry;

/// Encodes `count` argument tuples (`const Args*`, Args = std::tuple of the decayed
/// parameters) after each other; throws SerializationError naming the task and the type.
using EncodeArgsFn = void (*)(const TaskEntry& task, Writer& out, const void* tuples,
                              std::size_t count);
/// Encodes one argument tuple read from a JSON array (`const nlohmann::json*`), for
/// initializers named in a config file; throws ConfigError naming what did not fit.
using EncodeJsonArgsFn = void (*)(const TaskEntry& task, Writer& out, const void* json);
/// Decodes one result into `out` (a `std::optional<Result>*`, Result the decayed result
/// type; nothing is read for void); throws SerializationError.
using DecodeResultFn = void (*)(const TaskEntry& task, Reader& in, void* out);
/// Worker side: decodes one argument tuple, runs the function, encodes its result. Throws
/// whatever the function or the codec throws.
using RunFn = void (*)(const TaskEntry& task, Reader& args, Writer& result);

struct TaskEntry {
  std::string name;
  const void* address = nullptr;
  const std::type_info* args_type = nullptr;    // std::tuple<std::decay_t<P>...>
  const std::type_info* result_type = nullptr;  // std::decay_t<R> (void for void)
  EncodeArgsFn encode_args = nullptr;
  EncodeJsonArgsFn encode_json_args = nullptr;
  DecodeResultFn decode_result = nullptr;
  RunFn run = nullptr;
  /// As encode_args, for one `const std::tuple<const std::decay_t<P>&...>*`: arguments that
  /// already have the parameters' types are encoded where they are, never copied first.
  EncodeArgsFn encode_arg_refs = nullptr;
};

/// Adds an entry at static-initialisation time; a second name for the same function, or the
/// same name for two functions, is reported on stderr and the first registration kept.
void register_task(TaskEntry entry);
/// The entry for a function address, or nullptr. (Named apart from find_task: a string
/// literal would otherwise pick this overload.)
const TaskEntry* find_task_at(const void* address);
/// The entry for a name, or nullptr.
const TaskEntry* find_task(std::string_view name);

}  // namespace cfx::detail
