// Encoding of task arguments, results and exceptions for the process backend. Internal.
//
// Two encodings, chosen at compile time from the types:
//  - raw: arithmetic and enum values, and std::pair / std::tuple / std::array of them, are
//    copied as bytes (a chunk of 1000 integers is one memcpy-sized loop, no allocation);
//  - msgpack: anything else goes through nlohmann::json (to_json/from_json found by ADL)
//    and its MessagePack encoding (docs/wire-format.md says why MessagePack).
// Both ends compile the same templates for the same types, so no tag is needed per value.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cfx/detail/bytes.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {

// ---- raw encoding -------------------------------------------------------------------

template <class T>
struct is_raw : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T>> {};
template <class A, class B>
struct is_raw<std::pair<A, B>> : std::bool_constant<is_raw<A>::value && is_raw<B>::value> {};
template <class... Ts>
struct is_raw<std::tuple<Ts...>> : std::bool_constant<(is_raw<Ts>::value && ...)> {};
template <class T, std::size_t N>
struct is_raw<std::array<T, N>> : is_raw<T> {};
template <class T>
inline constexpr bool is_raw_v = is_raw<std::remove_cv_t<T>>::value;

template <class T>
void raw_put(Writer& w, const T& v) {
  if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
    w.put(v);
  } else if constexpr (requires { std::tuple_size<T>::value; }) {
    std::apply([&](const auto&... e) { (raw_put(w, e), ...); }, v);
  }
}

template <class T>
void raw_get(Reader& r, T& v) {
  if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
    v = r.get<T>();
  } else if constexpr (requires { std::tuple_size<T>::value; }) {
    std::apply([&](auto&... e) { (raw_get(r, e), ...); }, v);
  }
}

// ---- general (MessagePack) encoding ---------------------------------------------------

template <class T>
inline constexpr bool is_encodable_v =
    is_raw_v<T> || std::is_constructible_v<nlohmann::json, const T&>;

template <class T>
inline constexpr bool is_decodable_v = is_raw_v<T> || requires(const nlohmann::json& j) {
  j.template get<T>();
};

std::string demangle_type(const std::type_info& t);

/// A readable name for T in error messages.
template <class T>
std::string type_name() {
  return demangle_type(typeid(T));
}

/// The 32-bit length prefix of an encoded value of `bytes` bytes: a longer one is refused
/// with SerializationError rather than cut short.
template <class T>
std::uint32_t checked_length(std::size_t bytes) {
  if (bytes > UINT32_MAX)
    throw SerializationError("a value of type " + type_name<T>() + " encodes to " +
                             std::to_string(bytes) +
                             " bytes, more than the 4 GiB (2^32 - 1 bytes) a value may take");
  return static_cast<std::uint32_t>(bytes);
}

/// Encodes one value; throws SerializationError (naming the type) if to_json throws.
template <class T>
void encode_value(Writer& w, const T& v) {
  if constexpr (is_raw_v<T>) {
    raw_put(w, v);
  } else {
    try {
      nlohmann::json j = v;
      auto at = w.size();
      w.put(std::uint32_t{0});
      nlohmann::json::to_msgpack(j, w.buffer());
      auto n = checked_length<T>(w.size() - at - sizeof(std::uint32_t));
      std::memcpy(w.buffer().data() + at, &n, sizeof(n));
    } catch (const std::exception& e) {
      throw SerializationError("cannot encode a value of type " + type_name<T>() + ": " + e.what());
    } catch (...) {
      throw SerializationError("cannot encode a value of type " + type_name<T>() +
                               ": to_json threw an exception not derived from std::exception");
    }
  }
}

/// Decodes one value written by encode_value; throws SerializationError naming the type.
/// T need not be default-constructible when its from_json returns it (adl_serializer).
template <class T>
T decode_value(Reader& r) {
  if constexpr (is_raw_v<T>) {
    T v;
    raw_get(r, v);
    return v;
  } else {
    try {
      auto n = r.get<std::uint32_t>();
      const char* p = r.take(n);
      return nlohmann::json::from_msgpack(p, p + n).template get<T>();
    } catch (const std::exception& e) {
      throw SerializationError("cannot decode a value of type " + type_name<T>() + ": " + e.what());
    } catch (...) {
      throw SerializationError("cannot decode a value of type " + type_name<T>() +
                               ": from_json threw an exception not derived from std::exception");
    }
  }
}

/// As above, into an existing value.
template <class T>
void decode_value(Reader& r, T& v) {
  v = decode_value<T>(r);
}

// ---- exceptions -----------------------------------------------------------------------

/// Adds a CFX_EXCEPTION type to the table that rebuilds remote exceptions by type.
void register_exception(const std::type_info& type,
                        std::exception_ptr (*make)(const std::string&, std::exception_ptr));

}  // namespace cfx::detail
