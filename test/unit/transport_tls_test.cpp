#include "test_pki.hpp"

#include <lmx/transport/connection.hpp>
#include <lmx/transport/endpoint.hpp>
#include <lmx/transport/error.hpp>
#include <lmx/transport/listener.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <stdlib.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

// Named, not anonymous: the test cases' lambdas capture these types (-Wsubobject-linkage).
namespace lmx_transport_tls_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace lt = lmx::transport;
namespace data = boost::unit_test::data;
using boost::system::error_code;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Runs `body(executor)` on `io`; a body that outlives `limit` fails the test instead of hanging.
template <class Body>
void run_async(asio::io_context& io, Body body, std::chrono::steady_clock::duration limit = 20s) {
    bool done = false;
    std::exception_ptr failure;
    asio::co_spawn(io, body(io.get_executor()), [&](std::exception_ptr e) {
        done = true;
        failure = e;
        io.stop();
    });
    io.run_for(limit);
    BOOST_REQUIRE_MESSAGE(done, "the test coroutine did not finish in time");
    if (failure) std::rethrow_exception(failure);
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    asio::steady_timer timer(co_await asio::this_coro::executor, d);
    co_await timer.async_wait(use_tuple);
}

// Takes `[&]` lambdas only: g++ 12 destroys a lambda temporary in a co_await expression twice.
template <class Ready>
asio::awaitable<bool> wait_until(Ready ready, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!ready()) {
        if (std::chrono::steady_clock::now() > deadline) co_return false;
        co_await sleep_for(1ms);
    }
    co_return true;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The throwaway PKI (test/support/test_pki.hpp) and the transport options that use it.
class tls_fixture : public lmx::test::test_pki {
public:
    lt::listen_options server_options(const std::string& name) const {
        lt::listen_options options;
        options.tls.cert_file = cert(name);
        options.tls.key_file = key(name);
        return options;
    }

    // connect_options::tls holds views: the strings they show live as long as the fixture.
    std::string_view kept(std::string text) { return kept_.emplace_back(std::move(text)); }

    lt::connect_options client_options() {
        lt::connect_options options;
        options.tls.ca_file = kept(cert("ca"));
        return options;
    }

    lt::connect_options client_options(const std::string& name) {
        auto options = client_options();
        options.tls.cert_file = kept(cert(name));
        options.tls.key_file = kept(key(name));
        return options;
    }

private:
    std::deque<std::string> kept_;
};

std::string url_for(const std::string& scheme) { return scheme == "tls" ? "tls://127.0.0.1:0" : "wss://127.0.0.1:0/"; }

lt::endpoint parse(const std::string& url) {
    std::string error;
    auto ep = lt::parse_endpoint(url, &error);
    BOOST_REQUIRE_MESSAGE(ep, "parse_endpoint(" << url << "): " << error);
    return *ep;
}

// What one server-side session saw.
struct session_record {
    std::vector<std::string> messages;
    error_code error;
    bool finished = false;
};

// Echoes every batch back as one batch, recording what it read.
asio::awaitable<void> echo(std::unique_ptr<lt::connection> conn, std::shared_ptr<session_record> record) {
    std::vector<std::string_view> in;
    std::string out;
    for (;;) {
        in.clear();
        if (auto ec = co_await conn->read(in)) {
            record->error = ec;
            break;
        }
        out.clear();
        for (const auto m : in) {
            record->messages.emplace_back(m);
            out.append(m);
            out.push_back('\n');
        }
        if (auto ec = co_await conn->write(out)) {
            record->error = ec;
            break;
        }
    }
    record->finished = true;
}

struct test_server {
    std::unique_ptr<lt::listener> listener;
    std::vector<std::shared_ptr<session_record>> sessions;
    std::vector<std::string> errors;  // what on_error was told

    lt::endpoint endpoint() const { return listener->local_endpoint(); }
    std::shared_ptr<session_record> session(std::size_t i = 0) const {
        return i < sessions.size() ? sessions[i] : nullptr;
    }
};

