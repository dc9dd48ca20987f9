// The connection's life: lock-lost on ttl expiry, the broker killed mid-hold, reconnecting to a
// restarted broker, unreachable and invalid URLs, and a peer that is not an lmx broker.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/buffers_iterator.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <lmx/core/protocol.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <csignal>

namespace bdata = boost::unit_test::data;
using namespace lmx::test;
using lmx::errc;
using lmx::error_code;

namespace {
constexpr auto tuple = asio::as_tuple(asio::use_awaitable);

asio::awaitable<bool> wait_lost(const lmx::lock_guard& g, std::chrono::milliseconds wait = 3s) {
    auto deadline = steady::now() + wait;
    while (!g.lost() && steady::now() < deadline) co_await sleep_for(10ms);
    co_return g.lost();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(client_connection_test)

BOOST_DATA_TEST_CASE(ttl_expiry_sets_lost, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        lmx::client other(ex, options_for(b.url(kind)));
        auto key = fresh_key("ttl");
        auto g = co_await a.acquire(key, {.ttl = 150ms});
        BOOST_TEST(!g.lost());
        auto lost1 = co_await wait_lost(g);
        BOOST_TEST(lost1);
        BOOST_TEST(!g.owns_lock());
        BOOST_TEST(!static_cast<bool>(g));
        auto [ec] = co_await g.release(tuple);
        BOOST_TEST(ec == errc::lock_lost, ec.message());
        std::tie(ec) = co_await g.extend(1s, tuple);
        BOOST_TEST(ec == errc::lock_lost, ec.message());
        // The client counts the lease from before the broker did, so its loss comes first; the
        // broker hands the key on moments later.
        auto next = co_await other.acquire(key, {.timeout = 1s});
        BOOST_TEST(next.owns_lock());
        // The client's default ttl applies when the request names none.
        auto o = options_for(b.url(kind));
        o.ttl = 150ms;
        lmx::client shortlived(ex, o);
        auto g2 = co_await shortlived.acquire(fresh_key("ttl-default"), {.auto_renew = false});
        auto lost2 = co_await wait_lost(g2);
        BOOST_TEST(lost2);
        // Unless told otherwise, a lock that names no ttl is renewed while its guard holds it.
        const auto renewed_key = fresh_key("ttl-renewed");
        auto renewed = co_await shortlived.acquire(renewed_key);
        co_await sleep_for(600ms);
        BOOST_TEST(renewed.owns_lock());
        BOOST_TEST(!renewed.lost());
        auto renewed_info = co_await other.info(renewed_key);
        BOOST_TEST(renewed_info.holders == std::vector<std::string>{renewed.id()});
        co_await renewed.release();
        // no_expiry: the hold outlives any lease.
        auto forever = co_await shortlived.acquire(fresh_key("forever"), {.ttl = lmx::no_expiry});
        co_await sleep_for(400ms);
        BOOST_TEST(!forever.lost());
        BOOST_TEST(forever.owns_lock());
        co_await forever.release();
    });
}

BOOST_DATA_TEST_CASE(broker_killed_mid_hold, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for(b.url(kind)));
        auto key = fresh_key("kill");
        auto g = co_await a.acquire(key);
        auto keep = co_await a.acquire(fresh_key("kept"), {.keep_locks_on_exit = true});
        bool done = false;
        error_code pending_ec;
        a.acquire(key, [&](error_code ec, lmx::lock_guard) {  // queues behind g on the same client
            pending_ec = ec;
            done = true;
        });
        auto info1 = co_await poll_info(a, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(info1.waiters == 1u);
        BOOST_TEST(b.stop(SIGKILL) == 128 + SIGKILL);
        auto deadline = steady::now() + 5s;
        while (!done && steady::now() < deadline) co_await sleep_for(5ms);
        BOOST_TEST(done);
        BOOST_TEST(pending_ec == errc::connection_lost, pending_ec.message());
        BOOST_TEST(g.lost());
        BOOST_TEST(!g.owns_lock());
        // A keep-on-exit hold may outlive the connection at the broker, so it is not called lost.
        BOOST_TEST(!keep.lost());
        keep.detach();
        auto [ec] = co_await g.release(tuple);
        BOOST_TEST(ec == errc::lock_lost, ec.message());
        // No broker any more: the next call tries to reconnect and says so.
        auto [ec2, rtt] = co_await a.ping(tuple);
        BOOST_TEST(ec2 == errc::refused, ec2.message());
    });
}

