// Big frames through a bulk area (backends/process/bulk_area.hpp): the sender's side writes a
// frame into the area and a bulk frame in its place; the receiver's side reads the frame where
// it lies, checks it as a pipe frame, and frees the area. Both sides here are two BulkAreas
// over one memfd, as the pool and a worker map the worker's shared file.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <cfx/cfx.hpp>
#include <cfx/detail/wire.hpp>

#include "backends/process/bulk_area.hpp"
#include "backends/process/channel.hpp"
#include "support/stub_task.hpp"

namespace bulk_test {

using cfx::SerializationError;
using cfx::detail::BulkArea;
using cfx::detail::Frame;
using cfx::detail::FrameKind;
using cfx::detail::FrameSplitter;
using cfx::detail::kBulkFrameBytes;
using cfx::detail::kKeepBufferBytes;
using cfx::detail::Reader;
using cfx::detail::TaskEntry;
using cfx::detail::Writer;

using TestTask = cfx::test::StubTask;

/// A sparse shared file and the two sides' views of one area in it.
struct Area {
  int fd = ::memfd_create("bulk-test", MFD_CLOEXEC);
  std::atomic<std::uint64_t> word{0};
  BulkArea sender{fd, std::uint64_t{1} << 30, &word};
  BulkArea receiver{fd, std::uint64_t{1} << 30, &word};
  Area() { REQUIRE(::ftruncate(fd, std::int64_t{2} << 30) == 0); }
  ~Area() { ::close(fd); }
};

/// The frames in `stream`, cut as a reader of the pipe cuts them.
std::vector<Frame> frames_of(FrameSplitter& s, const std::vector<char>& stream) {
  auto space = s.space();
  REQUIRE(space.size() >= stream.size());
  std::memcpy(space.data(), stream.data(), stream.size());
  s.commit(stream.size());
  std::vector<Frame> frames;
  while (auto f = s.next()) frames.push_back(*f);
  return frames;
}

TEST_SUITE("process bulk area") {
  TEST_CASE("a big call travels through the area, and a bulk frame through the pipe") {
    Area area;
    TaskEntry entry;
    entry.name = "bulk.task";
    TestTask task;
    task.task = &entry;
    task.count = 1;
    std::string big(kBulkFrameBytes, 'x');
    big[777] = 'y';
    Writer(task.args).put_string(big);

    std::vector<char> pipe{'p'};
    REQUIRE(cfx::detail::write_call_to_area(area.sender, pipe, task, 9));
    CHECK(area.word.load() == 9);  // busy until the receiver is done
    pipe.erase(pipe.begin());
    CHECK(pipe.size() == cfx::detail::kFrameHeaderSize + 8);  // only the bulk frame

    FrameSplitter s(cfx::detail::max_frame_length());
    auto frames = frames_of(s, pipe);
    REQUIRE(frames.size() == 1);
    CHECK(frames[0].kind == FrameKind::bulk);
    CHECK(frames[0].id == 9);
    Frame call = area.receiver.open(frames[0], FrameKind::call);
    CHECK(call.kind == FrameKind::call);
    CHECK(call.id == 9);
    CHECK(call.body.get<std::uint32_t>() == 1);
    CHECK(call.body.get_string() == "bulk.task");
    CHECK(call.body.get_string() == big);
    CHECK(call.body.remaining() == 0);

    // While the area holds a frame, another goes by the pipe.
    std::vector<char> more;
    CHECK_FALSE(cfx::detail::write_call_to_area(area.sender, more, task, 10));
    CHECK(more.empty());
    area.receiver.release();
    CHECK(area.word.load() == 0);
    CHECK(cfx::detail::write_call_to_area(area.sender, more, task, 10));
  }

  TEST_CASE("frames that grow and shrink in one mapping arrive whole") {
    // The sender populates the pages of its mapping once, from the page where the frames so
    // far ended (not page-aligned here) to the end of a bigger one; the mapping grows past
    // 16 MiB on the last.
    Area area;
    TaskEntry entry;
    entry.name = "t";
    std::uint64_t id = 1;
    for (std::size_t n : {kBulkFrameBytes + 100, 3 * kBulkFrameBytes + 4097, kBulkFrameBytes + 1,
                          9 * kBulkFrameBytes + 5, 20 * kBulkFrameBytes + 3}) {
      CAPTURE(n);
      TestTask task;
      task.task = &entry;
      task.count = 1;
      task.args.resize(n);
      for (std::size_t i = 0; i < n; i += 4093) task.args[i] = static_cast<char>(i * 7 + n);
      task.args[n - 1] = 'e';
      std::vector<char> pipe;
      REQUIRE(cfx::detail::write_call_to_area(area.sender, pipe, task, id));
      FrameSplitter s(cfx::detail::max_frame_length());
      Frame call = area.receiver.open(frames_of(s, pipe).at(0), FrameKind::call);
      CHECK(call.id == id);
      call.body.get<std::uint32_t>();
      CHECK(call.body.get_string() == "t");
      auto rest = call.body.remaining();
      REQUIRE(rest == n);
      CHECK(std::memcmp(call.body.take(rest), task.args.data(), n) == 0);
      area.receiver.release();
      ++id;
    }
  }

  TEST_CASE("a result frame moves into the area; small and very big ones stay in the pipe") {
    Area area;
    auto result_frame = [](std::uint64_t id, std::size_t bytes) {
      std::vector<char> out;
      Writer w(out);
      auto at = cfx::detail::begin_frame(w, FrameKind::result, id);
      w.put(std::uint32_t{1});
      w.put(static_cast<std::uint64_t>(bytes));
      std::vector<char> payload(bytes, 'r');
      w.put_bytes(payload.data(), payload.size());
      w.put(std::uint8_t{0});
      cfx::detail::finish_frame(w, at);
      return out;
    };
    SUBCASE("big enough: moved, the frames before it kept") {
      std::vector<char> out{'s', 'k'};  // stands for frames queued before the result
      auto frame = result_frame(5, kBulkFrameBytes);
      out.insert(out.end(), frame.begin(), frame.end());
      cfx::detail::move_frame_to_area(area.sender, out, 2);
      REQUIRE(out.size() == 2 + cfx::detail::kFrameHeaderSize + 8);
      CHECK(out[0] == 's');
      std::vector<char> pipe(out.begin() + 2, out.end());
      FrameSplitter s(cfx::detail::max_frame_length());
      auto frames = frames_of(s, pipe);
      REQUIRE(frames.size() == 1);
      Frame result = area.receiver.open(frames[0], FrameKind::result);
      CHECK(result.id == 5);
      auto reply = cfx::detail::read_reply(result.body);
      CHECK(reply.count == 1);
      CHECK(reply.results.remaining() == kBulkFrameBytes);
      CHECK_FALSE(reply.error);
      area.receiver.release();
    }
    SUBCASE("below the threshold: left in the pipe") {
      auto out = result_frame(5, 1000);
      auto before = out;
      cfx::detail::move_frame_to_area(area.sender, out, 0);
      CHECK(out == before);
      CHECK(area.word.load() == 0);
    }
    SUBCASE("above what an area keeps: left in the pipe") {
      std::vector<char> out(kKeepBufferBytes + 1, 'z');
      cfx::detail::move_frame_to_area(area.sender, out, 0);
      CHECK(out.size() == kKeepBufferBytes + 1);
      CHECK(area.word.load() == 0);
    }
  }

  TEST_CASE("what the area holds is checked as a pipe frame is") {
    Area area;
    TaskEntry entry;
    entry.name = "t";
    TestTask task;
    task.task = &entry;
    task.count = 1;
    task.args.assign(kBulkFrameBytes, 'a');
    std::vector<char> pipe;
    REQUIRE(cfx::detail::write_call_to_area(area.sender, pipe, task, 3));
    FrameSplitter s(cfx::detail::max_frame_length());
    Frame marker = frames_of(s, pipe).at(0);

    SUBCASE("another kind than expected") {
      CHECK_THROWS_AS(area.receiver.open(marker, FrameKind::result), SerializationError);
    }
    SUBCASE("another id than the bulk frame's") {
      Frame other = marker;
      other.id = 4;
      CHECK_THROWS_AS(area.receiver.open(other, FrameKind::call), SerializationError);
    }
    SUBCASE("a length the frame in the area does not have, or beyond memory") {
      for (std::uint64_t n :
           {std::uint64_t{0}, std::uint64_t{16}, std::uint64_t{1} << 20, std::uint64_t{1} << 62}) {
        CAPTURE(n);
        Frame lying = marker;
        lying.body = Reader(reinterpret_cast<const char*>(&n), sizeof n);
        CHECK_THROWS_AS(area.receiver.open(lying, FrameKind::call), SerializationError);
      }
    }
    SUBCASE("a length beyond what an area carries, even with a frame that long in the area") {
      // Mapping it would allocate its pages (shared memory is allocated on any fault): a task
      // that writes such a frame must not make the pool allocate it.
      const std::uint64_t n = kKeepBufferBytes + 1;
      void* head =
          ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, area.fd, std::int64_t{1} << 30);
      REQUIRE(head != MAP_FAILED);
      std::vector<char> bytes;  // the header of a call frame of n bytes
      Writer header(bytes);
      header.put(n - 8);
      header.put(FrameKind::call);
      header.put(std::uint64_t{3});
      std::memcpy(head, bytes.data(), bytes.size());
      ::munmap(head, 4096);
      Frame lying = marker;
      lying.body = Reader(reinterpret_cast<const char*>(&n), sizeof n);
      CHECK_THROWS_AS(area.receiver.open(lying, FrameKind::call), SerializationError);
    }
    SUBCASE("a bulk frame without its length") {
      Frame empty = marker;
      empty.body = Reader(nullptr, 0);
      CHECK_THROWS_AS(area.receiver.open(empty, FrameKind::call), SerializationError);
    }
  }
}

}  // namespace bulk_test
