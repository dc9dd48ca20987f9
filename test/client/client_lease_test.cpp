// Leases and the end of a hold, as a program sees them: renewal while held, the lease counted by
// the client even when the broker cannot be reached, every way a hold ends reported with why,
// half-open connections found by the health check, guards that outlive their client, requests
// the client refuses before sending them, and connect failures told apart.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <csignal>
#include <memory>
#include <optional>
#include <thread>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using lmx::errc;
using lmx::error_code;

namespace lease_test {
constexpr auto tuple = asio::as_tuple(asio::use_awaitable);

// Waits for the guard's end (async_wait_lost) for at most `limit`; nullopt when it did not end.
template <class Guard>
asio::awaitable<std::optional<error_code>> ended_within(Guard& g, std::chrono::milliseconds limit) {
    struct state {
        explicit state(asio::any_io_executor ex) : timer(ex) {}
        asio::steady_timer timer;
        std::optional<error_code> why;
    };
    auto st = std::make_shared<state>(co_await asio::this_coro::executor);
    st->timer.expires_after(limit);
    g.async_wait_lost([st](error_code ec) {
        st->why = ec;
        st->timer.cancel();
    });
    co_await st->timer.async_wait(tuple);
    co_return st->why;
}

// Resumes a SIGSTOPped broker whatever happens to the test.
struct frozen {
    int pid;
    explicit frozen(int p) : pid(p) { ::kill(pid, SIGSTOP); }
    ~frozen() { ::kill(pid, SIGCONT); }
    frozen(const frozen&) = delete;
    frozen& operator=(const frozen&) = delete;
};
}  // namespace lease_test
using namespace lease_test;

BOOST_AUTO_TEST_SUITE(client_lease_test)

// A hold that names no ttl is renewed for as long as its guard holds it, well past the ttl.
BOOST_DATA_TEST_CASE(default_hold_is_renewed_past_its_ttl, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.url(kind));
        o.ttl = 300ms;
        lmx::client a(ex, o);
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("renewed");
        auto g = co_await a.acquire(key);
        auto first_deadline = g.expires_at();
        BOOST_REQUIRE(first_deadline.has_value());
        BOOST_TEST((*first_deadline <= steady::now() + 300ms));
        co_await sleep_for(1200ms);  // four ttls
        BOOST_TEST(g.owns_lock());
        BOOST_TEST((g.expires_at() > first_deadline), "the lease deadline moved on with the renewals");
        auto [ec, taken] = co_await other.acquire(key, {.wait = false}, tuple);
        BOOST_TEST(ec == errc::would_block, ec.message());
        // A ttl named by the request is not renewed unless asked.
        auto fixed = co_await a.acquire(fresh_key("fixed"), {.ttl = 300ms});
        auto why = co_await ended_within(fixed, 2s);
        BOOST_TEST((why == error_code(errc::lease_expired)), (why ? why->message() : "still held"));
        BOOST_TEST(!fixed.owns_lock());
        BOOST_TEST(fixed.lost());
        auto asked = co_await a.acquire(fresh_key("asked"), {.ttl = 300ms, .auto_renew = true});
        co_await sleep_for(900ms);
        BOOST_TEST(asked.owns_lock());
    });
}

// With the broker frozen nothing can be renewed or reported: the guard stops owning the lock by
// the deadline it counted itself, and says the lease ran out.
BOOST_DATA_TEST_CASE(lease_ends_on_time_with_the_broker_frozen,
                     bdata::make(client_transports) * bdata::make({false, true}), kind, renew) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.url(kind));
        o.health_interval = 0ms;  // only the lease's own clock is under test here
        lmx::client a(ex, o);
        auto g = co_await a.acquire(fresh_key("frozen"), {.ttl = 1000ms, .auto_renew = renew});
        const auto deadline = g.expires_at();
        BOOST_REQUIRE(deadline.has_value());
        frozen stop(b.pid());
        const auto t0 = steady::now();
        auto why = co_await ended_within(g, 2500ms);
        BOOST_TEST((why == error_code(errc::lease_expired)), (why ? why->message() : "still held after 2.5 s"));
        BOOST_TEST(!g.owns_lock());
        // Without renewals the deadline is the one counted at the grant; with them, at most one
        // ttl after the freeze (from the last renewal that was answered).
        BOOST_TEST(ms_since(t0) <= 1100);
        if (!renew) BOOST_TEST((steady::now() >= *deadline));
    });
}

