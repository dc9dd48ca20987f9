#pragma once

// Private to libs/transport: what the ws:// (websocket.cpp) and wss:// (websocket_tls.cpp) halves
// share. The templates here are instantiated once per stream type, each in its own source, so
// that the two heavy instantiations compile in parallel.

#include "tls.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lmx::transport::detail::ws {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;

// What WebSocket and HTTP run on: TCP (ws://) or TLS over TCP (wss://).
using plain_stream = beast::tcp_stream;
using secure_stream = beast::ssl_stream<beast::tcp_stream>;

template <class Stream>
SSL* ssl_of(Stream& stream) noexcept {
    if constexpr (std::is_same_v<Stream, secure_stream>)
        return stream.native_handle();
    else
        return nullptr;
}

// Covers one request: reading it (also the keep-alive idle time before it) or writing the answer.
constexpr std::chrono::seconds http_timeout{30};
constexpr std::size_t http_body_limit = 64 * 1024;
constexpr std::string_view server_name = "lmx";

// Callers see transport and asio codes only, never Beast's (its headers stay private). `ssl`: the
// TLS session under a wss:// connection, if any.
error_code map_ws_error(const error_code& ec, SSL* ssl);

inline constexpr std::string_view lmx_protocol = "lmx";

// The token an upgrade request presents (see connection::upgrade_token) and whether "lmx" was offered.
struct upgrade_credentials {
    std::string token;
    bool malformed = false;
    bool lmx_offered = false;
};

// What an upgrade request with `authorization_headers` Authorization lines and the (joined)
// Sec-WebSocket-Protocol list `protocols` presents.
upgrade_credentials read_upgrade_credentials(std::size_t authorization_headers, std::string_view authorization,
                                             std::string_view protocols);

template <class Next>
class websocket_connection final : public connection {
public:
    using ws_stream = websocket::stream<Next>;

    // `context`: the TLS context of a secure_stream, kept alive as long as its SSL object.
    websocket_connection(Next stream, std::size_t max_message_size, beast::role_type role, tls_context_ptr context = {})
        : context_(std::move(context)), ws_(std::move(stream)) {
        auto& lowest = beast::get_lowest_layer(ws_);
        lowest.expires_never();  // the websocket stream runs its own timers
        error_code ec;
        const auto peer = lowest.socket().remote_endpoint(ec);
        remote_ = ec ? std::string("?") : format_address(peer);
        ws_.set_option(websocket::stream_base::timeout::suggested(role));
        if (role == beast::role_type::server) {
            ws_.set_option(websocket::stream_base::decorator(
                [](websocket::response_type& res) { res.set(http::field::server, server_name); }));
        } else {
            ws_.set_option(websocket::stream_base::decorator(
                [](websocket::request_type& req) { req.set(http::field::user_agent, server_name); }));
        }
        ws_.read_message_max(max_message_size);
        ws_.auto_fragment(false);
        ws_.text(true);
    }

    ws_stream& stream() noexcept { return ws_; }

    asio::awaitable<error_code> read(std::vector<std::string_view>& out) override {
        buffer_.clear();  // keeps the capacity: no allocation per message
        for (;;) {
            auto [ec, n] = co_await ws_.async_read(buffer_, use_tuple);
            if (ec) co_return map_ws_error(ec, ssl_of(ws_.next_layer()));
            if (n == 0) continue;  // like an empty NDJSON line
            out.emplace_back(static_cast<const char*>(buffer_.cdata().data()), buffer_.size());
            co_return error_code{};
        }
    }

    asio::awaitable<error_code> write(std::string_view batch) override {
        std::size_t pos = 0;
        while (pos < batch.size()) {
            auto end = batch.find('\n', pos);
            if (end == std::string_view::npos) end = batch.size();
            if (end > pos) {
                auto [ec, n] = co_await ws_.async_write(asio::buffer(batch.data() + pos, end - pos), use_tuple);
                if (ec) co_return map_ws_error(ec, ssl_of(ws_.next_layer()));
            }
            pos = end + 1;
        }
        co_return error_code{};
    }

    void close() noexcept override {
        error_code ignored;
        beast::get_lowest_layer(ws_).socket().close(ignored);
        // Stops Beast's handshake/idle timer, which would otherwise keep the io_context busy.
        websocket::stream_base::timeout off{};
        off.handshake_timeout = websocket::stream_base::none();
        off.idle_timeout = websocket::stream_base::none();
        off.keep_alive_pings = false;
        ws_.set_option(off);
    }

