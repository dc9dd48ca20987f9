// Bad input never hurts anyone else. Every case sends something wrong to a real broker over
// tcp, unix and ws, checks the answer, and then checks that the same connection still works
// (except where the protocol closes it), that another client's hold is untouched, and that the
// broker still serves new connections.

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <random>
#include <thread>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;

namespace {

constexpr std::size_t max_key = 64;
constexpr std::size_t max_keys = 4;
constexpr std::size_t max_message = 4096;

broker_config limits() {
    return {.extra_args = {"--max-key-length", std::to_string(max_key), "--max-keys", std::to_string(max_keys),
                           "--max-message-size", std::to_string(max_message)}};
}

// A broker with one innocent client holding a key, for checking that nothing reached it.
struct setup {
    checked_broker b{limits()};
    std::string url;
    wire_client holder;
    std::string hold_id = fresh_id("precious");

    explicit setup(const char* kind) : url(b.url(kind)), holder(url) {
        BOOST_REQUIRE(flag(acquire(holder, hold_id, "precious", {{"ttl", nullptr}}), "acquired"));
    }

    void check_others_unharmed() {
        BOOST_TEST(holders_of(holder, "precious") == std::vector<std::string>{hold_id});
        BOOST_TEST(!next_of_type(holder, "lock-lost", 0ms));
        wire_client fresh(url);
        BOOST_TEST(alive(fresh));
        BOOST_TEST(b.running());
    }
};

// The connection that sent the bad input still takes locks.
void check_usable(wire_client& c) {
    BOOST_TEST(alive(c));
    auto id = fresh_id("after");
    auto g = acquire(c, id, "after-bad-input");
    BOOST_TEST(flag(g, "acquired"), dump(g));
    BOOST_TEST(flag(release(c, id, "after-bad-input"), "unlocked"));
}

void expect_error(const json::object& r, std::string_view type, std::string_view code, std::string_view uuid = {}) {
    BOOST_TEST(text(r, "type") == type, dump(r));
    BOOST_TEST(text(r, "code") == code, dump(r));
    BOOST_TEST(!text(r, "error").empty(), dump(r));
    if (!uuid.empty()) BOOST_TEST(text(r, "uuid") == uuid, dump(r));
    BOOST_TEST(!flag(r, "acquired"));
}

std::string acquire_text(const std::string& uuid, const std::string& key, const std::string& extra = {}) {
    return R"({"type":"lock","uuid":")" + uuid + R"(","key":")" + key + "\"" + extra + "}";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_bad_input_test)

BOOST_DATA_TEST_CASE(malformed_json_and_non_objects, bdata::make(transports), kind) {
    setup s(kind);
    wire_client c(s.url);
    std::string deep = R"({"type":"ls","uuid":"deep","x":)" + std::string(100, '[') + std::string(100, ']') + "}";
    for (std::string frame :
         {std::string(R"({"type":"lock",)"), std::string(R"({"type":"lock","uuid":"u1","key":"precious")"),
          std::string("not json at all"), std::string(R"({"type":"lock" "uuid":"x"})"), std::string("[1,2,3]"),
          std::string(R"([{"type":"ls","uuid":"u1"}])"), std::string("42"), std::string(R"("lock")"),
          std::string("null"), std::string("true"), std::string("{}"), deep}) {
        BOOST_TEST_CONTEXT(frame.substr(0, 60)) {
            c.send(frame);
            auto r = c.recv(3s);
            expect_error(r, "error", "bad_request");
            BOOST_TEST(c.pending() == 0u);  // exactly one answer
        }
    }
    // Duplicate names are refused whichever one a reader would pick (request smuggling).
    c.send(std::string(R"({"type":"unlock","uuid":"dup","key":"precious","force":true,"force":false})"));
    auto dup = c.recv_for("dup", 3s);
    BOOST_TEST(text(dup, "code") == "bad_request", dump(dup));
    BOOST_TEST(!flag(dup, "unlocked"));
    auto missing = c.request(json::object{{"uuid", "no-type"}, {"key", "precious"}});
    expect_error(missing, "error", "bad_request", "no-type");
    check_usable(c);
    s.check_others_unharmed();
}

