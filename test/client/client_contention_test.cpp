// Contention: two clients on one key, FIFO order within one client and across clients, and
// acquires issued from four threads at once on a client whose io_context runs on two threads.

#include "client_fixture.hpp"

#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <mutex>
#include <thread>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using lmx::errc;
using lmx::error_code;

BOOST_AUTO_TEST_SUITE(client_contention_test)

BOOST_DATA_TEST_CASE(two_clients_hand_over, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client c(ex, options_for(b.url(kind)));
        auto key = fresh_key("handover");
        auto first = co_await a.acquire(key);
        bool granted = false;
        lmx::lock_guard second;
        c.acquire(key, [&](error_code ec, lmx::lock_guard g) {
            BOOST_TEST(!ec, ec.message());
            second = std::move(g);
            granted = true;
        });
        auto info1 = co_await poll_info(a, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(info1.waiters == 1u);
        co_await sleep_for(100ms);
        BOOST_TEST(!granted);  // still waiting while a holds
        auto token = first.fencing_token();
        first = {};
        auto deadline = steady::now() + 3s;
        while (!granted && steady::now() < deadline) co_await sleep_for(2ms);
        BOOST_TEST(granted);
        BOOST_TEST(second.owns_lock());
        BOOST_TEST(second.fencing_token() > token);
        auto info2 = co_await a.info(key);
        BOOST_TEST(info2.holders == std::vector<std::string>{second.id()});
    });
}

BOOST_DATA_TEST_CASE(on_queued_reports_the_place_in_line, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client c(ex, options_for(b.url(kind)));
        auto key = fresh_key("queued");
        auto held = co_await a.acquire(key, {.ttl = {}, .max = {}, .wait = false});  // free: no notice
        std::vector<std::uint32_t> first_seen, second_seen;
        int granted = 0;
        lmx::acquire_options o1;
        o1.on_queued = [&](std::uint32_t pos) { first_seen.push_back(pos); };
        lmx::acquire_options o2;
        o2.on_queued = [&](std::uint32_t pos) { second_seen.push_back(pos); };
        std::vector<lmx::lock_guard> guards;
        auto keep = [&](error_code ec, lmx::lock_guard g) {
            BOOST_TEST(!ec, ec.message());
            guards.push_back(std::move(g));
            ++granted;
        };
        c.acquire(key, o1, keep);
        co_await poll_info(a, key, [](auto& i) { return i.waiters == 1; });
        c.acquire(key, o2, keep);
        co_await poll_info(a, key, [](auto& i) { return i.waiters == 2; });
        co_await sleep_for(50ms);
        BOOST_TEST(first_seen == std::vector<std::uint32_t>{1});
        BOOST_TEST(second_seen == std::vector<std::uint32_t>{2});
        held = {};
        auto deadline = steady::now() + 3s;
        while (granted < 1 && steady::now() < deadline) co_await sleep_for(2ms);
        guards.clear();
        while (granted < 2 && steady::now() < deadline) co_await sleep_for(2ms);
        BOOST_TEST(granted == 2);
        guards.clear();
    });
}

// on_queued may close the client it was called by: the callback and what it captured stay valid
// until it returns, and the acquire then fails with `closed`.
BOOST_DATA_TEST_CASE(on_queued_may_close_the_client, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto c = std::make_unique<lmx::client>(ex, options_for(b.url(kind)));
        auto key = fresh_key("queued-close");
        auto held = co_await a.acquire(key);
        std::string seen;  // written after close() returns, through the callback's own capture
        bool done = false;
        error_code result;
        lmx::acquire_options o;
        auto label = std::make_shared<std::string>("queued at ");
        o.on_queued = [&, c = c.get(), label](std::uint32_t pos) {
            c->close();
            seen = *label + std::to_string(pos);
        };
        c->acquire(key, o, [&](error_code ec, lmx::lock_guard) {
            result = ec;
            done = true;
        });
        auto deadline = steady::now() + 3s;
        while (!done && steady::now() < deadline) co_await sleep_for(2ms);
        BOOST_TEST(done);
        BOOST_TEST(seen == "queued at 1");
        BOOST_TEST(result == errc::closed, result.message());
        auto info = co_await poll_info(a, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(info.waiters == 0u);  // the closed connection took its waiting request along
        co_await held.release();
    });
}