// Opens a listener that echoes and records on_error; the test_server must outlive the io_context run.
void start_echo_server(test_server& server, lt::executor ex, const std::string& url, lt::listen_options options) {
    options.on_error = [&server](const std::string& text) { server.errors.push_back(text); };
    error_code ec;
    std::string text;
    server.listener = lt::listener::open(ex, parse(url), std::move(options), ec, text);
    BOOST_REQUIRE_MESSAGE(server.listener, "listen on " << url << ": " << text);
    BOOST_REQUIRE(!ec);
    asio::co_spawn(
        ex,
        [](test_server& s, lt::executor e) -> asio::awaitable<void> {
            // Named: g++ 12 destroys lambda temporaries in a co_await expression twice.
            std::function<void(std::unique_ptr<lt::connection>)> on_connection = [&s, e](auto conn) {
                s.sessions.push_back(std::make_shared<session_record>());
                asio::co_spawn(e, echo(std::move(conn), s.sessions.back()), asio::detached);
            };
            co_await s.listener->run(std::move(on_connection));
        }(server, ex),
        asio::detached);
}

asio::awaitable<std::unique_ptr<lt::connection>> must_connect(lt::executor ex, const lt::endpoint& ep,
                                                              lt::connect_options options) {
    auto [ec, conn] = co_await lt::connect(ex, ep, options);
    BOOST_REQUIRE_MESSAGE(!ec, "connect to " << lt::to_string(ep) << ": " << ec.message());
    BOOST_REQUIRE(conn);
    co_return std::move(conn);
}

// Reads until `count` messages arrived (copied out, since the views die with the next read).
asio::awaitable<std::vector<std::string>> read_messages(lt::connection& conn, std::size_t count) {
    std::vector<std::string> got;
    std::vector<std::string_view> in;
    while (got.size() < count) {
        in.clear();
        auto ec = co_await conn.read(in);
        BOOST_REQUIRE_MESSAGE(!ec, "read: " << ec.message());
        BOOST_REQUIRE(!in.empty());
        for (const auto m : in) got.emplace_back(m);
    }
    co_return got;
}

// Writes `batch` from its own coroutine while reading `count` messages back.
asio::awaitable<std::vector<std::string>> exchange(lt::connection& conn, std::string_view batch, std::size_t count) {
    bool written = false;
    error_code write_error;
    asio::co_spawn(
        co_await asio::this_coro::executor,
        [&]() -> asio::awaitable<void> {
            write_error = co_await conn.write(batch);
            written = true;
        },
        asio::detached);
    auto got = co_await read_messages(conn, count);
    const bool ready = co_await wait_until([&] { return written; });
    BOOST_TEST(ready);
    BOOST_TEST(!write_error, write_error.message());
    co_return got;
}

// The error connect() reports; a TLS 1.3 server's verdict on our certificate may only come with
// the first read, so a connection that was set up is read from once.
asio::awaitable<error_code> connect_error(lt::executor ex, const lt::endpoint& ep, lt::connect_options options) {
    auto [ec, conn] = co_await lt::connect(ex, ep, options);
    if (ec) {
        BOOST_TEST(!conn);
        co_return ec;
    }
    std::vector<std::string_view> in;
    co_return co_await conn->read(in);
}

// The failed handshakes the server reported so far, as one text for the test log.
std::string joined(const std::vector<std::string>& errors) {
    std::string out;
    for (const auto& e : errors) out += e + "\n";
    return out;
}

asio::awaitable<asio::ip::tcp::socket> raw_tcp(lt::executor ex, const lt::endpoint& ep) {
    asio::ip::tcp::socket socket(ex);
    auto [ec] = co_await socket.async_connect({asio::ip::make_address(ep.host), ep.port}, use_tuple);
    BOOST_REQUIRE_MESSAGE(!ec, "raw connect: " << ec.message());
    co_return socket;
}

const std::vector<std::string> tls_schemes{"tls", "wss"};

}  // namespace lmx_transport_tls_test

using namespace lmx_transport_tls_test;

BOOST_AUTO_TEST_SUITE(transport_tls_test)

