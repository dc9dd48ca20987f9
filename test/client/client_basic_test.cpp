// Every client call against a real broker over tcp, unix and ws: hello, the guard's RAII release
// (scope exit, exception, move-assign), confirmed release, extend, semaphores, try-lock, wait
// timeouts, shared locks, acquire_many, release by id, force release, introspection and close.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <stdexcept>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using lmx::errc;

namespace {
constexpr auto tuple = asio::as_tuple(asio::use_awaitable);
}  // namespace

BOOST_AUTO_TEST_SUITE(client_basic_test)

BOOST_DATA_TEST_CASE(connect_hello_and_ping, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client c(ex, options_for(b.url(kind)));
        BOOST_TEST(c.options().url == b.url(kind));
        co_await c.connect();
        co_await c.connect();  // already connected: a no-op
        auto rtt = co_await c.ping();
        BOOST_TEST(rtt.count() > 0);
        BOOST_TEST(rtt < std::chrono::microseconds(2s));
        auto stats = co_await c.stats();
        BOOST_TEST(stats.contains("connections"), dump(stats));
        BOOST_TEST(number(stats, "connections") >= 1);
    });
}

BOOST_DATA_TEST_CASE(guard_releases_on_scope_exit, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("scope");
        std::string id;
        {
            auto guard = co_await a.acquire(key);
            BOOST_TEST(guard.owns_lock());
            BOOST_TEST(static_cast<bool>(guard));
            BOOST_TEST(!guard.lost());
            BOOST_TEST(guard.key() == key);
            BOOST_TEST(!guard.id().empty());
            BOOST_TEST(guard.fencing_token() > 0u);
            id = guard.id();
            auto info = co_await other.info(key);
            BOOST_TEST(info.locked);
            BOOST_TEST(info.holders == std::vector<std::string>{id});
            BOOST_TEST(info.last_token == guard.fencing_token());
        }
        // The destructor queued the unlock on a's strand before this ping, so the broker has
        // handled it by the time the pong arrives.
        co_await a.ping();
        auto info = co_await other.info(key);
        BOOST_TEST(info.holders.empty());
        BOOST_TEST(!info.locked);
    });
}

BOOST_DATA_TEST_CASE(guard_releases_on_exception, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("throw");
        bool caught = false;
        try {
            auto guard = co_await a.acquire(key);
            auto info1 = co_await other.info(key);
            BOOST_TEST(info1.holders.size() == 1u);
            throw std::runtime_error("work failed");
        } catch (const std::runtime_error&) {
            caught = true;
        }
        BOOST_TEST(caught);
        co_await a.ping();
        auto info2 = co_await other.info(key);
        BOOST_TEST(is_free(info2));
        // And the key is really free: another client takes it without waiting.
        auto g = co_await other.acquire(key, {.wait = false});
        BOOST_TEST(g.owns_lock());
    });
}

BOOST_DATA_TEST_CASE(guard_releases_on_move_assign, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto k1 = fresh_key("move1"), k2 = fresh_key("move2");
        auto g1 = co_await a.acquire(k1);
        auto g2 = co_await a.acquire(k2);
        auto id2 = g2.id();
        g1 = std::move(g2);  // releases k1, takes over k2
        BOOST_TEST(!g2.owns_lock());
        BOOST_TEST(g2.key().empty());
        BOOST_TEST(g1.owns_lock());
        BOOST_TEST(g1.key() == k2);
        BOOST_TEST(g1.id() == id2);
        lmx::lock_guard g3(std::move(g1));  // move construction transfers without releasing
        BOOST_TEST(!g1.owns_lock());
        BOOST_TEST(g3.owns_lock());
        co_await a.ping();
        auto info3 = co_await other.info(k1);
        BOOST_TEST(is_free(info3));
        auto info4 = co_await other.info(k2);
        BOOST_TEST(info4.holders == std::vector<std::string>{id2});
        g3 = lmx::lock_guard{};
        co_await a.ping();
        auto info5 = co_await other.info(k2);
        BOOST_TEST(is_free(info5));
    });
}

