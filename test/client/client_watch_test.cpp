// Watching lock events: what a watcher sees and in which order, several watchers over one
// connection (past the broker's per-connection key limit), cancellation, the end of a watch, and
// a watcher that is not read.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <csignal>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using lmx::errc;
using lmx::error_code;
using kind = lmx::lock_event::kind;

namespace watch_test {
constexpr auto tuple = asio::as_tuple(asio::use_awaitable);

asio::awaitable<lmx::lock_event> next(lmx::watcher& w) {
    using namespace boost::asio::experimental::awaitable_operators;
    asio::steady_timer timer(co_await asio::this_coro::executor, 3s);
    auto r = co_await (w.async_receive() || timer.async_wait(asio::use_awaitable));
    if (r.index() != 0) throw std::runtime_error("no event within 3 s");
    co_return std::get<0>(std::move(r));
}
}  // namespace watch_test
using namespace watch_test;

BOOST_AUTO_TEST_SUITE(client_watch_test)

// One key's life, event by event, and nothing of other keys.
BOOST_DATA_TEST_CASE(a_watcher_sees_its_keys_events_in_order, bdata::make(client_transports), transport) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client observer(ex, options_for(b.url(transport)));
        lmx::client a(ex, options_for(b.url(transport)));
        lmx::client c2(ex, options_for(b.url(transport)));
        const auto key = fresh_key("watched"), other = fresh_key("unwatched");
        auto w = co_await observer.watch({key});
        BOOST_TEST(w.keys() == std::vector<std::string>{key});

        auto noise = co_await a.acquire(other);  // never seen
        auto g = co_await a.acquire(key);
        auto e = co_await next(w);
        BOOST_TEST((e.type == kind::granted));
        BOOST_TEST(e.key == key);
        BOOST_TEST(e.id == g.id());
        BOOST_TEST(e.fencing_token == g.fencing_token());

        // A waiter queues, then its try times out.
        auto [ec, none] = co_await c2.acquire(key, {.timeout = 100ms}, tuple);
        BOOST_TEST(ec == errc::timeout);
        e = co_await next(w);
        BOOST_TEST((e.type == kind::queued));
        BOOST_TEST(e.waiting == 1u);
        const auto waiter = e.id;
        e = co_await next(w);
        BOOST_TEST((e.type == kind::timeout));
        BOOST_TEST(e.id == waiter);
        BOOST_TEST(e.waiting == 0u);

        co_await g.release();
        e = co_await next(w);
        BOOST_TEST((e.type == kind::released));
        BOOST_TEST(e.id == g.id());

        auto g2 = co_await c2.acquire(key);
        e = co_await next(w);
        BOOST_TEST((e.type == kind::granted));
        co_await observer.force_release(key);
        e = co_await next(w);
        BOOST_TEST((e.type == kind::forced));
        BOOST_TEST(e.id == g2.id());

        auto g3 = co_await a.acquire(key, {.ttl = 100ms});
        const auto g3_id = g3.id();
        g3.detach();  // untracked: the broker's lease ends it
        e = co_await next(w);
        BOOST_TEST((e.type == kind::granted));
        e = co_await next(w);
        BOOST_TEST((e.type == kind::expired));
        BOOST_TEST(e.id == g3_id);
        // Nothing more is queued for this watcher: the other key's events never came.
        asio::steady_timer t(ex, 100ms);
        using namespace boost::asio::experimental::awaitable_operators;
        auto r = co_await (w.async_receive(tuple) || t.async_wait(asio::use_awaitable));
        BOOST_TEST(r.index() == 1u);
        (void)noise;
    });
}

// Watchers share the connection's one watch set at the broker; each sees only its keys, even
// when together they watch more keys than the broker takes per connection.
BOOST_AUTO_TEST_CASE(watchers_past_the_broker_key_limit) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client observer(ex, options_for(b.url("tcp")));
        lmx::client a(ex, options_for(b.url("tcp")));
        std::vector<std::string> first, second;
        for (int i = 0; i < 40; ++i) first.push_back(fresh_key("w1"));
        for (int i = 0; i < 40; ++i) second.push_back(fresh_key("w2"));
        auto w1 = co_await observer.watch(first);
        auto w2 = co_await observer.watch(second);  // 80 keys in all, over the broker's 64
        auto all = co_await observer.watch_all();
        const auto outside = fresh_key("outside");
        for (const auto& k : {first.back(), second.back(), outside}) {
            auto g = co_await a.acquire(k);
            co_await g.release();
        }
        auto e = co_await next(w1);
        BOOST_TEST(e.key == first.back());
        e = co_await next(w2);
        BOOST_TEST(e.key == second.back());
        std::vector<std::string> seen;
        for (int i = 0; i < 6; ++i) seen.push_back((co_await next(all)).key);
        BOOST_TEST(seen == (std::vector<std::string>{first.back(), first.back(), second.back(), second.back(), outside,
                                                     outside}));
        // w1 saw its key's two events and nothing of the others.
        BOOST_TEST((co_await next(w1)).key == first.back());
        using namespace boost::asio::experimental::awaitable_operators;
        asio::steady_timer t(ex, 100ms);
        auto r = co_await (w1.async_receive(tuple) || t.async_wait(asio::use_awaitable));
        BOOST_TEST(r.index() == 1u);

        // A watch of no keys is refused: every key is asked for explicitly.
        auto [ec, nothing] = co_await observer.watch(std::vector<std::string>{}, tuple);
        BOOST_TEST(ec == errc::bad_request, ec.message());
    });
}

