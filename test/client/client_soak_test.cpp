// A randomized soak of the request path: many workers on three clients take and give back locks
// with every kind of ending at once (confirmed release, guard drop, fire-and-forget release,
// try-lock refusals, broker-side timeouts, cancellation by a racing timer, atomic multi-key
// holds, reader locks). Throughout, the holders the process sees must respect each key's bound,
// and fencing tokens of the mutex must rise; at the end the broker must hold nothing: no
// withdrawn request left in line and no grant that crossed a withdrawal left held.
//
// The seed is printed; LMX_SOAK_SEED=N replays one.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <array>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <variant>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using namespace boost::asio::experimental::awaitable_operators;
using lmx::errc;
using lmx::error_code;

// Named, not anonymous: the test case's coroutine frame holds these types.
namespace client_soak {

constexpr auto tuple_token = asio::as_tuple(asio::use_awaitable);

struct key_state {
    std::string name;
    std::uint32_t max = 1;
    bool check_tokens = false;  // every grant exclusive: tokens must rise in grant order
    int exclusive = 0;          // holders in this process, by mode
    int shared = 0;
    lmx::fencing_token last_token = 0;
};

struct soak {
    std::array<key_state, 3> keys;  // a mutex, a semaphore of 2, a key with reader locks
    std::map<std::string, int> outcomes;
    int violations = 0;
    std::mt19937 rng;

    explicit soak(unsigned seed) : rng(seed) {
        keys[0] = {fresh_key("soak-mutex"), 1, true};
        keys[1] = {fresh_key("soak-sem"), 2};
        keys[2] = {fresh_key("soak-rw"), 1};
    }

    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }

    void taken(key_state& k, bool shared_mode, lmx::fencing_token token) {
        (shared_mode ? k.shared : k.exclusive) += 1;
        const bool bound_kept =
            shared_mode ? k.exclusive == 0 : (k.exclusive <= static_cast<int>(k.max) && k.shared == 0);
        if (!bound_kept) {
            ++violations;
            BOOST_ERROR("key " << k.name << " held " << k.exclusive << " exclusive and " << k.shared << " shared");
        }
        if (k.check_tokens) {
            if (token <= k.last_token) {
                ++violations;
                BOOST_ERROR("key " << k.name << ": fencing token " << token << " after " << k.last_token);
            }
            k.last_token = token;
        }
    }
    void given_back(key_state& k, bool shared_mode) { (shared_mode ? k.shared : k.exclusive) -= 1; }
};

std::string outcome(error_code ec) {
    if (!ec) return "granted";
    if (ec == errc::would_block) return "would_block";
    if (ec == errc::timeout) return "timeout";
    if (ec == errc::cancelled) return "cancelled";
    return ec.message();
}

asio::awaitable<void> pause(std::mt19937& rng) {
    const int us =
        std::uniform_int_distribution<int>(0, 3)(rng) == 0 ? 0 : std::uniform_int_distribution<int>(0, 1500)(rng);
    if (us == 0) co_return;
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::microseconds(us));
    co_await t.async_wait(tuple_token);
}

// Ends a hold in one of the three ways a program can.
asio::awaitable<void> give_back(soak& s, lmx::lock_guard g) {
    switch (s.pick(3)) {
        case 0: {
            auto [ec] = co_await g.release(tuple_token);
            BOOST_TEST(!ec, "release: " << ec.message());
            break;
        }
        case 1: g = lmx::lock_guard(); break;  // the guard's drop queues the unlock
        default: g.release([](error_code) {}); break;
    }
}

