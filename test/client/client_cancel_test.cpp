// Per-operation cancellation: `acquire || timer`, cancellation signals bound to callbacks, and a
// cancel that races the grant. Afterwards the broker must hold no waiter and no hold for the
// cancelled request, and a third client must be able to take the key.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <array>
#include <variant>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using namespace boost::asio::experimental::awaitable_operators;
using lmx::errc;
using lmx::error_code;

BOOST_AUTO_TEST_SUITE(client_cancel_test)

BOOST_DATA_TEST_CASE(acquire_or_timer_cancels_cleanly, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client holder(ex, options_for(b.url(kind)));
        lmx::client third(ex, options_for(b.url(kind)));
        auto key = fresh_key("cancel");
        auto held = co_await holder.acquire(key);

        asio::steady_timer timer(ex, 150ms);
        auto t0 = steady::now();
        auto result = co_await (a.acquire(key) || timer.async_wait(asio::use_awaitable));
        BOOST_TEST(result.index() == 1u);  // the timer won
        BOOST_TEST(ms_since(t0) < 2000);

        auto info = co_await poll_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info.waiters == 0u);
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
        co_await held.release();
        // Had the withdrawn request still been in line, it would own the key now.
        auto g = co_await third.acquire(key, {.wait = false});
        BOOST_TEST(g.owns_lock());
        auto info1 = co_await third.info(key);
        BOOST_TEST(info1.holders == std::vector<std::string>{g.id()});
        // And the cancelling client is in good health.
        co_await g.release();
        auto mine = co_await a.acquire(key, {.wait = false});
        BOOST_TEST(mine.owns_lock());
    });
}

BOOST_DATA_TEST_CASE(cancellation_signal_with_callbacks, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client holder(ex, options_for(b.url(kind)));
        auto key = fresh_key("signal");
        auto held = co_await holder.acquire(key);
        asio::cancellation_signal signal;
        bool done = false;
        error_code result;
        a.acquire(key, asio::bind_cancellation_slot(signal.slot(), [&](error_code ec, lmx::lock_guard g) {
                      result = ec;
                      done = true;
                      BOOST_TEST(!g.owns_lock());
                  }));
        auto info2 = co_await poll_info(holder, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(info2.waiters == 1u);
        signal.emit(asio::cancellation_type::terminal);
        auto deadline = steady::now() + 3s;
        while (!done && steady::now() < deadline) co_await sleep_for(5ms);
        BOOST_TEST(done);
        BOOST_TEST(result == errc::cancelled, result.message());
        auto info3 = co_await poll_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info3.waiters == 0u);

        // The same for acquire_many, and for a request that is not a lock.
        asio::cancellation_signal s2;
        bool many_done = false;
        std::vector<std::string> keys{key, fresh_key("other")};
        a.acquire_many(keys, {}, asio::bind_cancellation_slot(s2.slot(), [&](error_code ec, lmx::multi_lock_guard) {
                           BOOST_TEST(ec == errc::cancelled, ec.message());
                           many_done = true;
                       }));
        auto info4 = co_await poll_info(holder, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(info4.waiters == 1u);
        s2.emit(asio::cancellation_type::terminal);
        deadline = steady::now() + 3s;
        while (!many_done && steady::now() < deadline) co_await sleep_for(5ms);
        BOOST_TEST(many_done);
        auto info5 = co_await poll_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info5.waiters == 0u);
        co_await held.release();
        auto info6 = co_await holder.info(key);
        BOOST_TEST(is_free(info6));
    });
}

