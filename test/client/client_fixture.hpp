#pragma once

// What every client suite shares: a real broker per test case, coroutine test bodies run to
// completion on a private io_context, and polling of the broker's view through a second client.

#include "broker_process.hpp"
#include "run_body.hpp"

#include <lmx/client/client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <ostream>
#include <stdexcept>
#include <string>

namespace lmx {
// So that Boost.Test can print `ec == errc::x` when it fails.
inline std::ostream& operator<<(std::ostream& os, errc e) { return os << make_error_code(e).message(); }
}  // namespace lmx

namespace lmx::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// The transports every client scenario runs over (see broker_process::url).
inline const char* const client_transports[] = {"tcp", "unix", "ws"};

// A key unique within the test run, so that scenarios sharing a broker never collide.
inline std::string fresh_key(std::string_view prefix = "k") {
    static std::atomic<unsigned> n{0};
    return std::string(prefix) + "-" + std::to_string(++n);
}

inline client_options options_for(const std::string& url) {
    client_options o;
    o.url = url;
    o.connect_timeout = 3s;
    return o;
}

// Runs the coroutine `body(executor)` on a fresh io_context and rethrows what it throws. Once it
// is done, every client it made must wind down (no reader, writer or timer left) within a few
// seconds: leftover work means an operation or a connection leaked.
template <class Body>
void run(Body&& body, std::chrono::seconds limit = 60s) {
    asio::io_context ctx;
    run_body(ctx, std::forward<Body>(body), limit);
    auto drain = steady::now() + 5s;
    while (!ctx.stopped() && steady::now() < drain) ctx.run_one_for(100ms);
    BOOST_TEST(ctx.stopped(), "work was left on the io_context after the test body finished");
}

// Runs `ctx` until `done()` holds (or `limit` passes); for tests that drive callbacks by hand.
template <class Pred>
bool run_until(asio::io_context& ctx, Pred done, std::chrono::milliseconds limit = 10s) {
    auto deadline = steady::now() + limit;
    ctx.restart();
    while (!done() && !ctx.stopped() && steady::now() < deadline) ctx.run_one_for(50ms);
    return done();
}

inline asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::use_awaitable);
}

// Waits until `ready()` holds, checking every millisecond for up to `limit`; returns whether it
// did. Takes [&] lambdas (g++ 12 destroys a lambda temporary in a co_await expression twice).
template <class Ready>
asio::awaitable<bool> until(Ready ready, std::chrono::milliseconds limit = 3s) {
    const auto deadline = steady::now() + limit;
    while (!ready() && steady::now() < deadline) co_await sleep_for(std::chrono::milliseconds(1));
    co_return ready();
}

// Polls `info(key)` until `pred` holds; returns the last info (check it with BOOST_TEST).
inline asio::awaitable<lock_info> poll_info(client& c, std::string key, std::function<bool(const lock_info&)> pred,
                                            std::chrono::milliseconds wait = 3s) {
    auto deadline = steady::now() + wait;
    for (;;) {
        auto info = co_await c.info(key);
        if (pred(info) || steady::now() >= deadline) co_return info;
        co_await sleep_for(10ms);
    }
}

inline std::string dump(const boost::json::object& o) { return boost::json::serialize(o); }
inline double number(const boost::json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    return v && v->is_number() ? v->to_number<double>() : -1;
}

inline bool is_free(const lock_info& i) { return i.holders.empty() && i.waiters == 0; }

inline long long ms_since(steady::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count();
}

}  // namespace lmx::test
