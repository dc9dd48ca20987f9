// Two `lmx broker` processes keeping their lock state in one real etcd (--store etcd://...): a
// client of each contends for the same keys through the C++ client, as users would run it.

#include "client_fixture.hpp"
#include "etcd_cluster.hpp"
#include "raw_socket.hpp"
#include "wire_client.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/system_error.hpp>

#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace lmx::test;
using lmx::errc;
using lmx::error_code;

namespace {

constexpr int session_ttl_s = 2;

broker_config over(const etcd_cluster& etcd, int session_ttl = session_ttl_s) {
    std::string url = "etcd://";
    for (auto& e : etcd.endpoints()) url += (url.size() > 7 ? "," : "") + e;
    return {.unix_socket = false,
            .websocket = false,
            .extra_args = {"--store", url, "--session-ttl", std::to_string(session_ttl)}};
}

// Waits until the broker behind `c` grants (its store is connected and in sync).
asio::awaitable<bool> store_ready(lmx::client& c, std::chrono::milliseconds limit = 15s) {
    const auto deadline = steady::now() + limit;
    const std::string probe = fresh_key("probe");
    while (steady::now() < deadline) {
        bool granted = false;
        try {
            auto g = co_await c.acquire(probe, {.wait = false});
            granted = true;
            co_await g.release();
        } catch (const boost::system::system_error&) {}
        if (granted) co_return true;
        co_await sleep_for(50ms);
    }
    co_return false;
}

// The error an acquire ends with (errc::ok when granted; the guard is then released).
asio::awaitable<error_code> acquire_error(lmx::client& c, std::string key, lmx::acquire_options o) {
    error_code code;
    try {
        auto g = co_await c.acquire(key, std::move(o));
        co_await g.release();
    } catch (const boost::system::system_error& e) {
        code = e.code();
    }
    co_return code;
}

// The next event of `w`, or a failure after 5 s.
asio::awaitable<lmx::lock_event> next_event(lmx::watcher& w) {
    using namespace boost::asio::experimental::awaitable_operators;
    asio::steady_timer timer(co_await asio::this_coro::executor, 5s);
    auto r = co_await (w.async_receive() || timer.async_wait(asio::use_awaitable));
    if (r.index() != 0) throw std::runtime_error("no event within 5 s");
    co_return std::get<0>(std::move(r));
}

// How many keys etcd holds under /lmx/r/ (reason records) or /lmx/m/ (named maxes): a count-only
// range read through its gateway (keys in base64: "/lmx/r/" up to "/lmx/r0", or m).
int records(const etcd_cluster& etcd, char kind) {
    raw_socket s("tcp://" + etcd.endpoint(0));
    const std::string body = kind == 'r' ? R"({"key":"L2xteC9yLw==","range_end":"L2xteC9yMA==","count_only":true})"
                                         : R"({"key":"L2xteC9tLw==","range_end":"L2xteC9tMA==","count_only":true})";
    s.send_all(
        "POST /v3/kv/range HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body);
    const auto answer = s.recv_until_closed();
    if (answer.find(" 200 ") == std::string::npos) throw std::runtime_error("etcd answered " + answer);
    const auto at = answer.find("\"count\":\"");
    return at == std::string::npos ? 0 : std::stoi(answer.substr(at + 9));  // absent: zero
}

// The next `n` events of `w` (see next_event).
asio::awaitable<std::vector<lmx::lock_event>> next_events(lmx::watcher& w, int n) {
    std::vector<lmx::lock_event> seen;
    for (int i = 0; i < n; ++i) seen.push_back(co_await next_event(w));
    co_return seen;
}

// A request through `c` for `key` that waits in the background: `granted` is set, and `guard`
// holds the lock, once it is granted (an error fails the test).
struct background_wait {
    bool granted = false;
    lmx::lock_guard guard;
};
void wait_in_background(lmx::client& c, const std::string& key, background_wait& w, std::chrono::milliseconds timeout) {
    c.acquire(key, {.timeout = timeout}, [&w](error_code ec, lmx::lock_guard g) {
        BOOST_TEST(!ec, ec.message());
        w.guard = std::move(g);
        w.granted = true;
    });
}

struct two_brokers {
    explicit two_brokers(int session_ttl = session_ttl_s, int members = 1) : ttl(session_ttl), etcd(members) {}
    int ttl;
    etcd_cluster etcd;
    std::unique_ptr<broker_process> a = std::make_unique<broker_process>(over(etcd, ttl));
    std::unique_ptr<broker_process> b = std::make_unique<broker_process>(over(etcd, ttl));

    // Runs `body(ca, cb)` with a client of each broker, once both brokers grant. `body` takes
    // its captures by reference (g++ 12 destroys a lambda temporary in co_await twice).
    template <class Body>
    void with_clients(Body body) {
        run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
            lmx::client ca(ex, options_for(a->tcp_url));
            lmx::client cb(ex, options_for(b->tcp_url));
            BOOST_REQUIRE(co_await store_ready(ca));
            BOOST_REQUIRE(co_await store_ready(cb));
            co_await body(ca, cb);
        });
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(etcd_store_test)

// A key held through broker A is waited for through broker B, and handed over on release with a
// larger fencing token; both brokers show the same holder and waiter.
BOOST_AUTO_TEST_CASE(a_hold_through_one_broker_is_waited_for_through_the_other) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("handover");
        auto first = co_await ca.acquire(key);
        BOOST_TEST((co_await acquire_error(cb, key, {.wait = false})) == errc::would_block);
        bool granted = false;
        lmx::lock_guard second;
        cb.acquire(key, [&](error_code ec, lmx::lock_guard g) {
            BOOST_TEST(!ec, ec.message());
            second = std::move(g);
            granted = true;
        });
        for (auto* c : {&ca, &cb}) {
            auto info = co_await poll_info(*c, key, [](auto& i) { return i.waiters == 1; });
            BOOST_TEST(info.holders == std::vector<std::string>{first.id()});
            BOOST_TEST(info.waiters == 1u);
        }
        co_await sleep_for(200ms);
        BOOST_TEST(!granted);
        const auto token = first.fencing_token();
        co_await first.release();
        BOOST_TEST(co_await until([&] { return granted; }, 5s));
        BOOST_TEST(second.fencing_token() > token);
        auto info = co_await poll_info(ca, key, [&](auto& i) { return i.holders.size() == 1 && i.waiters == 0; });
        BOOST_TEST(info.holders == std::vector<std::string>{second.id()});
    });
}

// Waiters of both brokers are served in the order they asked, whichever broker they came through.
BOOST_AUTO_TEST_CASE(waiters_are_served_first_come_first_served_across_brokers) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("fifo");
        auto held = co_await ca.acquire(key);
        std::vector<int> order;
        std::vector<lmx::lock_guard> guards;
        lmx::client* via[] = {&cb, &ca, &cb, &ca};
        for (int i = 0; i < 4; ++i) {
            via[i]->acquire(key, [&, i](error_code ec, lmx::lock_guard g) {
                BOOST_TEST(!ec, ec.message());
                order.push_back(i);
                guards.push_back(std::move(g));
            });
            const auto n = static_cast<std::uint32_t>(i + 1);
            auto info = co_await poll_info(ca, key, [&](auto& inf) { return inf.waiters == n; });
            BOOST_REQUIRE(info.waiters == n);
        }
        co_await held.release();
        for (int i = 0; i < 4; ++i) {
            BOOST_REQUIRE(co_await until([&] { return order.size() == static_cast<std::size_t>(i + 1); }, 5s));
            co_await guards.back().release();
        }
        BOOST_TEST(order == (std::vector<int>{0, 1, 2, 3}));
    });
}

