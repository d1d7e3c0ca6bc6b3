// One process's end of a cfx::Pipe (cfx/pipe.hpp): [u32 length][bytes] messages on a Unix
// stream socket.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>

#include "cfx/pipe.hpp"

namespace cfx::detail {
namespace {

constexpr std::size_t kMinRead = 1 << 16;

[[noreturn]] void throw_closed() {
  throw Error("cfx::Connection: this end was closed");
}
[[noreturn]] void throw_eof() {
  throw Error(
      "cfx::Connection::recv: end of file: every copy of the other end was closed or its "
      "process died");
}

}  // namespace

std::pair<int, int> connection_socketpair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    throw Error(std::string("cfx::Pipe: socketpair failed: ") + std::strerror(errno));
  return {fds[0], fds[1]};
}

ConnectionEnd::ConnectionEnd(int fd) : fd_(fd) {
  try {
    key_ = handle_key(fd);
  } catch (...) {
    ::close(fd);
    throw;
  }
}

ConnectionEnd::~ConnectionEnd() {
  int fd = fd_.exchange(-1);
  if (fd >= 0) ::close(fd);
  if (int pending = close_pending_.exchange(-1); pending >= 0) ::close(pending);
}

void ConnectionEnd::close() noexcept {
  // No shutdown(): the socket is shared with the other processes holding this end, and only
  // this process's copy closes. A recv() of another thread blocked on the descriptor closes
  // it when its read returns.
  std::lock_guard send_lock(send_mutex_);
  int fd = fd_.exchange(-1);
  if (fd < 0) return;
  std::unique_lock recv_lock(recv_mutex_, std::try_to_lock);
  if (recv_lock.owns_lock())
    ::close(fd);
  else
    close_pending_.store(fd);
}

void ConnectionEnd::send(std::span<const char> bytes) {
  if (bytes.size() > UINT32_MAX) throw SerializationError("cfx::Connection::send: over 4 GiB");
  std::uint32_t n = static_cast<std::uint32_t>(bytes.size());
  std::lock_guard lock(send_mutex_);
  int fd = fd_.load();
  if (fd < 0) throw_closed();
  iovec iov[2] = {{&n, sizeof(n)}, {const_cast<char*>(bytes.data()), bytes.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  std::size_t left = sizeof(n) + bytes.size();
  while (left > 0) {
    ssize_t k = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("cfx::Connection::send: the other end is gone (") +
                  std::strerror(errno) + ")");
    }
    left -= static_cast<std::size_t>(k);
    auto done = static_cast<std::size_t>(k);
    while (done > 0 && msg.msg_iovlen > 0) {  // skip what was written
      auto take = std::min(done, msg.msg_iov->iov_len);
      msg.msg_iov->iov_base = static_cast<char*>(msg.msg_iov->iov_base) + take;
      msg.msg_iov->iov_len -= take;
      done -= take;
      if (msg.msg_iov->iov_len == 0) {
        ++msg.msg_iov;
        --msg.msg_iovlen;
      }
    }
  }
}

bool ConnectionEnd::complete_message() const {
  if (end_ - begin_ < sizeof(std::uint32_t)) return false;
  std::uint32_t n;
  std::memcpy(&n, buffer_.data() + begin_, sizeof(n));
  return end_ - begin_ - sizeof(n) >= n;
}

std::span<const char> ConnectionEnd::next_message(std::unique_lock<std::mutex>&) {
  while (!complete_message()) {
    int fd = fd_.load();
    if (fd < 0) throw_closed();
    if (begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    std::size_t want = kMinRead;
    if (end_ >= sizeof(std::uint32_t)) {
      std::uint32_t n;
      std::memcpy(&n, buffer_.data(), sizeof(n));
      want =
          std::max<std::size_t>(want, std::min<std::size_t>(sizeof(n) + n - end_, end_ + kMinRead));
    }
    if (buffer_.size() - end_ < want) buffer_.resize(end_ + want);
    ssize_t k = ::read(fd, buffer_.data() + end_, buffer_.size() - end_);
    if (int pending = close_pending_.exchange(-1); pending >= 0) {  // close() meanwhile
      ::close(pending);
      throw_closed();
    }
    if (k == 0) throw_eof();
    if (k < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) throw_eof();
      if (fd_.load() < 0) throw_closed();
      throw Error(std::string("cfx::Connection::recv: ") + std::strerror(errno));
    }
    end_ += static_cast<std::size_t>(k);
  }
  std::uint32_t n;
  std::memcpy(&n, buffer_.data() + begin_, sizeof(n));
  std::span<const char> message(buffer_.data() + begin_ + sizeof(n), n);
  begin_ += sizeof(n) + n;
  return message;
}

bool ConnectionEnd::poll(double seconds) {
  {
    std::lock_guard lock(recv_mutex_);
    if (complete_message()) return true;
  }
  int fd = fd_.load();
  if (fd < 0) throw_closed();
  pollfd p{fd, POLLIN, 0};
  int timeout_ms = seconds < 0 ? -1 : static_cast<int>(std::ceil(std::min(seconds, 2e6) * 1000));
  for (;;) {
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    return r > 0;
  }
}

}  // namespace cfx::detail
