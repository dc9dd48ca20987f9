// Request codec: request_parser::parse on arbitrary bytes, as a broker session reads frames.
//
// Properties, for the default limits and for tight ones (which reach every limit within -max_len):
// - a decoded request re-encodes as one line that decodes to the same request;
// - the flat reader and the DOM reader agree (a copy of the frame that only the DOM reader
//   takes decodes the same);
// - a parser reused across frames answers like a fresh one;
// - a refused frame gets an error reply that is valid UTF-8 and reads back the same.

#include "fuzz_support.hpp"

#include <lmx/core/protocol.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace {

using namespace lmx::core;
using lmx::fuzz::one_line;
using lmx::fuzz::valid_utf8;

bool same(const parse_result& a, const parse_result& b) {
    if (a.ok() != b.ok()) return false;
    return a.ok() ? a.value() == b.value() : a.error() == b.error();
}

codec_limits tight_limits() {
    codec_limits l;
    l.max_message_size = 512;
    l.max_key_length = 16;
    l.max_keys = 4;
    l.max_id_length = 24;
    l.max_depth = 4;
    l.max_duration = std::chrono::hours{1};
    return l;
}

// The same limits without the frame size cap: re-encoded and padded frames may be a bit longer.
codec_limits roomy(codec_limits l) {
    l.max_message_size = 1 << 20;
    return l;
}

void check_error_reply(const parse_error& e) {
    std::string out;
    write_error(out, e);
    LMX_FUZZ_CHECK(one_line(out));
    LMX_FUZZ_CHECK(valid_utf8(out));
    const reply_result back = parse_reply(out);
    LMX_FUZZ_CHECK(back.ok());
    const reply& r = back.value();
    LMX_FUZZ_CHECK(r.type == "error");
    LMX_FUZZ_CHECK(r.uuid == e.uuid);
    LMX_FUZZ_CHECK(r.key == e.key);
    LMX_FUZZ_CHECK(r.error == std::string(e.message.empty() ? default_message(e.code) : e.message));
    LMX_FUZZ_CHECK(r.code == to_string(e.code));
}

struct codec_under_test {
    explicit codec_under_test(const codec_limits& l) : limits(l), parser(l), again(roomy(l)) {}

    void run(std::string_view frame) {
        const parse_result first = parser.parse(frame);
        LMX_FUZZ_CHECK(same(first, parse_request(frame, limits)));
        if (!first.ok()) {
            check_error_reply(first.error());
            return;
        }
        const request& req = first.value();
        LMX_FUZZ_CHECK(type_name(req) != "");

        std::string encoded;
        encode_request(req, encoded);
        LMX_FUZZ_CHECK(one_line(encoded));
        const parse_result round = again.parse(encoded);
        LMX_FUZZ_CHECK(round.ok());
        LMX_FUZZ_CHECK(round.value() == req);

        if (const auto padded = lmx::fuzz::with_ignored_member(frame)) {
            const parse_result dom = again.parse(*padded);
            LMX_FUZZ_CHECK(dom.ok());
            LMX_FUZZ_CHECK(dom.value() == req);
        }
    }

    codec_limits limits;
    request_parser parser;  // kept across inputs, like a connection's
    request_parser again;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static codec_under_test defaults{codec_limits{}};
    static codec_under_test tight{tight_limits()};
    const std::string_view frame(reinterpret_cast<const char*>(data), size);
    defaults.run(frame);
    tight.run(frame);
    return 0;
}
