#include <lmx/transport/batched_writer.hpp>
#include <lmx/transport/connection.hpp>
#include <lmx/transport/endpoint.hpp>
#include <lmx/transport/error.hpp>
#include <lmx/transport/line_buffer.hpp>
#include <lmx/transport/listener.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

// Named, not anonymous: the test cases' lambdas capture these types (-Wsubobject-linkage).
namespace lmx_transport_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace lt = lmx::transport;
namespace data = boost::unit_test::data;
using boost::system::error_code;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Runs `body(executor)` on `io`; anything still pending when the body ends is dropped with the
// context, and a body that outlives `limit` fails the test instead of hanging. Declare the
// io_context before anything holding sockets so that those go first.
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

// Takes `[&]` lambdas only: g++ 12 destroys a lambda temporary in a co_await expression twice,
// which is harmless only while its captures are trivially destructible.
template <class Ready>
asio::awaitable<bool> wait_until(Ready ready, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!ready()) {
        if (std::chrono::steady_clock::now() > deadline) co_return false;
        co_await sleep_for(1ms);
    }
    co_return true;
}

std::string temp_socket_path() {
    static std::atomic<int> counter{0};
    return "/tmp/lmx-transport-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".sock";
}

std::string url_for(const std::string& scheme) {
    if (scheme == "tcp") return "tcp://127.0.0.1:0";
    if (scheme == "unix") return "unix://" + temp_socket_path();
    return "ws://127.0.0.1:0/";
}

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
    std::string remote;
    std::string token;  // upgrade_token()
    bool token_malformed = false;
    std::optional<lt::peer_credentials> credentials;
    std::string peer;
};

// Echoes every batch back as one batch, recording what it read.
asio::awaitable<void> echo(std::unique_ptr<lt::connection> conn, std::shared_ptr<session_record> record) {
    std::vector<std::string_view> in;
    std::string out;
    record->remote = conn->remote_address();
    record->token = conn->upgrade_token();
    record->token_malformed = conn->upgrade_token_malformed();
    record->credentials = conn->credentials();
    record->peer = conn->peer();
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
        // As the broker does: what the kernel takes at once, then the rest through write().
        const std::size_t taken = conn->write_now(out);
        if (taken == out.size()) continue;
        if (auto ec = co_await conn->write(std::string_view(out).substr(taken))) {
            record->error = ec;
            break;
        }
    }
    record->finished = true;
}

struct test_server {
    std::unique_ptr<lt::listener> listener;
    std::vector<std::shared_ptr<session_record>> sessions;
    bool run_finished = false;

    lt::endpoint endpoint() const { return listener->local_endpoint(); }
    std::shared_ptr<session_record> session(std::size_t i = 0) const {
        return i < sessions.size() ? sessions[i] : nullptr;
    }
};

// Opens a listener that echoes; the test_server must outlive the io_context run.
void start_echo_server(test_server& server, lt::executor ex, const std::string& url, lt::listen_options options = {}) {
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
            s.run_finished = true;
        }(server, ex),
        asio::detached);
}

asio::awaitable<std::unique_ptr<lt::connection>> must_connect(lt::executor ex, const lt::endpoint& ep,
                                                              lt::connect_options options = {}) {
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

// Writes `batch` from its own coroutine while reading `count` messages back, as a real client
// with one reader and one writer does: write-then-read can deadlock once socket buffers fill.
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

std::string make_message(std::size_t i, std::size_t size = 0) {
    std::string m = R"({"type":"lock","uuid":")" + std::to_string(i) + R"(","key":"k)" + std::to_string(i % 7) + "\"";
    if (size > m.size() + 2) m += ",\"pad\":\"" + std::string(size - m.size() - 10, 'x') + "\"";
    m += '}';
    return m;
}

// Appends messages to `batch`, each with its '\n', until it has grown by `bytes`, and records them
// in `sent`: the n-th of `sent` is make_message(n, base + n % spread) long.
void append_messages(std::string& batch, std::vector<std::string>& sent, std::size_t bytes, std::size_t base,
                     std::size_t spread) {
    for (const auto until = batch.size() + bytes; batch.size() < until;) {
        sent.push_back(make_message(sent.size(), base + sent.size() % spread));
        batch += sent.back();
        batch += '\n';
    }
}

const std::vector<std::string> all_schemes{"tcp", "unix", "ws"};

// Runs `body(ex, conn)` on a connection to an echo server over `scheme`, then closes both ends.
// `body` is a [&] coroutine lambda (see wait_until).
template <class Body>
void with_echo_connection(const std::string& scheme, Body body, std::chrono::steady_clock::duration limit = 20s) {
    asio::io_context io;
    test_server server;
    run_async(
        io,
        [&](lt::executor ex) -> asio::awaitable<void> {
            start_echo_server(server, ex, url_for(scheme));
            auto conn = co_await must_connect(ex, server.endpoint());
            co_await body(ex, *conn);
            conn->close();
            server.listener->close();
        },
        limit);
}

// A raw HTTP exchange on a plain TCP socket, as a browser or curl would do it.
asio::awaitable<http::response<http::string_body>> http_exchange(asio::ip::tcp::socket& socket,
                                                                 beast::flat_buffer& buffer, std::string request,
                                                                 bool head = false) {
    auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(request), use_tuple);
    BOOST_REQUIRE_MESSAGE(!wec, "write: " << wec.message());
    http::response_parser<http::string_body> parser;
    parser.skip(head);
    auto [rec, rn] = co_await http::async_read(socket, buffer, parser, use_tuple);
    BOOST_REQUIRE_MESSAGE(!rec, "http read: " << rec.message());
    co_return parser.release();
}

asio::awaitable<asio::ip::tcp::socket> raw_tcp(lt::executor ex, const lt::endpoint& ep) {
    asio::ip::tcp::socket socket(ex);
    auto [ec] = co_await socket.async_connect({asio::ip::make_address(ep.host), ep.port}, use_tuple);
    BOOST_REQUIRE_MESSAGE(!ec, "raw connect: " << ec.message());
    co_return socket;
}

bool file_exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace lmx_transport_test

using namespace lmx_transport_test;

BOOST_AUTO_TEST_SUITE(transport_test)

BOOST_AUTO_TEST_CASE(parse_endpoint_accepts_good_urls) {
    struct row {
        std::string url;
        lt::endpoint::kind scheme;
        std::string host;
        std::uint16_t port;
        std::string path;
        std::string canonical;
    };
    using k = lt::endpoint::kind;
    const std::vector<row> rows{
        {"tcp://127.0.0.1:4444", k::tcp, "127.0.0.1", 4444, "", "tcp://127.0.0.1:4444"},
        {"tcp://localhost:0", k::tcp, "localhost", 0, "", "tcp://localhost:0"},
        {"TCP://broker.example.com:65535/", k::tcp, "broker.example.com", 65535, "", "tcp://broker.example.com:65535"},
        {"tcp://[::1]:4444", k::tcp, "::1", 4444, "", "tcp://[::1]:4444"},
        {"tcp://[fe80::1%25eth0]:1", k::tcp, "fe80::1%eth0", 1, "", "tcp://[fe80::1%25eth0]:1"},
        {"tcp://[fe80::1%eth0]:1", k::tcp, "fe80::1%eth0", 1, "", "tcp://[fe80::1%25eth0]:1"},
        {"unix:///tmp/lmx.sock", k::unix_socket, "", 0, "/tmp/lmx.sock", "unix:///tmp/lmx.sock"},
        {"unix:///run/lmx/broker socket", k::unix_socket, "", 0, "/run/lmx/broker socket",
         "unix:///run/lmx/broker socket"},
        {"ws://example.com:8080", k::websocket, "example.com", 8080, "/", "ws://example.com:8080/"},
        {"ws://127.0.0.1:80/lmx?token=abc", k::websocket, "127.0.0.1", 80, "/lmx?token=abc",
         "ws://127.0.0.1:80/lmx?token=abc"},
        {"ws://h:1?x=1", k::websocket, "h", 1, "/?x=1", "ws://h:1/?x=1"},
        {"ws://[::1]:9/ws#frag", k::websocket, "::1", 9, "/ws", "ws://[::1]:9/ws"},
    };
    for (const auto& r : rows) {
        BOOST_TEST_CONTEXT(r.url) {
            std::string error;
            const auto ep = lt::parse_endpoint(r.url, &error);
            BOOST_REQUIRE_MESSAGE(ep, error);
            BOOST_TEST((ep->scheme == r.scheme));
            BOOST_TEST(ep->host == r.host);
            BOOST_TEST(ep->port == r.port);
            BOOST_TEST(ep->path == r.path);
            BOOST_TEST(lt::to_string(*ep) == r.canonical);
            const auto again = lt::parse_endpoint(lt::to_string(*ep));
            BOOST_REQUIRE(again);
            BOOST_TEST((*again == *ep));
        }
    }
}

