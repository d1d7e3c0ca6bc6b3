// Tasks and helpers of the process-backend tests.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>
#include <nlohmann/json.hpp>

namespace proc_test {

/// Descriptors open in this process, from /proc/self/fd (the listing's own excluded).
inline std::vector<int> open_fds() {
  std::vector<int> fds;
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return fds;
  int own = ::dirfd(dir);
  while (auto* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    int fd = std::atoi(e->d_name);
    if (fd != own) fds.push_back(fd);
  }
  ::closedir(dir);
  return fds;
}

/// Processes whose parent is this process (live or zombie).
inline std::vector<int> child_pids() {
  std::vector<int> kids;
  DIR* dir = ::opendir("/proc");
  if (!dir) return kids;
  std::string me = std::to_string(::getpid());
  while (auto* e = ::readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string path = std::string("/proc/") + e->d_name + "/stat";
    FILE* f = std::fopen(path.c_str(), "r");
    if (!f) continue;
    char buf[512];
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    // pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
    std::string s(buf);
    auto close = s.rfind(')');
    if (close == std::string::npos) continue;
    char state;
    int ppid;
    if (std::sscanf(s.c_str() + close + 1, " %c %d", &state, &ppid) == 2 &&
        std::to_string(ppid) == me)
      kids.push_back(std::atoi(e->d_name));
  }
  ::closedir(dir);
  return kids;
}

/// Threads of this process.
inline std::size_t thread_count() {
  std::size_t n = 0;
  DIR* dir = ::opendir("/proc/self/task");
  if (!dir) return 0;
  while (auto* e = ::readdir(dir))
    if (e->d_name[0] != '.') ++n;
  ::closedir(dir);
  return n;
}

}  // namespace proc_test
