// The lease keeper against real etcd: renewals that keep a lease past its ttl, a loss reported
// before the lease can have expired when etcd goes away, and a new lease once it is back.

#include "etcd_cluster.hpp"
#include "etcd_test_helpers.hpp"
#include "run_body.hpp"

#include <lmx/etcd/client.hpp>
#include <lmx/etcd/lease_keeper.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <functional>
#include <vector>

namespace asio = boost::asio;
namespace etcd = lmx::etcd;
using namespace std::chrono_literals;
using lmx::test::etcd_cluster;
using lmx::test::sleep_for;
using lmx::test::until;
using steady = std::chrono::steady_clock;

namespace {

// What the keeper reported, with when, and until when it had said the lease surely existed.
struct seen {
    etcd::lease_keeper::event event;
    steady::time_point at;
    steady::time_point held_until;
};

// A client of `cluster`, a keeper of a `ttl` lease on it running beside `body`, and the events so far.
void with_keeper(const etcd_cluster& cluster, std::chrono::seconds ttl,
                 std::function<asio::awaitable<void>(etcd::client&, etcd::lease_keeper&, std::vector<seen>&)> body,
                 std::chrono::milliseconds request_timeout = 1s) {
    asio::io_context ctx;
    lmx::test::run_body(
        ctx,
        [&](asio::any_io_executor ex) -> asio::awaitable<void> {
            etcd::client c(ex, lmx::test::etcd_options(cluster.endpoints(), request_timeout));
            std::vector<seen> events;
            steady::time_point held_until{};
            etcd::lease_keeper keeper(c, ttl, [&](const etcd::lease_keeper::event& e) {
                events.push_back({e, steady::now(), held_until});
            });
            bool ran = false;
            asio::co_spawn(ex, keeper.run(), [&](std::exception_ptr) { ran = true; });
            // Samples holds_until() so that a loss can be compared with what was promised before it.
            bool sampling = true;
            asio::co_spawn(
                ex,
                [&]() -> asio::awaitable<void> {
                    while (sampling) {
                        if (keeper.lease()) held_until = keeper.holds_until();
                        co_await sleep_for(5ms);
                    }
                },
                asio::detached);
            co_await body(c, keeper, events);
            keeper.stop();
            sampling = false;
            while (!ran) co_await sleep_for(10ms);
        },
        90s);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(etcd_lease_keeper_test)

BOOST_AUTO_TEST_CASE(a_lease_outlives_its_ttl_while_kept_and_goes_when_the_keeper_stops) {
    etcd_cluster cluster;
    std::int64_t lease = 0;
    etcd::client* client = nullptr;
    with_keeper(cluster, 2s,
                [&](etcd::client& c, etcd::lease_keeper& k, std::vector<seen>& events) -> asio::awaitable<void> {
                    client = &c;
                    BOOST_REQUIRE(co_await until([&] { return !events.empty(); }, 5000ms));
                    BOOST_TEST((events[0].event.kind == etcd::lease_keeper::event_kind::granted));
                    lease = k.lease();
                    BOOST_TEST(lease == events[0].event.lease);
                    co_await c.put("/k/a", "kept", lease);
                    co_await sleep_for(4500ms);  // more than twice the ttl
                    BOOST_TEST((co_await c.range("/k/a")).kvs.size() == 1u);
                    BOOST_TEST(k.lease() == lease);
                    BOOST_TEST(events.size() == 1u);  // nothing lost
                    BOOST_TEST((k.holds_until() > steady::now()));
                    co_return;
                });
    // Stopped: the lease was revoked, and its key went with it.
    asio::io_context ctx;
    lmx::test::run_body(
        ctx,
        [&](asio::any_io_executor ex) -> asio::awaitable<void> {
            etcd::client c(ex, {.endpoints = cluster.endpoints()});
            BOOST_TEST((co_await c.range("/k/a")).kvs.empty());
            BOOST_TEST((co_await c.keep_alive(lease)).count() == 0);
        },
        30s);
}

BOOST_AUTO_TEST_CASE(losing_etcd_is_reported_before_the_lease_can_expire_and_a_new_lease_follows) {
    etcd_cluster cluster;
    with_keeper(
        cluster, 3s, [&](etcd::client& c, etcd::lease_keeper& k, std::vector<seen>& events) -> asio::awaitable<void> {
            BOOST_REQUIRE(co_await until([&] { return k.lease() != 0; }, 5000ms));
            const auto first = k.lease();
            co_await c.put("/k/b", "on the first lease", first);
            co_await sleep_for(1200ms);  // a renewal or two
            cluster.kill(0);
            BOOST_REQUIRE(co_await until([&] { return events.size() >= 2; }, 5000ms));
            const auto& lost = events[1];
            BOOST_TEST((lost.event.kind == etcd::lease_keeper::event_kind::lost));
            BOOST_TEST(lost.event.lease == first);
            BOOST_TEST(!lost.event.why.empty());
            // Before the lease could have expired: the keeper's own bound, which etcd's expiry is never
            // earlier than, had not come yet.
            BOOST_TEST(
                (lost.at < lost.held_until),
                "reported " << std::chrono::duration_cast<std::chrono::milliseconds>(lost.at - lost.held_until).count()
                            << " ms after the bound");
            BOOST_TEST(k.lease() == 0);
            cluster.restart(0);
            BOOST_REQUIRE(co_await until([&] { return events.size() >= 3; }, 10000ms));
            BOOST_TEST((events[2].event.kind == etcd::lease_keeper::event_kind::granted));
            BOOST_TEST(events[2].event.lease != first);
            // The lost lease was revoked before the new one came: its key is gone, not left to its ttl.
            BOOST_TEST((co_await c.range("/k/b")).kvs.empty());
            BOOST_TEST((co_await c.keep_alive(first)).count() == 0);
        });
}

// A renewal that fails is tried again soon, not a renewal interval later: one failure must not use
// up the margin. With a 6 s ttl renewals come every 2 s and the loss is due 2 s before the bound.
BOOST_AUTO_TEST_CASE(a_renewal_that_fails_once_is_tried_again_before_the_margin_runs_out) {
    etcd_cluster cluster;
    with_keeper(
        cluster, 6s,
        [&](etcd::client&, etcd::lease_keeper& k, std::vector<seen>& events) -> asio::awaitable<void> {
            BOOST_REQUIRE(co_await until([&] { return k.lease() != 0; }, 5000ms));
            const auto lease = k.lease();
            const auto granted_until = k.holds_until();
            BOOST_REQUIRE(co_await until([&] { return k.holds_until() != granted_until; }, 5000ms));
            // Just renewed: etcd answers nothing for 2.8 s, so the next renewal (due in 2 s) times
            // out, here after 0.6 s (0.3 s on the kept connection, 0.3 s on a fresh one).
            const auto renewed = steady::now();
            cluster.pause(0);
            co_await sleep_for(2800ms);
            cluster.resume(0);
            co_await sleep_for(4000ms);  // past the moment the loss would have been reported
            BOOST_TEST(events.size() == 1u, "events: " << events.size());  // the grant only
            BOOST_TEST(k.lease() == lease);
            BOOST_TEST((k.holds_until() > renewed + 6s));
        },
        300ms);
}

BOOST_AUTO_TEST_CASE(a_lease_etcd_no_longer_has_is_reported_lost_and_replaced) {
    etcd_cluster cluster;
    with_keeper(cluster, 2s,
                [&](etcd::client& c, etcd::lease_keeper& k, std::vector<seen>& events) -> asio::awaitable<void> {
                    BOOST_REQUIRE(co_await until([&] { return k.lease() != 0; }, 5000ms));
                    const auto first = k.lease();
                    co_await c.revoke_lease(first);  // say, by an operator
                    BOOST_REQUIRE(co_await until([&] { return events.size() >= 3; }, 5000ms));
                    BOOST_TEST((events[1].event.kind == etcd::lease_keeper::event_kind::lost));
                    BOOST_TEST(events[1].event.why == "etcd no longer has the lease");
                    BOOST_TEST((events[2].event.kind == etcd::lease_keeper::event_kind::granted));
                    BOOST_TEST(k.lease() == events[2].event.lease);
                    BOOST_TEST(k.lease() != first);
                });
}

BOOST_AUTO_TEST_SUITE_END()