// A semaphore's max and shared holds count across brokers.
BOOST_AUTO_TEST_CASE(a_semaphore_and_shared_holds_count_across_brokers) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto sem = fresh_key("sem");
        auto one = co_await ca.acquire(sem, {.max = 2});
        auto two = co_await cb.acquire(sem, {.max = 2});
        BOOST_TEST((co_await acquire_error(ca, sem, {.max = 2, .wait = false})) == errc::would_block);
        co_await one.release();
        BOOST_TEST(!(co_await acquire_error(ca, sem, {.max = 2, .wait = false})));

        const auto rw = fresh_key("rw");
        auto r1 = co_await ca.acquire(rw, {.shared = true});
        auto r2 = co_await cb.acquire(rw, {.shared = true});
        BOOST_TEST((co_await acquire_error(cb, rw, {.wait = false})) == errc::would_block);
        co_await r1.release();
        co_await r2.release();
        BOOST_TEST(!(co_await acquire_error(cb, rw, {.wait = false})));
    });
}

// A lease ends through its own broker's timer, and the waiter of the other broker gets the key;
// a force through one broker ends the hold of the other's client, which is told.
BOOST_AUTO_TEST_CASE(leases_and_forced_unlocks_reach_the_holder_across_brokers) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("lease");
        auto short_hold = co_await ca.acquire(key, {.ttl = 300ms});
        const auto asked = steady::now();
        auto next = co_await cb.acquire(key, {.ttl = 60000ms});
        BOOST_TEST(ms_since(asked) >= 250);
        BOOST_TEST(short_hold.lost());

        error_code why;
        bool told = false;
        next.async_wait_lost([&](error_code ec) {
            why = ec;
            told = true;
        });
        co_await ca.force_release(key);
        BOOST_TEST(co_await until([&] { return told; }, 5s));
        BOOST_TEST(why == errc::forced);
        auto info = co_await poll_info(cb, key, [](auto& i) { return i.holders.empty(); });
        BOOST_TEST(info.holders.empty());
    });
}

// acquire-many through one broker waits for a key held through the other, holds a key it is
// first in line for against later requests, gets all keys at once with one token, and is ended
// on every key when one of them is forced.
BOOST_AUTO_TEST_CASE(acquire_many_is_all_or_nothing_across_brokers) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto x = fresh_key("x"), y = fresh_key("y");
        auto hx = co_await ca.acquire(x);
        bool granted = false;
        lmx::multi_lock_guard both;
        cb.acquire_many({x, y}, {.ttl = 60000ms}, [&](error_code ec, lmx::multi_lock_guard g) {
            BOOST_TEST(!ec, ec.message());
            both = std::move(g);
            granted = true;
        });
        co_await poll_info(ca, x, [](auto& i) { return i.waiters == 1; });
        // First in line for y: a later request for y waits behind it.
        BOOST_TEST((co_await acquire_error(ca, y, {.wait = false})) == errc::would_block);
        BOOST_TEST(!granted);
        co_await hx.release();
        BOOST_TEST(co_await until([&] { return granted; }, 5s));
        BOOST_TEST(both.keys() == (std::vector<std::string>{x, y}));
        BOOST_TEST(both.fencing_token(x) == both.fencing_token(y));
        BOOST_TEST(both.fencing_token(x) > hx.fencing_token());

        error_code why;
        bool told = false;
        both.async_wait_lost([&](error_code ec) {
            why = ec;
            told = true;
        });
        co_await ca.force_release(y);
        BOOST_TEST(co_await until([&] { return told; }, 5s));
        BOOST_TEST(why == errc::forced);
        // All or nothing: x went with y.
        auto info = co_await poll_info(ca, x, [](auto& i) { return i.holders.empty(); });
        BOOST_TEST(info.holders.empty());

        auto again = co_await cb.acquire_many({x, y});
        co_await again.release();
        BOOST_TEST(!(co_await acquire_error(ca, x, {.wait = false})));
        BOOST_TEST(!(co_await acquire_error(ca, y, {.wait = false})));
    });
}

// A broker killed with SIGKILL while its client holds: etcd drops its entries when its session
// lease runs out, and the waiter on the other broker gets the key within that bound.
BOOST_AUTO_TEST_CASE(the_holds_of_a_killed_broker_go_within_its_session_ttl) {
    two_brokers s;
    long long took = -1;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("killed");
        auto held = co_await ca.acquire(key, {.ttl = lmx::no_expiry});
        held.detach();
        background_wait next;
        wait_in_background(cb, key, next, 20000ms);
        co_await poll_info(cb, key, [](auto& i) { return i.waiters == 1; });
        const auto killed = steady::now();
        s.a->stop(9);
        BOOST_TEST(co_await until([&] { return next.granted; }, 15s));
        took = ms_since(killed);
        co_await next.guard.release();
    });
    BOOST_TEST_MESSAGE("the waiter got the key " << took << " ms after the holder's broker died");
    // etcd ends a lease at most its ttl after the last renewal, and checks leases every 500 ms.
    BOOST_TEST(took <= session_ttl_s * 1000 + 1500);
}

// A hold kept on exit (keepLocksOnExit) outlives its broker as it outlives its connection: its
// entries move to a lease of their own when granted, and again when extended, so a SIGKILL of its
// broker does not free the key before the hold's ttl, nor much after (rounded up to whole seconds,
// plus one).
BOOST_AUTO_TEST_CASE(a_hold_kept_on_exit_outlives_its_broker_until_its_ttl) {
    two_brokers s;
    long long took[2] = {-1, -1};
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const std::string keys[2] = {fresh_key("kept"), fresh_key("kept-extended")};
        steady::time_point since[2];
        // One kept hold as granted, one extended past its first lease (its entries move again).
        auto first = co_await ca.acquire(keys[0], {.ttl = 4000ms, .keep_locks_on_exit = true});
        since[0] = steady::now();
        auto second = co_await ca.acquire(keys[1], {.ttl = 1000ms, .keep_locks_on_exit = true});
        co_await second.extend(4000ms);
        since[1] = steady::now();
        first.detach();
        second.detach();
        bool granted[2] = {false, false};
        lmx::lock_guard next[2];
        for (int i : {0, 1}) {
            cb.acquire(keys[i], {.timeout = 20000ms}, [&, i](error_code ec, lmx::lock_guard g) {
                BOOST_TEST(!ec, ec.message());
                next[i] = std::move(g);
                took[i] = ms_since(since[i]);
                granted[i] = true;
            });
            co_await poll_info(cb, keys[i], [](auto& info) { return info.waiters == 1; });
        }
        s.a->stop(9);
        BOOST_TEST(co_await until([&] { return granted[0] && granted[1]; }, 15s));
        for (auto& g : next) co_await g.release();
    });
    for (int i : {0, 1}) {
        BOOST_TEST_MESSAGE("kept hold " << i << ": the waiter got the key " << took[i] << " ms after it began");
        // Not before the hold's ttl (the 2 s session lease would have freed it sooner), and within
        // its lease (4 s + 1) and etcd's lease check (every 500 ms) with a margin for the grant.
        BOOST_TEST(took[i] >= 4000);
        BOOST_TEST(took[i] <= 5000 + 1500);
    }
}

// The lock frame of `id` on `key` (a raw client's request), with `extra` fields.
std::string lock_frame(const std::string& id, const std::string& key, boost::json::object extra = {}) {
    extra["type"] = "lock";
    extra["uuid"] = id;
    extra["key"] = key;
    return boost::json::serialize(extra);
}

// Whether `c` is told that `id` is granted within `limit` (a queued notice is passed over).
bool granted_within(wire_client& c, const std::string& id, std::chrono::milliseconds limit) {
    return c
        .try_recv_if(
            [&](auto& f) { return f.contains("uuid") && f.at("uuid").as_string() == id && f.at("acquired").as_bool(); },
            limit)
        .has_value();
}

