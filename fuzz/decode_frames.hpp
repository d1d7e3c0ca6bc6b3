// The decoding routine behind fuzz/frames.cpp (libFuzzer) and tests/process/frame_corpus.cpp
// (its regression inputs): a byte stream fed, in reads of varied sizes, through what either
// end of a process pool's channel does with what it reads (backends/process/channel.hpp).
// Include it in one file per program: it registers the tasks it calls with CFX_TASK.
//
// An input is [u8 mode][...]:
//   mode bit 0 = 0  the parent's side: [u8 calls][stream of frames from a worker]. `calls`
//                   bits 0-6 are the calls in flight to the worker (ids 1..n), bit 7 says the
//                   worker's hello has arrived already. Each header is checked with
//                   check_reply_header as the pool does (pool.cpp, on_frames), each result
//                   read with read_reply and handed to a real RemoteCall, which decodes the
//                   results as a future does: the call's task and shape (submit or a map
//                   chunk) follow from its id (call_shape).
//   mode bit 0 = 1  the worker's side: [stream of frames from the pool]. Each call frame is
//                   answered with answer_call, and its answer read back as the pool would:
//                   answer_call must write a reply the pool takes, whatever the call said.
//   mode bits 1-7 seed the sizes of the reads.
// decode_frames returns, or throws cfx::Error where the real end would give up on the channel
// (the pool kills the worker; the worker exits). Anything else it throws (Violation, or any
// other exception) is a bug; so is a crash, a hang, or an allocation out of proportion to the
// input.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <cfx/errors.hpp>
#include <cfx/task.hpp>

#include "backends/process/bulk_area.hpp"
#include "backends/process/channel.hpp"
#include "lib/remote_exception.hpp"
#include "tests/support/stub_task.hpp"

