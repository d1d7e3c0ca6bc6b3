#include "cfx/executor.hpp"

#include <cstdio>
#include <string>

#include "cfx/errors.hpp"

namespace cfx {

Executor::Executor(bool remote) : link_(std::make_shared<detail::ExecutorLink>()), remote_(remote) {
  link_->executor = this;
}

Executor::~Executor() {
  detach_maps();
}

void Executor::enqueue_remote(detail::RemoteTask*) {
  throw Error("this executor runs tasks in-process only");
}

void Executor::detach_maps() noexcept {
  std::lock_guard lock(link_->mutex);
  link_->executor = nullptr;
}

namespace detail {

std::exception_ptr call_timeout_error(std::chrono::duration<double> timeout,
                                      bool stoppable) noexcept {
  try {
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", timeout.count());
    return std::make_exception_ptr(
        TimeoutError(std::string("call ran longer than its timeout (") + seconds +
                     " s); it goes on in its thread and its outcome will be discarded" +
                     (stoppable ? "; stop was requested on its std::stop_token" : "")));
  } catch (...) {
    return std::current_exception();  // bad_alloc
  }
}

}  // namespace detail

}  // namespace cfx
