// The process backend's channel (backends/process/channel.hpp): frames, the call and result
// frames, the pool's check of a reply's header, FrameSplitter, which cuts the byte stream read
// from a pipe back into frames, and the call slots.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <cfx/cfx.hpp>
#include <cfx/detail/wire.hpp>

#include "backends/process/channel.hpp"
#include "lib/remote_exception.hpp"
#include "support/stub_task.hpp"

namespace channel_test {

int add(int a, int b) {
  return a + b;
}

std::string repeat(std::string s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

int non_negative(int x) {
  if (x < 0) throw std::domain_error("negative: " + std::to_string(x));
  return x;
}

}  // namespace channel_test

CFX_TASK_AS(&channel_test::add, "channel_test::add");
CFX_TASK_AS(&channel_test::repeat, "channel_test::repeat");
CFX_TASK_AS(&channel_test::non_negative, "channel_test::non_negative");

namespace {

using cfx::SerializationError;
using cfx::detail::begin_frame;
using cfx::detail::check_reply_header;
using cfx::detail::decode_value;
using cfx::detail::encode_value;
using cfx::detail::finish_frame;
using cfx::detail::Frame;
using cfx::detail::FrameHeader;
using cfx::detail::FrameKind;
using cfx::detail::FrameSplitter;
using cfx::detail::kFrameHeaderSize;
using cfx::detail::kMinFrameLength;
using cfx::detail::max_frame_length;
using cfx::detail::read_reply;
using cfx::detail::Reader;
using cfx::detail::Reply;
using cfx::detail::TaskEntry;
using cfx::detail::write_call_frame;
using cfx::detail::Writer;

/// What FrameSplitter offers to read before it knows better, and the least it grows by
/// (kMinRead in channel.cpp); and the least room it offers for a read (kLeastRoom).
constexpr std::size_t kMinRead = 1 << 16;
constexpr std::size_t kLeastRoom = kMinRead / 4;

using TestTask = cfx::test::StubTask;

/// Everything left in the reader (a failed take consumes nothing).
std::string rest(Reader& r) {
  std::string out;
  for (std::size_t step = 4096; step > 0; step /= 2) {
    for (;;) {
      try {
        const char* p = r.take(step);
        out.append(p, step);
      } catch (const SerializationError&) {
        break;
      }
    }
  }
  return out;
}

std::uint64_t u64_at(const std::vector<char>& buf, std::size_t at) {
  std::uint64_t v;
  std::memcpy(&v, buf.data() + at, sizeof v);
  return v;
}

/// [u64 length][u8 kind][u64 id][body], written by hand (not by begin_frame).
void append_raw_frame(std::vector<char>& stream, FrameKind kind, std::uint64_t id,
                      std::string_view body) {
  Writer w(stream);
  w.put(static_cast<std::uint64_t>(kMinFrameLength + body.size()));
  w.put(kind);
  w.put(id);
  w.put_bytes(body.data(), body.size());
}

/// A frame's header alone, claiming `length`.
std::vector<char> raw_header(std::uint64_t length, FrameKind kind, std::uint64_t id) {
  std::vector<char> out;
  Writer w(out);
  w.put(length);
  w.put(kind);
  w.put(id);
  return out;
}

/// A body of `n` bytes that differs from frame to frame.
std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

/// A frame to build a stream from, and what came out of a splitter.
struct RawFrame {
  FrameKind kind = FrameKind::result;
  std::uint64_t id = 0;
  std::string body;
  bool operator==(const RawFrame&) const = default;
};

struct Split {
  std::vector<RawFrame> frames;
  std::vector<std::size_t> ends;  // stream bytes committed when each frame came out
};

/// Copies `data` into the splitter's space and commits it; the space must hold it.
void put_all(FrameSplitter& s, const char* data, std::size_t n) {
  auto space = s.space();
  REQUIRE(space.size() >= n);
  std::memcpy(space.data(), data, n);
  s.commit(n);
}

/// Feeds `stream` to `s` in reads of at most `chunk` bytes (or sizes from `chunk_of`), taking
/// frames after each read. Checks on every space(): it is never empty; once the current
/// frame's header is in, it holds what the frame still needs, or at least kLeastRoom; and the
/// buffer behind it never grows past twice what was buffered.
template <class ChunkOf>
requires std::invocable<ChunkOf&> Split feed(FrameSplitter& s, const std::vector<char>& stream,
                                             ChunkOf chunk_of, std::size_t frame_start = 0) {
  Split out;
  std::size_t pos = 0;
  std::size_t most_buffered = kMinRead;
  while (pos < stream.size()) {
    auto space = s.space();
    REQUIRE(!space.empty());
    std::size_t buffered = pos - frame_start;  // complete frames were all taken
    CHECK(s.buffered() == buffered);
    most_buffered = std::max(most_buffered, buffered);
    CHECK(buffered + space.size() <= 2 * most_buffered);
    if (buffered >= kFrameHeaderSize) {
      std::uint64_t len = u64_at(stream, frame_start);
      std::size_t need = frame_start + sizeof(std::uint64_t) + len - pos;
      REQUIRE(space.size() >= std::min(need, kLeastRoom));
    } else {
      REQUIRE(space.size() >= kLeastRoom);
    }
    std::size_t n = std::min({chunk_of(), space.size(), stream.size() - pos});
    std::memcpy(space.data(), stream.data() + pos, n);
    s.commit(n);
    pos += n;
    while (auto frame = s.next()) {
      out.frames.push_back({frame->kind, frame->id, rest(frame->body)});
      out.ends.push_back(pos);
      frame_start += kFrameHeaderSize + out.frames.back().body.size();
    }
  }
  CHECK(!s.next());
  return out;
}

Split feed(FrameSplitter& s, const std::vector<char>& stream, std::size_t chunk) {
  return feed(s, stream, [chunk] { return chunk; });
}

/// Builds a stream of frames; returns where each frame ends.
std::vector<std::size_t> build(std::vector<char>& stream, const std::vector<RawFrame>& frames) {
  std::vector<std::size_t> ends;
  for (const auto& f : frames) {
    append_raw_frame(stream, f.kind, f.id, f.body);
    ends.push_back(stream.size());
  }
  return ends;
}

/// Result frames numbered from 1, with the given bodies.
std::vector<RawFrame> results_with(const std::vector<std::string>& bodies) {
  std::vector<RawFrame> frames;
  std::uint64_t id = 0;
  for (const auto& b : bodies) frames.push_back({FrameKind::result, ++id, b});
  return frames;
}

std::vector<char> reply_body(std::uint32_t count, const std::vector<char>& results,
                             const std::vector<char>* failure) {
  std::vector<char> body;
  Writer w(body);
  w.put(count);
  w.put(static_cast<std::uint64_t>(results.size()));
  w.put_bytes(results.data(), results.size());
  w.put(static_cast<std::uint8_t>(failure ? 1 : 0));
  if (failure) w.put_bytes(failure->data(), failure->size());
  return body;
}

template <class E>
std::vector<char> encoded_exception(E e, std::string_view task) {
  std::vector<char> out;
  Writer w(out);
  try {
    throw e;
  } catch (...) {
    cfx::detail::encode_current_exception(w, task);
  }
  return out;
}

/// One call frame (call `id`) of `calls` to `task`, as the pool writes it, answered as the
/// worker answers it: the bytes of the result frame. Unless a call throws (`all_run` false),
/// the worker reads every argument.
template <class Tuple>
std::vector<char> answered(const TaskEntry& task, const std::vector<Tuple>& calls,
                           std::uint64_t id = 1, bool all_run = true) {
  TestTask call_task;
  call_task.task = &task;
  call_task.count = static_cast<std::uint32_t>(calls.size());
  call_task.args = cfx::detail::encode_args(task, calls.data(), calls.size());
  std::vector<char> to_worker;
  write_call_frame(to_worker, call_task, id);
  FrameSplitter worker(max_frame_length());
  put_all(worker, to_worker.data(), to_worker.size());
  auto call = worker.next();
  REQUIRE(call);
  REQUIRE(call->kind == FrameKind::call);
  REQUIRE(call->id == id);
  std::vector<char> reply;
  cfx::detail::answer_call(call->id, call->body, reply, ::getpid());
  CHECK((call->body.remaining() == 0) == all_run);
  return reply;
}

/// The pool's side of one reply frame in `bytes`: split, header checked as the answer to call
/// `id`, body read.
struct ReadBack {
  std::vector<char> bytes;  // keeps the frame's body alive
  FrameSplitter splitter{max_frame_length()};
  Frame frame;
};
void read_back(ReadBack& rb, std::uint64_t id) {
  put_all(rb.splitter, rb.bytes.data(), rb.bytes.size());
  auto h = rb.splitter.header();
  REQUIRE(h);
  CHECK_NOTHROW(check_reply_header(*h, false, id));
  auto frame = rb.splitter.next();
  REQUIRE(frame);
  CHECK(!rb.splitter.next());
  rb.frame = *frame;
}

}  // namespace

TEST_SUITE("process channel") {
  TEST_CASE("channel: begin_frame and finish_frame write the frame's length, kind and id") {
    std::vector<char> out{'x', 'y', 'z'};  // frames are appended after what is there
    Writer w(out);
    auto at = begin_frame(w, FrameKind::hello, 0);
    CHECK(at == 3);
    CHECK(out.size() == 3 + kFrameHeaderSize);
    w.put(std::int32_t{1234});
    finish_frame(w, at);
    CHECK(u64_at(out, 3) == kMinFrameLength + 4);
    CHECK(static_cast<FrameKind>(out[3 + 8]) == FrameKind::hello);
    CHECK(u64_at(out, 3 + 9) == 0);

    auto at2 = begin_frame(w, FrameKind::result, 77);
    CHECK(at2 == 3 + kFrameHeaderSize + 4);
    std::string body = pattern(70000, 1);
    w.put_bytes(body.data(), body.size());
    finish_frame(w, at2);
    CHECK(u64_at(out, at2) == kMinFrameLength + body.size());
    CHECK(static_cast<FrameKind>(out[at2 + 8]) == FrameKind::result);
    CHECK(u64_at(out, at2 + 9) == 77);
    CHECK(out.size() == at2 + kFrameHeaderSize + body.size());
    // The first frame is untouched.
    CHECK(u64_at(out, 3) == 13);
    CHECK(std::string(out.data(), 3) == "xyz");

    // A frame with nothing but its kind and id: the skipped frame.
    auto at3 = begin_frame(w, FrameKind::skipped, std::numeric_limits<std::uint64_t>::max());
    finish_frame(w, at3);
    CHECK(u64_at(out, at3) == kMinFrameLength);
    CHECK(u64_at(out, at3 + 9) == std::numeric_limits<std::uint64_t>::max());
    CHECK(out.size() == at3 + kFrameHeaderSize);
  }

  TEST_CASE("channel: write_call_frame writes [len][call][id][count][task][args]") {
    TaskEntry entry;
    entry.name = "some.task";
    TestTask task;
    task.task = &entry;
    task.count = 3;
    {
      Writer w(task.args);
      for (int i = 0; i < 3; ++i) {
        encode_value(w, i * 10);
        encode_value(w, std::string(static_cast<std::size_t>(i), 'a'));
      }
    }
    std::vector<char> out{'p'};
    write_call_frame(out, task, 42);
    const std::size_t length = 1 + 8 + 4 + 4 + entry.name.size() + task.args.size();
    REQUIRE(out.size() == 1 + 8 + length);
    CHECK(out[0] == 'p');
    CHECK(u64_at(out, 1) == length);
    CHECK(static_cast<FrameKind>(out[1 + 8]) == FrameKind::call);
    CHECK(u64_at(out, 1 + 9) == 42);

    // Read back as the worker does: through a FrameSplitter.
    FrameSplitter s(max_frame_length());
    std::vector<char> stream(out.begin() + 1, out.end());
    put_all(s, stream.data(), stream.size());
    auto frame = s.next();
    REQUIRE(frame);
    CHECK(frame->kind == FrameKind::call);
    CHECK(frame->id == 42);
    Reader& body = frame->body;
    CHECK(body.get<std::uint32_t>() == 3);
    CHECK(body.get_string() == "some.task");
    for (int i = 0; i < 3; ++i) {
      CHECK(decode_value<int>(body) == i * 10);
      CHECK(decode_value<std::string>(body) == std::string(static_cast<std::size_t>(i), 'a'));
    }
    CHECK(body.remaining() == 0);
    CHECK(!s.next());
  }

  TEST_CASE("channel: a call frame with no arguments") {
    TaskEntry entry;
    entry.name = "";
    TestTask task;
    task.task = &entry;
    task.count = 0;
    std::vector<char> out;
    write_call_frame(out, task, 1);
    CHECK(out.size() == kFrameHeaderSize + 4 + 4);
    CHECK(u64_at(out, 0) == kMinFrameLength + 8);
    Reader r(out.data() + 8, out.size() - 8);
    CHECK(r.get<FrameKind>() == FrameKind::call);
    CHECK(r.get<std::uint64_t>() == 1);
    CHECK(r.get<std::uint32_t>() == 0);
    CHECK(r.get_string().empty());
    CHECK(r.remaining() == 0);
  }

  TEST_CASE("channel: a registered task's calls travel to the worker and their results back") {
    const TaskEntry& add = cfx::detail::registered_task(&channel_test::add);
    CHECK(add.name == "channel_test::add");
    std::vector<std::tuple<int, int>> calls{{1, 2}, {-5, 5}, {1000, 234}, {7, -8}};

    TestTask task;
    task.task = &add;
    task.count = static_cast<std::uint32_t>(calls.size());
    task.args = cfx::detail::encode_args(add, calls.data(), calls.size());

    std::vector<char> to_worker;
    write_call_frame(to_worker, task, 1);
    write_call_frame(to_worker, task, 2);  // two frames in one write

    // The worker: split, check the kind, serve.
    FrameSplitter worker(max_frame_length());
    auto replies_written = std::vector<char>{};
    std::vector<char> to_worker_copy = to_worker;
    std::uint64_t expected_id = 0;
    std::size_t served = 0;
    std::size_t pos = 0;
    while (pos < to_worker_copy.size()) {  // reads of 7 bytes
      auto space = worker.space();
      std::size_t n = std::min({std::size_t{7}, space.size(), to_worker_copy.size() - pos});
      std::memcpy(space.data(), to_worker_copy.data() + pos, n);
      worker.commit(n);
      pos += n;
      while (auto call = worker.next()) {
        REQUIRE(call->kind == FrameKind::call);
        CHECK(call->id == ++expected_id);
        cfx::detail::answer_call(call->id, call->body, replies_written, ::getpid());
        CHECK(call->body.remaining() == 0);
        ++served;
      }
    }
    REQUIRE(served == 2);

    // The pool: split the replies, check each header as the answer to the oldest call, read.
    FrameSplitter pool(max_frame_length());
    std::uint64_t next_call = 1;
    std::size_t read = 0;
    pos = 0;
    while (pos < replies_written.size()) {  // reads of 5 bytes
      auto space = pool.space();
      std::size_t n = std::min({std::size_t{5}, space.size(), replies_written.size() - pos});
      std::memcpy(space.data(), replies_written.data() + pos, n);
      pool.commit(n);
      pos += n;
      for (;;) {
        if (auto h = pool.header()) check_reply_header(*h, false, next_call);
        auto frame = pool.next();
        if (!frame) break;
        REQUIRE(frame->kind == FrameKind::result);
        CHECK(frame->id == next_call);
        ++next_call;
        Reply reply = read_reply(frame->body);
        CHECK(frame->body.remaining() == 0);
        CHECK(reply.count == 4);
        CHECK(!reply.error);
        std::vector<int> sums;
        for (std::uint32_t i = 0; i < reply.count; ++i) {
          std::optional<int> v;
          add.decode_result(add, reply.results, &v);
          REQUIRE(v);
          sums.push_back(*v);
        }
        CHECK(sums == std::vector<int>{3, 0, 1234, -1});
        CHECK(reply.results.remaining() == 0);
        ++read;
      }
    }
    CHECK(read == 2);
  }

  TEST_CASE("channel: msgpack arguments and results travel too") {
    const TaskEntry& repeat = cfx::detail::registered_task(&channel_test::repeat);
    std::vector<std::tuple<std::string, int>> calls{{"ab", 3}, {"", 5}, {"xyz", 0}};
    ReadBack rb;
    rb.bytes = answered(repeat, calls, 9);
    read_back(rb, 9);
    REQUIRE(rb.frame.kind == FrameKind::result);
    CHECK(rb.frame.id == 9);
    Reply reply = read_reply(rb.frame.body);
    REQUIRE(reply.count == 3);
    CHECK(decode_value<std::string>(reply.results) == "ababab");
    CHECK(decode_value<std::string>(reply.results) == "");
    CHECK(decode_value<std::string>(reply.results) == "");
    CHECK(reply.results.remaining() == 0);
    CHECK(!reply.error);
  }

  TEST_CASE("channel: a worker forked from a process that answered calls answers its own") {
    // Answering a call sets up the watch for processes a task forks (pthread_atfork): every
    // fork of this process is marked as one. A worker forked from it must still answer.
    const TaskEntry& add = cfx::detail::registered_task(&channel_test::add);
    ReadBack rb;
    rb.bytes = answered(add, std::vector<std::tuple<int, int>>{{2, 3}}, 4);
    read_back(rb, 4);
    cfx::ProcessPoolExecutor pool({.max_workers = 1, .start_method = cfx::StartMethod::fork});
    auto sums = pool.starmap(channel_test::add,
                             std::vector<std::tuple<int, int>>{{1, 10}, {2, 20}, {3, 30}},
                             {.chunksize = 3});
    CHECK(sums.to_vector() == std::vector<int>{11, 22, 33});
    CHECK(pool.submit(channel_test::add, 40, 2).result() == 42);
  }

  TEST_CASE("channel: a call that throws ends the reply with its exception") {
    const TaskEntry& nn = cfx::detail::registered_task(&channel_test::non_negative);
    std::vector<std::tuple<int>> calls{{4}, {9}, {-3}, {5}};
    std::vector<char> reply_bytes = answered(nn, calls, 3, false);  // {5} is never run

    FrameSplitter pool(max_frame_length());
    auto split = feed(pool, reply_bytes, 1);
    REQUIRE(split.frames.size() == 1);
    CHECK(split.frames[0].kind == FrameKind::result);
    CHECK(split.frames[0].id == 3);
    const std::string& body = split.frames[0].body;
    Reader frame(body.data(), body.size());
    Reply reply = read_reply(frame);
    CHECK(frame.remaining() == 0);
    REQUIRE(reply.count == 2);
    CHECK(decode_value<int>(reply.results) == 4);
    CHECK(decode_value<int>(reply.results) == 9);
    CHECK(reply.results.remaining() == 0);
    REQUIRE(reply.error);
    try {
      std::rethrow_exception(reply.error);
    } catch (const std::domain_error& e) {
      CHECK(std::string(e.what()) == "negative: -3");
      try {
        std::rethrow_if_nested(e);
        FAIL("no context nested");
      } catch (const cfx::RemoteError& ctx) {
        CHECK(ctx.task() == "channel_test::non_negative");
        CHECK(ctx.pid() == ::getpid());
      }
    } catch (...) {
      FAIL("not a std::domain_error");
    }
  }

  TEST_CASE("channel: an unregistered task's call is answered with an error, not a crash") {
    TaskEntry entry;
    entry.name = "channel_test::nobody_registered_this";
    TestTask task;
    task.task = &entry;
    task.count = 2;
    task.args = {'j', 'u', 'n', 'k'};
    std::vector<char> to_worker;
    write_call_frame(to_worker, task, 5);
    FrameSplitter worker(max_frame_length());
    put_all(worker, to_worker.data(), to_worker.size());
    auto call = worker.next();
    REQUIRE(call);
    ReadBack rb;
    cfx::detail::answer_call(call->id, call->body, rb.bytes, ::getpid());
    read_back(rb, 5);
    Reply reply = read_reply(rb.frame.body);
    CHECK(reply.count == 0);
    REQUIRE(reply.error);
    CHECK_THROWS_AS(std::rethrow_exception(reply.error), cfx::Error);
  }

  TEST_CASE("channel: read_reply of a hand-built result frame") {
    std::vector<char> results;
    Writer rw(results);
    encode_value(rw, std::int32_t{-1});
    encode_value(rw, std::string("two"));
    encode_value(rw, std::pair<double, char>{3.5, 'c'});
    CHECK(results.size() == 4 + (8 + 3) + (8 + 1));  // a string: u64 count, bytes

    SUBCASE("no failure") {
      auto body = reply_body(3, results, nullptr);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(frame.remaining() == 0);
      CHECK(reply.count == 3);
      CHECK(!reply.error);
      // The results Reader covers the results and nothing more (the failed flag follows).
      CHECK(decode_value<std::int32_t>(reply.results) == -1);
      CHECK(decode_value<std::string>(reply.results) == "two");
      CHECK(decode_value<std::pair<double, char>>(reply.results) ==
            std::pair<double, char>{3.5, 'c'});
      CHECK(reply.results.remaining() == 0);
    }
    SUBCASE("the results reader views the frame's own bytes") {
      auto body = reply_body(3, results, nullptr);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(reply.results.take(results.size()) == body.data() + 4 + 8);
      CHECK(reply.results.remaining() == 0);
    }
    SUBCASE("results, then a failure") {
      auto failure = encoded_exception(std::invalid_argument("third call"), "t");
      auto body = reply_body(3, results, &failure);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(frame.remaining() == 0);
      CHECK(reply.count == 3);
      CHECK(rest(reply.results) == std::string(results.begin(), results.end()));
      REQUIRE(reply.error);
      CHECK_THROWS_WITH_AS(std::rethrow_exception(reply.error), "third call",
                           std::invalid_argument);
    }
    SUBCASE("no results, a failure") {
      auto failure = encoded_exception(cfx::TimeoutError("late"), "slow");
      auto body = reply_body(0, {}, &failure);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(reply.count == 0);
      CHECK(reply.results.remaining() == 0);
      CHECK_THROWS_WITH_AS(std::rethrow_exception(reply.error), "late", cfx::TimeoutError);
    }
    SUBCASE("no results, no failure") {
      auto body = reply_body(0, {}, nullptr);
      CHECK(body.size() == 4 + 8 + 1);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(reply.count == 0);
      CHECK(!reply.error);
      CHECK(reply.results.remaining() == 0);
      CHECK(frame.remaining() == 0);
    }
  }

  TEST_CASE("channel: a truncated reply throws SerializationError") {
    std::vector<char> results;
    Writer rw(results);
    encode_value(rw, 42);
    encode_value(rw, std::string("result"));
    auto failure = encoded_exception(std::runtime_error("oops"), "task.name");
    for (bool failed : {false, true}) {
      CAPTURE(failed);
      auto body = reply_body(2, results, failed ? &failure : nullptr);
      for (std::size_t len = 0; len < body.size(); ++len) {
        CAPTURE(len);
        std::vector<char> prefix(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(len));
        Reader frame(prefix.data(), prefix.size());
        CHECK_THROWS_AS(read_reply(frame), SerializationError);
      }
    }
  }

  TEST_CASE("channel: a reply whose results length overruns the frame throws") {
    std::vector<char> results(10, 'r');
    auto body = reply_body(1, results, nullptr);
    for (std::uint64_t claim :
         {std::uint64_t{12}, std::uint64_t{1} << 32, std::numeric_limits<std::uint64_t>::max(),
          std::numeric_limits<std::uint64_t>::max() - 3}) {
      CAPTURE(claim);
      auto bad = body;
      std::memcpy(bad.data() + 4, &claim, sizeof claim);
      Reader frame(bad.data(), bad.size());
      CHECK_THROWS_AS(read_reply(frame), SerializationError);
    }
    // Claiming 11 of the 11 remaining bytes leaves no failed flag.
    auto bad = body;
    std::uint64_t eleven = 11;
    std::memcpy(bad.data() + 4, &eleven, sizeof eleven);
    Reader frame(bad.data(), bad.size());
    CHECK_THROWS_AS(read_reply(frame), SerializationError);
  }

  TEST_CASE("channel: a failed flag followed by a malformed exception throws") {
    std::vector<char> garbage;
    Writer g(garbage);
    g.put(std::uint32_t{1000});  // a type-name length far past the end
    g.put_bytes("abc", 3);
    auto body = reply_body(0, {}, &garbage);
    Reader frame(body.data(), body.size());
    CHECK_THROWS_AS(read_reply(frame), SerializationError);
  }

  TEST_CASE("channel: check_reply_header takes only the answer to the oldest call") {
    const auto max = max_frame_length();
    auto header = [](FrameKind kind, std::uint64_t id, std::uint64_t body = 0) {
      return FrameHeader{kMinFrameLength + body, kind, id};
    };
    auto bad = [](FrameHeader h, bool hello_expected, std::optional<std::uint64_t> next) {
      CHECK_THROWS_AS(check_reply_header(h, hello_expected, next), SerializationError);
    };

    SUBCASE("the right id and kind") {
      CHECK_NOTHROW(check_reply_header(header(FrameKind::result, 7, 100), false, 7));
      CHECK_NOTHROW(check_reply_header(header(FrameKind::result, 7), false, 7));
      CHECK_NOTHROW(check_reply_header(header(FrameKind::skipped, 7), false, 7));
      CHECK_NOTHROW(check_reply_header(FrameHeader{max, FrameKind::result, 1}, false, 1));
    }
    SUBCASE("a kind a worker never sends") {
      bad(header(FrameKind::call, 7, 20), false, 7);
      bad(header(static_cast<FrameKind>(0), 7), false, 7);
      bad(header(static_cast<FrameKind>(6), 7), false, 7);
      bad(header(static_cast<FrameKind>(255), 7), false, 7);
    }
    SUBCASE("another call's id") {
      bad(header(FrameKind::result, 8, 20), false, 7);
      bad(header(FrameKind::result, 6, 20), false, 7);
      bad(header(FrameKind::skipped, 0), false, 7);
      bad(header(FrameKind::result, 7 + (std::uint64_t{1} << 32), 20), false, 7);
    }
    SUBCASE("no call held") {
      bad(header(FrameKind::result, 1, 20), false, std::nullopt);
      bad(header(FrameKind::skipped, 0), false, std::nullopt);
    }
    SUBCASE("a bulk frame: its body is a length, nothing else") {
      CHECK_NOTHROW(check_reply_header(header(FrameKind::bulk, 7, 8), false, 7));
      bad(header(FrameKind::bulk, 7), false, 7);
      bad(header(FrameKind::bulk, 7, 9), false, 7);
      bad(header(FrameKind::bulk, 8, 8), false, 7);
      bad(header(FrameKind::bulk, 7, 8), false, std::nullopt);
    }
    SUBCASE("a skipped frame with a body") {
      bad(header(FrameKind::skipped, 7, 1), false, 7);
      bad(header(FrameKind::skipped, 7, 1000), false, 7);
    }
    SUBCASE("a length out of bounds") {
      bad(FrameHeader{kMinFrameLength - 1, FrameKind::result, 7}, false, 7);
      bad(FrameHeader{0, FrameKind::result, 7}, false, 7);
      bad(FrameHeader{max + 1, FrameKind::result, 7}, false, 7);
      bad(FrameHeader{std::numeric_limits<std::uint64_t>::max(), FrameKind::result, 7}, false, 7);
      bad(FrameHeader{kMinFrameLength - 1, FrameKind::skipped, 7}, false, 7);
    }
    SUBCASE("the hello, when it is expected and only then") {
      CHECK_NOTHROW(check_reply_header(header(FrameKind::hello, 0, 4), true, std::nullopt));
      // Calls may be sent before the hello arrives; it still comes first.
      CHECK_NOTHROW(check_reply_header(header(FrameKind::hello, 0, 4), true, 1));
      bad(header(FrameKind::hello, 0, 4), false, std::nullopt);
      bad(header(FrameKind::hello, 0, 4), false, 1);
      bad(header(FrameKind::result, 1, 20), true, 1);
      bad(header(FrameKind::skipped, 1), true, 1);
      bad(header(FrameKind::call, 0, 4), true, std::nullopt);
      // A hello is [i32 pid] with id 0, nothing else.
      bad(header(FrameKind::hello, 1, 4), true, std::nullopt);
      bad(header(FrameKind::hello, 0, 3), true, std::nullopt);
      bad(header(FrameKind::hello, 0, 5), true, std::nullopt);
      bad(header(FrameKind::hello, 0, 1 << 20), true, std::nullopt);
    }
  }

  TEST_CASE("frame splitter: frames fed one byte at a time") {
    std::vector<char> stream;
    std::vector<RawFrame> frames{{FrameKind::hello, 0, "pid!"},
                                 {FrameKind::result, 1, pattern(5000, 2)},
                                 {FrameKind::skipped, 2, ""},
                                 {FrameKind::call, 3, std::string(1, '\x01')},
                                 {FrameKind::result, 1ull << 40, pattern(9, 3)}};
    auto ends = build(stream, frames);
    FrameSplitter s(max_frame_length());
    CHECK(!s.next());
    CHECK(!s.header());
    auto split = feed(s, stream, 1);
    CHECK(split.frames == frames);
    // Each frame comes out as soon as its last byte arrives, and not before.
    CHECK(split.ends == ends);
  }

  TEST_CASE("frame splitter: header() before a body arrives") {
    std::string body = pattern(1000, 8);
    std::vector<char> stream;
    build(stream, {{FrameKind::result, 12, body}, {FrameKind::skipped, 13, ""}});
    FrameSplitter s(max_frame_length());
    CHECK(!s.header());
    // Up to the last byte of the header, nothing is known.
    put_all(s, stream.data(), kFrameHeaderSize - 1);
    CHECK(!s.header());
    CHECK(!s.next());
    CHECK(s.buffered() == kFrameHeaderSize - 1);
    // With the header in, header() says what is coming; the frame is not complete yet.
    put_all(s, stream.data() + kFrameHeaderSize - 1, 1);
    auto h = s.header();
    REQUIRE(h);
    CHECK(h->length == kMinFrameLength + body.size());
    CHECK(h->kind == FrameKind::result);
    CHECK(h->id == 12);
    CHECK(!s.next());
    // Half of the body: the same header, still no frame.
    put_all(s, stream.data() + kFrameHeaderSize, 500);
    h = s.header();
    REQUIRE(h);
    CHECK(h->id == 12);
    CHECK(!s.next());
    // The rest of the body and part of the next header: the frame, then no header until the
    // next one is complete.
    std::size_t first_end = kFrameHeaderSize + body.size();
    put_all(s, stream.data() + kFrameHeaderSize + 500, first_end + 5 - kFrameHeaderSize - 500);
    auto frame = s.next();
    REQUIRE(frame);
    CHECK(frame->id == 12);
    CHECK(rest(frame->body) == body);
    CHECK(!s.header());
    CHECK(!s.next());
    put_all(s, stream.data() + first_end + 5, stream.size() - first_end - 5);
    h = s.header();
    REQUIRE(h);
    CHECK(h->kind == FrameKind::skipped);
    CHECK(h->id == 13);
    CHECK(h->length == kMinFrameLength);
    // header() does not take the frame; next() does.
    CHECK(s.header());
    frame = s.next();
    REQUIRE(frame);
    CHECK(frame->kind == FrameKind::skipped);
    CHECK(frame->body.remaining() == 0);
    CHECK(!s.header());
    CHECK(s.buffered() == 0);
  }

  TEST_CASE("frame splitter: next() refuses a length out of bounds") {
    constexpr std::uint64_t bound = 1000;
    for (std::uint64_t length :
         {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{8}, bound + 1, std::uint64_t{1} << 40,
          std::numeric_limits<std::uint64_t>::max() - 8,
          std::numeric_limits<std::uint64_t>::max()}) {
      CAPTURE(length);
      FrameSplitter s(bound);
      auto h = raw_header(length, FrameKind::result, 1);
      // Bytes after the header: enough for a short frame to be complete.
      h.resize(h.size() + 64, 'b');
      put_all(s, h.data(), h.size());
      REQUIRE(s.header());
      CHECK(s.header()->length == length);
      CHECK_THROWS_AS(s.next(), SerializationError);
    }
    // The bounds themselves are taken.
    for (std::uint64_t length : {kMinFrameLength, bound}) {
      CAPTURE(length);
      FrameSplitter s(bound);
      std::vector<char> stream;
      append_raw_frame(stream, FrameKind::result, 2,
                       pattern(static_cast<std::size_t>(length - kMinFrameLength), 9));
      auto split = feed(s, stream, 100);
      REQUIRE(split.frames.size() == 1);
      CHECK(split.frames[0].body.size() == length - kMinFrameLength);
    }
  }

  TEST_CASE("frame splitter: a header that claims 1 GiB costs only what arrives") {
    for (std::uint64_t claim :
         {std::uint64_t{1} << 30, std::numeric_limits<std::uint64_t>::max()}) {
      CAPTURE(claim);
      // A bound above the claim of 1 GiB, so that the frame is only refused for its length
      // when it claims more than that.
      FrameSplitter s(std::uint64_t{1} << 40);
      auto h = raw_header(claim, FrameKind::result, 1);
      REQUIRE(h.size() == kFrameHeaderSize);
      std::size_t arrived = 0;
      auto space = s.space();
      std::size_t first = space.size();
      CHECK(first <= kMinRead);
      std::memcpy(space.data(), h.data(), h.size());
      s.commit(h.size());
      arrived += h.size();
      std::string more = pattern(8 << 10, 10);
      for (std::size_t at = 0; at < more.size(); at += 1024) {
        if (claim <= (std::uint64_t{1} << 40)) CHECK(!s.next());
        space = s.space();
        // Room for the next read, never for the gigabyte announced.
        CHECK(space.size() <= kMinRead);
        CHECK(space.size() >= 1024);
        std::memcpy(space.data(), more.data() + at, 1024);
        s.commit(1024);
        arrived += 1024;
        CHECK(s.buffered() == arrived);
      }
      CHECK(s.space().size() <= kMinRead);
      if (claim > (std::uint64_t{1} << 40)) CHECK_THROWS_AS(s.next(), SerializationError);
    }
    // The same claim with a megabyte arriving: the buffer grows with what arrived, at most
    // four times it (a frame of kBulkBytes or more grows fourfold, not doubling).
    FrameSplitter s(std::uint64_t{1} << 40);
    auto h = raw_header(std::uint64_t{1} << 30, FrameKind::result, 1);
    put_all(s, h.data(), h.size());
    std::string chunk = pattern(4096, 11);
    while (s.buffered() < (1u << 20)) {
      auto space = s.space();
      CHECK(s.buffered() + space.size() <= 4 * std::max(s.buffered(), kMinRead));
      std::size_t n = std::min(space.size(), chunk.size());
      std::memcpy(space.data(), chunk.data(), n);
      s.commit(n);
      CHECK(!s.next());
    }
  }

  TEST_CASE("frame splitter: many frames in one read") {
    std::vector<char> stream;
    std::vector<std::string> bodies;
    for (unsigned i = 0; i < 500; ++i) bodies.push_back(pattern(i % 89, i));
    auto frames = results_with(bodies);
    auto ends = build(stream, frames);
    REQUIRE(stream.size() < kMinRead);

    FrameSplitter s(max_frame_length());
    put_all(s, stream.data(), stream.size());
    std::vector<RawFrame> got;
    while (auto frame = s.next()) got.push_back({frame->kind, frame->id, rest(frame->body)});
    CHECK(got == frames);
    CHECK(!s.next());

    // And again through the same splitter, now in reads that straddle frames.
    auto split = feed(s, stream, 1000);
    CHECK(split.frames == frames);
  }

  TEST_CASE("frame splitter: a 1 MiB frame arriving in chunks") {
    std::string big = pattern(1 << 20, 4);
    std::vector<char> stream;
    auto frames = results_with({"small", big, "after", big.substr(0, 70000)});
    build(stream, frames);
    for (std::size_t chunk :
         {std::size_t{4096}, std::size_t{65536}, std::size_t{12345}, std::size_t{1} << 21}) {
      CAPTURE(chunk);
      FrameSplitter s(max_frame_length());
      auto split = feed(s, stream, chunk);
      REQUIRE(split.frames.size() == frames.size());
      for (std::size_t i = 0; i < frames.size(); ++i) {
        CAPTURE(i);
        CHECK(split.frames[i].body.size() == frames[i].body.size());
        CHECK(split.frames[i] == frames[i]);
      }
    }
  }

  TEST_CASE("frame splitter: a large frame is read in a few reads that fill their space") {
    // The buffer grows with what has arrived, doubling it at most, so a reader that fills
    // the space it is given finishes a frame in a number of reads logarithmic in its size.
    std::string big = pattern(300000, 5);
    std::vector<char> stream;
    build(stream, {{FrameKind::result, 1, big}});
    FrameSplitter s(max_frame_length());
    std::size_t pos = 0;
    int reads = 0;
    std::optional<Frame> frame;
    while (!frame) {
      REQUIRE(pos < stream.size());
      auto space = s.space();
      CHECK(s.buffered() + space.size() <= 2 * std::max(s.buffered(), kMinRead));
      std::size_t n = std::min(space.size(), stream.size() - pos);
      std::memcpy(space.data(), stream.data() + pos, n);
      s.commit(n);
      pos += n;
      ++reads;
      frame = s.next();
    }
    CHECK(pos == stream.size());
    CHECK(reads <= 4);  // 64 KiB, 64 KiB, 128 KiB, the rest
    CHECK(rest(frame->body) == big);
  }

  TEST_CASE("frame splitter: a big frame in small reads grows its buffer a few times only") {
    // A pipe hands over at most its size per read. Growing the buffer at every read (to twice
    // what had arrived) copied all of it each time: a 200 MB result took minutes. Growth must
    // double the buffer, so that the bytes copied stay within a small multiple of the frame.
    std::string big = pattern(std::size_t{8} << 20, 8);
    std::vector<char> stream;
    build(stream, {{FrameKind::result, 1, big}});
    FrameSplitter s(max_frame_length());
    std::size_t pos = 0;
    int growths = 0;
    const char* base = nullptr;
    std::optional<Frame> frame;
    while (!frame) {
      REQUIRE(pos < stream.size());
      auto space = s.space();
      const char* now = space.data() - s.buffered();  // the frame starts the buffer
      if (now != base) ++growths;
      base = now;
      std::size_t n = std::min({space.size(), stream.size() - pos, std::size_t{4096}});
      std::memcpy(space.data(), stream.data() + pos, n);
      s.commit(n);
      pos += n;
      frame = s.next();
    }
    CHECK(growths <= 12);  // 64 KiB nearly doubled to 8 MiB: about 8 buffers
    CHECK(rest(frame->body) == big);
  }

  TEST_CASE("frame splitter: zero-length bodies") {
    std::vector<char> stream;
    auto frames = results_with({"", "", "x", "", pattern(100, 6), ""});
    frames.push_back({FrameKind::skipped, 7, ""});
    auto ends = build(stream, frames);
    for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{8}, std::size_t{4096}}) {
      CAPTURE(chunk);
      FrameSplitter s(max_frame_length());
      auto split = feed(s, stream, chunk);
      CHECK(split.frames == frames);
      if (chunk == 1) CHECK(split.ends == ends);
    }

