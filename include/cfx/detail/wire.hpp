// Encoding of task arguments, results and exceptions for the process backend. Internal.
//
// Two encodings, chosen at compile time from the types:
//  - direct: arithmetic and enum values are copied as bytes; std::vector and std::string
//    of numbers as a u64 count and one memcpy; pair, tuple, array and optional of direct
//    values, nested to any depth, member by member (no allocation but the containers');
//  - msgpack: anything else goes through nlohmann::json (to_json/from_json found by ADL)
//    and its MessagePack encoding (docs/wire-format.md says why MessagePack).
// Both ends compile the same templates for the same types, so no tag is needed per value.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cfx/detail/bytes.hpp"
#include "cfx/detail/wire_traits.hpp"
#include "cfx/errors.hpp"

namespace cfx::detail {

/// The fewest bytes a direct value of type T encodes to.
template <class T>
constexpr std::size_t min_encoded_bytes() {
  if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T> || is_bitwise_v<T>)
    return sizeof(T);
  else if constexpr (is_sequence<T>::value)
    return sizeof(std::uint64_t);
  else if constexpr (is_optional<T>::value)
    return 1;
  else
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (std::size_t{0} + ... + min_encoded_bytes<std::tuple_element_t<I, T>>());
    }
  (std::make_index_sequence<std::tuple_size_v<T>>{});
}

/// Elements that encode to at least one byte: a count of them is bounded by the input.
template <class T>
struct has_bytes : std::bool_constant<(min_encoded_bytes<T>() > 0)> {};

/// Types encoded without nlohmann::json: raw values; std::vector and std::basic_string of
/// direct elements (u64 element count, then the elements: one memcpy when bitwise);
/// std::optional of a direct value (u8 engaged, then the value); pair, tuple and array of
/// direct members.
template <class T>
struct is_direct : is_raw<T> {};
template <class A, class B>
struct is_direct<std::pair<A, B>> : std::bool_constant<is_direct<A>::value && is_direct<B>::value> {
};
template <class... Ts>
struct is_direct<std::tuple<Ts...>> : std::bool_constant<(is_direct<Ts>::value && ...)> {};
template <class T, std::size_t N>
struct is_direct<std::array<T, N>> : is_direct<T> {};
template <class T, class A>  // not of empty tuples: their count could not be checked
struct is_direct<std::vector<T, A>> : std::conjunction<is_direct<T>, has_bytes<T>> {};
template <class C, class Tr, class A>
struct is_direct<std::basic_string<C, Tr, A>> : is_bitwise<C> {};
template <class T>
struct is_direct<std::optional<T>> : is_direct<T> {};
template <class T>
inline constexpr bool is_direct_v = is_direct<std::remove_cv_t<T>>::value;

template <class T>
void direct_put(Writer& w, const T& v) {
  if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
    w.put(v);
  } else if constexpr (is_bitwise_v<T>) {  // std::array of numbers
    w.put_bytes(v.data(), sizeof(T));
  } else if constexpr (is_sequence<T>::value) {
    using E = typename T::value_type;
    w.put(std::uint64_t{v.size()});  // 64 bits: no length is ever cut short
    if constexpr (is_bitwise_v<E> && !is_bit_vector<T>::value)
      w.put_bytes(v.data(), v.size() * sizeof(E));
    else
      for (const auto& e : v) direct_put<E>(w, e);
  } else if constexpr (is_optional<T>::value) {
    w.put(static_cast<std::uint8_t>(v.has_value()));
    if (v) direct_put(w, *v);
  } else {  // pair, tuple, array of non-bitwise members
    std::apply([&](const auto&... e) { (direct_put(w, e), ...); }, v);
  }
}

/// A random-access iterator over `E`s stored back to back at any address, each read with a
/// memcpy: a vector assigned from it is written once, with no alignment demanded of the input.
template <class E>
class UnalignedElements {
 public:
  using iterator_category = std::random_access_iterator_tag;
  using value_type = E;
  using difference_type = std::ptrdiff_t;
  using pointer = const E*;
  using reference = E;

  explicit UnalignedElements(const char* at) : at_(at) {}
  E operator*() const {
    E e;
    std::memcpy(&e, at_, sizeof(E));
    return e;
  }
  UnalignedElements& operator++() { return *this += 1; }
  UnalignedElements& operator--() { return *this += -1; }
  UnalignedElements operator++(int) {
    auto was = *this;
    ++*this;
    return was;
  }
  UnalignedElements& operator+=(difference_type k) {
    at_ += k * static_cast<difference_type>(sizeof(E));
    return *this;
  }
  friend difference_type operator-(UnalignedElements a, UnalignedElements b) {
    return (a.at_ - b.at_) / static_cast<difference_type>(sizeof(E));
  }
  friend bool operator==(UnalignedElements a, UnalignedElements b) { return a.at_ == b.at_; }

