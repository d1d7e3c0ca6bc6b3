// The public ProcessPoolExecutor: a handle on the ProcessPoolCore (pool.hpp) that does the
// work on its I/O thread.
#include <signal.h>

#include "backends/process/pool.hpp"
#include "backends/process/worker.hpp"
#include "cfx/errors.hpp"
#include "cfx/process_pool.hpp"

namespace cfx {

ProcessPoolExecutor::ProcessPoolExecutor(ProcessPoolOptions options) : Executor(true) {
  detail::refuse_pool_in_worker();
  core_ = std::make_shared<detail::ProcessPoolCore>(std::move(options));
  core_->start();
}

ProcessPoolExecutor::~ProcessPoolExecutor() {
  detach_maps();
  if (core_->on_io_thread()) {
    core_->shutdown(false, false);
    core_->detach_if_on_io_thread();
    return;
  }
  core_->shutdown(true, false);
}

void ProcessPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  core_->shutdown(wait, cancel_futures);
}

std::size_t ProcessPoolExecutor::max_workers() const {
  return core_->max_workers();
}

std::vector<int> ProcessPoolExecutor::worker_pids() const {
  return core_->worker_pids();
}

void ProcessPoolExecutor::terminate_workers() {
  core_->stop_workers(SIGTERM);
}

void ProcessPoolExecutor::kill_workers() {
  core_->stop_workers(SIGKILL);
}

void ProcessPoolExecutor::enqueue(detail::LocalTask*) {
  throw Error("ProcessPoolExecutor runs only registered tasks");
}

void ProcessPoolExecutor::enqueue_remote(detail::RemoteTask* task) {
  core_->enqueue(task);
}

}  // namespace cfx