namespace cfx_fuzz {

// ---- the tasks a fuzzed call may name --------------------------------------------------------

namespace tasks {

inline int add(int a, int b) {
  return static_cast<int>(static_cast<unsigned>(a) + static_cast<unsigned>(b));  // wraps
}
inline std::string echo(std::string s) {
  return s;
}
inline long long sum(std::vector<int> v) {
  long long total = 0;
  for (int x : v) total += x;
  return total;
}
inline void ignore(int) {}
inline int non_negative(int x) {
  if (x < 0) throw std::domain_error("negative");
  return x;
}

}  // namespace tasks

CFX_TASK_AS(&tasks::add, "fuzz::add");
CFX_TASK_AS(&tasks::echo, "fuzz::echo");
CFX_TASK_AS(&tasks::sum, "fuzz::sum");
CFX_TASK_AS(&tasks::ignore, "fuzz::ignore");
CFX_TASK_AS(&tasks::non_negative, "fuzz::non_negative");

/// A bug found: an invariant of the channel broken. Deliberately not a cfx::Error.
class Violation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// What FrameSplitter offers before it knows better (kMinRead in channel.cpp).
inline constexpr std::size_t kMinRead = std::size_t{1} << 16;

namespace detail_ {

using cfx::detail::Frame;
using cfx::detail::FrameKind;
using cfx::detail::FrameSplitter;
using cfx::detail::Reader;
using cfx::detail::Reply;
using cfx::detail::TaskEntry;

/// How a fuzzed task's results are handled by the parent: a future of its result (submit),
/// or of a map chunk; and, for the worker side's check, decoded plainly.
struct TaskOps {
  const TaskEntry* entry;
  void (*complete)(const TaskEntry& task, Reply& reply, bool map);
  void (*decode)(const TaskEntry& task, Reader& results, std::uint32_t count);
};

/// Completes a real RemoteCall<R> with `reply`, as the pool does (pool.cpp, on_result), and
/// checks its outcome: a value, the worker's exception, or a cfx::Error for a reply it could
/// not decode; never any other exception.
template <class R>
void complete_as(const TaskEntry& task, Reply& reply) {
  auto* call = new cfx::detail::RemoteCall<R>(&task);  // our reference and the pool's
  std::exception_ptr error = reply.error;
  call->complete(reply.results, reply.count, error);
  std::string wrong;
  if (!call->done()) {
    wrong = "a completed call is not done";
  } else if (auto got = call->exception_when_done(); got && got != error) {
    try {
      std::rethrow_exception(got);
    } catch (const cfx::Error&) {  // a malformed reply, named
    } catch (const std::exception& e) {
      wrong = std::string("a reply ended its future with ") + e.what();
    } catch (...) {
      wrong = "a reply ended its future with an exception not derived from std::exception";
    }
  }
  call->drop();
  call->release();
  if (!wrong.empty()) throw Violation(wrong);
}

template <class Result>
void complete_call(const TaskEntry& task, Reply& reply, bool map) {
  if (map)
    complete_as<cfx::detail::ChunkResult<cfx::detail::map_value_t<Result>>>(task, reply);
  else
    complete_as<Result>(task, reply);
}

template <class Result>
void decode_results(const TaskEntry& task, Reader& results, std::uint32_t count) {
  for (std::uint32_t i = 0; i < count; ++i) {
    std::optional<std::conditional_t<std::is_void_v<Result>, int, Result>> v;
    task.decode_result(task, results, &v);
  }
}

template <auto Fn>
TaskOps ops() {
  using Result = typename cfx::detail::fn_traits<decltype(Fn)>::result;
  return {&cfx::detail::registered_task(Fn), &complete_call<Result>, &decode_results<Result>};
}

inline const std::vector<TaskOps>& fuzz_tasks() {
  static const std::vector<TaskOps> all{ops<&tasks::add>(), ops<&tasks::echo>(), ops<&tasks::sum>(),
                                        ops<&tasks::ignore>(), ops<&tasks::non_negative>()};
  return all;
}

inline const TaskOps* find_ops(const TaskEntry* entry) {
  for (const auto& t : fuzz_tasks())
    if (t.entry == entry) return &t;
  return nullptr;
}

}  // namespace detail_

/// What call `id` was on the parent's side: its task, and whether it is a map chunk (of
/// `count` items) rather than a submit (of one).
struct CallShape {
  std::size_t task;
  bool map;
  std::uint32_t count;
};
inline CallShape call_shape(std::uint64_t id) {
  auto n = detail_::fuzz_tasks().size();
  bool map = (id / n) % 2 == 1;
  return {static_cast<std::size_t>(id % n), map, map ? static_cast<std::uint32_t>(1 + id % 4) : 1u};
}

namespace detail_ {

/// The input's stream, handed out in reads of sizes drawn from the mode byte.
class Stream {
 public:
  Stream(const std::uint8_t* data, std::size_t size, std::uint8_t seed)
      : p_(data), left_(size), rng_(0x9E3779B9u * (seed + 1u)) {}
  bool more() const { return left_ > 0; }
  /// Reads into the splitter's space, as a pipe would: a few bytes, or all there is room
  /// for. Checks that the buffer grows with what arrived, not with what a header claims.
  void read_into(FrameSplitter& s) {
    auto space = s.space();
    most_buffered_ = std::max(most_buffered_, s.buffered());
    if (space.empty()) throw Violation("FrameSplitter::space() is empty");
    if (s.buffered() + space.size() > 2 * most_buffered_)
      throw Violation("FrameSplitter grew its buffer to " +
                      std::to_string(s.buffered() + space.size()) + " bytes with " +
                      std::to_string(most_buffered_) + " buffered at most");
    std::size_t n;
    switch (next() % 4) {
      case 0:
        n = 1 + next() % 8;
        break;
      case 1:
        n = 1 + next() % 64;
        break;
      case 2:
        n = 1 + next() % 1024;
        break;
      default:
        n = space.size();
        break;
    }
    n = std::min({n, space.size(), left_});
    std::memcpy(space.data(), p_, n);
    s.commit(n);
    p_ += n;
    left_ -= n;
  }

