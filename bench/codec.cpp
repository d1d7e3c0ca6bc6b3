// codec: which binary encoding of nlohmann::json should carry the process backend's values?
// MessagePack (what include/cfx/detail/wire.hpp uses for non-trivial types) beside CBOR,
// BJData and UBJSON, on the payloads a task call typically carries, and cfx's raw fast path
// (numbers and tuples of numbers copied as bytes) beside MessagePack for the same values.
//
//   codec [--repeat N] [--min-ms N] [--ints N]
//
// Each figure is the best of --repeat (default 3) batches of at least --min-ms (default 50)
// milliseconds. Encode = C++ value -> json -> bytes (into a reused buffer); decode = bytes ->
// json -> C++ value: the whole path a value takes in cfx. Every format's decoded value is
// checked against the original (a mismatch exits 1).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <cfx/cfx.hpp>
#include <nlohmann/json.hpp>

namespace bench {

/// The struct-ish payload: {"name": "...", "values": [10 doubles]}.
struct Reading {
  std::string name;
  std::vector<double> values;
  bool operator==(const Reading&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Reading, name, values)

}  // namespace bench

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Config {
  int repeat = 3;
  double min_seconds = 0.05;
  std::size_t ints = 1000;
};

Config parse_args(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&] { return i + 1 < argc ? std::strtoull(argv[++i], nullptr, 10) : 0ULL; };
    if (arg == "--repeat")
      c.repeat = static_cast<int>(value());
    else if (arg == "--min-ms")
      c.min_seconds = static_cast<double>(value()) / 1e3;
    else if (arg == "--ints")
      c.ints = value();
    else {
      std::fprintf(stderr, "unknown argument %s (see the comment atop codec.cpp)\n", arg.c_str());
      std::exit(2);
    }
  }
  c.repeat = std::max(c.repeat, 1);
  return c;
}

/// Keeps the compiler from dropping a computation whose result is unused.
template <class T>
void keep(const T& v) {
  asm volatile("" : : "g"(&v) : "memory");
}

/// Nanoseconds per call of op: batches are doubled until one lasts min_seconds, then the
/// best of `repeat` batches of that size (noise only ever adds time).
double ns_per_op(const Config& c, const std::function<void()>& op) {
  std::size_t batch = 1;
  double secs = 0;
  for (;;) {
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < batch; ++i) op();
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (secs >= c.min_seconds) break;
    batch *= 2;
  }
  double best = secs;
  for (int r = 1; r < c.repeat; ++r) {
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < batch; ++i) op();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best * 1e9 / static_cast<double>(batch);
}

struct Format {
  const char* name;
  void (*encode)(const json&, std::vector<char>&);
  json (*decode)(const std::vector<char>&);
};

const std::array<Format, 5> kFormats = {{
    {"MessagePack", [](const json& j, std::vector<char>& o) { json::to_msgpack(j, o); },
     [](const std::vector<char>& b) { return json::from_msgpack(b.begin(), b.end()); }},
    {"CBOR", [](const json& j, std::vector<char>& o) { json::to_cbor(j, o); },
     [](const std::vector<char>& b) { return json::from_cbor(b.begin(), b.end()); }},
    {"BJData", [](const json& j, std::vector<char>& o) { json::to_bjdata(j, o); },
     [](const std::vector<char>& b) { return json::from_bjdata(b.begin(), b.end()); }},
    {"BJData (size+type)",
     [](const json& j, std::vector<char>& o) { json::to_bjdata(j, o, true, true); },
     [](const std::vector<char>& b) { return json::from_bjdata(b.begin(), b.end()); }},
    {"UBJSON", [](const json& j, std::vector<char>& o) { json::to_ubjson(j, o); },
     [](const std::vector<char>& b) { return json::from_ubjson(b.begin(), b.end()); }},
}};

struct Cell {
  double ns = 0;  // encode + decode
  std::size_t bytes = 0;
};

// results[payload][format]
std::vector<std::array<Cell, kFormats.size()>> results;

template <class T>
void measure_payload(const Config& c, const char* label, const T& value) {
  std::array<Cell, kFormats.size()> row{};
  double msgpack_ns = 0;
  for (std::size_t f = 0; f < kFormats.size(); ++f) {
    const Format& fmt = kFormats[f];
    std::vector<char> buf;
    json j0 = value;
    fmt.encode(j0, buf);
    T back = fmt.decode(buf).template get<T>();
    if (!(back == value)) {
      std::fprintf(stderr, "%s: %s did not give the value back\n", label, fmt.name);
      std::exit(1);
    }
    const std::vector<char> bytes = buf;
    double enc = ns_per_op(c, [&] {
      buf.clear();
      json j = value;
      fmt.encode(j, buf);
      keep(buf);
    });
    double dec = ns_per_op(c, [&] {
      T v = fmt.decode(bytes).template get<T>();
      keep(v);
    });
    double total = enc + dec;
    if (f == 0) msgpack_ns = total;
    row[f] = {total, bytes.size()};
    double per_s = 1e9 / total;
    std::array<char, 32> rate{};
    if (per_s >= 1e6)
      std::snprintf(rate.data(), rate.size(), "%.2f M/s", per_s / 1e6);
    else
      std::snprintf(rate.data(), rate.size(), "%.1f k/s", per_s / 1e3);
    std::printf("%-28s %-20s %7zu %11.0f %11.0f %12s %11.2fx\n", f == 0 ? label : "", fmt.name,
                bytes.size(), enc, dec, rate.data(), total / msgpack_ns);
  }
  results.push_back(row);
}