BOOST_AUTO_TEST_CASE(parse_endpoint_accepts_tls_urls) {
    struct row {
        std::string url;
        lt::endpoint::kind scheme;
        std::string host;
        std::uint16_t port;
        std::string path;
        std::string canonical;
    };
    using k = lt::endpoint::kind;
    const std::vector<row> rows{
        {"tls://127.0.0.1:4444", k::tcp, "127.0.0.1", 4444, "", "tls://127.0.0.1:4444"},
        {"TLS://broker.example.com:443/", k::tcp, "broker.example.com", 443, "", "tls://broker.example.com:443"},
        {"tls://[::1]:1", k::tcp, "::1", 1, "", "tls://[::1]:1"},
        {"wss://example.com:443", k::websocket, "example.com", 443, "/", "wss://example.com:443/"},
        {"WSS://h:1/lmx?x=1#f", k::websocket, "h", 1, "/lmx?x=1", "wss://h:1/lmx?x=1"},
        {"wss://[fe80::1%25eth0]:9/ws", k::websocket, "fe80::1%eth0", 9, "/ws", "wss://[fe80::1%25eth0]:9/ws"},
    };
    for (const auto& r : rows) {
        BOOST_TEST_CONTEXT(r.url) {
            std::string error;
            const auto ep = lt::parse_endpoint(r.url, &error);
            BOOST_REQUIRE_MESSAGE(ep, error);
            BOOST_TEST((ep->scheme == r.scheme));
            BOOST_TEST(ep->tls);
            BOOST_TEST(ep->host == r.host);
            BOOST_TEST(ep->port == r.port);
            BOOST_TEST(ep->path == r.path);
            BOOST_TEST(lt::to_string(*ep) == r.canonical);
            BOOST_TEST(lt::scheme_name(*ep) == r.canonical.substr(0, r.canonical.find(':')));
            const auto again = lt::parse_endpoint(lt::to_string(*ep));
            BOOST_REQUIRE(again);
            BOOST_TEST((*again == *ep));
            // The same address without TLS is another endpoint.
            auto plain = *ep;
            plain.tls = false;
            BOOST_TEST((plain != *ep));
            BOOST_TEST(lt::to_string(plain).starts_with(r.scheme == k::tcp ? "tcp://" : "ws://"));
        }
    }
    for (const std::string url : {"tcp://h:1", "ws://h:1/", "unix:///tmp/x.sock"}) {
        const auto ep = lt::parse_endpoint(url);
        BOOST_REQUIRE(ep);
        BOOST_TEST(!ep->tls, url);
    }
}

BOOST_AUTO_TEST_CASE(parse_endpoint_rejects_bad_urls_with_a_reason) {
    const std::vector<std::pair<std::string, std::string>> rows{
        {"", "missing scheme"},
        {"127.0.0.1:4444", "missing scheme"},
        {"http://h:1", "unknown scheme 'http'"},
        {"wss://h/", "expected wss://host:port"},
        {"tls://h", "expected tls://host:port"},
        {"tls://h:1/path", "a tls URL takes no path"},
        {"https://h:1", "expected tcp, tls, unix, ws or wss"},
        {"tcp://h", "missing port"},
        {"tcp://h:", "missing port number"},
        {"tcp://:80", "missing host"},
        {"tcp://", "missing host and port"},
        {"tcp://h:65536", "out of range"},
        {"tcp://h:99999999999999999999999", "out of range"},
        {"tcp://h:12a", "not a number"},
        {"tcp://h:-1", "not a number"},
        {"tcp://::1:80", "brackets"},
        {"tcp://[::1:80", "missing ']'"},
        {"tcp://[::1]", "missing port"},
        {"tcp://[::1]x:80", "unexpected"},
        {"tcp://[zz]:80", "bad IPv6"},
        {"tcp://[::1%]:80", "bad IPv6"},
        {"tcp://h%1:80", "bad host"},
        {"tcp://h:1/path", "takes no path"},
        {"tcp://user@h:1", "user info"},
        {"tcp://h h:1", "bad host"},
        {"unix://relative/path", "must be absolute"},
        {"unix://", "missing socket path"},
        {"unix:///" + std::string(200, 'a'), "too long"},
        {"ws://h/", "missing port"},
        {"ws://h:70000/", "out of range"},
    };
    for (const auto& [url, reason] : rows) {
        BOOST_TEST_CONTEXT(url) {
            std::string error;
            BOOST_TEST(!lt::parse_endpoint(url, &error));
            BOOST_TEST(error.find(reason) != std::string::npos,
                       "error text '" << error << "' lacks '" << reason << "'");
            BOOST_TEST(!lt::parse_endpoint(url));  // no error sink is fine too
        }
    }
}