BOOST_DATA_TEST_CASE(fifo_within_one_client, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("fifo1");
        auto first = co_await a.acquire(key);
        std::vector<int> order;
        constexpr int n = 6;
        for (int i = 0; i < n; ++i) {
            a.acquire(key, [&, i](error_code ec, lmx::lock_guard g) {
                BOOST_TEST(!ec, ec.message());
                order.push_back(i);
                g = {};  // hands the key to the next in line
            });
        }
        auto info3 = co_await poll_info(a, key, [&](auto& i) { return i.waiters == unsigned(n); });
        BOOST_TEST(info3.waiters == unsigned(n));
        first = {};
        auto deadline = steady::now() + 5s;
        while (order.size() < std::size_t(n) && steady::now() < deadline) co_await sleep_for(2ms);
        BOOST_TEST(order == (std::vector<int>{0, 1, 2, 3, 4, 5}));
        auto info4 = co_await poll_info(a, key, is_free);
        BOOST_TEST(is_free(info4));
    });
}

BOOST_DATA_TEST_CASE(fifo_across_clients, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client holder(ex, options_for(b.url(kind)));
        std::vector<std::unique_ptr<lmx::client>> clients;
        for (int i = 0; i < 4; ++i) clients.push_back(std::make_unique<lmx::client>(ex, options_for(b.url(kind))));
        for (auto& c : clients) co_await c->connect();
        auto key = fresh_key("fifo");
        auto first = co_await holder.acquire(key);
        std::vector<int> order;
        for (int i = 0; i < 4; ++i) {
            clients[i]->acquire(key, [&, i](error_code ec, lmx::lock_guard) {
                BOOST_TEST(!ec, ec.message());
                order.push_back(i);
            });
            // Each waits for the previous to be in line, so the arrival order is known.
            co_await poll_info(holder, key, [&](auto& info) { return info.waiters == unsigned(i + 1); });
        }
        first = {};
        auto deadline = steady::now() + 5s;
        while (order.size() < 4 && steady::now() < deadline) co_await sleep_for(2ms);
        BOOST_TEST(order == (std::vector<int>{0, 1, 2, 3}));
    });
}

// The client may be called from any thread; everything it does runs on its strand.
BOOST_DATA_TEST_CASE(acquires_from_four_threads, bdata::make(client_transports), kind) {
    broker_process b;
    asio::thread_pool pool(2);
    {
        lmx::client a(pool.get_executor(), options_for(b.url(kind)));
        lmx::client observer(pool.get_executor(), options_for(b.url(kind)));
        auto key = fresh_key("threads");
        auto semaphore = fresh_key("threads-sem");
        std::atomic<int> inside{0}, most{0}, done{0};
        std::atomic<int> sem_inside{0}, sem_most{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&, t] {
                for (int i = 0; i < 15; ++i) {
                    auto g = a.acquire(key, asio::use_future).get();
                    int now = ++inside;
                    most = std::max(most.load(), now);
                    std::this_thread::sleep_for(std::chrono::microseconds(200));
                    --inside;
                    if ((i + t) % 2)
                        g.release(asio::use_future).get();
                    else
                        g = {};  // the destructor path, from a foreign thread
                    auto s = a.acquire(semaphore, {.max = 2}, asio::use_future).get();
                    int in_sem = ++sem_inside;
                    sem_most = std::max(sem_most.load(), in_sem);
                    std::this_thread::sleep_for(std::chrono::microseconds(200));
                    --sem_inside;
                }
                ++done;
            });
        }
        for (auto& th : threads) th.join();
        BOOST_TEST(done == 4);
        BOOST_TEST(most == 1);  // a mutex
        BOOST_TEST(sem_most <= 2);
        // Every hold was given back.
        a.ping(asio::use_future).get();
        auto info = observer.info(key, asio::use_future).get();
        BOOST_TEST(info.holders.empty());
        BOOST_TEST(info.waiters == 0u);
        auto sem = observer.info(semaphore, asio::use_future).get();
        BOOST_TEST(sem.holders.empty());
        BOOST_TEST(sem.waiters == 0u);
    }
    pool.join();
}

BOOST_AUTO_TEST_SUITE_END()
