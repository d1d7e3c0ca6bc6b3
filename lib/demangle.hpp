// Readable type names for error messages.
#pragma once

#include <string>
#include <typeinfo>

namespace cfx::detail {

/// Demangled name of a type_info ("std::invalid_argument").
std::string demangle(const std::type_info& type);

/// Demangled dynamic type of an object.
template <class T>
std::string demangled_type_name(const T& object) {
  return demangle(typeid(object));
}

}  // namespace cfx::detail
