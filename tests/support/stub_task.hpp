// A RemoteTask that only carries its fields, which is all the process channel reads: for the
// channel's unit tests (tests/process/channel.cpp, bulk_area.cpp) and the frame fuzzer's seed
// calls (fuzz/decode_frames.hpp).
#pragma once

#include <cstdint>
#include <exception>
#include <memory>

#include <cfx/detail/remote_task.hpp>

namespace cfx::test {

class StubTask final : public cfx::detail::RemoteTask {
 public:
  bool attach(std::shared_ptr<cfx::detail::CallSlots>, std::uint64_t) noexcept override {
    return true;
  }
  void detach() noexcept override {}
  void complete(cfx::detail::Reader&, std::uint32_t, std::exception_ptr) noexcept override {}
  void fail(std::exception_ptr) noexcept override {}
  void cancel() noexcept override {}
  void drop() noexcept override {}
};

}  // namespace cfx::test