 private:
  std::uint32_t next() {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 17;
    rng_ ^= rng_ << 5;
    return rng_;
  }
  const std::uint8_t* p_;
  std::size_t left_;
  std::uint32_t rng_;
  std::size_t most_buffered_ = kMinRead;
};

/// The pool's results area of the worker whose bytes are fuzzed. The fuzzed bytes are the
/// pipe's: what a bulk frame points to is whatever the area holds (here nothing; what it may
/// hold is tests/process/bulk_area.cpp's business), and its length is the fuzzer's.
inline cfx::detail::BulkArea& results_area() {
  static const int file = [] {
    int fd = ::memfd_create("cfx-fuzz-area", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(cfx::detail::kSharedFileBytes)) != 0)
      std::abort();
    return fd;
  }();
  static std::atomic<std::uint64_t> word{0};
  static cfx::detail::BulkArea area(file, cfx::detail::kResultsAreaOffset, &word);
  return area;
}

/// The pool's side (pool.cpp: on_frames, check_header, on_frame, on_result).
inline void parent_side(Stream& in, bool ready, unsigned calls) {
  std::deque<std::uint64_t> in_flight;
  for (std::uint64_t id = 1; id <= calls; ++id) in_flight.push_back(id);
  FrameSplitter frames(cfx::detail::max_frame_length());
  while (in.more()) {
    in.read_into(frames);
    for (;;) {
      auto h = frames.header();
      if (h) {
        std::optional<std::uint64_t> next;
        if (!in_flight.empty()) next = in_flight.front();
        cfx::detail::check_reply_header(*h, !ready, next);
      }
      auto frame = frames.next();
      if (!frame) break;
      if (!h || h->kind != frame->kind || h->id != frame->id)
        throw Violation("next() returned a frame header() did not announce");
      if (frame->kind == FrameKind::hello) {
        if (ready) throw Violation("check_reply_header let a second hello through");
        ready = true;
        continue;
      }
      if (frame->kind == FrameKind::bulk) {  // as on_frame: the result in the area
        *frame = results_area().open(*frame, FrameKind::result);
        results_area().release();
      }
      if (!ready || in_flight.empty() || frame->id != in_flight.front() ||
          (frame->kind != FrameKind::result && frame->kind != FrameKind::skipped))
        throw Violation("check_reply_header let through a frame of kind " +
                        std::to_string(static_cast<int>(frame->kind)) + " for call " +
                        std::to_string(frame->id));
      if (frame->kind == FrameKind::skipped) {
        if (frame->body.remaining() != 0)
          throw Violation("check_reply_header let a skip with a body through");
        in_flight.pop_front();
        continue;
      }
      Reply reply = cfx::detail::read_reply(frame->body);  // a malformed reply: cfx::Error
      auto shape = call_shape(in_flight.front());
      in_flight.pop_front();
      cfx::detail::check_reply_count(reply, shape.count);  // as on_result
      const TaskOps& task = fuzz_tasks()[shape.task];
      task.complete(*task.entry, reply, shape.map);
    }
  }
}

/// Reads `out`, answer_call's reply to call `id` of `count` calls to `name`, as the pool
/// would; any refusal is a bug in answer_call.
inline void check_answer(const std::vector<char>& out, std::uint64_t id, std::uint32_t count,
                         std::string_view name) {
  try {
    FrameSplitter frames(cfx::detail::max_frame_length());
    std::size_t at = 0;
    std::optional<Frame> frame;
    while (!frame) {
      if (at == out.size()) throw Violation("answer_call wrote an incomplete frame");
      auto space = frames.space();
      std::size_t n = std::min(space.size(), out.size() - at);
      std::memcpy(space.data(), out.data() + at, n);
      frames.commit(n);
      at += n;
      if (auto h = frames.header()) cfx::detail::check_reply_header(*h, false, id);
      frame = frames.next();
    }
    if (at != out.size() || frames.buffered() != 0)
      throw Violation("answer_call wrote more than one frame");
    if (frame->kind != FrameKind::result) throw Violation("answer_call wrote no result frame");
    Reply reply = cfx::detail::read_reply(frame->body);
    if (frame->body.remaining() != 0) throw Violation("answer_call wrote bytes after its reply");
    if (reply.count > count || (!reply.error && reply.count != count))
      throw Violation("answer_call answered " + std::to_string(reply.count) + " of " +
                      std::to_string(count) + " calls" + (reply.error ? ", then failed" : ""));
    const TaskEntry* entry = cfx::detail::find_task(name);
    if (!entry) {
      if (!reply.error || reply.count != 0)
        throw Violation("answer_call ran a task that is not registered");
      return;
    }
    const TaskOps* task = find_ops(entry);
    if (!task) return;  // a task of another file linked in (the test programs have some)
    task->decode(*entry, reply.results, reply.count);
    if (reply.results.remaining() != 0)
      throw Violation("answer_call wrote bytes after its results");
  } catch (const cfx::Error& e) {
    throw Violation(std::string("answer_call wrote a reply the pool refuses: ") + e.what());
  }
}

/// The worker's side (worker.cpp: serve_worker), every call found queued in its slot.
inline void worker_side(Stream& in) {
  FrameSplitter frames(cfx::detail::max_frame_length());
  while (in.more()) {
    in.read_into(frames);
    while (auto frame = frames.next()) {           // a length out of bounds: cfx::Error, it exits
      if (frame->kind != FrameKind::call) return;  // it exits: only the pool writes to it
      Reader peek = frame->body;
      std::vector<char> out;
      // A call frame too short for its count and task name: cfx::Error, it exits.
      cfx::detail::answer_call(frame->id, frame->body, out, ::getpid());
      auto count = peek.get<std::uint32_t>();
      check_answer(out, frame->id, count, peek.get_string());
    }
  }
}

}  // namespace detail_

