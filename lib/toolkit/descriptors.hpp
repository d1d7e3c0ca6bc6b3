// The descriptor channel beside a process-pool worker's pipes: a SOCK_SEQPACKET socketpair
// on which the descriptors of the handles inside a call's arguments (or a call's results)
// travel with SCM_RIGHTS, one message per call that has any, sent before the call's frame.
// Internal; docs/wire-format.md ("Descriptors") describes the messages.
//
//   u64 call id | u32 n | u32 forgets | n x (u32 slot, u8 cached, u64 dev, u64 ino)
//   | forgets x (u64 dev, u64 ino)              + n descriptors, in order, as SCM_RIGHTS
//
// Outbox and inbox use a socket they do not own (one socket serves both directions).
// Cached handles (memory blocks) are sent once per worker: the sender remembers what it sent
// and the receiver keeps them until a later message lists them as forgotten (the sender's
// last copy was released). Other handles (Pipe ends) are sent with every call that has them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "cfx/detail/handles.hpp"

namespace cfx::detail {

/// Makes the channel: {this end, the other process's end}, both close-on-exec. Throws
/// std::system_error.
std::pair<int, int> descriptor_socketpair();

/// Sends `bytes` and `fds` (SCM_RIGHTS) as one message on a SOCK_SEQPACKET socket. `wait`:
/// block until there is room. Returns 0, or the errno of the failure.
int send_with_descriptors(int socket, std::span<const char> bytes, std::span<const int> fds,
                          bool wait) noexcept;
/// Receives one message into `bytes` and appends its descriptors (close-on-exec) to `fds`.
/// Returns the bytes received (0: the other end closed), or -1 with errno: EAGAIN when
/// `!wait` and nothing waits, EMSGSIZE for a message cut short (its descriptors closed).
ssize_t receive_with_descriptors(int socket, std::span<char> bytes, std::vector<int>& fds,
                                 bool wait) noexcept;

/// The sending side of one channel (the pool, per worker; the worker, for its results).
class DescriptorOutbox {
 public:
  explicit DescriptorOutbox(int socket = -1) : socket_(socket) {}
  DescriptorOutbox(DescriptorOutbox&&) = delete;
  ~DescriptorOutbox();

  int socket() const noexcept { return socket_; }
  /// Sends, for call `id`, the descriptors of `handles` the receiver lacks and the cached
  /// handles released here since the last message; `remember`: cached handles are sent once
  /// (the pool), else all are sent (a worker's results). Returns how many messages went.
  /// Throws cfx::Error if the socket refuses (the receiver is not reading, or died).
  std::size_t send(std::uint64_t id, const HandleList& handles, bool remember);
  /// Cached handles sent and not yet forgotten (tests, benchmarks).
  std::size_t cached() const noexcept { return sent_.size(); }

 private:
  int socket_;
  std::unordered_map<HandleKey, std::weak_ptr<const void>, HandleKeyHash> sent_;
  std::uint64_t released_seen_ = 0;
};

/// The receiving side: messages are read without blocking (the sender sent each before the
/// frame that needs it, so it is there when that frame is read).
class DescriptorInbox : public HandleSource {
 public:
  /// A worker's inbox keeps the cached handles it maps and reads messages when the pool's
  /// count says some are due (drain()); the pool's reads them when a result needs one.
  enum class Role { worker, pool };
  DescriptorInbox(int socket, Role role) : socket_(socket), role_(role) {}
  DescriptorInbox(DescriptorInbox&&) = delete;
  ~DescriptorInbox() override;

  int socket() const noexcept { return socket_; }
  /// Reads every message that has arrived; returns how many.
  std::size_t drain();
  /// Decoding call `id`: take() hands out its descriptors (older calls' are closed).
  void begin(std::uint64_t id) { current_ = id; }
  int take(std::uint32_t slot, const HandleKey& key) override;
  void adopted(const HandleKey& key, std::shared_ptr<const void> keep) override;
  /// Handles kept for the sender (a worker's cache; tests).
  std::size_t kept() const noexcept { return kept_.size(); }

 private:
  struct Pending {
    std::uint64_t id;
    std::uint32_t slot;
    int fd;
  };
  bool read_one();
  void close_before(std::uint64_t id);

  int socket_;
  Role role_;
  std::uint64_t current_ = 0;
  std::deque<Pending> pending_;                                   // uncached, by call
  std::unordered_map<HandleKey, int, HandleKeyHash> cached_fds_;  // arrived, not yet mapped
  std::unordered_map<HandleKey, std::shared_ptr<const void>, HandleKeyHash> kept_;
};

}  // namespace cfx::detail
