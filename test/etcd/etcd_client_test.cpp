// The etcd client against real etcd processes: keys, ranges, transactions, leases, watches,
// compaction, and endpoints that die.

#include "etcd_cluster.hpp"
#include "etcd_test_helpers.hpp"
#include "run_body.hpp"
#include "test_pki.hpp"

#include <lmx/etcd/client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <functional>
#include <optional>

namespace asio = boost::asio;
namespace etcd = lmx::etcd;
using namespace std::chrono_literals;
using lmx::test::etcd_cluster;
using lmx::test::sleep_for;

namespace {

etcd::options options_for(std::vector<std::string> endpoints) {
    return lmx::test::etcd_options(std::move(endpoints), 3s);
}

// Runs `body` to its end with a client made with `o`.
void with_client(const etcd::options& o, std::function<asio::awaitable<void>(etcd::client&)> body) {
    asio::io_context ctx;
    lmx::test::run_body(
        ctx,
        [&](asio::any_io_executor ex) -> asio::awaitable<void> {
            etcd::client c(ex, o);
            co_await body(c);
        },
        60s);
}

void with_client(std::vector<std::string> endpoints, std::function<asio::awaitable<void>(etcd::client&)> body) {
    with_client(options_for(std::move(endpoints)), std::move(body));
}

// The error kind a call ends with (nullopt: it succeeded).
template <class Call>
asio::awaitable<std::optional<etcd::error::kind>> failure_of(Call call) {
    try {
        co_await call();
    } catch (const etcd::error& e) {
        co_return e.which();
    }
    co_return std::nullopt;
}

// A port nothing listens on: etcd_cluster's ports are free when chosen, and this one is never used.
std::string dead_endpoint() { return "127.0.0.1:1"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(etcd_client_test)

BOOST_AUTO_TEST_CASE(keys_and_ranges_round_trip_any_bytes) {
    etcd_cluster cluster;
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        const std::string odd_key("/t/\0\xff\x01", 6), odd_value("v\0\xfe\n", 4);
        const auto first = co_await c.put(odd_key, odd_value);
        BOOST_TEST(first > 0);
        const auto second = co_await c.put("/t/b", "2");
        BOOST_TEST(second == first + 1);
        co_await c.put("/t/c", "3");
        co_await c.put("/u/a", "outside the prefix");

        auto one = co_await c.range(odd_key);
        BOOST_REQUIRE_EQUAL(one.kvs.size(), 1u);
        BOOST_TEST(one.kvs[0].key == odd_key);
        BOOST_TEST(one.kvs[0].value == odd_value);
        BOOST_TEST(one.kvs[0].create_revision == first);
        BOOST_TEST(one.kvs[0].version == 1);

        auto all = co_await c.range("/t/", {.range_end = etcd::prefix_end("/t/")});
        BOOST_REQUIRE_EQUAL(all.kvs.size(), 3u);
        BOOST_TEST(all.count == 3);
        BOOST_TEST(all.kvs[0].key == odd_key);  // byte order: \0 sorts first
        BOOST_TEST(all.kvs[2].value == "3");
        BOOST_TEST(all.revision == second + 2);

        auto limited = co_await c.range("/t/", {.range_end = etcd::prefix_end("/t/"), .limit = 2});
        BOOST_TEST(limited.kvs.size() == 2u);
        BOOST_TEST(limited.more);
        auto counted = co_await c.range("/t/", {.range_end = etcd::prefix_end("/t/"), .count_only = true});
        BOOST_TEST(counted.kvs.empty());
        BOOST_TEST(counted.count == 3);
        // An older revision reads the store as it was then.
        auto then = co_await c.range("/t/", {.range_end = etcd::prefix_end("/t/"), .revision = first});
        BOOST_TEST(then.kvs.size() == 1u);

        BOOST_TEST(co_await c.delete_range("/t/", etcd::prefix_end("/t/")) == 3);
        BOOST_TEST((co_await c.range("/t/", {.range_end = etcd::prefix_end("/t/")})).kvs.empty());
        BOOST_TEST((co_await c.range("/u/a")).kvs.size() == 1u);
        BOOST_TEST(co_await c.delete_range("/t/none") == 0);
    });
}

