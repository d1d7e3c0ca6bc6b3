// The thread backend's configuration keys. Internal: listed by backends/config.cpp.
#pragma once

#include "lib/config_reader.hpp"

namespace cfx::detail {

/// "backend": "thread": max_workers, thread_name_prefix, initializer.
const BackendConfig& thread_backend_config();

}  // namespace cfx::detail
