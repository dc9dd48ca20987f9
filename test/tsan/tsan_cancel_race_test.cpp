// `acquire || timer` from coroutines on strands of their own, the timer firing about when the
// grant comes, so that the cancel crosses the grant now on one side, now on the other. Every
// round completes once, a withdrawal is prompt, the grants still exclude each other, and no
// withdrawn request or crossing grant is left at the broker. A suite of its own so that a report
// here (halt_on_error ends the process) does not hide the other cancellation tests.

#include "tsan_fixture.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>

#include <random>

using namespace lmx::tsan;
using namespace boost::asio::experimental::awaitable_operators;
using lmx::errc;
using lmx::error_code;

namespace {

struct race_counts {
    std::atomic<int> granted{0}, withdrawn{0}, slow_withdrawals{0};
};

// The coroutine runs on a strand, as a coroutine whose operations cancel each other must on an
// io_context run by several threads.
asio::awaitable<void> racer(lmx::client& c, const std::string& key, guarded& r, failures& f, race_counts& n, int rounds,
                            unsigned seed) {
    std::minstd_rand rng(seed);
    auto ex = co_await asio::this_coro::executor;
    for (int i = 0; i < rounds; ++i) {
        asio::steady_timer t(ex, std::chrono::microseconds(rng() % 3000));
        const auto t0 = steady::now();
        auto result = co_await (c.acquire(key, {.timeout = 60s}, tuple) || t.async_wait(tuple));
        if (result.index() == 1) {
            ++n.withdrawn;
            // The acquire is withdrawn at once; waiting for a grant instead would show up here.
            if (steady::now() - t0 > 2s) ++n.slow_withdrawals;
            continue;
        }
        auto& [ec, g] = std::get<0>(result);
        if (ec) {
            f.add("a raced acquire failed with " + ec.message());
            continue;
        }
        ++n.granted;
        r.enter(g.fencing_token());
        const long v = r.read();
        co_await asio::post(ex, asio::use_awaitable);
        r.write(v + 1);
        r.leave();
        if (i % 2) co_await g.release();
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tsan_cancel_race_test)

BOOST_AUTO_TEST_CASE(timers_racing_grants_from_strands) {
    broker_process b;
    failures f;
    runner pool(f);
    guarded r;
    race_counts n;
    const auto key = fresh_key("race");
    constexpr int racers = 6, rounds = 150;
    {
        lmx::client a(pool.executor(), options_for(b.url("unix")));
        lmx::client c(pool.executor(), options_for(b.url("tcp")));
        {
            crew workers(f);
            for (int i = 0; i < racers; ++i) {
                const auto seed = 17u * static_cast<unsigned>(i) + 1;
                workers.spawn(asio::make_strand(pool.executor()), racer(i % 2 ? a : c, key, r, f, n, rounds, seed));
            }
            BOOST_TEST_REQUIRE(workers.wait(90s), "racers still running");
        }
        BOOST_TEST_MESSAGE("granted: " << n.granted << ", withdrawn: " << n.withdrawn);
        BOOST_TEST(n.granted + n.withdrawn == racers * rounds);
        BOOST_TEST(n.slow_withdrawals == 0);
        BOOST_TEST(r.overlaps() == 0);
        BOOST_TEST(r.stale_tokens() == 0);
        BOOST_TEST(r.entries() == n.granted);
        BOOST_TEST(r.value() == r.entries());
        // No withdrawn request stayed in line and no crossing grant was kept.
        auto info = wait_info(a, key, is_free);
        BOOST_TEST(is_free(info), info.holders.size() << " holders, " << info.waiters << " waiters");
        auto g = wait(c.acquire(key, {.wait = false}, asio::use_future));
        BOOST_TEST(g.owns_lock());
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

BOOST_AUTO_TEST_SUITE_END()
