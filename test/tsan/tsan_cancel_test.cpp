// Timeouts and cancellation on a client shared by many threads: waits that time out, started
// from threads and coroutines, and cancellation signals that plain threads emit on the client's
// strand. Each operation completes once, and withdrawn requests leave nothing at the broker.

#include "tsan_fixture.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/post.hpp>

#include <random>

using namespace lmx::tsan;
using lmx::errc;
using lmx::error_code;

namespace {

// Waits that must time out, with the default token: the timeout is thrown.
asio::awaitable<void> timeout_waiter(lmx::client& c, const std::string& key, failures& f, std::atomic<int>& timed_out,
                                     int rounds) {
    for (int i = 0; i < rounds; ++i) {
        try {
            auto g = co_await c.acquire(key, {.timeout = std::chrono::milliseconds(15 + 5 * i)});
            f.add("an acquire of a held key was granted");
        } catch (const boost::system::system_error& e) {
            f.check(e.code() == errc::timeout, "a wait that had to time out threw " + e.code().message());
            if (e.code() == errc::timeout) ++timed_out;
        }
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tsan_cancel_test)

// Waits that end by their timeout, started from plain threads (futures) and from coroutines (the
// default token, which throws), while another client holds the key.
BOOST_AUTO_TEST_CASE(timeouts_from_threads_and_coroutines) {
    broker_process b;
    failures f;
    runner pool(f);
    const auto key = fresh_key("timeout");
    std::atomic<int> timed_out{0};
    constexpr int threads = 3, coroutines = 3, rounds = 8;
    {
        lmx::client c(pool.executor(), options_for(b.url("ws")));
        lmx::client holder(pool.executor(), options_for(b.url("tcp")));
        auto held = wait(holder.acquire(key, asio::use_future));
        {
            crew workers(f);
            for (int t = 0; t < threads; ++t)
                workers.thread([&, t] {
                    for (int i = 0; i < rounds; ++i) {
                        const auto budget = std::chrono::milliseconds(20 + 10 * ((i + t) % 5));
                        const auto t0 = steady::now();
                        auto [ec, g] = wait(c.acquire(key, {.timeout = budget}, future_tuple));
                        const auto took = steady::now() - t0;
                        f.check(ec == errc::timeout, "a wait that had to time out ended with " + ec.message());
                        f.check(!g.owns_lock(), "a timed-out acquire owns a lock");
                        f.check(took >= budget - 5ms && took < budget + 5s, "a timeout ended far from its budget");
                        if (ec == errc::timeout) ++timed_out;
                        // A try-lock in between: refused, not queued.
                        auto [ec2, g2] = wait(c.acquire(key, {.wait = false}, future_tuple));
                        f.check(ec2 == errc::would_block, "a try-lock of a held key ended with " + ec2.message());
                    }
                });
            for (int k = 0; k < coroutines; ++k)
                workers.spawn(pool.executor(), timeout_waiter(c, key, f, timed_out, rounds));
            BOOST_TEST_REQUIRE(workers.wait(90s), "workers still running");
        }
        BOOST_TEST(timed_out == (threads + coroutines) * rounds);
        auto info = wait_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info.waiters == 0u);
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
        wait(held.release(asio::use_future));
        auto g = wait(c.acquire(key, {.wait = false}, asio::use_future));
        BOOST_TEST(g.owns_lock());
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

// Plain threads bind cancellation signals to callbacks and emit them on the client's strand
// (client::get_executor()), where the client keeps its side of every slot.
BOOST_AUTO_TEST_CASE(signals_emitted_on_the_client_strand) {
    constexpr int threads = 3, rounds = 8;
    broker_process b;
    failures f;
    runner pool(f);
    // Between the io_context and the clients: the signals outlive every operation bound to them,
    // and the handlers left in their slots (which hold executors) go before the io_context does.
    std::vector<std::deque<asio::cancellation_signal>> signals(threads);
    completions done;
    const auto key = fresh_key("signal");
    std::atomic<int> cancelled{0}, other_calls{0};
    {
        lmx::client c(pool.executor(), options_for(b.url("tcp")));
        lmx::client holder(pool.executor(), options_for(b.url("unix")));
        auto held = wait(holder.acquire(key, asio::use_future));
        {
            crew workers(f);
            for (int t = 0; t < threads; ++t)
                workers.thread([&, t] {
                    std::minstd_rand rng(static_cast<unsigned>(t) + 7);
                    for (int i = 0; i < rounds; ++i) {
                        auto& sig = signals[static_cast<std::size_t>(t)].emplace_back();
                        auto result = std::make_shared<std::promise<error_code>>();
                        auto ended = result->get_future();
                        auto once = done.start();
                        auto ended_with = [&f, &done, once, result](error_code ec, bool owns) {
                            done.done(*once);
                            f.check(!owns, "a cancelled acquire owns a lock");
                            result->set_value(ec);
                        };
                        if (i % 2)
                            c.acquire(key, {.timeout = 30s},
                                      asio::bind_cancellation_slot(sig.slot(),
                                                                   [ended_with](error_code ec, lmx::lock_guard g) {
                                                                       ended_with(ec, g.owns_lock());
                                                                   }));
                        else
                            c.acquire_many({key, fresh_key("signal-other")}, {.timeout = 30s},
                                           asio::bind_cancellation_slot(
                                               sig.slot(), [ended_with](error_code ec, lmx::multi_lock_guard m) {
                                                   ended_with(ec, m.owns_lock());
                                               }));
                        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
                        asio::post(c.get_executor(), [&sig] { sig.emit(asio::cancellation_type::terminal); });
                        const auto ec = wait(std::move(ended));
                        f.check(ec == errc::cancelled, "a cancelled acquire ended with " + ec.message());
                        if (ec == errc::cancelled) ++cancelled;

                        // A call that is not a lock: cancelled, or answered first.
                        auto& sig2 = signals[static_cast<std::size_t>(t)].emplace_back();
                        auto info_result = std::make_shared<std::promise<error_code>>();
                        auto info_ended = info_result->get_future();
                        auto once2 = done.start();
                        c.info(key, asio::bind_cancellation_slot(
                                        sig2.slot(), [&done, once2, info_result](error_code ec2, lmx::lock_info) {
                                            done.done(*once2);
                                            info_result->set_value(ec2);
                                        }));
                        asio::post(c.get_executor(), [&sig2] { sig2.emit(asio::cancellation_type::terminal); });
                        const auto ec2 = wait(std::move(info_ended));
                        f.check(!ec2 || ec2 == errc::cancelled, "a cancelled info ended with " + ec2.message());
                        ++other_calls;
                    }
                });
            BOOST_TEST_REQUIRE(workers.wait(90s), "workers still running");
        }
        BOOST_TEST(done.wait_all(10s));
        BOOST_TEST(done.started() == 2 * threads * rounds);
        BOOST_TEST(done.completed() == done.started());
        BOOST_TEST(done.repeated() == 0);
        BOOST_TEST(cancelled == threads * rounds);
        BOOST_TEST(other_calls == threads * rounds);
        auto info = wait_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info.waiters == 0u);
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

BOOST_AUTO_TEST_SUITE_END()
