// The number of cores this process may run on. Internal.
#pragma once

#include <cstddef>

namespace cfx::detail {

/// Cores in this process's affinity mask (what a CI container really gives), capped by its
/// cgroup's CPU quota, at least 1 (cfx::cpu_count()). The quota is read once.
std::size_t usable_cores();

}  // namespace cfx::detail
