// A client that floods requests and never reads the replies is cut off once its outbox passes
// --max-outbox; the broker stays responsive to everyone else and its memory stays bounded.

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;

namespace {

constexpr int held_keys = 300;
constexpr std::size_t key_length = 100;
// Growth of the broker's resident memory allowed during a flood. What it may legitimately hold
// for the flooder is the 64 KiB outbox cap plus one reply past it, the reply being written, a
// 16 KiB read buffer and allocator slack: a few MiB at most, ASan's shadow memory included.
// Without the cap, the ls flood below asks for ~250 MB of replies.
constexpr long rss_bound_kib = 32 * 1024;

std::string held_key(int i) {
    auto n = std::to_string(i);
    return std::string(key_length - n.size(), 'k') + n;
}

// A raw stream socket or a raw WebSocket that is never read from.
struct flooder {
    std::unique_ptr<raw_socket> stream;
    std::unique_ptr<raw_websocket> ws;

    flooder(const std::string& url, bool websocket) {
        // A tiny receive buffer makes the broker's writes back up after a few replies.
        if (websocket)
            ws = std::make_unique<raw_websocket>(url, std::string(), 4096);
        else
            stream = std::make_unique<raw_socket>(url, 4096);
    }
    raw_socket& socket() { return ws ? ws->socket() : *stream; }
    // False once the broker has dropped the connection (or stopped reading for a second).
    bool send(const std::vector<std::string>& frames) {
        std::string bytes;
        for (auto& f : frames) bytes += ws ? raw_websocket::frame(raw_websocket::text, f) : f + "\n";
        return socket().send_all(bytes, 1s);
    }
};

struct flood_result {
    bool cut_off = false;
    int sent = 0;
    long rss_growth_kib = 0;
    long long worst_ping_ms = 0;
};

// Floods `max_frames` frames made by `make` (or until the broker drops the flooder), watching
// the broker's memory and how fast `other` is served meanwhile.
flood_result flood(broker_process& b, const char* kind, wire_client& other, int max_frames,
                   const std::function<std::string(int)>& make) {
    flood_result out;
    const long rss_before = b.rss_kib();
    BOOST_REQUIRE(rss_before > 0);
    long rss_peak = rss_before;
    auto ping = [&] {
        auto p0 = std::chrono::steady_clock::now();
        BOOST_TEST(alive(other));
        out.worst_ping_ms = std::max(out.worst_ping_ms, since(p0));
    };
    flooder f(b.url(kind), std::string_view(kind) == "ws");
    auto t0 = std::chrono::steady_clock::now();
    while (out.sent < max_frames && !out.cut_off) {
        std::vector<std::string> batch;
        for (int i = 0; i < 32; ++i) batch.push_back(make(out.sent++));
        out.cut_off = !f.send(batch);
        rss_peak = std::max(rss_peak, b.rss_kib());
        if (out.sent % 2048 == 0) ping();
    }
    // The kernel may have taken the whole flood before the broker got through it.
    for (auto deadline = std::chrono::steady_clock::now() + 5s;
         !out.cut_off && std::chrono::steady_clock::now() < deadline;) {
        out.cut_off = f.socket().peer_gone(20ms);
        rss_peak = std::max(rss_peak, b.rss_kib());
    }
    ping();
    rss_peak = std::max(rss_peak, b.rss_kib());
    out.rss_growth_kib = rss_peak - rss_before;
    BOOST_TEST_MESSAGE(kind << ": sent " << out.sent << " frames in " << since(t0) << " ms; RSS +" << out.rss_growth_kib
                            << " KiB; worst ping " << out.worst_ping_ms << " ms");
    return out;
}

broker_config small_outbox() {
    // ASan keeps freed blocks in a quarantine (256 MiB by default), which would show the flood's
    // churn in RSS; a small one leaves live memory to dominate what is measured.
    const char* asan = std::getenv("ASAN_OPTIONS");
    std::string options = asan && *asan ? std::string(asan) + ":" : std::string();
    return {.extra_args = {"--max-outbox", "65536"}, .env = {"ASAN_OPTIONS=" + options + "quarantine_size_mb=8"}};
}

bool wait_connections(wire_client& c, std::uint64_t n) {
    auto deadline = std::chrono::steady_clock::now() + 3s;
    while (number(stats(c), "connections") != n && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    return number(stats(c), "connections") == n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_slow_consumer_test)

// ls replies list every held key (~32 KB here): a few unread requests stand for a lot of memory.
BOOST_DATA_TEST_CASE(flood_of_ls_and_lock_requests_is_cut_off, bdata::make(transports), kind) {
    checked_broker b(small_outbox());
    wire_client other(b.url(kind));
    // Pipelined: 300 requests, then their replies.
    for (int i = 0; i < held_keys; ++i)
        other.send(lock_msg("hold-" + std::to_string(i), held_key(i), {{"ttl", nullptr}}));
    for (int i = 0; i < held_keys; ++i) BOOST_REQUIRE(flag(other.recv_for("hold-" + std::to_string(i)), "acquired"));

    auto r = flood(b, kind, other, 8000, [](int n) {
        auto id = std::to_string(n);
        return n % 8 == 7 ? dump(lock_msg("flood-" + id, "flood-" + id)) : R"({"type":"ls","uuid":"ls-)" + id + "\"}";
    });
    BOOST_TEST(r.cut_off, "the broker kept serving a client that never reads");
    BOOST_TEST(b.wait_for_log("does not read its replies"), b.log());
    BOOST_TEST(r.rss_growth_kib < rss_bound_kib);
    BOOST_TEST(r.worst_ping_ms < 1000);

    // Everyone else is served; the flooder's holds went with it.
    BOOST_TEST(wait_connections(other, 1));
    BOOST_TEST(number(stats(other), "holders") == static_cast<std::uint64_t>(held_keys));
    // Counted for operators (lmx_clients_cut_off_total in /metrics).
    BOOST_TEST(number(stats(other), "clientsCutOff") == 1u);
    wire_client fresh(b.url(kind));
    BOOST_TEST(alive(fresh));
}

// Small replies: the cap must hold even when no single read batch comes near it.
BOOST_DATA_TEST_CASE(flood_of_small_replies_is_cut_off, bdata::make(transports), kind) {
    checked_broker b(small_outbox());
    wire_client other(b.url(kind));
    BOOST_REQUIRE(flag(acquire(other, "small-holder", "small", {{"ttl", nullptr}}), "acquired"));
    auto r = flood(b, kind, other, 200'000, [](int n) {
        return R"({"type":"lock-info-request","uuid":"i-)" + std::to_string(n) + R"(","key":"small"})";
    });
    BOOST_TEST(r.cut_off, "the broker kept serving a client that never reads");
    BOOST_TEST(r.sent < 200'000);
    BOOST_TEST(b.wait_for_log("does not read its replies"), b.log());
    BOOST_TEST(r.rss_growth_kib < rss_bound_kib);
    BOOST_TEST(r.worst_ping_ms < 1000);
    BOOST_TEST(wait_connections(other, 1));
    BOOST_TEST(holders_of(other, "small") == std::vector<std::string>{"small-holder"});
}

BOOST_AUTO_TEST_SUITE_END()
