// What ThreadPoolExecutor::AsioExecutor (<cfx/asio.hpp>) needs from the thread pool, which
// lives in backends/thread/thread_pool.cpp. Internal. Kept free of Asio's headers so that
// the pool's own source need not parse them all.
#pragma once

#include <exception>

namespace boost::asio {
class execution_context;
}

namespace cfx::detail {

class ThreadPoolCore;
class LocalTask;

/// Queues a handler's task; throws as submit does (cfx::Error after shutdown, ...), and then
/// the caller still owns the task.
void enqueue_handler(ThreadPoolCore& pool, LocalTask* task);
/// True on one of the pool's worker threads (not its timer thread).
bool runs_handlers_here(const ThreadPoolCore& pool) noexcept;
/// The pool's Asio execution_context: what query(execution::context) gives, so that services
/// can be attached to the pool. Lives as long as any executor of the pool.
boost::asio::execution_context& asio_context(ThreadPoolCore& pool) noexcept;
/// Reports an exception that escaped an Asio handler run on the pool on stderr (the handler
/// has no future to carry it), as a done-callback's exception is.
void report_handler_exception(std::exception_ptr e) noexcept;

}  // namespace cfx::detail