BOOST_AUTO_TEST_CASE(a_txn_runs_the_branch_its_compares_choose) {
    etcd_cluster cluster;
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        // Create-if-absent, the step every queue entry of the HA mode takes.
        auto create = [&](std::string value) {
            return etcd::txn_request{
                .compares = {{.key = "/q/k", .what = etcd::compare::target::create_revision, .number = 0}},
                .success = {etcd::put_op{"/q/k", std::move(value)}},
                .failure = {etcd::range_op{"/q/k"}}};
        };
        // Requests are named: see txn() on g++ 12 and aggregate temporaries.
        const auto first = create("first");
        auto won = co_await c.txn(first);
        BOOST_TEST(won.succeeded);
        BOOST_REQUIRE_EQUAL(won.responses.size(), 1u);
        BOOST_TEST((won.responses[0].what == etcd::op_result::kind::put));
        const auto second = create("second");
        auto lost = co_await c.txn(second);
        BOOST_TEST(!lost.succeeded);
        BOOST_REQUIRE_EQUAL(lost.responses.size(), 1u);
        BOOST_REQUIRE((lost.responses[0].what == etcd::op_result::kind::range));
        BOOST_REQUIRE_EQUAL(lost.responses[0].range.kvs.size(), 1u);
        BOOST_TEST(lost.responses[0].range.kvs[0].value == "first");
        BOOST_TEST(lost.responses[0].range.kvs[0].create_revision == won.revision);

        // A delete guarded by the entry's create revision: a stale one removes nothing.
        auto guarded_delete = [](std::int64_t created) {
            return etcd::txn_request{
                .compares = {{.key = "/q/k", .what = etcd::compare::target::create_revision, .number = created}},
                .success = {etcd::delete_op{"/q/k"}}};
        };
        const auto stale_delete = guarded_delete(won.revision - 1);
        auto stale = co_await c.txn(stale_delete);
        BOOST_TEST(!stale.succeeded);
        const auto fresh_delete = guarded_delete(won.revision);
        auto fresh = co_await c.txn(fresh_delete);
        BOOST_TEST(fresh.succeeded);
        BOOST_REQUIRE_EQUAL(fresh.responses.size(), 1u);
        BOOST_TEST(fresh.responses[0].deleted == 1);

        // Value compares and several operations in one branch.
        co_await c.put("/q/v", "x");
        etcd::txn_request several;
        several.compares.push_back({.key = "/q/v",
                                    .what = etcd::compare::target::value,
                                    .is = etcd::compare::result::not_equal,
                                    .value = "y"});
        several.success.emplace_back(etcd::put_op{"/q/a", "1"});
        several.success.emplace_back(etcd::put_op{"/q/b", "2"});
        const auto q_end = etcd::prefix_end("/q/");  // a view of it goes into the request
        several.success.emplace_back(etcd::range_op{"/q/", {.range_end = q_end}});
        auto multi = co_await c.txn(several);
        BOOST_TEST(multi.succeeded);
        BOOST_REQUIRE_EQUAL(multi.responses.size(), 3u);
        BOOST_TEST(multi.responses[2].range.count == 3);
        // Both puts of one txn share its revision: one point in etcd's order.
        auto a = co_await c.range("/q/a");
        auto b = co_await c.range("/q/b");
        BOOST_TEST(a.kvs.at(0).create_revision == b.kvs.at(0).create_revision);
    });
}

// A compare over a range holds for every key in it, and an empty range compares as an absent
// key: "no key under this prefix yet", the test a write that claims a free lock key makes.
BOOST_AUTO_TEST_CASE(a_compare_over_a_range_holds_for_every_key_in_it) {
    etcd_cluster cluster;
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        const auto end = etcd::prefix_end("/r/");
        auto first_if_empty = [&](std::string key) {
            return etcd::txn_request{.compares = {{.key = "/r/",
                                                   .what = etcd::compare::target::create_revision,
                                                   .number = 0,
                                                   .range_end = end}},
                                     .success = {etcd::put_op{std::move(key), "x"}}};
        };
        co_await c.put("/r", "beside the range");  // keys outside the range do not count
        co_await c.put("/s/", "beside the range");
        const auto first = first_if_empty("/r/a");
        BOOST_TEST((co_await c.txn(first)).succeeded);
        const auto second = first_if_empty("/r/b");
        BOOST_TEST(!(co_await c.txn(second)).succeeded);
        // Every key must match: one old key in the range fails a "created after" compare.
        const auto a = co_await c.range("/r/a");
        co_await c.put("/r/c", "newer");
        const etcd::txn_request all_newer{.compares = {{.key = "/r/",
                                                        .what = etcd::compare::target::create_revision,
                                                        .is = etcd::compare::result::greater,
                                                        .number = a.kvs.at(0).create_revision,
                                                        .range_end = end}}};
        BOOST_TEST(!(co_await c.txn(all_newer)).succeeded);
        co_await c.delete_range("/r/", end);
        const auto again = first_if_empty("/r/d");
        BOOST_TEST((co_await c.txn(again)).succeeded);
    });
}

