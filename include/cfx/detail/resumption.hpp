// Where a coroutine awaiting a Future resumes (docs/async.md, "Where a coroutine resumes").
// Internal.
//
// A plain `co_await f` resumes in the thread that completes f, unless that thread delivers
// the results of a whole pool (a process pool's I/O thread, a thread pool's timer thread):
// user code there would hold back every other result, so the coroutine resumes on cfx's
// resumer threads instead. cfx::async_wait applies the same rule to Asio handlers.
#pragma once

#include <coroutine>

namespace cfx::detail {

/// Marks the calling thread as one that delivers the results of a whole pool.
void mark_delivery_thread() noexcept;
/// Marks the calling thread as one that delivers (true) or not (false); returns what it was.
bool set_delivery_thread(bool delivering) noexcept;
/// True on a thread marked by mark_delivery_thread().
bool on_delivery_thread() noexcept;
/// Resumes h on one of cfx's resumer threads ("cfx_resume_<i>", started on demand, up to
/// the number of usable cores, never more than one while none is busy). If no thread can be
/// started or the queue cannot grow, h resumes here.
void resume_on_resumer(std::coroutine_handle<> h) noexcept;

}  // namespace cfx::detail