// An extend names a hold by its lock id, from any connection, as in memory: through another
// broker than the holder's too. The holder's broker moves its timer to the new ttl; when the
// extend comes just before the hold's expiry, etcd orders the two writes, and a hold whose extend
// was answered is never freed before its new ttl.
BOOST_AUTO_TEST_CASE(an_extend_through_another_broker_moves_the_holds_expiry) {
    two_brokers s;
    s.with_clients([&](lmx::client&, lmx::client& cb) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url), b(s.b->tcp_url), waiter(s.b->tcp_url);
        int extended = 0;
        for (const int before_expiry : {300, 40, 10, 2, 0}) {
            const auto key = fresh_key("extended"), id = fresh_key("hold"), next = fresh_key("next");
            a.send(lock_frame(id, key, {{"ttl", 400}}));
            BOOST_REQUIRE(a.recv_for(id).at("acquired").as_bool());
            const auto granted = steady::now();
            waiter.send(lock_frame(next, key));
            co_await poll_info(cb, key, [](auto& i) { return !i.holders.empty() && i.waiters == 1; });
            co_await sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(400ms - before_expiry * 1ms -
                                                                                     (steady::now() - granted)));
            auto e =
                b.request({{"type", "extend"}, {"uuid", fresh_key("e")}, {"key", key}, {"_uuid", id}, {"ttl", 1500}});
            const auto answered = steady::now();
            BOOST_TEST_INFO("extend " << before_expiry << " ms before expiry: " << boost::json::serialize(e));
            if (e.at("extended").as_bool()) {
                ++extended;
                BOOST_TEST(!granted_within(waiter, next, 1400ms));
                BOOST_TEST(granted_within(waiter, next, 3000ms));
                BOOST_TEST(ms_since(answered) >= 1300);  // not at the old expiry, 400 ms after the grant
            } else {                                     // the expiry came first
                BOOST_TEST(e.at("code").as_string() == "not_holder");
                BOOST_TEST(granted_within(waiter, next, 3000ms));
            }
            const auto lost_of_hold = [&](auto& f) {
                return f.contains("type") && f.at("type") == "lock-lost" && f.at("uuid").as_string() == id;
            };
            BOOST_TEST(a.try_recv_if(lost_of_hold, 1s).has_value());
            BOOST_TEST(waiter.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", next}})
                           .at("unlocked")
                           .as_bool());
        }
        BOOST_TEST(extended >= 2);  // those well before the expiry at least
        // An extend and a release of one hold sent together through B are done in that order.
        const auto key = fresh_key("extend-release"), id = fresh_key("hold"), e = fresh_key("e"), u = fresh_key("u");
        a.send(lock_frame(id, key, {{"ttl", 5000}}));
        BOOST_REQUIRE(a.recv_for(id).at("acquired").as_bool());
        co_await poll_info(cb, key, [](auto& i) { return !i.holders.empty(); });
        b.send_raw(
            boost::json::serialize(
                boost::json::object{{"type", "extend"}, {"uuid", e}, {"key", key}, {"_uuid", id}, {"ttl", 3000}}) +
            "\n" +
            boost::json::serialize(boost::json::object{{"type", "unlock"}, {"uuid", u}, {"key", key}, {"_uuid", id}}) +
            "\n");
        const auto first = b.recv(), second = b.recv();
        BOOST_TEST(first.at("uuid").as_string() == e);
        BOOST_TEST(first.at("extended").as_bool(), boost::json::serialize(first));
        BOOST_TEST(second.at("uuid").as_string() == u);
        BOOST_TEST(!second.contains("warning"), boost::json::serialize(second));  // it released the hold
    });
}

// A hold's expiry and a force through another broker that meet: the hold ends once, and its
// holder hears of it once, whichever etcd takes first (its lock is never answered again).
BOOST_AUTO_TEST_CASE(an_expiry_that_meets_a_force_through_another_broker_ends_the_hold_once) {
    two_brokers s;
    s.with_clients([&](lmx::client&, lmx::client& cb) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url), b(s.b->tcp_url);
        for (const int before_expiry : {6, 4, 3, 2, 1, 0, 0, 0}) {
            const auto key = fresh_key("meet"), id = fresh_key("hold");
            a.send(lock_frame(id, key, {{"ttl", 300}}));
            BOOST_REQUIRE(a.recv_for(id).at("acquired").as_bool());
            const auto granted = steady::now();
            co_await poll_info(cb, key, [](auto& i) { return !i.holders.empty(); });
            co_await sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(300ms - before_expiry * 1ms -
                                                                                     (steady::now() - granted)));
            b.request({{"type", "unlock"}, {"uuid", fresh_key("force")}, {"key", key}, {"force", true}});
            int lost = 0, answers = 0;
            while (auto f = a.try_recv(1s)) {
                if (!f->contains("uuid") || f->at("uuid").as_string() != id) continue;
                if (f->at("type") == "lock-lost") ++lost;
                if (f->at("type") == "lock") ++answers;
            }
            BOOST_TEST_INFO("forced " << before_expiry << " ms before the expiry");
            BOOST_TEST(lost == 1);
            BOOST_TEST(answers == 0);
            BOOST_TEST((co_await poll_info(cb, key, [](auto& i) { return i.holders.empty(); })).holders.empty());
        }
    });
}

// A request that names no max takes the key's: the one in etcd when its entry is written, not
// the one the broker's mirror showed when it came. Two shared holds naming max 1 and an
// acquire-many come together on a free key: whatever order etcd writes them in, one holds and the
// others wait (the acquire-many, having seen the key free, must not make its max unnamed and let
// the second shared request in beside the first).
BOOST_AUTO_TEST_CASE(a_max_named_while_a_request_is_written_stays_the_keys_max) {
    two_brokers s;
    s.with_clients([&](lmx::client&, lmx::client&) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url), b(s.b->tcp_url);
        int rounds_over_max = 0;
        for (int round = 0; round < 30; ++round) {
            const auto key = fresh_key("named-race"), first = fresh_key("first"), second = fresh_key("second"),
                       many = fresh_key("many");
            a.send_raw(
                lock_frame(first, key, {{"mode", "shared"}, {"max", 1}, {"ttl", 5000}}) + "\n" +
                lock_frame(second, key, {{"mode", "shared"}, {"max", 1}, {"ttl", 5000}, {"keepLocksOnExit", true}}) +
                "\n");
            b.send(boost::json::object{
                {"type", "acquire-many"}, {"uuid", many}, {"keys", boost::json::array{key}}, {"ttl", 5000}});
            // Nothing is released or expires within the second: one of the three holds.
            std::set<std::string> granted;
            const auto until_time = steady::now() + 1s;
            while (steady::now() < until_time) {
                for (auto* c : {&a, &b}) {
                    auto f = c->try_recv(10ms);
                    if (f && f->contains("acquired") && f->at("acquired").as_bool()) {
                        const std::string id(f->at("uuid").as_string());
                        if (id == first || id == second || id == many) granted.insert(id);
                    }
                }
            }
            BOOST_TEST(granted.size() == 1u, "round " << round << ": " << granted.size() << " holders");
            rounds_over_max += granted.size() > 1;
            for (auto& id : {first, second})
                a.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", id}});
            a.request({{"type", "release-many"}, {"uuid", fresh_key("u")}, {"_uuid", many}});
            while (a.try_recv(200ms)) {}
        }
        BOOST_TEST(rounds_over_max == 0);
        co_return;
    });
}

// A hold whose broker died is extended through another broker. One kept on exit (on a lease of
// its own, 2 s) moves to a lease that covers the new ttl, so its key is not free before that ttl.
// One that was not kept ends with its broker's session lease (2 s), as every hold not kept on
// exit does: its holder was told it was lost when its connection dropped.
BOOST_AUTO_TEST_CASE(a_hold_extended_through_another_broker_after_its_broker_died_lasts_its_new_ttl) {
    two_brokers s;
    s.with_clients([&](lmx::client&, lmx::client& cb) -> asio::awaitable<void> {
        const std::string keys[2] = {fresh_key("kept-failover"), fresh_key("plain-failover")};
        const std::string ids[2] = {fresh_key("kept"), fresh_key("plain")}, next[2] = {fresh_key("n"), fresh_key("n")};
        wire_client a(s.a->tcp_url), b(s.b->tcp_url), waiter(s.b->tcp_url);
        a.send(lock_frame(ids[0], keys[0], {{"ttl", 1000}, {"keepLocksOnExit", true}}));
        a.send(lock_frame(ids[1], keys[1], {{"ttl", 1000}}));
        for (int i : {0, 1}) {
            BOOST_REQUIRE(a.recv_for(ids[i]).at("acquired").as_bool());
            waiter.send(lock_frame(next[i], keys[i]));
            co_await poll_info(cb, keys[i], [](auto& info) { return !info.holders.empty() && info.waiters == 1; });
        }
        s.a->stop(9);
        const auto killed = steady::now();
        steady::time_point answered[2];
        for (int i : {0, 1}) {
            auto e = b.request(
                {{"type", "extend"}, {"uuid", fresh_key("e")}, {"key", keys[i]}, {"_uuid", ids[i]}, {"ttl", 4000}});
            answered[i] = steady::now();
            BOOST_TEST(e.at("extended").as_bool(), boost::json::serialize(e));
        }
        BOOST_TEST(granted_within(waiter, next[1], 3500ms));  // the session ttl, and etcd's check
        BOOST_TEST_MESSAGE("not kept: the waiter got the key " << ms_since(killed) << " ms after the kill");
        BOOST_TEST(!granted_within(
            waiter, next[0],
            std::chrono::duration_cast<std::chrono::milliseconds>(3800ms - (steady::now() - answered[0]))));
        BOOST_TEST(granted_within(waiter, next[0], 4000ms));  // the lease of 5 s, checked every 500 ms
        BOOST_TEST_MESSAGE("kept: the waiter got the key " << ms_since(answered[0]) << " ms after the extend");
        co_return;
    });
}

