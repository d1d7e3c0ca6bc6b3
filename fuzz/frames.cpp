// libFuzzer target for the frame decoders of both ends of a process pool's channel: the
// pool's (check_reply_header, read_reply, a future decoding the results and the exception)
// and the worker's (answer_call). The input format and what counts as a bug are in
// decode_frames.hpp; docs/fuzzing.md says how to build and run it.
//
// CFX_FUZZ_WRITE_SEEDS=<dir> frames  writes the seed corpus (decode_frames.hpp, seed_inputs)
// into <dir> and exits.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <cfx/errors.hpp>

#include "fuzz/decode_frames.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("CFX_FUZZ_WRITE_SEEDS")) {
    for (const auto& seed : cfx_fuzz::seed_inputs()) {
      std::string path = std::string(dir) + "/" + seed.name;
      std::FILE* f = std::fopen(path.c_str(), "wb");
      if (!f || std::fwrite(seed.bytes.data(), 1, seed.bytes.size(), f) != seed.bytes.size() ||
          std::fclose(f) != 0) {
        std::perror(path.c_str());
        std::exit(1);
      }
      std::printf("%s: %zu bytes\n", path.c_str(), seed.bytes.size());
    }
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    cfx_fuzz::decode_frames(data, size);
  } catch (const cfx::Error&) {
    // Where the real end gives up on the channel. Anything else escapes: a bug.
  }
  return 0;
}
