// A client's life while many threads use it: close() from a thread of its own and destruction
// while requests are in flight, and reconnecting when the broker is killed and restarted under
// the workers' feet. Every operation completes once, with success or the error the docs name.

#include "tsan_fixture.hpp"

#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <array>
#include <csignal>
#include <map>

namespace bdata = boost::unit_test::data;
using namespace lmx::tsan;
using lmx::errc;
using lmx::error_code;

// Named, not anonymous: the data test cases below are templates that capture these types.
namespace tsan_lifecycle {

// What the workers of the close test share.
struct close_state {
    std::string held_key = fresh_key("close-held");
    completions done;
    std::atomic<bool> closed{false};
    std::atomic<int> granted{0}, after_close{0};
    std::mutex kept_mutex;
    std::vector<lmx::lock_guard> kept;  // granted before the close

    void keep(lmx::lock_guard g) {
        std::lock_guard lock(kept_mutex);
        kept.push_back(std::move(g));
    }
};

// A request that waits behind the holder of `held_key` until the close ends it.
void queue_behind_holder(lmx::client& c, close_state& s, failures& f) {
    auto once = s.done.start();
    c.acquire(s.held_key, {.timeout = 30s}, [&s, &f, once](error_code ec, lmx::lock_guard g) {
        s.done.done(*once);
        f.check(ec == errc::closed, "a request waiting at the close ended with " + ec.message());
        f.check(!g.owns_lock(), "a request waiting at the close owns a lock");
    });
}

void close_thread_worker(lmx::client& c, close_state& s, failures& f) {
    for (int i = 0; i < 500; ++i) {
        // Read before the calls: when set, they are made after close() returned and must fail.
        const bool after = s.closed;
        queue_behind_holder(c, s, f);
        auto [ec, g] = wait(c.acquire(fresh_key("close-free"), future_tuple));
        if (!ec) {
            ++s.granted;
            s.keep(std::move(g));
        }
        f.check(!ec || ec == errc::closed, "an acquire ended with " + ec.message());
        auto [ec2, info] = wait(c.info(s.held_key, future_tuple));
        f.check(!ec2 || ec2 == errc::closed, "an info ended with " + ec2.message());
        if (after) {
            f.check(ec == errc::closed && ec2 == errc::closed, "a call made after close() did not fail with closed");
            ++s.after_close;
            return;
        }
    }
    f.add("a worker never saw the close");
}

asio::awaitable<void> close_coroutine_worker(lmx::client& c, close_state& s, failures& f) {
    for (int i = 0; i < 500; ++i) {
        const bool after = s.closed;
        queue_behind_holder(c, s, f);
        auto once = s.done.start();
        std::vector<std::string> keys{s.held_key, fresh_key("close-many")};  // a braced list here trips GCC 12
        c.acquire_many(std::move(keys), {.timeout = 30s}, [&s, &f, once](error_code ec, lmx::multi_lock_guard m) {
            s.done.done(*once);
            f.check(ec == errc::closed, "an acquire_many waiting at the close ended with " + ec.message());
            f.check(!m.owns_lock(), "an acquire_many waiting at the close owns its locks");
        });
        auto [ec, g] = co_await c.acquire(fresh_key("close-free"), {}, tuple);
        if (!ec) {
            ++s.granted;
            s.keep(std::move(g));
        }
        f.check(!ec || ec == errc::closed, "an acquire ended with " + ec.message());
        auto [ec2, rtt] = co_await c.ping(tuple);
        f.check(!ec2 || ec2 == errc::closed, "a ping ended with " + ec2.message());
        if (after) {
            f.check(ec == errc::closed && ec2 == errc::closed, "a call made after close() did not fail with closed");
            ++s.after_close;
            co_return;
        }
    }
    f.add("a worker never saw the close");
}

// Holders of one key whose holds may be lost with the broker that granted them: a new holder
// may overlap one whose hold is lost, never a live one.
class holder_table {
public:
    void enter(int who, const lmx::lock_guard& g) {
        std::lock_guard lock(mutex_);
        for (auto& [other, guard] : inside_)
            if (!guard->lost()) ++overlaps_;
        inside_[who] = &g;
    }
    void leave(int who) {
        std::lock_guard lock(mutex_);
        inside_.erase(who);
    }
    int overlaps() const { return overlaps_; }

private:
    std::mutex mutex_;
    std::map<int, const lmx::lock_guard*> inside_;
    std::atomic<int> overlaps_{0};
};

struct restart_state {
    std::string key = fresh_key("restart");
    holder_table table;
    std::atomic<int> phase{1};  // n: the n-th broker is up (or about to be)
    std::atomic<bool> stop{false};
    std::atomic<int> transient{0};
    std::array<std::array<std::atomic<int>, 8>, 8> successes{};  // [worker][phase]