// A lock id may be used again once its release is answered, as in memory: the new request holds,
// whenever the broker's watch tells of the old entry's delete (after the new one's write is
// answered, at times), and is not taken for a hold ended by someone else. Sent before that
// answer, together with the release, it is answered too: granted, or refused as an id in use.
BOOST_AUTO_TEST_CASE(a_lock_id_used_again_after_its_release_is_answered) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client&) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url);
        const auto unlocked = [](auto& f) { return f.contains("unlocked"); };
        for (int round = 0; round < 20; ++round) {
            const auto key = fresh_key("again"), id = fresh_key("id");
            a.send(lock_frame(id, key));
            BOOST_REQUIRE(a.recv_for(id).at("acquired").as_bool());
            const std::string unlock = boost::json::serialize(
                boost::json::object{{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", id}});
            BOOST_TEST_INFO("round " << round);
            if (round % 4 == 0) {
                a.send_raw(unlock + "\n" + lock_frame(id, key) + "\n");
                BOOST_REQUIRE(a.try_recv_if(unlocked, 3s).has_value());
                const auto answer = a.recv_for(id);
                const bool granted = answer.contains("acquired") && answer.at("acquired").as_bool();
                BOOST_TEST((granted || answer.at("code").as_string() == "duplicate_request"),
                           boost::json::serialize(answer));
                if (!granted) continue;
            } else {
                a.send(unlock);
                BOOST_REQUIRE(a.try_recv_if(unlocked, 3s).has_value());
                a.send(lock_frame(id, key));
                const auto answer = a.recv_for(id);
                BOOST_TEST_REQUIRE(answer.at("acquired").as_bool(), boost::json::serialize(answer));
            }
            const auto lost =
                a.try_recv_if([&](auto& f) { return f.contains("type") && f.at("type") == "lock-lost"; }, 300ms);
            BOOST_TEST(!lost.has_value(), boost::json::serialize(lost.value_or(boost::json::object{})));
            const auto info = co_await poll_info(ca, key, [](auto& i) { return i.holders.size() == 1; });
            BOOST_TEST(info.holders == std::vector<std::string>{id});
            a.send(unlock);
            BOOST_TEST(a.try_recv_if(unlocked, 3s).has_value());
        }
    });
}

// A broker's first read of etcd is the state it starts from: its watchers are told nothing of the
// holds and waiters found there (the brokers they came through told theirs), then every change.
BOOST_AUTO_TEST_CASE(a_brokers_watchers_hear_what_happens_after_its_first_read) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client&) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url);
        const auto key = fresh_key("found"), held = fresh_key("held"), next = fresh_key("next");
        a.send(lock_frame(held, key));
        BOOST_REQUIRE(a.recv_for(held).at("acquired").as_bool());
        a.send(lock_frame(next, key));
        co_await poll_info(ca, key, [](auto& i) { return i.waiters == 1; });
        broker_config late = over(s.etcd, s.ttl);
        late.env = {"LMX_FAILPOINTS=etcd.start=sleep(1500)"};
        broker_process c(late);
        wire_client w(c.tcp_url);
        BOOST_REQUIRE(
            w.request({{"type", "watch"}, {"uuid", fresh_key("w")}, {"keys", {key}}}).at("watching").as_bool());
        lmx::client cc(co_await asio::this_coro::executor, options_for(c.tcp_url));
        BOOST_REQUIRE(co_await store_ready(cc));
        BOOST_TEST(!w.try_recv(300ms).has_value());
        BOOST_REQUIRE(a.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", held}})
                          .at("unlocked")
                          .as_bool());
        std::vector<std::string> seen;
        while (auto e = w.try_recv(500ms))
            if (e->contains("event"))
                seen.push_back(std::string(e->at("event").as_string()) + " " + std::string(e->at("uuid").as_string()));
        const std::vector<std::string> expected{"released " + held, "granted " + next};
        std::string told;
        for (auto& x : seen) told += x + "; ";
        BOOST_TEST(seen == expected, told);
    });
}

// A key that etcd finds free starts afresh, as a freed key does in memory: a request written on
// it just after the release of a hold that named max 3 (at once, or the usual way when its broker
// has forgotten the hold) holds under the default max of 1, whatever its broker's copy still
// showed; and a request after it, through either broker, waits (it must not copy the released
// hold's max 3 and be let in beside it).
BOOST_AUTO_TEST_CASE(a_key_freed_in_etcd_forgets_its_named_max) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url), za(s.a->tcp_url), zb(s.b->tcp_url);
        for (int round = 0; round < 8; ++round) {
            const auto key = fresh_key("freed"), x = fresh_key("x"), y = fresh_key("y"), z = fresh_key("z");
            a.send(lock_frame(x, key, {{"max", 3}}));
            BOOST_REQUIRE(a.recv_for(x).at("acquired").as_bool());
            const std::string unlock = boost::json::serialize(
                boost::json::object{{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", x}});
            if (round % 2 == 0) {
                // The release and the next request in one write: the broker writes the request at
                // once, after the release, while its copy still shows x.
                a.send_raw(unlock + "\n" + lock_frame(y, key) + "\n");
            } else {
                // The next request once the release is answered: the broker has forgotten x, and
                // writes the request the usual way while its copy may still show x.
                a.send(unlock);
                BOOST_REQUIRE(a.try_recv_if([](auto& f) { return f.contains("unlocked"); }, 3s).has_value());
                a.send(lock_frame(y, key));
            }
            BOOST_REQUIRE(granted_within(a, y, 3000ms));
            lmx::client& via = round / 2 % 2 ? cb : ca;
            wire_client& zc = round / 2 % 2 ? zb : za;
            co_await poll_info(via, key, [&](auto& i) { return i.holders == std::vector<std::string>{y}; });
            zc.send(lock_frame(z, key));
            BOOST_TEST_INFO("round " << round << ", the next request through broker " << (round / 2 % 2 ? "B" : "A"));
            BOOST_TEST(!granted_within(zc, z, 600ms));
            const auto info = co_await poll_info(via, key, [](auto& i) { return i.waiters == 1; });
            BOOST_TEST(info.holders.size() == 1u);
            BOOST_TEST(info.waiters == 1u);
            BOOST_TEST(a.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", y}})
                           .at("unlocked")
                           .as_bool());
            BOOST_TEST(granted_within(zc, z, 3000ms));
            BOOST_TEST(zc.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", z}})
                           .at("unlocked")
                           .as_bool());
        }
    });
}