BOOST_DATA_TEST_CASE(unknown_type, bdata::make(transports), kind) {
    setup s(kind);
    wire_client c(s.url);
    for (const char* type : {"bogus", "LOCK", "lock-info-response", ""}) {
        BOOST_TEST_CONTEXT(type) {
            auto id = fresh_id("unknown");
            auto r = c.request({{"type", type}, {"uuid", id}, {"key", "precious"}});
            // Answered in the request's own type (live-mutex's client then fails that request
            // rather than leaving it waiting); a frame without a usable type gets type "error".
            BOOST_TEST(text(r, "type") == (*type ? type : "error"), dump(r));
            BOOST_TEST(text(r, "uuid") == id);
            if (*type) BOOST_TEST(text(r, "key") == "precious", dump(r));
            BOOST_TEST(!flag(r, "acquired"), dump(r));
            // live-mutex's wording, so that its client reports it (PROTOCOL.md, errors).
            BOOST_TEST(text(r, "error").find("Malformed data sent to Live-Mutex broker") != std::string::npos, dump(r));
            BOOST_TEST(text(r, "code") == "unknown_type", dump(r));
        }
    }
    check_usable(c);
    s.check_others_unharmed();
}

BOOST_DATA_TEST_CASE(wrong_field_types, bdata::make(transports), kind) {
    setup s(kind);
    wire_client c(s.url);
    // Lock requests are answered in the lock reply shape so that clients route them to the caller.
    for (std::string extra :
         {std::string(R"(,"max":"3")"), std::string(R"(,"max":0)"), std::string(R"(,"max":-1)"),
          std::string(R"(,"max":1.5)"), std::string(R"(,"ttl":"5000")"), std::string(R"(,"ttl":-1)"),
          std::string(R"(,"wait":"no")"), std::string(R"(,"timeout":"soon")"), std::string(R"(,"mode":"weird")"),
          std::string(R"(,"keepLocksOnExit":"yes")")}) {
        BOOST_TEST_CONTEXT(extra) {
            auto id = fresh_id("wrong");
            c.send(acquire_text(id, "precious", extra));
            expect_error(c.recv_for(id, 3s), "lock", "bad_request", id);
        }
    }
    auto id = fresh_id("wrong");
    c.send(R"({"type":"lock","uuid":")" + id + R"(","key":42})");
    expect_error(c.recv_for(id, 3s), "lock", "bad_request", id);

    // Malformed unlocks that would wipe the key if misread: refused, and the holder keeps it.
    for (std::string extra : {std::string(R"(,"_uuid":5,"force":true)"), std::string(R"(,"force":"true")"),
                              std::string(R"(,"_uuid":["x"],"force":true)")}) {
        BOOST_TEST_CONTEXT(extra) {
            auto uid = fresh_id("wrong-unlock");
            c.send(R"({"type":"unlock","uuid":")" + uid + R"(","key":"precious")" + extra + "}");
            auto r = c.recv_for(uid, 3s);
            expect_error(r, "unlock", "bad_request", uid);
            BOOST_TEST(!flag(r, "unlocked"));
        }
    }
    for (std::string frame :
         {std::string(R"({"type":"acquire-many","uuid":"am1","keys":"precious"})"),
          std::string(R"({"type":"acquire-many","uuid":"am2","keys":[1,2]})"),
          std::string(R"({"type":"acquire-many","uuid":"am3","keys":[]})"),
          std::string(R"({"type":"extend","uuid":"ex1","key":"precious","_uuid":"x","ttl":"long"})"),
          std::string(R"({"type":"ping","uuid":"p1","timestamp":"now"})"),
          std::string(R"({"type":"lock-info-request","uuid":"li1","key":{}})"),
          std::string(R"({"type":"cancel","uuid":"c1","target":7})"),
          std::string(R"({"type":"watch","uuid":"w1","keys":"precious"})")}) {
        BOOST_TEST_CONTEXT(frame) {
            auto uuid = json::parse(frame).as_object().at("uuid").as_string();
            c.send(frame);
            auto r = c.recv_for(uuid, 3s);
            BOOST_TEST(text(r, "code") == "bad_request", dump(r));
            BOOST_TEST(!text(r, "error").empty());
        }
    }
    // An id that is not a string cannot be echoed, but the frame is still answered.
    c.send(std::string(R"({"type":"lock","uuid":5,"key":"precious"})"));
    auto r = c.recv(3s);
    BOOST_TEST(text(r, "code") == "bad_request", dump(r));
    BOOST_TEST(!has(r, "uuid"));
    BOOST_TEST(number(lock_info(c, "precious"), "lockRequestCount") == 0u);
    check_usable(c);
    s.check_others_unharmed();
}

