// Bounded resources: holds and waiters per connection, keys in total, connections per peer and
// in total (from the file-descriptor limit), connections still in the HTTP handshake, replies
// queued for all clients together, TCP keepalive. Hitting a bound answers or refuses the one
// that hit it; everyone else is served as before.

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/test/unit_test.hpp>

#include <sys/resource.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

using namespace lmx::test;

namespace {

bool refused_at_limit(const json::object& r) { return !flag(r, "acquired") && text(r, "code") == "limit_reached"; }

// How many connections the broker counts, waiting up to 3 s for it to become `n`.
bool connections_become(wire_client& c, std::uint64_t n) {
    auto deadline = std::chrono::steady_clock::now() + 3s;
    while (number(stats(c), "connections") != n && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    return number(stats(c), "connections") == n;
}

// The broker-side TCP sockets on `port` in /proc/net/tcp, with their timer kind ("tr": 2 is the
// keepalive timer).
std::vector<int> timers_of_sockets_on(std::uint16_t port) {
    std::ifstream in("/proc/net/tcp");
    std::vector<int> out;
    std::string line;
    std::getline(in, line);  // header
    char want[8];
    std::snprintf(want, sizeof want, ":%04X", port);
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string sl, local, remote, st, queues, timer;
        f >> sl >> local >> remote >> st >> queues >> timer;
        if (st != "01" || !local.ends_with(want)) continue;  // established, our side
        out.push_back(std::stoi(timer.substr(0, timer.find(':')), nullptr, 16));
    }
    return out;
}

std::uint16_t port_of(const std::string& url) {
    return static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_limits_test)

BOOST_AUTO_TEST_CASE(a_connection_holds_and_waits_for_at_most_its_limit) {
    checked_broker b({.websocket = false, .extra_args = {"--max-locks-per-connection", "3"}});
    wire_client a(b.tcp_url), other(b.tcp_url);
    const auto h1 = fresh_id("h"), h2 = fresh_id("h");
    BOOST_REQUIRE(flag(acquire(a, h1, "lim-1"), "acquired"));
    BOOST_REQUIRE(flag(acquire(a, h2, "lim-2"), "acquired"));
    BOOST_REQUIRE(flag(acquire(other, fresh_id("o"), "lim-busy"), "acquired"));
    // A waiting request counts as much as a hold.
    auto waiting = acquire(a, fresh_id("w"), "lim-busy");
    BOOST_REQUIRE(flag(waiting, "queued"));
    auto over = acquire(a, fresh_id("x"), "lim-3");
    BOOST_TEST(refused_at_limit(over), dump(over));
    auto many = a.request({{"type", "acquire-many"}, {"uuid", fresh_id("m")}, {"keys", json::array{"lim-4", "lim-5"}}});
    BOOST_TEST(text(many, "code") == "limit_reached", dump(many));
    // Others are not held back, and a release makes room again.
    BOOST_TEST(flag(acquire(other, fresh_id("o"), "lim-3"), "acquired"));
    BOOST_REQUIRE(flag(release(a, h1, "lim-1"), "unlocked"));
    BOOST_TEST(flag(acquire(a, fresh_id("y"), "lim-6"), "acquired"));
    BOOST_TEST(alive(a));
}

BOOST_AUTO_TEST_CASE(keys_in_total_are_bounded) {
    checked_broker b({.websocket = false, .extra_args = {"--max-total-keys", "4"}});
    wire_client a(b.tcp_url), c(b.unix_url);
    std::vector<std::string> ids;
    for (int i = 0; i < 3; ++i) {
        ids.push_back(fresh_id("k"));
        BOOST_REQUIRE(flag(acquire(i % 2 ? a : c, ids.back(), "key-" + std::to_string(i)), "acquired"));
    }
    // One key left: an acquire-many of two new keys does not fit, one of them does.
    auto two = a.request({{"type", "acquire-many"}, {"uuid", fresh_id("m")}, {"keys", json::array{"key-3", "key-4"}}});
    BOOST_TEST(text(two, "code") == "limit_reached", dump(two));
    BOOST_REQUIRE(flag(acquire(a, fresh_id("k"), "key-3"), "acquired"));
    auto fifth = acquire(c, fresh_id("k"), "key-4");
    BOOST_TEST(refused_at_limit(fifth), dump(fifth));
    // A key that exists may still be waited for; a freed key makes room for a new one.
    BOOST_TEST(flag(acquire(a, fresh_id("w"), "key-0"), "queued"));
    BOOST_REQUIRE(flag(release(a, ids[1], "key-1"), "unlocked"));
    BOOST_TEST(flag(acquire(c, fresh_id("k"), "key-4"), "acquired"));
}

BOOST_AUTO_TEST_CASE(connections_from_one_peer_are_bounded) {
    checked_broker b({.extra_args = {"--max-connections-per-peer", "3"}});
    for (const char* kind : transports) {
        BOOST_TEST_CONTEXT(kind) {
            std::vector<std::unique_ptr<wire_client>> cs;
            for (int i = 0; i < 3; ++i) cs.push_back(std::make_unique<wire_client>(b.url(kind)));
            for (auto& c : cs) BOOST_TEST(alive(*c));
            // The fourth from the same address (the same uid on the unix socket) is closed at once.
            raw_socket fourth(std::string(kind) == "ws" ? b.ws_url : b.url(kind));
            if (std::string(kind) == "ws")
                fourth.send_all(
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
            BOOST_TEST(fourth.closed_by_peer(3s));
            for (auto& c : cs) BOOST_TEST(alive(*c));
            cs.pop_back();
            BOOST_REQUIRE(connections_become(*cs.front(), 2));
            wire_client again(b.url(kind));
            BOOST_TEST(alive(again));
        }
    }
    BOOST_TEST(b.log().find("--max-connections-per-peer") != std::string::npos, b.log());
}

BOOST_AUTO_TEST_CASE(connections_in_total_follow_the_descriptor_limit) {
    // 256 descriptors: 192 connections, the rest for listeners, the log and accepting.
    checked_broker b({.tcp = false, .websocket = false, .nofile = 256});
    BOOST_TEST(b.log().find("limits: 192 connections") != std::string::npos, b.log());
    wire_client first(b.unix_url);
    std::vector<std::unique_ptr<raw_socket>> flood;
    for (int i = 0; i < 260; ++i) flood.push_back(std::make_unique<raw_socket>(b.unix_url));
    BOOST_TEST(alive(first));
    BOOST_REQUIRE(connections_become(first, 192));
    // Those over the limit were closed, not left hanging on an accept that cannot happen.
    std::this_thread::sleep_for(300ms);
    int closed = 0;
    for (auto& s : flood) closed += s->closed_by_peer(1ms) ? 1 : 0;
    BOOST_TEST(closed == 260 - 191);
    flood.clear();
    BOOST_REQUIRE(connections_become(first, 1));
    wire_client later(b.unix_url);
    BOOST_TEST(alive(later));

    // A --max-connections the limit cannot serve is lowered to what it can, with a warning.
    checked_broker over(
        {.tcp = false, .websocket = false, .extra_args = {"--max-connections", "100000"}, .nofile = 256});
    BOOST_TEST(over.log().find("is more than the file-descriptor limit (256) allows; serving at most 192") !=
                   std::string::npos,
               over.log());
}

BOOST_AUTO_TEST_CASE(connections_in_the_http_handshake_are_bounded_and_timed) {
    checked_broker b(
        {.tcp = false, .unix_socket = false, .extra_args = {"--max-handshakes", "8", "--handshake-timeout", "1500"}});
    std::vector<std::unique_ptr<raw_socket>> slow;
    for (int i = 0; i < 8; ++i) slow.push_back(std::make_unique<raw_socket>(b.ws_url));
    std::this_thread::sleep_for(200ms);  // all eight accepted
    raw_socket ninth(b.ws_url);
    BOOST_TEST(ninth.closed_by_peer(1s));  // at once, long before the handshake timeout
    // The slow ones are dropped once their request has not come within the timeout.
    auto t0 = std::chrono::steady_clock::now();
    for (auto& s : slow) BOOST_TEST(s->closed_by_peer(5s));
    BOOST_TEST(since(t0) >= 900);
    wire_client c(b.ws_url);
    BOOST_TEST(alive(c));
    BOOST_TEST(b.log().find("too many connections in the HTTP handshake") != std::string::npos, b.log());
}

BOOST_AUTO_TEST_CASE(tcp_connections_get_keepalive_probes) {
    checked_broker on({.unix_socket = false, .websocket = false});
    wire_client c(on.tcp_url);
    BOOST_REQUIRE(alive(c));
    std::this_thread::sleep_for(300ms);  // no delayed ACK left to show as a timer
    auto timers = timers_of_sockets_on(port_of(on.tcp_url));
    BOOST_REQUIRE_EQUAL(timers.size(), 1u);
    BOOST_TEST(timers[0] == 2);  // the keepalive timer runs on the idle connection

    checked_broker off({.unix_socket = false, .websocket = false, .extra_args = {"--tcp-keepalive", "0"}});
    wire_client d(off.tcp_url);
    BOOST_REQUIRE(alive(d));
    std::this_thread::sleep_for(300ms);
    timers = timers_of_sockets_on(port_of(off.tcp_url));
    BOOST_REQUIRE_EQUAL(timers.size(), 1u);
    BOOST_TEST(timers[0] == 0);
}

// --idle-timeout closes connections that send nothing while holding, waiting for and watching
// nothing; without it (the default) an idle connection stays.
BOOST_AUTO_TEST_CASE(idle_connections_are_closed_only_when_asked_and_only_when_idle) {
    checked_broker b({.websocket = false, .extra_args = {"--idle-timeout", "400"}});
    wire_client idle(b.tcp_url), holder(b.unix_url), waiter(b.tcp_url), watcher(b.tcp_url), chatty(b.unix_url);
    BOOST_REQUIRE(flag(acquire(holder, fresh_id("h"), "idle-k"), "acquired"));
    BOOST_REQUIRE(flag(acquire(waiter, fresh_id("w"), "idle-k", {{"timeout", 60000}}), "queued"));
    BOOST_REQUIRE(flag(watcher.request({{"type", "watch"}, {"uuid", fresh_id("watch")}}), "watching"));
    auto t0 = std::chrono::steady_clock::now();
    while (since(t0) < 1200) {
        BOOST_REQUIRE(alive(chatty));  // talking keeps a connection open
        std::this_thread::sleep_for(100ms);
    }
    BOOST_TEST(idle.closed_by_peer(2s));
    for (auto* c : {&holder, &waiter, &chatty}) BOOST_TEST(alive(*c));
    BOOST_TEST(!watcher.closed_by_peer(10ms));

    checked_broker quiet({.tcp = false, .websocket = false});
    wire_client left(quiet.unix_url);
    std::this_thread::sleep_for(1s);
    BOOST_TEST(alive(left));
}

// 1,000 clients flood ls requests and never read: whatever each may queue, the replies queued
// for all of them together stay under --max-outbox-total, and so does the broker's memory.
BOOST_AUTO_TEST_CASE(replies_queued_for_all_clients_are_bounded) {
    int clients = 1000;
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 1100) clients = static_cast<int>(rl.rlim_cur) - 100;
    constexpr long cap_mib = 16;
    // ASan keeps freed blocks in a quarantine that would show churn as growth (see
    // broker_slow_consumer_test).
    const char* asan = std::getenv("ASAN_OPTIONS");
    const std::string asan_options = (asan && *asan ? std::string(asan) + ":" : std::string()) + "quarantine_size_mb=8";
    checked_broker b({.tcp = false,
                      .websocket = false,
                      .extra_args = {"--max-outbox-total", std::to_string(cap_mib << 20), "--max-outbox", "1073741824",
                                     "--max-connections-per-peer", "5000"},
                      .env = {"ASAN_OPTIONS=" + asan_options}});
    wire_client other(b.unix_url);
    // 300 keys of 100 bytes: each ls reply is ~32 KB.
    for (int i = 0; i < 300; ++i) {
        auto n = std::to_string(i);
        BOOST_REQUIRE(flag(acquire(other, fresh_id("h"), std::string(100 - n.size(), 'k') + n), "acquired"));
    }
    std::vector<std::unique_ptr<raw_socket>> flooders;
    for (int i = 0; i < clients; ++i) flooders.push_back(std::make_unique<raw_socket>(b.unix_url, 4096));
    BOOST_REQUIRE(connections_become(other, static_cast<std::uint64_t>(clients) + 1));
    const long rss_before = b.rss_kib();
    // Sampled all along: the broker may take seconds (under ASan) to get through the flood.
    std::atomic<long> rss_peak = rss_before;
    std::atomic<bool> sampling = true;
    std::thread sampler([&] {
        while (sampling) {
            rss_peak = std::max(rss_peak.load(), b.rss_kib());
            std::this_thread::sleep_for(5ms);
        }
    });
    // 40 ls each: ~1.3 MB of replies per client, ~1.3 GB for all of them without the bound.
    std::string burst;
    for (int i = 0; i < 40; ++i) burst += R"({"type":"ls","uuid":"f)" + std::to_string(i) + "\"}\n";
    int sent = 0;
    for (auto& f : flooders) sent += f->send_all(burst, 200ms) ? 1 : 0;
    // Served again once the flood is through; then nothing more is queued.
    auto t0 = std::chrono::steady_clock::now();
    bool served = false;
    while (!served && since(t0) < 120'000) served = alive(other);
    BOOST_TEST(served);
    std::this_thread::sleep_for(500ms);
    sampling = false;
    sampler.join();
    const long growth_mib = (rss_peak - rss_before) / 1024;
    BOOST_TEST_MESSAGE(clients << " flooders, " << sent << " bursts sent; broker RSS +" << growth_mib << " MiB (cap "
                               << cap_mib << " MiB)");
    // The cap, plus the replies being written and allocator slack.
    BOOST_TEST(growth_mib < cap_mib + 48, "broker RSS grew by " << growth_mib << " MiB");
    BOOST_TEST(b.log().find("--max-outbox-total") != std::string::npos, b.log());
    // Some flooders were cut off, and the others still count.
    BOOST_TEST(number(stats(other), "connections") < static_cast<std::uint64_t>(clients) + 1);
}

BOOST_AUTO_TEST_SUITE_END()