// Several create-if-free writes in one txn, each nested with its own compare: each takes its own
// branch, every compare sees the store as it was before the txn, and all of it is one revision.
BOOST_AUTO_TEST_CASE(nested_txns_take_their_own_branches_in_one_revision) {
    etcd_cluster cluster;
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        auto if_free = [](const std::string& dir, std::string key) {
            auto t = std::make_shared<etcd::txn_request>();
            t->compares.push_back({.key = dir,
                                   .what = etcd::compare::target::create_revision,
                                   .number = 0,
                                   .range_end = etcd::prefix_end(dir)});
            t->success.emplace_back(etcd::put_op{key, "mine"});
            t->failure.emplace_back(etcd::range_op{key});
            return etcd::txn_op{std::move(t)};
        };
        co_await c.put("/n/b/held", "x");
        co_await c.put("/n/c/old", "x");
        etcd::txn_request batch;
        batch.success.emplace_back(if_free("/n/a/", "/n/a/1"));  // free: written
        batch.success.emplace_back(if_free("/n/b/", "/n/b/1"));  // held: read back instead
        // Deleted in this very txn, but the compare sees it as it was before: not free.
        batch.success.emplace_back(etcd::delete_op{"/n/c/old"});
        batch.success.emplace_back(if_free("/n/c/", "/n/c/1"));
        batch.success.emplace_back(if_free("/n/d/", "/n/d/1"));
        const auto r = co_await c.txn(batch);
        BOOST_TEST(r.succeeded);
        BOOST_REQUIRE_EQUAL(r.responses.size(), 5u);
        BOOST_TEST((r.responses[0].what == etcd::op_result::kind::txn));
        BOOST_TEST(r.responses[0].succeeded);
        BOOST_REQUIRE_EQUAL(r.responses[0].responses.size(), 1u);
        BOOST_TEST((r.responses[0].responses[0].what == etcd::op_result::kind::put));
        BOOST_TEST(!r.responses[1].succeeded);
        BOOST_REQUIRE_EQUAL(r.responses[1].responses.size(), 1u);
        BOOST_TEST((r.responses[1].responses[0].what == etcd::op_result::kind::range));
        BOOST_TEST(r.responses[1].responses[0].range.kvs.empty());
        BOOST_TEST(r.responses[2].deleted == 1);
        BOOST_TEST(!r.responses[3].succeeded);
        BOOST_TEST(r.responses[4].succeeded);
        const auto a = co_await c.range("/n/a/1");
        const auto d = co_await c.range("/n/d/1");
        BOOST_REQUIRE_EQUAL(a.kvs.size(), 1u);
        BOOST_REQUIRE_EQUAL(d.kvs.size(), 1u);
        BOOST_TEST(a.kvs[0].create_revision == r.revision);
        BOOST_TEST(d.kvs[0].create_revision == r.revision);
        BOOST_TEST((co_await c.range("/n/b/1")).kvs.empty());
        BOOST_TEST((co_await c.range("/n/c/1")).kvs.empty());
    });
}

