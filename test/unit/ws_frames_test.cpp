// WebSocket frames (libs/transport/src/ws_frames.hpp): what the frame writer builds the reader
// reads back, whatever the split of the bytes; and every frame RFC 6455 forbids ends the reading.

#include "ws_frames.hpp"

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

namespace {

namespace ws = lmx::transport::detail::ws;

struct outcome {
    std::vector<std::string> messages;
    std::vector<ws::control_frame> controls;
    ws::read_status status = ws::read_status::more;
};

// Feeds `wire` to a reader `chunk` bytes at a time, releasing the messages after each parse.
outcome read_all(std::string_view wire, bool peer_masks, std::size_t chunk = 0, std::size_t max = 1 << 20) {
    ws::frame_reader reader(peer_masks, max);
    outcome out;
    if (chunk == 0) chunk = wire.size() + 1;
    for (std::size_t at = 0; at <= wire.size(); at += chunk) {
        const auto part = wire.substr(at, chunk);
        reader.append(part);
        std::vector<std::string_view> views;
        out.status = reader.parse(views, out.controls);
        for (auto v : views) out.messages.emplace_back(v);
        reader.release();
        if (out.status != ws::read_status::more) break;
    }
    return out;
}

std::string header(unsigned char b0, unsigned char b1) { return {static_cast<char>(b0), static_cast<char>(b1)}; }

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_frames_test)

// Every length form (7-bit, 16-bit, 64-bit), masked and not, split anyhow, reads back the same.
BOOST_AUTO_TEST_CASE(frames_read_back_whatever_the_split) {
    const std::vector<std::string> sent{"a",
                                        std::string(125, 'b'),
                                        std::string(126, 'c'),
                                        std::string(65535, 'd'),
                                        std::string(65536, 'e'),
                                        R"({"type":"lock","uuid":"1","key":"k"})"};
    std::string batch;
    for (const auto& m : sent) batch += m + "\n";
    batch += "\n";  // an empty line makes no frame
    for (const bool masked : {false, true}) {
        std::string wire;
        ws::append_text_frames(wire, batch, masked);
        for (const std::size_t chunk : {0u, 1u, 7u, 4096u}) {
            const auto got = read_all(wire, masked, chunk);
            BOOST_TEST((got.status == ws::read_status::more));
            BOOST_TEST(got.messages == sent, "masked " << masked << ", chunk " << chunk);
        }
    }
}

// A masked frame's payload is not its message: masking changes the bytes on the wire.
BOOST_AUTO_TEST_CASE(client_frames_are_masked_with_a_new_key_each) {
    std::string a, b;
    ws::append_text_frames(a, "same\nsame\n", true);
    BOOST_REQUIRE_EQUAL(a.size(), 2u * (2 + 4 + 4));
    BOOST_TEST((static_cast<unsigned char>(a[1]) & 0x80) != 0);
    BOOST_TEST(a.find("same") == std::string::npos);
    BOOST_TEST(a.substr(2, 4) != a.substr(12, 4), "two frames with one key");
    ws::append_text_frames(b, "same\n", false);
    BOOST_TEST(b == header(0x81, 4) + "same");
}

// A limit stops framing after the line that reaches it; every line, empty ones too, is accounted
// for with where its frame and its line end, so a caller can tell how much of the batch went out.
BOOST_AUTO_TEST_CASE(framing_stops_at_a_limit_and_tells_where_each_line_ended) {
    const std::string batch =
        std::string(100, 'a') + "\n\n" + std::string(100, 'b') + "\n" + std::string(100, 'c') + "\n";
    std::string wire;
    std::vector<ws::framed_line> lines;
    const std::size_t framed = ws::append_text_frames(wire, batch, false, 150, &lines);
    BOOST_TEST(framed == 203u);  // "a...\n", "\n", "b...\n": the third line passes 150 bytes
    BOOST_REQUIRE_EQUAL(lines.size(), 3u);
    BOOST_TEST(lines[0].wire_end == 102u);
    BOOST_TEST(lines[1].wire_end == 102u);  // the empty line has no frame
    BOOST_TEST(lines[1].batch_end == 102u);
    BOOST_TEST(lines[2].wire_end == wire.size());
    BOOST_TEST(lines[2].batch_end == framed);
    const auto got = read_all(wire, false, 0);
    BOOST_TEST((got.messages == std::vector<std::string>{std::string(100, 'a'), std::string(100, 'b')}));
    // Without a limit, everything; a batch whose last line has no '\n' is framed to its end.
    std::string all;
    BOOST_TEST(ws::append_text_frames(all, "x\ny", false) == 3u);
    BOOST_TEST((read_all(all, false, 0).messages == std::vector<std::string>{"x", "y"}));
}

// Fragments join into one message, with control frames between them answered on their own.
BOOST_AUTO_TEST_CASE(fragments_join_and_pings_between_them_are_kept) {
    std::string wire = header(0x01, 3) + "abc";  // text, not final
    ws::append_frame(wire, ws::opcode::ping, "p");
    wire += header(0x00, 2) + "de";  // continuation, not final
    ws::append_frame(wire, ws::opcode::pong, "ignored");
    wire += header(0x80, 1) + "f";  // final continuation
    wire += header(0x81, 1) + "g";
    for (const std::size_t chunk : {0u, 1u, 3u}) {
        const auto got = read_all(wire, false, chunk);
        BOOST_TEST((got.status == ws::read_status::more));
        BOOST_TEST(got.messages == (std::vector<std::string>{"abcdef", "g"}));
        BOOST_REQUIRE_EQUAL(got.controls.size(), 1u);
        BOOST_TEST((got.controls[0].op == ws::opcode::ping));
        BOOST_TEST(got.controls[0].payload == "p");
    }
}