BOOST_AUTO_TEST_CASE(error_codes_have_their_own_category) {
    const error_code ec = lt::error::message_too_large;
    BOOST_TEST(ec.category().name() == std::string("lmx.transport"));
    BOOST_TEST(ec.message() == "message too large");
    BOOST_TEST((ec == lt::error::message_too_large));
    BOOST_TEST((ec != lt::error::bad_frame));
    BOOST_TEST((&ec.category() == &lt::error_category()));
    for (int e = 1; e <= static_cast<int>(lt::error::tls_config); ++e)
        BOOST_TEST(lt::make_error_code(static_cast<lt::error>(e)).message().find("unknown") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(tls_errors_are_told_apart) {
    // The client reports every TLS failure as errc::tls_failed by this test alone.
    for (auto e : {lt::error::tls_certificate_untrusted, lt::error::tls_certificate_expired,
                   lt::error::tls_host_mismatch, lt::error::tls_client_certificate_required,
                   lt::error::tls_client_certificate_refused, lt::error::tls_handshake_failed, lt::error::tls_config})
        BOOST_TEST(lt::is_tls_error(e), lt::make_error_code(e).message());
    for (auto e :
         {lt::error::message_too_large, lt::error::bad_frame, lt::error::origin_refused, lt::error::upgrade_declined,
          lt::error::not_a_socket, lt::error::invalid_endpoint, lt::error::message_skipped})
        BOOST_TEST(!lt::is_tls_error(e), lt::make_error_code(e).message());
    // Same numbers in other categories are not TLS failures.
    BOOST_TEST(
        !lt::is_tls_error(error_code(static_cast<int>(lt::error::tls_config), boost::system::generic_category())));
    BOOST_TEST(!lt::is_tls_error(boost::asio::error::connection_refused));
    BOOST_TEST(!lt::is_tls_error(error_code{}));
}

// Feeds `wire` to a line_buffer in chunks from `chunk_size`, the way a connection reads.
std::vector<std::string> frame(lt::line_buffer& buffer, std::string_view wire,
                               const std::function<std::size_t()>& chunk_size, error_code& ec) {
    std::vector<std::string> got;
    std::vector<std::string_view> views;
    std::size_t fed = 0;
    for (;;) {
        views.clear();
        ec = buffer.take(views);
        for (const auto v : views) got.emplace_back(v);
        if (ec) return got;
        if (!views.empty()) continue;
        if (fed == wire.size()) return got;
        const auto space = buffer.prepare();
        BOOST_REQUIRE(!space.empty());
        const auto n = std::min({chunk_size(), space.size(), wire.size() - fed});
        std::memcpy(space.data(), wire.data() + fed, n);
        buffer.commit(n);
        fed += n;
    }
}

BOOST_AUTO_TEST_CASE(line_buffer_frames_any_split) {
    std::mt19937 rng(42);
    for (int round = 0; round < 200; ++round) {
        std::vector<std::string> expected;
        std::string wire;
        const int count = std::uniform_int_distribution<int>(0, 60)(rng);
        for (int i = 0; i < count; ++i) {
            const auto len = std::uniform_int_distribution<std::size_t>(0, round % 10 == 0 ? 5000 : 80)(rng);
            std::string m(len, 'x');
            for (auto& c : m) c = static_cast<char>(std::uniform_int_distribution<int>(' ', '~')(rng));
            if (!m.empty()) expected.push_back(m);
            wire += m;
            wire += (rng() % 3 == 0) ? "\r\n" : "\n";
        }
        const std::size_t max_chunk = std::uniform_int_distribution<std::size_t>(1, 9000)(rng);
        lt::line_buffer buffer(8192, 64);
        error_code ec;
        const auto got = frame(
            buffer, wire, [&] { return std::uniform_int_distribution<std::size_t>(1, max_chunk)(rng); }, ec);
        BOOST_TEST(!ec);
        BOOST_TEST(got == expected, "round " << round);
        BOOST_TEST(buffer.capacity() <= 8192 + 2);
    }
}

BOOST_AUTO_TEST_CASE(line_buffer_handles_crlf_empty_lines_and_partial_tails) {
    lt::line_buffer buffer(100);
    error_code ec;
    auto got = frame(
        buffer, "a\r\n\n\r\nbb\ncc\rdd\nlast-without-newline", [] { return std::size_t{3}; }, ec);
    BOOST_TEST(!ec);
    BOOST_TEST(got == (std::vector<std::string>{"a", "bb", "cc\rdd"}));
    BOOST_TEST(buffer.buffered() == std::string_view("last-without-newline").size());
}

// Feeds all of `wire` and collects what comes out: messages as they are, and a skipped line as
// "<skipped N head|tail>" (excerpts of at most `excerpt` bytes shown).
std::vector<std::string> frame_all(lt::line_buffer& buffer, std::string_view wire, std::size_t chunk) {
    std::vector<std::string> got;
    std::vector<std::string_view> views;
    std::size_t fed = 0;
    for (;;) {
        views.clear();
        const error_code ec = buffer.take(views);
        for (const auto v : views) got.emplace_back(v);
        if (ec) {
            BOOST_TEST((ec == lt::error::message_skipped), ec.message());
            BOOST_TEST(views.empty());
            const auto& s = buffer.skipped();
            got.push_back("<skipped " + std::to_string(s.size) + " " + s.head + "|" + s.tail + ">");
            continue;
        }
        if (!views.empty()) continue;
        if (fed == wire.size()) return got;
        const auto space = buffer.prepare();
        BOOST_REQUIRE(!space.empty());
        const auto n = std::min({chunk, space.size(), wire.size() - fed});
        std::memcpy(space.data(), wire.data() + fed, n);
        buffer.commit(n);
        fed += n;
    }
}

BOOST_AUTO_TEST_CASE(line_buffer_skips_an_over_long_line_and_goes_on) {
    {
        lt::line_buffer buffer(8);
        // Exactly the limit is fine, with or without "\r"; the line after the long one comes through.
        auto got = frame_all(buffer, "12345678\n12345678\r\nok\n123456789\nnever\n", 64);
        BOOST_TEST(
            got == (std::vector<std::string>{"12345678", "12345678", "ok", "<skipped 9 123456789|123456789>", "never"}),
            boost::test_tools::per_element());
    }
    {
        // No newline in sight: dropped as it comes once it passes the limit, one byte at a time,
        // and the buffer never grows for it.
        lt::line_buffer buffer(8);
        auto got = frame_all(buffer, "ok\n1234567890123", 1);
        BOOST_TEST(got == std::vector<std::string>{"ok"});
        BOOST_TEST(buffer.capacity() <= 10u);
    }
    {
        // A line far over the limit: only its ends are kept (a request id near either end can be
        // found), its size is counted whole, and the buffer stays within the limit.
        lt::line_buffer buffer(1024, 64);
        const std::string middle(100000, 'm');
        const std::string wire = "a\n{\"uuid\":\"first\"," + middle + ",\"last\":1}\r\nb\n";
        auto got = frame_all(buffer, wire, 700);
        BOOST_REQUIRE(got.size() == 3u);
        BOOST_TEST(got[0] == "a");
        BOOST_TEST(got[2] == "b");
        const auto& s = buffer.skipped();
        BOOST_TEST(s.size == wire.size() - 5);  // all but "a\n", "b\n" and the line's '\n' (its '\r' counts)
        BOOST_TEST(s.head.size() == lt::line_buffer::skipped_excerpt);
        BOOST_TEST(s.head.starts_with("{\"uuid\":\"first\","));
        BOOST_TEST(s.tail.size() == lt::line_buffer::skipped_excerpt);
        BOOST_TEST(s.tail.ends_with(",\"last\":1}\r"));
        BOOST_TEST(buffer.capacity() <= 1026u);
    }
}

BOOST_DATA_TEST_CASE(echo_many_messages_in_one_batch, data::make(all_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme));
        auto conn = co_await must_connect(ex, server.endpoint());
        BOOST_TEST((conn->kind() == server.endpoint().scheme));

        constexpr std::size_t count = 3000;
        std::vector<std::string> sent;
        std::string batch;
        for (std::size_t i = 0; i < count; ++i) {
            sent.push_back(make_message(i));
            batch += sent.back();
            batch += '\n';
        }
        for (int round = 0; round < 2; ++round) {
            const auto got = co_await exchange(*conn, batch, count);
            BOOST_TEST(got == sent);
        }
        BOOST_REQUIRE(server.session());
        BOOST_TEST(server.session()->messages.size() == 2 * count);
        if (scheme != "unix") BOOST_TEST(server.session()->remote.rfind("127.0.0.1:", 0) == 0);

        conn->close();
        {
            const bool ready = co_await wait_until([&] { return server.session()->finished; });
            BOOST_TEST(ready);
        }
        server.listener->close();
        {
            const bool ready = co_await wait_until([&] { return server.run_finished; });
            BOOST_TEST(ready);
        }
    });
}

// write_now() hands the kernel what it takes without waiting; write() sends the rest. With far
// more than the socket buffers hold, the kernel takes part of the batch (WebSocket: maybe part of a
// frame, which the following write() finishes): every message still arrives whole and in order.
BOOST_DATA_TEST_CASE(write_now_then_write_delivers_every_message, data::make(all_schemes), scheme) {
    with_echo_connection(
        scheme,
        [&](lt::executor, lt::connection& conn) -> asio::awaitable<void> {
            std::vector<std::string> sent;
            std::string batch;
            append_messages(batch, sent, 24u << 20, 5000, 3000);
            const std::size_t taken = conn.write_now(batch);
            BOOST_TEST(taken > 0u);
            BOOST_TEST(taken < batch.size());
            // NDJSON counts bytes; WebSocket counts whole messages (a frame it began is finished by write()).
            if (scheme == "ws") BOOST_TEST(batch[taken - 1] == '\n', "only whole messages count as taken");
            const auto got = co_await exchange(conn, std::string_view(batch).substr(taken), sent.size());
            BOOST_TEST(got.size() == sent.size());
            BOOST_TEST((got == sent));
        },
        60s);
}

// writer.run() in a coroutine of its own, and what came of it.
struct writer_run {
    error_code error = asio::error::would_block;  // until it returns
    bool ended = false;
    std::size_t writes = 0;
};

void start_run(lt::executor ex, lt::batched_writer& writer, writer_run& r) {
    asio::co_spawn(
        ex,
        [&writer, &r]() -> asio::awaitable<void> {
            r.error = co_await writer.run([&r] { ++r.writes; });
            r.ended = true;
        },
        asio::detached);
}

// The writer shared by broker sessions and clients: flush() sends what the kernel takes, run()
// the rest in writes of at most max_write bytes; what is appended while a write is under way goes
// after it, in order; finish() ends run() once all of it is out, with `written` called after each
// write.
BOOST_DATA_TEST_CASE(batched_writer_sends_everything_in_order, data::make(all_schemes), scheme) {
    with_echo_connection(
        scheme,
        [&](lt::executor ex, lt::connection& conn) -> asio::awaitable<void> {
            std::string outbox;
            lt::batched_writer writer(conn, outbox);
            std::vector<std::string> sent;
            // More than socket buffers hold both ways while nothing reads the echoes: the write
            // run() makes of it cannot end before the reading below.
            append_messages(outbox, sent, 48u << 20, 3000, 5000);
            writer.flush();  // some now; the rest waits for run()
            BOOST_TEST(!outbox.empty(), "48 MiB went out at once");
            writer_run run;
            const std::size_t waiting = outbox.size();
            start_run(ex, writer, run);
            const bool taken = co_await wait_until([&] { return outbox.size() < waiting; });
            BOOST_REQUIRE(taken);  // run() is writing it, a piece at a time
            append_messages(outbox, sent, 4u << 20, 3000, 5000);
            writer.flush();  // a write is under way: nothing goes out here
            BOOST_TEST(outbox.size() >= (4u << 20));
            writer.finish();
            const auto got = co_await read_messages(conn, sent.size());
            BOOST_TEST((got == sent));
            const bool ended = co_await wait_until([&] { return run.ended; });
            BOOST_REQUIRE(ended);
            BOOST_TEST(!run.error, run.error.message());
            // Pieces of at most max_write bytes: `written` tells how a slow reader gets on.
            BOOST_TEST(run.writes >= (waiting / lt::batched_writer::max_write));
            BOOST_TEST(writer.queued() == 0u);
        },
        60s);
}