// ---- seed inputs ---------------------------------------------------------------------------

/// A valid input, named for the file it is written to.
struct Seed {
  std::string name;
  std::vector<std::uint8_t> bytes;
};

namespace detail_ {

/// A call that only carries what write_call_frame reads.
using SeedCall = cfx::test::StubTask;

template <class Tuple>
void seed_args(SeedCall& call, const std::vector<Tuple>& tuples) {
  call.count = static_cast<std::uint32_t>(tuples.size());
  call.args = cfx::detail::encode_args(*call.task, tuples.data(), tuples.size());
}

/// Call `id` as the pool sends it, shaped by call_shape; the odd calls to non_negative
/// throw on their last item.
inline std::vector<char> seed_call(std::uint64_t id) {
  auto shape = call_shape(id);
  SeedCall call;
  call.task = fuzz_tasks()[shape.task].entry;
  auto n = static_cast<int>(shape.count);
  auto k = static_cast<int>(id);
  switch (shape.task) {
    case 0: {
      std::vector<std::tuple<int, int>> t;
      for (int i = 0; i < n; ++i) t.emplace_back(k, i - 1000);
      seed_args(call, t);
      break;
    }
    case 1: {
      std::vector<std::tuple<std::string>> t;
      for (int i = 0; i < n; ++i) t.emplace_back(std::string(static_cast<std::size_t>(k + i), 'e'));
      seed_args(call, t);
      break;
    }
    case 2: {
      std::vector<std::tuple<std::vector<int>>> t;
      for (int i = 0; i < n; ++i)
        t.emplace_back(std::vector<int>(static_cast<std::size_t>(i + 1), k));
      seed_args(call, t);
      break;
    }
    default: {
      std::vector<std::tuple<int>> t;
      for (int i = 0; i < n; ++i) t.emplace_back(i == n - 1 && k % 2 == 1 ? -k : i);
      seed_args(call, t);
      break;
    }
  }
  std::vector<char> out;
  cfx::detail::write_call_frame(out, call, id);
  return out;
}

/// Call `id`'s answer, as the worker writes it.
inline std::vector<char> seed_answer(std::uint64_t id) {
  auto call = seed_call(id);
  Reader body(call.data() + cfx::detail::kFrameHeaderSize,
              call.size() - cfx::detail::kFrameHeaderSize);
  std::vector<char> out;
  cfx::detail::answer_call(id, body, out, ::getpid());
  return out;
}

inline void append(std::vector<std::uint8_t>& to, const std::vector<char>& bytes) {
  to.insert(to.end(), bytes.begin(), bytes.end());
}

inline std::vector<char> frame(FrameKind kind, std::uint64_t id, const std::vector<char>& body) {
  std::vector<char> out;
  cfx::detail::Writer w(out);
  auto at = cfx::detail::begin_frame(w, kind, id);
  w.put_bytes(body.data(), body.size());
  cfx::detail::finish_frame(w, at);
  return out;
}

inline std::vector<char> hello() {
  std::vector<char> pid(sizeof(std::int32_t));
  auto p = static_cast<std::int32_t>(::getpid());
  std::memcpy(pid.data(), &p, sizeof p);
  return frame(FrameKind::hello, 0, pid);
}

}  // namespace detail_