// A close ends the reading with its payload kept for the answer; what follows it is not read.
BOOST_AUTO_TEST_CASE(a_close_ends_the_reading) {
    std::string wire = header(0x81, 1) + "x";
    ws::append_frame(wire, ws::opcode::close, std::string("\x03\xe8", 2) + "bye");
    wire += header(0x81, 1) + "y";
    const auto got = read_all(wire, false);
    BOOST_TEST((got.status == ws::read_status::closed));
    BOOST_TEST(got.messages == std::vector<std::string>{"x"});
    BOOST_REQUIRE_EQUAL(got.controls.size(), 1u);
    BOOST_TEST(got.controls[0].payload.substr(0, 2) == std::string("\x03\xe8", 2));
}

// Each of these breaks RFC 6455 and ends the connection.
BOOST_AUTO_TEST_CASE(forbidden_frames_end_the_reading) {
    const std::vector<std::pair<std::string, std::string>> bad{
        {"rsv bit set", header(0xc1, 1) + "x"},
        {"unknown opcode", header(0x83, 1) + "x"},
        {"unmasked frame to a server", header(0x81, 1) + "x"},
        {"16-bit length under 126", header(0x81, 0x80 | 126) + std::string("\x00\x05", 2) + "kkkk" + "hello"},
        {"continuation without a start", header(0x80 | 0x00, 0x80 | 1) + "kkkk" + "x"},
        {"text inside a fragmented message", header(0x01, 0x80 | 1) + "kkkkx" + header(0x81, 0x80 | 1) + "kkkky"},
        {"fragmented control frame", header(0x09, 0x80 | 0) + "kkkk"},
        {"control frame over 125 bytes",
         header(0x89, 0x80 | 126) + std::string("\x00\x7e", 2) + "kkkk" + std::string(126, 'p')},
        {"close with a one-byte payload", header(0x88, 0x80 | 1) + "kkkk" + "x"},
    };
    for (const auto& [why, wire] : bad) {
        for (const std::size_t chunk : {0u, 1u}) {
            const auto got = read_all(wire, true, chunk);
            BOOST_TEST((got.status == ws::read_status::bad_frame), why << ", chunk " << chunk);
            BOOST_TEST(got.messages.empty(), why);
        }
    }
    // And from a server: a masked frame.
    std::string masked;
    ws::append_frame(masked, ws::opcode::text, "x", true, 0x01020304);
    BOOST_TEST((read_all(masked, false).status == ws::read_status::bad_frame));
}

// A text message must be well-formed UTF-8, whole or joined from fragments; a binary one may be anything.
BOOST_AUTO_TEST_CASE(text_messages_must_be_utf8) {
    const std::string good = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92 plain ascii to pass the eight-byte path";
    BOOST_TEST(read_all(header(0x81, static_cast<unsigned char>(good.size())) + good, false).messages ==
               std::vector<std::string>{good});
    // Split inside a sequence across fragments: still one good message.
    const std::string joined = header(0x01, 4) + good.substr(0, 4) +
                               header(0x80, static_cast<unsigned char>(good.size() - 4)) + good.substr(4);
    BOOST_TEST(read_all(joined, false).messages == std::vector<std::string>{good});
    for (const std::string& bad :
         {std::string("\xc0\xaf"), std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"),
          std::string("\xe2\x82"), std::string("\xff"), std::string("ok\x80")}) {
        const auto wire = header(0x81, static_cast<unsigned char>(bad.size())) + bad;
        BOOST_TEST((read_all(wire, false).status == ws::read_status::bad_frame));
        BOOST_TEST(
            (read_all(header(0x01, 0) + header(0x80, static_cast<unsigned char>(bad.size())) + bad, false).status ==
             ws::read_status::bad_frame));
        BOOST_TEST(read_all(header(0x82, static_cast<unsigned char>(bad.size())) + bad, false).messages ==
                   std::vector<std::string>{bad});
    }
}

// A message over the limit is refused from its header, before its payload is received.
BOOST_AUTO_TEST_CASE(a_message_over_the_limit_is_refused_from_its_header) {
    std::string wire;
    ws::append_frame(wire, ws::opcode::text, std::string(100, 'a'));
    ws::append_frame(wire, ws::opcode::text, std::string(101, 'b'));
    auto got = read_all(wire.substr(0, wire.size() - 101), false, 0, 100);  // the second header only
    BOOST_TEST((got.status == ws::read_status::too_large));
    BOOST_TEST(got.messages == std::vector<std::string>{std::string(100, 'a')});
    // Fragments count together.
    std::string parts = header(0x01, 60) + std::string(60, 'x') + header(0x80, 41) + std::string(41, 'y');
    BOOST_TEST((read_all(parts, false, 0, 100).status == ws::read_status::too_large));
}

// The messages of one parse, joined from fragments or not, all stay readable until release().
BOOST_AUTO_TEST_CASE(views_live_until_release) {
    ws::frame_reader reader(false, 1 << 20);
    std::string wire;
    ws::append_frame(wire, ws::opcode::text, "first");
    wire += header(0x01, 2) + "se" + header(0x80, 4) + "cond";
    ws::append_frame(wire, ws::opcode::text, "third");
    wire += header(0x81, 11) + "fou";  // the rest comes later
    reader.append(wire);
    std::vector<std::string_view> views;
    std::vector<ws::control_frame> controls;
    BOOST_TEST((reader.parse(views, controls) == ws::read_status::more));
    BOOST_TEST(views == (std::vector<std::string_view>{"first", "second", "third"}));
    reader.release();
    views.clear();
    reader.append("rth_last");
    BOOST_TEST((reader.parse(views, controls) == ws::read_status::more));
    BOOST_TEST(views == std::vector<std::string_view>{"fourth_last"});
}

BOOST_AUTO_TEST_SUITE_END()
