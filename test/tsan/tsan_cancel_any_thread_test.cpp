// Cancellation as docs/client.md shows it, from threads other than the client's strand: bind a
// signal's slot to the call, then emit the signal from the calling thread. "Every call may be
// made from any thread", so this must work on an io_context run by four threads too: the handler
// gets `cancelled`, promptly, exactly once. A suite of its own because a report here must not stop
// the other cancellation tests (halt_on_error ends the process at the first report).

#include "tsan_fixture.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/this_coro.hpp>

#include <random>

using namespace lmx::tsan;
using lmx::errc;
using lmx::error_code;

namespace {

struct outcome_counts {
    std::atomic<int> cancelled{0}, lost{0}, other{0};
    void add(error_code ec, failures& f) {
        if (ec == errc::cancelled)
            ++cancelled;
        else if (ec == errc::timeout)
            ++lost;  // the emit came and went, the wait ran to its end
        else {
            ++other;
            f.add("a cancelled acquire ended with " + ec.message());
        }
    }
};

// A coroutine on the io_context (any of its threads) starts a callback acquire and emits the
// signal itself, with or without a pause in between.
asio::awaitable<void> canceller(lmx::client& c, const std::string& key, std::deque<asio::cancellation_signal>& signals,
                                completions& done, outcome_counts& n, failures& f, int rounds, unsigned seed) {
    std::minstd_rand rng(seed);
    for (int i = 0; i < rounds; ++i) {
        auto& sig = signals.emplace_back();
        auto result = std::make_shared<std::promise<error_code>>();
        auto ended = result->get_future();
        auto once = done.start();
        c.acquire(key, {.timeout = 3s},
                  asio::bind_cancellation_slot(sig.slot(), [&done, once, result](error_code ec, lmx::lock_guard) {
                      done.done(*once);
                      result->set_value(ec);
                  }));
        if (i % 2) co_await sleep_for(std::chrono::microseconds(rng() % 2000));
        sig.emit(asio::cancellation_type::terminal);
        while (ended.wait_for(0s) != std::future_status::ready) co_await sleep_for(1ms);
        n.add(ended.get(), f);
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tsan_cancel_any_thread_test)

BOOST_AUTO_TEST_CASE(signal_emitted_by_the_calling_thread) {
    constexpr int threads = 3, coroutines = 3, rounds = 6;
    broker_process b;
    failures f;
    runner pool(f);
    // Between the io_context and the clients: the signals outlive every operation bound to them,
    // and the handlers left in their slots (which hold executors) go before the io_context does.
    std::vector<std::deque<asio::cancellation_signal>> signals(threads + coroutines);
    completions done;
    outcome_counts n;
    const auto key = fresh_key("emit");
    {
        lmx::client c(pool.executor(), options_for(b.url("tcp")));
        lmx::client holder(pool.executor(), options_for(b.url("tcp")));
        auto held = wait(holder.acquire(key, asio::use_future));
        wait(c.connect(asio::use_future));
        {
            crew workers(f);
            for (int t = 0; t < threads; ++t)
                workers.thread([&, t] {
                    std::minstd_rand rng(static_cast<unsigned>(t) + 3);
                    for (int i = 0; i < rounds; ++i) {
                        // As in docs/client.md: the call, then the emit, from the same thread.
                        auto& sig = signals[static_cast<std::size_t>(t)].emplace_back();
                        auto result = std::make_shared<std::promise<error_code>>();
                        auto ended = result->get_future();
                        auto once = done.start();
                        c.acquire(key, {.timeout = 3s},
                                  asio::bind_cancellation_slot(sig.slot(),
                                                               [&done, once, result](error_code ec, lmx::lock_guard) {
                                                                   done.done(*once);
                                                                   result->set_value(ec);
                                                               }));
                        if (i % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
                        sig.emit(asio::cancellation_type::terminal);
                        n.add(wait(std::move(ended)), f);
                    }
                });
            for (int k = 0; k < coroutines; ++k)
                workers.spawn(pool.executor(), canceller(c, key, signals[static_cast<std::size_t>(threads + k)], done,
                                                         n, f, rounds, static_cast<unsigned>(k) + 11));
            BOOST_TEST_REQUIRE(workers.wait(90s), "workers still running");
        }
        BOOST_TEST(done.wait_all(10s));
        BOOST_TEST(done.completed() == done.started());
        BOOST_TEST(done.repeated() == 0);
        BOOST_TEST(n.lost == 0,
                   n.lost << " of " << done.started() << " emitted cancellations were lost (the acquire timed out)");
        BOOST_TEST(n.cancelled == (threads + coroutines) * rounds);
        auto info = wait_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info.waiters == 0u);
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

BOOST_AUTO_TEST_SUITE_END()