BOOST_AUTO_TEST_CASE(reconnects_to_a_restarted_broker) {
    temp_dir dir;
    auto path = dir.path() + "/lmx.sock";
    broker_config cfg{.tcp = false,
                      .unix_socket = true,
                      .websocket = false,
                      .extra_args = {},
                      .state_dir = {},
                      .unix_path = path,
                      .env = {}};
    auto first = std::make_unique<broker_process>(cfg);
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client a(ex, options_for("unix://" + path));
        auto key = fresh_key("reconnect");
        auto g = co_await a.acquire(key);
        auto token = g.fencing_token();
        first->stop(SIGTERM);
        first.reset();
        auto lost3 = co_await wait_lost(g);
        BOOST_TEST(lost3);
        // While no broker listens, calls fail fast: the address refuses the connection...
        auto [ec, rtt] = co_await a.ping(tuple);
        BOOST_TEST(ec == errc::refused, ec.message());
        std::tie(ec, rtt) = co_await a.ping(tuple);
        BOOST_TEST(ec == errc::refused, ec.message());
        // ...and once one is back on the same path, the next call reconnects.
        broker_process second(cfg);
        std::tie(ec, rtt) = co_await a.ping(tuple);
        BOOST_TEST(!ec, ec.message());
        auto g2 = co_await a.acquire(key, {.wait = false});
        BOOST_TEST(g2.owns_lock());
        BOOST_TEST(g2.fencing_token() > token);  // tokens never go backwards across a restart
        // A broker that goes away between calls: the call after the loss reconnects directly.
        second.stop(SIGKILL);
        auto lost4 = co_await wait_lost(g2);
        BOOST_TEST(lost4);
        broker_process third(cfg);
        co_await a.connect();
        auto g3 = co_await a.acquire(key, {.wait = false});
        BOOST_TEST(g3.owns_lock());
    });
}

BOOST_AUTO_TEST_CASE(unreachable_and_invalid_urls) {
    temp_dir dir;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client nowhere(ex, options_for("unix://" + dir.path() + "/nobody.sock"));
        auto [ec, g] = co_await nowhere.acquire("k", {}, tuple);
        BOOST_TEST(ec == errc::refused, ec.message());
        lmx::client bad(ex, options_for("smtp://127.0.0.1:25"));
        std::tie(ec) = co_await bad.connect(tuple);
        BOOST_TEST(ec == errc::invalid_url, ec.message());
        try {
            co_await bad.ping();
            BOOST_FAIL("ping over an invalid URL succeeded");
        } catch (const boost::system::system_error& e) {
            BOOST_TEST(e.code() == errc::invalid_url);
        }
    });
}

// A stand-in peer: it accepts one connection, answers its first line with `reply`, ends its
// sending side when `end_sending`, then reads until the client closes.
asio::awaitable<void> answer_first_line(asio::ip::tcp::acceptor& acceptor, std::string reply, bool end_sending) {
    auto socket = co_await acceptor.async_accept(asio::use_awaitable);
    asio::streambuf buf;
    co_await asio::async_read_until(socket, buf, '\n', asio::use_awaitable);
    co_await asio::async_write(socket, asio::buffer(reply), asio::use_awaitable);
    if (end_sending) socket.shutdown(asio::ip::tcp::socket::shutdown_send);
    co_await asio::async_read_until(socket, buf, "never", tuple);
}

