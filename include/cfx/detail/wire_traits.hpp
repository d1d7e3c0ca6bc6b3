// Which C++ types the wire format (wire.hpp) lays out as raw bytes, and which are counted
// sequences: the traits alone, without the encoders, for headers that must not pull in
// nlohmann::json (remote_task.hpp). Internal.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace cfx::detail {

// ---- raw encoding -------------------------------------------------------------------

/// Fixed-size values whose encoding is their members' bytes, packed, with no header.
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

/// Raw values whose object representation is exactly their encoding (no padding, no member
/// order to follow): many of them in a row are one memcpy.
template <class T>
struct is_bitwise : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T>> {};
template <class T, std::size_t N>  // an empty array has no data() and a size of 1
struct is_bitwise<std::array<T, N>> : std::bool_constant<N != 0 && is_bitwise<T>::value> {};
template <class T>
inline constexpr bool is_bitwise_v = is_bitwise<std::remove_cv_t<T>>::value;

// ---- direct encoding: raw values, contiguous containers, and what nests them ------------

template <class T>
struct is_sequence : std::false_type {};  // the element-counted containers
template <class T, class A>
struct is_sequence<std::vector<T, A>> : std::true_type {};
template <class C, class Tr, class A>
struct is_sequence<std::basic_string<C, Tr, A>> : std::true_type {};
template <class T>
struct is_bit_vector : std::false_type {};  // std::vector<bool>: no data(), one byte each
template <class A>
struct is_bit_vector<std::vector<bool, A>> : std::true_type {};
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

/// A result that can be prepared ahead (RemoteTask::prepare_result): a vector or string of
/// bitwise elements, whose decoding is one copy into its storage.
template <class T>
inline constexpr bool is_preparable_v = [] {
  if constexpr (is_sequence<T>::value && !is_bit_vector<T>::value)
    return is_bitwise_v<typename T::value_type>;
  else
    return false;
}();

}  // namespace cfx::detail