// A failed write empties the outbox (nothing after a lost message may go out) and ends run()
// with the error; an abandoned writer leaves the outbox alone, as it may be the next connection's.
BOOST_DATA_TEST_CASE(batched_writer_stops_on_error_or_when_abandoned, data::make(all_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme));
        {
            auto conn = co_await must_connect(ex, server.endpoint());
            std::string outbox;
            lt::batched_writer writer(*conn, outbox);
            conn->close();
            outbox = make_message(1) + "\n";
            writer_run run;
            start_run(ex, writer, run);
            const bool ended = co_await wait_until([&] { return run.ended; });
            BOOST_REQUIRE(ended);
            BOOST_TEST(run.error.failed());
            BOOST_TEST(outbox.empty());
        }
        {
            auto conn = co_await must_connect(ex, server.endpoint());
            std::string outbox;
            lt::batched_writer writer(*conn, outbox);
            writer_run run;
            start_run(ex, writer, run);
            co_await sleep_for(1ms);  // parked
            writer.abandon();
            outbox = make_message(2) + "\n";  // the next connection's
            const bool ended = co_await wait_until([&] { return run.ended; });
            BOOST_REQUIRE(ended);
            BOOST_TEST(run.error == asio::error::operation_aborted);
            BOOST_TEST(run.writes == 0u);
            BOOST_TEST(outbox == make_message(2) + "\n");
            conn->close();
        }
        server.listener->close();
    });
}

// The server side of the same, read by Beast's WebSocket client: a frame that write_now() began
// is finished by write() before anything else, and a ping that came meanwhile is answered after it.
BOOST_AUTO_TEST_CASE(websocket_server_finishes_a_frame_write_now_began) {
    asio::io_context io;
    run_async(
        io,
        [&](lt::executor ex) -> asio::awaitable<void> {
            error_code ec;
            std::string text;
            auto listener = lt::listener::open(ex, parse(url_for("ws")), {}, ec, text);
            BOOST_REQUIRE_MESSAGE(listener, text);
            std::unique_ptr<lt::connection> accepted;
            asio::co_spawn(
                ex,
                [&]() -> asio::awaitable<void> {
                    std::function<void(std::unique_ptr<lt::connection>)> on_connection = [&](auto c) {
                        accepted = std::move(c);
                    };
                    co_await listener->run(std::move(on_connection));
                },
                asio::detached);
            const auto ep = listener->local_endpoint();
            websocket::stream<beast::tcp_stream> ws(co_await raw_tcp(ex, ep));
            auto [hec] = co_await ws.async_handshake("127.0.0.1", "/", use_tuple);
            BOOST_REQUIRE_MESSAGE(!hec, hec.message());
            {
                const bool ready = co_await wait_until([&] { return accepted != nullptr; });
                BOOST_REQUIRE(ready);
            }
            std::vector<std::string> sent;
            std::string batch;
            append_messages(batch, sent, 24u << 20, 7000, 5000);
            const std::size_t taken = accepted->write_now(batch);
            BOOST_TEST(taken < batch.size());
            BOOST_TEST((taken == 0 || batch[taken - 1] == '\n'));
            // Read messages from the server's own coroutine while the rest is written.
            bool written = false;
            asio::co_spawn(
                ex,
                [&]() -> asio::awaitable<void> {
                    auto wec = co_await accepted->write(std::string_view(batch).substr(taken));
                    BOOST_TEST(!wec, wec.message());
                    written = true;
                },
                asio::detached);
            std::string pong;
            ws.control_callback([&](websocket::frame_type kind, beast::string_view payload) {
                if (kind == websocket::frame_type::pong) pong = std::string(payload);
            });
            // The server reads a ping (and answers it) while its write is under way; the message behind
            // the ping tells when it has.
            std::vector<std::string_view> after_ping;
            bool read_done = false;
            asio::co_spawn(
                ex,
                [&]() -> asio::awaitable<void> {
                    (void)co_await accepted->read(after_ping);
                    read_done = true;
                },
                asio::detached);
            auto [pec] = co_await ws.async_ping("mid-write", use_tuple);
            BOOST_REQUIRE(!pec);
            auto [mec, mn] = co_await ws.async_write(asio::buffer(std::string_view("after the ping")), use_tuple);
            BOOST_REQUIRE(!mec);
            std::size_t i = 0;
            bool in_order = true;
            beast::flat_buffer buffer;
            while (i < sent.size()) {
                buffer.clear();
                auto [rec, rn] = co_await ws.async_read(buffer, use_tuple);
                BOOST_REQUIRE_MESSAGE(!rec, "message " << i << ": " << rec.message());
                in_order = in_order && beast::buffers_to_string(buffer.data()) == sent[i];
                ++i;
            }
            BOOST_TEST(in_order);
            {
                const bool ready = co_await wait_until([&] { return written && read_done; });
                BOOST_REQUIRE(ready);
            }
            BOOST_TEST(after_ping == std::vector<std::string_view>{"after the ping"});
            // The pong went out before this last message.
            auto lec = co_await accepted->write("last\n");
            BOOST_TEST(!lec);
            buffer.clear();
            auto [lrec, lrn] = co_await ws.async_read(buffer, use_tuple);
            BOOST_REQUIRE(!lrec);
            BOOST_TEST(beast::buffers_to_string(buffer.data()) == "last");
            BOOST_TEST(pong == "mid-write");
            accepted->close();
            listener->close();
        },
        60s);
}

BOOST_DATA_TEST_CASE(echo_large_messages_split_over_many_reads, data::make(all_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        lt::listen_options options;
        options.max_message_size = 1 << 20;
        start_echo_server(server, ex, url_for(scheme), options);
        auto conn = co_await must_connect(ex, server.endpoint());
        const std::vector<std::string> sent{make_message(1, 700 * 1024), "small", make_message(2, 300 * 1024)};
        std::string batch;
        for (const auto& m : sent) batch += m + "\n";
        const auto got = co_await exchange(*conn, batch, sent.size());
        BOOST_TEST(got == sent);
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE(stream_messages_split_byte_by_byte, data::make(std::vector<std::string>{"tcp", "unix"}), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme));
        const std::string wire = "first\n{\"a\":1}\r\n\n\r\n" + std::string(3000, 'z') + "\nlast\n";
        const std::vector<std::string> expected{"first", "{\"a\":1}", std::string(3000, 'z'), "last"};

        auto send_bytewise = [&](auto& socket) -> asio::awaitable<void> {
            for (const char c : wire) {
                auto [ec, n] = co_await asio::async_write(socket, asio::buffer(&c, 1), use_tuple);
                BOOST_REQUIRE(!ec);
            }
        };
        const auto ep = server.endpoint();
        if (scheme == "tcp") {
            auto socket = co_await raw_tcp(ex, ep);
            socket.set_option(asio::ip::tcp::no_delay(true));
            co_await send_bytewise(socket);
            {
                const bool ready =
                    co_await wait_until([&] { return server.session() && server.session()->messages.size() >= 4; });
                BOOST_TEST(ready);
            }
        } else {
            asio::local::stream_protocol::socket socket(ex);
            socket.connect(asio::local::stream_protocol::endpoint(ep.path));
            co_await send_bytewise(socket);
            {
                const bool ready =
                    co_await wait_until([&] { return server.session() && server.session()->messages.size() >= 4; });
                BOOST_TEST(ready);
            }
        }
        BOOST_REQUIRE(server.session());
        BOOST_TEST(server.session()->messages == expected);
        server.listener->close();
    });
}