// A request that waited in line longer than its lease still gets a live hold: the client
// renews a late grant before handing out the guard, and counts the lease from that renewal.
BOOST_DATA_TEST_CASE(a_long_wait_in_line_still_gets_a_full_lease, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client holder(ex, options_for(b.url(kind)));
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        const auto key = fresh_key("long-wait"), keys_a = fresh_key("lw-a"), keys_b = fresh_key("lw-b");
        auto first = co_await holder.acquire(key);
        auto first_many = co_await holder.acquire_many({keys_a, keys_b});
        asio::steady_timer later(ex, 1800ms);
        later.async_wait([&](error_code) {
            first.release([](error_code) {});
            first_many.release([](error_code) {});
        });
        // 1.8 s in line, with a 1.2 s lease that is not renewed (margins wide enough for a loaded
        // machine under ASan: a renewal that takes a few hundred ms still passes).
        lmx::multi_lock_guard m;
        bool many_done = false;
        a.acquire_many({keys_a, keys_b}, {.ttl = 1200ms, .timeout = 8s}, [&](error_code ec, lmx::multi_lock_guard got) {
            BOOST_TEST(!ec, ec.message());
            m = std::move(got);
            many_done = true;
        });
        auto g = co_await a.acquire(key, {.ttl = 1200ms, .timeout = 8s});
        BOOST_TEST(g.owns_lock());
        BOOST_REQUIRE(g.expires_at().has_value());
        BOOST_TEST((*g.expires_at() > steady::now() + 800ms));
        while (!many_done) co_await sleep_for(5ms);
        BOOST_TEST(m.owns_lock());
        BOOST_REQUIRE(m.expires_at().has_value());
        BOOST_TEST((*m.expires_at() > steady::now() + 600ms));
        co_await sleep_for(600ms);
        BOOST_TEST(g.owns_lock());
        BOOST_TEST(!g.lost());
        auto info = co_await other.info(key);
        BOOST_TEST(info.holders == std::vector<std::string>{g.id()});
        // And it still ends on time.
        auto why = co_await ended_within(g, 2000ms);
        BOOST_TEST((why == error_code(errc::lease_expired)), (why ? why->message() : "still held"));
    });
}

// A hold the client has counted out is given back, so that a renewal the broker answers late
// (it was frozen meanwhile) does not leave the key taken by nobody for another lease.
BOOST_DATA_TEST_CASE(a_lease_counted_out_is_given_back, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.url(kind));
        o.health_interval = 0ms;
        lmx::client a(ex, o);
        const auto key = fresh_key("given-back");
        auto g = co_await a.acquire(key, {.ttl = 1000ms, .auto_renew = true});
        std::optional<error_code> why;
        {
            frozen stop(b.pid());
            why = co_await ended_within(g, 2000ms);  // the renewal at ~333 ms waits in the socket
            co_await sleep_for(300ms);
        }
        BOOST_TEST((why == error_code(errc::lease_expired)), (why ? why->message() : "still held"));
        // The broker now reads the late renewal and the give-back behind it.
        lmx::client other(ex, options_for(b.url(kind)));
        const auto t0 = steady::now();
        auto [ec, next] = co_await other.acquire(key, {.timeout = 600ms}, tuple);
        BOOST_TEST(!ec, ec.message());
        BOOST_TEST(ms_since(t0) < 600);
    });
}

