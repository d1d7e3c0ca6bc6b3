// The process backend's channel: frames on a byte stream, and the call slots a worker shares
// with the pool. Internal.
//
// Every message between the pool and a worker is a frame [u64 length][u8 kind][u64 id][body]
// (the length counts kind, id and body):
//   hello    worker -> pool   id 0  [i32 pid]                        the worker is serving
//   call     pool -> worker   id n  [u32 count][string task][count encoded argument tuples]
//   result   worker -> pool   id n  [u32 count][u64 k][k bytes: count encoded results]
//                                   [u8 failed][the exception, if failed]
//   skipped  worker -> pool   id n  (no body)         call n was withdrawn before it started
//   bulk     either way       id n  [u64 length]      call or result n lies in the sender's
//                                                     bulk area (bulk_area.hpp), `length` bytes
//   wake     either way       id 0  (no body)         only wakes a reader asleep in read():
//                                                     a frame waits in its mailbox (below)
// Calls are numbered per worker from 1. A worker runs its calls in the order received and
// answers each, with a result or skipped, before it looks at the next; so the pool knows which
// reply comes next, and takes any other frame as proof that the channel was written to by
// someone else (a task) and cannot be trusted any more.
//
// Call slots: before sending call n the pool marks slot n "queued" in a page it shares with
// the worker. The worker starts the call only by moving its slot from queued to started;
// cancel() moves it from queued to withdrawn, and the pool, moving a call to another worker,
// from queued to taken back. Whoever moves first wins, so a call sent ahead is started by the
// worker or withdrawn, never both. docs/wire-format.md describes the encodings inside.
//
// Mailboxes: while the receiving end watches for the next frame in memory (the worker for a
// call, a thread in the parent for a reply: wait_turn.cpp), a small frame goes through the
// direction's mailbox in the shared file instead of the pipe, so that a round trip makes no
// system call. A sender uses the mailbox only once the receiver has taken every frame sent
// before (it counts them in the slot page), so a frame in the mailbox is older than any frame
// in the pipe: receivers look in the mailbox before they take each frame from the pipe. A
// receiver stops watching, then looks in the mailbox once more before it sleeps in read();
// a sender that finds it stopped after the frame was put writes a wake frame down the pipe.
#pragma once

#include <atomic>
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

enum class FrameKind : std::uint8_t {
  call = 1,
  result = 2,
  hello = 3,
  skipped = 4,
  bulk = 5,
  wake = 6
};

/// The fixed part of every frame.
struct FrameHeader {
  std::uint64_t length = 0;  // of kind, id and body
  FrameKind kind{};
  std::uint64_t id = 0;
};
inline constexpr std::size_t kFrameHeaderSize = 8 + 1 + 8;
inline constexpr std::uint64_t kMinFrameLength = 1 + 8;
/// A bulk frame's length: its body is the u64 length of the frame it stands for.
inline constexpr std::uint64_t kBulkFrameLength = kMinFrameLength + 8;
// Frame buffers (read or write, either end) are kept between frames up to kKeepBufferBytes
// (bytes.hpp): a fresh buffer costs a page fault per 4 KiB, which dominates moving a big
// payload.

/// The fixed part of the frame that starts at `bytes` (kFrameHeaderSize of them), copied out.
FrameHeader read_frame_header(const char* bytes);

/// A complete frame: its kind, its id, and its body.
struct Frame {
  FrameKind kind{};
  std::uint64_t id = 0;
  Reader body{nullptr, 0};
};

/// Reserves a frame's length field and writes its kind and id; finish_frame fills the
/// length in.
std::size_t begin_frame(Writer& w, FrameKind kind, std::uint64_t id);
void finish_frame(Writer& w, std::size_t at);

/// Appends call `id`'s frame, for `task`, to `out`.
void write_call_frame(std::vector<char>& out, const RemoteTask& task, std::uint64_t id);
/// The bytes of that frame, and its head: all of it but the arguments, which follow.
std::size_t call_frame_size(const RemoteTask& task);
void write_call_head(std::vector<char>& out, const RemoteTask& task, std::uint64_t id);