BOOST_DATA_TEST_CASE(huge_key, bdata::make(transports), kind) {
    setup s(kind);
    wire_client c(s.url);
    for (std::size_t size : {max_key + 1, std::size_t{3000}}) {
        BOOST_TEST_CONTEXT(size) {
            auto id = fresh_id("huge");
            auto r = acquire(c, id, std::string(size, 'k'));
            expect_error(r, "lock", "key_too_long", id);
        }
    }
    auto info =
        c.request({{"type", "lock-info-request"}, {"uuid", "huge-info"}, {"key", std::string(max_key + 1, 'k')}});
    BOOST_TEST(text(info, "code") == "key_too_long", dump(info));
    BOOST_TEST(number(stats(c), "keys") == 1u);  // nothing was created
    auto ok = acquire(c, fresh_id("max"), std::string(max_key, 'k'));
    BOOST_TEST(flag(ok, "acquired"), dump(ok));
    check_usable(c);
    s.check_others_unharmed();
}

BOOST_DATA_TEST_CASE(too_many_keys, bdata::make(transports), kind) {
    setup s(kind);
    wire_client c(s.url);
    json::array keys;
    for (std::size_t i = 0; i <= max_keys; ++i) keys.emplace_back("many-" + std::to_string(i));
    auto r = c.request({{"type", "acquire-many"}, {"uuid", "too-many"}, {"keys", keys}});
    expect_error(r, "acquire-many", "too_many_keys", "too-many");
    BOOST_TEST(holders_of(c, "many-0").empty());
    keys.pop_back();
    auto ok = c.request({{"type", "acquire-many"}, {"uuid", "just-enough"}, {"keys", keys}});
    BOOST_TEST(flag(ok, "acquired"), dump(ok));
    check_usable(c);
    s.check_others_unharmed();
}

BOOST_DATA_TEST_CASE(binary_garbage, bdata::make(transports), kind) {
    setup s(kind);
    wire_client c(s.url);
    std::mt19937 rng(42);
    std::string noise;
    for (int i = 0; i < 2000; ++i) {
        auto byte = static_cast<char>(rng() & 0xff);
        noise += byte == '\n' ? '\0' : byte;  // one message; NULs and invalid UTF-8 included
    }
    const std::string fixed("\x00\x01\x02\xff\xfe\xfd\x80\xc0\xc1 {\"type\":\"lock\"}\x00", 24);
    const bool ws = std::string_view(kind) == "ws";
    if (!ws) {
        for (const std::string& garbage : {fixed, noise}) {
            c.send_raw(garbage + "\n");
            auto r = c.recv(3s);  // parses: the error reply itself is valid JSON
            expect_error(r, "error", "bad_request");
        }
        check_usable(c);
    } else {
        // In a text message only valid UTF-8 may travel, NUL and control bytes included.
        c.send_raw(std::string("\x00\x01\x02\x1b garbage \x7f", 14) + "\n");
        expect_error(c.recv(3s), "error", "bad_request");
        check_usable(c);

        // Garbage in binary messages is answered like on the stream transports, connection kept.
        raw_websocket raw(s.url);
        BOOST_REQUIRE(raw.status == 101);
        for (const std::string& garbage : {fixed, noise}) {
            BOOST_REQUIRE(raw.send(raw_websocket::binary, garbage));
            auto m = raw.recv(3s);
            BOOST_REQUIRE(m.has_value());
            BOOST_TEST(m->op == raw_websocket::text);
            auto r = json::parse(m->payload).as_object();
            expect_error(r, "error", "bad_request");
        }
        BOOST_REQUIRE(raw.send(raw_websocket::binary, R"({"type":"ping","uuid":"bin-ping"})"));
        auto pong = raw.recv(3s);
        BOOST_REQUIRE(pong.has_value());
        BOOST_TEST(text(json::parse(pong->payload).as_object(), "type") == "pong");

        // Invalid UTF-8 in a text message breaks RFC 6455 itself: that connection is failed.
        raw_websocket bad(s.url);
        BOOST_REQUIRE(bad.status == 101);
        BOOST_REQUIRE(bad.send(raw_websocket::text, fixed));
        BOOST_TEST(bad.socket().closed_by_peer(3s));
    }
    s.check_others_unharmed();
}

