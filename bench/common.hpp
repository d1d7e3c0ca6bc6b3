// What the benchmarks in bench/ share: command-line flags, timing, the Python peers' output,
// and aligned tables of figures and cfx/peer ratios. Header-only: each benchmark is a single
// translation unit, and process_overhead and codec must link nothing but cfx.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <concepts>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bench {

// ---- formatting ---------------------------------------------------------------------------

/// printf into a std::string; the attribute lets the compiler check formats and arguments.
[[gnu::format(printf, 1, 2)]] inline std::string fmt(const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list again;
  va_copy(again, args);
  int n = std::vsnprintf(nullptr, 0, format, args);
  va_end(args);
  std::string out(static_cast<std::size_t>(std::max(n, 0)), '\0');
  std::vsnprintf(out.data(), out.size() + 1, format, again);
  va_end(again);
  return out;
}

/// Events per second as "5.68 M/s" or "92.9 k/s"; "n/a" for a figure nobody measured.
inline std::string rate(std::optional<double> per_s) {
  if (!per_s) return "n/a";
  if (*per_s >= 1e6) return fmt("%.2f M/s", *per_s / 1e6);
  return fmt("%.1f k/s", *per_s / 1e3);
}

/// A ratio as "2.92x".
inline std::string times(double r, int digits = 2) {
  return fmt("%.*fx", digits, r);
}

/// cfx's figure over a peer's as "2.92x", or "n/a" without a peer figure. `small_digits`:
/// decimals below 0.1, where two would round a 0.003x down to nothing.
inline std::string ratio(double cfx, std::optional<double> peer, int small_digits = 2) {
  if (!peer || *peer <= 0) return "n/a";
  double r = cfx / *peer;
  return times(r, r < 0.1 ? small_digits : 2);
}

/// Terminal columns of UTF-8 text: continuation bytes take none ("µ" is two bytes, one column).
inline std::size_t columns(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0) != 0x80; }));
}

enum class Align { left, right };

struct Column {
  std::string title;
  std::size_t width = 0;  // in terminal columns; a longer cell pushes the rest of its row
  Align align = Align::right;
  std::size_t gap = 1;  // spaces before the column; none before the first
};

/// Rows of cells padded to their columns, so that figures line up under their titles.
class Table {
 public:
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

  /// The titles, then `note` (how to read the figures) three spaces further.
  void header(std::string_view note = "") const {
    std::vector<std::string> titles;
    for (const auto& c : columns_) titles.push_back(c.title);
    std::string text = line(titles);
    if (!note.empty()) text += "   " + std::string(note);
    std::printf("%s\n", text.c_str());
  }

  /// One row; missing cells at the end are blank.
  void row(const std::vector<std::string>& cells) const {
    std::printf("%s\n", line(cells).c_str());
  }

 private:
  std::string line(const std::vector<std::string>& cells) const {
    std::string out;
    for (std::size_t i = 0; i < columns_.size(); ++i) {
      const Column& c = columns_[i];
      const std::string& cell = i < cells.size() ? cells[i] : std::string();
      std::string pad(c.width - std::min(c.width, columns(cell)), ' ');
      if (i > 0) out.append(c.gap, ' ');
      out += c.align == Align::left ? cell + pad : pad + cell;
    }
    // Blank trailing cells would leave invisible spaces that only confuse diffs.
    out.erase(out.find_last_not_of(' ') + 1);
    return out;
  }

  std::vector<Column> columns_;
};

inline const char* verdict(std::optional<bool> met) {
  return !met ? "SKIP" : *met ? "PASS" : "MISS";
}

/// "GOAL <what> <figure> PASS|MISS|SKIP" lines. Goals do not change the exit status: a slow
/// run is data, not a failure.
class Goals {
 public:
  Goals(std::size_t what_width, std::size_t figure_width)
      : table_({{"", 4, Align::left},
                {"", what_width, Align::left},
                {"", figure_width, Align::left},
                {"", 0, Align::left}}) {}

