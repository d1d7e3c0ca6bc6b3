// Per-thread scratch buffers for the task-argument codec (wire.hpp), for the toolkit objects
// that store encoded values in shared memory (Queue, SharedDict). Internal.
//
// Reused, so that putting or getting a raw value allocates nothing once a thread is warm.
#pragma once

#include <vector>

#include "cfx/detail/wire.hpp"

namespace cfx::detail {

/// This thread's empty buffer for `Purpose` (one per purpose, so that a decode may run while
/// an encoded value is still held).
template <class Purpose>
std::vector<char>& scratch_buffer() {
  thread_local std::vector<char> buffer;
  buffer.clear();
  return buffer;
}
struct EncodeScratch;
struct DecodeScratch;

/// `value` encoded (encode_value) into this thread's EncodeScratch buffer.
template <class T>
const std::vector<char>& encode_to_scratch(const T& value) {
  auto& buffer = scratch_buffer<EncodeScratch>();
  Writer w(buffer);
  encode_value(w, value);
  return buffer;
}

/// The value encode_value wrote into `bytes`; SerializationError if they do not decode.
template <class T>
T decode_bytes(const char* bytes, std::size_t n) {
  Reader r(bytes, n);
  return decode_value<T>(r);
}

}  // namespace cfx::detail