// ---- cfx's own path: detail::encode_value / decode_value ----------------------------------

/// What wire.hpp does for a non-raw value, for a value of any type: a u32 length and
/// MessagePack through nlohmann::json, and back.
template <class T>
void msgpack_put(cfx::detail::Writer& w, const T& v) {
  json j = v;
  auto at = w.size();
  w.put(std::uint32_t{0});
  json::to_msgpack(j, w.buffer());
  auto n = static_cast<std::uint32_t>(w.size() - at - sizeof(std::uint32_t));
  std::memcpy(w.buffer().data() + at, &n, sizeof(n));
}
template <class T>
void msgpack_get(cfx::detail::Reader& r, T& v) {
  auto n = r.get<std::uint32_t>();
  const char* p = r.take(n);
  v = json::from_msgpack(p, p + n).template get<T>();
}

/// Round trips (encode + decode) of one value through `put` and `get`: ns and bytes.
template <class T, class Put, class Get>
Cell round_trip(const Config& c, const T& value, Put put, Get get) {
  std::vector<char> buf;
  cfx::detail::Writer w(buf);
  put(w, value);
  T back{};
  cfx::detail::Reader r0(buf.data(), buf.size());
  get(r0, back);
  if (!(back == value)) {
    std::fprintf(stderr, "cfx wire path did not give the value back\n");
    std::exit(1);
  }
  std::size_t bytes = buf.size();
  double ns = ns_per_op(c, [&] {
    buf.clear();
    put(w, value);
    cfx::detail::Reader r(buf.data(), buf.size());
    T v{};
    get(r, v);
    keep(v);
  });
  return {ns, bytes};
}