    bool everyone_succeeded(int in_phase, int workers, int times) const {
        for (int w = 0; w < workers; ++w)
            if (successes[static_cast<std::size_t>(w)][static_cast<std::size_t>(in_phase)] < times) return false;
        return true;
    }
};

// The errors a call may meet while the broker is killed or stopped, and restarted.
bool transient(error_code ec) {
    return ec == errc::connection_lost || ec == errc::unreachable || ec == errc::refused || ec == errc::shutting_down;
}

void note(restart_state& s, failures& f, error_code ec, std::string_view what) {
    if (transient(ec))
        ++s.transient;
    else
        f.add(std::string(what) + " ended with " + ec.message());
}

asio::awaitable<void> restart_coroutine_worker(lmx::client& c, restart_state& s, failures& f, int who) {
    while (!s.stop) {
        const int phase = s.phase;
        auto [ec, g] = co_await c.acquire(s.key, {.timeout = 20s}, tuple);
        if (ec) {
            note(s, f, ec, "an acquire");
            co_await sleep_for(2ms);
            continue;
        }
        s.table.enter(who, g);
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        s.table.leave(who);
        if (who % 2) {
            auto [ec2] = co_await g.release(tuple);
            // A hold that ended with its broker cannot be released; the unlock may also meet the loss.
            if (ec2 && ec2 != errc::lock_lost) note(s, f, ec2, "a release");
        }
        ++s.successes[static_cast<std::size_t>(who)][static_cast<std::size_t>(phase)];
        auto [ec3, info] = co_await c.info(s.key, tuple);
        if (ec3) note(s, f, ec3, "an info");
    }
}

void restart_thread_worker(lmx::client& c, restart_state& s, failures& f, int who) {
    while (!s.stop) {
        const int phase = s.phase;
        auto [ec, g] = wait(c.acquire(s.key, {.timeout = 20s}, future_tuple));
        if (ec) {
            note(s, f, ec, "an acquire");
            std::this_thread::sleep_for(2ms);
            continue;
        }
        s.table.enter(who, g);
        std::this_thread::yield();
        s.table.leave(who);
        auto [ec2] = wait(g.release(future_tuple));
        if (ec2 && ec2 != errc::lock_lost) note(s, f, ec2, "a release");
        ++s.successes[static_cast<std::size_t>(who)][static_cast<std::size_t>(phase)];
        auto [ec3, rtt] = wait(c.ping(future_tuple));
        if (ec3) note(s, f, ec3, "a ping");
    }
}

}  // namespace tsan_lifecycle

using namespace tsan_lifecycle;

BOOST_AUTO_TEST_SUITE(tsan_lifecycle_test)

