// The descriptor channel (descriptors.hpp).
#include "lib/toolkit/descriptors.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "cfx/detail/shared_block.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {
namespace {

// At most this many descriptors per message (the kernel's SCM_MAX_FD is 253).
constexpr std::size_t kMaxFds = 240;
constexpr std::size_t kMaxForgets = 1024;
constexpr std::size_t kEntryBytes = 4 + 1 + 8 + 8;
constexpr std::size_t kHeaderBytes = 8 + 4 + 4;
constexpr std::size_t kMaxMessage = kHeaderBytes + kMaxFds * kEntryBytes + kMaxForgets * 16;

template <class T>
void put(std::vector<char>& out, const T& v) {
  const char* p = reinterpret_cast<const char*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}
template <class T>
T get(const char*& p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  p += sizeof(T);
  return v;
}

void send_message(int socket, const std::vector<char>& bytes, const std::vector<int>& fds) {
  if (int error = send_with_descriptors(socket, bytes, fds, false))
    throw Error(std::string("cfx: sending shared handles to the other process failed: ") +
                std::strerror(error));
}

}  // namespace

int send_with_descriptors(int socket, std::span<const char> bytes, std::span<const int> fds,
                          bool wait) noexcept {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (fds.size() > kMaxFds) return EINVAL;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const int flags = MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT);
  for (;;) {
    if (::sendmsg(socket, &msg, flags) >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

ssize_t receive_with_descriptors(int socket, std::span<char> bytes, std::vector<int>& fds,
                                 bool wait) noexcept {
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];  // the kernel's SCM_MAX_FD
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const int flags = MSG_CMSG_CLOEXEC | (wait ? 0 : MSG_DONTWAIT);
  ssize_t got;
  do {
    got = ::recvmsg(socket, &msg, flags);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return got;
  std::size_t first = fds.size();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    fds.resize(fds.size() + n);
    std::memcpy(fds.data() + fds.size() - n, CMSG_DATA(c), n * sizeof(int));
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {  // cut short: nothing in it can be trusted
    for (std::size_t i = first; i < fds.size(); ++i) ::close(fds[i]);
    fds.resize(first);
    errno = EMSGSIZE;
    return -1;
  }
  return got;
}

std::pair<int, int> descriptor_socketpair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
    throw std::system_error(errno, std::generic_category(), "socketpair");
  return {fds[0], fds[1]};
}

DescriptorOutbox::~DescriptorOutbox() = default;

std::size_t DescriptorOutbox::send(std::uint64_t id, const HandleList& handles, bool remember) {
  std::vector<const HandleRef*> due;
  std::vector<std::uint32_t> slots;
  for (std::uint32_t slot = 0; slot < handles.size(); ++slot) {
    const HandleRef& h = handles[slot];
    if (remember && h.cached) {
      auto [it, fresh] = sent_.try_emplace(h.key, h.keep);
      if (!fresh && !it->second.expired()) continue;  // the receiver holds it
      it->second = h.keep;
    }
    due.push_back(&h);
    slots.push_back(slot);
  }
  std::vector<HandleKey> forgets;
  if (remember && blocks_released() != released_seen_) {
    released_seen_ = blocks_released();
    for (auto it = sent_.begin(); it != sent_.end();) {
      if (it->second.expired()) {
        forgets.push_back(it->first);
        it = sent_.erase(it);
      } else {
        ++it;
      }
    }
  }
  std::size_t messages = 0, at = 0, forgot = 0;
  while (at < due.size() || forgot < forgets.size()) {
    std::size_t n = std::min(kMaxFds, due.size() - at);
    std::size_t f = std::min(kMaxForgets, forgets.size() - forgot);
    std::vector<char> bytes;
    bytes.reserve(kHeaderBytes + n * kEntryBytes + f * 16);
    put(bytes, id);
    put(bytes, static_cast<std::uint32_t>(n));
    put(bytes, static_cast<std::uint32_t>(f));
    std::vector<int> fds;
    for (std::size_t i = at; i < at + n; ++i) {
      put(bytes, slots[i]);
      put(bytes, static_cast<std::uint8_t>(due[i]->cached));
      put(bytes, due[i]->key.dev);
      put(bytes, due[i]->key.ino);
      fds.push_back(due[i]->fd);
    }
    for (std::size_t i = forgot; i < forgot + f; ++i) {
      put(bytes, forgets[i].dev);
      put(bytes, forgets[i].ino);
    }
    send_message(socket_, bytes, fds);
    at += n;
    forgot += f;
    ++messages;
  }
  return messages;
}

DescriptorInbox::~DescriptorInbox() {
  for (auto& p : pending_) ::close(p.fd);
  for (auto& [key, fd] : cached_fds_) ::close(fd);
}

bool DescriptorInbox::read_one() {
  std::vector<char> bytes(kMaxMessage);
  std::vector<int> fds;
  ssize_t got = receive_with_descriptors(socket_, bytes, fds, false);
  if (got < 0 && errno == EMSGSIZE) return true;  // malformed: dropped, read on
  if (got <= 0) return false;
  auto size = static_cast<std::size_t>(got);
  const char* p = bytes.data();
  std::uint32_t n = 0, f = 0;
  std::uint64_t id = 0;
  if (size >= kHeaderBytes) {
    id = get<std::uint64_t>(p);
    n = get<std::uint32_t>(p);
    f = get<std::uint32_t>(p);
  }
  if (size < kHeaderBytes || n != fds.size() ||
      size != kHeaderBytes + n * kEntryBytes + std::size_t{f} * 16) {
    for (int fd : fds) ::close(fd);  // malformed: nothing in it can be trusted
    return true;
  }
  for (std::uint32_t i = 0; i < n; ++i) {
    auto slot = get<std::uint32_t>(p);
    auto cached = get<std::uint8_t>(p);
    HandleKey key{get<std::uint64_t>(p), get<std::uint64_t>(p)};
    if (cached) {
      auto [it, fresh] = cached_fds_.try_emplace(key, fds[i]);
      if (!fresh) ::close(fds[i]);
    } else {
      pending_.push_back({id, slot, fds[i]});
    }
  }
  for (std::uint32_t i = 0; i < f; ++i) {
    HandleKey key{get<std::uint64_t>(p), get<std::uint64_t>(p)};
    kept_.erase(key);
    if (auto it = cached_fds_.find(key); it != cached_fds_.end()) {
      ::close(it->second);
      cached_fds_.erase(it);
    }
  }
  return true;
}

std::size_t DescriptorInbox::drain() {
  std::size_t n = 0;
  while (read_one()) ++n;
  return n;
}

void DescriptorInbox::close_before(std::uint64_t id) {
  while (!pending_.empty() && pending_.front().id < id) {
    ::close(pending_.front().fd);
    pending_.pop_front();
  }
}

int DescriptorInbox::take(std::uint32_t slot, const HandleKey& key) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto it = cached_fds_.find(key); it != cached_fds_.end()) {
      int fd = it->second;
      cached_fds_.erase(it);
      return fd;
    }
    close_before(current_);
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->id == current_ && it->slot == slot) {
        int fd = it->fd;
        pending_.erase(it);
        return fd;
      }
    }
    if (attempt == 0 && role_ == Role::pool) drain();
  }
  return -1;
}

void DescriptorInbox::adopted(const HandleKey& key, std::shared_ptr<const void> keep) {
  if (role_ == Role::worker) kept_[key] = std::move(keep);
}

}  // namespace cfx::detail