/// A result frame's contents, read by the pool.
struct Reply {
  std::uint32_t count = 0;     // results in `results`
  Reader results{nullptr, 0};  // count encoded results, back to back
  std::exception_ptr error;    // the exception of call `count`, if it threw
};
/// The pool's check of a frame from a worker, made as soon as its header has arrived: the
/// worker's hello if `hello_expected`, else the answer (result or skipped) to call
/// `next_call`, the oldest it holds (nullopt: none). Throws SerializationError naming what
/// was wrong.
void check_reply_header(const FrameHeader& h, bool hello_expected,
                        std::optional<std::uint64_t> next_call);

/// Reads a result frame's body; throws SerializationError if it is malformed.
Reply read_reply(Reader& body);
/// Throws SerializationError unless `reply` fits a call of `sent` argument tuples: as many
/// results, or fewer and the exception that stopped them. (Checked before a future reserves
/// room for the results: a lying count must not make the parent allocate.)
void check_reply_count(const Reply& reply, std::uint32_t sent);

/// Worker side: runs the calls of call frame `id`'s body and appends their result frame to
/// `out`: the results of the calls that returned, then the exception of the one that threw,
/// which ends the frame's calls. An unregistered task is that exception. `server` is the
/// worker's pid: a process a task forked exits when it returns from the task.
void answer_call(std::uint64_t id, Reader& body, std::vector<char>& out, int server);

/// Cuts a byte stream into frames, for both ends of the channel: read into space(), commit()
/// what arrived, then take frames with next() until it returns nothing. The buffer grows
/// with the bytes that arrive, never with what a frame's header claims: a lying header costs
/// nothing until the bytes it announces are really sent.
class FrameSplitter {
 public:
  /// Frames longer than `max_length` are refused by next().
  explicit FrameSplitter(std::uint64_t max_length) : max_length_(max_length) {}

  /// Room for the next read.
  std::span<char> space();
  void commit(std::size_t n) { end_ += n; }
  /// The header of the next frame, once its bytes have arrived (complete or not), so that
  /// the reader can refuse a frame before its body is read.
  std::optional<FrameHeader> header() const;
  /// The next complete frame, or nullopt. Throws SerializationError for a frame whose length
  /// is out of bounds. The frame's Reader stays valid until the next call of space().
  std::optional<Frame> next();
  /// Bytes received and not yet taken as frames.
  std::size_t buffered() const { return end_ - begin_; }
  /// The next frame has arrived whole: next() returns it (or refuses its length).
  bool has_frame() const;

 private:
  std::uint64_t max_length_;
  std::vector<char> buffer_ = std::vector<char>(1 << 16);
  std::size_t begin_ = 0;  // the first byte not yet taken as a frame
  std::size_t end_ = 0;    // the end of the bytes read
};

/// The largest frame either end accepts: this machine's memory.
std::uint64_t max_frame_length();

// ---- call slots ---------------------------------------------------------------------------