/// Valid streams of every kind of frame, for both sides: the fuzzer's seed corpus.
inline std::vector<Seed> seed_inputs() {
  using namespace detail_;
  std::vector<Seed> seeds;
  // The parent: the hello, then the answers to the calls in flight, the last one skipped.
  {
    Seed s{"parent-hello-answers", {0x00, 6}};
    append(s.bytes, hello());
    for (std::uint64_t id = 1; id <= 5; ++id) append(s.bytes, seed_answer(id));
    append(s.bytes, frame(FrameKind::skipped, 6, {}));
    seeds.push_back(std::move(s));
  }
  {  // Hello in already; submits and map chunks of every task, some of which throw.
    Seed s{"parent-ready-maps", {0x02, 0x80 | 20}};
    for (std::uint64_t id = 1; id <= 19; ++id) append(s.bytes, seed_answer(id));
    append(s.bytes, frame(FrameKind::skipped, 20, {}));
    seeds.push_back(std::move(s));
  }
  {  // One large answer (call 1 is a submit of fuzz::echo), read in many pieces.
    Seed s{"parent-large-answer", {0x04, 0x80 | 1}};
    std::vector<char> results;
    cfx::detail::Writer w(results);
    cfx::detail::encode_value(w, std::string(12000, 'x'));
    std::vector<char> body;
    cfx::detail::Writer b(body);
    b.put(std::uint32_t{1});
    b.put(static_cast<std::uint64_t>(results.size()));
    b.put_bytes(results.data(), results.size());
    b.put(std::uint8_t{0});
    append(s.bytes, frame(FrameKind::result, 1, body));
    seeds.push_back(std::move(s));
  }
  // The worker: calls of every shape; a task nobody registered; the frame that ends it.
  {
    Seed s{"worker-calls", {0x01}};
    for (std::uint64_t id = 1; id <= 12; ++id) append(s.bytes, seed_call(id));
    seeds.push_back(std::move(s));
  }
  {
    Seed s{"worker-unregistered-then-result", {0x03}};
    SeedCall nobody;
    cfx::detail::TaskEntry entry;
    entry.name = "fuzz::nobody";
    nobody.task = &entry;
    nobody.count = 1;
    nobody.args = {1, 2, 3, 4};
    std::vector<char> call;
    cfx::detail::write_call_frame(call, nobody, 1);
    append(s.bytes, call);
    append(s.bytes, seed_call(2));
    append(s.bytes, seed_answer(3));  // not a call: the worker exits
    seeds.push_back(std::move(s));
  }
  return seeds;
}

/// Runs one input; see the top of this file.
inline void decode_frames(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return;
  auto seed = static_cast<std::uint8_t>(data[0] >> 1);
  if ((data[0] & 1) == 0) {
    if (size < 2) return;
    detail_::Stream in(data + 2, size - 2, seed);
    detail_::parent_side(in, (data[1] & 0x80) != 0, data[1] & 0x7fu);
  } else {
    detail_::Stream in(data + 1, size - 1, seed);
    detail_::worker_side(in);
  }
}

}  // namespace cfx_fuzz
