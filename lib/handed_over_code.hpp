// User code that a thread handed over instead of running it (UserCodeSink, shared_state.hpp):
// the done-callbacks of futures a waiting thread completed in a pool's place, kept for the
// pool's own thread to run. Internal.
#pragma once

#include <mutex>
#include <vector>

#include "cfx/detail/shared_state.hpp"

namespace cfx::detail {

class HandedOverCode {
 public:
  /// Keeps the `callbacks` of `state` for run(). Out of memory, runs them here rather than
  /// lose them, and returns false.
  bool keep(StateBase& state, CallbackNode* callbacks) noexcept {
    try {
      std::lock_guard lock(mutex_);
      code_.push_back({&state, callbacks});
      return true;
    } catch (...) {
      state.run_user_code(callbacks);
      return false;
    }
  }

  /// Runs what was handed over, in the order it came; true if there was any.
  bool run() {
    std::vector<Entry> code;
    {
      std::lock_guard lock(mutex_);
      code.swap(code_);
    }
    for (auto& c : code) c.state->run_user_code(c.callbacks);
    return !code.empty();
  }

  bool empty() const {
    std::lock_guard lock(mutex_);
    return code_.empty();
  }

 private:
  struct Entry {
    StateBase* state;
    CallbackNode* callbacks;
  };
  mutable std::mutex mutex_;
  std::vector<Entry> code_;
};

}  // namespace cfx::detail
