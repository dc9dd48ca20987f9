// NDJSON framing: lmx::transport::line_buffer fed the way a stream connection feeds it (take()
// until nothing comes out, then prepare()/commit() one read of random size), checked against a
// plain split of the whole byte stream:
// - the messages are the '\n'-separated lines, one trailing '\r' stripped, empty lines skipped;
// - a line longer than max is skipped: message_skipped comes in its place (after every message
//   before it, before every one after it), with the line's length and its first and last bytes;
// - the buffer never grows past max + 2 bytes (a max-sized message and its "\r\n"), however long
//   a line is.

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

// One thing take() hands out: a message, or the report of a skipped line.
struct event {
    bool skipped = false;
    std::string text;  // the message; for a skipped line its kept head and tail, '|' between
    std::size_t size = 0;
    bool operator==(const event&) const = default;
};

std::vector<event> split(std::string_view all, std::size_t max) {
    // line_buffer caps max so that max + slack cannot overflow; the cap is far beyond any input.
    max = std::min(max, std::numeric_limits<std::size_t>::max() / 4);
    constexpr std::size_t keep = lmx::transport::line_buffer::skipped_excerpt;
    std::vector<event> out;
    std::size_t begin = 0;
    for (std::size_t nl; (nl = all.find('\n', begin)) != std::string_view::npos; begin = nl + 1) {
        const std::string_view raw = all.substr(begin, nl - begin);
        std::string_view line = raw;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > max) {
            const auto n = std::min(keep, raw.size());
            out.push_back(
                {true, std::string(raw.substr(0, n)) + "|" + std::string(raw.substr(raw.size() - n)), raw.size()});
        } else if (!line.empty()) {
            out.push_back({false, std::string(line), 0});
        }
    }
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
    std::vector<event> got;
    std::vector<std::string_view> batch;

    // take() until it has nothing more.
    auto drain = [&] {
        for (;;) {
            batch.clear();
            const auto ec = buffer.take(batch);
            // Copies, since the views die at the next prepare().
            for (auto m : batch) got.push_back({false, std::string(m), 0});
            if (ec) {
                LMX_FUZZ_CHECK(ec == lmx::transport::error::message_skipped);
                LMX_FUZZ_CHECK(batch.empty());
                const auto& s = buffer.skipped();
                got.push_back({true, s.head + "|" + s.tail, s.size});
                continue;
            }
            if (batch.empty()) return;
        }
    };

    // Read sizes come from the back of the input, the bytes read from the front.
    while (in.remaining_bytes() > 0) {
        drain();
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
    drain();

    LMX_FUZZ_CHECK(got == split(fed, max));
    return 0;
}
