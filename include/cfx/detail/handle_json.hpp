// How a SharedBlock travels inside an encoded value (to_json / from_json, found by ADL):
// as [slot, dev, ino, bytes], its descriptor going beside the bytes (handles.hpp). Objects
// built on a block (SharedArray, Lock, Queue, ...) convert through these. Internal.
#pragma once

#include <cstddef>

#include <nlohmann/json_fwd.hpp>

#include "cfx/detail/shared_block.hpp"

namespace cfx::detail {

/// Throws SerializationError outside a task's arguments or results (no capture active).
void to_json(nlohmann::json& j, const SharedBlock& block);
/// Maps the block (or finds this process's mapping of it); throws SerializationError if its
/// descriptor did not arrive or `j` is not a block's encoding.
void from_json(const nlohmann::json& j, SharedBlock& block);

/// An object at `offset` of `block` (a synchronisation object of cfx/sync.hpp) travels as
/// [block, offset].
void to_json_at(nlohmann::json& j, const SharedBlock& block, std::size_t offset);
/// The block of such an encoding (empty for an empty handle) and its offset.
SharedBlock from_json_at(const nlohmann::json& j, std::size_t& offset);

/// Blocks this process has mapped from a descriptor that arrived (not those it created):
/// a worker's count stays put when a call reuses a block it keeps (tests, benchmarks).
std::uint64_t blocks_mapped() noexcept;

}  // namespace cfx::detail
