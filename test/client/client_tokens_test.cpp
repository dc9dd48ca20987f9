// Every completion-token flavour an Asio user reaches for: the default (use_awaitable, throwing
// system_error), callbacks, use_future, as_tuple(use_awaitable) and deferred. And the rule behind
// all of them: no call ever completes inside the initiating call, not even on its error paths.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <future>
#include <thread>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using lmx::errc;
using lmx::error_code;

BOOST_AUTO_TEST_SUITE(client_tokens_test)

BOOST_DATA_TEST_CASE(default_token_throws_system_error, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("throws");
        auto g = co_await a.acquire(key);
        try {
            auto again = co_await a.acquire(key, {.wait = false});
            BOOST_FAIL("a try-lock of a held key succeeded");
        } catch (const boost::system::system_error& e) {
            BOOST_TEST(e.code() == errc::would_block);
            BOOST_TEST(e.code().category().name() == std::string("lmx"));
            BOOST_TEST(!e.code().message().empty());
        }
        co_await g.release();
        try {
            co_await g.release();
            BOOST_FAIL("releasing twice succeeded");
        } catch (const boost::system::system_error& e) {
            BOOST_TEST(e.code() == errc::not_holder);
        }
    });
}

BOOST_DATA_TEST_CASE(callbacks, bdata::make(client_transports), kind) {
    broker_process b;
    asio::io_context ctx;
    lmx::client a(ctx.get_executor(), options_for(b.url(kind)));
    auto key = fresh_key("cb");
    lmx::lock_guard held;
    bool acquired = false, released = false, refused = false, got_info = false;
    a.acquire(key, [&](error_code ec, lmx::lock_guard g) {
        BOOST_TEST(!ec, ec.message());
        held = std::move(g);
        acquired = true;
        a.acquire(key, {.wait = false}, [&](error_code ec2, lmx::lock_guard) {
            BOOST_TEST(ec2 == errc::would_block);
            refused = true;
            a.info(key, [&](error_code ec3, lmx::lock_info info) {
                BOOST_TEST(!ec3);
                BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
                got_info = true;
                held.release([&](error_code ec4) {
                    BOOST_TEST(!ec4, ec4.message());
                    released = true;
                    a.close();
                });
            });
        });
    });
    BOOST_TEST(!acquired);  // nothing completes inside the initiating call
    ctx.run_for(20s);
    BOOST_TEST(acquired);
    BOOST_TEST(refused);
    BOOST_TEST(got_info);
    BOOST_TEST(released);
    BOOST_TEST(ctx.stopped());  // close() let the reader and writer finish
}

BOOST_DATA_TEST_CASE(futures_from_another_thread, bdata::make(client_transports), kind) {
    broker_process b;
    asio::io_context ctx;
    auto work = asio::make_work_guard(ctx);
    std::thread runner([&] { ctx.run(); });
    {
        lmx::client a(ctx.get_executor(), options_for(b.url(kind)));
        auto key = fresh_key("future");
        a.connect(asio::use_future).get();
        auto g = a.acquire(key, asio::use_future).get();
        BOOST_TEST(g.owns_lock());
        auto refused = a.acquire(key, {.wait = false}, asio::use_future);
        try {
            auto unexpected = refused.get();
            BOOST_FAIL("a try-lock of a held key succeeded");
        } catch (const boost::system::system_error& e) {
            BOOST_TEST(e.code() == errc::would_block);
        }
        BOOST_TEST(a.info(key, asio::use_future).get().holders.size() == 1u);
        BOOST_TEST(a.ls(asio::use_future).get().size() >= 1u);
        BOOST_TEST(a.ping(asio::use_future).get().count() > 0);
        BOOST_TEST(a.stats(asio::use_future).get().contains("connections"));
        g.extend(2s, asio::use_future).get();
        g.release(asio::use_future).get();
        auto many = a.acquire_many({key, fresh_key("future2")}, {}, asio::use_future).get();
        many.release(asio::use_future).get();
        a.force_release(key, asio::use_future).get();
        try {
            a.release(key, "nobody", asio::use_future).get();
            BOOST_FAIL("releasing an id that held nothing succeeded");
        } catch (const boost::system::system_error& e) {
            BOOST_TEST(e.code() == errc::not_held);
        }
    }
    work.reset();
    runner.join();
}