  /// met: nullopt when the figure could not be measured (no Python peer).
  void operator()(const std::string& what, std::optional<bool> met,
                  const std::string& figure) const {
    table_.row({"GOAL", what, figure, verdict(met)});
  }

 private:
  Table table_;
};

// ---- command-line flags -------------------------------------------------------------------

/// "--name value", "--name=value" and valueless "--name" flags. --help lists them with their
/// defaults; an unknown flag, a missing or malformed value exits 2 with a message.
class Flags {
 public:
  /// `about`: what the program measures, the first line of --help.
  Flags(std::string program, std::string about)
      : program_(std::move(program)), about_(std::move(about)) {}

  /// --name N into `target`, whose value now is the default that --help shows.
  template <std::integral T>
  Flags& value(std::string name, T& target, std::string help) {
    auto set = [&target](std::string_view text) {
      auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), target);
      return error == std::errc() && end == text.data() + text.size();
    };
    specs_.push_back({std::move(name), " N",
                      std::move(help) + " (default " + std::to_string(target) + ")", set});
    return *this;
  }

  /// --name alone sets `target` to `to`.
  Flags& flag(std::string name, bool& target, bool to, std::string help) {
    specs_.push_back({std::move(name), "", std::move(help), [&target, to](std::string_view) {
                        target = to;
                        return true;
                      }});
    return *this;
  }

  /// Applies argv[1..] to the targets; --help prints the list and exits 0.
  void parse(int argc, char** argv) const {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg = argv[i];
      if (arg == "--help" || arg == "-h") help();
      auto eq = arg.find('=');
      const Spec& spec = find(arg.substr(0, eq));
      std::optional<std::string_view> text;
      if (eq != std::string_view::npos)
        text = arg.substr(eq + 1);
      else if (spec.takes_value() && i + 1 < argc)
        text = argv[++i];
      apply(spec, text);
    }
  }

 private:
  struct Spec {
    std::string name;
    std::string metavar;  // " N" for a flag that takes a value
    std::string help;
    std::function<bool(std::string_view)> set;
    bool takes_value() const { return !metavar.empty(); }
  };

  const Spec& find(std::string_view name) const {
    for (const auto& s : specs_)
      if (s.name == name) return s;
    fail("unknown flag " + std::string(name));
  }

  void apply(const Spec& spec, std::optional<std::string_view> text) const {
    if (!spec.takes_value() && text) fail(spec.name + " takes no value");
    if (spec.takes_value() && !text) fail(spec.name + " needs a value");
    if (!spec.set(text.value_or(""))) {
      fail(spec.name + " wants a whole number in range, not '" + std::string(*text) + "'");
    }
  }

  [[noreturn]] void fail(const std::string& why) const {
    std::fprintf(stderr, "%s: %s (--help lists the flags)\n", program_.c_str(), why.c_str());
    std::exit(2);
  }

  [[noreturn]] void help() const {
    std::printf("%s: %s\nusage: %s [flags]\n", program_.c_str(), about_.c_str(), program_.c_str());
    std::size_t width = 6;  // "--help"
    for (const auto& s : specs_) width = std::max(width, s.name.size() + s.metavar.size());
    for (const auto& s : specs_) {
      std::string left = s.name + s.metavar;
      std::printf("  %-*s  %s\n", static_cast<int>(width), left.c_str(), s.help.c_str());
    }
    std::printf("  %-*s  %s\n", static_cast<int>(width), "--help", "this list");
    std::exit(0);
  }

  std::string program_;
  std::string about_;
  std::vector<Spec> specs_;
};

// ---- timing -------------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// The least of `repeat` values of measure() (+inf for none): noise on a shared machine only
/// ever adds time.
template <class Measure>
double best_of(int repeat, Measure measure) {
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < repeat; ++i) best = std::min(best, static_cast<double>(measure()));
  return best;
}