BOOST_DATA_TEST_CASE_F(tls_fixture, messages_round_trip_over_a_trusted_certificate, data::make(tls_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme), server_options("server"));
        auto ep = server.endpoint();
        BOOST_TEST(ep.tls);
        BOOST_TEST(lt::to_string(ep).starts_with(scheme + "://127.0.0.1:"));
        auto conn = co_await must_connect(ex, ep, client_options());
        BOOST_TEST((conn->kind() == (scheme == "tls" ? lt::endpoint::kind::tcp : lt::endpoint::kind::websocket)));
        BOOST_TEST(conn->remote_address() == "127.0.0.1:" + std::to_string(ep.port));

        // Spans several TLS records (16 KiB each).
        const std::vector<std::string> sent{R"({"type":"ping","uuid":"1"})", std::string(40000, 'x'), "last"};
        std::string batch;
        for (const auto& m : sent) batch += m + "\n";
        const auto echoed = co_await exchange(*conn, batch, sent.size());
        BOOST_TEST(echoed == sent);
        BOOST_REQUIRE(server.session());
        BOOST_TEST(server.session()->messages == sent);

        // By name: the certificate's DNS name is checked (and sent as SNI).
        auto by_name = ep;
        by_name.host = "localhost";
        auto named = co_await must_connect(ex, by_name, client_options());
        const auto echoed2 = co_await exchange(*named, "hello\n", 1);
        BOOST_TEST(echoed2 == std::vector<std::string>{"hello"});

        // Closing without close_notify reads as an ordinary end of stream on the other side.
        conn->close();
        {
            const bool ready = co_await wait_until([&] { return server.session()->finished; });
            BOOST_REQUIRE(ready);
        }
        BOOST_TEST((server.session()->error == asio::error::eof), server.session()->error.message());
        BOOST_TEST(server.errors.empty(), joined(server.errors));
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE_F(tls_fixture, certificate_for_another_host_is_tls_host_mismatch, data::make(tls_schemes),
                       scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme), server_options("wrong_host"));
        auto ep = server.endpoint();
        const auto by_address = co_await connect_error(ex, ep, client_options());
        BOOST_TEST((by_address == lt::error::tls_host_mismatch), by_address.message());
        ep.host = "localhost";
        const auto by_name = co_await connect_error(ex, ep, client_options());
        BOOST_TEST((by_name == lt::error::tls_host_mismatch), by_name.message());
        BOOST_TEST(server.sessions.empty());
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE_F(tls_fixture, expired_or_future_certificate_is_tls_certificate_expired, data::make(tls_schemes),
                       scheme) {
    for (const std::string name : {"expired", "not_yet_valid"}) {
        BOOST_TEST_CONTEXT(name) {
            asio::io_context io;
            test_server server;
            run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
                start_echo_server(server, ex, url_for(scheme), server_options(name));
                const auto ec = co_await connect_error(ex, server.endpoint(), client_options());
                BOOST_TEST((ec == lt::error::tls_certificate_expired), ec.message());
                BOOST_TEST(server.sessions.empty());
                server.listener->close();
            });
        }
    }
}

BOOST_DATA_TEST_CASE_F(tls_fixture, unknown_ca_is_tls_certificate_untrusted, data::make(tls_schemes), scheme) {
    struct row {
        std::string server_cert;
        std::string ca_file;  // empty: the system's store
    };
    for (const row& r : {row{"foreign", cert("ca")}, row{"self_signed", cert("ca")}, row{"server", ""}}) {
        BOOST_TEST_CONTEXT(r.server_cert << " against " << (r.ca_file.empty() ? "the system store" : r.ca_file)) {
            asio::io_context io;
            test_server server;
            run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
                start_echo_server(server, ex, url_for(scheme), server_options(r.server_cert));
                lt::connect_options options;
                options.tls.ca_file = r.ca_file;
                const auto ec = co_await connect_error(ex, server.endpoint(), options);
                BOOST_TEST((ec == lt::error::tls_certificate_untrusted), ec.message());
                BOOST_TEST(server.sessions.empty());
                server.listener->close();
            });
        }
    }
}

BOOST_DATA_TEST_CASE_F(tls_fixture, missing_client_certificate_is_refused, data::make(tls_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        auto options = server_options("server");
        options.tls.client_ca_file = cert("ca");
        start_echo_server(server, ex, url_for(scheme), options);
        const auto ep = server.endpoint();
        const auto ec = co_await connect_error(ex, ep, client_options());
        BOOST_TEST((ec == lt::error::tls_client_certificate_required), ec.message());
        {
            const bool ready = co_await wait_until([&] { return !server.errors.empty(); });
            BOOST_REQUIRE(ready);
        }
        BOOST_TEST_MESSAGE(joined(server.errors));
        BOOST_TEST(server.sessions.empty());
        BOOST_TEST(server.errors.size() == 1u, joined(server.errors));
        const auto& text = server.errors.front();
        BOOST_TEST(text.starts_with("TLS handshake with 127.0.0.1:"), text);
        BOOST_TEST(contains(text, "failed: the client presented no certificate and one is required"), text);

        // The listener goes on: a client with a certificate gets through.
        auto conn = co_await must_connect(ex, ep, client_options("client"));
        const auto echoed = co_await exchange(*conn, "mutual\n", 1);
        BOOST_TEST(echoed == std::vector<std::string>{"mutual"});
        BOOST_TEST(server.sessions.size() == 1u);
        server.listener->close();
    });
}

