// The reference job: Project Euler 14. Which start below a limit gives the longest
// Collatz chain? Shared by examples/collatz.cpp and bench/collatz.cpp.
#pragma once

#include <cstdint>
#include <utility>

namespace collatz {

/// Number of steps from n down to 1 (chain_length(1) == 0, chain_length(837799) == 524).
inline int chain_length(std::uint64_t n) {
  int length = 0;
  while (n != 1) {
    n = (n % 2 == 0) ? n / 2 : 3 * n + 1;
    ++length;
  }
  return length;
}

/// (start, length) of the longest chain; the smaller start wins a tie.
using Best = std::pair<std::uint64_t, int>;

inline Best better(Best a, Best b) {
  if (b.second > a.second || (b.second == a.second && b.first < a.first)) return b;
  return a;
}

/// The longest chain among starts in [first, last).
inline Best longest_in(std::uint64_t first, std::uint64_t last) {
  Best best{0, 0};
  for (std::uint64_t n = first; n < last; ++n) best = better(best, {n, chain_length(n)});
  return best;
}

}  // namespace collatz