// Over NDJSON a line over the size limit is skipped and answered, with its uuid when it can be
// found at either end, and the connection goes on; over WebSocket Beast fails the connection.
BOOST_DATA_TEST_CASE(message_over_size_limit_is_answered, bdata::make(transports), kind) {
    setup s(kind);
    auto pad = [](std::size_t n) { return R"(,"pad":")" + std::string(n, 'x') + "\""; };
    // Under the limit: fields it does not know are ignored, and the frame is served.
    {
        wire_client c(s.url);
        auto id = fresh_id("near");
        auto frame = acquire_text(id, "near-limit", pad(max_message - 100));
        BOOST_REQUIRE(frame.size() < max_message);
        c.send(frame);
        BOOST_TEST(flag(c.recv_for(id, 3s), "acquired"));
        check_usable(c);
    }
    const std::string oversize = acquire_text(fresh_id("big"), "big", pad(max_message + 100));
    if (std::string_view(kind) == "ws") {
        // Beast fails a too-big WebSocket message itself, with close code 1009 (message too big),
        // before the broker can answer in JSON: that close frame is the answer here.
        raw_websocket raw(s.url);
        BOOST_REQUIRE(raw.status == 101);
        BOOST_REQUIRE(raw.send_text(acquire_text("over-ws", "over-holder")));
        auto g = raw.recv(3s);
        BOOST_REQUIRE(g.has_value());
        BOOST_REQUIRE(flag(json::parse(g->payload).as_object(), "acquired"));
        BOOST_REQUIRE(raw.send_text(oversize));
        std::optional<raw_websocket::message> m;
        std::string error_code;
        while ((m = raw.recv(3s)) && m->op == raw_websocket::text)
            error_code = text(json::parse(m->payload).as_object(), "code");
        BOOST_REQUIRE(m.has_value());
        if (m->op == raw_websocket::close_frame) {
            BOOST_REQUIRE(m->payload.size() >= 2u);
            int close_code =
                (static_cast<unsigned char>(m->payload[0]) << 8) | static_cast<unsigned char>(m->payload[1]);
            BOOST_TEST_MESSAGE("ws over-size: close code " << close_code << ", error reply '" << error_code << "'");
            BOOST_TEST((close_code == 1009 || error_code == "message_too_large"), "close code " << close_code);
        } else {
            BOOST_TEST(error_code == "message_too_large");
        }
        BOOST_TEST(raw.socket().closed_by_peer(3s));
    } else {
        wire_client c(s.url);
        auto id = fresh_id("over");
        BOOST_REQUIRE(flag(acquire(c, id, "over-holder"), "acquired"));
        // uuid first, uuid last, and none at all; each between two ordinary requests.
        const auto first_id = fresh_id("big-first"), last_id = fresh_id("big-last");
        const std::string uuid_last =
            R"({"type":"lock","key":"big")" + pad(max_message + 5000) + R"(,"uuid":")" + last_id + R"("})";
        const std::string no_uuid = R"({"type":"lock","key":"big")" + pad(3 * max_message) + "}";
        const std::vector<std::pair<std::string, std::string>> lines = {
            {acquire_text(first_id, "big", pad(max_message + 100)), first_id}, {uuid_last, last_id}, {no_uuid, ""}};
        for (const auto& [line, expected_uuid] : lines) {
            const auto before = fresh_id("before"), after = fresh_id("after");
            c.send(R"({"type":"ping","uuid":")" + before +
                   R"("})"
                   "\n" +
                   line +
                   "\n"
                   R"({"type":"ping","uuid":")" +
                   after + R"("})");
            BOOST_TEST(text(c.recv_for(before, 3s), "type") == "pong");
            auto r = c.try_recv_if([](const json::object& o) { return text(o, "type") == "error"; }, 3s);
            BOOST_REQUIRE(r.has_value());
            BOOST_TEST(text(*r, "code") == "message_too_large", dump(*r));
            BOOST_TEST(text(*r, "uuid") == expected_uuid, dump(*r));
            BOOST_TEST(text(*r, "error").find(std::to_string(line.size())) != std::string::npos, dump(*r));
            BOOST_TEST(text(c.recv_for(after, 3s), "type") == "pong");
        }
        BOOST_TEST(!c.closed_by_peer(200ms));
        check_usable(c);
        // The connection and its hold live on; nothing of the skipped requests was served.
        BOOST_TEST(holders_of(s.holder, "over-holder").size() == 1u);
        BOOST_TEST(holders_of(s.holder, "big").empty());
    }
    if (std::string_view(kind) == "ws")
        BOOST_TEST(holders_of(s.holder, "over-holder").empty());  // went with its connection
    s.check_others_unharmed();
}