BOOST_AUTO_TEST_CASE(a_lease_holds_its_keys_until_revoked_or_run_out) {
    etcd_cluster cluster;
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        auto l = co_await c.grant_lease(10s);
        BOOST_TEST(l.id != 0);
        BOOST_TEST(l.ttl.count() == 10);
        co_await c.put("/l/a", "held", l.id);
        auto got = co_await c.range("/l/a");
        BOOST_REQUIRE_EQUAL(got.kvs.size(), 1u);
        BOOST_TEST(got.kvs[0].lease == l.id);
        BOOST_TEST((co_await c.keep_alive(l.id)).count() == 10);
        co_await c.revoke_lease(l.id);
        BOOST_TEST((co_await c.range("/l/a")).kvs.empty());
        BOOST_TEST((co_await c.keep_alive(l.id)).count() == 0);
        co_await c.revoke_lease(l.id);  // gone already: not an error

        // A put on a lease that does not exist is refused with etcd's reason.
        try {
            co_await c.put("/l/b", "x", l.id);
            BOOST_ERROR("a put on a revoked lease succeeded");
        } catch (const etcd::error& e) {
            BOOST_TEST((e.which() == etcd::error::kind::refused));
            BOOST_TEST(e.code() == 5);
            BOOST_TEST(std::string(e.what()).find("lease not found") != std::string::npos, e.what());
        }

        // Left alone, a lease runs out and takes its keys with it.
        auto brief = co_await c.grant_lease(2s);
        co_await c.put("/l/c", "brief", brief.id);
        const auto start = std::chrono::steady_clock::now();
        while (!(co_await c.range("/l/c")).kvs.empty() && std::chrono::steady_clock::now() - start < 10s)
            co_await sleep_for(100ms);
        const auto took = std::chrono::steady_clock::now() - start;
        BOOST_TEST((co_await c.range("/l/c")).kvs.empty());
        BOOST_TEST(took >= 1500ms);
    });
}

BOOST_AUTO_TEST_CASE(a_watch_streams_every_change_in_order_from_its_start) {
    etcd_cluster cluster;
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        const auto r1 = co_await c.put("/w/a", "1");
        co_await c.put("/w/b", "2");
        co_await c.put("/x/outside", "not watched");
        co_await c.delete_range("/w/a");
        auto w = co_await c.watch("/w/", etcd::prefix_end("/w/"), r1);
        std::vector<etcd::watch_event> seen;
        auto first = co_await w.next();
        BOOST_TEST(first.created);
        for (auto& e : first.events) seen.push_back(e);
        while (seen.size() < 3) {
            auto b = co_await w.next();
            BOOST_TEST(!b.canceled);
            for (auto& e : b.events) seen.push_back(e);
        }
        // Live changes follow the history.
        const auto live = co_await c.put("/w/c", std::string(40000, 'v'));  // larger than one read
        while (seen.size() < 4)
            for (auto& e : (co_await w.next()).events) seen.push_back(e);
        BOOST_REQUIRE_EQUAL(seen.size(), 4u);
        BOOST_TEST((seen[0].what == etcd::watch_event::type::put));
        BOOST_TEST(seen[0].kv.key == "/w/a");
        BOOST_TEST(seen[0].kv.mod_revision == r1);
        BOOST_TEST(seen[1].kv.key == "/w/b");
        BOOST_TEST((seen[2].what == etcd::watch_event::type::del));
        BOOST_TEST(seen[2].kv.key == "/w/a");
        BOOST_TEST(seen[3].kv.mod_revision == live);
        BOOST_TEST(seen[3].kv.value.size() == 40000u);
        for (std::size_t i = 1; i < seen.size(); ++i) BOOST_TEST(seen[i].kv.mod_revision > seen[i - 1].kv.mod_revision);

        // Closed, the stream ends what waits on it.
        w.close();
        auto after = co_await failure_of([&]() -> asio::awaitable<void> { co_await w.next(); });
        BOOST_TEST((after == etcd::error::kind::unreachable));
    });
}

BOOST_AUTO_TEST_CASE(a_watch_from_a_compacted_revision_names_where_it_can_start) {
    etcd_cluster cluster;
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        const auto old = co_await c.put("/c/a", "1");
        co_await c.put("/c/a", "2");
        const auto now = co_await c.put("/c/a", "3");
        co_await c.compact(now);
        auto w = co_await c.watch("/c/", etcd::prefix_end("/c/"), old);
        etcd::watch_batch b;
        do b = co_await w.next();
        while (!b.canceled && b.events.empty());
        BOOST_TEST(b.canceled);
        BOOST_TEST(b.events.empty());
        BOOST_TEST(b.compact_revision == now);
        auto after = co_await failure_of([&]() -> asio::awaitable<void> { co_await w.next(); });
        BOOST_TEST((after == etcd::error::kind::unreachable));
        // The older revision cannot be read either; the compacted one still can.
        auto read_old =
            co_await failure_of([&]() -> asio::awaitable<void> { co_await c.range("/c/a", {.revision = old}); });
        BOOST_TEST((read_old == etcd::error::kind::refused));
        BOOST_TEST((co_await c.range("/c/a", {.revision = now})).kvs.at(0).value == "3");
    });
}

