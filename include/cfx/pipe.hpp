// cfx::Pipe<T>(): two connected duplex Connection<T>s, multiprocessing.Pipe(). API section 6;
// docs/toolkit.md.
//
//   auto [left, right] = cfx::Pipe<std::string>();
//   cfx::Process p(echo, right);     // the end travels to the child as a descriptor
//   p.start();
//   left.send("hi"); std::string back = left.recv();
//
// A Connection is a cheap copyable handle on one end: two pipes run between the ends, one
// each way (a pipe's round trip costs two thirds of a Unix socket's), and an end holds the
// read side of one and the write side of the other. Copies in one process share that
// process's descriptors; as a task argument or result (either backend, cfx::Process) an end
// travels as its two descriptors, sent with every call (a worker never keeps an end open
// after the task). A pipe holds 64 KiB (Linux's default; enlarging it would spend the
// user's pipe-page budget that every pipe of the program shares): a send of more waits until
// the other end reads, as a socket's send does past its buffer (Python's Pipe: about 200 KiB).
// Values are encoded as task arguments are (docs/wire-format.md), one message per send. recv()
// throws cfx::Error once every copy of the other end is closed, in every process, or its processes
// died.
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

/// One process's descriptors of one end (the read side of the pipe coming in, the write side
/// of the pipe going out): framing ([u32 length][bytes]) and the locks that keep messages
/// whole. lib/toolkit/connection.cpp.
class ConnectionEnd {
 public:
  /// Owns both descriptors from here on, also when this throws.
  ConnectionEnd(int in, int out);
  /// An end of two descriptors that arrived with a value; SerializationError (closing the
  /// other) if one did not (-1).
  static std::shared_ptr<ConnectionEnd> adopt(int in, int out);
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
  int in_fd() const noexcept { return in_.load(); }
  int out_fd() const noexcept { return out_.load(); }
  const HandleKey& in_key() const noexcept { return in_key_; }
  const HandleKey& out_key() const noexcept { return out_key_; }

 private:
  bool complete_message() const;

  std::atomic<int> in_, out_;
  std::atomic<int> close_pending_{-1};  // closed by close() while a recv() was reading it
  HandleKey in_key_, out_key_;
  std::mutex send_mutex_, recv_mutex_;
  std::vector<char> buffer_;  // received, not yet taken (recv_mutex_)
  std::size_t begin_ = 0, end_ = 0;
};

/// Two connected ends. Throws cfx::Error.
std::pair<std::shared_ptr<ConnectionEnd>, std::shared_ptr<ConnectionEnd>> connected_ends();

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
    if (!c.end_ || c.end_->in_fd() < 0) {
      j = nullptr;
      return;
    }
    // Copies of the descriptors: this end may be closed before the value is sent.
    const auto& in = c.end_->in_key();
    const auto& out = c.end_->out_key();
    auto in_slot = detail::capture_handle(detail::duplicate_handle(c.end_->in_fd(), in));
    auto out_slot = detail::capture_handle(detail::duplicate_handle(c.end_->out_fd(), out));
    j = nlohmann::json::array({in_slot, in.dev, in.ino, out_slot, out.dev, out.ino});
  }
  friend void from_json(const nlohmann::json& j, Connection& c) {
    if (j.is_null()) {
      c.end_.reset();
      return;
    }
    if (!j.is_array() || j.size() != 6)
      throw SerializationError("a Connection's encoding is malformed");
    auto slot = [&](std::size_t at) { return j[at].template get<std::uint32_t>(); };
    auto key = [&](std::size_t at) {
      return detail::HandleKey{j[at + 1].template get<std::uint64_t>(),
                               j[at + 2].template get<std::uint64_t>()};
    };
    auto in_slot = slot(0), out_slot = slot(3);
    auto in_key = key(0), out_key = key(3);
    int in = detail::take_handle(in_slot, in_key);
    c.end_ = detail::ConnectionEnd::adopt(in, detail::take_handle(out_slot, out_key));
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
  auto [left, right] = detail::connected_ends();
  return {Connection<T>(std::move(left)), Connection<T>(std::move(right))};
}

}  // namespace cfx
