// The number of cores this process may run on, and the pause of a spinning core. Internal.
#pragma once

#include <cstddef>

namespace cfx::detail {

/// Cores in this process's affinity mask (what a CI container really gives), capped by its
/// cgroup's CPU quota, at least 1 (cfx::cpu_count()). The quota is read once.
std::size_t usable_cores();

/// One pause of a core spinning on a word another core will write: lets the sibling
/// hyperthread run, and costs no system call.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace cfx::detail
