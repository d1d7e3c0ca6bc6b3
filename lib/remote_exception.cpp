// Exceptions across the process boundary: written by the worker as (type name, message,
// context), rebuilt in the parent as the same type where it is standard, a cfx error, or
// registered with CFX_EXCEPTION, otherwise as cfx::RemoteError. The context (task, pid,
// stack) is nested in it as a RemoteError.
#include <cxxabi.h>
#include <unistd.h>

#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "remote_exception.hpp"

#include "cfx/errors.hpp"
#include "cfx/task.hpp"
#include "demangle.hpp"
#include "stack_trace.hpp"

namespace cfx::detail {
namespace {

using MakeFn = std::exception_ptr (*)(const std::string&, std::exception_ptr);

struct ExceptionTable {
  std::mutex mutex;
  std::unordered_map<std::string, MakeFn> by_name;

  ExceptionTable() {
    add<std::logic_error>();
    add<std::invalid_argument>();
    add<std::domain_error>();
    add<std::length_error>();
    add<std::out_of_range>();
    add<std::runtime_error>();
    add<std::range_error>();
    add<std::overflow_error>();
    add<std::underflow_error>();
    add<Error>();
    add<CancelledError>();
    add<TimeoutError>();
    add<InvalidStateError>();
    add<ConfigError>();
    add<SerializationError>();
    add<BrokenExecutor>();
    add<BrokenThreadPool>();
    add<BrokenProcessPool>();
    add<WorkerCrashed>();
    by_name[demangle(typeid(std::bad_alloc))] = [](const std::string&, std::exception_ptr ctx) {
      return make_nested_from(ctx, [] { std::throw_with_nested(std::bad_alloc()); });
    };
  }

  template <class E>
  void add() {
    by_name[demangle(typeid(E))] = &make_nested<E>;
  }

  template <class Throw>
  static std::exception_ptr make_nested_from(std::exception_ptr ctx, Throw t) {
    try {
      std::rethrow_exception(ctx);
    } catch (...) {
      try {
        t();
      } catch (...) {
        return std::current_exception();
      }
    }
    return nullptr;
  }
};

ExceptionTable& table() {
  static ExceptionTable& t = *new ExceptionTable;  // never destroyed: see task_registry.cpp
  return t;
}

// The type and message of the exception being handled.
std::pair<std::string, std::string> describe_current() {
  try {
    throw;
  } catch (const std::exception& e) {
    std::string message;
    try {
      const char* what = e.what();
      message = what ? what : "(what() returned a null pointer)";
    } catch (...) {
      message = "(what() threw)";
    }
    return {demangle(typeid(e)), std::move(message)};
  } catch (...) {
    const std::type_info* t = abi::__cxa_current_exception_type();
    return {t ? demangle(*t) : std::string("unknown"), "exception not derived from std::exception"};
  }
}

}  // namespace

std::string demangle_type(const std::type_info& t) {
  return demangle(t);
}

void register_exception(const std::type_info& type, MakeFn make) {
  auto& t = table();
  std::lock_guard lock(t.mutex);
  t.by_name[demangle(type)] = make;
}

void encode_current_exception(Writer& w, std::string_view task) {
  auto [type, message] = describe_current();
  w.put_string(type);
  w.put_string(message);
  w.put_string(task);
  w.put(static_cast<std::int32_t>(::getpid()));
  w.put_string(last_throw_stack_trace());
}

std::exception_ptr decode_exception(Reader& r) {
  std::string type(r.get_string());
  std::string message(r.get_string());
  std::string task(r.get_string());
  int pid = r.get<std::int32_t>();
  std::string trace(r.get_string());
  auto context = std::make_exception_ptr(RemoteError(type, message, task, pid, trace));
  MakeFn make = nullptr;
  {
    auto& t = table();
    std::lock_guard lock(t.mutex);
    if (auto it = t.by_name.find(type); it != t.by_name.end()) make = it->second;
  }
  if (make) return make(message, context);
  return ExceptionTable::make_nested_from(
      context, [&] { std::throw_with_nested(RemoteError(type, message)); });
}

}  // namespace cfx::detail