BOOST_DATA_TEST_CASE(as_tuple_gives_error_codes, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        constexpr auto tuple = asio::as_tuple(asio::use_awaitable);
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("tuple");
        auto [ec, g] = co_await a.acquire(key, {}, tuple);
        BOOST_TEST(!ec);
        BOOST_TEST(g.owns_lock());
        auto [ec2, g2] = co_await a.acquire(key, {.wait = false}, tuple);
        BOOST_TEST(ec2 == errc::would_block);
        BOOST_TEST(!g2.owns_lock());
        auto [ec3, info] = co_await a.info(key, tuple);
        BOOST_TEST(!ec3);
        BOOST_TEST(info.holders.size() == 1u);
        auto [ec4] = co_await g.release(tuple);
        BOOST_TEST(!ec4);
    });
}

BOOST_DATA_TEST_CASE(deferred_operations, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("deferred");
        auto acquire = a.acquire(key, asio::deferred);
        // Nothing is sent until the deferred operation is launched.
        auto info1 = co_await a.info(key);
        BOOST_TEST(!info1.locked);
        auto g = co_await std::move(acquire)(asio::use_awaitable);
        BOOST_TEST(g.owns_lock());
        auto release = g.release(asio::deferred);
        auto info2 = co_await a.info(key);
        BOOST_TEST(info2.locked);
        // The deferred release refers to the hold, not to the guard object it came from.
        auto moved = std::move(g);
        co_await std::move(release)(asio::use_awaitable);
        BOOST_TEST(!moved.owns_lock());
        auto info3 = co_await a.info(key);
        BOOST_TEST(!info3.locked);
        // Composition: the deferred result feeds a continuation.
        lmx::lock_guard kept;
        auto [ec, owned] = co_await a.acquire(key, asio::deferred([&](error_code e, lmx::lock_guard lg) {
                                                  kept = std::move(lg);
                                                  return asio::deferred.values(e, kept.owns_lock());
                                              }))(asio::as_tuple(asio::use_awaitable));
        BOOST_TEST(!ec);
        BOOST_TEST(owned);
        auto info4 = co_await a.info(key);
        BOOST_TEST(info4.holders == std::vector<std::string>{kept.id()});
    });
}

// Starting a release ends the guard's ownership, so the guard may go away right after: no second
// unlock, and the release still reports success.
BOOST_DATA_TEST_CASE(release_then_drop_the_guard, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("fire-and-forget");
        bool done = false;
        error_code result;
        {
            auto g = co_await a.acquire(key);
            g.release([&](error_code ec) {
                result = ec;
                done = true;
            });
            BOOST_TEST(!g.owns_lock());
            auto [ec] = co_await g.release(asio::as_tuple(asio::use_awaitable));
            BOOST_TEST(ec == errc::not_holder);  // already being released
        }
        while (!done) co_await sleep_for(2ms);
        BOOST_TEST(!result, result.message());
        auto info = co_await a.info(key);
        BOOST_TEST(info.holders.empty());
    });
}