BOOST_AUTO_TEST_CASE(dead_endpoints_are_skipped_and_a_dead_store_is_an_error) {
    etcd_cluster cluster;
    with_client({dead_endpoint(), cluster.endpoint(0)}, [&](etcd::client& c) -> asio::awaitable<void> {
        co_await c.put("/d/a", "1");
        BOOST_TEST(c.endpoint() == cluster.endpoint(0));
        BOOST_TEST((co_await c.range("/d/a")).kvs.size() == 1u);  // on the kept-alive connection
        cluster.kill(0);
        // Nothing can have been applied: the kept-alive connection was closed by the dead member and
        // is not reused, and no endpoint takes a new one.
        auto put = co_await failure_of([&]() -> asio::awaitable<void> { co_await c.put("/d/b", "2"); });
        BOOST_TEST((put == etcd::error::kind::unreachable));
        auto read = co_await failure_of([&]() -> asio::awaitable<void> { co_await c.range("/d/a"); });
        BOOST_TEST((read == etcd::error::kind::unreachable));
        auto watch = co_await failure_of([&]() -> asio::awaitable<void> { co_await c.watch("/d/", "", 0); });
        BOOST_TEST((watch == etcd::error::kind::unreachable));
        // Back on the same data, the client finds it again.
        cluster.restart(0);
        BOOST_TEST((co_await c.range("/d/a")).kvs.at(0).value == "1");
    });
}

// Calls running side by side that meet the same dead endpoint move on once, not once each: two
// moves would bring them back to the dead one and fail them although a member is alive.
BOOST_AUTO_TEST_CASE(calls_side_by_side_skip_a_dead_endpoint_together) {
    etcd_cluster cluster;
    with_client({dead_endpoint(), cluster.endpoint(0)}, [&](etcd::client& c) -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        int done = 0, failed = 0;
        for (int i = 0; i < 4; ++i)
            asio::co_spawn(ex, c.range("/side/" + std::to_string(i)), [&](std::exception_ptr e, etcd::range_result) {
                ++done;
                if (e) ++failed;
            });
        while (done < 4) co_await sleep_for(10ms);
        BOOST_TEST(failed == 0);
        BOOST_TEST(c.endpoint() == cluster.endpoint(0));
    });
}

BOOST_AUTO_TEST_CASE(a_killed_member_of_three_is_failed_over) {
    etcd_cluster cluster(3);
    with_client(cluster.endpoints(), [&](etcd::client& c) -> asio::awaitable<void> {
        const auto rev = co_await c.put("/f/a", "1");
        const auto used = c.endpoint();
        BOOST_TEST(used == cluster.endpoint(0));
        cluster.kill(0);
        // The two left elect a leader (if member 0 led) and serve reads and writes. A write sent
        // while they elect can time out with its outcome unknown (etcd drops a proposal forwarded
        // to a leader that died), so it goes in a txn guarded by a compare and is sent again until
        // it is answered: it applies once.
        const etcd::txn_request create{
            .compares = {{.key = "/f/b", .what = etcd::compare::target::create_revision, .number = 0}},
            .success = {etcd::put_op{"/f/b", "2"}}};
        std::int64_t next = 0;
        int unknown = 0;
        for (const auto give_up = std::chrono::steady_clock::now() + 30s; !next;) {
            try {
                next = (co_await c.txn(create)).revision;
            } catch (const etcd::error& e) {
                BOOST_TEST_REQUIRE((e.which() != etcd::error::kind::refused), e.what());
                BOOST_TEST_REQUIRE((std::chrono::steady_clock::now() < give_up), e.what());
                ++unknown;
            }
        }
        BOOST_TEST_MESSAGE("writes sent again after the kill: " << unknown);
        BOOST_TEST(next > rev);
        BOOST_TEST(c.endpoint() != used);
        BOOST_TEST((co_await c.range("/f/b")).kvs.at(0).version == 1);
        auto w = co_await c.watch("/f/", etcd::prefix_end("/f/"), rev);
        std::size_t events = 0;
        while (events < 2) events += (co_await w.next()).events.size();
        BOOST_TEST(events == 2u);
        cluster.restart(0);
        BOOST_TEST((co_await c.range("/f/", {.range_end = etcd::prefix_end("/f/")})).count == 2);
    });
}

