// lmx::ensure_broker: starts a broker when none answers, reuses one that does, never starts one
// for a remote or invalid URL.

#include "client_fixture.hpp"

#include <lmx/client/ensure_broker.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <csignal>
#include <fstream>
#include <sstream>

#include <unistd.h>

using namespace lmx::test;
using lmx::errc;

namespace {

std::uint16_t unused_port() {
    asio::io_context io;
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
}

// The pid the started broker logged ("broker started (pid N").
int logged_pid(const std::string& log_path) {
    std::ifstream in(log_path);
    std::stringstream ss;
    ss << in.rdbuf();
    auto text = ss.str();
    auto at = text.find("(pid ");
    return at == std::string::npos ? -1 : std::stoi(text.substr(at + 5));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(client_ensure_test)

BOOST_AUTO_TEST_CASE(starts_one_broker_then_reuses_it) {
    temp_dir state;
    lmx::client_options o = options_for("tcp://127.0.0.1:" + std::to_string(unused_port()));
    lmx::ensure_broker_options how{
        .broker_path = lmx_binary(), .state_dir = state.path(), .start_timeout = 20s, .broker_args = {}};

    auto first = lmx::ensure_broker(o, how);
    BOOST_TEST(!first.error, first.message);
    BOOST_TEST(first.started);
    BOOST_TEST(first.log_path.rfind(state.path(), 0) == 0);
    int pid = logged_pid(first.log_path);
    BOOST_TEST_REQUIRE(pid > 0);

    auto second = lmx::ensure_broker(o, how);
    BOOST_TEST(!second.error, second.message);
    BOOST_TEST(!second.started);

    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client c(ex, o);
        auto g = co_await c.acquire(fresh_key("ensured"));
        BOOST_TEST(g.owns_lock());
    });
    BOOST_TEST(::kill(pid, SIGTERM) == 0);
}

BOOST_AUTO_TEST_CASE(answering_broker_is_left_alone) {
    broker_process b;
    temp_dir state;
    auto r = lmx::ensure_broker(
        options_for(b.tcp_url),
        {.broker_path = "/nonexistent", .state_dir = state.path(), .start_timeout = 1s, .broker_args = {}});
    BOOST_TEST(!r.error, r.message);
    BOOST_TEST(!r.started);
}

BOOST_AUTO_TEST_CASE(remote_and_invalid_urls_are_not_started) {
    temp_dir state;
    lmx::ensure_broker_options how{
        .broker_path = lmx_binary(), .state_dir = state.path(), .start_timeout = 1s, .broker_args = {}};
    auto o = options_for("tcp://192.0.2.1:6970");  // TEST-NET-1: never routed
    o.connect_timeout = 300ms;
    auto remote = lmx::ensure_broker(o, how);
    BOOST_TEST(remote.error == errc::unreachable);
    BOOST_TEST(remote.message.find("not a local address") != std::string::npos, remote.message);
    BOOST_TEST(!remote.started);

    auto bad = lmx::ensure_broker(options_for("nonsense://x"), how);
    BOOST_TEST(bad.error == errc::invalid_url);
}

BOOST_AUTO_TEST_CASE(a_broker_that_cannot_start_is_reported_with_its_log) {
    temp_dir state;
    auto o = options_for("tcp://127.0.0.1:" + std::to_string(unused_port()));
    auto r = lmx::ensure_broker(
        o, {.broker_path = "/bin/false", .state_dir = state.path(), .start_timeout = 5s, .broker_args = {}});
    BOOST_TEST(r.error == errc::unreachable);
    BOOST_TEST(r.message.find("exited") != std::string::npos, r.message);
    BOOST_TEST(r.message.find("broker.log") != std::string::npos, r.message);
}

BOOST_AUTO_TEST_SUITE_END()