BOOST_DATA_TEST_CASE(confirmed_release, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("release");
        auto guard = co_await a.acquire(key);
        co_await guard.release();
        BOOST_TEST(!guard.owns_lock());
        BOOST_TEST(!guard.lost());
        BOOST_TEST(guard.key() == key);  // the guard still names what it held
        auto info6 = co_await other.info(key);
        BOOST_TEST(is_free(info6));  // confirmed: no ping needed
        auto [ec] = co_await guard.release(tuple);
        BOOST_TEST(ec == errc::not_holder, ec.message());
        lmx::lock_guard empty;
        std::tie(ec) = co_await empty.release(tuple);
        BOOST_TEST(ec == errc::not_holder, ec.message());
        std::tie(ec) = co_await empty.extend(1s, tuple);
        BOOST_TEST(ec == errc::not_holder, ec.message());
    });
}

BOOST_DATA_TEST_CASE(extend_keeps_a_short_lease, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("extend");
        auto guard = co_await a.acquire(key, {.ttl = 300ms});
        for (int i = 0; i < 3; ++i) {
            co_await sleep_for(150ms);
            co_await guard.extend(300ms);
        }
        // 450 ms after the grant, well past the original 300 ms lease.
        BOOST_TEST(guard.owns_lock());
        auto info7 = co_await other.info(key);
        BOOST_TEST(info7.holders == std::vector<std::string>{guard.id()});
        co_await guard.extend(lmx::no_expiry);
        co_await sleep_for(400ms);
        BOOST_TEST(guard.owns_lock());
        auto info8 = co_await other.info(key);
        BOOST_TEST(info8.holders.size() == 1u);
        co_await guard.release();
        auto [ec] = co_await guard.extend(1s, tuple);
        BOOST_TEST(ec == errc::not_holder, ec.message());
    });
}

BOOST_DATA_TEST_CASE(semaphore_with_max_4, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("gpu");
        std::vector<lmx::lock_guard> pool;
        for (int i = 0; i < 3; ++i) pool.push_back(co_await a.acquire(key, {.ttl = 30s, .max = 4}));
        pool.push_back(co_await other.acquire(key, {.ttl = 30s, .max = 4}));
        auto info = co_await other.info(key);
        BOOST_TEST(info.max == 4u);
        BOOST_TEST(info.holders.size() == 4u);
        for (auto& g : pool) BOOST_TEST(g.owns_lock());
        auto [ec, fifth] = co_await a.acquire(key, {.max = 4, .wait = false}, tuple);
        BOOST_TEST(ec == errc::would_block, ec.message());
        BOOST_TEST(!fifth.owns_lock());
        co_await pool.front().release();  // confirmed release of one slot
        auto again = co_await a.acquire(key, {.max = 4, .wait = false});
        BOOST_TEST(again.owns_lock());
        auto info9 = co_await other.info(key);
        BOOST_TEST(info9.holders.size() == 4u);
    });
}

BOOST_DATA_TEST_CASE(try_lock_would_block, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("try");
        auto held = co_await other.acquire(key);
        try {
            auto g = co_await a.acquire(key, {.wait = false});
            BOOST_FAIL("a try-lock of a held key succeeded");
        } catch (const boost::system::system_error& e) {
            BOOST_TEST(e.code() == errc::would_block, e.code().message());
        }
        auto info = co_await other.info(key);
        BOOST_TEST(info.waiters == 0u);  // a try-lock never queues
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
        held = {};
        co_await other.ping();
        auto g = co_await a.acquire(key, {.wait = false});
        BOOST_TEST(g.owns_lock());
    });
}

BOOST_DATA_TEST_CASE(acquire_timeout_leaves_nothing, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("timeout");
        auto held = co_await other.acquire(key);
        auto t0 = steady::now();
        auto [ec, g] = co_await a.acquire(key, {.timeout = 200ms}, tuple);
        auto waited = ms_since(t0);
        BOOST_TEST(ec == errc::timeout, ec.message());
        BOOST_TEST(!g.owns_lock());
        BOOST_TEST(waited >= 190);
        BOOST_TEST(waited < 2000);
        auto info = co_await other.info(key);
        BOOST_TEST(info.waiters == 0u);
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
        co_await held.release();
        // Nobody is left in line to inherit the key.
        co_await a.ping();
        auto info10 = co_await other.info(key);
        BOOST_TEST(is_free(info10));
        // The client's own defaults: lock_request_timeout per try, times max_retries.
        auto o = options_for(b.url(kind));
        o.lock_request_timeout = 100ms;
        o.max_retries = 2;
        lmx::client c(ex, o);
        auto held2 = co_await other.acquire(key);
        t0 = steady::now();
        std::tie(ec, g) = co_await c.acquire(key, {}, tuple);
        waited = ms_since(t0);
        BOOST_TEST(ec == errc::timeout, ec.message());
        BOOST_TEST(waited >= 190);
        BOOST_TEST(waited < 2000);
        t0 = steady::now();
        std::tie(ec, g) = co_await c.acquire(key, {.max_retries = 0u}, tuple);
        BOOST_TEST(ec == errc::timeout, ec.message());
        BOOST_TEST(ms_since(t0) < 190);  // one try only
        auto info11 = co_await other.info(key);
        BOOST_TEST(info11.waiters == 0u);
    });
}

