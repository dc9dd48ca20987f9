// NDJSON framing: lmx::transport::line_buffer fed the way a stream connection feeds it (take()
// until nothing comes out, then prepare()/commit() one read of random size), checked against a
// plain split of the whole byte stream:
// - the messages are the '\n'-separated lines, one trailing '\r' stripped, empty lines skipped;
// - message_too_large comes exactly when a line is longer than max (after every message before
//   it), or at the end when the unfinished tail can no longer be a message of at most max bytes;
// - the buffer never grows past max + 2 bytes (a max-sized message and its "\r\n").

#include "fuzz_support.hpp"

#include <lmx/transport/error.hpp>
#include <lmx/transport/line_buffer.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct expected_split {
    std::vector<std::string> messages;
    bool too_large = false;
};

expected_split split(std::string_view all, std::size_t max) {
    // line_buffer caps max so that max + slack cannot overflow; the cap is far beyond any input.
    max = std::min(max, std::numeric_limits<std::size_t>::max() / 4);
    expected_split out;
    std::size_t begin = 0;
    for (std::size_t nl; (nl = all.find('\n', begin)) != std::string_view::npos; begin = nl + 1) {
        std::string_view line = all.substr(begin, nl - begin);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > max) {
            out.too_large = true;
            return out;
        }
        if (!line.empty()) out.messages.emplace_back(line);
    }
    // An unfinished line of max + 1 bytes may still be a max-sized message and its '\r'.
    out.too_large = all.size() - begin > max + 1;
    return out;
}

std::size_t pick_max(FuzzedDataProvider& in) {
    switch (in.ConsumeIntegralInRange(0, 7)) {
        case 0: return 0;
        case 1: return std::numeric_limits<std::size_t>::max();
        case 2: return in.ConsumeIntegralInRange<std::size_t>(64, 4096);
        default: return in.ConsumeIntegralInRange<std::size_t>(1, 40);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const std::size_t max = pick_max(in);
    const std::size_t initial = in.ConsumeBool() ? 16 * 1024 : in.ConsumeIntegralInRange<std::size_t>(0, 64);
    const std::size_t cap = std::min(max, std::numeric_limits<std::size_t>::max() / 4) + 2;

    lmx::transport::line_buffer buffer(max, initial);
    std::string fed;
    std::vector<std::string> got;
    bool too_large = false;
    std::vector<std::string_view> batch;

    // take() until it has nothing more; false once it reported an error.
    auto drain = [&] {
        for (;;) {
            batch.clear();
            const auto ec = buffer.take(batch);
            // Copies, since the views die at the next prepare().
            for (auto m : batch) got.emplace_back(m);
            if (ec) {
                LMX_FUZZ_CHECK(ec == lmx::transport::error::message_too_large);
                LMX_FUZZ_CHECK(batch.empty());
                too_large = true;
                return false;
            }
            if (batch.empty()) return true;
        }
    };

    // Read sizes come from the back of the input, the bytes read from the front.
    while (in.remaining_bytes() > 0) {
        if (!drain()) break;
        LMX_FUZZ_CHECK(buffer.buffered() < cap);
        const std::size_t read_size = in.ConsumeIntegralInRange<std::size_t>(1, 96);
        const std::string chunk = in.ConsumeBytesAsString(read_size);
        const auto space = buffer.prepare();
        LMX_FUZZ_CHECK(!space.empty());
        LMX_FUZZ_CHECK(buffer.capacity() <= cap);
        const std::size_t n = std::min(space.size(), chunk.size());
        std::memcpy(space.data(), chunk.data(), n);
        buffer.commit(n);
        fed.append(chunk, 0, n);
    }
    if (!too_large) drain();

    const expected_split want = split(fed, max);
    LMX_FUZZ_CHECK(got == want.messages);
    LMX_FUZZ_CHECK(too_large == want.too_large);
    return 0;
}