// TLS 1.2 refuses within the handshake, with a plain handshake_failure alert: the client knows
// the server asked for a certificate it did not have.
BOOST_FIXTURE_TEST_CASE(missing_client_certificate_against_a_tls12_server, tls_fixture) {
    asio::io_context io;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        asio::ssl::context context(asio::ssl::context::tls_server);
        SSL_CTX_set_max_proto_version(context.native_handle(), TLS1_2_VERSION);
        context.use_certificate_chain_file(cert("server"));
        context.use_private_key_file(key("server"), asio::ssl::context::pem);
        context.load_verify_file(cert("ca"));
        context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
        asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
        bool served = false;
        error_code server_error;
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                auto [aec, socket] = co_await acceptor.async_accept(use_tuple);
                asio::ssl::stream<asio::ip::tcp::socket> stream(std::move(socket), context);
                std::tie(server_error) = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
                served = true;
            },
            asio::detached);
        auto ep = parse(url_for("tls"));
        ep.port = acceptor.local_endpoint().port();
        auto [ec, conn] = co_await lt::connect(ex, ep, client_options());
        BOOST_TEST((ec == lt::error::tls_client_certificate_required), ec.message());
        BOOST_TEST(!conn);
        const bool ready = co_await wait_until([&] { return served; });
        BOOST_REQUIRE(ready);
        BOOST_TEST(server_error, "the TLS 1.2 server accepted a client without a certificate");
    });
}