BOOST_DATA_TEST_CASE(shared_locks_coexist, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("shared");
        auto reader1 = co_await a.acquire(key, {.shared = true});
        auto reader2 = co_await other.acquire(key, {.shared = true});
        auto info12 = co_await other.info(key);
        BOOST_TEST(info12.holders.size() == 2u);
        auto [ec, w] = co_await a.acquire(key, {.wait = false}, tuple);
        BOOST_TEST(ec == errc::would_block, ec.message());
        reader1 = {};
        reader2 = {};
        co_await a.ping();
        co_await other.ping();
        auto writer = co_await a.acquire(key, {.wait = false});
        BOOST_TEST(writer.owns_lock());
    });
}

BOOST_DATA_TEST_CASE(acquire_many_all_or_nothing, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto x = fresh_key("x"), y = fresh_key("y");
        // Key lists are built outside the co_await expressions: GCC 12 miscompiles an
        // initializer_list there ("array used as initializer").
        std::vector<std::string> with_duplicate{y, x, y}, both{x, y};
        {
            auto many = co_await a.acquire_many(with_duplicate);
            BOOST_TEST(many.owns_lock());
            BOOST_TEST(!many.id().empty());
            std::vector<std::string> sorted{x, y};
            std::sort(sorted.begin(), sorted.end());
            BOOST_TEST(many.keys() == sorted);
            BOOST_TEST(many.fencing_token(x) > 0u);
            BOOST_TEST(many.fencing_token(y) > 0u);
            BOOST_TEST(many.fencing_token("elsewhere") == 0u);
            auto [ec, g] = co_await other.acquire(x, {.wait = false}, tuple);
            BOOST_TEST(ec == errc::would_block, ec.message());
        }
        co_await a.ping();  // the multi guard's destructor released both keys
        auto info13 = co_await other.info(x);
        BOOST_TEST(is_free(info13));
        auto info14 = co_await other.info(y);
        BOOST_TEST(is_free(info14));

        auto held = co_await other.acquire(y);
        auto [ec, none] = co_await a.acquire_many(both, {.wait = false}, tuple);
        BOOST_TEST(ec == errc::would_block, ec.message());
        BOOST_TEST(!none.owns_lock());
        auto info15 = co_await other.info(x);
        BOOST_TEST(is_free(info15));  // nothing taken when one key is busy
        std::tie(ec, none) = co_await a.acquire_many(both, {.timeout = 150ms}, tuple);
        BOOST_TEST(ec == errc::timeout, ec.message());
        auto info16 = co_await other.info(y);
        BOOST_TEST(info16.waiters == 0u);
        co_await held.release();

        auto many = co_await a.acquire_many(both, {.ttl = 5s});
        co_await many.release();
        BOOST_TEST(!many.owns_lock());
        auto info17 = co_await other.info(x);
        BOOST_TEST(is_free(info17));
        auto info18 = co_await other.info(y);
        BOOST_TEST(is_free(info18));
        auto [ec2] = co_await many.release(tuple);
        BOOST_TEST(ec2 == errc::not_holder, ec2.message());
    });
}