namespace slots {

/// Slots in the shared page; more than calls can be in flight to one worker at once.
inline constexpr std::size_t kCount = 511;
/// The word after the slots: worker_memory_limit, which the worker checks after each call.
inline constexpr std::size_t kMemoryLimitWord = kCount;
/// Messages the pool has sent on the descriptor channel: the worker reads the channel only
/// when this has moved, so a call without handles costs no system call.
inline constexpr std::size_t kDescriptorWord = kCount + 1;
/// Nonzero: the worker runs one call and exits with 0, or 1 if it threw (cfx::Process).
inline constexpr std::size_t kOneCallWord = kCount + 2;
/// The bulk areas' state (bulk_area.hpp): 0 free, else the id of the frame held.
inline constexpr std::size_t kCallsAreaWord = kCount + 3;
inline constexpr std::size_t kResultsAreaWord = kCount + 4;
/// Nonzero while a thread in the parent drives the pool (wait_turn.cpp): the worker then
/// watches kCallsWrittenWord on the core for a moment after each answer, as the next call
/// tends to follow at once.
inline constexpr std::size_t kWatchedWord = kCount + 5;
/// What each end has written, counted once the bytes are in the pipe (or on their way): the
/// other end can watch for it in memory, without a system call.
inline constexpr std::size_t kCallsWrittenWord = kCount + 6;    // frames, by the pool
inline constexpr std::size_t kRepliesWrittenWord = kCount + 7;  // pipe writes, by the worker
/// The mailboxes' counts (see the top of this file). While the worker watches for a call in
/// memory, kCallWatchWord holds the frames it has taken, plus one; 0 otherwise. The pool
/// counts the replies it has taken in kRepliesTakenWord (the worker counts what it sent).
inline constexpr std::size_t kCallWatchWord = kCount + 8;
inline constexpr std::size_t kRepliesTakenWord = kCount + 9;
/// The core of the thread in the parent that watches for replies, plus one (0: none known).
/// A worker on that core does not watch for calls: the two would take turns on one core,
/// each spinning through the other's time, while the other core idles (the scheduler does not
/// move a thread that keeps running). Asleep in read(), it is woken onto an idle core.
inline constexpr std::size_t kWatcherCoreWord = kCount + 10;
/// The mailboxes, one page each after the words.
inline constexpr std::size_t kCallBoxOffset = 8192;
inline constexpr std::size_t kReplyBoxOffset = 12288;
inline constexpr std::size_t kBoxBytes = 4096;
inline constexpr std::size_t kPageBytes = kReplyBoxOffset + kBoxBytes;
static_assert((kWatcherCoreWord + 1) * sizeof(std::uint64_t) <= kCallBoxOffset);

enum class State : std::uint64_t { queued = 0, started = 1, withdrawn = 2, taken_back = 3 };

/// The slot word of call `id` in `state`: the id is kept so that a stale slot never matches.
constexpr std::uint64_t word(std::uint64_t id, State state) {
  return id << 2 | static_cast<std::uint64_t>(state);
}
inline std::atomic<std::uint64_t>& of(std::atomic<std::uint64_t>* page, std::uint64_t id) {
  return page[id % kCount];
}
/// Marks call `id` queued (the pool, before it sends the call).
inline void queue(std::atomic<std::uint64_t>* page, std::uint64_t id) {
  of(page, id).store(word(id, State::queued), std::memory_order_release);
}
/// Moves call `id` from queued to `to`; false if it was not queued.
inline bool move(std::atomic<std::uint64_t>* page, std::uint64_t id, State to) {
  auto expected = word(id, State::queued);
  return of(page, id).compare_exchange_strong(expected, word(id, to), std::memory_order_acq_rel);
}
/// Call `id`'s state; nullopt if its slot holds another call.
inline std::optional<State> state(const std::atomic<std::uint64_t>* page, std::uint64_t id) {
  auto w = page[id % kCount].load(std::memory_order_acquire);
  if (w >> 2 != id) return std::nullopt;
  return static_cast<State>(w & 3);
}

}  // namespace slots

/// One direction's mailbox in the slot page: [u64 length (0: empty)][the frame's bytes].
class MailBox {
 public:
  static constexpr std::size_t kCapacity = slots::kBoxBytes - sizeof(std::uint64_t);

  MailBox(std::atomic<std::uint64_t>* page, std::size_t offset) noexcept
      : length_(page + offset / sizeof(std::uint64_t)),
        bytes_(reinterpret_cast<char*>(page) + offset + sizeof(std::uint64_t)) {}

  bool empty() const noexcept { return length_->load() == 0; }
  /// Sender: puts `frame` (one whole frame of at most kCapacity bytes) in the empty mailbox.
  void put(const std::vector<char>& frame) noexcept;
  /// Receiver: copies the frame out into `copy` and empties the mailbox. Throws
  /// SerializationError if what it holds is not one frame (a task wrote there).
  Frame take(std::vector<char>& copy);

 private:
  std::atomic<std::uint64_t>* length_;
  char* bytes_;
};

/// Appends a wake frame to `out`.
void append_wake(std::vector<char>& out);

}  // namespace cfx::detail
