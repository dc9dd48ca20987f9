// The prefix mirror against real etcd: live changes, and changes made while it was cut off,
// which arrive as the difference once it reads again.

#include "etcd_cluster.hpp"
#include "etcd_test_helpers.hpp"
#include "run_body.hpp"

#include <lmx/etcd/client.hpp>
#include <lmx/etcd/prefix_mirror.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace etcd = lmx::etcd;
using namespace std::chrono_literals;
using lmx::test::etcd_cluster;
using lmx::test::sleep_for;
using lmx::test::until;
using steady = std::chrono::steady_clock;

namespace {

// key -> value, as a consumer that applies every reported change holds it.
using content = std::map<std::string, std::string>;

asio::awaitable<content> read_prefix(etcd::client& c, const std::string& prefix) {
    const auto end = etcd::prefix_end(prefix);
    etcd::range_options whole;
    whole.range_end = end;
    content out;
    for (auto& kv : (co_await c.range(prefix, whole)).kvs) out[kv.key] = kv.value;
    co_return out;
}

// A mirror of `prefix` through a client of `mirror_endpoints`, and a writer client of
// `writer_endpoints`, beside `body`; `applied` is what the mirror's changes built, `told` the
// changes in the order they came ("put KEY", "del KEY").
void with_mirror(std::vector<std::string> mirror_endpoints, std::vector<std::string> writer_endpoints,
                 const std::string& prefix,
                 std::function<asio::awaitable<void>(etcd::client& writer, etcd::prefix_mirror&, content& applied,
                                                     std::vector<std::string>& told)>
                     body) {
    asio::io_context ctx;
    lmx::test::run_body(
        ctx,
        [&](asio::any_io_executor ex) -> asio::awaitable<void> {
            etcd::client reader(ex, lmx::test::etcd_options(mirror_endpoints, 2s));
            etcd::client writer(ex, lmx::test::etcd_options(writer_endpoints, 2s));
            content applied;
            std::vector<std::string> told;
            std::int64_t last_revision = 0;
            etcd::prefix_mirror mirror(reader, prefix,
                                       [&](const std::vector<etcd::watch_event>& changes, std::int64_t rev) {
                                           BOOST_TEST(rev >= last_revision);  // revisions never go back
                                           last_revision = rev;
                                           for (const auto& e : changes) {
                                               BOOST_TEST(e.kv.key.starts_with(prefix));
                                               const bool del = e.what == etcd::watch_event::type::del;
                                               told.push_back((del ? "del " : "put ") + e.kv.key);
                                               if (del)
                                                   applied.erase(e.kv.key);
                                               else
                                                   applied[e.kv.key] = e.kv.value;
                                           }
                                       });
            bool ran = false;
            asio::co_spawn(ex, mirror.run(), [&](std::exception_ptr) { ran = true; });
            co_await body(writer, mirror, applied, told);
            mirror.stop();
            BOOST_TEST(co_await until([&] { return ran; }, 5000ms));
        },
        90s);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(etcd_prefix_mirror_test)

BOOST_AUTO_TEST_CASE(the_mirror_holds_what_is_there_and_follows_every_change) {
    etcd_cluster cluster;
    with_mirror(cluster.endpoints(), cluster.endpoints(), "/m/",
                [&](etcd::client& w, etcd::prefix_mirror& m, content& applied,
                    std::vector<std::string>&) -> asio::awaitable<void> {
                    co_await w.put("/m/before", "1");
                    co_await w.put("/n/other", "not mirrored");
                    BOOST_REQUIRE(co_await until([&] { return m.synced() && applied.size() == 1; }, 5000ms));
                    co_await w.put("/m/a", "2");
                    co_await w.put("/m/before", "3");
                    const auto last = co_await w.delete_range("/m/a");
                    BOOST_TEST(last == 1);
                    const auto rev = co_await w.put("/m/z", "4");
                    BOOST_REQUIRE(co_await until([&] { return m.revision() >= rev; }, 5000ms));
                    const auto expected = co_await read_prefix(w, "/m/");
                    BOOST_TEST((applied == expected));
                    BOOST_TEST(m.keys().size() == expected.size());
                    BOOST_TEST(m.keys().at("/m/before").value == "3");
                    BOOST_TEST(m.reads() == 1u);
                });
}

// A watch stream is one HTTP answer that never ends: more than the 8 MB an HTTP parser takes
// for one body by default must go through it without a break (each break is a full read again).
BOOST_AUTO_TEST_CASE(a_long_watch_carries_more_than_one_http_body_limit) {
    etcd_cluster cluster;
    with_mirror(cluster.endpoints(), cluster.endpoints(), "/big/",
                [&](etcd::client& w, etcd::prefix_mirror& m, content& applied,
                    std::vector<std::string>&) -> asio::awaitable<void> {
                    BOOST_REQUIRE(co_await until([&] { return m.synced(); }, 5000ms));
                    const std::string value(256 * 1024, 'v');  // ~350 KB per event in base64 and JSON
                    std::int64_t rev = 0;
                    for (int i = 0; i < 40; ++i) rev = co_await w.put("/big/k" + std::to_string(i % 4), value);
                    BOOST_REQUIRE(co_await until([&] { return m.revision() >= rev; }, 20000ms));
                    BOOST_TEST(applied.size() == 4u);
                    BOOST_TEST(m.reads() == 1u);  // the watch never broke
                });
}

// A read reports keys in the order they were created, not in their names' order: a key written
// after another (a grant after its request) is never reported before it.
BOOST_AUTO_TEST_CASE(a_read_reports_keys_in_the_order_they_were_created) {
    etcd_cluster cluster;
    asio::io_context ctx;
    lmx::test::run_body(
        ctx,
        [&](asio::any_io_executor ex) -> asio::awaitable<void> {
            etcd::client c(ex, lmx::test::etcd_options(cluster.endpoints(), 2s));
            for (const char* k : {"/o/z", "/o/a", "/o/m"}) co_await c.put(k, "1");
            co_await c.put("/o/z", "2");  // changed since: it was still created first
            std::vector<std::string> told;
            etcd::prefix_mirror mirror(c, "/o/", [&](const std::vector<etcd::watch_event>& changes, std::int64_t) {
                for (const auto& e : changes) told.push_back(e.kv.key);
            });
            bool ran = false;
            asio::co_spawn(ex, mirror.run(), [&](std::exception_ptr) { ran = true; });
            BOOST_REQUIRE(co_await until([&] { return mirror.synced(); }, 5000ms));
            BOOST_TEST((told == std::vector<std::string>{"/o/z", "/o/a", "/o/m"}));
            mirror.stop();
            BOOST_TEST(co_await until([&] { return ran; }, 5000ms));
        },
        30s);
}

BOOST_AUTO_TEST_CASE(changes_made_while_the_mirror_was_cut_off_arrive_as_the_difference) {
    etcd_cluster cluster(3);
    // The mirror reaches member 0 only; the writer goes through the other two.
    with_mirror({cluster.endpoint(0)}, {cluster.endpoint(1), cluster.endpoint(2)}, "/m/",
                [&](etcd::client& w, etcd::prefix_mirror& m, content& applied,
                    std::vector<std::string>& told) -> asio::awaitable<void> {
                    co_await w.put("/m/kept", "1");
                    co_await w.put("/m/changed", "1");
                    co_await w.put("/m/deleted", "1");
                    co_await w.put("/m/recreated", "1");
                    BOOST_REQUIRE(co_await until([&] { return m.synced() && applied.size() == 4; }, 5000ms));
                    cluster.kill(0);
                    BOOST_REQUIRE(co_await until([&] { return !m.synced(); }, 5000ms));
                    // While it is away: a change, a delete, a new key, and a compaction past all of it.
                    std::int64_t rev = 0;
                    for (const auto give_up = steady::now() + 20s; !rev && steady::now() < give_up;) {
                        try {
                            rev = co_await w.put("/m/changed", "2");
                        } catch (const etcd::error&) {
                            // the two left may still be electing
                        }
                    }
                    BOOST_REQUIRE(rev != 0);
                    co_await w.delete_range("/m/deleted");
                    co_await w.delete_range("/m/recreated");
                    co_await w.put("/m/recreated", "1");  // the same value, a new key
                    const auto last = co_await w.put("/m/new", "3");
                    told.clear();
                    co_await w.compact(last);
                    BOOST_TEST(applied.at("/m/changed") == "1");  // nothing seen yet
                    cluster.restart(0);
                    BOOST_REQUIRE(co_await until([&] { return m.synced() && m.revision() >= last; }, 15000ms));
                    const auto expected = co_await read_prefix(w, "/m/");
                    BOOST_TEST((applied == expected));
                    BOOST_TEST(expected.size() == 4u);
                    BOOST_TEST(!applied.contains("/m/deleted"));
                    // Deletes first, the key created again among them; then puts by creation.
                    const std::vector<std::string> in_order{"del /m/deleted", "del /m/recreated", "put /m/changed",
                                                            "put /m/recreated", "put /m/new"};
                    BOOST_TEST(told == in_order, [&] {
                        std::string t;
                        for (auto& x : told) t += x + "; ";
                        return t;
                    }());
                    BOOST_TEST(m.reads() >= 2u);
                    // And it follows live changes again.
                    const auto after = co_await w.put("/m/after", "4");
                    BOOST_REQUIRE(co_await until([&] { return m.revision() >= after; }, 5000ms));
                    BOOST_TEST(applied.at("/m/after") == "4");
                });
}

BOOST_AUTO_TEST_SUITE_END()
