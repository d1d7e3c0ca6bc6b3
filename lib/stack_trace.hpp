// Where a worker's exception was thrown, and names of functions by address. Internal.
#pragma once

#include <string>

namespace cfx::detail {

/// From now on, remember the stack of every throw on this process (worker processes only:
/// it costs a few microseconds per throw).
void capture_throw_stack_traces();
/// The stack of the last throw on this thread, formatted one frame a line, with function
/// names and, where the code has debug info, file:line; empty where unavailable (see
/// throw_stack_traces_compiled(), or before capture_throw_stack_traces()).
std::string last_throw_stack_trace();
/// Whether this build records throw-site stacks at all: false under ASan/TSan (they intercept
/// __cxa_throw themselves) and when built with -Dthrow_traces=false.
bool throw_stack_traces_compiled() noexcept;

/// The demangled name of the function at (or containing) `address`, e.g. a function pointer
/// cast to const void*; empty if unknown. Read from the program's own symbol table and debug
/// info, so it needs no -rdynamic, only an unstripped binary. Thread-safe, but serialised: the
/// first call in a process (or the first trace formatted) loads those tables, milliseconds to
/// half a second for a large binary with debug info. Meant for error messages, not hot paths.
std::string function_name(const void* address);

}  // namespace cfx::detail
