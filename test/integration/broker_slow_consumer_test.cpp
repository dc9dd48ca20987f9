// A client that floods requests and never reads the replies is cut off once its outbox passes
// --max-outbox; the broker stays responsive to everyone else and its memory stays bounded.

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <thread>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;

namespace {

constexpr int held_keys = 300;
constexpr std::size_t key_length = 100;
// Flood volume if nobody stopped it: every ls reply lists all held keys (~32 KB), so this many
// unread requests stand for ~250 MB of replies, far above the memory bound checked below.
constexpr int flood_frames = 8000;
constexpr long rss_bound_kib = 32 * 1024;

std::string held_key(int i) {
    auto n = std::to_string(i);
    return std::string(key_length - n.size(), 'k') + n;
}

// A raw stream socket or a raw WebSocket, never read from.
struct flooder {
    std::unique_ptr<raw_socket> stream;
    std::unique_ptr<raw_websocket> ws;

    flooder(const std::string& url, bool websocket) {
        // A tiny receive buffer makes the broker's writes back up after a few replies.
        if (websocket) ws = std::make_unique<raw_websocket>(url, std::string(), 4096);
        else stream = std::make_unique<raw_socket>(url, 4096);
    }
    // False once the broker has dropped the connection (or stopped reading for a second).
    bool send(const std::vector<std::string>& frames) {
        std::string bytes;
        for (auto& f : frames) bytes += ws ? raw_websocket::frame(raw_websocket::text, f) : f + "\n";
        return (ws ? ws->socket() : *stream).send_all(bytes, 1s);
    }
    bool closed_by_peer(std::chrono::milliseconds t) { return (ws ? ws->socket() : *stream).closed_by_peer(t); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_slow_consumer_test)

BOOST_DATA_TEST_CASE(flooding_client_that_never_reads_is_cut_off, bdata::make(transports), kind) {
    // ASan keeps freed blocks in a quarantine (256 MiB by default), which would show the flood's
    // churn in RSS; a small one leaves live memory to dominate what we measure.
    std::string asan = std::getenv("ASAN_OPTIONS") ? std::getenv("ASAN_OPTIONS") : "";
    broker_process b({.extra_args = {"--max-outbox", "65536"},
                      .env = {"ASAN_OPTIONS=" + asan + (asan.empty() ? "" : ":") + "quarantine_size_mb=8"}});
    wire_client other(b.url(kind));
    // Pipelined: 300 requests, then their replies.
    for (int i = 0; i < held_keys; ++i) other.send(lock_msg("hold-" + std::to_string(i), held_key(i), {{"ttl", nullptr}}));
    for (int i = 0; i < held_keys; ++i) BOOST_REQUIRE(flag(other.recv_for("hold-" + std::to_string(i)), "acquired"));
    BOOST_REQUIRE(alive(other));
    const long rss_before = b.rss_kib();
    BOOST_REQUIRE(rss_before > 0);
    long rss_peak = rss_before;
    long long worst_ping_ms = 0;

    flooder f(b.url(kind), std::string_view(kind) == "ws");
    bool cut_off = false;
    int sent = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (sent < flood_frames) {
        std::vector<std::string> batch;
        for (int i = 0; i < 32; ++i, ++sent) {
            if (sent % 8 == 7) batch.push_back(dump(lock_msg("flood-" + std::to_string(sent), "flood-" + std::to_string(sent))));
            else batch.push_back(R"({"type":"ls","uuid":"ls-)" + std::to_string(sent) + "\"}");
        }
        if (!f.send(batch)) {
            cut_off = true;
            break;
        }
        rss_peak = std::max(rss_peak, b.rss_kib());
        if (sent % 512 == 0) {
            auto p0 = std::chrono::steady_clock::now();
            BOOST_TEST(alive(other));
            worst_ping_ms = std::max(worst_ping_ms, since(p0));
        }
    }
    BOOST_TEST_MESSAGE(kind << ": sent " << sent << " frames in " << since(t0) << " ms; RSS " << rss_before << " -> peak "
                            << rss_peak << " KiB; worst ping " << worst_ping_ms << " ms");
    if (!cut_off) cut_off = f.closed_by_peer(3s);
    BOOST_TEST(cut_off, "the broker kept serving a client that never reads");
    BOOST_TEST(sent < flood_frames);
    BOOST_TEST(b.wait_for_log("does not read its replies"), b.log());
    rss_peak = std::max(rss_peak, b.rss_kib());
    // Bound: the outbox cap (64 KiB) plus one reply past it, the read buffer and allocator slack
    // are a few MiB; an uncapped outbox would pass it within the first ~1000 unread frames.
    BOOST_TEST(rss_peak - rss_before < rss_bound_kib, "RSS grew by " << (rss_peak - rss_before) << " KiB");
    BOOST_TEST(worst_ping_ms < 1000);

    // Everyone else is served; the flooder's holds went with it.
    BOOST_TEST(alive(other));
    auto deadline = std::chrono::steady_clock::now() + 3s;
    while (number(stats(other), "connections") != 1u && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    BOOST_TEST(number(stats(other), "connections") == 1u);
    BOOST_TEST(number(stats(other), "holders") == static_cast<std::uint64_t>(held_keys));
    wire_client fresh(b.url(kind));
    BOOST_TEST(alive(fresh));
}

BOOST_AUTO_TEST_SUITE_END()
