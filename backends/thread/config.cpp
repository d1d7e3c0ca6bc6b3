// ThreadPoolOptions from a configuration: the keys beside the struct they fill.
#include "backends/thread/config.hpp"

#include <utility>
#include <vector>

#include "cfx/thread_pool.hpp"

namespace cfx::detail {
namespace {

/// A registered task run on the pool's own thread: the arguments are decoded and the result
/// dropped, exactly as a worker process would run it.
std::function<void()> local_initializer(TaskCall call) {
  return [call = std::move(call)] {
    Reader args(call.args.data(), call.args.size());
    std::vector<char> ignored;
    Writer result(ignored);
    call.task->run(*call.task, args, result);
  };
}

std::unique_ptr<Executor> make_thread_pool(const ConfigReader& config) {
  ThreadPoolOptions o;
  if (config.has("max_workers")) o.max_workers = config.count("max_workers");
  if (config.has("thread_name_prefix")) o.thread_name_prefix = config.string("thread_name_prefix");
  if (config.has("initializer")) o.initializer = local_initializer(config.task_call("initializer"));
  return std::make_unique<ThreadPoolExecutor>(std::move(o));
}

}  // namespace

const BackendConfig& thread_backend_config() {
  static const BackendConfig config{
      "thread", {"thread_name_prefix", "initializer"}, &make_thread_pool};
  return config;
}

}  // namespace cfx::detail
