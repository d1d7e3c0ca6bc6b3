// The big byte buffers of bytes.hpp: the spare one (take_spare_bytes, give_spare_bytes), and
// appending to a big one (append_bulk; out of line, as it is rare and large).
#include <algorithm>
#include <mutex>
#include <vector>

#include "cfx/detail/bytes.hpp"

namespace cfx::detail {
namespace {

// One buffer: enough for a stream of big calls one after the other (each call's arguments
// are given back when its result arrives), and no more memory kept than one payload.
// Never destroyed: a pool's thread may give a buffer back while the program exits.
std::mutex& spare_mutex = *new std::mutex;
std::vector<char>& spare = *new std::vector<char>;

}  // namespace

std::vector<char> take_spare_bytes(std::size_t n) {
  std::lock_guard lock(spare_mutex);
  if (spare.capacity() < n) return {};
  std::vector<char> taken;
  taken.swap(spare);
  taken.clear();
  return taken;
}

void give_spare_bytes(std::vector<char>&& buffer) noexcept {
  std::vector<char> freed;  // freed outside the lock
  if (buffer.capacity() < kBulkBytes || buffer.capacity() > kKeepBufferBytes) {
    freed.swap(buffer);
    return;
  }
  std::lock_guard lock(spare_mutex);
  if (buffer.capacity() > spare.capacity()) spare.swap(buffer);
  freed.swap(buffer);
}

void append_bulk(std::vector<char>& out, const void* data, std::size_t n) {
  std::size_t size = out.size() + n;
  if (size > out.capacity())
    reserve_bulk(out, std::max(size + kBulkSlack, 2 * out.capacity()), size);
  const char* bytes = static_cast<const char*>(data);
  out.insert(out.end(), bytes, bytes + n);
}

}  // namespace cfx::detail