BOOST_DATA_TEST_CASE(half_a_message_then_disconnect, bdata::make(transports), kind) {
    setup s(kind);
    const std::string frame = acquire_text("half", "half-key");
    if (std::string_view(kind) != "ws") {
        {
            raw_socket raw(s.url);
            BOOST_REQUIRE(raw.send_all(frame.substr(0, frame.size() / 2)));
        }
        // A message split over several reads is assembled.
        wire_client c(s.url);
        auto id = fresh_id("split");
        auto whole = acquire_text(id, "split-key") + "\n";
        c.send_raw(whole.substr(0, 10));
        std::this_thread::sleep_for(30ms);
        c.send_raw(whole.substr(10, 20));
        std::this_thread::sleep_for(30ms);
        c.send_raw(whole.substr(30));
        BOOST_TEST(flag(c.recv_for(id, 3s), "acquired"));
    } else {
        {
            raw_websocket raw(s.url);
            BOOST_REQUIRE(raw.status == 101);
            auto f = raw_websocket::frame(raw_websocket::text, frame);
            BOOST_REQUIRE(raw.socket().send_all(f.substr(0, f.size() / 2)));
        }
        {
            // A message whose first fragment came but not the last.
            raw_websocket raw(s.url);
            BOOST_REQUIRE(raw.socket().send_all(raw_websocket::frame(raw_websocket::text, frame.substr(0, 10), false)));
        }
        // A fragmented message is assembled.
        raw_websocket raw(s.url);
        auto id = fresh_id("split");
        auto whole = acquire_text(id, "split-key");
        BOOST_REQUIRE(raw.socket().send_all(raw_websocket::frame(raw_websocket::text, whole.substr(0, 10), false)));
        std::this_thread::sleep_for(30ms);
        BOOST_REQUIRE(raw.socket().send_all(raw_websocket::frame(0, whole.substr(10), true)));
        auto m = raw.recv(3s);
        BOOST_REQUIRE(m.has_value());
        BOOST_TEST(flag(json::parse(m->payload).as_object(), "acquired"), m->payload);
    }
    BOOST_TEST(holders_of(s.holder, "half-key").empty());
    s.check_others_unharmed();
}

BOOST_AUTO_TEST_SUITE_END()