BOOST_DATA_TEST_CASE_F(tls_fixture, client_certificate_from_an_unknown_ca_is_refused, data::make(tls_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        auto options = server_options("server");
        options.tls.client_ca_file = cert("ca");
        start_echo_server(server, ex, url_for(scheme), options);
        const auto ec = co_await connect_error(ex, server.endpoint(), client_options("foreign_client"));
        BOOST_TEST((ec == lt::error::tls_client_certificate_refused), ec.message());
        {
            const bool ready = co_await wait_until([&] { return !server.errors.empty(); });
            BOOST_REQUIRE(ready);
        }
        BOOST_TEST_MESSAGE(joined(server.errors) << "client: " << ec.message());
        BOOST_TEST(server.sessions.empty());
        const auto& text = server.errors.front();
        BOOST_TEST(text.starts_with("TLS handshake with 127.0.0.1:"), text);
        BOOST_TEST(
            contains(text, "failed: the client's certificate was refused: unable to get local issuer certificate"),
            text);
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE_F(tls_fixture, listener_refuses_bad_tls_files_with_a_clear_sentence, data::make(tls_schemes),
                       scheme) {
    asio::io_context io;
    write("garbage.pem", "not a certificate\n");
    const auto missing = file("missing.pem");
    struct row {
        std::string name;
        lt::listen_options::tls_server_files files;
        std::string text;  // the whole sentence, or its start when it ends in ": "
    };
    const std::vector<row> rows{
        {"no files", {}, "cannot listen on " + scheme + "://127.0.0.1:0"},
        {"no key", {cert("server"), "", ""}, "cannot listen on " + scheme + "://127.0.0.1:0"},
        {"missing certificate",
         {missing, key("server"), ""},
         "cannot read the TLS certificate " + missing + ": No such file or directory"},
        {"missing key",
         {cert("server"), missing, ""},
         "cannot read the TLS key " + missing + ": No such file or directory"},
        {"garbage certificate",
         {file("garbage.pem"), key("server"), ""},
         "cannot load the TLS certificate " + file("garbage.pem") + ": "},
        {"garbage key",
         {cert("server"), file("garbage.pem"), ""},
         "cannot load the TLS key " + file("garbage.pem") + ": "},
        {"key of another certificate",
         {cert("server"), key("client"), ""},
         "the TLS key " + key("client") + " does not match the certificate " + cert("server")},
        {"missing client CA",
         {cert("server"), key("server"), missing},
         "cannot read the TLS client CA file " + missing + ": No such file or directory"},
        {"garbage client CA",
         {cert("server"), key("server"), file("garbage.pem")},
         "cannot load the TLS client CA file " + file("garbage.pem") + ": "},
    };
    for (const auto& r : rows) {
        BOOST_TEST_CONTEXT(r.name) {
            lt::listen_options options;
            options.tls = r.files;
            error_code ec;
            std::string text;
            auto l = lt::listener::open(io.get_executor(), parse(url_for(scheme)), options, ec, text);
            BOOST_TEST(!l);
            BOOST_TEST_MESSAGE(text);
            BOOST_TEST((ec == lt::error::tls_config), ec.message());
            BOOST_TEST(text.starts_with(r.text), "'" << text << "' does not start with '" << r.text << "'");
            if (!r.text.ends_with(": ") && !r.text.starts_with("cannot listen")) BOOST_TEST(text == r.text);
            if (r.text.ends_with(": ")) BOOST_TEST(text.size() > r.text.size(), "no reason in '" << text << "'");
        }
    }
}

BOOST_DATA_TEST_CASE_F(tls_fixture, connect_refuses_bad_local_tls_files, data::make(tls_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme), server_options("server"));
        const std::vector<std::pair<std::string, lt::connect_options::tls_client_files>> rows{
            {"missing CA file", {kept(file("missing.pem")), "", ""}},
            {"garbage CA file", {kept(file("openssl.cnf")), "", ""}},
            {"certificate without key", {kept(cert("ca")), kept(cert("client")), ""}},
            {"key without certificate", {kept(cert("ca")), "", kept(key("client"))}},
            {"key of another certificate", {kept(cert("ca")), kept(cert("client")), kept(key("server"))}},
        };
        for (const auto& [name, files] : rows) {
            lt::connect_options options;
            options.tls = files;
            auto [ec, conn] = co_await lt::connect(ex, server.endpoint(), options);
            BOOST_TEST((ec == lt::error::tls_config), name << ": " << ec.message());
            BOOST_TEST(!conn);
        }
        BOOST_TEST(server.sessions.empty());
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE_F(tls_fixture, failed_server_handshakes_are_reported_and_the_listener_goes_on,
                       data::make(tls_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        auto options = server_options("server");
        options.handshake_timeout = 300ms;
        options.max_handshakes = 2;
        start_echo_server(server, ex, url_for(scheme), options);
        const auto ep = server.endpoint();
        const std::string peer_prefix = "TLS handshake with 127.0.0.1:";

        // Silent: dropped after handshake_timeout.
        auto silent = co_await raw_tcp(ex, ep);
        {
            const bool ready = co_await wait_until([&] { return !server.errors.empty(); }, 3000ms);
            BOOST_REQUIRE(ready);
        }
        BOOST_TEST(server.errors.back().starts_with(peer_prefix), server.errors.back());
        BOOST_TEST(contains(server.errors.back(), "failed: no handshake within 300 ms"), server.errors.back());
        char byte = 0;
        auto [rec, rn] = co_await silent.async_read_some(asio::buffer(&byte, 1), use_tuple);
        BOOST_TEST(rec, "the silent connection was left open");

        // Plain text where TLS is expected: the reason says what went wrong.
        auto plain = co_await raw_tcp(ex, ep);
        co_await asio::async_write(plain, asio::buffer(std::string_view("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
                                   use_tuple);
        {
            const bool ready = co_await wait_until([&] { return server.errors.size() >= 2; }, 3000ms);
            BOOST_REQUIRE(ready);
        }
        BOOST_TEST(server.errors.back().starts_with(peer_prefix), server.errors.back());
        BOOST_TEST(contains(server.errors.back(), "failed: plain HTTP where TLS was expected"), server.errors.back());

        // More handshakes than max_handshakes: the newest is closed at once.
        auto first = co_await raw_tcp(ex, ep);
        auto second = co_await raw_tcp(ex, ep);
        auto third = co_await raw_tcp(ex, ep);
        {
            const bool ready = co_await wait_until([&] {
                for (const auto& e : server.errors)
                    if (contains(e, "too many connections")) return true;
                return false;
            });
            BOOST_TEST(ready, joined(server.errors));
        }

        // A good client gets through once the idle ones timed out (silent, first and second).
        {
            const bool ready = co_await wait_until([&] {
                std::size_t timed_out = 0;
                for (const auto& e : server.errors) timed_out += contains(e, "no handshake within") ? 1 : 0;
                return timed_out >= 3;
            });
            BOOST_TEST(ready, joined(server.errors));
        }
        auto conn = co_await must_connect(ex, ep, client_options());
        const auto echoed = co_await exchange(*conn, "still here\n", 1);
        BOOST_TEST(echoed == std::vector<std::string>{"still here"});

        BOOST_TEST_MESSAGE(joined(server.errors));

        // close() drops connections still in the handshake.
        auto pending = co_await raw_tcp(ex, ep);
        co_await sleep_for(20ms);
        const auto reported = server.errors.size();
        server.listener->close();
        auto [pec, pn] = co_await pending.async_read_some(asio::buffer(&byte, 1), use_tuple);
        BOOST_TEST(pec, "a connection in the handshake outlived close()");
        BOOST_TEST(server.errors.size() == reported, joined(server.errors));
    });
}

BOOST_DATA_TEST_CASE_F(tls_fixture, connect_times_out_when_the_tls_handshake_stalls, data::make(tls_schemes), scheme) {
    asio::io_context io;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        // Accepts TCP, never answers the TLS hello.
        asio::ip::tcp::acceptor silent(ex, {asio::ip::make_address("127.0.0.1"), 0});
        asio::ip::tcp::socket accepted(ex);
        silent.async_accept(accepted, [](error_code) {});
        auto ep = parse(url_for(scheme));
        ep.port = silent.local_endpoint().port();
        auto options = client_options();
        options.timeout = 200ms;
        const auto start = std::chrono::steady_clock::now();
        auto [ec, conn] = co_await lt::connect(ex, ep, options);
        const auto took = std::chrono::steady_clock::now() - start;
        BOOST_TEST((ec == asio::error::timed_out), ec.message());
        BOOST_TEST(!conn);
        BOOST_TEST(took >= 150ms);
        BOOST_TEST(took < 3s);
    });
}

BOOST_FIXTURE_TEST_CASE(wss_listener_serves_http_over_tls, tls_fixture) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        auto options = server_options("server");
        options.http = [](const lt::http_request_view& req) {
            lt::http_response r;
            r.body = "page " + std::string(req.target);
            return r;
        };
        start_echo_server(server, ex, url_for("wss"), options);
        const auto ep = server.endpoint();

        asio::ssl::context context(asio::ssl::context::tls_client);
        context.load_verify_file(cert("ca"));
        context.set_verify_mode(asio::ssl::verify_peer);
        asio::ssl::stream<asio::ip::tcp::socket> stream(co_await raw_tcp(ex, ep), context);
        auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, use_tuple);
        BOOST_REQUIRE_MESSAGE(!hec, hec.message());
        const std::string request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(request), use_tuple);
        BOOST_REQUIRE(!wec);
        beast::flat_buffer buffer;
        http::response<http::string_body> res;
        auto [rec, rn] = co_await http::async_read(stream, buffer, res, use_tuple);
        BOOST_REQUIRE_MESSAGE(!rec, rec.message());
        BOOST_TEST(res.result_int() == 200u);
        BOOST_TEST(res.body() == "page /healthz");

        // The same port in plain HTTP: nothing is served, the failure is reported.
        auto plain = co_await raw_tcp(ex, ep);
        co_await asio::async_write(plain, asio::buffer(request), use_tuple);
        char byte = 0;
        auto [pec, pn] = co_await plain.async_read_some(asio::buffer(&byte, 1), use_tuple);
        BOOST_TEST(pec, "plain HTTP was answered on a wss port");
        {
            const bool ready = co_await wait_until([&] { return !server.errors.empty(); });
            BOOST_TEST(ready);
        }
        BOOST_TEST(server.sessions.empty());
        server.listener->close();
    });
}

BOOST_AUTO_TEST_CASE(tls_on_a_unix_endpoint_is_refused) {
    asio::io_context io;
    auto ep = parse("unix:///tmp/lmx-tls-test-never.sock");
    ep.tls = true;
    error_code ec;
    std::string text;
    auto l = lt::listener::open(io.get_executor(), ep, {}, ec, text);
    BOOST_TEST(!l);
    BOOST_TEST((ec == lt::error::invalid_endpoint), ec.message());
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        auto [cec, conn] = co_await lt::connect(ex, ep);
        BOOST_TEST((cec == lt::error::invalid_endpoint), cec.message());
    });
}

BOOST_AUTO_TEST_SUITE_END()
