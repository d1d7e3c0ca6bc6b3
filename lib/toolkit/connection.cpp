// One process's end of a cfx::Pipe (cfx/pipe.hpp): [u32 length][bytes] messages on a pipe
// each way.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/uio.h>
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

std::pair<std::shared_ptr<ConnectionEnd>, std::shared_ptr<ConnectionEnd>> connected_ends() {
  int a[2], b[2];  // a: left to right, b: right to left
  if (::pipe2(a, O_CLOEXEC) != 0)
    throw Error(std::string("cfx::Pipe: pipe2 failed: ") + std::strerror(errno));
  if (::pipe2(b, O_CLOEXEC) != 0) {
    int error = errno;
    ::close(a[0]);
    ::close(a[1]);
    throw Error(std::string("cfx::Pipe: pipe2 failed: ") + std::strerror(error));
  }
  std::shared_ptr<ConnectionEnd> left, right;
  try {
    right = std::make_shared<ConnectionEnd>(a[0], b[1]);
  } catch (...) {
    ::close(b[0]);
    ::close(a[1]);
    throw;
  }
  left = std::make_shared<ConnectionEnd>(b[0], a[1]);
  return {std::move(left), std::move(right)};
}

ConnectionEnd::ConnectionEnd(int in, int out) : in_(in), out_(out) {
  try {
    in_key_ = handle_key(in);
    out_key_ = handle_key(out);
  } catch (...) {
    ::close(in);
    ::close(out);
    throw;
  }
}

std::shared_ptr<ConnectionEnd> ConnectionEnd::adopt(int in, int out) {
  if (in < 0 || out < 0) {
    if (in >= 0) ::close(in);
    if (out >= 0) ::close(out);
    throw SerializationError("a descriptor of a Connection did not arrive");
  }
  return std::make_shared<ConnectionEnd>(in, out);
}

ConnectionEnd::~ConnectionEnd() {
  for (auto* fd : {&in_, &out_})
    if (int old = fd->exchange(-1); old >= 0) ::close(old);
  if (int pending = close_pending_.exchange(-1); pending >= 0) ::close(pending);
}

void ConnectionEnd::close() noexcept {
  // Only this process's copies close: other processes holding this end keep theirs. A
  // recv() of another thread blocked on the incoming pipe closes it when its read returns.
  std::lock_guard send_lock(send_mutex_);
  if (int out = out_.exchange(-1); out >= 0) ::close(out);
  int in = in_.exchange(-1);
  if (in < 0) return;
  std::unique_lock recv_lock(recv_mutex_, std::try_to_lock);
  if (recv_lock.owns_lock())
    ::close(in);
  else
    close_pending_.store(in);
}

namespace {

/// Blocks SIGPIPE on this thread while alive: a write to a pipe whose readers are all gone
/// then fails with EPIPE instead of killing the program. One SIGPIPE such a write raised is
/// consumed, so the program's own disposition and mask are left as they were.
class NoSigpipe {
 public:
  NoSigpipe() {
    sigemptyset(&pipe_set_);
    sigaddset(&pipe_set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_);
  }
  ~NoSigpipe() {
    if (raised_ && !sigismember(&old_, SIGPIPE)) {
      timespec zero{};
      ::sigtimedwait(&pipe_set_, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  NoSigpipe(const NoSigpipe&) = delete;
  NoSigpipe& operator=(const NoSigpipe&) = delete;
  void raised() { raised_ = true; }

 private:
  sigset_t pipe_set_, old_;
  bool raised_ = false;
};

}  // namespace

void ConnectionEnd::send(std::span<const char> bytes) {
  if (bytes.size() > UINT32_MAX) throw SerializationError("cfx::Connection::send: over 4 GiB");
  std::uint32_t n = static_cast<std::uint32_t>(bytes.size());
  std::lock_guard lock(send_mutex_);
  int fd = out_.load();
  if (fd < 0) throw_closed();
  iovec iov[2] = {{&n, sizeof(n)}, {const_cast<char*>(bytes.data()), bytes.size()}};
  iovec* next = iov;
  int count = 2;
  NoSigpipe no_sigpipe;
  while (count > 0) {
    ssize_t k = ::writev(fd, next, count);
    if (k < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      if (error == EPIPE) no_sigpipe.raised();
      throw Error(std::string("cfx::Connection::send: the other end is gone (") +
                  std::strerror(error) + ")");
    }
    auto done = static_cast<std::size_t>(k);
    while (count > 0 && done >= next->iov_len) {  // skip what was written
      done -= next->iov_len;
      ++next;
      --count;
    }
    if (count > 0) {
      next->iov_base = static_cast<char*>(next->iov_base) + done;
      next->iov_len -= done;
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
    int fd = in_.load();
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
      if (in_.load() < 0) throw_closed();
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
  int fd = in_.load();
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