// A named max copied while the key lives holds only if the key still lives when the copy is
// written. A request through B copies the max 3 of a hold through A, and its write is late
// (failpoint): it comes after the hold's release freed the key, and before the key's max record
// is dropped (later still). It is written with the default max 1, and a request after it waits.
BOOST_AUTO_TEST_CASE(a_max_copied_from_a_key_freed_before_the_copy_is_written_is_not_kept) {
    two_brokers s;
    const auto late = [&](const char* failpoint) {
        broker_config c = over(s.etcd, s.ttl);
        c.env = {std::string("LMX_FAILPOINTS=") + failpoint};
        return c;
    };
    s.a = std::make_unique<broker_process>(late("etcd.drop-max=sleep(6000)"));
    s.b = std::make_unique<broker_process>(late("etcd.create=sleep(1500)"));
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url), b(s.b->tcp_url);
        const auto key = fresh_key("copied"), x = fresh_key("x"), z = fresh_key("z"), y = fresh_key("y");
        a.send(lock_frame(x, key, {{"max", 3}}));
        BOOST_REQUIRE(a.recv_for(x).at("acquired").as_bool());
        co_await poll_info(cb, key, [](auto& i) { return i.holders.size() == 1; });
        b.send(lock_frame(z, key));  // copies max 3; written 1.5 s later
        co_await sleep_for(100ms);
        BOOST_REQUIRE(a.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", x}})
                          .at("unlocked")
                          .as_bool());
        BOOST_REQUIRE(granted_within(b, z, 3000ms));
        co_await poll_info(ca, key, [&](auto& i) { return i.holders == std::vector<std::string>{z}; });
        a.send(lock_frame(y, key));
        BOOST_TEST(!granted_within(a, y, 600ms));
        const auto info = co_await poll_info(ca, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(info.holders.size() == 1u);
        BOOST_TEST(info.waiters == 1u);
        BOOST_TEST(b.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", z}})
                       .at("unlocked")
                       .as_bool());
        BOOST_TEST(granted_within(a, y, 3000ms));
    });
}

// A broker started while a hold claimed through another broker is in etcd (its grant key read
// with its entry) knows it as a hold: it shows it and its waiter, extends it and forces it.
BOOST_AUTO_TEST_CASE(a_broker_started_while_a_hold_is_claimed_knows_it_as_a_hold) {
    two_brokers s;
    const std::string key = fresh_key("claimed"), first = fresh_key("first"), held = fresh_key("held"),
                      next = fresh_key("next");
    s.with_clients([&](lmx::client& ca, lmx::client&) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url);
        a.send(lock_frame(first, key));
        BOOST_REQUIRE(a.recv_for(first).at("acquired").as_bool());
        a.send(lock_frame(held, key, {{"ttl", 30000}}));
        BOOST_REQUIRE(!a.recv_for(held).at("acquired").as_bool());  // queued: written before the next
        a.send(lock_frame(next, key));
        co_await poll_info(ca, key, [](auto& i) { return i.waiters == 2; });
        // `held` waited, so its grant is a key of its own, written after its entry.
        BOOST_REQUIRE(a.request({{"type", "unlock"}, {"uuid", fresh_key("u")}, {"key", key}, {"_uuid", first}})
                          .at("unlocked")
                          .as_bool());
        BOOST_REQUIRE(granted_within(a, held, 3000ms));
        s.b->stop(9);
        s.b = std::make_unique<broker_process>(over(s.etcd, s.ttl));
        lmx::client cb(co_await asio::this_coro::executor, options_for(s.b->tcp_url));
        BOOST_REQUIRE(co_await store_ready(cb));
        const auto info = co_await poll_info(cb, key, [&](auto& i) { return i.holders.size() == 1 && i.waiters == 1; });
        BOOST_TEST(info.holders == std::vector<std::string>{held}, std::ssize(info.holders) << " holders");
        BOOST_TEST(info.waiters == 1u);
        wire_client b(s.b->tcp_url);
        const auto e =
            b.request({{"type", "extend"}, {"uuid", fresh_key("e")}, {"key", key}, {"_uuid", held}, {"ttl", 20000}});
        BOOST_TEST(e.at("extended").as_bool(), boost::json::serialize(e));
        const auto f = b.request({{"type", "unlock"}, {"uuid", fresh_key("force")}, {"key", key}, {"force", true}});
        BOOST_TEST(f.at("unlocked").as_bool(), boost::json::serialize(f));
        const auto lost_of_hold = [&](auto& m) {
            return m.contains("type") && m.at("type") == "lock-lost" && m.at("uuid").as_string() == held;
        };
        BOOST_TEST(a.try_recv_if(lost_of_hold, 3s).has_value());
        BOOST_TEST(granted_within(a, next, 3000ms));
    });
}

// --max-waiters and --max-total-keys bound what the whole cluster holds in etcd, as the broker's
// mirror shows it: waiters and keys through another broker count too.
BOOST_AUTO_TEST_CASE(a_brokers_bounds_count_the_whole_clusters_waiters_and_keys) {
    two_brokers s;
    auto bounded = over(s.etcd);
    bounded.extra_args.insert(bounded.extra_args.end(), {"--max-waiters", "1", "--max-total-keys", "3"});
    s.a = std::make_unique<broker_process>(bounded);
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("bounded");
        auto held = co_await cb.acquire(key);
        background_wait next;
        wait_in_background(cb, key, next, 20000ms);
        // Through A: one waiter (B's) is A's bound; a try-lock is answered as usual.
        co_await poll_info(ca, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(co_await acquire_error(ca, key, {.timeout = 1000ms}) == errc::too_many_waiters);
        BOOST_TEST(co_await acquire_error(ca, key, {.wait = false}) == errc::would_block);
        // Keys: the probe of store_ready is gone; `key` and two more through B make three.
        const auto more_key = fresh_key("bounded-more"), other_key = fresh_key("bounded-other");
        auto more = co_await cb.acquire(more_key);
        auto other = co_await ca.acquire(other_key);
        for (auto& k : {more_key, other_key}) co_await poll_info(ca, k, [](auto& i) { return !i.holders.empty(); });
        BOOST_TEST(co_await acquire_error(ca, fresh_key("bounded-over"), {}) == errc::limit_reached);
        BOOST_TEST(!(co_await acquire_error(cb, fresh_key("bounded-b"), {})));  // B has no bound
        co_await held.release();
        BOOST_TEST(co_await until([&] { return next.granted; }, 5s));
        co_await next.guard.release();
        co_await more.release();
        co_await other.release();
        // All gone: A takes a waiter again, and new keys.
        auto again = co_await cb.acquire(key);
        co_await poll_info(ca, key, [](auto& i) { return !i.holders.empty(); });
        BOOST_TEST(co_await acquire_error(ca, key, {.timeout = 300ms}) == errc::timeout);
        co_await again.release();
        BOOST_TEST(!(co_await acquire_error(ca, fresh_key("bounded-after"), {})));
    });
}

// Tokens strictly increase over grants through either broker, and across a broker's restart.
BOOST_AUTO_TEST_CASE(fencing_tokens_increase_across_brokers_and_restarts) {
    two_brokers s;
    lmx::fencing_token last = 0;
    auto grant_some = [&](int rounds) {
        s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
            for (int i = 0; i < rounds; ++i) {
                auto g = co_await (i % 2 ? cb : ca).acquire(fresh_key("token"));
                BOOST_TEST(g.fencing_token() > last);
                BOOST_TEST(g.fencing_token() < (lmx::fencing_token{1} << 53));
                last = g.fencing_token();
                co_await g.release();
            }
        });
    };
    grant_some(6);
    s.a->stop(9);
    s.a = std::make_unique<broker_process>(over(s.etcd, s.ttl));
    grant_some(6);
}

// Requests for free keys that arrive together are granted in one txn, at one revision: each grant
// still has a token of its own, and the other broker reads the same token from etcd.
BOOST_AUTO_TEST_CASE(grants_written_in_one_txn_have_tokens_of_their_own) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        constexpr int n = 32;
        std::vector<std::string> keys;
        std::vector<lmx::lock_guard> guards(n);
        int answered = 0;
        for (int i = 0; i < n; ++i) {
            keys.push_back(fresh_key("together"));
            ca.acquire(keys.back(), {}, [&, i](error_code ec, lmx::lock_guard g) {
                BOOST_TEST(!ec, ec.message());
                guards[static_cast<std::size_t>(i)] = std::move(g);
                ++answered;
            });
        }
        BOOST_REQUIRE(co_await until([&] { return answered == n; }, 10s));
        std::set<lmx::fencing_token> tokens;
        for (int i = 0; i < n; ++i) {
            const auto& g = guards[static_cast<std::size_t>(i)];
            tokens.insert(g.fencing_token());
            BOOST_TEST(g.fencing_token() < (lmx::fencing_token{1} << 53));
            // B's mirror follows etcd's watch: the grant shows there a moment later.
            const auto seen =
                co_await poll_info(cb, keys[static_cast<std::size_t>(i)], [](auto& x) { return x.last_token != 0; });
            BOOST_TEST(seen.last_token == g.fencing_token());
        }
        BOOST_TEST(tokens.size() == static_cast<std::size_t>(n));
        // Later grants still come after all of them.
        auto later = co_await cb.acquire(fresh_key("after"));
        BOOST_TEST(later.fencing_token() > *tokens.rbegin());
        for (auto& g : guards) co_await g.release();
    });
}

