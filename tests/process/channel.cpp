// The process backend's channel (backends/process/channel.hpp): frames, the call and result
// frames, and FrameSplitter, which cuts the byte stream read from a pipe back into frames.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
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
using cfx::detail::decode_value;
using cfx::detail::encode_value;
using cfx::detail::finish_frame;
using cfx::detail::FrameKind;
using cfx::detail::FrameSplitter;
using cfx::detail::read_reply;
using cfx::detail::Reader;
using cfx::detail::Reply;
using cfx::detail::TaskEntry;
using cfx::detail::write_call_frame;
using cfx::detail::Writer;

/// A RemoteTask that only carries its fields (the channel reads nothing else).
class TestTask final : public cfx::detail::RemoteTask {
 public:
  bool attach(std::shared_ptr<cfx::detail::CallSlots>, std::uint64_t) noexcept override {
    return true;
  }
  void detach() noexcept override {}
  void complete(Reader&, std::uint32_t, std::exception_ptr) noexcept override {}
  void fail(std::exception_ptr) noexcept override {}
  void cancel() noexcept override {}
  void drop() noexcept override {}
};

/// True if the reader has nothing left.
bool exhausted(Reader& r) {
  try {
    r.take(1);
    return false;
  } catch (const SerializationError&) {
    return true;
  }
}

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

/// [u64 length][body], the body taken as is (no kind added).
void append_raw_frame(std::vector<char>& stream, std::string_view body) {
  Writer w(stream);
  w.put(static_cast<std::uint64_t>(body.size()));
  w.put_bytes(body.data(), body.size());
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

struct Split {
  std::vector<std::string> bodies;
  std::vector<std::size_t> ends;  // stream bytes committed when each frame came out
};

/// Feeds `stream` to `s` in reads of at most `chunk` bytes (or sizes from `chunk_of`), taking
/// frames after each read. Checks that space() is never empty and always holds what the
/// current frame still needs.
template <class ChunkOf>
requires std::invocable<ChunkOf&> Split feed(FrameSplitter& s, const std::vector<char>& stream,
                                             ChunkOf chunk_of, std::size_t frame_start = 0) {
  Split out;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    auto space = s.space();
    REQUIRE(!space.empty());
    // Once the current frame's length is in, space() has room for the rest of it.
    if (pos - frame_start >= sizeof(std::uint64_t)) {
      std::uint64_t len = u64_at(stream, frame_start);
      std::size_t need = frame_start + sizeof(std::uint64_t) + len - pos;
      REQUIRE(space.size() >= need);
    }
    std::size_t n = std::min({chunk_of(), space.size(), stream.size() - pos});
    std::memcpy(space.data(), stream.data() + pos, n);
    s.commit(n);
    pos += n;
    while (auto frame = s.next()) {
      out.bodies.push_back(rest(*frame));
      out.ends.push_back(pos);
      frame_start += sizeof(std::uint64_t) + out.bodies.back().size();
    }
  }
  CHECK(!s.next());
  return out;
}

Split feed(FrameSplitter& s, const std::vector<char>& stream, std::size_t chunk) {
  return feed(s, stream, [chunk] { return chunk; });
}

/// Builds a stream of frames with the given bodies; returns where each frame ends.
std::vector<std::size_t> build(std::vector<char>& stream, const std::vector<std::string>& bodies) {
  std::vector<std::size_t> ends;
  for (const auto& b : bodies) {
    append_raw_frame(stream, b);
    ends.push_back(stream.size());
  }
  return ends;
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

/// One call frame of `calls` to `task`, as the pool writes it, answered as the worker
/// answers it: the bytes of the result frame.
template <class Tuple>
std::vector<char> answered(const TaskEntry& task, const std::vector<Tuple>& calls) {
  TestTask call_task;
  call_task.task = &task;
  call_task.count = static_cast<std::uint32_t>(calls.size());
  call_task.args = cfx::detail::encode_args(task, calls.data(), calls.size());
  std::vector<char> to_worker;
  write_call_frame(to_worker, call_task);
  Reader call(to_worker.data() + 8, to_worker.size() - 8);
  REQUIRE(call.get<FrameKind>() == FrameKind::call);
  std::vector<char> reply;
  cfx::detail::answer_call(call, reply, ::getpid());
  return reply;
}

}  // namespace

