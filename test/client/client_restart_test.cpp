// What the client learns from the broker's start epoch, and lists that arrive in pages: a hold
// kept across a reconnect survives a dropped connection but not a broker restart, and ls()
// follows every page.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <csignal>
#include <set>
#include <thread>

using namespace lmx;
using namespace lmx::test;
namespace bdata = boost::unit_test::data;

BOOST_AUTO_TEST_SUITE(client_restart_test)

BOOST_AUTO_TEST_CASE(kept_holds_are_lost_when_the_broker_restarts) {
    temp_dir sockets;
    const std::string path = sockets.path() + "/lmx.sock";
    auto b = std::make_unique<broker_process>(broker_config{.tcp = false, .websocket = false, .unix_path = path});
    const std::string url = b->unix_url;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(url);
        o.keep_locks_on_exit = true;
        client c(ex, o);
        auto g = co_await c.acquire(fresh_key("kept"), {.ttl = std::chrono::milliseconds::max()});
        BOOST_TEST(g.owns_lock());
        b.reset();  // the broker goes away with every hold it had
        b = std::make_unique<broker_process>(broker_config{.tcp = false, .websocket = false, .unix_path = path});
        // A call reconnects (the first may still meet the old connection's end); the new broker's
        // epoch tells the client its kept hold is gone.
        for (int i = 0; i < 20; ++i) {
            auto [ec, rtt] = co_await c.ping(asio::as_tuple(asio::use_awaitable));
            if (!ec) break;
            co_await sleep_for(50ms);
        }
        BOOST_TEST(!g.owns_lock());
        BOOST_TEST(g.lost());
        c.close();
    });
}

// A broker stopping (SIGTERM) is told apart from a lost connection: the client hears
// shutting_down, drops the connection at once, and so lets the broker exit without waiting for it.
BOOST_DATA_TEST_CASE(a_stopping_broker_is_told_apart_from_a_lost_connection, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.url(kind));
        std::vector<std::pair<connection_state, error_code>> states;
        o.on_state = [&](connection_state s, error_code ec) { states.emplace_back(s, ec); };
        client c(ex, o);
        auto g = co_await c.acquire(fresh_key("stopping"), {.ttl = no_expiry});
        BOOST_TEST(g.owns_lock());
        long long stop_ms = -1;
        int status = -1;
        std::thread stopper([&] {
            const auto t0 = steady::now();
            status = b.stop(SIGTERM, 5s);
            stop_ms = ms_since(t0);
        });
        auto told = [&] {
            return std::any_of(states.begin(), states.end(), [](auto& s) {
                return s.first == connection_state::disconnected && s.second == errc::shutting_down;
            });
        };
        for (int i = 0; i < 100 && !told(); ++i) co_await sleep_for(30ms);
        stopper.join();
        BOOST_TEST(told(), "on_state did not report shutting_down");
        BOOST_TEST(status == 0);
        // The broker waits up to a second for clients to close, and says so when one did not:
        // this one closed at once.
        BOOST_TEST(b.log().find("did not close their connections") == std::string::npos, b.log());
        BOOST_TEST(stop_ms < 3000, "the broker took " << stop_ms << " ms to exit");
        BOOST_TEST(!g.owns_lock());
        c.close();
    });
}

BOOST_AUTO_TEST_CASE(kept_holds_survive_a_dropped_connection_to_the_same_broker) {
    broker_process b({.tcp = false, .websocket = false});
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.unix_url);
        o.keep_locks_on_exit = true;
        client c(ex, o);
        const auto key = fresh_key("kept");
        auto g = co_await c.acquire(key, {.ttl = std::chrono::milliseconds::max()});
        // Another client's unlock by id proves the broker still has it after the reconnect below.
        client other(ex, options_for(b.unix_url));
        auto info = co_await other.info(key);
        BOOST_TEST(info.holders.size() == 1u);
        c.close();  // a clean close keeps keep-on-exit holds at the broker
        client again(ex, options_for(b.unix_url));
        info = co_await again.info(key);
        BOOST_TEST(info.holders == std::vector<std::string>{g.id()});
        co_await again.release(key, g.id());
        other.close();
        again.close();
    });
}

BOOST_AUTO_TEST_CASE(ls_follows_every_page) {
    broker_process b({.tcp = false, .websocket = false, .extra_args = {"--max-list", "3"}});
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        client c(ex, options_for(b.unix_url));
        std::vector<lock_guard> guards;
        std::set<std::string> want;
        for (int i = 0; i < 7; ++i) {
            auto k = fresh_key("paged");
            want.insert(k);
            guards.push_back(co_await c.acquire(k));
        }
        auto keys = co_await c.ls();
        BOOST_TEST(keys.size() == 7u);
        BOOST_TEST((std::set<std::string>(keys.begin(), keys.end()) == want));
        for (auto& g : guards) co_await g.release();
        c.close();
    });
}

BOOST_AUTO_TEST_SUITE_END()
