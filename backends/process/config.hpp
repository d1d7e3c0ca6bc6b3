// The process backend's configuration keys. Internal: listed by backends/config.cpp.
#pragma once

#include "lib/config_reader.hpp"

namespace cfx::detail {

/// "backend": "process": max_workers, start_method, max_tasks_per_child, task_timeout_s,
/// on_worker_crash, initializer.
const BackendConfig& process_backend_config();

}  // namespace cfx::detail