// A request id in use is refused, as in memory, whichever broker the second request reaches:
// the second connection must not take the first one's entry in etcd for an earlier try of its
// own (which made it a second holder of the same exclusive lock).
BOOST_AUTO_TEST_CASE(a_request_id_in_use_through_another_broker_is_refused) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto frame = [](std::string type, const std::string& uuid, const std::string& key,
                              const std::string& lock_id) {
            boost::json::object f{{"type", std::move(type)}, {"uuid", uuid}, {"key", key}};
            if (!lock_id.empty()) f["_uuid"] = lock_id;
            return f;
        };
        const auto field = [](const boost::json::object& o, std::string_view name) {
            const auto* v = o.if_contains(name);
            return v ? boost::json::serialize(*v) : std::string();
        };
        for (const bool seen_first : {false, true}) {
            BOOST_TEST_CONTEXT("the other broker's mirror " << (seen_first ? "shows" : "may not show") << " it") {
                const auto key = fresh_key("dup"), id = fresh_key("dup-id");
                wire_client a(s.a->tcp_url), b(s.b->tcp_url);
                const auto first = a.request(frame("lock", id, key, ""));
                BOOST_TEST(field(first, "acquired") == "true", dump(first));
                if (seen_first) co_await poll_info(cb, key, [](auto& i) { return !i.holders.empty(); });
                const auto second = b.request(frame("lock", id, key, ""));
                BOOST_TEST(field(second, "acquired") == "false", dump(second));
                BOOST_TEST(field(second, "code") == "\"duplicate_request\"", dump(second));
                const auto held = co_await poll_info(ca, key, [](auto&) { return true; });
                BOOST_TEST(held.holders == std::vector<std::string>{id});
                // The first one still holds, and its release is the one that frees the key.
                const auto released = a.request(frame("unlock", fresh_key("unlock"), key, id));
                BOOST_TEST(field(released, "error").empty(), dump(released));
                BOOST_TEST((co_await poll_info(cb, key, [](auto& i) { return i.holders.empty(); })).holders.empty());
            }
        }
    });
}

// An acquire-many of the most keys a request may name expires through its broker's timer, and
// its keys are free again at once: its end, and the record of why it ended, fit in one txn.
BOOST_AUTO_TEST_CASE(a_hold_of_64_keys_expires_and_frees_every_key) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        std::vector<std::string> keys;
        for (int i = 0; i < 64; ++i) keys.push_back(fresh_key("wide"));
        auto all = co_await ca.acquire_many(keys, {.ttl = 300ms});
        const auto token = all.fencing_token(keys.back());
        BOOST_TEST(token != 0u);
        all.detach();  // untracked: broker A's timer ends it
        auto next = co_await cb.acquire(keys.back(), {.timeout = 5000ms});
        BOOST_TEST(next.fencing_token() > token);
    });
}

// Releases and writes on free keys that arrive together share a txn only as far as etcd's limit
// of 128 operations allows, nested ones included: none of them fails for want of room.
BOOST_AUTO_TEST_CASE(a_batch_keeps_within_etcds_operation_limit) {
    two_brokers s;
    s.with_clients([&](lmx::client&, lmx::client&) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url);
        const auto frame = [](const char* type, const std::string& uuid, const std::string& key,
                              const std::string& lock_id = {}) {
            boost::json::object f{{"type", type}, {"uuid", uuid}, {"key", key}};
            if (!lock_id.empty()) f["_uuid"] = lock_id;
            return boost::json::serialize(f) + "\n";
        };
        std::vector<std::pair<std::string, std::string>> held;  // (key, id)
        std::string all;
        for (int i = 0; i < 63; ++i) {
            held.emplace_back(fresh_key("limit"), fresh_key("limit-id"));
            all += frame("lock", held.back().second, held.back().first);
        }
        a.send_raw(all);
        for (auto& [key, id] : held) BOOST_TEST(a.recv_for(id).at("acquired").as_bool());
        // 63 releases (126 deletes) and two writes on free keys, read in one turn.
        all.clear();
        std::vector<std::string> unlocks, fresh;
        for (auto& [key, id] : held) {
            unlocks.push_back(fresh_key("unlock"));
            all += frame("unlock", unlocks.back(), key, id);
        }
        for (int i = 0; i < 2; ++i) {
            fresh.push_back(fresh_key("limit-new"));
            all += frame("lock", fresh.back(), fresh_key("limit-free"));
        }
        a.send_raw(all);
        for (auto& u : unlocks) BOOST_TEST(!a.recv_for(u).contains("error"));
        for (auto& id : fresh) BOOST_TEST(a.recv_for(id).at("acquired").as_bool());
        BOOST_TEST(s.a->log().find("batch of writes failed") == std::string::npos, s.a->log());
        co_return;
    });
}

// An acquire-many over etcd is written, claimed and ended in one txn each, and etcd takes at most
// 128 operations and 128 compares in one: its end deletes two keys on each key, and its write
// compares twice on a key whose named max it copies. So it takes at most 64 keys, 63 of them
// named, whatever --max-keys allows; past that it is refused with too_many_keys. One within the
// limit is granted and released.
BOOST_AUTO_TEST_CASE(an_acquire_many_past_etcds_txn_limit_is_refused) {
    two_brokers s;
    broker_config wide = over(s.etcd, s.ttl);
    wide.extra_args.insert(wide.extra_args.end(), {"--max-keys", "200"});
    s.a = std::make_unique<broker_process>(wide);
    s.with_clients([&](lmx::client& ca, lmx::client&) -> asio::awaitable<void> {
        wire_client a(s.a->tcp_url);
        const auto acquire_many = [&](const std::vector<std::string>& keys) {
            boost::json::array list;
            for (auto& k : keys) list.emplace_back(k);
            return a.request({{"type", "acquire-many"}, {"uuid", fresh_key("many")}, {"keys", list}, {"wait", false}});
        };
        const auto release_many = [&](const boost::json::object& granted) {
            return a.request(
                {{"type", "release-many"}, {"uuid", fresh_key("r")}, {"lockUuid", granted.at("lockUuid")}});
        };
        std::vector<std::string> keys;
        for (int i = 0; i < 65; ++i) keys.push_back(fresh_key("many-key"));
        const auto over_limit = acquire_many(keys);
        BOOST_TEST(over_limit.at("code").as_string() == "too_many_keys", boost::json::serialize(over_limit));
        keys.resize(64);
        const auto all = acquire_many(keys);
        BOOST_REQUIRE(all.at("acquired").as_bool());
        const auto released = release_many(all);
        BOOST_TEST(released.at("released").as_bool(), boost::json::serialize(released));
        BOOST_TEST(is_free(co_await poll_info(ca, keys.back(), [](auto& i) { return is_free(i); })));
        BOOST_TEST(is_free(co_await ca.info(keys.front())));
        // 64 keys held under a named max: an acquire-many of all of them would copy 64 maxes.
        std::vector<std::string> named;
        for (int i = 0; i < 64; ++i) {
            named.push_back(fresh_key("named-key"));
            const auto hold = fresh_key("named");
            a.send(lock_frame(hold, named.back(), {{"max", 2}}));
            BOOST_REQUIRE(a.recv_for(hold).at("acquired").as_bool());
        }
        for (auto& k : named) co_await poll_info(ca, k, [](auto& i) { return i.holders.size() == 1; });
        const auto copies = acquire_many(named);
        BOOST_TEST(copies.at("code").as_string() == "too_many_keys", boost::json::serialize(copies));
        named.resize(60);
        const auto within = acquire_many(named);
        BOOST_TEST_REQUIRE(within.at("acquired").as_bool(), boost::json::serialize(within));
        BOOST_TEST(release_many(within).at("released").as_bool());
    });
}