// A receive can be cancelled; stop() and the connection's end finish the watcher.
BOOST_AUTO_TEST_CASE(cancel_stop_and_connection_loss) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client observer(ex, options_for(b.url("unix")));
        lmx::client a(ex, options_for(b.url("unix")));
        const auto key = fresh_key("cancel");
        auto w = co_await observer.watch({key});
        {
            using namespace boost::asio::experimental::awaitable_operators;
            asio::steady_timer t(ex, 50ms);
            auto r = co_await (w.async_receive(tuple) || t.async_wait(asio::use_awaitable));
            BOOST_TEST(r.index() == 1u);
        }
        // The cancelled receive left the watcher usable.
        auto g = co_await a.acquire(key);
        BOOST_TEST((co_await next(w)).id == g.id());

        auto stopped = co_await observer.watch({key});
        std::optional<error_code> stop_result;
        stopped.async_receive([&](error_code ec, lmx::lock_event) { stop_result = ec; });
        stopped.stop();
        co_await sleep_for(50ms);
        BOOST_TEST((stop_result == error_code(errc::closed)));

        // Events already queued are handed out, then the end is reported.
        co_await g.release();
        co_await sleep_for(100ms);
        b.stop(SIGKILL);
        auto e = co_await next(w);
        BOOST_TEST((e.type == kind::released));
        auto [ec, ev] = co_await w.async_receive(tuple);
        BOOST_TEST(ec == errc::connection_lost, ec.message());
    });
}

// A watcher nobody reads keeps the newest events and says how many it dropped.
BOOST_AUTO_TEST_CASE(unread_watcher_is_bounded) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client observer(ex, options_for(b.url("tcp")));
        lmx::client a(ex, options_for(b.url("tcp")));
        const auto key = fresh_key("flood");
        auto w = co_await observer.watch({key});
        constexpr int cycles = 6000;  // 12,000 events
        for (int i = 0; i < cycles; ++i) {
            auto g = co_await a.acquire(key);
            co_await g.release();
        }
        co_await sleep_for(200ms);
        std::uint64_t received = 0, dropped = 0;
        lmx::lock_event last;
        for (;;) {
            using namespace boost::asio::experimental::awaitable_operators;
            asio::steady_timer t(ex, 300ms);
            auto r = co_await (w.async_receive(tuple) || t.async_wait(asio::use_awaitable));
            if (r.index() == 1) break;
            auto [ec, e] = std::get<0>(std::move(r));
            BOOST_REQUIRE(!ec);
            ++received;
            dropped += e.dropped;
            last = e;
        }
        BOOST_TEST(received == lmx::watch_queue_limit);
        BOOST_TEST(received + dropped == 2u * cycles);
        BOOST_TEST((last.type == kind::released));
    });
}

// A receiver runs as soon as its event is read, and may stop its own and other watchers of the
// same event.
BOOST_AUTO_TEST_CASE(a_receiver_may_stop_other_watchers) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client observer(ex, options_for(b.url("tcp")));
        lmx::client a(ex, options_for(b.url("tcp")));
        const auto key = fresh_key("stopper");
        std::vector<lmx::watcher> ws;
        for (int i = 0; i < 8; ++i) ws.push_back(co_await observer.watch({key}));
        int events = 0, ended = 0;
        for (auto& w : ws)
            w.async_receive([&](error_code ec, lmx::lock_event) {
                if (ec) {
                    ++ended;
                    return;
                }
                ++events;
                for (auto& any : ws) any.stop();  // itself too
            });
        auto g = co_await a.acquire(key);
        co_await sleep_for(200ms);
        BOOST_TEST(events == 1);  // the first receiver stopped the others before they got it
        BOOST_TEST(ended == 7);
        co_await g.release();
    });
}

BOOST_AUTO_TEST_SUITE_END()