// A TCP peer that answers every line with a frame of a protocol it is not: the client must say
// broker_incompatible, promptly.
BOOST_AUTO_TEST_CASE(peer_that_is_not_an_lmx_broker) {
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
        auto port = acceptor.local_endpoint().port();
        asio::co_spawn(
            ex,
            answer_first_line(acceptor,
                              R"({"type":"version-mismatch","versions":{"clientVersion":"?","brokerVersion":"9.9.9"}})"
                              "\n",
                              false),
            asio::detached);
        auto o = options_for("tcp://127.0.0.1:" + std::to_string(port));
        o.connect_timeout = 5s;
        lmx::client a(ex, o);
        auto t0 = steady::now();
        auto [ec] = co_await a.connect(tuple);
        BOOST_TEST(ec == errc::broker_incompatible, ec.message());
        BOOST_TEST(ms_since(t0) < 2000);
        acceptor.close();
    });
}

// A broker that begins to stop after accepting the connection but before serving its hello
// says `shutting_down` (the bytes the broker writes) and closes: the connect fails with that,
// not as if the peer were no lmx broker.
BOOST_AUTO_TEST_CASE(a_broker_stopping_during_the_handshake_is_shutting_down) {
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
        auto port = acceptor.local_endpoint().port();
        std::string notice;
        lmx::core::write_error(notice, "", lmx::core::errc::shutting_down);
        asio::co_spawn(ex, answer_first_line(acceptor, notice, true), asio::detached);
        auto o = options_for("tcp://127.0.0.1:" + std::to_string(port));
        o.connect_timeout = 5s;
        lmx::client a(ex, o);
        auto [ec] = co_await a.connect(tuple);
        BOOST_TEST(ec == errc::shutting_down, ec.message());
        acceptor.close();
    });
}

// A stand-in peer for the handshake: it accepts one connection and answers the hello as an lmx
// broker would after `delay`, or never when `delay` is negative; then it reads until closed.
asio::awaitable<void> slow_hello_peer(asio::ip::tcp::acceptor& acceptor, std::chrono::milliseconds delay) {
    auto socket = co_await acceptor.async_accept(asio::use_awaitable);
    asio::streambuf buf;
    auto [ec, n] = co_await asio::async_read_until(socket, buf, '\n', tuple);
    if (ec) co_return;
    std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + static_cast<std::ptrdiff_t>(n));
    buf.consume(n);
    if (delay.count() >= 0) {
        co_await sleep_for(delay);
        auto hello = boost::json::parse(line).as_object();
        boost::json::object reply{
            {"type", "hello"}, {"uuid", hello.at("uuid")}, {"broker", "fake/0"}, {"protocol", 1}, {"session", "1"}};
        std::string out = boost::json::serialize(reply) + "\n";
        co_await asio::async_write(socket, asio::buffer(out), tuple);
    }
    co_await asio::async_read_until(socket, buf, "never", tuple);
}

// The operation that happens to start a connect may be cancelled; the connect goes on for the
// others waiting for it.
BOOST_AUTO_TEST_CASE(cancelling_the_first_caller_does_not_abort_the_connect) {
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
        asio::co_spawn(ex, slow_hello_peer(acceptor, 300ms), asio::detached);
        lmx::client a(ex, options_for("tcp://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port())));
        asio::cancellation_signal signal;
        bool first_done = false, second_done = false;
        error_code first, second;
        a.connect(asio::bind_cancellation_slot(signal.slot(), [&](error_code ec) {
            first = ec;
            first_done = true;
        }));
        a.connect([&](error_code ec) {
            second = ec;
            second_done = true;
        });
        co_await sleep_for(50ms);
        signal.emit(asio::cancellation_type::terminal);
        auto deadline = steady::now() + 3s;
        while (!(first_done && second_done) && steady::now() < deadline) co_await sleep_for(5ms);
        BOOST_TEST(first == errc::cancelled, first.message());
        BOOST_TEST(!second, second.message());
        acceptor.close();
        a.close();
    });
}