// A force on a semaphore with more holders than one etcd txn can end (three operations each, of
// 128) ends them all in several txns: it is answered, every holder is told, and the waiter holds.
BOOST_AUTO_TEST_CASE(a_force_ends_more_holders_than_one_txn_takes) {
    two_brokers s;
    s.with_clients([&](lmx::client&, lmx::client& cb) -> asio::awaitable<void> {
        constexpr int holders = 100;
        const auto key = fresh_key("crowded");
        wire_client a(s.a->tcp_url);
        std::string all;
        std::set<std::string> ids;
        for (int i = 0; i < holders; ++i) {
            const auto id = fresh_key("holder");
            ids.insert(id);
            all += boost::json::serialize(
                       boost::json::object{{"type", "lock"}, {"uuid", id}, {"key", key}, {"max", holders}}) +
                   "\n";
        }
        a.send_raw(all);
        for (auto& id : ids) BOOST_REQUIRE(a.recv_for(id, 10s).at("acquired").as_bool());
        const auto waiter = fresh_key("waiter");
        a.send(boost::json::object{{"type", "lock"}, {"uuid", waiter}, {"key", key}});
        co_await poll_info(cb, key,
                           [&](auto& i) { return i.holders.size() == std::size_t{holders} && i.waiters == 1; });
        wire_client b(s.b->tcp_url);
        const auto forced =
            b.request({{"type", "unlock"}, {"uuid", fresh_key("force")}, {"key", key}, {"force", true}}, 10s);
        BOOST_TEST(forced.at("unlocked").as_bool(), boost::json::serialize(forced));
        BOOST_TEST(!forced.contains("warning"), boost::json::serialize(forced));  // it ended holds
        std::set<std::string> told;
        while (told.size() < ids.size()) {
            auto lost = a.try_recv_if([](auto& f) { return f.contains("type") && f.at("type") == "lock-lost"; }, 5s);
            if (!lost) break;
            BOOST_TEST(lost->at("reason") == "forced");
            told.insert(std::string(lost->at("uuid").as_string()));
        }
        BOOST_TEST((told == ids));
        const auto granted = a.try_recv_if(
            [&](auto& f) {
                return f.contains("uuid") && f.at("uuid").as_string() == waiter && f.at("acquired").as_bool();
            },
            10s);
        BOOST_TEST(granted.has_value());
        BOOST_TEST(s.b->log().find("release failed") == std::string::npos, s.b->log());
    });
}

// Runs `lmx check` for 20 s with 4 client processes and `args`, and returns its JSON summary once
// it has checked that no violation was found and that the run did enough to mean something.
boost::json::object lmx_check(std::vector<std::string> args) {
    temp_dir dir;
    std::vector<std::string> all{"check", "--duration", "20s", "--clients", "4", "--json", "-q", "--dir", dir.path()};
    all.insert(all.end(), args.begin(), args.end());
    auto r = run_lmx(all, 300s);
    BOOST_TEST_INFO("output: " << r.output.substr(0, 4000));
    BOOST_TEST(r.status == 0);
    boost::json::object summary;
    std::istringstream lines(r.output);
    for (std::string line; std::getline(lines, line);)
        if (line.starts_with("{\"operations\"")) summary = boost::json::parse(line).as_object();
    BOOST_REQUIRE(!summary.empty());
    const auto num = [&](const char* name) { return summary.at(name).to_number<std::uint64_t>(); };
    BOOST_TEST(num("violationCount") == 0u, boost::json::serialize(summary.at("violations")));
    BOOST_TEST(num("operations") >= 1000u);
    BOOST_TEST(num("grants") >= 100u);
    BOOST_TEST(num("streamEvents") > 0u);
    return summary;
}

// Once the broker behind `c` shows a grant made after now, its mirror has seen every change
// made before it.
asio::awaitable<void> caught_up(lmx::client& c) {
    const auto probe = fresh_key("caught-up");
    auto g = co_await c.acquire(probe);
    BOOST_TEST(!(co_await poll_info(c, probe, [](auto& i) { return !i.holders.empty(); })).holders.empty());
    co_await g.release();
}

// A key keeps the max named on it while it is held or waited for, as in memory: once its last
// hold ends, etcd keeps no record of it, and the next request naming none gets a binary lock.
BOOST_AUTO_TEST_CASE(a_named_max_goes_with_the_keys_last_hold) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("named");
        auto one = co_await ca.acquire(key, {.max = 3});
        co_await caught_up(cb);
        auto two = co_await cb.acquire(key, {.wait = false});  // the key's max while it lives: 3
        co_await one.release();
        co_await two.release();
        BOOST_TEST(co_await until([&] { return records(s.etcd, 'm') == 0; }, 5s));
        co_await caught_up(ca);
        co_await caught_up(cb);
        auto again = co_await ca.acquire(key);
        co_await poll_info(cb, key, [](auto& i) { return !i.holders.empty(); });
        BOOST_TEST(co_await acquire_error(cb, key, {.wait = false}) == errc::would_block);
    });
}

// etcd gone: the holders of both brokers are told before their entries can have expired, new
// requests fail as unavailable, and once etcd is back the brokers grant again.
BOOST_AUTO_TEST_CASE(losing_etcd_tells_every_holder_and_grants_resume_when_it_returns) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        auto ha = co_await ca.acquire(fresh_key("gone"), {.ttl = lmx::no_expiry});
        auto hb = co_await cb.acquire(fresh_key("gone"), {.ttl = lmx::no_expiry});
        error_code why_a, why_b;
        int told = 0;
        ha.async_wait_lost([&](error_code ec) {
            why_a = ec;
            ++told;
        });
        hb.async_wait_lost([&](error_code ec) {
            why_b = ec;
            ++told;
        });
        const auto gone = steady::now();
        s.etcd.kill(0);
        BOOST_TEST(co_await until([&] { return told == 2; }, 10s));
        // Told before the session lease could have run out at etcd.
        BOOST_TEST(ms_since(gone) < session_ttl_s * 1000);
        BOOST_TEST(why_a != errc::released);
        BOOST_TEST(why_b != errc::released);
        BOOST_TEST((co_await acquire_error(ca, fresh_key("gone"), {.wait = false})) == errc::unavailable);
        s.etcd.restart(0);
        BOOST_TEST(co_await store_ready(ca, 20s));
        BOOST_TEST(co_await store_ready(cb, 20s));
    });
}

// A release made while etcd is down is carried out once it is back, well before the broker's
// session lease could end: the key does not stay taken for as long as the broker lives.
BOOST_AUTO_TEST_CASE(a_release_while_etcd_is_down_is_done_when_it_returns) {
    two_brokers s(10);
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("outage");
        auto held = co_await ca.acquire(key, {.ttl = lmx::no_expiry});
        background_wait next;
        wait_in_background(cb, key, next, 30000ms);
        co_await poll_info(cb, key, [](auto& i) { return i.waiters == 1; });
        s.etcd.kill(0);
        held.detach();
        bool answered = false;
        error_code released;
        ca.release(key, held.id(), [&](error_code ec) {
            released = ec;
            answered = true;
        });
        co_await sleep_for(1000ms);
        BOOST_TEST(!answered);  // not done yet: etcd is down
        s.etcd.restart(0);
        const auto back = steady::now();
        BOOST_TEST(co_await until([&] { return answered && next.granted; }, 8s));
        BOOST_TEST(!released, released.message());
        BOOST_TEST_MESSAGE("the waiter got the key " << ms_since(back) << " ms after etcd was back");
        if (next.granted) co_await next.guard.release();
    });
}

