// The fork server (fork_server.hpp): the pool's client and the server's loop.
#include "backends/process/fork_server.hpp"

#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "backends/process/worker.hpp"
#include "cfx/errors.hpp"
#include "lib/toolkit/descriptors.hpp"

namespace cfx::detail {
namespace {

// What the server is given to start: as long as a spawned worker is (faults.cpp).
constexpr int kHelloTimeoutMs = 5000;

constexpr char kFork = 'F';
constexpr char kReap = 'R';

/// A request or a reply: a kind ('F', 'R'; replies: 0) and a value (a pid, a status, -errno).
struct Message {
  char kind = 0;
  long long value = 0;
};

bool send_message(int socket, Message m, std::span<const int> fds = {}) noexcept {
  auto bytes = std::span(reinterpret_cast<const char*>(&m), sizeof m);
  return send_with_descriptors(socket, bytes, fds, true) == 0;
}

/// A whole message, or nothing (the other end closed, or sent something else). A message
/// whose descriptors could not all be taken (this process is at its descriptor limit) comes
/// back as kind 0 with the value -EMFILE.
std::optional<Message> receive_message(int socket, std::vector<int>& fds) noexcept {
  Message m;
  ssize_t got =
      receive_with_descriptors(socket, std::span(reinterpret_cast<char*>(&m), sizeof m), fds, true);
  if (got < 0 && errno == EMSGSIZE) return Message{0, -EMFILE};
  if (got != static_cast<ssize_t>(sizeof m)) return std::nullopt;
  return m;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by ") + ::strsignal(WTERMSIG(status));
  return "ended";
}

// ---- the server -----------------------------------------------------------------------------

/// Forks a worker bound to the four descriptors received; the reply is its pid or -errno.
long long fork_worker_here(std::vector<int>& fds) noexcept {
  if (fds.size() != 4) return -EINVAL;
  // Above 6, so that binding one end to its descriptor never overwrites another end.
  try {
    for (int& fd : fds) fd = above_channel_fds(Fd(std::exchange(fd, -1))).release();
  } catch (const std::system_error& e) {
    return -e.code().value();
  }
  std::fflush(nullptr);  // nothing of ours is printed twice
  pid_t server = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) run_forked_worker({fds[0], fds[1], fds[2], fds[3]}, server);
  return pid < 0 ? -errno : pid;
}

/// Kills worker `pid`'s group (what its tasks started goes with it) and reaps it; the reply is
/// its wait status, or -1 if it is not a child of this server.
long long reap_here(pid_t pid) noexcept {
  if (pid <= 0) return -1;
  ::kill(-pid, SIGKILL);  // its pid names its group while it is a zombie: no one else's
  ::kill(pid, SIGKILL);   // the pool asks only for the dead or the doomed: never wait on a live one
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  return r == pid ? status : -1;
}

}  // namespace

[[noreturn]] void serve_fork_requests() noexcept {
  ::signal(SIGPIPE, SIG_IGN);  // a dead pool shows as EPIPE, and we exit
  ::signal(SIGINT, SIG_IGN);   // Ctrl-C is the pool's to handle
  const int socket = kForkServerFd;
  if (!send_message(socket, {0, ::getpid()})) ::_exit(1);  // hello
  std::vector<int> fds;
  for (;;) {
    fds.clear();
    auto request = receive_message(socket, fds);
    if (!request) ::_exit(0);  // the pool closed the socket (or died): go, workers after us
    long long reply = request->kind == 0 ? request->value : -EINVAL;
    if (request->kind == kFork) reply = fork_worker_here(fds);
    if (request->kind == kReap) reply = reap_here(static_cast<pid_t>(request->value));
    for (int fd : fds) ::close(fd);  // the worker has its own copies
    if (!send_message(socket, {0, reply})) ::_exit(0);
  }
}

// ---- the pool's side ------------------------------------------------------------------------

ForkServer::ForkServer() {
  auto [mine, theirs] = descriptor_socketpair();
  socket_ = above_channel_fds(Fd(mine));
  Fd server_end = above_channel_fds(Fd(theirs));
  const int fds[] = {server_end.get()};
  // The dynamic linker binds every symbol once, in the server, instead of lazily in every
  // worker it forks (each worker would otherwise redo the lookups and copy the pages they
  // write). The server takes the variable out of its environment again (cfx::init).
  std::string marker = std::to_string(::getpid()) + kForkServerMarker;
  std::vector<std::string> extra_env;
  if (!std::getenv("LD_BIND_NOW")) {
    extra_env.push_back("LD_BIND_NOW=1");
    marker += kBindNowMarker;
  }
  pid_ = spawn_program(fds, marker, extra_env);
  server_end.reset();
  pidfd_ = open_child_pidfd(pid_);
  pollfd p{socket_.get(), POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, kHelloTimeoutMs);
  } while (ready < 0 && errno == EINTR);
  std::vector<int> none;
  std::optional<Message> hello;
  if (ready > 0) hello = receive_message(socket_.get(), none);
  for (int fd : none) ::close(fd);
  if (hello && hello->value == pid_) {
    alive_ = true;
    return;
  }
  // It did not start serving: say what it did instead.
  if (ready == 0) ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  throw Error("the fork server (this program, re-run) " +
              (ready == 0 ? std::string("did not start serving within ") +
                                std::to_string(kHelloTimeoutMs / 1000) + " s"
                          : describe_status(status) + " before it served") +
              ": does main() call cfx::init(argc, argv) as its first line?");
}

ForkServer::~ForkServer() {
  socket_.reset();  // the server reads its end and exits
  if (pid_ > 0) {
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

bool ForkServer::alive() const noexcept {
  std::lock_guard lock(mutex_);
  return alive_;
}

long long ForkServer::exchange(char kind, long long value, std::span<const int> fds) noexcept {
  std::vector<int> none;
  std::optional<Message> reply;
  if (alive_ && send_message(socket_.get(), {kind, value}, fds))
    reply = receive_message(socket_.get(), none);
  for (int fd : none) ::close(fd);
  if (!reply) {
    alive_ = false;
    return -EPIPE;
  }
  return reply->value;
}

pid_t ForkServer::fork_worker(const ChildEnds& ends) {
  const int fds[] = {ends.calls, ends.replies, ends.slots, ends.handles};
  long long pid;
  {
    std::lock_guard lock(mutex_);
    pid = exchange(kFork, 0, fds);
  }
  if (pid <= 0) throw std::system_error(static_cast<int>(-pid), std::generic_category(), "fork");
  return static_cast<pid_t>(pid);
}

int ForkServer::reap(pid_t pid) noexcept {
  std::lock_guard lock(mutex_);
  long long status = exchange(kReap, pid, {});
  return status < 0 ? -1 : static_cast<int>(status);
}

}  // namespace cfx::detail
