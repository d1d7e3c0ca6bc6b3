#include "cfx/detail/shared_block.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "cfx/errors.hpp"

namespace cfx::detail {
namespace {

[[noreturn]] void fail(const char* what, std::size_t bytes, int error) {
  throw Error(std::string("cfx: shared memory of ") + std::to_string(bytes) + " bytes: " + what +
              " failed: " + std::strerror(error));
}

std::atomic<std::uint64_t> released{0};

}  // namespace

std::uint64_t blocks_released() noexcept {
  return released.load(std::memory_order_relaxed);
}

SharedBlock::Mapping::~Mapping() {
  if (data) ::munmap(data, bytes);
  if (fd >= 0) ::close(fd);
  released.fetch_add(1, std::memory_order_relaxed);
}

SharedBlock::SharedBlock(std::size_t bytes) {
  if (bytes == 0) bytes = 1;
  int fd = ::memfd_create("cfx-shared", MFD_CLOEXEC);
  if (fd < 0) fail("memfd_create", bytes, errno);
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    int error = errno;
    ::close(fd);
    fail("ftruncate", bytes, error);
  }
  *this = adopt(fd, bytes);
}

SharedBlock SharedBlock::adopt(int fd, std::size_t bytes) {
  auto mapping = std::make_shared<Mapping>();
  mapping->fd = fd;  // owned from here, closed by ~Mapping if the map fails
  mapping->key = handle_key(fd);
  void* data = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) fail("mmap", bytes, errno);
  mapping->data = data;
  mapping->bytes = bytes;
  SharedBlock block;
  block.mapping_ = std::move(mapping);
  return block;
}

}  // namespace cfx::detail