// Three etcd members: the one both brokers talk to first is killed and later restarted; the
// brokers move on to the others and hand the key over between their clients throughout.
BOOST_AUTO_TEST_CASE(locks_keep_working_while_an_etcd_member_is_down) {
    two_brokers s(6, 3);
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        const auto key = fresh_key("member");
        lmx::fencing_token last = 0;
        auto hand_over = [&]() -> asio::awaitable<void> {
            auto first = co_await ca.acquire(key, {.ttl = 60000ms, .timeout = 20000ms});
            BOOST_TEST(first.fencing_token() > last);
            bool granted = false;
            lmx::lock_guard second;
            cb.acquire(key, {.ttl = 60000ms, .timeout = 20000ms}, [&](error_code ec, lmx::lock_guard g) {
                BOOST_TEST(!ec, ec.message());
                second = std::move(g);
                granted = true;
            });
            co_await poll_info(
                cb, key, [](auto& i) { return i.waiters == 1; }, 10s);
            BOOST_TEST(!granted);
            co_await first.release();
            BOOST_TEST(co_await until([&] { return granted; }, 15s));
            BOOST_TEST(second.fencing_token() > first.fencing_token());
            last = second.fencing_token();
            if (granted) co_await second.release();
        };
        co_await hand_over();
        s.etcd.kill(0);
        for (int i = 0; i < 3; ++i) co_await hand_over();
        s.etcd.restart(0);
        co_await hand_over();
    });
}

// A watcher on broker B sees what clients of broker A do with its key, in etcd's order: each
// request queued (every request waits for its claim to be written), grants with their tokens,
// ends, with the same reason on both brokers.
BOOST_AUTO_TEST_CASE(a_watcher_of_one_broker_sees_the_other_brokers_clients) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        using kind = lmx::lock_event::kind;
        const auto key = fresh_key("watched");
        auto far = co_await cb.watch({key});
        auto near = co_await ca.watch({key});
        auto first = co_await ca.acquire(key, {.ttl = 60000ms});
        bool granted = false;
        lmx::lock_guard second;
        ca.acquire(key, {.ttl = 60000ms}, [&](error_code ec, lmx::lock_guard g) {
            BOOST_TEST(!ec, ec.message());
            second = std::move(g);
            granted = true;
        });
        co_await poll_info(cb, key, [](auto& i) { return i.waiters == 1; });
        co_await first.release();
        BOOST_TEST(co_await until([&] { return granted; }, 5s));
        co_await cb.force_release(key);  // through B: B knows why the hold ended
        for (auto* w : {&far, &near}) {
            const auto seen = co_await next_events(*w, 6);
            BOOST_TEST((seen[0].type == kind::queued && seen[1].type == kind::granted && seen[2].type == kind::queued &&
                        seen[3].type == kind::released && seen[4].type == kind::granted));
            BOOST_TEST(seen[0].id == first.id());
            BOOST_TEST(seen[1].id == first.id());
            BOOST_TEST(seen[1].fencing_token == first.fencing_token());
            BOOST_TEST(seen[2].id == second.id());
            BOOST_TEST(seen[3].id == first.id());
            BOOST_TEST(seen[4].id == second.id());
            BOOST_TEST(seen[4].fencing_token == second.fencing_token());
            BOOST_TEST(seen[5].id == second.id());
            BOOST_TEST((seen[5].type == kind::forced));  // B wrote why, for A's watchers too
        }
    });
}

// Why a request ended is the same on every broker's watch: a wait timed out and a hold expired
// through broker A are `timeout` and `expired` to a watcher of broker B, as to one of A.
BOOST_AUTO_TEST_CASE(every_broker_tells_its_watchers_why_a_request_ended) {
    two_brokers s;
    s.with_clients([&](lmx::client& ca, lmx::client& cb) -> asio::awaitable<void> {
        using kind = lmx::lock_event::kind;
        const auto key = fresh_key("why");
        auto far = co_await cb.watch({key});
        auto near = co_await ca.watch({key});
        auto held = co_await ca.acquire(key, {.ttl = 1500ms});
        const auto held_id = held.id();
        held.detach();  // untracked: broker A's timer ends it
        BOOST_TEST(co_await acquire_error(ca, key, {.timeout = 200ms}) == errc::timeout);
        for (auto* w : {&far, &near}) {
            const auto seen = co_await next_events(*w, 5);
            BOOST_TEST((seen[0].type == kind::queued && seen[1].type == kind::granted && seen[2].type == kind::queued));
            BOOST_TEST((seen[3].type == kind::timeout));
            BOOST_TEST(seen[3].id == seen[2].id);
            BOOST_TEST((seen[4].type == kind::expired));
            BOOST_TEST(seen[4].id == held_id);
        }
        // The records that carried the reasons are gone again once read.
        BOOST_TEST(co_await until([&] { return records(s.etcd, 'r') == 0; }, 5s));
    });
}

// A client given both brokers fails over: when its broker dies its holds are reported lost, and
// the next call reaches the other broker, which serves the same locks.
BOOST_AUTO_TEST_CASE(a_client_of_two_brokers_fails_over_to_the_other) {
    two_brokers s;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client_options o = options_for(s.a->tcp_url);
        o.urls = {s.a->tcp_url, s.b->tcp_url};
        lmx::client both(ex, o);
        lmx::client only_b(ex, options_for(s.b->tcp_url));
        BOOST_REQUIRE(co_await store_ready(both));
        BOOST_REQUIRE(co_await store_ready(only_b));
        const auto key = fresh_key("failover");
        auto held = co_await both.acquire(key, {.ttl = lmx::no_expiry});
        // Through broker A (the first listed): B sees the hold.
        auto info = co_await poll_info(only_b, key, [](auto& i) { return i.holders.size() == 1; });
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});

        error_code why;
        bool told = false;
        held.async_wait_lost([&](error_code ec) {
            why = ec;
            told = true;
        });
        s.a->stop(9);
        BOOST_TEST(co_await until([&] { return told; }, 5s));
        BOOST_TEST(why == errc::connection_lost);
        // The next call connects to B; the dead broker's hold goes with its session lease.
        auto again = co_await both.acquire(key, {.timeout = 15000ms});
        BOOST_TEST(again.fencing_token() > held.fencing_token());
        info = co_await only_b.info(key);
        BOOST_TEST(info.holders == std::vector<std::string>{again.id()});
        co_await again.release();

        // A list whose first broker is down from the start: the connect moves on to the next.
        lmx::client_options dead_first = options_for(s.a->tcp_url);
        dead_first.urls = {s.a->tcp_url, s.b->tcp_url};
        lmx::client late(ex, dead_first);
        auto g = co_await late.acquire(key);
        co_await g.release();
    });
}

// `lmx check` with its clients split between two brokers over one etcd, and client processes
// killed as it runs: the history, watched through one broker, shows every broker's requests, and
// holds no violation of what lmx promises (mutual exclusion, semaphore bounds, shared/exclusive,
// FIFO, fencing order, one answer per request, every loss told).
BOOST_AUTO_TEST_CASE(lmx_check_across_two_brokers_finds_nothing) {
    two_brokers s;
    s.with_clients([](lmx::client&, lmx::client&) -> asio::awaitable<void> { co_return; });
    const auto summary = lmx_check({"--url", s.a->tcp_url + "," + s.b->tcp_url, "--kill-every", "3000"});
    BOOST_TEST(summary.at("brokerRuns").to_number<std::uint64_t>() == 2u);  // clients of both brokers
    BOOST_TEST(summary.at("clientKills").to_number<std::uint64_t>() >= 1u);
}

// The broker `lmx check` starts keeps its state in etcd and is killed and started again: each
// run finds the requests of the run before still in etcd until that run's session lease ends.
BOOST_AUTO_TEST_CASE(lmx_check_of_a_broker_over_etcd_killed_and_restarted_finds_nothing) {
    etcd_cluster etcd;
    const auto summary =
        lmx_check({"--restart-every", "2500", "--kill-every", "3000", "--broker-arg=--store",
                   "--broker-arg=etcd://" + etcd.endpoint(0), "--broker-arg=--session-ttl", "--broker-arg=2"});
    BOOST_TEST(summary.at("brokerKills").to_number<std::uint64_t>() >= 2u);
}

BOOST_AUTO_TEST_SUITE_END()