// close() ends a connect that is waiting for the hello, at once rather than at connect_timeout.
BOOST_AUTO_TEST_CASE(close_ends_a_connect_in_progress) {
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
        asio::co_spawn(ex, slow_hello_peer(acceptor, -1ms), asio::detached);
        auto o = options_for("tcp://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()));
        o.connect_timeout = 10s;
        lmx::client a(ex, o);
        bool done = false;
        error_code result;
        a.connect([&](error_code ec) {
            result = ec;
            done = true;
        });
        co_await sleep_for(100ms);
        auto t0 = steady::now();
        a.close();
        while (!done && steady::now() - t0 < 5s) co_await sleep_for(5ms);
        BOOST_TEST(done);
        BOOST_TEST(result == errc::closed, result.message());
        BOOST_TEST(ms_since(t0) < 1000);
        acceptor.close();
    });
}

// A broker that accepts a request and never answers: the call gives up after request_timeout.
BOOST_AUTO_TEST_CASE(request_timeout_bounds_a_silent_broker) {
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
        asio::co_spawn(ex, slow_hello_peer(acceptor, 0ms), asio::detached);
        auto o = options_for("tcp://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()));
        o.request_timeout = 200ms;
        lmx::client a(ex, o);
        co_await a.connect();
        auto t0 = steady::now();
        auto [ec, rtt] = co_await a.ping(tuple);
        BOOST_TEST(ec == errc::timeout, ec.message());
        BOOST_TEST(ms_since(t0) >= 190);
        BOOST_TEST(ms_since(t0) < 2000);
        acceptor.close();
        a.close();
    });
}

// Destroying a client with operations in flight: they fail with `closed`, nothing dangles.
BOOST_DATA_TEST_CASE(client_destroyed_with_operations_in_flight, bdata::make(client_transports), kind) {
    broker_process b;
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client holder(ex, options_for(b.url(kind)));
        auto key = fresh_key("doomed");
        auto held = co_await holder.acquire(key);
        auto a = std::make_unique<lmx::client>(ex, options_for(b.url(kind)));
        auto g = co_await a->acquire(fresh_key("doomed-held"));
        int done = 0;
        error_code waiting, connecting;
        a->acquire(key, [&](error_code ec, lmx::lock_guard) {
            waiting = ec;
            ++done;
        });
        auto info = co_await poll_info(holder, key, [](auto& i) { return i.waiters == 1; });
        BOOST_TEST(info.waiters == 1u);
        auto fresh = std::make_unique<lmx::client>(ex, options_for(b.url(kind)));
        fresh->ping([&](error_code ec, std::chrono::microseconds) {  // still connecting when destroyed
            connecting = ec;
            ++done;
        });
        a.reset();
        fresh.reset();
        auto deadline = steady::now() + 3s;
        while (done < 2 && steady::now() < deadline) co_await sleep_for(5ms);
        BOOST_TEST(done == 2);
        BOOST_TEST(waiting == errc::closed, waiting.message());
        BOOST_TEST(connecting == errc::closed, connecting.message());
        // The guard outlived its client: it says so, and its calls fail cleanly.
        BOOST_TEST(g.lost());
        BOOST_TEST(!g.owns_lock());
        auto [ec] = co_await g.release(tuple);
        BOOST_TEST(ec == errc::lock_lost, ec.message());
        std::tie(ec) = co_await g.extend(1s, tuple);
        BOOST_TEST((ec == errc::closed || ec == errc::lock_lost), ec.message());
        auto gone = co_await poll_info(holder, key, [](auto& i) { return i.waiters == 0; });
        BOOST_TEST(gone.waiters == 0u);
    });
}

BOOST_AUTO_TEST_SUITE_END()
