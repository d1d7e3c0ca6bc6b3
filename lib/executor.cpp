#include "cfx/executor.hpp"

namespace cfx {

Executor::Executor() : link_(std::make_shared<detail::ExecutorLink>()) {
  link_->executor = this;
}

Executor::~Executor() { detach_maps(); }

void Executor::detach_maps() noexcept {
  std::lock_guard lock(link_->mutex);
  link_->executor = nullptr;
}

}  // namespace cfx