asio::awaitable<void> worker(soak& s, lmx::client& c, int iterations) {
    auto ex = co_await asio::this_coro::executor;
    for (int i = 0; i < iterations; ++i) {
        const int which = s.pick(3);
        key_state& k = s.keys[which];
        const bool shared_mode = which == 2 && s.pick(2) == 0;
        // A long lease: a hold leaked by the client must still be there at the end, not expire.
        lmx::acquire_options o{.ttl = 60s, .max = k.max, .shared = shared_mode};
        const int how = s.pick(10);
        if (how == 0) {
            // Both mutex-like keys at once, all or nothing.
            lmx::acquire_options many{.ttl = 60s, .timeout = std::chrono::milliseconds(5 + s.pick(30))};
            std::vector<std::string> both{s.keys[0].name, s.keys[2].name};
            auto [ec, g] = co_await c.acquire_many(std::move(both), many, tuple_token);
            s.outcomes["many:" + outcome(ec)]++;
            if (ec) {
                BOOST_TEST((ec == errc::timeout), ec.message());
                continue;
            }
            s.taken(s.keys[0], false, g.fencing_token(s.keys[0].name));
            s.taken(s.keys[2], false, 0);
            co_await pause(s.rng);
            s.given_back(s.keys[0], false);
            s.given_back(s.keys[2], false);
            if (s.pick(2)) co_await g.release(tuple_token);
            continue;
        }
        std::tuple<error_code, lmx::lock_guard> got;
        if (how <= 2) {
            o.wait = false;  // try-lock
            got = co_await c.acquire(k.name, o, tuple_token);
        } else if (how <= 4) {
            o.timeout = std::chrono::milliseconds(1 + s.pick(20));  // withdrawn by the broker
            got = co_await c.acquire(k.name, o, tuple_token);
        } else if (how <= 6) {
            // Withdrawn by the caller: a timer races the grant.
            asio::steady_timer t(ex, std::chrono::microseconds(s.pick(4000)));
            auto acquiring = c.acquire(k.name, o, tuple_token);
            auto waiting = t.async_wait(tuple_token);
            auto r = co_await (std::move(acquiring) || std::move(waiting));
            if (r.index() == 0)
                got = std::move(std::get<0>(r));
            else
                got = {make_error_code(errc::cancelled), lmx::lock_guard()};
        } else {
            got = co_await c.acquire(k.name, o, tuple_token);
        }
        auto& [ec, g] = got;
        s.outcomes[outcome(ec)]++;
        if (ec) {
            BOOST_TEST((ec == errc::would_block || ec == errc::timeout || ec == errc::cancelled), ec.message());
            BOOST_TEST(!g.owns_lock());
            continue;
        }
        BOOST_TEST(g.owns_lock());
        s.taken(k, shared_mode, g.fencing_token());
        co_await pause(s.rng);
        s.given_back(k, shared_mode);
        co_await give_back(s, std::move(g));
    }
}

}  // namespace client_soak

using namespace client_soak;

BOOST_AUTO_TEST_SUITE(client_soak_test)

BOOST_DATA_TEST_CASE(random_endings_keep_every_bound_and_leak_nothing, bdata::make(client_transports), kind) {
    unsigned seed = std::random_device{}();
    if (const char* forced = std::getenv("LMX_SOAK_SEED"))
        seed = static_cast<unsigned>(std::strtoul(forced, nullptr, 10));
    BOOST_TEST_MESSAGE("soak over " << kind << ", LMX_SOAK_SEED=" << seed);
    broker_process b;
    soak s(seed);
    run(
        [&](asio::any_io_executor ex) -> asio::awaitable<void> {
            std::vector<std::unique_ptr<lmx::client>> clients;
            for (int i = 0; i < 3; ++i) clients.push_back(std::make_unique<lmx::client>(ex, options_for(b.url(kind))));
            constexpr int workers_per_client = 6, iterations = 400;
            int running = 0;
            for (auto& c : clients)
                for (int w = 0; w < workers_per_client; ++w) {
                    ++running;
                    asio::co_spawn(ex, worker(s, *c, iterations), [&](std::exception_ptr e) {
                        --running;
                        if (e) {
                            ++s.violations;
                            try {
                                std::rethrow_exception(e);
                            } catch (const std::exception& x) {
                                BOOST_ERROR("worker failed: " << x.what());
                            }
                        }
                    });
                }
            auto deadline = steady::now() + 90s;
            while (running > 0 && steady::now() < deadline) co_await sleep_for(20ms);
            BOOST_TEST_REQUIRE(running == 0, "workers still running after 90 s");
            BOOST_TEST(s.violations == 0);
            for (auto& [what, n] : s.outcomes) BOOST_TEST_MESSAGE("  " << what << ": " << n);
            BOOST_TEST(s.outcomes["granted"] > 0);
            BOOST_TEST(s.outcomes["many:granted"] > 0);
            BOOST_TEST(s.outcomes["cancelled"] > 0);
            BOOST_TEST(s.outcomes["timeout"] > 0);
            BOOST_TEST(s.outcomes["would_block"] > 0);

            // Nothing is left at the broker: no hold, no request in line.
            lmx::client observer(ex, options_for(b.url(kind)));
            for (auto& k : s.keys) {
                auto info = co_await poll_info(observer, k.name, is_free);
                BOOST_TEST(is_free(info),
                           k.name << ": " << info.holders.size() << " holders, " << info.waiters << " waiters");
            }
            // And every client is still in good health.
            for (auto& c : clients) {
                auto g = co_await c->acquire(s.keys[0].name, {.wait = false});
                BOOST_TEST(g.owns_lock());
                co_await g.release();
            }
        },
        120s);
}

BOOST_AUTO_TEST_SUITE_END()