// Every way a hold ends is told to whoever waits for it, with why.
BOOST_DATA_TEST_CASE(every_end_of_a_hold_is_told_with_why, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));

        auto own = co_await a.acquire(fresh_key("own"));
        std::optional<error_code> own_end;
        own.async_wait_lost([&](error_code ec) { own_end = ec; });
        co_await own.release();
        const bool told = co_await until([&] { return own_end.has_value(); });
        BOOST_TEST(told);
        BOOST_TEST((own_end == error_code(errc::released)));
        BOOST_TEST(!own.lost());

        auto key = fresh_key("forced");
        auto victim = co_await a.acquire(key);
        co_await other.force_release(key);
        auto why = co_await ended_within(victim, 2s);
        BOOST_TEST((why == error_code(errc::forced)), (why ? why->message() : "still held"));
        BOOST_TEST(victim.lost());

        auto key2 = fresh_key("by-id");
        auto victim2 = co_await a.acquire(key2);
        co_await other.release(key2, victim2.id());
        why = co_await ended_within(victim2, 2s);
        BOOST_TEST((why == error_code(errc::forced)), (why ? why->message() : "still held"));
        // The id holds nothing any more: releasing it again says so.
        auto [ec] = co_await other.release(key2, victim2.id(), tuple);
        BOOST_TEST(ec == errc::not_held, ec.message());

        auto many = co_await a.acquire_many({"m-a", "m-b"});
        std::optional<error_code> many_end;
        many.async_wait_lost([&](error_code e) { many_end = e; });
        auto closing = co_await a.acquire(fresh_key("closing"));
        a.close();
        BOOST_TEST(!closing.owns_lock(), "a closed client's guard owns nothing");
        why = co_await ended_within(closing, 2s);
        BOOST_TEST((why == error_code(errc::closed)), (why ? why->message() : "still held"));
        const bool many_told = co_await until([&] { return many_end.has_value(); });
        BOOST_TEST(many_told);
        BOOST_TEST((many_end == error_code(errc::closed)));
        // A wait started after the end completes at once, with the same reason.
        why = co_await ended_within(victim, 1s);
        BOOST_TEST((why == error_code(errc::forced)));
    });
}

BOOST_DATA_TEST_CASE(broker_death_is_connection_lost, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto g = co_await a.acquire(fresh_key("death"));
        b.stop(SIGKILL);
        auto why = co_await ended_within(g, 3s);
        BOOST_TEST((why == error_code(errc::connection_lost)), (why ? why->message() : "still held"));
        BOOST_TEST(g.lost());
        a.close();
    });
}

// A broker that stops answering (frozen, or a peer gone without a FIN) is found by the health
// check within twice its interval, even for holds that never expire.
BOOST_DATA_TEST_CASE(half_open_connection_is_found, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.url(kind));
        o.health_interval = 300ms;
        std::vector<std::pair<lmx::connection_state, error_code>> states;
        o.on_state = [&](lmx::connection_state s, error_code ec) { states.emplace_back(s, ec); };
        lmx::client a(ex, o);
        auto g = co_await a.acquire(fresh_key("half-open"), {.ttl = lmx::no_expiry});
        BOOST_TEST((a.state() == lmx::connection_state::connected));
        std::optional<error_code> why;
        {
            frozen stop(b.pid());
            const auto t0 = steady::now();
            why = co_await ended_within(g, 2s);
            BOOST_TEST(ms_since(t0) <= 1000);
        }
        BOOST_TEST((why == error_code(errc::connection_lost)), (why ? why->message() : "still held"));
        BOOST_REQUIRE(states.size() >= 2u);
        BOOST_TEST((states[0].first == lmx::connection_state::connecting));
        BOOST_TEST((states[1].first == lmx::connection_state::connected));
        bool told = std::any_of(states.begin(), states.end(), [](auto& s) {
            return s.first == lmx::connection_state::disconnected && s.second == errc::connection_lost;
        });
        BOOST_TEST(told, "on_state reported the loss");
        // Once the broker answers again the client reconnects on the next call.
        auto again = co_await a.acquire(fresh_key("after"), {.wait = false});
        BOOST_TEST(again.owns_lock());
        a.close();
        BOOST_TEST((a.state() == lmx::connection_state::closed));
    });
}

// An idle connection whose pings are answered stays up, however the pongs fall between the
// health checks (a pong arrives just after the check that sent its ping).
BOOST_DATA_TEST_CASE(an_idle_connection_that_answers_pings_is_kept, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.url(kind));
        o.health_interval = 100ms;
        // Shared: after a failure the client may report a state once this frame is gone.
        auto drops = std::make_shared<int>(0);
        o.on_state = [drops](lmx::connection_state s, error_code) {
            *drops += s == lmx::connection_state::disconnected;
        };
        lmx::client a(ex, o);
        auto g = co_await a.acquire(fresh_key("idle"), {.ttl = lmx::no_expiry});
        const auto why = co_await ended_within(g, 3s);  // 30 health checks with nothing but pings
        BOOST_TEST(!why, (why ? why->message() : ""));
        BOOST_TEST(*drops == 0);
        BOOST_TEST(g.owns_lock());
        a.close();
    });
}