    // An empty body's Reader reads nothing, even with the next frame's bytes after it.
    FrameSplitter s(max_frame_length());
    put_all(s, stream.data(), stream.size());
    auto first = s.next();
    REQUIRE(first);
    CHECK(first->id == 1);
    CHECK(first->body.remaining() == 0);
    CHECK_THROWS_AS(first->body.get<FrameKind>(), SerializationError);
  }

  TEST_CASE("frame splitter: a frame's Reader reads exactly its body") {
    std::vector<char> stream;
    build(stream, results_with({"abc", "defgh", std::string(1, '\x02')}));
    FrameSplitter s(max_frame_length());
    put_all(s, stream.data(), stream.size());
    auto a = s.next();
    auto b = s.next();
    auto c = s.next();
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    CHECK(!s.next());
    CHECK(s.buffered() == 0);
    // All three stay valid until the next space().
    CHECK(std::string_view(a->body.take(3), 3) == "abc");
    CHECK_THROWS_AS(a->body.take(1), SerializationError);
    CHECK_THROWS_AS(b->body.take(6), SerializationError);
    CHECK(std::string_view(b->body.take(5), 5) == "defgh");
    CHECK(b->body.remaining() == 0);
    CHECK(c->body.get<FrameKind>() == FrameKind::result);
    CHECK(c->body.remaining() == 0);
    CHECK(a->id == 1);
    CHECK(c->id == 3);
  }

  TEST_CASE("frame splitter: space() is never empty, even when every byte is used") {
    // A reader that fills all the space it is given, and only then takes frames.
    std::vector<char> stream;
    std::vector<std::string> bodies;
    for (unsigned i = 0; i < 40; ++i) bodies.push_back(pattern(1000 + i * 3001, i));
    auto frames = results_with(bodies);
    build(stream, frames);
    FrameSplitter s(max_frame_length());
    std::size_t pos = 0;
    std::vector<RawFrame> got;
    while (pos < stream.size()) {
      auto space = s.space();
      REQUIRE(!space.empty());
      std::size_t n = std::min(space.size(), stream.size() - pos);
      std::memcpy(space.data(), stream.data() + pos, n);
      s.commit(n);
      pos += n;
      if (n == space.size()) {
        // The buffer is full: space() must still offer room (the data is kept).
        auto more = s.space();
        REQUIRE(!more.empty());
        std::size_t m = std::min(more.size(), stream.size() - pos);
        std::memcpy(more.data(), stream.data() + pos, m);
        s.commit(m);
        pos += m;
      }
      while (auto frame = s.next()) got.push_back({frame->kind, frame->id, rest(frame->body)});
    }
    CHECK(got == frames);

    // A fresh splitter offers room before anything arrives, and after a frame that
    // exactly filled the first buffer was taken.
    FrameSplitter fresh(max_frame_length());
    auto first = fresh.space();
    CHECK(!first.empty());
    std::vector<char> exact;
    build(exact, {{FrameKind::result, 1, pattern(first.size() - kFrameHeaderSize, 7)}});
    REQUIRE(exact.size() == first.size());
    std::memcpy(first.data(), exact.data(), exact.size());
    fresh.commit(exact.size());
    CHECK(fresh.next());
    CHECK(!fresh.next());
    CHECK(!fresh.space().empty());
  }

  TEST_CASE("frame splitter: random frame and read sizes") {
    std::uint32_t state = 987654321u;
    auto rnd = [&] {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      return state;
    };
    std::vector<char> stream;
    std::vector<RawFrame> frames;
    for (unsigned i = 0; i < 300; ++i) {
      unsigned kind = rnd() % 10;
      std::size_t n = kind < 3 ? 0 : kind < 8 ? rnd() % 200 : rnd() % 150000;
      frames.push_back({static_cast<FrameKind>(1 + rnd() % 4), rnd(), pattern(n, i)});
    }
    build(stream, frames);
    FrameSplitter s(max_frame_length());
    auto split = feed(s, stream, [&] {
      unsigned k = rnd() % 4;
      return static_cast<std::size_t>(k == 0  ? 1 + rnd() % 8
                                      : k < 3 ? 1 + rnd() % 5000
                                              : 1 + rnd() % 300000);
    });
    CHECK(split.frames.size() == frames.size());
    CHECK(split.frames == frames);
  }

  TEST_CASE("channel: call slots move from queued exactly once") {
    namespace slots = cfx::detail::slots;
    using slots::State;
    // The page as the worker maps it: zeroed.
    std::vector<std::atomic<std::uint64_t>> page(slots::kCount);
    for (auto& w : page) w.store(0);
    auto* p = page.data();

    for (State to : {State::started, State::withdrawn, State::taken_back}) {
      CAPTURE(static_cast<int>(to));
      const std::uint64_t id = 1 + static_cast<std::uint64_t>(to);
      slots::queue(p, id);
      CHECK(slots::state(p, id) == State::queued);
      CHECK(slots::move(p, id, to));
      CHECK(slots::state(p, id) == to);
      // Whoever moves second loses, whatever it wanted, and changes nothing.
      for (State again : {State::started, State::withdrawn, State::taken_back}) {
        CHECK(!slots::move(p, id, again));
        CHECK(slots::state(p, id) == to);
      }
    }

    SUBCASE("a slot reused by a later call") {
      const std::uint64_t id = 5;
      const std::uint64_t later = id + slots::kCount;  // the same slot
      CHECK(&slots::of(p, id) == &slots::of(p, later));
      slots::queue(p, id);
      // Nothing matches a call the slot does not hold.
      CHECK(slots::state(p, later) == std::nullopt);
      CHECK(!slots::move(p, later, State::started));
      CHECK(slots::state(p, id) == State::queued);
      // The later call takes the slot: the earlier one is stale now.
      slots::queue(p, later);
      CHECK(slots::state(p, id) == std::nullopt);
      CHECK(!slots::move(p, id, State::withdrawn));
      CHECK(slots::state(p, later) == State::queued);
      CHECK(slots::move(p, later, State::withdrawn));
      CHECK(slots::state(p, later) == State::withdrawn);
      CHECK(slots::state(p, id) == std::nullopt);
    }
    SUBCASE("a call never queued") {
      // Slot 7 holds id 0 (zeroed page): call 7 is not in it.
      CHECK(slots::state(p, 7) == std::nullopt);
      CHECK(!slots::move(p, 7, State::started));
      CHECK(slots::state(p, 0) == State::queued);  // the zero word reads as call 0, queued
    }
    SUBCASE("the word keeps the id and the state apart") {
      CHECK(slots::word(3, State::queued) == 12);
      CHECK(slots::word(3, State::taken_back) == 15);
      CHECK(slots::word(3, State::started) != slots::word(3, State::withdrawn));
    }
  }
}
