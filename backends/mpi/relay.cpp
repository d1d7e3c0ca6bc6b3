#include "backends/mpi/relay.hpp"

#include <unistd.h>

#include <string>

#include "backends/process/channel.hpp"
#include "cfx/errors.hpp"
#include "lib/demangle.hpp"

namespace cfx::detail::mpi {
namespace {

/// The same fields encode_current_exception writes (wire-format.md, "Strings and
/// exceptions"), taken from an exception that already came back from a worker: its nested
/// RemoteError holds what the worker wrote, which is sent on unchanged.
void encode_exception(Writer& w, std::exception_ptr error, std::string_view task,
                      std::string_view where) {
  std::string type = "unknown", message = "exception not derived from std::exception";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    try {
      std::rethrow_if_nested(e);
    } catch (const RemoteError& context) {
      if (!context.task().empty()) {
        w.put_string(context.type_name());
        w.put_string(context.message());
        w.put_string(context.task());
        w.put(static_cast<std::int32_t>(context.pid()));
        w.put_string(context.stack_trace());
        return;
      }
    } catch (...) {
    }
    type = demangle(typeid(e));
    message = std::string(e.what()) + " (" + std::string(where) + ")";
  } catch (...) {
  }
  w.put_string(type);
  w.put_string(message);
  w.put_string(task);
  w.put(static_cast<std::int32_t>(::getpid()));
  w.put_string("");
}

}  // namespace

void append_result_frame(std::vector<char>& out, std::uint64_t id, std::uint32_t count,
                         Reader results, std::exception_ptr error, std::string_view task,
                         std::string_view where) {
  Writer w(out);
  auto at = begin_frame(w, FrameKind::result, id);
  w.put(count);
  auto n = results.remaining();
  w.put(static_cast<std::uint64_t>(n));
  w.put_bytes(results.take(n), n);
  w.put(static_cast<std::uint8_t>(error ? 1 : 0));
  if (error) encode_exception(w, error, task, where);
  finish_frame(w, at);
}

}  // namespace cfx::detail::mpi
