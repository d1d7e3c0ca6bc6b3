// The process backend's channel: frames on a byte stream. Internal.
//
// Every message between the pool and a worker is a frame [u64 length][u8 kind][body]:
//   hello   worker -> pool   [i32 pid]                          the worker is serving
//   call    pool -> worker   [u32 count][string task][count encoded argument tuples]
//   result  worker -> pool   [u32 count][u64 n][n bytes: count encoded results]
//                            [u8 failed][the exception, if failed]
// A worker runs its calls in the order received and answers each before starting the next.
// docs/wire-format.md describes the encodings inside.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "cfx/detail/bytes.hpp"
#include "cfx/detail/remote_task.hpp"

namespace cfx::detail {

enum class FrameKind : std::uint8_t { call = 1, result = 2, hello = 3 };

/// Reserves a frame's length field and writes its kind; finish_frame fills the length in.
std::size_t begin_frame(Writer& w, FrameKind kind);
void finish_frame(Writer& w, std::size_t at);

/// Appends the call frame of `task` to `out`.
void write_call_frame(std::vector<char>& out, const RemoteTask& task);

/// A result frame's contents, read by the pool.
struct Reply {
  std::uint32_t count = 0;     // results in `results`
  Reader results{nullptr, 0};  // count encoded results, back to back
  std::exception_ptr error;    // the exception of call `count`, if it threw
};
/// Reads a result frame's body (after the kind); throws SerializationError if malformed.
Reply read_reply(Reader& frame);

/// Worker side: runs the calls of a call frame's body (after the kind) and appends their
/// result frame to `out`: the results of the calls that returned, then the exception of the
/// one that threw, which ends the frame's calls. An unregistered task is that exception.
/// `server` is the worker's pid: a process a task forked exits when it returns from the task.
void answer_call(Reader& call, std::vector<char>& out, int server);

/// Cuts a byte stream into frames, for both ends of the channel: read into space(), commit()
/// what arrived, then take frames with next() until it returns nothing.
class FrameSplitter {
 public:
  /// Room for the next read: at least what the frame being read still needs.
  std::span<char> space();
  void commit(std::size_t n) { end_ += n; }
  /// The next complete frame's body (starting with its kind), or nullopt. The Reader stays
  /// valid until the next call of space().
  std::optional<Reader> next();

 private:
  std::vector<char> buffer_ = std::vector<char>(1 << 16);
  std::size_t begin_ = 0;  // the first byte not yet taken as a frame
  std::size_t end_ = 0;    // the end of the bytes read
};

}  // namespace cfx::detail
