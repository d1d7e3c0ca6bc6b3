#include "cores.hpp"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "cfx/process.hpp"

namespace cfx::detail {
namespace {

/// The CPU quota of this process's cgroup (v2: cpu.max of its cgroup or the nearest parent
/// that sets one; v1: cpu.cfs_quota_us / cfs_period_us), in cores; nullopt if unlimited.
std::optional<double> cgroup_quota() {
  std::ifstream self("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(self, line))
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  for (std::string dir = path; !path.empty();) {
    std::ifstream max("/sys/fs/cgroup" + dir + "/cpu.max");
    std::string quota;
    double period = 0;
    if (max >> quota >> period && quota != "max" && period > 0) return std::stod(quota) / period;
    if (dir.empty() || dir == "/") break;
    dir = dir.substr(0, dir.find_last_of('/'));
  }
  std::ifstream q("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), p("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  double quota = 0, period = 0;
  if (q >> quota && p >> period && quota > 0 && period > 0) return quota / period;
  return std::nullopt;
}

}  // namespace

std::size_t usable_cores() {
  static const std::optional<double> quota = cgroup_quota();  // read once
  std::size_t n = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    n = static_cast<std::size_t>(std::max(1, CPU_COUNT(&set)));
  if (quota) n = std::min(n, std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(*quota))));
  return n;
}

}  // namespace cfx::detail

namespace cfx {

std::size_t cpu_count() {
  return detail::usable_cores();
}

}  // namespace cfx