BOOST_AUTO_TEST_CASE(websocket_message_split_into_one_byte_frames) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for("ws"));
        const auto ep = server.endpoint();
        websocket::stream<beast::tcp_stream> ws(co_await raw_tcp(ex, ep));
        auto [hec] = co_await ws.async_handshake("127.0.0.1", "/", use_tuple);
        BOOST_REQUIRE_MESSAGE(!hec, hec.message());
        ws.text(true);
        // A ping is answered with its payload (before the echoes, which come after it); Beast
        // reports the pong while it reads.
        std::string pong;
        ws.control_callback([&](websocket::frame_type kind, beast::string_view payload) {
            if (kind == websocket::frame_type::pong) pong = std::string(payload);
        });
        auto [pec] = co_await ws.async_ping("are you there", use_tuple);
        BOOST_REQUIRE(!pec);
        const std::vector<std::string> sent{R"({"type":"ping","uuid":"1"})", "second message"};
        for (const auto& m : sent) {
            for (std::size_t i = 0; i < m.size(); ++i) {
                auto [ec, n] =
                    co_await ws.async_write_some(i + 1 == m.size(), asio::buffer(m.data() + i, 1), use_tuple);
                BOOST_REQUIRE(!ec);
            }
        }
        // Binary messages are accepted like text ones.
        ws.binary(true);
        auto [bec, bn] = co_await ws.async_write(asio::buffer(std::string_view("binary")), use_tuple);
        BOOST_REQUIRE(!bec);
        {
            const bool ready =
                co_await wait_until([&] { return server.session() && server.session()->messages.size() >= 3; });
            BOOST_TEST(ready);
        }
        BOOST_REQUIRE(server.session());
        BOOST_TEST(server.session()->messages == (std::vector<std::string>{sent[0], sent[1], "binary"}));

        // The echo arrives as one text message per line.
        for (const auto& want : {sent[0], sent[1], std::string("binary")}) {
            beast::flat_buffer buffer;
            auto [rec, rn] = co_await ws.async_read(buffer, use_tuple);
            BOOST_REQUIRE(!rec);
            BOOST_TEST(ws.got_text());
            BOOST_TEST(beast::buffers_to_string(buffer.data()) == want);
        }
        BOOST_TEST(pong == "are you there");

        // A clean WebSocket close reads as end of stream, like a closed TCP stream.
        auto [cec] = co_await ws.async_close(websocket::close_code::normal, use_tuple);
        BOOST_TEST(!cec, cec.message());
        {
            const bool ready = co_await wait_until([&] { return server.session()->finished; });
            BOOST_TEST(ready);
        }
        BOOST_TEST((server.session()->error == asio::error::eof), server.session()->error.message());
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE(message_too_large_is_an_error_after_the_good_ones, data::make(all_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        lt::listen_options options;
        options.max_message_size = 1024;
        start_echo_server(server, ex, url_for(scheme), options);
        auto conn = co_await must_connect(ex, server.endpoint());
        const std::string batch = "ok\n" + std::string(1025, 'x') + "\nnever\n";
        auto ec = co_await conn->write(batch);
        BOOST_REQUIRE(!ec);
        {
            const bool ready = co_await wait_until([&] { return server.session() && server.session()->finished; });
            BOOST_TEST(ready);
        }
        BOOST_REQUIRE(server.session());
        BOOST_TEST(server.session()->messages == std::vector<std::string>{"ok"});
        // NDJSON drops the line and could go on (the echo server stops at any error); WebSocket
        // fails the connection (close 1009).
        const auto want = std::string_view(scheme) == "ws" ? lt::error::message_too_large : lt::error::message_skipped;
        BOOST_TEST((server.session()->error == want), server.session()->error.message());

        // The client gets its echo, then an error once the server dropped the connection.
        std::vector<std::string_view> in;
        ec = co_await conn->read(in);
        BOOST_TEST(!ec);
        BOOST_TEST(in == std::vector<std::string_view>{"ok"});
        in.clear();
        ec = co_await conn->read(in);
        BOOST_TEST(ec);
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE(client_side_limit_applies_to_replies, data::make(all_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme));
        lt::connect_options options;
        options.max_message_size = 100;
        auto conn = co_await must_connect(ex, server.endpoint(), options);
        // The server (64 KiB limit) accepts and echoes; the client's own limit rejects the echo.
        const std::string batch = std::string(200, 'y') + "\n";
        auto ec = co_await conn->write(batch);
        BOOST_REQUIRE(!ec);
        std::vector<std::string_view> in;
        ec = co_await conn->read(in);
        const auto want = std::string_view(scheme) == "ws" ? lt::error::message_too_large : lt::error::message_skipped;
        BOOST_TEST((ec == want), ec.message());
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE(peer_close_ends_reads_on_both_sides, data::make(all_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme));

        // Client closes: the server's read fails.
        auto first = co_await must_connect(ex, server.endpoint());
        co_await first->write("hello\n");
        co_await read_messages(*first, 1);
        first->close();
        {
            const bool ready = co_await wait_until([&] { return server.session() && server.session()->finished; });
            BOOST_TEST(ready);
        }
        BOOST_TEST(server.session()->error);
        BOOST_TEST((server.session()->error == asio::error::eof), server.session()->error.message());

        // Server side goes away: the client's pending read fails.
        std::unique_ptr<lt::connection> accepted;
        error_code ec;
        std::string text;
        auto other = lt::listener::open(ex, parse(url_for(scheme)), {}, ec, text);
        BOOST_REQUIRE_MESSAGE(other, text);
        asio::co_spawn(ex, other->run([&](std::unique_ptr<lt::connection> c) { accepted = std::move(c); }),
                       asio::detached);
        auto second = co_await must_connect(ex, other->local_endpoint());
        {
            const bool ready = co_await wait_until([&] { return accepted != nullptr; });
            BOOST_TEST(ready);
        }
        bool read_done = false;
        error_code read_error;
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                std::vector<std::string_view> in;
                read_error = co_await second->read(in);
                read_done = true;
            },
            asio::detached);
        co_await sleep_for(20ms);
        BOOST_TEST(!read_done);
        accepted->close();
        {
            const bool ready = co_await wait_until([&] { return read_done; });
            BOOST_TEST(ready);
        }
        BOOST_TEST(read_error);
        BOOST_TEST((read_error == asio::error::eof), read_error.message());
        accepted.reset();
        other->close();
        server.listener->close();
    });
}

BOOST_DATA_TEST_CASE(close_aborts_a_pending_read, data::make(all_schemes), scheme) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for(scheme));
        auto conn = co_await must_connect(ex, server.endpoint());
        bool read_done = false;
        error_code read_error;
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                std::vector<std::string_view> in;
                read_error = co_await conn->read(in);
                read_done = true;
            },
            asio::detached);
        co_await sleep_for(10ms);
        conn->close();
        {
            const bool ready = co_await wait_until([&] { return read_done; });
            BOOST_TEST(ready);
        }
        BOOST_TEST((read_error == asio::error::operation_aborted), read_error.message());
        server.listener->close();
    });
}

