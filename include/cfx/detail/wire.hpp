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

#include "cfx/errors.hpp"

namespace cfx::detail {

/// Appends little-endian fixed-size values and length-prefixed strings to a byte buffer.
class Writer {
 public:
  explicit Writer(std::vector<char>& out) : out_(out) {}
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    auto at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &v, sizeof(T));
  }
  void put_bytes(const void* data, std::size_t n) {
    auto at = out_.size();
    out_.resize(at + n);
    if (n) std::memcpy(out_.data() + at, data, n);
  }
  void put_string(std::string_view s) {
    put(static_cast<std::uint32_t>(s.size()));
    put_bytes(s.data(), s.size());
  }
  std::size_t size() const { return out_.size(); }
  std::vector<char>& buffer() { return out_; }

 private:
  std::vector<char>& out_;
};

/// Reads what Writer wrote; throws SerializationError on truncated input.
class Reader {
 public:
  Reader(const char* data, std::size_t size) : p_(data), end_(data + size) {}
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  const char* take(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n)
      throw SerializationError("truncated message from the other process");
    auto* at = p_;
    p_ += n;
    return at;
  }
  std::string_view get_string() {
    auto n = get<std::uint32_t>();
    return {take(n), n};
  }
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }

 private:
  const char* p_;
  const char* end_;
};

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
      auto n = static_cast<std::uint32_t>(w.size() - at - sizeof(std::uint32_t));
      std::memcpy(w.buffer().data() + at, &n, sizeof(n));
    } catch (const std::exception& e) {
      throw SerializationError("cannot encode a value of type " + type_name<T>() + ": " + e.what());
    }
  }
}

/// Decodes one value written by encode_value; throws SerializationError naming the type.
template <class T>
void decode_value(Reader& r, T& v) {
  if constexpr (is_raw_v<T>) {
    raw_get(r, v);
  } else {
    try {
      auto n = r.get<std::uint32_t>();
      const char* p = r.take(n);
      auto j = nlohmann::json::from_msgpack(p, p + n);
      v = j.template get<T>();
    } catch (const std::exception& e) {
      throw SerializationError("cannot decode a value of type " + type_name<T>() + ": " + e.what());
    }
  }
}

// ---- exceptions -----------------------------------------------------------------------

/// Writes the exception being handled (call inside a catch block) with its remote context.
void encode_current_exception(Writer& w, std::string_view task);
/// Rebuilds an exception written by encode_current_exception: the same standard or
/// registered type where possible, else RemoteError; the context is nested in it.
std::exception_ptr decode_exception(Reader& r);

/// Adds a CFX_EXCEPTION type to the table decode_exception consults.
void register_exception(const std::type_info& type,
                        std::exception_ptr (*make)(const std::string&, std::exception_ptr));

}  // namespace cfx::detail
