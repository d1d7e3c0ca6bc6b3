// No residue after SIGKILL of the creator (issue 9): toolkit_helper, in a process group of its
// own, maps a SharedArray that a pool worker maps too; the test SIGKILLs the group and checks
// that /dev/shm did not change and that, once the worker has died with its parent, no
// process maps or holds the block any more (the kernel has freed it).
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <climits>
#include <fstream>
#include <sstream>

#include "toolkit/tasks.hpp"

extern char** environ;

using namespace toolkit_test;

namespace {

std::string helper_path() {
  if (const char* p = std::getenv("CFX_TOOLKIT_HELPER")) return p;
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string self(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
  return self.substr(0, self.rfind('/') + 1) + "toolkit_helper";
}

/// Processes that map, or hold a descriptor of, a memfd with inode `ino`.
int holders(unsigned long long ino) {
  int found = 0;
  DIR* proc = ::opendir("/proc");
  if (!proc) return 0;
  while (dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string dir = std::string("/proc/") + e->d_name;
    bool holds = false;
    std::ifstream maps(dir + "/maps");
    for (std::string line; !holds && std::getline(maps, line);) {
      if (line.find("memfd:cfx-shared") == std::string::npos) continue;
      std::istringstream fields(line);
      std::string range, perms, offset, dev;
      unsigned long long inode = 0;
      fields >> range >> perms >> offset >> dev >> inode;
      holds = inode == ino;
    }
    if (DIR* fds = ::opendir((dir + "/fd").c_str())) {
      while (dirent* f = ::readdir(fds)) {
        struct stat st {};
        if (!holds && ::stat((dir + "/fd/" + f->d_name).c_str(), &st) == 0 && st.st_ino == ino &&
            S_ISREG(st.st_mode))
          holds = true;
      }
      ::closedir(fds);
    }
    found += holds;
  }
  ::closedir(proc);
  return found;
}

}  // namespace

TEST_CASE("after SIGKILL of the creator and its group, the shared memory is gone") {
  auto shm = dev_shm();
  int out[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  ::posix_spawnattr_setpgroup(&attr, 0);
  std::string path = helper_path();
  char* argv[] = {path.data(), nullptr};
  pid_t pid = 0;
  REQUIRE(::posix_spawn(&pid, path.c_str(), &actions, &attr, argv, environ) == 0);
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  REQUIRE_FALSE(line.empty());
  std::istringstream fields(line);
  unsigned long long ino = 0;
  int worker = 0;
  fields >> ino >> worker;
  REQUIRE(worker > 0);
  int worker_fd = static_cast<int>(::syscall(SYS_pidfd_open, worker, 0));
  REQUIRE(worker_fd >= 0);
  CHECK(holders(ino) >= 2);  // the helper and its worker
  ::kill(-pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
  // The worker dies of its parent-death signal: its pidfd turns readable (bounded wait).
  pollfd p{worker_fd, POLLIN, 0};
  CHECK(::poll(&p, 1, 20000) == 1);
  ::close(worker_fd);
  CHECK(holders(ino) == 0);
  CHECK(dev_shm() == shm);
}