BOOST_AUTO_TEST_CASE(websocket_listener_serves_plain_http_with_keep_alive) {
    asio::io_context io;
    test_server server;
    std::vector<std::string> seen;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        lt::listen_options options;
        options.http = [&](const lt::http_request_view& req) {
            seen.push_back(std::string(req.method) + " " + std::string(req.target) + " host=" + std::string(req.host) +
                           " origin=" + std::string(req.origin));
            if (req.target.starts_with("/healthz")) return lt::http_response{200, "text/plain", "ok\n", {}};
            if (req.target == "/metrics")
                return lt::http_response{200, "text/plain; version=0.0.4", "lmx_up 1\n", {{"X-Lmx", "yes"}}};
            if (req.target == "/boom") throw std::runtime_error("handler failed");
            return lt::http_response{404, "text/plain", "nope\n", {}};
        };
        start_echo_server(server, ex, url_for("ws"), options);
        auto socket = co_await raw_tcp(ex, server.endpoint());
        beast::flat_buffer buffer;

        auto res = co_await http_exchange(socket, buffer, "GET /healthz?verbose=1 HTTP/1.1\r\nHost: lmx.test\r\n\r\n");
        BOOST_TEST(res.result_int() == 200u);
        BOOST_TEST(res.body() == "ok\n");
        BOOST_TEST(res.keep_alive());

        // Same socket: keep-alive works.
        res = co_await http_exchange(socket, buffer,
                                     "GET /metrics HTTP/1.1\r\nHost: lmx.test\r\nOrigin: http://o.test\r\n\r\n");
        BOOST_TEST(res.result_int() == 200u);
        BOOST_TEST(res.body() == "lmx_up 1\n");
        BOOST_TEST(res["X-Lmx"] == "yes");
        BOOST_TEST(res[http::field::content_type] == "text/plain; version=0.0.4");

        res = co_await http_exchange(socket, buffer, "HEAD /healthz HTTP/1.1\r\nHost: lmx.test\r\n\r\n", true);
        BOOST_TEST(res.result_int() == 200u);
        BOOST_TEST(res[http::field::content_length] == "3");

        res = co_await http_exchange(socket, buffer, "GET /boom HTTP/1.1\r\nHost: lmx.test\r\n\r\n");
        BOOST_TEST(res.result_int() == 500u);

        res = co_await http_exchange(socket, buffer,
                                     "POST /healthz HTTP/1.1\r\nHost: lmx.test\r\nContent-Length: 2\r\n\r\nhi");
        BOOST_TEST(res.result_int() == 405u);

        res = co_await http_exchange(socket, buffer,
                                     "GET /other HTTP/1.1\r\nHost: lmx.test\r\nConnection: close\r\n\r\n");
        BOOST_TEST(res.result_int() == 404u);
        BOOST_TEST(!res.keep_alive());
        // After "Connection: close" the server ends the connection.
        char byte = 0;
        auto [eec, en] = co_await socket.async_read_some(asio::buffer(&byte, 1), use_tuple);
        BOOST_TEST((eec == asio::error::eof), eec.message());

        BOOST_TEST(seen == (std::vector<std::string>{
                               "GET /healthz?verbose=1 host=lmx.test origin=",
                               "GET /metrics host=lmx.test origin=http://o.test", "HEAD /healthz host=lmx.test origin=",
                               "GET /boom host=lmx.test origin=", "GET /other host=lmx.test origin="}));
        BOOST_TEST(server.sessions.empty());  // plain HTTP never reaches on_connection
        server.listener->close();
    });
}

BOOST_AUTO_TEST_CASE(websocket_listener_without_http_callback_answers_404) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for("ws"));
        auto socket = co_await raw_tcp(ex, server.endpoint());
        beast::flat_buffer buffer;
        auto res = co_await http_exchange(socket, buffer, "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        BOOST_TEST(res.result_int() == 404u);
        res = co_await http_exchange(socket, buffer, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        BOOST_TEST(res.result_int() == 404u);
        server.listener->close();
    });
}

BOOST_AUTO_TEST_CASE(websocket_upgrade_refused_by_policy_or_path) {
    asio::io_context io;
    test_server server;
    std::vector<std::string> asked;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        lt::listen_options options;
        options.accept_websocket = [&](const lt::http_request_view& req) {
            asked.push_back(std::string(req.origin) + "|" + std::string(req.host) + "|" + std::string(req.target));
            return req.origin.empty() || req.origin == "http://good.test";
        };
        options.websocket_paths = {"/lmx"};
        start_echo_server(server, ex, "ws://127.0.0.1:0/custom", options);
        auto ep = server.endpoint();

        // A raw upgrade from a foreign origin: 403.
        auto socket = co_await raw_tcp(ex, ep);
        beast::flat_buffer buffer;
        const std::string upgrade =
            "GET /lmx?x=1 HTTP/1.1\r\nHost: lmx.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: "
            "http://evil.test\r\n\r\n";
        auto res = co_await http_exchange(socket, buffer, upgrade);
        BOOST_TEST(res.result_int() == 403u);
        BOOST_TEST(asked == std::vector<std::string>{"http://evil.test|lmx.test|/lmx?x=1"});

        // Our client against a policy that refuses everything it sees: error::origin_refused.
        {
            test_server strict;
            lt::listen_options refuse_all;
            refuse_all.accept_websocket = [](const lt::http_request_view&) { return false; };
            start_echo_server(strict, ex, url_for("ws"), refuse_all);
            auto [ec, conn] = co_await lt::connect(ex, strict.endpoint());
            BOOST_TEST((ec == lt::error::origin_refused), ec.message());
            BOOST_TEST(!conn);
            BOOST_TEST(strict.sessions.empty());
            strict.listener->close();
        }

        // Upgrades only on the configured paths plus the endpoint's own path.
        ep.path = "/elsewhere";
        auto [ec404, none] = co_await lt::connect(ex, ep);
        BOOST_TEST((ec404 == lt::error::upgrade_declined), ec404.message());
        ep.path = "/custom";
        auto conn = co_await must_connect(ex, ep);
        ep.path = "/lmx?token=1";
        auto conn2 = co_await must_connect(ex, ep);
        co_await conn2->write("hi\n");
        const auto echoed = co_await read_messages(*conn2, 1);
        BOOST_TEST(echoed == std::vector<std::string>{"hi"});
        server.listener->close();
    });
}

// How a browser spells a token in the subprotocol list: unpadded base64url.
std::string base64url(std::string_view in) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::uint32_t bits = 0;
    int count = 0;
    for (const char c : in) {
        bits = (bits << 8) | static_cast<unsigned char>(c);
        count += 8;
        while (count >= 6) {
            count -= 6;
            out += alphabet[(bits >> count) & 63];
        }
    }
    if (count > 0) out += alphabet[(bits << (6 - count)) & 63];
    return out;
}

BOOST_AUTO_TEST_CASE(websocket_upgrade_token_from_bearer_or_subprotocol) {
    using header_list = std::vector<std::pair<http::field, std::string>>;
    struct row {
        std::string name;
        header_list headers;
        std::string target;
        std::string token;      // upgrade_token() on the server side
        bool malformed;         // upgrade_token_malformed()
        std::string answered;   // Sec-WebSocket-Protocol of the 101 response
        std::string protocols;  // http_request_view::websocket_protocols
    };
    const std::string binary_token("s3cr\xff\x00t", 7);
    const std::string encoded = "lmx.token." + base64url(binary_token);
    const auto auth = http::field::authorization;
    const auto proto = http::field::sec_websocket_protocol;
    const std::vector<row> rows{
        {"bearer", {{auth, "Bearer abc.DEF-123_~+/=="}}, "/", "abc.DEF-123_~+/==", false, "", ""},
        {"bearer, any case and spacing", {{auth, "bearer   xyz"}}, "/", "xyz", false, "", ""},
        {"subprotocol", {{proto, "lmx, " + encoded}}, "/", binary_token, false, "lmx", "lmx, " + encoded},
        {"subprotocol first", {{proto, encoded + ",lmx"}}, "/", binary_token, false, "lmx", encoded + ",lmx"},
        {"subprotocol on its own header line",
         {{proto, "lmx"}, {proto, encoded}},
         "/",
         binary_token,
         false,
         "lmx",
         "lmx, " + encoded},
        {"header and subprotocol agree",
         {{auth, "Bearer abc"}, {proto, "lmx, lmx.token." + base64url("abc")}},
         "/",
         "abc",
         false,
         "lmx",
         "lmx, lmx.token." + base64url("abc")},
        {"bad base64url", {{proto, "lmx, lmx.token.a!b"}}, "/", "", true, "lmx", "lmx, lmx.token.a!b"},
        {"padded base64url", {{proto, "lmx, lmx.token.YQ=="}}, "/", "", true, "lmx", "lmx, lmx.token.YQ=="},
        {"non-canonical base64url", {{proto, "lmx, lmx.token.QR"}}, "/", "", true, "lmx", "lmx, lmx.token.QR"},
        {"impossible length", {{proto, "lmx, lmx.token.abcde"}}, "/", "", true, "lmx", "lmx, lmx.token.abcde"},
        {"empty subprotocol token", {{proto, "lmx, lmx.token."}}, "/", "", true, "lmx", "lmx, lmx.token."},
        {"two subprotocol tokens",
         {{proto, "lmx, lmx.token." + base64url("a") + ", lmx.token." + base64url("a")}},
         "/",
         "",
         true,
         "lmx",
         "lmx, lmx.token." + base64url("a") + ", lmx.token." + base64url("a")},
        {"header and subprotocol disagree",
         {{auth, "Bearer abc"}, {proto, "lmx, lmx.token." + base64url("abd")}},
         "/",
         "",
         true,
         "lmx",
         "lmx, lmx.token." + base64url("abd")},
        {"bearer without a token", {{auth, "Bearer"}}, "/", "", true, "", ""},
        {"bearer with a space inside", {{auth, "Bearer a b"}}, "/", "", true, "", ""},
        {"two authorization headers", {{auth, "Bearer a"}, {auth, "Bearer a"}}, "/", "", true, "", ""},
        {"another scheme is no token", {{auth, "Basic YTpi"}}, "/", "", false, "", ""},
        {"never from the query string", {{proto, "lmx"}}, "/?token=abc&access_token=abc", "", false, "lmx", "lmx"},
        {"nothing offered", {}, "/", "", false, "", ""},
        {"token without lmx is read, nothing answered", {{proto, encoded}}, "/", binary_token, false, "", encoded},
    };

    asio::io_context io;
    test_server server;
    std::vector<std::pair<std::string, std::string>> seen;  // authorization, websocket_protocols
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        lt::listen_options options;
        options.accept_websocket = [&](const lt::http_request_view& req) {
            seen.emplace_back(req.authorization, req.websocket_protocols);
            return true;
        };
        start_echo_server(server, ex, url_for("ws"), options);
        const auto ep = server.endpoint();
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const auto& r = rows[i];
            BOOST_TEST_CONTEXT(r.name) {
                websocket::stream<beast::tcp_stream> ws(co_await raw_tcp(ex, ep));
                ws.set_option(websocket::stream_base::decorator([&r](websocket::request_type& req) {
                    for (const auto& [field, value] : r.headers) req.insert(field, value);
                }));
                websocket::response_type response;
                auto [hec] = co_await ws.async_handshake(response, "127.0.0.1", r.target, use_tuple);
                BOOST_REQUIRE_MESSAGE(!hec, hec.message());
                BOOST_TEST(std::string(response[proto]) == r.answered);
                BOOST_TEST(response.count(proto) == (r.answered.empty() ? 0u : 1u));
                {
                    const bool ready = co_await wait_until([&] { return server.sessions.size() == i + 1; });
                    BOOST_REQUIRE(ready);
                }
                BOOST_TEST(server.session(i)->token == r.token);
                BOOST_TEST(server.session(i)->token_malformed == r.malformed);
                BOOST_REQUIRE(seen.size() == i + 1);
                const auto authorization =
                    r.headers.empty() || r.headers.front().first != auth ? std::string() : r.headers.front().second;
                BOOST_TEST(seen[i].first == authorization);
                BOOST_TEST(seen[i].second == r.protocols);
                auto [cec] = co_await ws.async_close(websocket::close_code::normal, use_tuple);
                BOOST_TEST(!cec, cec.message());
            }
        }
        server.listener->close();
    });
}

