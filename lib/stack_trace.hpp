// Where a worker's exception was thrown. Internal.
#pragma once

#include <string>

namespace cfx::detail {

/// From now on, remember the stack of every throw on this process (worker processes only:
/// it costs a few microseconds per throw).
void capture_throw_stack_traces();
/// The stack of the last throw on this thread, formatted; empty where unavailable (under
/// sanitizers, or before capture_throw_stack_traces()).
std::string last_throw_stack_trace();

}  // namespace cfx::detail