BOOST_DATA_TEST_CASE(close_while_operations_are_in_flight, bdata::make(transports), kind) {
    broker_process b;
    failures f;
    runner pool(f);
    close_state s;
    constexpr int threads = 3, coroutines = 3;
    {
        reaper rp;
        lmx::client holder(pool.executor(), options_for(b.url("unix")));
        auto held = wait(holder.acquire(s.held_key, asio::use_future));
        {
            lmx::client c(pool.executor(), options_for(b.url(kind)));
            wait(c.connect(asio::use_future));
            {
                crew workers(f);
                for (int t = 0; t < threads; ++t) workers.thread([&] { close_thread_worker(c, s, f); });
                for (int k = 0; k < coroutines; ++k) workers.spawn(pool.executor(), close_coroutine_worker(c, s, f));
                // Close once some locks were granted, requests wait at the broker and others are on
                // the wire, from a thread that neither runs the io_context nor made a call.
                BOOST_TEST(wait_until([&] { return s.granted >= 3; }, 10s));
                auto info = wait_info(holder, s.held_key, [](auto& i) { return i.waiters >= 6u; });
                BOOST_TEST(info.waiters >= 6u);
                std::thread closer([&] {
                    c.close();
                    s.closed = true;
                });
                closer.join();
                BOOST_TEST_REQUIRE(workers.wait(60s), "workers still running after the close");
            }
            BOOST_TEST(s.done.wait_all(10s));
            BOOST_TEST(s.done.completed() == s.done.started());
            BOOST_TEST(s.done.repeated() == 0);
            BOOST_TEST(s.after_close == threads + coroutines);
            BOOST_TEST(s.granted > 0);
            auto [ec, rtt] = wait(c.ping(future_tuple));
            BOOST_TEST(ec == errc::closed, ec.message());
            // The holds of the closed connection ended with it; their guards know, on any thread.
            for (auto& g : s.kept) {
                BOOST_TEST(!g.owns_lock());
                BOOST_TEST(g.lost());
                rp.take(std::move(g));
            }
        }
        // The broker dropped every request of the closed connection.
        auto info = wait_info(holder, s.held_key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info.waiters == 0u);
        BOOST_TEST(info.holders == std::vector<std::string>{held.id()});
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

// The client is destroyed on a thread of its own while requests from other threads still wait;
// a guard it granted outlives it and dies on yet another thread.
BOOST_DATA_TEST_CASE(destroyed_while_operations_are_in_flight, bdata::make(transports), kind) {
    broker_process b;
    failures f;
    runner pool(f);
    completions done;
    const auto key = fresh_key("destroyed");
    constexpr int threads = 3, per_thread = 5;
    {
        reaper rp;
        lmx::client holder(pool.executor(), options_for(b.url("tcp")));
        auto held = wait(holder.acquire(key, asio::use_future));
        auto c = std::make_unique<lmx::client>(pool.executor(), options_for(b.url(kind)));
        auto survivor = wait(c->acquire(fresh_key("survivor"), asio::use_future));
        std::atomic<int> closed_waits{0};
        {
            crew workers(f);
            for (int t = 0; t < threads; ++t)
                workers.thread([&] {
                    for (int i = 0; i < per_thread; ++i) {
                        auto once = done.start();
                        c->acquire(key, {.timeout = 30s}, [&, once](error_code ec, lmx::lock_guard g) {
                            done.done(*once);
                            f.check(ec == errc::closed,
                                    "a request waiting at the destruction ended with " + ec.message());
                            f.check(!g.owns_lock(), "a request waiting at the destruction owns a lock");
                            if (ec == errc::closed) ++closed_waits;
                        });
                        auto once2 = done.start();
                        c->info(key, [&, once2](error_code ec, lmx::lock_info) {
                            done.done(*once2);
                            f.check(!ec || ec == errc::closed, "an info ended with " + ec.message());
                        });
                    }
                });
            BOOST_TEST_REQUIRE(workers.wait(30s));
        }
        auto info = wait_info(holder, key, [](auto& i) { return i.waiters == unsigned{threads * per_thread}; });
        BOOST_TEST(info.waiters == unsigned{threads * per_thread});
        std::thread([&] { c.reset(); }).join();
        BOOST_TEST(done.wait_all(10s));
        BOOST_TEST(done.completed() == done.started());
        BOOST_TEST(done.repeated() == 0);
        BOOST_TEST(closed_waits == threads * per_thread);
        BOOST_TEST(!survivor.owns_lock());
        BOOST_TEST(survivor.lost());
        auto [ec] = wait(survivor.release(future_tuple));
        BOOST_TEST((ec == errc::closed || ec == errc::lock_lost), ec.message());
        rp.take(std::move(survivor));
        auto after = wait_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(after.waiters == 0u);
        BOOST_TEST(after.holders == std::vector<std::string>{held.id()});
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

// The broker goes away under the workers' feet three times (killed, stopped, killed) and comes
// back on the same path; the workers carry on through one client.
BOOST_AUTO_TEST_CASE(reconnects_after_the_broker_is_killed) {
    lmx::test::temp_dir dir;
    const auto path = dir.path() + "/lmx.sock";
    const lmx::test::broker_config cfg{.tcp = false,
                                       .unix_socket = true,
                                       .websocket = false,
                                       .extra_args = {},
                                       .state_dir = {},
                                       .unix_path = path,
                                       .env = {}};
    auto broker = std::make_unique<broker_process>(cfg);
    failures f;
    runner pool(f);
    restart_state s;
    constexpr int coroutines = 4, threads = 2, workers_count = coroutines + threads, restarts = 3;
    {
        reaper rp;
        lmx::client c(pool.executor(), options_for("unix://" + path));
        auto doomed = wait(c.acquire(fresh_key("doomed"), asio::use_future));
        auto kept = wait(c.acquire(fresh_key("kept"), {.keep_locks_on_exit = true}, asio::use_future));
        {
            crew workers(f);
            for (int w = 0; w < coroutines; ++w) {
                auto ex = w % 2 ? asio::any_io_executor(asio::make_strand(pool.executor())) : pool.executor();
                workers.spawn(ex, restart_coroutine_worker(c, s, f, w));
            }
            for (int w = coroutines; w < workers_count; ++w)
                workers.thread([&, w] { restart_thread_worker(c, s, f, w); });
            for (int phase = 1; phase <= restarts; ++phase) {
                BOOST_TEST_REQUIRE(wait_until([&] { return s.everyone_succeeded(phase, workers_count, 3); }, 30s),
                                   "not every worker got a lock from broker " << phase);
                const int sig = phase == 2 ? SIGTERM : SIGKILL;
                BOOST_TEST(broker->stop(sig) >= 0);
                broker.reset();
                if (phase == 1) {
                    // The connection's holds end with it, as seen from this thread.
                    BOOST_TEST(wait_until([&] { return doomed.lost(); }, 5s));
                    BOOST_TEST(!doomed.owns_lock());
                    BOOST_TEST(!kept.lost());  // a keep-on-exit hold may live on at a broker
                }
                std::this_thread::sleep_for(200ms);  // calls meanwhile fail with unreachable
                s.phase = phase + 1;
                broker = std::make_unique<broker_process>(cfg);
            }
            BOOST_TEST(wait_until([&] { return s.everyone_succeeded(restarts + 1, workers_count, 3); }, 30s),
                       "not every worker got a lock from the last broker");
            s.stop = true;
            BOOST_TEST_REQUIRE(workers.wait(60s), "workers still running");
            BOOST_TEST(s.table.overlaps() == 0);
            BOOST_TEST(s.transient > 0);  // the kill was noticed
            auto info = wait_info(c, s.key, is_free);
            BOOST_TEST(is_free(info), info.holders.size() << " holders, " << info.waiters << " waiters");
            rp.take(std::move(doomed));
            kept.detach();
        }
    }
    BOOST_TEST(pool.finish(), "work was left on the io_context after every client was destroyed");
    BOOST_TEST(f.count() == 0u, f.summary());
}

BOOST_AUTO_TEST_SUITE_END()
