// What rank 0 and the serving ranks say to each other. Internal; docs/mpi.md, "Protocol".
//
// Each MPI message is a byte string with one of these tags. Calls and results reuse the
// process channel's frames (channel.hpp, docs/wire-format.md) unchanged, several to a message:
//   open      0 -> r   [u64 workers_per_rank][u64 max_tasks_per_child][u64 max_retries]
//                      [f64 task_timeout in seconds, 0: none]
//   ready     r -> 0   [u64 slots][str host][i64 pid]
//   calls     0 -> r   { [f64 this call's timeout in seconds, 0: none][call frame] }...
//   results   r -> 0   { [result frame] }...      one per call, in completion order
//   interrupt 0 -> r   [u64 call id]              Future::interrupt() of a call sent there
//   close     0 -> r   (empty)                    the executor shut down: stop its local pool
//   closed    r -> 0   (empty)                    ... done; the rank waits for the next open
//   exit      0 -> r   (empty)                    rank 0's program ends: finalize and exit
// Messages between two ranks arrive in the order sent (MPI's non-overtaking rule, as every
// receive takes any tag from its source), so no message needs a sequence number: a close is
// sent only once every call has its result.
#pragma once

namespace cfx::detail::mpi {

enum Tag : int {
  kOpen = 1,
  kReady = 2,
  kCalls = 3,
  kResults = 4,
  kInterrupt = 5,
  kClose = 6,
  kClosed = 7,
  kExit = 8,
};

/// Bytes one MPI message may hold: MPI counts are ints (Open MPI 4.1 has no large-count
/// calls). Batches of frames stay below kBatchBytes; a single larger call fails its future.
inline constexpr long long kMaxMessageBytes = 0x7fffffff;
inline constexpr std::size_t kBatchBytes = std::size_t{64} << 20;

}  // namespace cfx::detail::mpi