    std::string remote_address() const override { return remote_; }
    endpoint::kind kind() const noexcept override { return endpoint::kind::websocket; }
    executor get_executor() override { return ws_.get_executor(); }
    const std::string& upgrade_token() const override { return credentials_.token; }
    bool upgrade_token_malformed() const noexcept override { return credentials_.malformed; }

    // Server side, before the accept: what the upgrade request presented. Answers "lmx" as the
    // subprotocol when the client offered it (browsers fail the connection otherwise).
    void set_upgrade_credentials(upgrade_credentials credentials) {
        if (credentials.lmx_offered) {
            ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
                res.set(http::field::server, server_name);
                res.set(http::field::sec_websocket_protocol, lmx_protocol);
            }));
        }
        credentials_ = std::move(credentials);
    }

private:
    tls_context_ptr context_;  // before ws_: outlives the SSL object
    ws_stream ws_;
    beast::flat_buffer buffer_;
    std::string remote_;
    upgrade_credentials credentials_;
};

// "host:port" for the Host header.
std::string host_header(const endpoint& ep);

inline std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

inline bool header_safe(std::string_view s) { return s.find_first_of("\r\n") == std::string_view::npos; }

struct listener_state;

// A connection still in HTTP or the upgrade; the listener closes these when it closes.
class pending_session {
public:
    pending_session(listener_state& state, beast::tcp_stream& stream);
    ~pending_session();
    pending_session(const pending_session&) = delete;
    pending_session& operator=(const pending_session&) = delete;
    void retarget(beast::tcp_stream& stream) noexcept { stream_ = &stream; }
    void close() noexcept {
        error_code ignored;
        stream_->socket().close(ignored);
    }

private:
    listener_state& state_;
    beast::tcp_stream* stream_;
};

// Outlives the listener object while sessions still run.
struct listener_state {
    listen_options options;
    tls_context_ptr tls;  // wss://
    std::vector<std::string> websocket_paths;
    std::function<void(std::unique_ptr<connection>)> on_connection;
    std::unordered_set<pending_session*> pending;
    std::size_t handshakes = 0;  // accepted, not yet upgraded or gone (counted before serve() runs)
    bool closed = false;
};

http_response plain_response(unsigned status, std::string body);

template <class Stream>
asio::awaitable<error_code> send_response(Stream& stream, http_response r, unsigned version, bool keep_alive,
                                          bool head_only) {
    // 1xx would break the exchange; 204 and 304 must not carry a body (Beast would throw).
    if (r.status < 200 || r.status > 999) r = plain_response(500, "bad status from the HTTP handler\n");
    if (r.status == 204 || r.status == 304) r.body.clear();
    http::response<http::string_body> res;
    res.version(version);
    res.result(r.status);
    res.set(http::field::server, server_name);
    if (header_safe(r.content_type)) res.set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers)
        if (!name.empty() && header_safe(name) && header_safe(value)) res.set(name, value);
    res.keep_alive(keep_alive);
    if (head_only) {
        res.content_length(r.body.size());
    } else {
        res.body() = std::move(r.body);
        res.prepare_payload();
    }
    beast::get_lowest_layer(stream).expires_after(http_timeout);
    auto [ec, n] = co_await http::async_write(stream, res, use_tuple);
    co_return ec;
}

