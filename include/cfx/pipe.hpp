// cfx::Pipe<T>(): two connected duplex Connection<T>s, multiprocessing.Pipe(). API section 6;
// docs/toolkit.md.
//
//   auto [left, right] = cfx::Pipe<std::string>();
//   cfx::Process p(echo, right);     // the end travels to the child as a descriptor
//   p.start();
//   left.send("hi"); std::string back = left.recv();
//
// A Connection is a cheap copyable handle on one end of a Unix stream socket: copies in one
// process share that process's descriptor; as a task argument or result (either backend,
// cfx::Process) it travels as a descriptor, sent with every call (a worker never keeps an end
// open after the task). Values are encoded as task arguments are (docs/wire-format.md), one
// message per send. recv() throws cfx::Error once every copy of the other end is closed,
// in every process, or its processes died.
//
// Thread safety: copies may be used from any threads; sends are whole messages, as are
// receives (each message goes to exactly one recv()).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cfx/detail/handles.hpp"
#include "cfx/detail/wire.hpp"
#include "cfx/errors.hpp"

namespace cfx {

namespace detail {

/// One process's descriptor of one end: framing ([u32 length][bytes]) and the locks that
/// keep messages whole. lib/toolkit/connection.cpp.
class ConnectionEnd {
 public:
  explicit ConnectionEnd(int fd);
  ~ConnectionEnd();
  ConnectionEnd(const ConnectionEnd&) = delete;
  ConnectionEnd& operator=(const ConnectionEnd&) = delete;

  /// Sends `bytes` as one message; throws cfx::Error if this end is closed or the other
  /// end is gone.
  void send(std::span<const char> bytes);
  /// Under `lock` (from lock_recv), the next message, valid until the next call; throws
  /// cfx::Error at the end of the stream.
  std::span<const char> next_message(std::unique_lock<std::mutex>& lock);
  std::unique_lock<std::mutex> lock_recv() { return std::unique_lock(recv_mutex_); }
  /// True once a message (or the end of the stream) can be read; waits up to `seconds`
  /// (negative: forever).
  bool poll(double seconds);
  void close() noexcept;
  int fd() const noexcept { return fd_.load(); }
  const HandleKey& key() const noexcept { return key_; }

 private:
  bool complete_message() const;

  std::atomic<int> fd_;
  std::atomic<int> close_pending_{-1};  // closed by close() while a recv() was reading it
  HandleKey key_;
  std::mutex send_mutex_, recv_mutex_;
  std::vector<char> buffer_;  // received, not yet taken (recv_mutex_)
  std::size_t begin_ = 0, end_ = 0;
};

/// A connected pair of stream sockets, close-on-exec. Throws cfx::Error.
std::pair<int, int> connection_socketpair();

}  // namespace detail

template <class T>
class Connection {
 public:
  /// Refers to nothing; every operation but close() throws cfx::Error.
  Connection() = default;
  explicit Connection(std::shared_ptr<detail::ConnectionEnd> end) : end_(std::move(end)) {}

  /// Sends `value` (encoded as a task argument; shared handles cannot go this way).
  void send(const T& value) const {
    std::vector<char> out;
    detail::Writer w(out);
    detail::HandleList handles;
    {
      detail::HandleCapture capture(handles);
      detail::encode_value(w, value);
    }
    if (!handles.empty())
      throw SerializationError(
          "cfx::Connection::send: a value holding shared handles cannot "
          "be sent through a Pipe; pass the handle as a task argument");
    end().send(out);
  }
  /// The next value; blocks until one arrives. Throws cfx::Error (EOF) once every copy of
  /// the other end is closed or its process died.
  T recv() const {
    auto lock = end().lock_recv();
    auto bytes = end().next_message(lock);
    detail::Reader r(bytes.data(), bytes.size());
    return detail::decode_value<T>(r);
  }
  /// True if recv() would not block (a value, or the end of the stream, has arrived); waits
  /// up to `timeout`.
  template <class Rep = double, class Period = std::ratio<1>>
  bool poll(std::chrono::duration<Rep, Period> timeout = std::chrono::duration<double>(0)) const {
    return end().poll(std::chrono::duration<double>(timeout).count());
  }
  /// Blocks until recv() would not block.
  bool poll_forever() const { return end().poll(-1); }
  /// Closes this process's copy of the end (for every handle on it in this process). A
  /// recv() another thread is blocked in ends when its read returns.
  void close() const noexcept {
    if (end_) end_->close();
  }
  explicit operator bool() const noexcept { return end_ != nullptr; }

  friend void to_json(nlohmann::json& j, const Connection& c) {
    if (!c.end_ || c.end_->fd() < 0) {
      j = nullptr;
      return;
    }
    // A copy of the descriptor: this end may be closed before the value is sent.
    auto slot = detail::capture_handle(detail::duplicate_handle(c.end_->fd(), c.end_->key()));
    j = nlohmann::json::array({slot, c.end_->key().dev, c.end_->key().ino});
  }
  friend void from_json(const nlohmann::json& j, Connection& c) {
    if (j.is_null()) {
      c.end_.reset();
      return;
    }
    if (!j.is_array() || j.size() != 3)
      throw SerializationError("a Connection's encoding is malformed");
    detail::HandleKey key{j[1].template get<std::uint64_t>(), j[2].template get<std::uint64_t>()};
    int fd = detail::take_handle(j[0].template get<std::uint32_t>(), key);
    if (fd < 0) throw SerializationError("the descriptor of a Connection did not arrive");
    c.end_ = std::make_shared<detail::ConnectionEnd>(fd);
  }

 private:
  detail::ConnectionEnd& end() const {
    if (!end_) throw Error("cfx::Connection: a default-constructed Connection refers to nothing");
    return *end_;
  }
  std::shared_ptr<detail::ConnectionEnd> end_;
};

/// Two connected ends, as multiprocessing.Pipe(duplex=True).
template <class T>
std::pair<Connection<T>, Connection<T>> Pipe() {
  auto [a, b] = detail::connection_socketpair();
  auto left = std::make_shared<detail::ConnectionEnd>(a);
  auto right = std::make_shared<detail::ConnectionEnd>(b);
  return {Connection<T>(std::move(left)), Connection<T>(std::move(right))};
}

}  // namespace cfx