// A guard may outlive its client and the io_context the client ran on; it owns nothing then.
BOOST_DATA_TEST_CASE(guard_outlives_client_and_io_context, bdata::make(client_transports), kind) {
    broker_process b;
    lmx::lock_guard survivor;
    lmx::multi_lock_guard multi_survivor;
    {
        auto ctx = std::make_unique<asio::io_context>();
        auto c = std::make_unique<lmx::client>(*ctx, options_for(b.url(kind)));
        bool done = false;
        c->acquire(fresh_key("survivor"), [&](error_code ec, lmx::lock_guard g) {
            BOOST_TEST(!ec, ec.message());
            survivor = std::move(g);
            c->acquire_many(std::vector<std::string>{fresh_key("ms-a"), fresh_key("ms-b")},
                            [&](error_code ec2, lmx::multi_lock_guard m) {
                                BOOST_TEST(!ec2, ec2.message());
                                multi_survivor = std::move(m);
                                done = true;
                            });
        });
        BOOST_TEST(run_until(*ctx, [&] { return done; }));
        BOOST_TEST(survivor.owns_lock());
        c.reset();
        BOOST_TEST(!survivor.owns_lock(), "the guard still owned its lock after ~client");
        BOOST_TEST(!multi_survivor.owns_lock());
        ctx.reset();
    }
    // Everything it refers to is gone: these must neither crash nor hang.
    BOOST_TEST(survivor.lost());
    BOOST_TEST(!survivor.owns_lock());
    // With no io_context left, completions run on the system executor's threads.
    std::atomic<int> told{0}, why{0};
    survivor.async_wait_lost([&](error_code ec) {
        why = ec.value();
        ++told;
    });
    survivor.release([&](error_code) { ++told; });
    auto deadline = steady::now() + 3s;
    while (told < 2 && steady::now() < deadline) std::this_thread::sleep_for(10ms);
    BOOST_TEST(told.load() == 2);
    BOOST_TEST(why.load() == static_cast<int>(errc::closed));
    survivor = lmx::lock_guard{};
    multi_survivor = lmx::multi_lock_guard{};
}

// The client checks a request before sending it: a bad one fails at once with bad_request and a
// reason, and nothing else on the connection is disturbed.
// A broker bound (here, holds per connection) fails the request with limit_reached and the
// broker's words; the holds already taken are untouched.
BOOST_AUTO_TEST_CASE(a_broker_limit_is_limit_reached) {
    broker_process b({.extra_args = {"--max-locks-per-connection", "2"}});
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url("tcp")));
        auto first = co_await a.acquire(fresh_key("lim"));
        auto second = co_await a.acquire(fresh_key("lim"));
        lmx::diagnostics diag;
        auto [ec, g] = co_await a.acquire(fresh_key("lim"), {.diag = &diag}, tuple);
        BOOST_TEST(ec == errc::limit_reached, ec.message());
        BOOST_TEST((ec == std::errc::resource_unavailable_try_again));
        BOOST_TEST(diag.message.find("limit") != std::string::npos, diag.message);
        BOOST_TEST(first.owns_lock());
        BOOST_TEST(second.owns_lock());
        co_await first.release();
        auto third = co_await a.acquire(fresh_key("lim"));
        BOOST_TEST(third.owns_lock());
    });
}

BOOST_DATA_TEST_CASE(bad_requests_fail_alone_and_say_why, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto held = co_await a.acquire(fresh_key("bystander"));
        struct bad {
            std::string key;
            lmx::acquire_options o;
            std::string says;
        };
        std::vector<bad> cases;
        cases.push_back({std::string("bad\xff\xfe", 5), {.wait = false}, "UTF-8"});
        cases.push_back({std::string(70000, 'k'), {}, "limit"});
        cases.push_back({"", {}, "empty"});
        cases.push_back({"k", {.ttl = 0ms}, "ttl"});
        cases.push_back({"k", {.ttl = -5ms}, "ttl"});
        cases.push_back({"k", {.max = 0}, "max"});
        cases.push_back({"k", {.timeout = -1ms}, "timeout"});
        for (auto& c : cases) {
            lmx::diagnostics diag;
            c.o.diag = &diag;
            const auto t0 = steady::now();
            auto [ec, g] = co_await a.acquire(c.key, c.o, tuple);
            BOOST_TEST(ec == errc::bad_request, ec.message());
            BOOST_TEST((ec == std::errc::invalid_argument));
            BOOST_TEST(ms_since(t0) < 500);
            BOOST_TEST(diag.message.find(c.says) != std::string::npos, "diagnostics: '" << diag.message << "'");
        }
        BOOST_TEST(held.owns_lock());
        BOOST_TEST(!held.lost());
        co_await a.ping();
        co_await held.release();
    });
}

