// Clients used from many threads at once: coroutines on an io_context run by four threads and
// plain threads waiting on futures share one client (then several), contend for the same keys
// with acquire, try-lock, acquire_many and shared holds, and end their holds every way there is,
// guards dying on threads that did not take them. The locks must still exclude each other, the
// fencing tokens must rise, and every operation must complete.

#include "tsan_fixture.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>

using namespace lmx::tsan;
using lmx::errc;
using lmx::error_code;

namespace {

struct keys {
    std::string one = fresh_key("one");
    std::string two = fresh_key("two");
    std::string rw = fresh_key("rw");
    guarded on_one, on_two;
    guarded_rw on_rw;
    std::atomic<int> queued_notices{0};
};

// Exclusive holds of k.one, each ended a different way: a confirmed release, the destructor on
// whichever thread resumed the coroutine, the destructor on the reaper's thread, or on a thread of
// the io_context through a posted function.
asio::awaitable<void> holder(lmx::client& c, keys& k, reaper& rp, failures& f, int rounds, int seed) {
    auto ex = co_await asio::this_coro::executor;
    lmx::acquire_options o{.timeout = 60s};
    // The place-in-line notice runs on the client's strand, whichever thread this coroutine is on.
    if (seed % 2) o.on_queued = [&k](std::uint32_t) { ++k.queued_notices; };
    for (int i = 0; i < rounds; ++i) {
        auto g = co_await c.acquire(k.one, o);
        f.check(g.owns_lock(), "a granted guard does not own its lock");
        k.on_one.enter(g.fencing_token());
        const long v = k.on_one.read();
        co_await asio::post(ex, asio::use_awaitable);  // the section goes on on another thread
        k.on_one.write(v + 1);
        f.check(g.owns_lock() && !g.lost(), "a hold ended inside its critical section");
        k.on_one.leave();
        switch ((i + seed) % 4) {
            case 0: co_await g.release(); break;
            case 1: break;
            case 2: rp.take(std::move(g)); break;
            case 3: asio::post(ex, [dropped = std::move(g)] {}); break;
        }
    }
}

// The same from a thread that does not run the io_context, through futures: the lease renewed
// mid-section, and the hold ended by a confirmed release, the destructor, or detach() and a
// release by id.
void holder_thread(lmx::client& c, keys& k, failures& f, int rounds, int seed) {
    for (int i = 0; i < rounds; ++i) {
        auto g = wait(c.acquire(k.one, {.timeout = 60s}, asio::use_future));
        f.check(g.owns_lock(), "a granted guard does not own its lock");
        k.on_one.enter(g.fencing_token());
        const long v = k.on_one.read();
        if (i % 4 == 0)
            wait(g.extend(60s, asio::use_future));
        else
            std::this_thread::yield();
        k.on_one.write(v + 1);
        k.on_one.leave();
        switch ((i + seed) % 3) {
            case 0: wait(g.release(asio::use_future)); break;
            case 1: break;
            case 2: {
                const auto id = g.id();
                g.detach();
                f.check(!g.owns_lock(), "a detached guard still owns its lock");
                wait(c.release(k.one, id, asio::use_future));
                break;
            }
        }
    }
}

// Try-locks of k.one: granted when it happens to be free, would_block otherwise. It goes on
// until a few were granted, which happens at the latest once the other holders are done.
void try_locker(lmx::client& c, keys& k, failures& f, int tries, std::atomic<int>& granted) {
    for (int i = 0; (i < tries || granted < 3) && i < 100 * tries; ++i) {
        if (i >= tries) std::this_thread::sleep_for(1ms);
        auto [ec, g] = wait(c.acquire(k.one, {.wait = false}, future_tuple));
        if (ec) {
            f.check(ec == errc::would_block, "a try-lock failed with " + ec.message());
            f.check(!g.owns_lock(), "a refused try-lock owns a lock");
            continue;
        }
        ++granted;
        k.on_one.enter(g.fencing_token());
        k.on_one.write(k.on_one.read() + 1);
        k.on_one.leave();
    }
}

// Both keys at once, against holders of each key alone.
asio::awaitable<void> many_holder(lmx::client& c, keys& k, reaper& rp, failures& f, int rounds) {
    for (int i = 0; i < rounds; ++i) {
        std::vector<std::string> both{k.one, k.two};  // a braced list in the co_await trips GCC 12
        auto m = co_await c.acquire_many(std::move(both), {.timeout = 60s});
        f.check(m.owns_lock(), "a granted multi guard does not own its locks");
        k.on_one.enter(m.fencing_token(k.one));
        k.on_two.enter(m.fencing_token(k.two));
        const long v1 = k.on_one.read(), v2 = k.on_two.read();
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        k.on_one.write(v1 + 1);
        k.on_two.write(v2 + 1);
        k.on_two.leave();
        k.on_one.leave();
        if (i % 2)
            co_await m.release();
        else
            rp.take(std::move(m));
    }
}

asio::awaitable<void> two_holder(lmx::client& c, keys& k, failures& f, int rounds) {
    for (int i = 0; i < rounds; ++i) {
        auto [ec, g] = co_await c.acquire(k.two, {.timeout = 60s}, tuple);
        if (ec) {
            f.add("acquire of the second key failed: " + ec.message());
            continue;
        }
        k.on_two.enter(g.fencing_token());
        const long v = k.on_two.read();
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        k.on_two.write(v + 1);
        k.on_two.leave();
    }
}

// Readers and writers of k.rw.
asio::awaitable<void> rw_holder(lmx::client& c, keys& k, failures& f, int rounds, bool writer) {
    for (int i = 0; i < rounds; ++i) {
        const bool exclusive = writer && i % 2 == 0;
        auto [ec, g] = co_await c.acquire(k.rw, {.timeout = 60s, .shared = !exclusive}, tuple);
        if (ec) {
            f.add("acquire of the shared key failed: " + ec.message());
            continue;
        }
        if (exclusive)
            k.on_rw.enter_exclusive();
        else
            k.on_rw.enter_shared();
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        if (exclusive)
            k.on_rw.leave_exclusive();
        else
            k.on_rw.leave_shared();
    }
}

// The calls that are not locks, in a loop, while the others hold and wait.
void prober(lmx::client& c, keys& k, failures& f, const std::atomic<bool>& stop) {
    int n = 0;
    while (!stop) {
        switch (n++ % 4) {
            case 0: wait(c.info(k.one, asio::use_future)); break;
            case 1: wait(c.ping(asio::use_future)); break;
            case 2: wait(c.ls(asio::use_future)); break;
            case 3:
                f.check(wait(c.stats(asio::use_future)).contains("connections"), "stats without connections");
                break;
        }
    }
}

void check_keys(lmx::client& observer, keys& k, int expected_one, int expected_two) {
    BOOST_TEST(k.on_one.overlaps() == 0);
    BOOST_TEST(k.on_two.overlaps() == 0);
    BOOST_TEST(k.on_one.stale_tokens() == 0);
    BOOST_TEST(k.on_two.stale_tokens() == 0);
    BOOST_TEST(k.on_one.entries() == expected_one);
    BOOST_TEST(k.on_two.entries() == expected_two);
    // No update lost: the sections never overlapped.
    BOOST_TEST(k.on_one.value() == k.on_one.entries());
    BOOST_TEST(k.on_two.value() == k.on_two.entries());
    BOOST_TEST(k.on_rw.conflicts() == 0);
    // Every hold was given back, whichever thread dropped its guard.
    for (auto* key : {&k.one, &k.two, &k.rw}) {
        auto info = wait_info(observer, *key, is_free);
        BOOST_TEST(is_free(info), *key << ": " << info.holders.size() << " holders, " << info.waiters << " waiters");
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tsan_contention_test)

BOOST_AUTO_TEST_CASE(one_client_from_many_threads) {
    broker_process b;
    failures f;
    runner pool(f);
    keys k;
    std::atomic<int> tried{0};
    constexpr int rounds = 100;
    {
        lmx::client c(pool.executor(), options_for(b.url("tcp")));
        lmx::client observer(pool.executor(), options_for(b.url("tcp")));
        reaper rp;
        std::atomic<bool> stop{false};
        {
            crew workers(f);
            for (int i = 0; i < 5; ++i) workers.spawn(pool.executor(), holder(c, k, rp, f, rounds, i));
            // A coroutine on a strand of its own resumes on the thread that runs the strand.
            workers.spawn(asio::make_strand(pool.executor()), holder(c, k, rp, f, rounds, 5));
            for (int i = 0; i < 2; ++i) workers.thread([&, i] { holder_thread(c, k, f, rounds, i); });
            workers.thread([&] { try_locker(c, k, f, rounds, tried); });
            workers.spawn(pool.executor(), many_holder(c, k, rp, f, rounds));
            workers.spawn(pool.executor(), two_holder(c, k, f, rounds));
            for (int i = 0; i < 3; ++i) workers.spawn(pool.executor(), rw_holder(c, k, f, rounds, i == 0));
            crew probes(f);
            probes.thread([&] { prober(c, k, f, stop); });
            BOOST_TEST_REQUIRE(workers.wait(90s), "workers still running");
            stop = true;
            BOOST_TEST(probes.wait(30s));
        }
        BOOST_TEST_MESSAGE("try-locks granted: " << tried << ", queued notices: " << k.queued_notices);
        BOOST_TEST(tried >= 3);
        BOOST_TEST(k.queued_notices > 0);
        check_keys(observer, k, 6 * rounds + 2 * rounds + tried + rounds, 2 * rounds);
        BOOST_TEST(k.on_rw.entries() == 3 * rounds);
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

// Three clients over tcp, unix and ws on one io_context, a fourth on an io_context of its own,
// all on the same keys: the broker is the only link between them.
BOOST_AUTO_TEST_CASE(several_clients_from_many_threads) {
    broker_process b;
    failures f;
    runner pool(f);
    runner other_pool(f, 2);
    keys k;
    std::atomic<int> tried{0};
    constexpr int rounds = 50;
    {
        std::vector<std::unique_ptr<lmx::client>> clients;
        for (auto kind : {"tcp", "unix", "ws"})
            clients.push_back(std::make_unique<lmx::client>(pool.executor(), options_for(b.url(kind))));
        clients.push_back(std::make_unique<lmx::client>(other_pool.executor(), options_for(b.url("tcp"))));
        reaper rp;
        {
            crew workers(f);
            for (std::size_t i = 0; i < clients.size(); ++i) {
                auto& c = *clients[i];
                auto ex = i == 3 ? other_pool.executor() : pool.executor();
                const int seed = static_cast<int>(i);
                workers.spawn(ex, holder(c, k, rp, f, rounds, seed));
                workers.spawn(asio::make_strand(ex), holder(c, k, rp, f, rounds, seed + 1));
                workers.thread([&c, &k, &f, seed] { holder_thread(c, k, f, rounds, seed); });
                workers.spawn(ex, two_holder(c, k, f, rounds));
                workers.spawn(ex, rw_holder(c, k, f, rounds, i % 2 == 0));
            }
            workers.spawn(pool.executor(), many_holder(*clients[1], k, rp, f, rounds));
            workers.spawn(other_pool.executor(), many_holder(*clients[3], k, rp, f, rounds));
            workers.thread([&] { try_locker(*clients[2], k, f, rounds, tried); });
            BOOST_TEST_REQUIRE(workers.wait(90s), "workers still running");
        }
        check_keys(*clients[0], k, 4 * 3 * rounds + 2 * rounds + tried, 4 * rounds + 2 * rounds);
        BOOST_TEST(k.on_rw.entries() == 4 * rounds);
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(other_pool.finish(), "work was left on the second io_context");
    BOOST_TEST(f.count() == 0u, f.summary());
}

BOOST_AUTO_TEST_SUITE_END()