TEST_SUITE("process channel") {
  TEST_CASE("channel: begin_frame and finish_frame write the frame's length and kind") {
    std::vector<char> out{'x', 'y', 'z'};  // frames are appended after what is there
    Writer w(out);
    auto at = begin_frame(w, FrameKind::hello);
    CHECK(at == 3);
    CHECK(out.size() == 3 + 8 + 1);
    w.put(std::int32_t{1234});
    finish_frame(w, at);
    CHECK(u64_at(out, 3) == 1 + 4);
    CHECK(static_cast<FrameKind>(out[3 + 8]) == FrameKind::hello);

    auto at2 = begin_frame(w, FrameKind::result);
    CHECK(at2 == 3 + 8 + 5);
    std::string body = pattern(70000, 1);
    w.put_bytes(body.data(), body.size());
    finish_frame(w, at2);
    CHECK(u64_at(out, at2) == 1 + body.size());
    CHECK(static_cast<FrameKind>(out[at2 + 8]) == FrameKind::result);
    CHECK(out.size() == at2 + 8 + 1 + body.size());
    // The first frame is untouched.
    CHECK(u64_at(out, 3) == 5);
    CHECK(std::string(out.data(), 3) == "xyz");

    // A frame with nothing but its kind.
    auto at3 = begin_frame(w, FrameKind::call);
    finish_frame(w, at3);
    CHECK(u64_at(out, at3) == 1);
    CHECK(out.size() == at3 + 9);
  }

  TEST_CASE("channel: write_call_frame writes [len][call][count][task][args]") {
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
    write_call_frame(out, task);
    const std::size_t body_size = 1 + 4 + 4 + entry.name.size() + task.args.size();
    REQUIRE(out.size() == 1 + 8 + body_size);
    CHECK(out[0] == 'p');
    CHECK(u64_at(out, 1) == body_size);

    // Read back as the worker does: through a FrameSplitter.
    FrameSplitter s;
    std::vector<char> stream(out.begin() + 1, out.end());
    auto space = s.space();
    REQUIRE(space.size() >= stream.size());
    std::memcpy(space.data(), stream.data(), stream.size());
    s.commit(stream.size());
    auto frame = s.next();
    REQUIRE(frame);
    CHECK(frame->get<FrameKind>() == FrameKind::call);
    CHECK(frame->get<std::uint32_t>() == 3);
    CHECK(frame->get_string() == "some.task");
    for (int i = 0; i < 3; ++i) {
      CHECK(decode_value<int>(*frame) == i * 10);
      CHECK(decode_value<std::string>(*frame) == std::string(static_cast<std::size_t>(i), 'a'));
    }
    CHECK(exhausted(*frame));
    CHECK(!s.next());
  }

  TEST_CASE("channel: a call frame with no arguments") {
    TaskEntry entry;
    entry.name = "";
    TestTask task;
    task.task = &entry;
    task.count = 0;
    std::vector<char> out;
    write_call_frame(out, task);
    CHECK(out.size() == 8 + 1 + 4 + 4);
    CHECK(u64_at(out, 0) == 9);
    Reader r(out.data() + 8, out.size() - 8);
    CHECK(r.get<FrameKind>() == FrameKind::call);
    CHECK(r.get<std::uint32_t>() == 0);
    CHECK(r.get_string().empty());
    CHECK(exhausted(r));
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
    write_call_frame(to_worker, task);
    write_call_frame(to_worker, task);  // two frames in one write

    // The worker: split, check the kind, serve.
    FrameSplitter worker;
    auto replies_written = std::vector<char>{};
    auto split = feed(worker, to_worker, 7);
    REQUIRE(split.bodies.size() == 2);
    for (const auto& body : split.bodies) {
      Reader call(body.data(), body.size());
      REQUIRE(call.get<FrameKind>() == FrameKind::call);
      cfx::detail::answer_call(call, replies_written, ::getpid());
      CHECK(exhausted(call));
    }

    // The pool: split the replies and read them.
    FrameSplitter pool;
    auto replies = feed(pool, replies_written, 5);
    REQUIRE(replies.bodies.size() == 2);
    for (const auto& body : replies.bodies) {
      Reader frame(body.data(), body.size());
      REQUIRE(frame.get<FrameKind>() == FrameKind::result);
      Reply reply = read_reply(frame);
      CHECK(exhausted(frame));
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
      CHECK(exhausted(reply.results));
    }
  }

  TEST_CASE("channel: msgpack arguments and results travel too") {
    const TaskEntry& repeat = cfx::detail::registered_task(&channel_test::repeat);
    std::vector<std::tuple<std::string, int>> calls{{"ab", 3}, {"", 5}, {"xyz", 0}};
    std::vector<char> reply_bytes = answered(repeat, calls);

    Reader frame(reply_bytes.data() + 8, reply_bytes.size() - 8);
    REQUIRE(frame.get<FrameKind>() == FrameKind::result);
    Reply reply = read_reply(frame);
    REQUIRE(reply.count == 3);
    CHECK(decode_value<std::string>(reply.results) == "ababab");
    CHECK(decode_value<std::string>(reply.results) == "");
    CHECK(decode_value<std::string>(reply.results) == "");
    CHECK(exhausted(reply.results));
    CHECK(!reply.error);
  }

  TEST_CASE("channel: a call that throws ends the reply with its exception") {
    const TaskEntry& nn = cfx::detail::registered_task(&channel_test::non_negative);
    std::vector<std::tuple<int>> calls{{4}, {9}, {-3}, {5}};
    std::vector<char> reply_bytes = answered(nn, calls);

    FrameSplitter pool;
    auto split = feed(pool, reply_bytes, 1);
    REQUIRE(split.bodies.size() == 1);
    Reader frame(split.bodies[0].data(), split.bodies[0].size());
    REQUIRE(frame.get<FrameKind>() == FrameKind::result);
    Reply reply = read_reply(frame);
    CHECK(exhausted(frame));
    REQUIRE(reply.count == 2);
    CHECK(decode_value<int>(reply.results) == 4);
    CHECK(decode_value<int>(reply.results) == 9);
    CHECK(exhausted(reply.results));
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

  TEST_CASE("channel: read_reply of a hand-built result frame") {
    std::vector<char> results;
    Writer rw(results);
    encode_value(rw, std::int32_t{-1});
    encode_value(rw, std::string("two"));
    encode_value(rw, std::pair<double, char>{3.5, 'c'});
    CHECK(results.size() == 4 + (4 + 1 + 3) + (8 + 1));

    SUBCASE("no failure") {
      auto body = reply_body(3, results, nullptr);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(exhausted(frame));
      CHECK(reply.count == 3);
      CHECK(!reply.error);
      // The results Reader covers the results and nothing more (the failed flag follows).
      CHECK(decode_value<std::int32_t>(reply.results) == -1);
      CHECK(decode_value<std::string>(reply.results) == "two");
      CHECK(decode_value<std::pair<double, char>>(reply.results) ==
            std::pair<double, char>{3.5, 'c'});
      CHECK(exhausted(reply.results));
    }
    SUBCASE("the results reader views the frame's own bytes") {
      auto body = reply_body(3, results, nullptr);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(reply.results.take(results.size()) == body.data() + 4 + 8);
      CHECK(exhausted(reply.results));
    }
    SUBCASE("results, then a failure") {
      auto failure = encoded_exception(std::invalid_argument("third call"), "t");
      auto body = reply_body(3, results, &failure);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(exhausted(frame));
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
      CHECK(exhausted(reply.results));
      CHECK_THROWS_WITH_AS(std::rethrow_exception(reply.error), "late", cfx::TimeoutError);
    }
    SUBCASE("no results, no failure") {
      auto body = reply_body(0, {}, nullptr);
      CHECK(body.size() == 4 + 8 + 1);
      Reader frame(body.data(), body.size());
      Reply reply = read_reply(frame);
      CHECK(reply.count == 0);
      CHECK(!reply.error);
      CHECK(exhausted(reply.results));
      CHECK(exhausted(frame));
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

  TEST_CASE("frame splitter: frames fed one byte at a time") {
    std::vector<char> stream;
    std::vector<std::string> bodies{std::string(1, '\x03') + "pid!", pattern(5000, 2), "",
                                    std::string(1, '\x01'), pattern(9, 3)};
    auto ends = build(stream, bodies);
    FrameSplitter s;
    CHECK(!s.next());
    auto split = feed(s, stream, 1);
    CHECK(split.bodies == bodies);
    // Each frame comes out as soon as its last byte arrives, and not before.
    CHECK(split.ends == ends);
  }

  TEST_CASE("frame splitter: many frames in one read") {
    std::vector<char> stream;
    std::vector<std::string> bodies;
    for (unsigned i = 0; i < 500; ++i) bodies.push_back(pattern(i % 97, i));
    auto ends = build(stream, bodies);
    REQUIRE(stream.size() < 60000);

    FrameSplitter s;
    auto space = s.space();
    REQUIRE(space.size() >= stream.size());
    std::memcpy(space.data(), stream.data(), stream.size());
    s.commit(stream.size());
    std::vector<std::string> got;
    while (auto frame = s.next()) got.push_back(rest(*frame));
    CHECK(got == bodies);
    CHECK(!s.next());

    // And again through the same splitter, now in reads that straddle frames.
    auto split = feed(s, stream, 1000);
    CHECK(split.bodies == bodies);
  }

  TEST_CASE("frame splitter: a 1 MiB frame arriving in chunks") {
    std::string big = pattern(1 << 20, 4);
    std::vector<char> stream;
    std::vector<std::string> bodies{"small", big, "after", big.substr(0, 70000)};
    build(stream, bodies);
    for (std::size_t chunk :
         {std::size_t{4096}, std::size_t{65536}, std::size_t{12345}, std::size_t{1} << 21}) {
      CAPTURE(chunk);
      FrameSplitter s;
      auto split = feed(s, stream, chunk);
      REQUIRE(split.bodies.size() == bodies.size());
      for (std::size_t i = 0; i < bodies.size(); ++i) {
        CAPTURE(i);
        CHECK(split.bodies[i].size() == bodies[i].size());
        CHECK(split.bodies[i] == bodies[i]);
      }
    }
  }

  TEST_CASE("frame splitter: a frame that needs the whole buffer is read in one go") {
    // Once the length is in, space() has room for the whole frame, so a reader that fills
    // the space it is given finishes the frame with its next read.
    std::string big = pattern(300000, 5);
    std::vector<char> stream;
    build(stream, {big});
    FrameSplitter s;
    auto space = s.space();
    std::memcpy(space.data(), stream.data(), 8);
    s.commit(8);
    CHECK(!s.next());
    space = s.space();
    REQUIRE(space.size() >= big.size());
    std::memcpy(space.data(), stream.data() + 8, big.size());
    s.commit(big.size());
    auto frame = s.next();
    REQUIRE(frame);
    CHECK(rest(*frame) == big);
  }

  TEST_CASE("frame splitter: zero-length bodies") {
    std::vector<char> stream;
    std::vector<std::string> bodies{"", "", "x", "", pattern(100, 6), ""};
    auto ends = build(stream, bodies);
    for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{8}, std::size_t{4096}}) {
      CAPTURE(chunk);
      FrameSplitter s;
      auto split = feed(s, stream, chunk);
      CHECK(split.bodies == bodies);
      if (chunk == 1) CHECK(split.ends == ends);
    }

    // An empty body's Reader reads nothing, even with the next frame's bytes after it.
    FrameSplitter s;
    auto space = s.space();
    std::memcpy(space.data(), stream.data(), stream.size());
    s.commit(stream.size());
    auto first = s.next();
    REQUIRE(first);
    CHECK(exhausted(*first));
    CHECK_THROWS_AS(first->get<FrameKind>(), SerializationError);
  }

  TEST_CASE("frame splitter: a frame's Reader reads exactly its body") {
    std::vector<char> stream;
    build(stream, {"abc", "defgh", std::string(1, '\x02')});
    FrameSplitter s;
    auto space = s.space();
    std::memcpy(space.data(), stream.data(), stream.size());
    s.commit(stream.size());
    auto a = s.next();
    auto b = s.next();
    auto c = s.next();
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    CHECK(!s.next());
    // All three stay valid until the next space().
    CHECK(std::string_view(a->take(3), 3) == "abc");
    CHECK_THROWS_AS(a->take(1), SerializationError);
    CHECK_THROWS_AS(b->take(6), SerializationError);
    CHECK(std::string_view(b->take(5), 5) == "defgh");
    CHECK(exhausted(*b));
    CHECK(c->get<FrameKind>() == FrameKind::result);
    CHECK(exhausted(*c));
  }

  TEST_CASE("frame splitter: space() is never empty, even when every byte is used") {
    // A reader that fills all the space it is given, and only then takes frames.
    std::vector<char> stream;
    std::vector<std::string> bodies;
    for (unsigned i = 0; i < 40; ++i) bodies.push_back(pattern(1000 + i * 3001, i));
    build(stream, bodies);
    FrameSplitter s;
    std::size_t pos = 0;
    std::vector<std::string> got;
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
      while (auto frame = s.next()) got.push_back(rest(*frame));
    }
    CHECK(got == bodies);

    // A fresh splitter offers room before anything arrives, and after a frame that
    // exactly filled the first buffer was taken.
    FrameSplitter fresh;
    auto first = fresh.space();
    CHECK(!first.empty());
    std::vector<char> exact;
    build(exact, {pattern(first.size() - 8, 7)});
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
    std::vector<std::string> bodies;
    for (unsigned i = 0; i < 300; ++i) {
      unsigned kind = rnd() % 10;
      std::size_t n = kind < 3 ? 0 : kind < 8 ? rnd() % 200 : rnd() % 150000;
      bodies.push_back(pattern(n, i));
    }
    build(stream, bodies);
    FrameSplitter s;
    auto split = feed(s, stream, [&] {
      unsigned k = rnd() % 4;
      return static_cast<std::size_t>(k == 0  ? 1 + rnd() % 8
                                      : k < 3 ? 1 + rnd() % 5000
                                              : 1 + rnd() % 300000);
    });
    CHECK(split.bodies.size() == bodies.size());
    CHECK(split.bodies == bodies);
  }
}