/// How often a busy core of this machine stops running its thread, and for how long: the
/// clock read in a loop for `span`, every gap over 5 µs counted. A virtual machine's host
/// (its other guests, its timer) makes these; no code avoids them, and a round trip of T µs
/// meets one about rate × T of the time, which sets a floor under any latency percentile.
struct Stalls {
  double per_s = 0;
  double median_us = 0;
};

inline Stalls core_stalls(std::chrono::milliseconds span) {
  std::vector<double> gaps;
  auto start = Clock::now();
  auto last = start;
  for (auto now = last; now - start < span; last = now) {
    now = Clock::now();
    double us = std::chrono::duration<double, std::micro>(now - last).count();
    if (us > 5) gaps.push_back(us);
  }
  Stalls s;
  s.per_s = static_cast<double>(gaps.size()) / std::chrono::duration<double>(span).count();
  if (!gaps.empty()) {
    std::nth_element(gaps.begin(), gaps.begin() + gaps.size() / 2, gaps.end());
    s.median_us = gaps[gaps.size() / 2];
  }
  return s;
}

/// A job with untimed setup: it calls start() right before the part to time, and the clock
/// stops when it returns.
using Job = std::function<void(const std::function<void()>& start)>;

inline double timed(const Job& job) {
  Clock::time_point t0;
  job([&] { t0 = Clock::now(); });
  return seconds_since(t0);
}

/// Seconds of the fastest of `repeat` runs of job.
inline double best_time(int repeat, const Job& job) {
  return best_of(repeat, [&] { return timed(job); });
}

/// Exits 1 unless `sum` is 0 + 1 + ... + (n - 1): a map that lost or changed an item must not
/// print a figure as if it had worked.
inline void check_sum(const char* who, std::uint64_t sum, std::uint64_t n) {
  if (sum == n * (n - 1) / 2) return;
  std::fprintf(stderr, "%s: wrong map result %llu\n", who, static_cast<unsigned long long>(sum));
  std::exit(1);
}

// ---- Python peers -------------------------------------------------------------------------

/// A peer's figures by key, from its "key value..." lines.
using Figures = std::map<std::string, std::vector<double>>;

/// One "--name value" argument for a peer script.
struct PeerArg {
  template <std::integral T>
  PeerArg(const char* name, T value) : text(std::string(name) + " " + std::to_string(value)) {}
  std::string text;
};

inline Figures parse_figures(const std::string& output) {
  Figures out;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string key;
    std::vector<double> values;
    words >> key;
    for (double v; words >> v;) values.push_back(v);
    if (!values.empty()) out[key] = std::move(values);
  }
  return out;
}

/// Runs bench/peers/`script` under $CFX_BENCH_PYTHON (default /usr/bin/python3) and reads its
/// figures; none if it could not run, as the C++ figures are still worth printing.
inline Figures run_peer(const std::string& script, std::initializer_list<PeerArg> args) {
  const char* python = std::getenv("CFX_BENCH_PYTHON");
  std::string cmd =
      std::string(python ? python : "/usr/bin/python3") + " " CFX_BENCH_PEERS "/" + script;
  for (const auto& a : args) cmd += " " + a.text;
  std::fflush(nullptr);  // what this program printed comes before anything the peer writes
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return {};
  std::string output;
  std::array<char, 4096> buf{};
  for (std::size_t n; (n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0;)
    output.append(buf.data(), n);
  if (pclose(pipe) != 0) std::fprintf(stderr, "python peer failed: %s\n", cmd.c_str());
  return parse_figures(output);
}

/// The first value under `key`; nullopt when the peer did not report it.
inline std::optional<double> lookup(const Figures& figures, const std::string& key) {
  auto it = figures.find(key);
  if (it == figures.end() || it->second.empty()) return std::nullopt;
  return it->second.front();
}

}  // namespace bench
