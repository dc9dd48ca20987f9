// The rest of PROTOCOL.md against a real broker over tcp, unix and ws: acquire-many and
// release-many, extend, cancel, introspection (ls, lock-info, ping, stats), the hello and
// live-mutex version handshakes, and watch event streams.

#include "protocol_helpers.hpp"

#include <boost/json/array.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <map>
#include <thread>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;

namespace {

std::vector<std::string> strings(const json::object& o, std::string_view name) {
    std::vector<std::string> out;
    if (auto* a = o.if_contains(name); a && a->is_array())
        for (auto& v : a->get_array()) out.emplace_back(v.as_string());
    return out;
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_protocol_test)

BOOST_DATA_TEST_CASE(acquire_many_is_all_or_nothing, bdata::make(transports), kind) {
    checked_broker b;
    wire_client c1(b.url(kind)), c2(b.url(kind));
    auto single = fresh_id("single");
    auto g1 = acquire(c1, single, "m2");
    BOOST_REQUIRE(flag(g1, "acquired"));

    auto many = fresh_id("many");
    auto q = c2.request({{"type", "acquire-many"}, {"uuid", many}, {"keys", json::array{"m3", "m1", "m2", "m1"}}});
    BOOST_TEST(text(q, "type") == "acquire-many");
    BOOST_TEST(!flag(q, "acquired"), dump(q));
    BOOST_TEST(flag(q, "queued"), dump(q));
    BOOST_TEST(text(q, "contendedKey") == "m2");
    BOOST_TEST(strings(q, "keys") == (std::vector<std::string>{"m1", "m2", "m3"}), boost::test_tools::per_element());
    BOOST_TEST(!has(q, "error"));
    // Nothing is held while it waits.
    BOOST_TEST(holders_of(c1, "m1").empty());
    BOOST_TEST(holders_of(c1, "m3").empty());

    BOOST_TEST(flag(release(c1, single, "m2"), "unlocked"));
    auto g = c2.recv_for(many, 3s);
    BOOST_TEST(flag(g, "acquired"), dump(g));
    auto lock_uuid = text(g, "lockUuid");
    BOOST_TEST(!lock_uuid.empty());
    BOOST_TEST(strings(g, "keys") == (std::vector<std::string>{"m1", "m2", "m3"}), boost::test_tools::per_element());
    auto& tokens = g.at("fencingTokens").as_object();
    BOOST_TEST(tokens.size() == 3u);
    for (const char* k : {"m1", "m2", "m3"}) {
        BOOST_TEST(number(tokens, k) > number(g1, "fencingToken"), k);
        BOOST_TEST(holders_of(c1, k).size() == 1u, k);
    }
    auto refused = acquire(c1, fresh_id("try"), "m3", {{"wait", false}});
    BOOST_TEST(!flag(refused, "acquired"), dump(refused));

    auto rel = c2.request({{"type", "release-many"}, {"uuid", fresh_id("rel")}, {"lockUuid", lock_uuid}});
    BOOST_TEST(text(rel, "type") == "release-many");
    BOOST_TEST(flag(rel, "released"), dump(rel));
    BOOST_TEST(strings(rel, "keys") == (std::vector<std::string>{"m1", "m2", "m3"}), boost::test_tools::per_element());
    for (const char* k : {"m1", "m2", "m3"}) BOOST_TEST(holders_of(c1, k).empty(), k);

    auto again = c2.request({{"type", "release-many"}, {"uuid", fresh_id("rel")}, {"lockUuid", lock_uuid}});
    BOOST_TEST(!flag(again, "released"), dump(again));
    BOOST_TEST(!text(again, "error").empty());
    BOOST_TEST(!text(again, "code").empty());

    // Free keys are granted at once.
    auto now = c2.request(
        {{"type", "acquire-many"}, {"uuid", fresh_id("many")}, {"keys", json::array{"m4", "m5"}}, {"wait", false}});
    BOOST_TEST(flag(now, "acquired"), dump(now));
}

BOOST_DATA_TEST_CASE(extend_renews_the_lease, bdata::make(transports), kind) {
    checked_broker b;
    wire_client c(b.url(kind));
    auto id = fresh_id("ext");
    BOOST_REQUIRE(flag(acquire(c, id, "ext", {{"ttl", 400}}), "acquired"));
    auto e = c.request({{"type", "extend"}, {"uuid", fresh_id("e")}, {"key", "ext"}, {"_uuid", id}, {"ttl", 1500}});
    BOOST_TEST(text(e, "type") == "extend");
    BOOST_TEST(flag(e, "extended"), dump(e));
    BOOST_TEST(number(e, "expiresInMs") == 1500u);
    // The lease now ends past the original 400 ms. When to the millisecond is lock_service_test's.
    auto info = c.request({{"type", "lock-info-request"}, {"uuid", fresh_id("i")}, {"key", "ext"}});
    const auto& holders = info.at("holders").as_array();
    BOOST_REQUIRE_EQUAL(holders.size(), 1u);
    BOOST_TEST(number(holders[0].as_object(), "expiresInMs") > 1000u, dump(info));
    BOOST_TEST(!next_of_type(c, "lock-lost", 0ms));
    auto u = release(c, id, "ext");
    BOOST_TEST(flag(u, "unlocked"));
    BOOST_TEST(!has(u, "warning"), dump(u));

    auto gone = c.request({{"type", "extend"}, {"uuid", fresh_id("e")}, {"key", "ext"}, {"_uuid", id}, {"ttl", 1000}});
    BOOST_TEST(!flag(gone, "extended"), dump(gone));
    BOOST_TEST(!text(gone, "error").empty());
}

BOOST_DATA_TEST_CASE(cancel_withdraws_a_waiting_request, bdata::make(transports), kind) {
    checked_broker b;
    wire_client c1(b.url(kind)), c2(b.url(kind)), c3(b.url(kind));
    auto holder = fresh_id("h"), waiting = fresh_id("w");
    BOOST_REQUIRE(flag(acquire(c1, holder, "cancel"), "acquired"));
    BOOST_TEST(flag(acquire(c2, waiting, "cancel"), "queued"));
    auto r = c2.request({{"type", "cancel"}, {"uuid", fresh_id("c")}, {"target", waiting}});
    BOOST_TEST(text(r, "type") == "cancel");
    BOOST_TEST(flag(r, "cancelled"), dump(r));
    BOOST_TEST(number(lock_info(c2, "cancel"), "lockRequestCount") == 0u);

    // Only the connection's own requests can be cancelled; granted ones cannot.
    auto foreign = fresh_id("w");
    BOOST_TEST(flag(acquire(c3, foreign, "cancel"), "queued"));
    BOOST_TEST(!flag(c2.request({{"type", "cancel"}, {"uuid", fresh_id("c")}, {"target", foreign}}), "cancelled"));
    BOOST_TEST(!flag(c1.request({{"type", "cancel"}, {"uuid", fresh_id("c")}, {"target", holder}}), "cancelled"));
    BOOST_TEST(!flag(c2.request({{"type", "cancel"}, {"uuid", fresh_id("c")}, {"target", waiting}}), "cancelled"));

    BOOST_TEST(flag(release(c1, holder, "cancel"), "unlocked"));
    BOOST_TEST(flag(c3.recv_for(foreign, 3s), "acquired"));
    BOOST_TEST(!c2.try_recv_for(waiting, 100ms));
}

BOOST_DATA_TEST_CASE(ls_and_lock_info, bdata::make(transports), kind) {
    checked_broker b;
    wire_client c1(b.url(kind)), c2(b.url(kind));
    auto a = fresh_id("a"), waiter = fresh_id("w");
    auto g = acquire(c1, a, "ls-a", {{"max", 2}});
    BOOST_REQUIRE(flag(g, "acquired"));
    BOOST_REQUIRE(flag(acquire(c1, fresh_id("b"), "ls-b"), "acquired"));
    BOOST_REQUIRE(flag(acquire(c2, fresh_id("x"), "ls-a", {{"max", 2}}), "acquired"));
    BOOST_TEST(flag(acquire(c2, waiter, "ls-a", {{"max", 2}}), "queued"));

    auto ls = c2.request({{"type", "ls"}, {"uuid", fresh_id("ls")}});
    BOOST_TEST(text(ls, "type") == "ls");
    auto keys = strings(ls, "ls_result");
    std::sort(keys.begin(), keys.end());
    BOOST_TEST(keys == (std::vector<std::string>{"ls-a", "ls-b"}), boost::test_tools::per_element());

    auto info = lock_info(c2, "ls-a");
    BOOST_TEST(text(info, "type") == "lock-info-response");
    BOOST_TEST(text(info, "key") == "ls-a");
    BOOST_TEST(flag(info, "lockInfo"));
    BOOST_TEST(flag(info, "isLocked"));
    BOOST_TEST(strings(info, "lockholderUUIDs").size() == 2u);
    BOOST_TEST(contains(strings(info, "lockholderUUIDs"), a));
    BOOST_TEST(number(info, "lockRequestCount") == 1u);
    BOOST_TEST(number(info, "max") == 2u);
    BOOST_TEST(number(info, "fencingToken") > number(g, "fencingToken"));

    auto none = lock_info(c2, "never-used");
    BOOST_TEST(!flag(none, "isLocked"), dump(none));
    BOOST_TEST(strings(none, "lockholderUUIDs").empty());
    BOOST_TEST(number(none, "lockRequestCount") == 0u);
    BOOST_TEST(!has(none, "error"));

    BOOST_TEST(flag(release(c1, fresh_id("?"), "ls-b", {{"force", true}, {"_uuid", nullptr}}), "unlocked"));
    auto after = strings(c2.request({{"type", "ls"}, {"uuid", fresh_id("ls")}}), "ls_result");
    BOOST_TEST(!contains(after, "ls-b"));
    BOOST_TEST(contains(after, "ls-a"));
}

BOOST_DATA_TEST_CASE(ping_and_system_stats, bdata::make(transports), kind) {
    checked_broker b;
    wire_client c1(b.url(kind)), c2(b.url(kind));
    auto pong = c1.request({{"type", "ping"}, {"uuid", fresh_id("p")}, {"timestamp", 12345}});
    BOOST_TEST(text(pong, "type") == "pong");
    BOOST_TEST(flag(pong, "ping"));
    BOOST_TEST(number(pong, "timestamp") == 12345u);
    auto wall =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    auto server = static_cast<long long>(number(pong, "serverTimestamp"));
    BOOST_TEST(std::llabs(server - wall) < 60'000);

    BOOST_REQUIRE(flag(acquire(c1, fresh_id("s"), "stats-1"), "acquired"));
    BOOST_REQUIRE(flag(acquire(c1, fresh_id("s"), "stats-2"), "acquired"));
    BOOST_TEST(flag(acquire(c2, fresh_id("s"), "stats-1"), "queued"));
    auto st = stats(c2);
    BOOST_TEST(number(st, "connections") == 2u);
    BOOST_TEST(number(st, "keys") == 2u);
    BOOST_TEST(number(st, "holders") == 2u);
    BOOST_TEST(number(st, "waiters") == 1u);
    BOOST_TEST(number(st, "grants") == 2u);
    BOOST_TEST(number(st, "releases") == 0u);
    BOOST_TEST(number(st, "messagesIn") >= 5u);
    BOOST_TEST(number(st, "messagesOut") >= 4u);
    BOOST_TEST(st.contains("uptimeMs"));
    auto top = st.at("topContendedKeys").as_array();
    BOOST_REQUIRE(!top.empty());
    BOOST_TEST(text(top[0].as_object(), "key") == "stats-1");
}

BOOST_DATA_TEST_CASE(hello_and_version_handshakes, bdata::make(transports), kind) {
    checked_broker b;
    wire_client c1(b.url(kind)), c2(b.url(kind));
    auto hello = [](wire_client& c) {
        return c.request({{"type", "hello"}, {"uuid", fresh_id("hello")}, {"client", "lmx-test/0"}, {"protocol", 1}});
    };
    auto h1 = hello(c1), h2 = hello(c2);
    BOOST_TEST(text(h1, "type") == "hello");
    BOOST_TEST(text(h1, "broker").starts_with("lmx/"), dump(h1));
    BOOST_TEST(number(h1, "protocol") == 1u);
    BOOST_TEST(!text(h1, "session").empty());
    BOOST_TEST(text(h1, "session") != text(h2, "session"));
    auto features = strings(h1, "features");
    for (const char* f : {"semaphore", "shared", "ttl", "fencing", "timeout", "acquire-many", "extend", "cancel",
                          "watch", "keep-on-exit", "rw-locks"})
        BOOST_TEST(contains(features, f), f);

    // live-mutex 0.2.x: accepted silently.
    c1.send(json::object{{"type", "version"}, {"value", "0.2.25"}});
    BOOST_TEST(!c1.try_recv(150ms));
    // Any other version: told what the broker is.
    c1.send(json::object{{"type", "version"}, {"value", "9.9.9"}});
    auto mm = c1.recv(3s);
    BOOST_TEST(text(mm, "type") == "version-mismatch", dump(mm));
    BOOST_REQUIRE(mm.contains("versions"));
    BOOST_TEST(text(mm.at("versions").as_object(), "clientVersion") == "9.9.9");
    BOOST_TEST(!text(mm.at("versions").as_object(), "brokerVersion").empty());
    BOOST_TEST(alive(c1));
}

BOOST_DATA_TEST_CASE(watch_streams_events, bdata::make(transports), kind) {
    checked_broker b;
    wire_client watcher(b.url(kind)), all(b.url(kind)), c(b.url(kind));
    auto ack = watcher.request({{"type", "watch"}, {"uuid", fresh_id("watch")}, {"keys", json::array{"watched"}}});
    BOOST_TEST(text(ack, "type") == "watch");
    BOOST_TEST(flag(ack, "watching"));
    BOOST_TEST(flag(all.request({{"type", "watch"}, {"uuid", fresh_id("watch")}}), "watching"));

    auto id = fresh_id("wl");
    auto g = acquire(c, id, "watched");
    BOOST_REQUIRE(flag(g, "acquired"));
    auto granted = next_of_type(watcher, "event", 3s);
    BOOST_REQUIRE(granted.has_value());
    BOOST_TEST(text(*granted, "event") == "granted");
    BOOST_TEST(text(*granted, "key") == "watched");
    BOOST_TEST(text(*granted, "uuid") == id);
    BOOST_TEST(number(*granted, "fencingToken") == number(g, "fencingToken"));

    // Keys outside the watch list reach only the watcher of everything.
    BOOST_REQUIRE(flag(acquire(c, fresh_id("wl"), "unwatched"), "acquired"));
    BOOST_TEST(flag(release(c, id, "watched"), "unlocked"));
    auto released = next_of_type(watcher, "event", 3s);
    BOOST_REQUIRE(released.has_value());
    BOOST_TEST(text(*released, "event") == "released", dump(*released));
    BOOST_TEST(text(*released, "key") == "watched");
    BOOST_TEST(!next_of_type(watcher, "event", 50ms));

    std::vector<std::string> seen;
    // Connection-count events (a test's probe connection closing late) have a test of their own.
    while (auto e = next_of_type(all, "event", 200ms))
        if (text(*e, "event") != "connections") seen.push_back(text(*e, "event") + ":" + text(*e, "key"));
    BOOST_TEST(seen == (std::vector<std::string>{"granted:watched", "granted:unwatched", "released:watched"}),
               boost::test_tools::per_element());

    auto un = watcher.request({{"type", "unwatch"}, {"uuid", fresh_id("unwatch")}});
    BOOST_TEST(text(un, "type") == "unwatch");
    BOOST_TEST(!flag(un, "watching"));
    BOOST_REQUIRE(flag(acquire(c, fresh_id("wl"), "watched"), "acquired"));
    BOOST_TEST(!next_of_type(watcher, "event", 100ms));
}

BOOST_AUTO_TEST_CASE(watchers_of_every_key_learn_the_connection_count) {
    checked_broker b;
    wire_client all(b.tcp_url), some(b.tcp_url);
    BOOST_TEST(flag(all.request({{"type", "watch"}, {"uuid", fresh_id("watch")}}), "watching"));
    BOOST_TEST(
        flag(some.request({{"type", "watch"}, {"uuid", fresh_id("watch")}, {"keys", json::array{"k"}}}), "watching"));
    // The next connections event that reports `n` (a probe connection of the test harness may
    // still be closing when the watch starts, and is reported too).
    auto count_reaches = [&all](std::uint64_t n) {
        while (auto e = next_of_type(all, "event", 3s)) {
            BOOST_TEST(text(*e, "event") == "connections", dump(*e));
            if (number(*e, "connections") == n) return true;
        }
        return false;
    };
    {
        wire_client third(b.tcp_url);
        BOOST_TEST(alive(third));
        BOOST_TEST(count_reaches(3));
    }
    BOOST_TEST(count_reaches(2));
    // A watcher of some keys gets key events only.
    BOOST_TEST(!next_of_type(some, "event", 100ms));
}

BOOST_AUTO_TEST_CASE(lock_info_details_each_holder) {
    checked_broker b;
    wire_client c(b.tcp_url);
    auto a = fresh_id("a"), s = fresh_id("s");
    auto ga = acquire(c, a, "pool", {{"max", 2}, {"ttl", 60000}});
    BOOST_REQUIRE(flag(ga, "acquired"));
    auto gs = acquire(c, s, "pool", {{"max", 2}, {"ttl", nullptr}});
    BOOST_REQUIRE(flag(gs, "acquired"));
    auto info = c.request({{"type", "lock-info-request"}, {"uuid", fresh_id("i")}, {"key", "pool"}});
    const auto& holders = info.at("holders").as_array();
    BOOST_REQUIRE_EQUAL(holders.size(), 2u);
    std::map<std::string, json::object> by_id;
    for (const auto& h : holders) by_id[text(h.as_object(), "uuid")] = h.as_object();
    BOOST_REQUIRE(by_id.contains(a) && by_id.contains(s));
    BOOST_TEST(number(by_id[a], "fencingToken") == number(ga, "fencingToken"));
    BOOST_TEST(number(by_id[s], "fencingToken") == number(gs, "fencingToken"));
    BOOST_TEST(text(by_id[a], "mode") == "exclusive");
    // Exact ages and leases are lock_service_test's; here they come through the wire.
    BOOST_TEST(number(by_id[a], "heldMs") >= number(by_id[s], "heldMs"));
    BOOST_TEST(number(by_id[a], "expiresInMs") <= 60000u);
    BOOST_TEST(number(by_id[a], "expiresInMs") > 50000u);
    BOOST_TEST(by_id[s].at("expiresInMs").is_null());
}

BOOST_DATA_TEST_CASE(waiter_limit_and_default_ttl, bdata::make(transports), kind) {
    checked_broker b({.extra_args = {"--max-waiters", "2", "--ttl", "250"}});
    wire_client c1(b.url(kind)), c2(b.url(kind));
    auto holder = fresh_id("h"), forever = fresh_id("forever");
    auto t0 = std::chrono::steady_clock::now();
    BOOST_REQUIRE(flag(acquire(c1, holder, "limited"), "acquired"));  // no ttl: the --ttl default
    BOOST_REQUIRE(flag(acquire(c1, forever, "forever", {{"ttl", nullptr}}), "acquired"));
    auto w1 = fresh_id("w"), w2 = fresh_id("w"), w3 = fresh_id("w");
    BOOST_TEST(flag(acquire(c2, w1, "limited"), "queued"));
    BOOST_TEST(flag(acquire(c2, w2, "forever"), "queued"));
    auto over = acquire(c2, w3, "limited");
    BOOST_TEST(!flag(over, "acquired"), dump(over));
    BOOST_TEST(text(over, "code") == "too_many_waiters", dump(over));
    BOOST_TEST(!text(over, "error").empty());

    // The default lease ends the first hold and hands the key on; ttl null never ends.
    auto lost = next_of_type(c1, "lock-lost", 3s);
    BOOST_REQUIRE(lost.has_value());
    BOOST_TEST(text(*lost, "uuid") == holder);
    BOOST_TEST(since(t0) >= 240);
    BOOST_TEST(flag(c2.recv_for(w1, 3s), "acquired"));
    std::this_thread::sleep_until(t0 + 400ms);
    BOOST_TEST(holders_of(c2, "forever") == std::vector<std::string>{forever});
    // A slot in the queue is free again.
    auto w4 = fresh_id("w");
    BOOST_TEST(flag(acquire(c2, w4, "limited", {{"ttl", nullptr}}), "queued"));
}

BOOST_AUTO_TEST_SUITE_END()