BOOST_AUTO_TEST_CASE(unix_connections_tell_the_peer_credentials) {
    asio::io_context io;
    test_server server;
    test_server tcp_server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for("unix"));
        auto conn = co_await must_connect(ex, server.endpoint());
        co_await conn->write("hi\n");
        const auto echoed = co_await read_messages(*conn, 1);
        BOOST_TEST(echoed == std::vector<std::string>{"hi"});
        BOOST_REQUIRE(server.session());
        const auto& cred = server.session()->credentials;
        BOOST_REQUIRE(cred.has_value());
        BOOST_TEST(cred->uid == ::getuid());
        BOOST_TEST(cred->gid == ::getgid());
        BOOST_TEST(cred->pid == ::getpid());
        BOOST_TEST(server.session()->peer == "uid " + std::to_string(::getuid()));
        BOOST_TEST(server.session()->token.empty());
        // The client's end sees the listening process: this one.
        const auto theirs = conn->credentials();
        BOOST_REQUIRE(theirs.has_value());
        BOOST_TEST(theirs->pid == ::getpid());

        // TCP has neither credentials nor an upgrade token.
        start_echo_server(tcp_server, ex, url_for("tcp"));
        auto tconn = co_await must_connect(ex, tcp_server.endpoint());
        co_await tconn->write("hi\n");
        co_await read_messages(*tconn, 1);
        BOOST_REQUIRE(tcp_server.session());
        BOOST_TEST(!tcp_server.session()->credentials.has_value());
        BOOST_TEST(!tconn->credentials().has_value());
        BOOST_TEST(tcp_server.session()->token.empty());
        BOOST_TEST(!tcp_server.session()->token_malformed);
        server.listener->close();
        tcp_server.listener->close();
    });
}

BOOST_AUTO_TEST_CASE(unix_stale_socket_file_is_replaced) {
    const auto path = temp_socket_path();
    {
        // A socket file nobody listens on, as a crashed broker leaves it.
        const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, path.c_str());
        BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
        ::close(fd);
    }
    BOOST_REQUIRE(file_exists(path));
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, "unix://" + path);
        auto conn = co_await must_connect(ex, server.endpoint());
        co_await conn->write("alive\n");
        const auto echoed = co_await read_messages(*conn, 1);
        BOOST_TEST(echoed == std::vector<std::string>{"alive"});
        BOOST_TEST(conn->remote_address() == path);
        server.listener->close();
        BOOST_TEST(!file_exists(path));
    });
}

BOOST_AUTO_TEST_CASE(unix_live_socket_is_refused) {
    const auto path = temp_socket_path();
    asio::io_context io;
    error_code ec;
    std::string text;
    auto first = lt::listener::open(io.get_executor(), parse("unix://" + path), {}, ec, text);
    BOOST_REQUIRE_MESSAGE(first, text);
    auto second = lt::listener::open(io.get_executor(), parse("unix://" + path), {}, ec, text);
    BOOST_TEST(!second);
    BOOST_TEST((ec == asio::error::address_in_use), ec.message());
    BOOST_TEST(text == "a broker is already listening on unix://" + path);
    BOOST_TEST(file_exists(path));  // the live broker's socket is untouched
    first.reset();                  // the destructor cleans up like close()
    BOOST_TEST(!file_exists(path));
}

BOOST_AUTO_TEST_CASE(unix_path_that_is_not_a_socket_is_refused_and_kept) {
    const auto path = temp_socket_path();
    std::ofstream(path) << "precious";
    asio::io_context io;
    error_code ec;
    std::string text;
    auto l = lt::listener::open(io.get_executor(), parse("unix://" + path), {}, ec, text);
    BOOST_TEST(!l);
    BOOST_TEST((ec == lt::error::not_a_socket), ec.message());
    BOOST_TEST(text.find("is not a socket") != std::string::npos, text);
    std::stringstream content;
    content << std::ifstream(path).rdbuf();
    BOOST_TEST(content.str() == "precious");
    ::unlink(path.c_str());

    // Missing directory: a clear error, nothing created.
    l = lt::listener::open(io.get_executor(), parse("unix:///nonexistent-lmx-dir/x.sock"), {}, ec, text);
    BOOST_TEST(!l);
    BOOST_TEST(ec);
    BOOST_TEST(text.find("unix:///nonexistent-lmx-dir/x.sock") != std::string::npos, text);
}

BOOST_AUTO_TEST_CASE(unix_mode_is_applied_and_only_our_file_is_removed) {
    asio::io_context io;
    for (const unsigned mode : {0600u, 0666u, 0660u}) {
        const auto path = temp_socket_path();
        lt::listen_options options;
        options.unix_mode = mode;
        error_code ec;
        std::string text;
        auto l = lt::listener::open(io.get_executor(), parse("unix://" + path), options, ec, text);
        BOOST_REQUIRE_MESSAGE(l, text);
        struct stat st {};
        BOOST_REQUIRE(::lstat(path.c_str(), &st) == 0);
        BOOST_TEST(S_ISSOCK(st.st_mode));
        BOOST_TEST((st.st_mode & 0777) == mode);
        l->close();
        BOOST_TEST(!file_exists(path));
        l->close();  // twice is harmless
    }
    // Someone replaced the file after we bound: close() leaves theirs alone.
    const auto path = temp_socket_path();
    error_code ec;
    std::string text;
    auto l = lt::listener::open(io.get_executor(), parse("unix://" + path), {}, ec, text);
    BOOST_REQUIRE_MESSAGE(l, text);
    ::unlink(path.c_str());
    std::ofstream(path) << "theirs";
    l->close();
    BOOST_TEST(file_exists(path));
    ::unlink(path.c_str());
}

