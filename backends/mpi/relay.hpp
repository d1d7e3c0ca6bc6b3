// Frames a serving rank sends back to rank 0 for its calls. Internal.
#pragma once

#include <cstdint>
#include <exception>
#include <string_view>
#include <vector>

#include "cfx/detail/bytes.hpp"

namespace cfx::detail::mpi {

/// Appends the result frame of call `id` (channel.hpp): `count` encoded results, the bytes
/// of `results`, and `error` if a call threw. `where` ("MPI rank 1 on host h") is added to
/// the message of an error the rank made itself (a crashed worker, a timeout); an exception a
/// task threw keeps its remote context (type, message, task, worker pid, stack) as it came.
void append_result_frame(std::vector<char>& out, std::uint64_t id, std::uint32_t count,
                         Reader results, std::exception_ptr error, std::string_view task,
                         std::string_view where);

}  // namespace cfx::detail::mpi