// HTTP requests and the upgrade on an accepted (and for wss, TLS-established) stream.
template <class Stream>
asio::awaitable<void> serve_http(std::shared_ptr<listener_state> state, Stream& stream, pending_session& registration) {
    beast::flat_buffer buffer;
    const auto& options = state->options;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(http_body_limit);
        beast::get_lowest_layer(stream).expires_after(options.handshake_timeout);
        auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
        if (ec && ec.category() == http::make_error_code(http::error::bad_method).category() &&
            ec != http::error::end_of_stream && ec != http::error::partial_message && !state->closed) {
            // Not HTTP (e.g. a tcp:// client pointed at this port): said plainly, so that the peer can
            // tell a wrong endpoint from a lost connection.
            co_await send_response(stream, plain_response(400, "bad request: this port speaks HTTP and WebSocket\n"),
                                   11, false, false);
            co_return;
        }
        if (ec || state->closed) co_return;
        const auto& req = parser.get();
        // Several Sec-WebSocket-Protocol lines mean one list; a single line is used in place.
        std::string_view protocols = req[http::field::sec_websocket_protocol];
        std::string joined_protocols;
        if (req.count(http::field::sec_websocket_protocol) > 1) {
            for (auto [it, end] = req.equal_range(http::field::sec_websocket_protocol); it != end; ++it) {
                if (!joined_protocols.empty()) joined_protocols += ", ";
                joined_protocols += it->value();
            }
            protocols = joined_protocols;
        }
        const http_request_view view{req.method_string(),
                                     req.target(),
                                     req[http::field::origin],
                                     req[http::field::host],
                                     req[http::field::sec_fetch_site],
                                     req[http::field::authorization],
                                     protocols};

        if (websocket::is_upgrade(req)) {
            const auto path = path_of(view.target);
            const auto& paths = state->websocket_paths;
            unsigned refused = 0;
            if (std::find(paths.begin(), paths.end(), path) == paths.end()) {
                refused = 404;
            } else if (options.accept_websocket) {
                try {
                    if (!options.accept_websocket(view)) refused = 403;
                } catch (...) {
                    refused = 500;
                }
            }
            if (refused != 0) {
                const char* text = refused == 403   ? "websocket upgrade refused\n"
                                   : refused == 404 ? "not found\n"
                                                    : "error\n";
                auto response = plain_response(refused, text);
                co_await send_response(stream, std::move(response), req.version(), false, false);
                co_return;
            }
            auto conn = std::make_unique<websocket_connection<Stream>>(std::move(stream), options.max_message_size,
                                                                       beast::role_type::server, state->tls);
            conn->set_upgrade_credentials(read_upgrade_credentials(req.count(http::field::authorization),
                                                                   view.authorization, view.websocket_protocols));
            registration.retarget(beast::get_lowest_layer(conn->stream()));
            auto [aec] = co_await conn->stream().async_accept(req, use_tuple);
            if (aec || state->closed || !state->on_connection) co_return;
            state->on_connection(std::move(conn));
            co_return;
        }

        const bool head_only = req.method() == http::verb::head;
        const bool keep_alive = req.keep_alive();
        http_response response;
        if (req.method() != http::verb::get && !head_only) {
            response = plain_response(405, "method not allowed\n");
            response.headers.emplace_back("Allow", "GET, HEAD");
        } else if (options.http) {
            try {
                response = options.http(view);
            } catch (...) {
                response = plain_response(500, "internal error\n");
            }
        } else {
            response = plain_response(404, "not found\n");
        }
        const auto sent = co_await send_response(stream, std::move(response), req.version(), keep_alive, head_only);
        if (sent) co_return;
        if (!keep_alive) {
            if constexpr (std::is_same_v<Stream, secure_stream>) {
                // close_notify, so that a client reading to the end sees a clean end.
                beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
                co_await stream.async_shutdown(use_tuple);
            }
            error_code ignored;
            beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ignored);
            co_return;
        }
    }
}

// The client's upgrade on an established stream (TCP, or TLS after its handshake).
template <class Next>
asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> upgrade(
    std::unique_ptr<websocket_connection<Next>> conn, const endpoint& ep,
    const asio::cancellation_state& cancellation) {
    websocket::response_type response;
    const std::string host = host_header(ep);
    const std::string target = ep.path.empty() ? std::string("/") : ep.path;
    auto [hec] = co_await conn->stream().async_handshake(response, host, target, use_tuple);
    if (hec == websocket::error::upgrade_declined) {
        const error e = response.result_int() == 403 ? error::origin_refused : error::upgrade_declined;
        co_return std::pair{error_code(e), std::unique_ptr<connection>()};
    }
    if (!hec && stop_requested(cancellation)) hec = asio::error::operation_aborted;
    if (hec) co_return std::pair{map_ws_error(hec, ssl_of(conn->stream().next_layer())), std::unique_ptr<connection>()};
    co_return std::pair{error_code{}, std::unique_ptr<connection>(std::move(conn))};
}

// The wss:// halves (websocket_tls.cpp): the TLS handshake, then serve_http; the client's TLS
// handshake, then the upgrade.
asio::awaitable<void> serve_secure(std::shared_ptr<listener_state> state, tcp_socket socket);

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_secure(
    tcp_socket socket, tls_context_ptr context, const endpoint& ep, std::size_t max_message_size,
    const asio::cancellation_state& cancellation);

}  // namespace lmx::transport::detail::ws