BOOST_DATA_TEST_CASE(port_in_use_is_reported, data::make(std::vector<std::string>{"tcp", "ws"}), scheme) {
    asio::io_context io;
    error_code ec;
    std::string text;
    auto first = lt::listener::open(io.get_executor(), parse(url_for(scheme)), {}, ec, text);
    BOOST_REQUIRE_MESSAGE(first, text);
    const auto bound = first->local_endpoint();
    BOOST_TEST(bound.port != 0);
    BOOST_TEST(bound.host == "127.0.0.1");
    auto second = lt::listener::open(io.get_executor(), bound, {}, ec, text);
    BOOST_TEST(!second);
    BOOST_TEST((ec == asio::error::address_in_use), ec.message());
    BOOST_TEST(text.find("port " + std::to_string(bound.port) + " is already in use") != std::string::npos, text);
    BOOST_TEST(text.find(lt::to_string(bound)) != std::string::npos, text);
}

BOOST_AUTO_TEST_CASE(connect_failures_are_error_codes) {
    asio::io_context io;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        // Nobody listens on a port that was just released.
        std::uint16_t port = 0;
        {
            asio::ip::tcp::acceptor probe(ex, {asio::ip::make_address("127.0.0.1"), 0});
            port = probe.local_endpoint().port();
        }
        for (const auto& url :
             {"tcp://127.0.0.1:" + std::to_string(port), "ws://127.0.0.1:" + std::to_string(port) + "/"}) {
            auto [ec, conn] = co_await lt::connect(ex, parse(url));
            BOOST_TEST((ec == asio::error::connection_refused), url << ": " << ec.message());
            BOOST_TEST(!conn);
        }
        auto [uec, uconn] = co_await lt::connect(ex, parse("unix://" + temp_socket_path()));
        BOOST_TEST(uec);
        BOOST_TEST(!uconn);
        auto [hec, hconn] = co_await lt::connect(ex, parse("tcp://no-such-host.invalid:1"));
        BOOST_TEST(hec);
        BOOST_TEST(!hconn);
    });
}

BOOST_AUTO_TEST_CASE(connect_times_out_when_the_handshake_stalls) {
    asio::io_context io;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        // Accepts TCP, never answers the WebSocket upgrade.
        asio::ip::tcp::acceptor silent(ex, {asio::ip::make_address("127.0.0.1"), 0});
        asio::ip::tcp::socket accepted(ex);
        silent.async_accept(accepted, [](error_code) {});
        lt::endpoint ep{lt::endpoint::kind::websocket, "127.0.0.1", silent.local_endpoint().port(), "/"};
        lt::connect_options options;
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

BOOST_AUTO_TEST_CASE(listener_close_ends_run_and_drops_idle_http_connections) {
    asio::io_context io;
    test_server server;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for("ws"));
        auto socket = co_await raw_tcp(ex, server.endpoint());
        co_await sleep_for(10ms);
        server.listener->close();
        {
            const bool ready = co_await wait_until([&] { return server.run_finished; });
            BOOST_TEST(ready);
        }
        // The idle HTTP connection is closed by the listener, not left to its 30 s timeout.
        char byte = 0;
        auto [ec, n] = co_await socket.async_read_some(asio::buffer(&byte, 1), use_tuple);
        BOOST_TEST(ec);
    });
}

BOOST_DATA_TEST_CASE(listener_may_be_destroyed_while_run_is_pending, data::make(all_schemes), scheme) {
    asio::io_context io;
    bool run_finished = false;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        error_code ec;
        std::string text;
        auto l = lt::listener::open(ex, parse(url_for(scheme)), {}, ec, text);
        BOOST_REQUIRE_MESSAGE(l, text);
        const auto ep = l->local_endpoint();
        asio::co_spawn(
            ex,
            [](lt::listener& target, bool& finished) -> asio::awaitable<void> {
                std::function<void(std::unique_ptr<lt::connection>)> on_connection = [](auto) {
                    BOOST_ERROR("no connection expected");
                };
                co_await target.run(std::move(on_connection));
                finished = true;
            }(*l, run_finished),
            asio::detached);
        co_await sleep_for(5ms);
        l.reset();  // no close() first: the destructor closes
        {
            const bool ready = co_await wait_until([&] { return run_finished; });
            BOOST_TEST(ready);
        }
        auto [cec, conn] = co_await lt::connect(ex, ep);
        BOOST_TEST(cec);
    });
}

// A broker shuts down by closing its listeners and connections and letting io_context::run()
// return; no timer or coroutine of ours may keep it alive (e.g. WebSocket keep-alive pings).
BOOST_DATA_TEST_CASE(closing_everything_leaves_no_pending_work, data::make(all_schemes), scheme) {
    asio::io_context io;
    std::unique_ptr<lt::listener> listener;
    std::unique_ptr<lt::connection> client;
    std::unique_ptr<lt::connection> accepted;
    bool served = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto ex = co_await asio::this_coro::executor;
            error_code ec;
            std::string text;
            listener = lt::listener::open(ex, parse(url_for(scheme)), {}, ec, text);
            BOOST_REQUIRE_MESSAGE(listener, text);
            asio::co_spawn(ex, listener->run([&](std::unique_ptr<lt::connection> c) { accepted = std::move(c); }),
                           asio::detached);
            client = co_await must_connect(ex, listener->local_endpoint());
            co_await client->write("ping\n");
            {
                const bool ready = co_await wait_until([&] { return accepted != nullptr; });
                BOOST_REQUIRE(ready);
            }
            const auto got = co_await read_messages(*accepted, 1);
            BOOST_TEST(got == std::vector<std::string>{"ping"});
            if (scheme == "ws") {
                // Plus a connection idling in HTTP keep-alive: the listener owns and drops it.
                auto idle = co_await raw_tcp(ex, listener->local_endpoint());
                co_await sleep_for(5ms);
                listener->close();
                char byte = 0;
                auto [rec, rn] = co_await idle.async_read_some(asio::buffer(&byte, 1), use_tuple);
                BOOST_TEST(rec);
            }
            listener->close();
            client->close();
            accepted->close();
            served = true;
        },
        asio::detached);
    const auto start = std::chrono::steady_clock::now();
    io.run_for(10s);
    BOOST_TEST(served);
    BOOST_TEST(io.stopped(), "work still pending after everything was closed");
    BOOST_TEST((std::chrono::steady_clock::now() - start < 5s));
    client.reset();
    accepted.reset();
    listener.reset();
}

// Restores the descriptor limit however the test ends.
struct descriptor_limit {
    rlimit saved{};
    descriptor_limit() { ::getrlimit(RLIMIT_NOFILE, &saved); }
    ~descriptor_limit() { restore(); }
    bool allow_one_more() {
        const int lowest_free = ::dup(0);
        if (lowest_free < 0) return false;
        ::close(lowest_free);
        rlimit tight = saved;
        tight.rlim_cur = static_cast<rlim_t>(lowest_free) + 1;
        return ::setrlimit(RLIMIT_NOFILE, &tight) == 0;
    }
    void restore() { ::setrlimit(RLIMIT_NOFILE, &saved); }
};

BOOST_AUTO_TEST_CASE(accept_loop_survives_running_out_of_descriptors) {
    asio::io_context io;
    test_server server;
    descriptor_limit limit;
    run_async(io, [&](lt::executor ex) -> asio::awaitable<void> {
        start_echo_server(server, ex, url_for("tcp"));
        const auto ep = server.endpoint();
        co_await sleep_for(5ms);  // the accept is pending before descriptors run out
        BOOST_REQUIRE(limit.allow_one_more());
        // The client takes the last descriptor, so the listener's accept fails with EMFILE.
        asio::ip::tcp::socket client(ex);
        auto [cec] = co_await client.async_connect({asio::ip::make_address(ep.host), ep.port}, use_tuple);
        BOOST_REQUIRE_MESSAGE(!cec, cec.message());
        BOOST_TEST(::dup(0) == -1);
        co_await sleep_for(300ms);
        BOOST_TEST(server.sessions.empty());
        BOOST_TEST(!server.run_finished);
        limit.restore();
        {
            const bool ready = co_await wait_until([&] { return !server.sessions.empty(); }, 2000ms);
            BOOST_TEST(ready, "the listener did not accept again after descriptors came back");
        }
        server.listener->close();
    });
}

BOOST_AUTO_TEST_SUITE_END()
