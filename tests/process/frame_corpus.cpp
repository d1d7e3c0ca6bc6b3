// The fuzzer's findings, kept (fuzz/frames.cpp, docs/fuzzing.md): every file in
// tests/faults/corpus/ is run through the same decoding routine as the fuzzer
// (fuzz/decode_frames.hpp), and must end in success or a cfx::Error, the channel given up on.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <cfx/errors.hpp>

#include "fuzz/decode_frames.hpp"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> corpus_files() {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(fs::path(CFX_FAULTS_CORPUS)))
    if (entry.is_regular_file() && entry.path().filename().string()[0] != '.')
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// "ok", "cfx::Error: ..." or a description of the bug.
std::string outcome(const std::vector<std::uint8_t>& input) {
  try {
    cfx_fuzz::decode_frames(input.data(), input.size());
    return "ok";
  } catch (const cfx::Error& e) {
    return std::string("cfx::Error: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("BUG: ") + e.what();
  } catch (...) {
    return "BUG: an exception not derived from std::exception";
  }
}

}  // namespace

TEST_SUITE("process channel") {
  TEST_CASE("frame corpus: every kept input ends in success or a cfx::Error") {
    auto files = corpus_files();
    CHECK(files.size() >= 3);
    for (const auto& file : files) {
      CAPTURE(file.filename().string());
      auto result = outcome(read_file(file));
      MESSAGE(file.filename().string() << ": " << result);
      CHECK(result.rfind("BUG", 0) != 0);
    }
  }

  TEST_CASE("frame corpus: the fuzzer's seeds decode without an error") {
    // Valid streams: nothing in them is refused, on either side.
    for (const auto& seed : cfx_fuzz::seed_inputs()) {
      CAPTURE(seed.name);
      CHECK(outcome(seed.bytes) == "ok");
      // The same stream in every pattern of reads.
      for (unsigned seed_byte = 0; seed_byte < 128; seed_byte += 9) {
        auto input = seed.bytes;
        input[0] = static_cast<std::uint8_t>((input[0] & 1) | seed_byte << 1);
        CHECK(outcome(input) == "ok");
      }
    }
  }

  TEST_CASE("frame corpus: a cut stream or a wrong call ends in a cfx::Error, not a bug") {
    for (const auto& seed : cfx_fuzz::seed_inputs()) {
      CAPTURE(seed.name);
      const std::size_t prefix = (seed.bytes[0] & 1) ? 1 : 2;
      for (std::size_t cut = prefix; cut < seed.bytes.size(); cut += 1 + cut / 8) {
        CAPTURE(cut);
        std::vector<std::uint8_t> input(seed.bytes.begin(),
                                        seed.bytes.begin() + static_cast<std::ptrdiff_t>(cut));
        CHECK(outcome(input).rfind("BUG", 0) != 0);
        // A byte flipped where the stream is cut.
        input = seed.bytes;
        input[cut] ^= 0x5a;
        CHECK(outcome(input).rfind("BUG", 0) != 0);
      }
    }
  }
}