 private:
  const char* at_;
};

/// Makes `v` the `n` trivially copyable elements encoded at `p`, writing each byte of `v` once:
/// resize-then-memcpy wrote every byte twice, one more pass over a 64 MiB value. From a
/// pointer range (p aligned for E) the copy is a memmove; from UnalignedElements it is a loop
/// of loads as fast as memmove for elements of 4 bytes and more, measured; 2-byte elements at
/// an odd address take the two passes, which are faster than that loop for them.
template <class V>
void assign_elements(V& v, const char* p, std::size_t n) {
  using E = typename V::value_type;
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(E) == 0) {
    const E* first = reinterpret_cast<const E*>(p);
    v.assign(first, first + n);
  } else if constexpr (sizeof(E) >= 4) {
    v.assign(UnalignedElements<E>(p), UnalignedElements<E>(p + n * sizeof(E)));
  } else {
    v.resize(n);
    std::memcpy(v.data(), p, n * sizeof(E));
  }
}

/// The element count of a sequence whose elements take at least `min_bytes` each: refused
/// if the rest of the input cannot hold that many, so that a lying count never allocates.
inline std::size_t get_count(Reader& r, std::size_t min_bytes) {
  auto n = r.get<std::uint64_t>();
  if (min_bytes > 0 && n > r.remaining() / min_bytes)
    throw SerializationError("a sequence of " + std::to_string(n) + " elements of " +
                             std::to_string(min_bytes) + " bytes or more, in " +
                             std::to_string(r.remaining()) + " bytes of input");
  return static_cast<std::size_t>(n);
}

template <class T>
void direct_get(Reader& r, T& v) {
  if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
    v = r.get<T>();
  } else if constexpr (is_bitwise_v<T>) {  // std::array of numbers
    std::memcpy(v.data(), r.take(sizeof(T)), sizeof(T));
  } else if constexpr (is_sequence<T>::value) {
    using E = typename T::value_type;
    constexpr bool is_bits = is_bit_vector<T>::value;
    std::size_t n = get_count(r, min_encoded_bytes<E>());
    if constexpr (is_bitwise_v<E> && !is_bits) {
      const char* p = r.take(n * sizeof(E));
      reserve_bulk(v, n);
      assign_elements(v, p, n);
    } else {
      v.clear();
      v.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        if constexpr (is_bits) {
          v[i] = r.get<bool>();
        } else {
          direct_get(r, v[i]);
        }
      }
    }
  } else if constexpr (is_optional<T>::value) {
    auto engaged = r.get<std::uint8_t>();
    if (engaged > 1) throw SerializationError("an optional's flag is neither 0 nor 1");
    if (engaged) {
      v.emplace();
      direct_get(r, *v);
    } else {
      v.reset();
    }
  } else {
    std::apply([&](auto&... e) { (direct_get(r, e), ...); }, v);
  }
}

// ---- general (MessagePack) encoding ---------------------------------------------------

template <class T>
inline constexpr bool is_encodable_v =
    is_direct_v<T> || std::is_constructible_v<nlohmann::json, const T&>;

template <class T>
inline constexpr bool is_decodable_v = is_direct_v<T> || requires(const nlohmann::json& j) {
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
  if constexpr (is_direct_v<T>) {
    direct_put(w, v);
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

/// Decodes a direct value into `v`, where it is; throws SerializationError naming the type.
template <class T>
void decode_direct(Reader& r, T& v) {
  try {
    direct_get(r, v);
  } catch (const std::exception& e) {  // truncated or lying input; bad_alloc
    throw SerializationError("cannot decode a value of type " + type_name<T>() + ": " + e.what());
  }
}

/// Decodes one value written by encode_value; throws SerializationError naming the type.
/// T need not be default-constructible when its from_json returns it (adl_serializer).
template <class T>
T decode_value(Reader& r) {
  if constexpr (is_direct_v<T>) {
    T v;
    decode_direct(r, v);
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

/// As above, into an existing value. A direct value is decoded where it is, so a vector keeps
/// its storage when it has room (a result prepared ahead: RemoteTask::prepare_result).
template <class T>
void decode_value(Reader& r, T& v) {
  if constexpr (is_direct_v<T>)
    decode_direct(r, v);
  else
    v = decode_value<T>(r);
}

// ---- exceptions -----------------------------------------------------------------------

/// Adds a CFX_EXCEPTION type to the table that rebuilds remote exceptions by type.
void register_exception(const std::type_info& type,
                        std::exception_ptr (*make)(const std::string&, std::exception_ptr));

}  // namespace cfx::detail
