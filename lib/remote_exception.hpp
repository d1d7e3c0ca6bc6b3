// Exceptions across a process boundary. Internal, for out-of-process backends.
#pragma once

#include <exception>
#include <string_view>

#include "cfx/detail/bytes.hpp"

namespace cfx::detail {

/// Writes the exception being handled (call inside a catch block) with its remote context:
/// type name, message, task, pid, throw-site stack.
void encode_current_exception(Writer& w, std::string_view task);
/// Rebuilds an exception written by encode_current_exception: the same standard or
/// registered type where possible, else RemoteError; the context is nested in it.
std::exception_ptr decode_exception(Reader& r);

}  // namespace cfx::detail