// The cancel crosses the grant on the wire: the broker hands the key to the request just as the
// client withdraws it. Whichever side wins, no hold may survive the guard that never was.
BOOST_DATA_TEST_CASE(cancel_racing_the_grant_leaks_nothing, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client holder(ex, options_for(b.url(kind)));
        auto key = fresh_key("race");
        int granted = 0, withdrawn = 0;
        for (int i = 0; i < 30; ++i) {
            auto held = co_await holder.acquire(key);
            asio::cancellation_signal signal;
            bool done = false;
            error_code result;
            a.acquire(key, asio::bind_cancellation_slot(signal.slot(), [&](error_code ec, lmx::lock_guard) {
                          result = ec;
                          done = true;
                      }));
            co_await poll_info(holder, key, [](auto& info) { return info.waiters == 1; });
            // Release and cancel in the same instant, with a varying head start for the release.
            held.release([](error_code) {});
            if (i % 3) co_await sleep_for(std::chrono::milliseconds(i % 3));
            signal.emit(asio::cancellation_type::terminal);
            while (!done) co_await sleep_for(1ms);
            if (result)
                ++withdrawn;
            else
                ++granted;  // the guard went out of scope in the handler: released
            auto info = co_await poll_info(a, key, is_free);
            BOOST_TEST(is_free(info),
                       "iteration " << i << ": holders " << info.holders.size() << ", waiters " << info.waiters);
        }
        BOOST_TEST_MESSAGE("granted before the cancel: " << granted << ", withdrawn: " << withdrawn);
        auto g = co_await holder.acquire(key, {.wait = false});
        BOOST_TEST(g.owns_lock());
    });
}

BOOST_DATA_TEST_CASE(cancelled_requests_leave_the_connection_usable, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("usable");
        for (int i = 0; i < 20; ++i) {
            asio::steady_timer timer(ex, std::chrono::milliseconds(i % 2));
            auto r = co_await (a.info(key) || timer.async_wait(asio::use_awaitable));
            (void)r;
        }
        auto g = co_await a.acquire(key);
        BOOST_TEST(g.owns_lock());
        auto info7 = co_await a.info(key);
        BOOST_TEST(info7.holders.size() == 1u);
    });
}

// A cancellation that races the reply of info/ping/ls: each caller frees its signal as soon as
// its operation completes, while the cancellation may still be on its way to the client's
// strand. Under the address sanitizer a cancellation that outlives the caller's slot is an
// error. Several operations are in flight at once so that the freed slots are really returned to
// the heap rather than kept in Asio's per-thread cache.
BOOST_DATA_TEST_CASE(cancel_racing_completion_of_calls, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("race-call");
        auto g = co_await a.acquire(key);
        // Bound to a strand of their own, completions are queued there: a cancellation emitted
        // meanwhile meets an operation that has already finished.
        auto caller = asio::make_strand(ex);
        constexpr int rounds = 150, width = 6;
        int completed = 0, cancelled = 0, wrong = 0;
        for (int i = 0; i < rounds; ++i) {
            std::array<std::unique_ptr<asio::cancellation_signal>, width> signals;
            int pending = width;
            for (int j = 0; j < width; ++j) {
                signals[j] = std::make_unique<asio::cancellation_signal>();
                auto finish = [&, j](error_code ec) {
                    if (!ec)
                        ++completed;
                    else if (ec == errc::cancelled)
                        ++cancelled;
                    else
                        ++wrong;
                    signals[j].reset();  // the caller's slot is gone once its operation completed
                    --pending;
                };
                auto bind = [&](auto f) {
                    return asio::bind_cancellation_slot(signals[j]->slot(), asio::bind_executor(caller, std::move(f)));
                };
                switch (j % 3) {
                    case 0: a.info(key, bind([finish](error_code ec, lmx::lock_info) { finish(ec); })); break;
                    case 1: a.ping(bind([finish](error_code ec, std::chrono::microseconds) { finish(ec); })); break;
                    default: a.ls(bind([finish](error_code ec, std::vector<std::string>) { finish(ec); })); break;
                }
            }
            // Let the requests travel for a varying number of turns, then cancel them.
            for (int k = 0; k < i % 12; ++k) co_await asio::post(ex, asio::use_awaitable);
            for (auto& s : signals)
                if (s) s->emit(asio::cancellation_type::terminal);
            while (pending > 0) co_await asio::post(ex, asio::use_awaitable);
        }
        BOOST_TEST_MESSAGE("completed: " << completed << ", cancelled: " << cancelled);
        BOOST_TEST(wrong == 0);
        BOOST_TEST(completed + cancelled == rounds * width);
        // The connection is still in good health and the hold is intact.
        auto info = co_await a.info(key);
        BOOST_TEST(info.holders == std::vector<std::string>{g.id()});
    });
}

BOOST_AUTO_TEST_SUITE_END()