BOOST_DATA_TEST_CASE(release_by_id_and_force_release, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("byid");
        // A hold that outlives its client: only its id can end it.
        std::string id;
        {
            lmx::client gone(ex, options_for(b.url(kind)));
            auto g = co_await gone.acquire(key, {.keep_locks_on_exit = true});
            id = g.id();
            g.detach();
            BOOST_TEST(!g.owns_lock());
            gone.close();
        }
        co_await sleep_for(100ms);
        auto info19 = co_await other.info(key);
        BOOST_TEST(info19.holders == std::vector<std::string>{id});
        co_await other.release(key, id);
        auto info20 = co_await other.info(key);
        BOOST_TEST(is_free(info20));
        // Already gone: the caller hears that the id held nothing (the broker's answer stays an
        // idempotent success on the wire).
        auto [again] = co_await other.release(key, id, as_tuple(asio::use_awaitable));
        BOOST_TEST(again == lmx::errc::not_held);
        {
            // The same from the client's own option.
            auto o = options_for(b.url(kind));
            o.keep_locks_on_exit = true;
            lmx::client keeper(ex, o);
            auto g = co_await keeper.acquire(key);
            id = g.id();
            keeper.close();
        }
        auto kept = co_await poll_info(
            other, key, [](auto& i) { return i.holders.empty(); }, 300ms);
        BOOST_TEST(kept.holders == std::vector<std::string>{id});
        co_await other.release(key, id);

        auto forced = fresh_key("force");
        auto g1 = co_await a.acquire(forced, {.max = 2});
        auto g2 = co_await a.acquire(forced, {.max = 2});
        co_await other.force_release(forced);
        auto info21 = co_await other.info(forced);
        BOOST_TEST(is_free(info21));
        // Each holder hears lock-lost.
        auto deadline = steady::now() + 3s;
        while ((!g1.lost() || !g2.lost()) && steady::now() < deadline) co_await sleep_for(10ms);
        BOOST_TEST(g1.lost());
        BOOST_TEST(g2.lost());
        BOOST_TEST(!g1.owns_lock());
        auto [ec] = co_await g1.release(tuple);
        BOOST_TEST(ec == errc::lock_lost, ec.message());
        std::tie(ec) = co_await g2.extend(1s, tuple);
        BOOST_TEST(ec == errc::lock_lost, ec.message());
    });
}

BOOST_DATA_TEST_CASE(ls_info_ping_stats, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("intro");
        auto g = co_await a.acquire(key, {.max = 3});
        auto keys = co_await other.ls();
        BOOST_TEST((std::find(keys.begin(), keys.end(), key) != keys.end()));
        auto info = co_await other.info(key);
        BOOST_TEST(info.key == key);
        BOOST_TEST(info.locked);
        BOOST_TEST(info.max == 3u);
        BOOST_TEST(info.waiters == 0u);
        BOOST_TEST(info.holders == std::vector<std::string>{g.id()});
        BOOST_TEST(info.last_token == g.fencing_token());
        auto unknown = co_await other.info(fresh_key("never"));
        BOOST_TEST(!unknown.locked);
        BOOST_TEST(unknown.holders.empty());
        auto rtt1 = co_await other.ping();
        BOOST_TEST(rtt1.count() > 0);
        auto stats = co_await other.stats();
        BOOST_TEST(stats.contains("holders"), dump(stats));
        BOOST_TEST(number(stats, "holders") >= 1);
        // Fencing tokens strictly increase from grant to grant.
        co_await g.release();
        auto next = co_await other.acquire(key);
        BOOST_TEST(next.fencing_token() > info.last_token);
    });
}

BOOST_DATA_TEST_CASE(close_fails_pending_and_later_calls, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto a = std::make_unique<lmx::client>(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("close");
        auto held = co_await other.acquire(key);
        auto mine = co_await a->acquire(fresh_key("mine"));
        lmx::error_code pending_ec;
        bool pending_done = false;
        a->acquire(key, [&](lmx::error_code ec, lmx::lock_guard) {
            pending_ec = ec;
            pending_done = true;
        });
        BOOST_TEST(!pending_done);
        auto info22 = co_await poll_info(other, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(info22.waiters == 1u);
        a->close();
        auto deadline = steady::now() + 3s;
        while (!pending_done && steady::now() < deadline) co_await sleep_for(5ms);
        BOOST_TEST(pending_done);
        BOOST_TEST(pending_ec == errc::closed, pending_ec.message());
        BOOST_TEST(!mine.owns_lock());
        auto [ec, rtt] = co_await a->ping(tuple);
        BOOST_TEST(ec == errc::closed, ec.message());
        // The broker let go of the waiter and of the closed client's hold.
        auto info = co_await poll_info(other, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info.waiters == 0u);
        auto info23 = co_await poll_info(other, mine.key(), is_free);
        BOOST_TEST(is_free(info23));
        // A guard may outlive its client: it only stops tracking the hold.
        a.reset();
        mine = {};
        std::tie(ec) = co_await held.release(tuple);
        BOOST_TEST(!ec, ec.message());
    });
}

BOOST_AUTO_TEST_SUITE_END()
