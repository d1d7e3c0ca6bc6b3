// API section 7 over every backend: Future::interrupt() and CallOptions{.timeout}. What
// differs by backend (a running process task is killed, a running thread task is asked to
// stop) is branched on Backend::in_process. tests/faults and tests/thread/control.cpp test
// each backend's mechanism in depth.
#include "backends.hpp"

using namespace conf;

TEST_CASE_TEMPLATE("interrupt: a pending future is cancelled, as by cancel()", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  Gate gate;
  auto running = occupy(*ex, 1, gate);
  auto pending = ex->submit(mul, 6, 7);
  CHECK(pending.interrupt());
  CHECK(pending.cancelled());
  CHECK_THROWS_AS(pending.result(), cfx::CancelledError);
  CHECK(pending.interrupt());  // cancelled: as cancel(), true again
  gate.open();
  CHECK(running[0].result(kLong) == 0);
}

TEST_CASE_TEMPLATE("interrupt: a done future stays done and interrupt() is false", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  auto f = ex->submit(mul, 6, 7);
  CHECK(f.result(kLong) == 42);
  CHECK_FALSE(f.interrupt());
  CHECK(f.result() == 42);
}

TEST_CASE_TEMPLATE("interrupt: a running task", Backend, CFX_BACKENDS) {
  auto ex = Backend::make(1);
  Gate gate;
  auto running = occupy(*ex, 1, gate)[0];
  REQUIRE(running.running());
  if constexpr (Backend::in_process) {
    // A thread cannot be killed: its stop token is requested (this task does not take one
    // and finishes), and interrupt() says the future did not end.
    CHECK_FALSE(running.interrupt());
    gate.open();
    CHECK(running.result(kLong) == 0);
  } else {
    // Its worker is killed and replaced; the future ends cancelled and the pool goes on.
    CHECK(running.interrupt());
    CHECK(running.cancelled());
    CHECK_THROWS_AS(running.result(kLong), cfx::CancelledError);
    CHECK(ex->submit(mul, 6, 7).result(kLong) == 42);
  }
}

TEST_CASE_TEMPLATE("CallOptions: a call past its timeout ends with TimeoutError", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  Gate gate;
  auto late = ex->submit(cfx::CallOptions{.timeout = 200ms}, value_after_gate, gate.path(), 1);
  CHECK_THROWS_AS(late.result(kLong), cfx::TimeoutError);
  gate.open();  // the thread backend's task is still blocked there
  CHECK(ex->submit(mul, 6, 7).result(kLong) == 42);
}

TEST_CASE_TEMPLATE("CallOptions: a call within its timeout returns its value", Backend,
                   CFX_BACKENDS) {
  auto ex = Backend::make(1);
  auto f = ex->submit(cfx::CallOptions{.timeout = 30s}, mul, 6, 7);
  CHECK(f.result(kLong) == 42);
  auto unbounded = ex->submit(cfx::CallOptions{}, mul, 2, 3);
  CHECK(unbounded.result(kLong) == 6);
}
