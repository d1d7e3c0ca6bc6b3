// The value codec (cfx/detail/wire.hpp, cfx/detail/bytes.hpp) and the exception codec
// (lib/remote_exception.hpp) that the process backend sends across the pipe.
#include <doctest/doctest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <cfx/detail/bytes.hpp>
#include <cfx/detail/wire.hpp>
#include <cfx/errors.hpp>
#include <cfx/task.hpp>
#include <nlohmann/json.hpp>

#include "lib/remote_exception.hpp"

// Debian 12's nlohmann::json has no std::optional support; this is the specialisation that
// docs/tasks-and-serialisation.md tells users to add.
namespace nlohmann {
template <class T>
struct adl_serializer<std::optional<T>> {
  static void to_json(json& j, const std::optional<T>& v) {
    if (v)
      j = *v;
    else
      j = nullptr;
  }
  static void from_json(const json& j, std::optional<T>& v) {
    if (j.is_null())
      v.reset();
    else
      v = j.get<T>();
  }
};
}  // namespace nlohmann

namespace codec_test {

enum class Colour : std::uint16_t { red = 1, green = 500, blue = 65535 };
enum Plain : std::int8_t { plain_a = -3, plain_b = 100 };

struct Point {
  int x = 0;
  double y = 0;
  std::string label;
  std::vector<int> tags;
  bool operator==(const Point&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y, label, tags)

/// No default constructor: only adl_serializer<Reading>::from_json can make one.
struct Reading {
  Reading(std::string s, int v) : sensor(std::move(s)), value(v) {}
  std::string sensor;
  int value;
  bool operator==(const Reading&) const = default;
};

/// to_json throws an int, not a std::exception.
struct EncodeThrowsInt {
  int v = 0;
};
inline void to_json(nlohmann::json&, const EncodeThrowsInt&) {
  throw 42;
}
inline void from_json(const nlohmann::json& j, EncodeThrowsInt& v) {
  v.v = j.get<int>();
}

/// Encodes fine; from_json throws an int.
struct DecodeThrowsInt {
  int v = 0;
};
inline void to_json(nlohmann::json& j, const DecodeThrowsInt& v) {
  j = v.v;
}
inline void from_json(const nlohmann::json&, DecodeThrowsInt&) {
  throw 7;
}

/// to_json throws a std::exception.
struct EncodeThrowsStd {};
inline void to_json(nlohmann::json&, const EncodeThrowsStd&) {
  throw std::runtime_error("refusing to encode");
}

/// Not registered with CFX_EXCEPTION: comes back as cfx::RemoteError.
class UnknownError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Registered: comes back as itself.
class KnownError : public std::runtime_error {
 public:
  explicit KnownError(const std::string& what) : std::runtime_error(what) {}
};

struct NoJson {};

}  // namespace codec_test

CFX_EXCEPTION(codec_test::KnownError);

namespace nlohmann {
template <>
struct adl_serializer<codec_test::Reading> {
  static codec_test::Reading from_json(const json& j) {
    return {j.at("sensor").get<std::string>(), j.at("value").get<int>()};
  }
  static void to_json(json& j, const codec_test::Reading& r) {
    j = json{{"sensor", r.sensor}, {"value", r.value}};
  }
};
}  // namespace nlohmann

namespace {

using cfx::SerializationError;
using cfx::detail::decode_value;
using cfx::detail::encode_value;
using cfx::detail::is_decodable_v;
using cfx::detail::is_direct_v;
using cfx::detail::is_encodable_v;
using cfx::detail::is_raw_v;
using cfx::detail::Reader;
using cfx::detail::Writer;
using namespace codec_test;

template <class T>
std::vector<char> encode(const T& v) {
  std::vector<char> out;
  Writer w(out);
  encode_value(w, v);
  CHECK(w.size() == out.size());
  return out;
}

/// Encodes v, checks (for msgpack) that the u32 header holds the rest's length, decodes it
/// both ways, and checks every byte was read.
template <class T>
T round_trip(const T& v) {
  auto bytes = encode(v);
  if constexpr (is_direct_v<T>) {
    // no msgpack header: the direct encoding only
  } else {
    REQUIRE(bytes.size() >= sizeof(std::uint32_t));
    std::uint32_t n;
    std::memcpy(&n, bytes.data(), sizeof n);
    CHECK(n == bytes.size() - sizeof n);
  }
  Reader r(bytes.data(), bytes.size());
  T back = decode_value<T>(r);
  CHECK(r.remaining() == 0);
  if constexpr (std::is_default_constructible_v<T>) {
    Reader r2(bytes.data(), bytes.size());
    T into{};
    decode_value(r2, into);
    if constexpr (std::is_floating_point_v<T>)
      CHECK(((into == v && std::signbit(into) == std::signbit(v)) ||
             (std::isnan(into) && std::isnan(v))));
    else
      CHECK(into == v);
    CHECK(r2.remaining() == 0);
  }
  return back;
}

/// Every strict prefix of the encoding of v fails to decode with SerializationError. Each
/// prefix is copied into a buffer of exactly its size, so a read past it is a read past the
/// allocation (caught by the sanitizers).
template <class T>
void check_truncations_throw(const T& v) {
  auto bytes = encode(v);
  REQUIRE(!bytes.empty());
  for (std::size_t len = 0; len < bytes.size(); ++len) {
    CAPTURE(len);
    std::vector<char> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len));
    Reader r(prefix.data(), prefix.size());
    CHECK_THROWS_AS(decode_value<T>(r), SerializationError);
  }
}