// wait_forever waits past every default budget; timeout 0 is a try-lock.
BOOST_AUTO_TEST_CASE(wait_forever_and_zero_timeout) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        auto o = options_for(b.url("tcp"));
        o.lock_request_timeout = 100ms;
        o.max_retries = 1;  // the default budget: 200 ms
        lmx::client a(ex, o);
        lmx::client holder(ex, o);
        auto key = fresh_key("forever");
        auto held = co_await holder.acquire(key);
        auto [ec0, g0] = co_await a.acquire(key, {.timeout = 0ms}, tuple);
        BOOST_TEST(ec0 == errc::would_block, ec0.message());
        auto [ec1, g1] = co_await a.acquire(key, {}, tuple);
        BOOST_TEST(ec1 == errc::timeout, ec1.message());
        BOOST_TEST((ec1 == std::errc::timed_out));
        bool granted = false;
        lmx::lock_guard mine;
        a.acquire(key, {.timeout = lmx::wait_forever}, [&](error_code ec, lmx::lock_guard g) {
            BOOST_TEST(!ec, ec.message());
            mine = std::move(g);
            granted = true;
        });
        co_await sleep_for(1000ms);
        BOOST_TEST(!granted);
        co_await held.release();
        auto deadline = steady::now() + 2s;
        while (!granted && steady::now() < deadline) co_await sleep_for(10ms);
        BOOST_TEST(mine.owns_lock());
    });
}

// Connect failures are told apart: nothing listening, a name that does not resolve, a peer that
// does not speak lmx's protocol.
BOOST_AUTO_TEST_CASE(connect_failures_are_told_apart) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        // A port nobody listens on.
        asio::ip::tcp::acceptor probe(ex, {asio::ip::make_address("127.0.0.1"), 0});
        const auto free_port = probe.local_endpoint().port();
        probe.close();
        lmx::client refused(ex, options_for("tcp://127.0.0.1:" + std::to_string(free_port)));
        auto [ec] = co_await refused.connect(tuple);
        BOOST_TEST(ec == errc::refused, ec.message());
        BOOST_TEST((ec == std::errc::connection_refused));

        lmx::client unresolved(ex, options_for("tcp://lmx-test-host.invalid:6970"));
        std::tie(ec) = co_await unresolved.connect(tuple);
        BOOST_TEST(ec == errc::name_not_resolved, ec.message());

        // tcp:// pointed at the broker's WebSocket port.
        auto ws = b.url("ws");
        auto hostport = ws.substr(5, ws.find('/', 5) - 5);
        lmx::client wrong(ex, options_for("tcp://" + hostport));
        const auto t0 = steady::now();
        std::tie(ec) = co_await wrong.connect(tuple);
        BOOST_TEST(ec == errc::wrong_endpoint, ec.message());
        BOOST_TEST(ms_since(t0) < 3000);
    });
}

// The multi-key guard has what the single one has: extend, detach, a lease deadline.
BOOST_DATA_TEST_CASE(multi_guard_extend_and_detach, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        const auto k1 = fresh_key("mx"), k2 = fresh_key("my");
        auto m = co_await a.acquire_many({k1, k2}, {.ttl = 400ms});
        BOOST_REQUIRE(m.expires_at().has_value());
        const auto before = *m.expires_at();
        co_await m.extend(5000ms);
        BOOST_TEST((*m.expires_at() > before + 1000ms));
        co_await sleep_for(700ms);  // past the first lease
        BOOST_TEST(m.owns_lock());
        auto info = co_await other.info(k2);
        BOOST_TEST(info.holders == std::vector<std::string>{m.id()});
        const auto id = m.id();
        m.detach();
        BOOST_TEST(!m.owns_lock());
        m = lmx::multi_lock_guard{};  // destroying a detached guard releases nothing
        co_await a.ping();            // behind anything the destruction would have sent on a's connection
        info = co_await other.info(k1);
        BOOST_TEST(info.holders == std::vector<std::string>{id});
        co_await other.force_release(k1);
        co_await other.force_release(k2);
    });
}

BOOST_AUTO_TEST_SUITE_END()
