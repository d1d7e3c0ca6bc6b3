#include "cfx/executor.hpp"

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

}  // namespace cfx