std::vector<bool> bits_for_truncation() {
  return {true, false, true};
}

/// The message of the SerializationError that f throws ("" if it throws nothing).
template <class F>
std::string serialization_error(F&& f) {
  try {
    f();
  } catch (const SerializationError& e) {
    return e.what();
  }
  return "";
}

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

/// A msgpack-path encoding: u32 length, then these bytes.
std::vector<char> framed(std::vector<unsigned char> body) {
  std::vector<char> out;
  Writer w(out);
  w.put(static_cast<std::uint32_t>(body.size()));
  w.put_bytes(body.data(), body.size());
  return out;
}

}  // namespace

TEST_SUITE("core") {
  TEST_CASE("codec: which types take the raw path") {
    static_assert(is_raw_v<int>);
    static_assert(is_raw_v<const double>);
    static_assert(is_raw_v<bool>);
    static_assert(is_raw_v<Colour>);
    static_assert(is_raw_v<std::pair<int, Colour>>);
    static_assert(is_raw_v<std::tuple<std::uint8_t, double, Plain>>);
    static_assert(is_raw_v<std::array<float, 3>>);
    static_assert(is_raw_v<std::tuple<std::pair<int, char>, std::array<short, 2>>>);
    static_assert(is_raw_v<std::tuple<>>);
    static_assert(!is_raw_v<std::string>);
    static_assert(!is_raw_v<std::vector<int>>);
    static_assert(!is_raw_v<std::pair<int, std::string>>);
    static_assert(!is_raw_v<std::tuple<int, std::vector<int>>>);
    static_assert(!is_raw_v<std::array<std::string, 2>>);
    static_assert(!is_raw_v<Point>);

    static_assert(is_encodable_v<Point> && is_decodable_v<Point>);
    static_assert(is_encodable_v<Reading> && is_decodable_v<Reading>);
    static_assert(is_encodable_v<std::pair<int, std::string>>);
    static_assert(is_encodable_v<std::optional<int>> && is_decodable_v<std::optional<int>>);
    static_assert(!is_encodable_v<NoJson>);
    static_assert(!is_decodable_v<NoJson>);
    static_assert(!is_decodable_v<EncodeThrowsStd>);  // to_json only
    CHECK(true);
  }

  TEST_CASE("codec: arithmetic values round-trip as their bytes, with no header") {
    CHECK(encode(std::int32_t{-5}).size() == 4);
    CHECK(encode(std::uint64_t{1}).size() == 8);
    CHECK(encode('x').size() == 1);
    CHECK(encode(true).size() == sizeof(bool));
    CHECK(encode(1.5f).size() == sizeof(float));

    auto bytes = encode(std::int32_t{0x01020304});
    std::int32_t raw;
    std::memcpy(&raw, bytes.data(), 4);
    CHECK(raw == 0x01020304);

    CHECK(round_trip(std::int8_t{-128}) == -128);
    CHECK(round_trip(std::uint8_t{255}) == 255);
    CHECK(round_trip(std::int16_t{-32768}) == -32768);
    CHECK(round_trip(std::uint16_t{65535}) == 65535);
    CHECK(round_trip(std::numeric_limits<std::int32_t>::min()) ==
          std::numeric_limits<std::int32_t>::min());
    CHECK(round_trip(std::numeric_limits<std::int64_t>::min()) ==
          std::numeric_limits<std::int64_t>::min());
    CHECK(round_trip(std::numeric_limits<std::uint64_t>::max()) ==
          std::numeric_limits<std::uint64_t>::max());
    CHECK(round_trip(true) == true);
    CHECK(round_trip(false) == false);
    CHECK(round_trip('\0') == '\0');
    CHECK(round_trip(0.1) == 0.1);
    CHECK(round_trip(-0.0f) == 0.0f);
    CHECK(std::signbit(round_trip(-0.0)));
    CHECK(round_trip(std::numeric_limits<double>::infinity()) ==
          std::numeric_limits<double>::infinity());
    CHECK(std::isnan(round_trip(std::numeric_limits<double>::quiet_NaN())));
    CHECK(round_trip(std::numeric_limits<double>::denorm_min()) ==
          std::numeric_limits<double>::denorm_min());
    CHECK(round_trip(1e308L) == 1e308L);
  }

  TEST_CASE("codec: enums round-trip with their underlying size") {
    CHECK(encode(Colour::green).size() == sizeof(std::uint16_t));
    CHECK(encode(plain_a).size() == 1);
    CHECK(round_trip(Colour::red) == Colour::red);
    CHECK(round_trip(Colour::blue) == Colour::blue);
    CHECK(round_trip(plain_a) == plain_a);
    CHECK(round_trip(plain_b) == plain_b);
    // A value outside the enumerators is still carried bit for bit.
    CHECK(round_trip(static_cast<Colour>(7)) == static_cast<Colour>(7));
  }

  TEST_CASE("codec: pair, tuple and array of raw values are their members' bytes, packed") {
    using P = std::pair<std::int8_t, double>;
    P p{-7, 2.25};
    CHECK(encode(p).size() == sizeof(std::int8_t) + sizeof(double));  // not sizeof(P)
    CHECK(round_trip(p) == p);

    using T = std::tuple<std::uint8_t, std::int64_t, float, Colour, bool>;
    T t{200, -1234567890123LL, 3.5f, Colour::green, true};
    CHECK(encode(t).size() == 1 + 8 + 4 + 2 + sizeof(bool));
    CHECK(round_trip(t) == t);

    std::array<std::int16_t, 5> a{1, -2, 3, -4, 32767};
    CHECK(encode(a).size() == 5 * sizeof(std::int16_t));
    CHECK(round_trip(a) == a);

    using Nested = std::tuple<std::pair<char, std::uint32_t>, std::array<Plain, 3>, double>;
    Nested n{{'q', 0xdeadbeefu}, {plain_a, plain_b, plain_a}, -1.0};
    CHECK(encode(n).size() == 1 + 4 + 3 * 1 + 8);
    CHECK(round_trip(n) == n);

    CHECK(encode(std::tuple<>{}).empty());
    std::array<double, 0> none{};
    CHECK(encode(none).empty());

    // Members are written in order: the pair's first member comes first.
    auto bytes = encode(std::pair<std::uint8_t, std::uint8_t>{0x11, 0x22});
    REQUIRE(bytes.size() == 2);
    CHECK(static_cast<unsigned char>(bytes[0]) == 0x11);
    CHECK(static_cast<unsigned char>(bytes[1]) == 0x22);
  }

  TEST_CASE("codec: values back to back decode in order") {
    std::vector<char> out;
    Writer w(out);
    encode_value(w, 42);
    encode_value(w, std::string("middle"));
    encode_value(w, std::pair<short, char>{-1, 'z'});
    encode_value(w, std::vector<int>{1, 2, 3});
    encode_value(w, 2.5);
    Reader r(out.data(), out.size());
    CHECK(decode_value<int>(r) == 42);
    CHECK(decode_value<std::string>(r) == "middle");
    CHECK(decode_value<std::pair<short, char>>(r) == std::pair<short, char>{-1, 'z'});
    CHECK(decode_value<std::vector<int>>(r) == std::vector<int>{1, 2, 3});
    CHECK(decode_value<double>(r) == 2.5);
    CHECK(r.remaining() == 0);
  }

  TEST_CASE("codec: strings round-trip, including empty, embedded NUL and non-ASCII") {
    CHECK(round_trip(std::string()) == "");
    CHECK(round_trip(std::string("hello")) == "hello");
    std::string nul("a\0b\0", 4);
    CHECK(round_trip(nul) == nul);
    CHECK(round_trip(std::string("grüße, 世界")) == "grüße, 世界");
    std::string big(100000, 'x');
    big[12345] = 'y';
    CHECK(round_trip(big) == big);
    // A string is direct: a u64 byte count, then the bytes.
    auto abc = encode(std::string("abc"));
    REQUIRE(abc.size() == 8 + 3);
    std::uint64_t n;
    std::memcpy(&n, abc.data(), sizeof n);
    CHECK(n == 3);
    CHECK(std::string_view(abc.data() + 8, 3) == "abc");
  }

  TEST_CASE("codec: vectors round-trip") {
    CHECK(round_trip(std::vector<int>{}).empty());
    std::vector<int> ints;
    for (int i = -500; i < 500; ++i) ints.push_back(i * 7919);
    CHECK(round_trip(ints) == ints);
    std::vector<std::string> strs{"", "one", "two words"};
    CHECK(round_trip(strs) == strs);
    std::vector<std::vector<double>> nested{{}, {1.5}, {-2.0, 3.25}};
    CHECK(round_trip(nested) == nested);
    std::vector<std::pair<int, std::string>> pairs{{1, "a"}, {2, "b"}};
    CHECK(round_trip(pairs) == pairs);
    std::vector<bool> bits{true, false, true};
    CHECK(round_trip(bits) == bits);
    std::vector<std::uint64_t> wide{0, std::numeric_limits<std::uint64_t>::max()};
    CHECK(round_trip(wide) == wide);
  }

  TEST_CASE("codec: maps round-trip") {
    std::map<std::string, int> by_name{{"a", 1}, {"bb", -2}, {"", 3}};
    CHECK(round_trip(by_name) == by_name);
    std::map<int, std::string> by_int{{-1, "minus"}, {0, ""}, {42, "answer"}};
    CHECK(round_trip(by_int) == by_int);
    std::unordered_map<std::string, std::vector<int>> um{{"x", {1, 2}}, {"y", {}}};
    CHECK(round_trip(um) == um);
    CHECK(round_trip(std::map<std::string, double>{}).empty());
  }

  TEST_CASE("codec: optionals round-trip, engaged and empty") {
    CHECK(round_trip(std::optional<int>{}) == std::nullopt);
    CHECK(round_trip(std::optional<int>{0}) == std::optional<int>{0});
    CHECK(round_trip(std::optional<std::string>{"s"}) == std::optional<std::string>{"s"});
    std::vector<std::optional<int>> v{1, std::nullopt, 3};
    CHECK(round_trip(v) == v);
  }

  TEST_CASE("codec: a struct with NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE round-trips") {
    Point p{-3, 0.5, "origin-ish", {7, 8, 9}};
    CHECK(round_trip(p) == p);
    CHECK(round_trip(Point{}) == Point{});
    std::vector<Point> ps{p, Point{1, 2, "b", {}}};
    CHECK(round_trip(ps) == ps);
    std::map<std::string, Point> m{{"k", p}};
    CHECK(round_trip(m) == m);
  }

  TEST_CASE("codec: a type without a default constructor decodes through its from_json") {
    static_assert(!std::is_default_constructible_v<Reading>);
    Reading r{"thermo-1", -40};
    CHECK(round_trip(r) == r);

    // decode_value(Reader&, T&) assigns over an existing value.
    auto bytes = encode(r);
    Reader in(bytes.data(), bytes.size());
    Reading into{"old", 1};
    decode_value(in, into);
    CHECK(into == r);
    CHECK(in.remaining() == 0);

    std::vector<Reading> many{{"a", 1}, {"b", 2}};
    CHECK(round_trip(many) == many);
  }

  TEST_CASE("codec: every truncation of an encoding throws SerializationError") {
    check_truncations_throw(std::int64_t{-99});
    check_truncations_throw(std::tuple<char, double, Colour>{'a', 1.0, Colour::red});
    check_truncations_throw(std::array<int, 4>{1, 2, 3, 4});
    check_truncations_throw(std::string("a string long enough to matter"));
    check_truncations_throw(std::vector<int>{1, 1000, 100000, -5});
    check_truncations_throw(std::map<std::string, int>{{"k", 1}, {"l", 2}});
    check_truncations_throw(Point{1, 2.0, "p", {3, 4}});
    check_truncations_throw(Reading{"r", 5});
    check_truncations_throw(std::optional<std::string>{"o"});

    // An empty input for any type.
    Reader empty(nullptr, 0);
    CHECK_THROWS_AS(decode_value<int>(empty), SerializationError);
    Reader empty2(nullptr, 0);
    CHECK_THROWS_AS(decode_value<std::string>(empty2), SerializationError);
  }

  TEST_CASE("codec: a header that claims more bytes than there are throws") {
    auto bytes = encode(std::map<std::string, int>{{"abcdef", 1}});
    for (std::uint32_t claim : {std::uint32_t(bytes.size()), std::uint32_t{1} << 31,
                                std::numeric_limits<std::uint32_t>::max()}) {
      CAPTURE(claim);
      auto bad = bytes;
      std::memcpy(bad.data(), &claim, sizeof claim);
      Reader r(bad.data(), bad.size());
      CHECK_THROWS_AS((decode_value<std::map<std::string, int>>(r)), SerializationError);
    }
  }

  TEST_CASE("codec: a header that cuts the MessagePack short throws") {
    auto bytes = encode(Point{1, 2.0, "label", {1, 2, 3}});
    std::uint32_t n;
    std::memcpy(&n, bytes.data(), sizeof n);
    for (std::uint32_t shorter = 0; shorter < n; ++shorter) {
      CAPTURE(shorter);
      std::vector<char> bad(bytes.begin(), bytes.begin() + 4 + shorter);
      std::memcpy(bad.data(), &shorter, sizeof shorter);
      Reader r(bad.data(), bad.size());
      CHECK_THROWS_AS(decode_value<Point>(r), SerializationError);
    }
  }

  TEST_CASE("codec: garbage MessagePack throws SerializationError naming the type") {
    // 0xc1 is never used in MessagePack.
    auto never_used = framed({0xc1});
    Reader r1(never_used.data(), never_used.size());
    auto m1 = serialization_error([&] { decode_value<Point>(r1); });
    CHECK(contains(m1, "codec_test::Point"));

    // A str8 that claims 200 bytes but has 2.
    auto short_str = framed({0xd9, 200, 'a', 'b'});
    Reader r2(short_str.data(), short_str.size());
    auto m2 = serialization_error([&] { decode_value<std::string>(r2); });
    CHECK(!m2.empty());

    // An array32 that claims 4 billion elements.
    auto huge_array = framed({0xdd, 0xff, 0xff, 0xff, 0xff, 0x01});
    Reader r3(huge_array.data(), huge_array.size());
    auto m3 = serialization_error([&] { decode_value<std::vector<int>>(r3); });
    CHECK(contains(m3, "std::vector<int"));

    // Well-formed MessagePack of the wrong shape: a string where a Point is expected.
    auto wrong = encode(std::string("not a point"));
    Reader r4(wrong.data(), wrong.size());
    auto m4 = serialization_error([&] { decode_value<Point>(r4); });
    CHECK(contains(m4, "codec_test::Point"));

    // A map where an int is expected.
    auto map = encode(std::map<std::string, int>{{"a", 1}});
    Reader r5(map.data(), map.size());
    auto m5 = serialization_error([&] { decode_value<std::vector<int>>(r5); });
    CHECK(!m5.empty());

    // Random bytes never crash the decoder: they decode or throw SerializationError.
    std::uint32_t state = 12345;
    for (int round = 0; round < 2000; ++round) {
      std::vector<unsigned char> body(1 + state % 24);
      for (auto& b : body) {
        state = state * 1664525u + 1013904223u;
        b = static_cast<unsigned char>(state >> 24);
      }
      auto bytes = framed(body);
      Reader r(bytes.data(), bytes.size());
      try {
        (void)decode_value<Point>(r);
      } catch (const SerializationError&) {
      }
      Reader r6(bytes.data(), bytes.size());
      try {
        (void)decode_value<std::map<std::string, std::vector<double>>>(r6);
      } catch (const SerializationError&) {
      }
    }
  }

  TEST_CASE("codec: to_json throwing an int gives SerializationError from encode_value") {
    std::vector<char> out{'p', 'r', 'e'};
    Writer w(out);
    std::string message;
    CHECK_THROWS_AS(encode_value(w, EncodeThrowsInt{1}), SerializationError);
    message = serialization_error([&] { encode_value(w, EncodeThrowsInt{1}); });
    CHECK(contains(message, "codec_test::EncodeThrowsInt"));
    CHECK(contains(message, "not derived from std::exception"));
    // Nothing was appended (the header is reserved only once to_json succeeded).
    CHECK(out.size() == 3);
  }

  TEST_CASE("codec: to_json throwing a std::exception gives SerializationError with its what()") {
    std::vector<char> out;
    Writer w(out);
    auto message = serialization_error([&] { encode_value(w, EncodeThrowsStd{}); });
    CHECK(contains(message, "codec_test::EncodeThrowsStd"));
    CHECK(contains(message, "refusing to encode"));
  }

  TEST_CASE("codec: from_json throwing an int gives SerializationError from decode_value") {
    auto bytes = encode(DecodeThrowsInt{5});
    Reader r(bytes.data(), bytes.size());
    auto message = serialization_error([&] { decode_value<DecodeThrowsInt>(r); });
    CHECK(contains(message, "codec_test::DecodeThrowsInt"));
    CHECK(contains(message, "not derived from std::exception"));

    Reader r2(bytes.data(), bytes.size());
    DecodeThrowsInt into;
    CHECK_THROWS_AS(decode_value(r2, into), SerializationError);
  }

  TEST_CASE("codec: Writer::put_string and Reader::get_string") {
    std::vector<char> out;
    Writer w(out);
    w.put_string("");
    CHECK(w.size() == 4);
    w.put_string("abc");
    CHECK(w.size() == 4 + 4 + 3);
    std::string nul("x\0y", 3);
    w.put_string(nul);
    std::string big(70000, 'b');
    w.put_string(big);
    w.put(std::uint16_t{0xbeef});

    std::uint32_t first_len;
    std::memcpy(&first_len, out.data() + 4, 4);
    CHECK(first_len == 3);
    CHECK(std::string_view(out.data() + 8, 3) == "abc");

    Reader r(out.data(), out.size());
    CHECK(r.get_string().empty());
    CHECK(r.get_string() == "abc");
    CHECK(r.get_string() == nul);
    auto view = r.get_string();
    CHECK(view.size() == big.size());
    CHECK(view == big);
    CHECK(r.get<std::uint16_t>() == 0xbeef);
    CHECK(r.remaining() == 0);

    // get_string views the reader's own buffer.
    Reader again(out.data(), out.size());
    again.get_string();
    auto abc = again.get_string();
    CHECK(abc.data() == out.data() + 8);
  }

  TEST_CASE("codec: a big buffer grows by doubling, with room for a trailer after a big value") {
    // A result frame is its header, a big value, then a byte or two: those must not move the
    // whole value again (the vector's own growth copied 64 MiB into fresh 4 KiB pages).
    std::vector<char> out;
    Writer w(out);
    w.put(std::uint64_t{1});
    std::vector<char> big(cfx::detail::kBulkBytes, 'x');
    w.put_bytes(big.data(), big.size());
    const char* at = out.data();
    w.put(std::uint8_t{0});
    w.put(std::uint64_t{2});
    CHECK(out.data() == at);
    // Many big pieces: each growth at least doubles, so they are copied O(1) times each.
    int moves = 0;
    for (int i = 0; i < 8; ++i) {
      w.put_bytes(big.data(), big.size());
      if (out.data() != at) ++moves;
      at = out.data();
    }
    CHECK(moves <= 4);  // 8, 16, 32, 64 MiB
    CHECK(out.size() == 8 + big.size() + 1 + 8 + 8 * big.size());
    CHECK(out[8 + big.size()] == 0);  // the trailer, in place
    CHECK(out.back() == 'x');
  }

  TEST_CASE("codec: Reader throws on truncated strings and fixed-size values") {
    std::vector<char> out;
    Writer w(out);
    w.put_string("hello");
    for (std::size_t len = 0; len < out.size(); ++len) {
      CAPTURE(len);
      std::vector<char> prefix(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(len));
      Reader r(prefix.data(), prefix.size());
      CHECK_THROWS_AS(r.get_string(), SerializationError);
    }
    std::vector<char> lying;
    Writer lw(lying);
    lw.put(std::numeric_limits<std::uint32_t>::max());
    lw.put_bytes("ab", 2);
    Reader r(lying.data(), lying.size());
    CHECK_THROWS_AS(r.get_string(), SerializationError);

    char three[3] = {1, 2, 3};
    Reader r3(three, 3);
    CHECK_THROWS_AS(r3.get<std::uint32_t>(), SerializationError);
    // A failed read consumes nothing.
    CHECK(r3.get<std::uint8_t>() == 1);
    CHECK(r3.get<std::uint8_t>() == 2);
    CHECK_THROWS_AS(r3.get<std::uint16_t>(), SerializationError);
    CHECK(r3.get<std::uint8_t>() == 3);
    CHECK_THROWS_AS(r3.get<std::uint8_t>(), SerializationError);
    Reader r0(three, 3);
    CHECK(r0.take(0) == three);
    CHECK(r0.take(3) == three);
    CHECK(r0.take(0) == three + 3);
    CHECK_THROWS_AS(r0.take(1), SerializationError);
  }

  TEST_CASE("exception codec: std::invalid_argument comes back as itself, with its context") {
    std::vector<char> out;
    Writer w(out);
    try {
      throw std::invalid_argument("negative radius");
    } catch (...) {
      cfx::detail::encode_current_exception(w, "geometry.area");
    }
    Reader r(out.data(), out.size());
    std::exception_ptr e = cfx::detail::decode_exception(r);
    CHECK(r.remaining() == 0);
    REQUIRE(e);
    bool caught = false;
    try {
      std::rethrow_exception(e);
    } catch (const std::invalid_argument& ex) {
      caught = true;
      CHECK(typeid(ex) != typeid(cfx::RemoteError));
      CHECK(std::string(ex.what()) == "negative radius");
      bool nested = false;
      try {
        std::rethrow_if_nested(ex);
      } catch (const cfx::RemoteError& ctx) {
        nested = true;
        CHECK(ctx.task() == "geometry.area");
        CHECK(ctx.pid() == ::getpid());
        CHECK(ctx.type_name() == "std::invalid_argument");
        CHECK(ctx.message() == "negative radius");
        CHECK(contains(ctx.what(), "geometry.area"));
      }
      CHECK(nested);
    } catch (...) {
      FAIL("not a std::invalid_argument");
    }
    CHECK(caught);
  }

  TEST_CASE("exception codec: an unknown type comes back as cfx::RemoteError") {
    std::vector<char> out;
    Writer w(out);
    try {
      throw UnknownError("disk on fire");
    } catch (...) {
      cfx::detail::encode_current_exception(w, "storage.flush");
    }
    Reader r(out.data(), out.size());
    auto e = cfx::detail::decode_exception(r);
    CHECK(r.remaining() == 0);
    bool caught = false;
    try {
      std::rethrow_exception(e);
    } catch (const UnknownError&) {
      FAIL("an unregistered type must not be rebuilt");
    } catch (const cfx::RemoteError& ex) {
      caught = true;
      CHECK(contains(ex.what(), "codec_test::UnknownError"));
      CHECK(contains(ex.what(), "disk on fire"));
      CHECK(ex.type_name() == "codec_test::UnknownError");
      CHECK(ex.message() == "disk on fire");
      bool nested = false;
      try {
        std::rethrow_if_nested(ex);
      } catch (const cfx::RemoteError& ctx) {
        nested = true;
        CHECK(ctx.task() == "storage.flush");
        CHECK(ctx.pid() == ::getpid());
        CHECK(ctx.type_name() == "codec_test::UnknownError");
      }
      CHECK(nested);
    }
    CHECK(caught);
  }

  TEST_CASE("exception codec: a non-std exception comes back as RemoteError naming its type") {
    std::vector<char> out;
    Writer w(out);
    try {
      throw 17;
    } catch (...) {
      cfx::detail::encode_current_exception(w, "ints");
    }
    Reader r(out.data(), out.size());
    auto e = cfx::detail::decode_exception(r);
    try {
      std::rethrow_exception(e);
    } catch (const cfx::RemoteError& ex) {
      CHECK(ex.type_name() == "int");
      CHECK(contains(ex.what(), "int"));
    } catch (...) {
      FAIL("not a RemoteError");
    }
  }

  TEST_CASE("exception codec: cfx errors and CFX_EXCEPTION types come back as themselves") {
    std::vector<char> out;
    Writer w(out);
    try {
      throw cfx::TimeoutError("too slow");
    } catch (...) {
      cfx::detail::encode_current_exception(w, "t1");
    }
    try {
      throw KnownError("known");
    } catch (...) {
      cfx::detail::encode_current_exception(w, "t2");
    }
    try {
      throw std::out_of_range("index 9");
    } catch (...) {
      cfx::detail::encode_current_exception(w, "t3");
    }
    Reader r(out.data(), out.size());
    auto e1 = cfx::detail::decode_exception(r);
    auto e2 = cfx::detail::decode_exception(r);
    auto e3 = cfx::detail::decode_exception(r);
    CHECK(r.remaining() == 0);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(e1), "too slow", cfx::TimeoutError);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(e2), "known", KnownError);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(e3), "index 9", std::out_of_range);
    try {
      std::rethrow_exception(e2);
    } catch (const KnownError& ex) {
      CHECK_THROWS_AS(std::rethrow_if_nested(ex), cfx::RemoteError);
    }
  }

  TEST_CASE("exception codec: truncated input throws SerializationError") {
    std::vector<char> out;
    Writer w(out);
    try {
      throw std::runtime_error("boom");
    } catch (...) {
      cfx::detail::encode_current_exception(w, "task");
    }
    for (std::size_t len = 0; len < out.size(); ++len) {
      CAPTURE(len);
      std::vector<char> prefix(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(len));
      Reader r(prefix.data(), prefix.size());
      CHECK_THROWS_AS(cfx::detail::decode_exception(r), SerializationError);
    }
  }

  TEST_CASE("codec: a value's length prefix is never cut short") {
    // Encoding 4 GiB for real would take minutes and 12 GiB in a test: the length check is
    // the one place that decides, so it is tested at its bounds.
    using cfx::detail::checked_length;
    CHECK(checked_length<std::string>(0) == 0);
    CHECK(checked_length<std::string>((std::size_t{1} << 31) + 1) == (1u << 31) + 1);
    CHECK(checked_length<std::string>(UINT32_MAX) == UINT32_MAX);
    CHECK_THROWS_AS(checked_length<std::string>(std::size_t{1} << 32), SerializationError);
    CHECK_THROWS_WITH_AS(checked_length<std::vector<int>>((std::size_t{1} << 32) + 5),
                         doctest::Contains("4294967301 bytes"), SerializationError);
  }

  TEST_CASE("codec: which types take the direct path (no nlohmann::json)") {
    static_assert(is_direct_v<int> && is_direct_v<std::pair<int, Colour>>);
    static_assert(is_direct_v<std::string> && is_direct_v<std::vector<double>>);
    static_assert(is_direct_v<std::vector<std::uint8_t>> && is_direct_v<std::vector<bool>>);
    static_assert(is_direct_v<std::vector<std::array<float, 3>>>);
    static_assert(is_direct_v<std::tuple<int, std::vector<double>, std::string>>);
    static_assert(is_direct_v<std::pair<std::string, std::vector<char>>>);
    static_assert(is_direct_v<std::optional<std::vector<int>>> && is_direct_v<std::optional<int>>);
    static_assert(is_direct_v<std::array<std::string, 2>>);
    static_assert(is_direct_v<std::vector<std::vector<std::string>>>);
    static_assert(is_direct_v<std::vector<std::pair<int, std::string>>>);
    static_assert(!is_direct_v<Point> && !is_direct_v<std::vector<Point>>);
    static_assert(!is_direct_v<std::map<std::string, int>>);
    static_assert(!is_direct_v<std::pair<int, Point>> && !is_direct_v<std::optional<Point>>);
    static_assert(!is_direct_v<std::vector<std::tuple<>>>);  // a count of nothing: unbounded
    CHECK(true);
  }

  TEST_CASE("codec: vectors, strings and arrays of numbers are a u64 count and their bytes") {
    std::vector<double> doubles(1000);
    for (std::size_t i = 0; i < doubles.size(); ++i) doubles[i] = 0.5 * static_cast<double>(i) - 7;
    auto bytes = encode(doubles);
    REQUIRE(bytes.size() == 8 + 1000 * sizeof(double));
    std::uint64_t n;
    std::memcpy(&n, bytes.data(), sizeof n);
    CHECK(n == 1000);
    CHECK(std::memcmp(bytes.data() + 8, doubles.data(), 1000 * sizeof(double)) == 0);
    CHECK(round_trip(doubles) == doubles);

    CHECK(encode(std::vector<int>{}).size() == 8);
    CHECK(round_trip(std::vector<int>{}).empty());
    CHECK(encode(std::string()).size() == 8);
    std::vector<std::uint8_t> octets{0, 1, 254, 255};
    CHECK(encode(octets).size() == 8 + 4);
    CHECK(round_trip(octets) == octets);
    std::vector<char> chars{'a', '\0', 'z'};
    CHECK(round_trip(chars) == chars);
    std::vector<Colour> colours{Colour::red, Colour::blue};
    CHECK(encode(colours).size() == 8 + 2 * sizeof(Colour));
    CHECK(round_trip(colours) == colours);
    std::array<double, 4> quad{1, -2, 3.5, 1e300};
    CHECK(encode(quad).size() == sizeof quad);
    CHECK(round_trip(quad) == quad);
    std::vector<std::array<float, 3>> points{{1, 2, 3}, {-4, 5.5f, 6}};
    CHECK(encode(points).size() == 8 + 2 * 3 * sizeof(float));
    CHECK(round_trip(points) == points);
    std::vector<bool> bits{true, false, false, true, true};
    CHECK(encode(bits).size() == 8 + 5);
    CHECK(round_trip(bits) == bits);
    std::vector<std::uint64_t> wide{0, 1, std::numeric_limits<std::uint64_t>::max()};
    CHECK(round_trip(wide) == wide);
  }

  TEST_CASE("codec: contiguous elements decode from any address, aligned for them or not") {
    // The decoder copies from where the bytes lie in a frame, which need not suit the
    // element's alignment: a pointer-range copy when it does, UnalignedElements when not.
    auto at_every_offset = [](const auto& v) {
      using V = std::decay_t<decltype(v)>;
      auto bytes = encode(v);
      for (std::size_t offset = 0; offset < 16; ++offset) {
        CAPTURE(offset);
        std::vector<char> shifted(offset, '\x7f');
        shifted.insert(shifted.end(), bytes.begin(), bytes.end());
        Reader r(shifted.data() + offset, bytes.size());
        V into = round_trip(v);  // what it held before is replaced, not appended to
        into.insert(into.end(), v.begin(), v.end());
        decode_value(r, into);
        CHECK(into == v);
        CHECK(r.remaining() == 0);
      }
    };
    at_every_offset(std::vector<std::uint8_t>{1, 2, 255});
    at_every_offset(std::vector<std::int16_t>{-1, 2, 300, -32768});
    at_every_offset(std::vector<std::uint32_t>{1, 0xdeadbeef, 7});
    at_every_offset(std::vector<double>{0.5, -1e300, 3, 4, 5, 6, 7});
    at_every_offset(std::vector<std::array<double, 3>>{{1, 2, 3}, {-4, 5, 6}});
    at_every_offset(std::vector<double>{});
    at_every_offset(std::string("unaligned"));
  }

  TEST_CASE("codec: contiguous values nested in tuples, pairs, optionals and vectors") {
    using Row = std::tuple<int, std::vector<double>, std::string>;
    Row row{7, {1.5, -2.5}, "seven"};
    CHECK(encode(row).size() == 4 + (8 + 16) + (8 + 5));
    CHECK(round_trip(row) == row);
    CHECK(round_trip(Row{}) == Row{});
    std::pair<std::string, std::vector<std::uint8_t>> named{"blob", {9, 8, 7}};
    CHECK(round_trip(named) == named);
    std::optional<std::vector<int>> some{std::vector<int>{1, 2, 3}};
    CHECK(encode(some).size() == 1 + 8 + 3 * sizeof(int));
    CHECK(round_trip(some) == some);
    std::optional<std::vector<int>> none;
    CHECK(encode(none).size() == 1);
    CHECK(round_trip(none) == none);
    std::vector<std::vector<double>> nested{{}, {1.5}, {-2.0, 3.25}};
    CHECK(round_trip(nested) == nested);
    std::vector<std::string> words{"", "one", std::string("nul\0in", 6)};
    CHECK(round_trip(words) == words);
    std::array<std::string, 2> two{"left", ""};
    CHECK(round_trip(two) == two);
    std::vector<std::optional<int>> holes{1, std::nullopt, 3};
    CHECK(round_trip(holes) == holes);
    std::vector<std::pair<int, std::string>> pairs{{1, "a"}, {2, "b"}};
    CHECK(round_trip(pairs) == pairs);

    check_truncations_throw(row);
    check_truncations_throw(named);
    check_truncations_throw(some);
    check_truncations_throw(nested);
    check_truncations_throw(words);
    check_truncations_throw(holes);
    check_truncations_throw(bits_for_truncation());
  }

  TEST_CASE("codec: a count the input cannot hold throws before anything is allocated") {
    for (std::uint64_t claim : {std::uint64_t{4}, std::uint64_t{1} << 32,
                                (std::uint64_t{1} << 61) + 1,  // times 8 overflows 64 bits
                                std::numeric_limits<std::uint64_t>::max()}) {
      CAPTURE(claim);
      std::vector<char> bad;
      Writer w(bad);
      w.put(claim);
      w.put(1.0);
      w.put(2.0);
      w.put(3.0);
      Reader r(bad.data(), bad.size());
      CHECK_THROWS_WITH_AS(decode_value<std::vector<double>>(r), doctest::Contains("elements"),
                           SerializationError);
      Reader r2(bad.data(), bad.size());
      CHECK_THROWS_AS(decode_value<std::vector<std::string>>(r2), SerializationError);
    }
    std::vector<char> flag{2};
    Reader r(flag.data(), flag.size());
    CHECK_THROWS_WITH_AS(decode_value<std::optional<int>>(r), doctest::Contains("optional"),
                         SerializationError);
  }

  TEST_CASE("codec: counts of 4 GiB and more are carried whole, never cut to 32 bits") {
    // A count of 2^32 + 3 followed by 3 bytes: a 32-bit reader would take it as 3 and
    // succeed; the 64-bit count sees that the bytes are missing.
    std::vector<char> bytes;
    Writer w(bytes);
    w.put((std::uint64_t{1} << 32) + 3);
    w.put_bytes("abc", 3);
    Reader r(bytes.data(), bytes.size());
    CHECK_THROWS_AS(decode_value<std::string>(r), SerializationError);
    std::uint64_t three = 3;
    std::memcpy(bytes.data(), &three, sizeof three);
    Reader ok(bytes.data(), bytes.size());
    CHECK(decode_value<std::string>(ok) == "abc");
    // Names and messages keep a u32 length: 4 GiB is refused before a byte is read (the
    // view's bytes are never touched).
    std::vector<char> out;
    Writer names(out);
    static const char one_byte = 'x';
    CHECK_THROWS_WITH_AS(names.put_string(std::string_view(&one_byte, std::size_t{1} << 32)),
                         doctest::Contains("4294967296"), SerializationError);
    CHECK(out.empty());
  }
}
