// codec: which binary encoding of nlohmann::json should carry the process backend's values?
// MessagePack (what include/cfx/detail/wire.hpp uses for non-trivial types) beside CBOR,
// BJData and UBJSON, on the payloads a task call typically carries, and cfx's raw fast path
// (numbers and tuples of numbers copied as bytes) beside MessagePack for the same values.
//
//   codec [--repeat N] [--min-ms N] [--ints N]   (--help lists them)
//
// Each figure is the best of --repeat (default 3) batches of at least --min-ms (default 50)
// milliseconds. Encode = C++ value -> json -> bytes (into a reused buffer); decode = bytes ->
// json -> C++ value: the whole path a value takes in cfx. Every format's decoded value is
// checked against the original (a mismatch exits 1).
#include <algorithm>
#include <array>
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

#include "common.hpp"

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

struct Config {
  int repeat = 3;
  std::size_t min_ms = 50;
  std::size_t ints = 1000;
};

Config parse_args(int argc, char** argv) {
  Config c;
  bench::Flags("codec", "nlohmann::json's binary formats and cfx's wire path on typical payloads")
      .value("--repeat", c.repeat, "batches per figure, the best is printed")
      .value("--min-ms", c.min_ms, "milliseconds a batch lasts at least")
      .value("--ints", c.ints, "ints in the vector payload")
      .parse(argc, argv);
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
  auto run_batch = [&] {
    auto t0 = bench::Clock::now();
    for (std::size_t i = 0; i < batch; ++i) op();
    return bench::seconds_since(t0);
  };
  double secs = run_batch();
  for (; secs < static_cast<double>(c.min_ms) / 1e3; secs = run_batch()) batch *= 2;
  // The batch that reached min_ms counts as the first of the `repeat`.
  double best = std::min(secs, bench::best_of(c.repeat - 1, run_batch));
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

const bench::Table kPayloadTable({{"payload", 28, bench::Align::left},
                                  {"format", 20, bench::Align::left},
                                  {"bytes", 7},
                                  {"encode ns", 11},
                                  {"decode ns", 11},
                                  {"round trips", 12},
                                  {"time vs MP", 12}});

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
    kPayloadTable.row({f == 0 ? label : "", fmt.name, std::to_string(bytes.size()),
                       bench::fmt("%.0f", enc), bench::fmt("%.0f", dec), bench::rate(1e9 / total),
                       bench::times(total / msgpack_ns)});
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

const bench::Table kWireTable({{"value", 28, bench::Align::left},
                               {"path", 36, bench::Align::left},
                               {"bytes", 7},
                               {"round ns", 11},
                               {"MP/this", 11}});

void fast_path_row(const char* label, const char* how, Cell fast, Cell msgpack) {
  kWireTable.row({label, how, std::to_string(fast.bytes), bench::fmt("%.1f", fast.ns),
                  bench::times(msgpack.ns / fast.ns, 1)});
}

/// Payloads on which MessagePack is the fastest format.
std::size_t msgpack_wins() {
  std::size_t wins = 0;
  for (const auto& row : results) {
    std::size_t fastest = 0;
    for (std::size_t f = 1; f < kFormats.size(); ++f)
      if (row[f].ns < row[fastest].ns) fastest = f;
    wins += fastest == 0;
  }
  return wins;
}

/// How MessagePack's size compares; `fewest`: the smallest geometric mean of bytes vs MP.
std::string size_note(double fewest) {
  if (fewest >= 1.0) return "the fewest bytes on the geometric mean";
  return bench::fmt("bytes within %.0f%% of the fewest", 100.0 * (1.0 / fewest - 1.0));
}

/// Geometric means over the payloads, relative to MessagePack, and what they recommend.
void means_section() {
  bench::Table table({{"geometric mean vs MP", 28, bench::Align::left},
                      {"format", 20, bench::Align::left},
                      {"time", 12},
                      {"bytes", 12}});
  std::printf("\n");
  table.header();
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
    table.row({"", kFormats[f].name, bench::times(time_gm[f]), bench::times(bytes_gm[f])});
  }
  // 5%: below what run-to-run noise on this machine can tell apart.
  if (best == 0 || time_gm[best] > 0.95)
    std::printf(
        "RECOMMENDATION: keep MessagePack (fastest on %zu of %zu payloads, no format more than "
        "5%% faster on the geometric mean, %s): the measurement supports wire.hpp's choice.\n",
        msgpack_wins(), results.size(),
        size_note(*std::min_element(bytes_gm.begin(), bytes_gm.end())).c_str());
  else
    std::printf(
        "RECOMMENDATION: %s is %.0f%% faster than MessagePack on the geometric mean (bytes "
        "%.2fx): the measurement does not support wire.hpp's choice of MessagePack.\n",
        kFormats[best].name, 100.0 * (1.0 - time_gm[best]), bytes_gm[best]);
}

/// cfx's raw fast path beside MessagePack for the same values.
void wire_section(const Config& c, const std::pair<std::uint64_t, int>& result,
                  const std::vector<int>& ints, const std::string& ints_label) {
  std::printf(
      "\n== 2. cfx's wire path (detail::encode_value / decode_value, Writer / Reader) vs "
      "MessagePack ==\n");
  kWireTable.header();
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
  fast_path_row(ints_label.c_str(), "cfx encode_value: MessagePack",
                round_trip(c, ints, raw_put, raw_get), v_mp);
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
}

}  // namespace

int main(int argc, char** argv) {
  cfx::init(argc, argv);
  Config c = parse_args(argc, argv);
  std::printf(
      "codec: nlohmann::json %d.%d.%d binary formats on cfx's typical payloads; best of %d "
      "batches of >= %zu ms\n\n",
      NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR, NLOHMANN_JSON_VERSION_PATCH,
      c.repeat, c.min_ms);

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
  kPayloadTable.header();
  measure_payload(c, "(a) call args [42]", call);
  measure_payload(c, "(b) result pair<u64,int>", result);
  measure_payload(c, "(c) {name, values[10 dbl]}", reading);
  std::string ints_label = "(d) vector<int>(" + std::to_string(c.ints) + ")";
  measure_payload(c, ints_label.c_str(), ints);

  means_section();
  wire_section(c, result, ints, ints_label);
  return 0;
}