void fast_path_row(const char* label, const char* how, Cell fast, Cell msgpack) {
  std::printf("%-28s %-36s %7zu %11.1f %10.1fx\n", label, how, fast.bytes, fast.ns,
              msgpack.ns / fast.ns);
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  Config c = parse_args(argc, argv);
  std::printf(
      "codec: nlohmann::json %d.%d.%d binary formats on cfx's typical payloads; best of %d "
      "batches of >= %.0f ms\n\n",
      NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR, NLOHMANN_JSON_VERSION_PATCH,
      c.repeat, c.min_seconds * 1e3);

  // The payloads. Doubles that float32 cannot hold exactly (nlohmann writes float32 when it
  // can), and ints spread over +-1,000,000 (a mix of 1-, 2-, 3- and 5-byte encodings).
  std::tuple<std::uint64_t> call{42};
  std::pair<std::uint64_t, int> result{8400511, 685};
  bench::Reading reading{"sensor-17/temperature", {}};
  for (int i = 0; i < 10; ++i) reading.values.push_back(20.0 + i * 0.1 + 1.0 / 3.0);
  std::vector<int> ints(c.ints);
  for (std::size_t i = 0; i < ints.size(); ++i)
    ints[i] = static_cast<int>((i * 2654435761u) % 2'000'001) - 1'000'000;

  std::printf("== 1. encode + decode through nlohmann::json (C++ value <-> json <-> bytes) ==\n");
  std::printf("%-28s %-20s %7s %11s %11s %12s %12s\n", "payload", "format", "bytes", "encode ns",
              "decode ns", "round trips", "time vs MP");
  measure_payload(c, "(a) call args [42]", call);
  measure_payload(c, "(b) result pair<u64,int>", result);
  measure_payload(c, "(c) {name, values[10 dbl]}", reading);
  std::string ints_label = "(d) vector<int>(" + std::to_string(c.ints) + ")";
  measure_payload(c, ints_label.c_str(), ints);

  // Geometric means over the payloads, relative to MessagePack.
  std::printf("\n%-28s %-20s %12s %12s\n", "geometric mean vs MP", "format", "time", "bytes");
  std::size_t best = 0;
  std::array<double, kFormats.size()> time_gm{}, bytes_gm{};
  for (std::size_t f = 0; f < kFormats.size(); ++f) {
    double lt = 0, lb = 0;
    for (const auto& row : results) {
      lt += std::log(row[f].ns / row[0].ns);
      lb += std::log(static_cast<double>(row[f].bytes) / static_cast<double>(row[0].bytes));
    }
    time_gm[f] = std::exp(lt / static_cast<double>(results.size()));
    bytes_gm[f] = std::exp(lb / static_cast<double>(results.size()));
    if (time_gm[f] < time_gm[best]) best = f;
    std::printf("%-28s %-20s %11.2fx %11.2fx\n", "", kFormats[f].name, time_gm[f], bytes_gm[f]);
  }
  std::size_t wins = 0;  // payloads on which MessagePack is the fastest
  for (const auto& row : results) {
    std::size_t fastest = 0;
    for (std::size_t f = 1; f < kFormats.size(); ++f)
      if (row[f].ns < row[fastest].ns) fastest = f;
    wins += fastest == 0;
  }
  double fewest = *std::min_element(bytes_gm.begin(), bytes_gm.end());
  std::array<char, 64> size_note{};
  if (fewest >= 1.0)
    std::snprintf(size_note.data(), size_note.size(), "the fewest bytes on the geometric mean");
  else
    std::snprintf(size_note.data(), size_note.size(), "bytes within %.0f%% of the fewest",
                  100.0 * (1.0 / fewest - 1.0));
  // 5%: below what run-to-run noise on this machine can tell apart.
  if (best == 0 || time_gm[best] > 0.95)
    std::printf(
        "RECOMMENDATION: keep MessagePack (fastest on %zu of %zu payloads, no format more than "
        "5%% faster on the geometric mean, %s): the measurement supports wire.hpp's choice.\n",
        wins, results.size(), size_note.data());
  else
    std::printf(
        "RECOMMENDATION: %s is %.0f%% faster than MessagePack on the geometric mean (bytes "
        "%.2fx): the measurement does not support wire.hpp's choice of MessagePack.\n",
        kFormats[best].name, 100.0 * (1.0 - time_gm[best]), bytes_gm[best]);

  std::printf(
      "\n== 2. cfx's wire path (detail::encode_value / decode_value, Writer / Reader) vs "
      "MessagePack ==\n");
  std::printf("%-28s %-36s %7s %11s %11s\n", "value", "path", "bytes", "round ns",
              "MP/this");
  auto raw_put = [](cfx::detail::Writer& w, const auto& v) { cfx::detail::encode_value(w, v); };
  auto raw_get = [](cfx::detail::Reader& r, auto& v) { cfx::detail::decode_value(r, v); };
  auto mp_put = [](cfx::detail::Writer& w, const auto& v) { msgpack_put(w, v); };
  auto mp_get = [](cfx::detail::Reader& r, auto& v) { msgpack_get(r, v); };

  std::uint64_t u = 42;
  static_assert(cfx::detail::is_raw_v<std::uint64_t>);
  static_assert(cfx::detail::is_raw_v<std::pair<std::uint64_t, int>>);
  static_assert(!cfx::detail::is_raw_v<std::vector<int>>);
  Cell u_mp = round_trip(c, u, mp_put, mp_get);
  fast_path_row("uint64 (an argument)", "MessagePack (u32 length + json)", u_mp, u_mp);
  fast_path_row("", "cfx encode_value: raw bytes", round_trip(c, u, raw_put, raw_get), u_mp);
  Cell p_mp = round_trip(c, result, mp_put, mp_get);
  fast_path_row("pair<uint64,int> (a result)", "MessagePack (u32 length + json)", p_mp, p_mp);
  fast_path_row("", "cfx encode_value: raw bytes", round_trip(c, result, raw_put, raw_get), p_mp);
  Cell v_mp = round_trip(c, ints, mp_put, mp_get);
  fast_path_row(ints_label.c_str(), "cfx encode_value: MessagePack", round_trip(c, ints, raw_put, raw_get), v_mp);
  // Not in cfx: what a raw path for vectors of numbers would cost, for scale.
  auto vec_put = [](cfx::detail::Writer& w, const std::vector<int>& v) {
    w.put(static_cast<std::uint32_t>(v.size()));
    w.put_bytes(v.data(), v.size() * sizeof(int));
  };
  auto vec_get = [](cfx::detail::Reader& r, std::vector<int>& v) {
    auto n = r.get<std::uint32_t>();
    v.resize(n);
    std::memcpy(v.data(), r.take(n * sizeof(int)), n * sizeof(int));
  };
  fast_path_row("", "(not in cfx) u32 length + memcpy", round_trip(c, ints, vec_put, vec_get),
                v_mp);
  std::printf(
      "  MP/this: how many times faster than the MessagePack path for the same value. A map "
      "chunk of\n  1000 ints is 1000 raw values (each item encoded alone), not one vector.\n");
  return 0;
}
