// The number of cores this process may run on. Internal.
#pragma once

#include <cstddef>

namespace cfx::detail {

/// Cores in this process's affinity mask (what a CI container really gives), at least 1.
std::size_t usable_cores();

}  // namespace cfx::detail