// Every entry point with a callback that records whether it has run; checked right after the
// initiating call returns, on success paths and on paths that fail before any I/O.
BOOST_DATA_TEST_CASE(never_completes_inside_the_initiating_call, bdata::make(client_transports), kind) {
    broker_process b;
    asio::io_context ctx;
    int pending = 0;
    auto check = [&](const char* what, const bool& flag) {
        BOOST_TEST(!flag, what << " completed inside the initiating call");
        ++pending;
    };
    auto done = [&](bool& flag) {
        flag = true;
        --pending;
    };
    lmx::client a(ctx.get_executor(), options_for(b.url(kind)));
    auto key = fresh_key("inline");
    bool connected = false;
    a.connect([&](error_code ec) {
        BOOST_TEST(!ec);
        done(connected);
    });
    check("connect", connected);
    BOOST_REQUIRE(run_until(ctx, [&] { return connected; }));

    lmx::lock_guard guard;
    bool f1 = false, f2 = false, f3 = false, f4 = false, f5 = false, f6 = false, f7 = false, f8 = false;
    a.acquire(key, [&](error_code ec, lmx::lock_guard g) {
        BOOST_TEST(!ec);
        guard = std::move(g);
        done(f1);
    });
    check("acquire", f1);
    a.info(key, [&](error_code, lmx::lock_info) { done(f2); });
    check("info", f2);
    a.ls([&](error_code, std::vector<std::string>) { done(f3); });
    check("ls", f3);
    a.ping([&](error_code, std::chrono::microseconds) { done(f4); });
    check("ping", f4);
    a.stats([&](error_code, boost::json::object) { done(f5); });
    check("stats", f5);
    a.acquire_many({fresh_key("m")}, {}, [&](error_code, lmx::multi_lock_guard) { done(f6); });
    check("acquire_many", f6);
    // An empty guard belongs to no client, hence no executor: its handlers say where to run.
    lmx::lock_guard empty;
    empty.release(asio::bind_executor(ctx, [&](error_code ec) {
        BOOST_TEST(ec == errc::not_holder);
        done(f7);
    }));
    check("release of an empty guard", f7);
    empty.extend(1s, asio::bind_executor(ctx, [&](error_code ec) {
                     BOOST_TEST(ec == errc::not_holder);
                     done(f8);
                 }));
    check("extend of an empty guard", f8);
    BOOST_TEST(run_until(ctx, [&] { return pending == 0; }));
    BOOST_REQUIRE(guard.owns_lock());

    // Operations started from a completion handler, which runs on the client's strand: the
    // operation's coroutine may start at once there, yet its result still arrives later.
    bool outer = false, inner_try = false, inner_release = false;
    a.ping([&](error_code, std::chrono::microseconds) {
        a.acquire(key, {.wait = false}, [&](error_code ec, lmx::lock_guard) {
            BOOST_TEST(ec == errc::would_block);
            done(inner_try);
        });
        check("try-lock from a handler", inner_try);
        guard.release([&](error_code ec) {
            BOOST_TEST(!ec);
            done(inner_release);
        });
        check("release from a handler", inner_release);
        done(outer);
    });
    check("ping", outer);
    BOOST_TEST(run_until(ctx, [&] { return pending == 0; }));
    BOOST_TEST(inner_try);
    BOOST_TEST(inner_release);
    a.close();

    // A closed client fails every call without I/O, still never inline.
    bool c1 = false, c2 = false;
    a.ping([&](error_code ec, std::chrono::microseconds) {
        BOOST_TEST(ec == errc::closed);
        a.acquire(key, [&](error_code ec2, lmx::lock_guard) {
            BOOST_TEST(ec2 == errc::closed);
            done(c2);
        });
        check("acquire on a closed client from a handler", c2);
        done(c1);
    });
    check("ping on a closed client", c1);
    BOOST_TEST(run_until(ctx, [&] { return pending == 0; }));
    BOOST_TEST(c1);
    BOOST_TEST(c2);
    BOOST_TEST(pending == 0);
}

// A handler with its own executor gets its result there, not on the client's strand.
BOOST_AUTO_TEST_CASE(handler_executor_is_honoured) {
    broker_process b;
    asio::io_context client_ctx, handler_ctx;
    lmx::client a(client_ctx.get_executor(), options_for(b.tcp_url));
    bool ran = false;
    bool on_handler_ctx = false;
    a.ping(asio::bind_executor(handler_ctx, [&](error_code ec, std::chrono::microseconds) {
        BOOST_TEST(!ec);
        on_handler_ctx = handler_ctx.get_executor().running_in_this_thread();
        ran = true;
    }));
    auto deadline = steady::now() + 10s;
    while (!ran && steady::now() < deadline) {
        client_ctx.restart();
        handler_ctx.restart();
        client_ctx.poll();
        handler_ctx.poll();
        std::this_thread::sleep_for(1ms);
    }
    BOOST_TEST(ran);
    BOOST_TEST(on_handler_ctx);
    a.close();
    client_ctx.run_for(2s);
}

BOOST_AUTO_TEST_SUITE_END()