BOOST_AUTO_TEST_CASE(tls_members_are_checked_and_shown_a_client_certificate) {
    const lmx::test::test_pki pki;
    etcd_cluster cluster(1, lmx::test::etcd_tls{pki.cert("ca"), pki.cert("server"), pki.key("server")});
    auto o = options_for(cluster.endpoints());
    o.ca_file = pki.cert("ca");
    o.cert_file = pki.cert("client");
    o.key_file = pki.key("client");
    with_client(o, [&](etcd::client& c) -> asio::awaitable<void> {
        const auto rev = co_await c.put("/s/a", "over tls");
        BOOST_TEST((co_await c.range("/s/a")).kvs.at(0).value == "over tls");
        auto w = co_await c.watch("/s/", etcd::prefix_end("/s/"), rev);
        std::size_t events = 0;
        while (events < 1) events += (co_await w.next()).events.size();
        BOOST_TEST(events == 1u);
    });
    // Each of these fails the handshake, so the put cannot have been applied: unreachable (not
    // outcome_unknown), naming the endpoint. `tls_words`: the failure shows as a TLS one (a member
    // refusing a certificate may instead just reset the connection).
    auto refused = [&](etcd::options bad, std::string_view why, bool tls_words) {
        BOOST_TEST_CONTEXT(why) {
            with_client(bad, [&](etcd::client& c) -> asio::awaitable<void> {
                try {
                    co_await c.put("/s/b", "x");
                    BOOST_ERROR("the put went through");
                } catch (const etcd::error& e) {
                    const std::string what = e.what();
                    BOOST_TEST((e.which() == etcd::error::kind::unreachable), what);
                    BOOST_TEST(what.find(c.endpoint()) != std::string::npos, what);
                    if (tls_words) BOOST_TEST(what.find("TLS handshake") != std::string::npos, what);
                }
            });
        }
    };
    auto untrusted = o;
    untrusted.ca_file = pki.cert("other_ca");
    refused(untrusted, "a member certificate from a CA not trusted", true);
    auto anonymous = o;
    anonymous.cert_file.clear();
    anonymous.key_file.clear();
    refused(anonymous, "no client certificate", false);
    auto foreign = o;
    foreign.cert_file = pki.cert("foreign_client");
    foreign.key_file = pki.key("foreign_client");
    refused(foreign, "a client certificate from a CA the member does not trust", false);
    // A member whose certificate, from the trusted CA, names another host than the endpoint's.
    etcd_cluster misnamed(1, lmx::test::etcd_tls{pki.cert("ca"), pki.cert("wrong_host"), pki.key("wrong_host")});
    auto elsewhere = o;
    elsewhere.endpoints = misnamed.endpoints();
    refused(elsewhere, "a certificate for another host", true);
}

BOOST_AUTO_TEST_CASE(bad_tls_files_are_refused_when_the_client_is_made) {
    asio::io_context ctx;
    auto o = options_for({"https://127.0.0.1:2379"});
    o.ca_file = "/nonexistent/ca.pem";
    BOOST_CHECK_THROW(etcd::client(ctx.get_executor(), o), std::invalid_argument);
    o.ca_file.clear();
    o.cert_file = "/nonexistent/client.pem";
    BOOST_CHECK_THROW(etcd::client(ctx.get_executor(), o), std::invalid_argument);  // no key with it
    o.key_file = "/nonexistent/client.key";
    BOOST_CHECK_THROW(etcd::client(ctx.get_executor(), o), std::invalid_argument);
    auto plain = options_for({"127.0.0.1:2379"});
    plain.ca_file = "/etc/ssl/certs/ca-certificates.crt";
    BOOST_CHECK_THROW(etcd::client(ctx.get_executor(), plain), std::invalid_argument);  // TLS files, no https
}

BOOST_AUTO_TEST_CASE(bad_endpoints_are_refused_when_the_client_is_made) {
    asio::io_context ctx;
    for (const auto* bad : {"", "localhost", "localhost:0", "localhost:65536", "localhost:x", "ftp://localhost:2379"}) {
        BOOST_TEST_CONTEXT("endpoint '" << bad << "'") {
            BOOST_CHECK_THROW(etcd::client(ctx.get_executor(), options_for({bad})), std::invalid_argument);
        }
    }
    BOOST_CHECK_THROW(etcd::client(ctx.get_executor(), options_for({})), std::invalid_argument);
    etcd::client ok(ctx.get_executor(), options_for({"http://[::1]:2379/", "127.0.0.1:2379"}));
    BOOST_TEST(ok.endpoint() == "[::1]:2379");
}

BOOST_AUTO_TEST_SUITE_END()
