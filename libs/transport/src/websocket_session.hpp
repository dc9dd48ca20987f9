#pragma once

// Private to libs/transport: what the ws:// (websocket.cpp) and wss:// (websocket_tls.cpp) halves
// share. The templates here are instantiated once per stream type, each in its own source, so
// that the two heavy instantiations compile in parallel.

#include "tls.hpp"
#include "ws_frames.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
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

// A WebSocket connection once the handshake is done. The handshakes are HTTP (Beast); the
// frames are ours (ws_frames.hpp), so that a batch of messages is one socket write and a read
// hands over every complete message received. Pings are answered with pongs and a close with a
// close; this side sends no pings of its own (TCP keepalive finds dead peers).
template <class Next>
class websocket_connection final : public connection {
public:
    // `received`: bytes that came after the handshake, before this connection existed.
    // `context`: the TLS context of a secure_stream, kept alive as long as its SSL object.
    websocket_connection(Next stream, std::size_t max_message_size, beast::role_type role, tls_context_ptr context = {},
                         std::string_view received = {})
        : context_(std::move(context)),
          stream_(std::move(stream)),
          client_(role == beast::role_type::client),
          reader_(role == beast::role_type::server, max_message_size),
          gate_(stream_.get_executor(), std::chrono::steady_clock::time_point::max()) {
        auto& lowest = beast::get_lowest_layer(stream_);
        lowest.expires_never();
        error_code ec;
        const auto peer = lowest.socket().remote_endpoint(ec);
        remote_ = ec ? std::string("?") : format_address(peer);
        reader_.append(received);
    }

    asio::awaitable<error_code> read(std::vector<std::string_view>& out) override {
        reader_.release();
        for (;;) {
            controls_.clear();
            const auto status = reader_.parse(out, controls_);
            for (const auto& c : controls_) {
                // A close is answered with its status code (RFC 6455 5.5.1), a ping with its payload.
                const auto reply = c.op == opcode::ping ? opcode::pong : opcode::close;
                if (reply == opcode::close) close_answered_ = true;
                const std::string_view payload =
                    c.op == opcode::ping ? std::string_view(c.payload) : std::string_view(c.payload).substr(0, 2);
                append_frame(control_, reply, payload, client_, client_ ? random_mask_key() : 0);
            }
            if (closed_) control_.clear();
            if (!control_.empty()) co_await send_control();
            if (!out.empty()) co_return error_code{};
            switch (status) {
                case read_status::more: break;
                case read_status::closed: co_return asio::error::eof;
                case read_status::bad_frame: co_return error::bad_frame;
                case read_status::too_large: co_return error::message_too_large;
            }
            constexpr std::size_t chunk = 16 * 1024;
            auto [ec, n] = co_await stream_.async_read_some(asio::buffer(reader_.prepare(chunk), chunk), use_tuple);
            if (ec) co_return map_ws_error(ec, ssl_of(stream_));
            reader_.commit(n);
        }
    }

    asio::awaitable<error_code> write(std::string_view batch) override {
        // One write at a time on the socket: a pong or close on its way goes first.
        while (control_writing_) {
            gate_.expires_at(std::chrono::steady_clock::time_point::max());
            co_await gate_.async_wait(use_tuple);
        }
        writing_ = true;
        out_.clear();
        if (partial_sent_ > 0) {
            // write_now() sent the start of this batch's first frame: the rest of it goes first,
            // framed again exactly as it was (same masking key), then anything else.
            const auto end = std::min(batch.find('\n'), batch.size());
            append_frame(out_, opcode::text, batch.substr(0, end), client_, partial_mask_);
            out_.erase(0, partial_sent_);
            partial_sent_ = 0;
            batch.remove_prefix(std::min(end + 1, batch.size()));
        }
        out_.append(control_);
        control_.clear();
        // Nothing may follow the answer to the peer's close (RFC 6455 5.5.1): the frame under way
        // is finished and the answer sent, and the batch fails.
        const bool refused = close_answered_;
        if (!refused) append_text_frames(out_, batch, client_);
        error_code result;
        while (!out_.empty()) {
            auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(out_), use_tuple);
            out_.clear();
            if (ec) {
                result = map_ws_error(ec, ssl_of(stream_));
                break;
            }
            out_.swap(control_);  // answers to pings that came during the write
        }
        writing_ = false;
        if (out_.capacity() > 256 * 1024) std::string().swap(out_);
        if (refused && !result) result = asio::error::connection_aborted;
        co_return result;
    }

    // ws:// only (a TLS stream cannot write without waiting). Frames the batch and hands the
    // kernel what it takes. A frame it takes only in part counts as not taken: the next write()
    // gets that message again and sends the rest of the same frame.
    std::size_t write_now(std::string_view batch) noexcept override {
        if constexpr (!std::is_same_v<Next, plain_stream>) {
            (void)batch;
            return 0;
        } else {
            if (writing_ || control_writing_ || partial_sent_ > 0 || !control_.empty() || batch.empty() ||
                close_answered_)
                return 0;
            auto& socket = beast::get_lowest_layer(stream_).socket();
            error_code ec;
            if (!non_blocking_) {
                socket.non_blocking(true, ec);
                if (ec) return 0;
                non_blocking_ = true;
            }
            std::size_t framed = 0;
            try {
                now_.clear();
                now_lines_.clear();
                // Not much more than a socket buffer takes: what is left is framed by write().
                framed = append_text_frames(now_, batch, client_, write_now_frames, &now_lines_);
            } catch (...) {
                return 0;
            }
            const std::size_t sent = socket.write_some(asio::buffer(now_), ec);
            if (ec || sent == 0) return 0;
            std::size_t frame_start = 0, batch_start = 0;
            for (const auto& f : now_lines_) {
                if (sent < f.wire_end) {
                    partial_sent_ = sent - frame_start;  // 0 when this frame has not started
                    partial_mask_ = f.key;
                    return batch_start;
                }
                frame_start = f.wire_end;
                batch_start = f.batch_end;
            }
            return framed;
        }
    }

    void close() noexcept override {
        error_code ignored;
        beast::get_lowest_layer(stream_).socket().close(ignored);
        gate_.cancel();
    }

    asio::awaitable<error_code> goodbye(std::uint16_t ws_code, std::string_view reason) override {
        while (control_writing_) {
            gate_.expires_at(std::chrono::steady_clock::time_point::max());
            co_await gate_.async_wait(use_tuple);
        }
        std::string payload{static_cast<char>(ws_code >> 8), static_cast<char>(ws_code & 0xff)};
        payload.append(reason.substr(0, 123));
        writing_ = true;
        out_.clear();
        out_.append(control_);
        control_.clear();
        // After a close (the peer's answered) nothing more may be sent (RFC 6455 5.5.1).
        if (!close_answered_) append_frame(out_, opcode::close, payload, client_, client_ ? random_mask_key() : 0);
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(out_), use_tuple);
        out_.clear();
        writing_ = false;
        // Answering the peer's close is done: this side has said its last.
        closed_ = true;
        if (ec) co_return map_ws_error(ec, ssl_of(stream_));
        beast::get_lowest_layer(stream_).socket().shutdown(asio::socket_base::shutdown_send, ec);
        co_return ec;
    }

    std::string remote_address() const override { return remote_; }
    endpoint::kind kind() const noexcept override { return endpoint::kind::websocket; }
    executor get_executor() override { return stream_.get_executor(); }
    const std::string& upgrade_token() const override { return credentials_.token; }
    bool upgrade_token_malformed() const noexcept override { return credentials_.malformed; }
    void set_upgrade_credentials(upgrade_credentials credentials) { credentials_ = std::move(credentials); }

private:
    // Sends the control frames queued by read(), unless a write() is under way: that one sends them.
    asio::awaitable<void> send_control() {
        // Not in the middle of a frame that write_now() began: the write() that ends it sends them.
        if (writing_ || control_writing_ || partial_sent_ > 0) co_return;
        control_writing_ = true;
        while (!control_.empty()) {
            std::string sending;
            sending.swap(control_);
            auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(sending), use_tuple);
            if (ec) {
                control_.clear();  // the reads and writes that follow see the failure
                break;
            }
        }
        control_writing_ = false;
        gate_.cancel();
    }

    tls_context_ptr context_;  // before stream_: outlives the SSL object
    Next stream_;
    bool client_;
    frame_reader reader_;
    std::vector<control_frame> controls_;
    std::string out_;      // the frames of the write under way
    std::string control_;  // pongs and a close waiting for the socket
    bool writing_ = false;
    bool control_writing_ = false;
    bool non_blocking_ = false;
    bool closed_ = false;          // goodbye() sent a close: nothing more is sent
    bool close_answered_ = false;  // read() queued the answer to the peer's close
    // write_now(): the frames it built, and how much of the first frame not wholly sent went out.
    static constexpr std::size_t write_now_frames = 1 << 20;
    std::string now_;
    std::vector<framed_line> now_lines_;
    std::size_t partial_sent_ = 0;
    std::uint32_t partial_mask_ = 0;
    asio::steady_timer gate_;  // a write waits here while read() sends a control frame
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
asio::awaitable<void> serve_http(std::shared_ptr<listener_state> state, Stream& stream) {
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
            auto credentials = read_upgrade_credentials(req.count(http::field::authorization), view.authorization,
                                                        view.websocket_protocols);
            {
                // Beast answers the upgrade; the frames after it are the connection's.
                websocket::stream<Stream&> handshake(stream);
                const bool lmx_offered = credentials.lmx_offered;
                handshake.set_option(websocket::stream_base::decorator([lmx_offered](websocket::response_type& res) {
                    res.set(http::field::server, server_name);
                    // Browsers fail the connection when a subprotocol they offered is not chosen.
                    if (lmx_offered) res.set(http::field::sec_websocket_protocol, lmx_protocol);
                }));
                auto [aec] = co_await handshake.async_accept(req, use_tuple);
                if (aec || state->closed || !state->on_connection) co_return;
            }
            // Frames a client sent right behind its upgrade request are already in `buffer`.
            const std::string_view early(static_cast<const char*>(buffer.data().data()), buffer.size());
            auto conn = std::make_unique<websocket_connection<Stream>>(std::move(stream), options.max_message_size,
                                                                       beast::role_type::server, state->tls, early);
            conn->set_upgrade_credentials(std::move(credentials));
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

// The client's upgrade on an established stream (TCP, or TLS after its handshake). `context`: the
// TLS context of a secure_stream.
template <class Next>
asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> upgrade(
    Next stream, const endpoint& ep, std::size_t max_message_size, tls_context_ptr context,
    const asio::cancellation_state& cancellation) {
    using result = std::pair<error_code, std::unique_ptr<connection>>;
    websocket::detail::sec_ws_key_type key;
    websocket::detail::make_sec_ws_key(key);
    http::request<http::empty_body> req{http::verb::get, ep.path.empty() ? std::string("/") : ep.path, 11};
    req.set(http::field::host, host_header(ep));
    req.set(http::field::upgrade, "websocket");
    req.set(http::field::connection, "Upgrade");
    req.set(http::field::sec_websocket_key, beast::string_view(key.data(), key.size()));
    req.set(http::field::sec_websocket_version, "13");
    req.set(http::field::user_agent, server_name);
    auto [wec, written] = co_await http::async_write(stream, req, use_tuple);
    if (!wec && stop_requested(cancellation)) wec = asio::error::operation_aborted;
    if (wec) co_return result{map_ws_error(wec, ssl_of(stream)), nullptr};

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(http_body_limit);
    auto [rec, read] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (!rec && stop_requested(cancellation)) rec = asio::error::operation_aborted;
    if (rec) co_return result{map_ws_error(rec, ssl_of(stream)), nullptr};
    const auto& res = parser.get();
    if (res.result() != http::status::switching_protocols) {
        const error e = res.result_int() == 403 ? error::origin_refused : error::upgrade_declined;
        co_return result{error_code(e), nullptr};
    }
    websocket::detail::sec_ws_accept_type accept;
    websocket::detail::make_sec_ws_accept(accept, beast::string_view(key.data(), key.size()));
    if (!beast::iequals(res[http::field::upgrade], "websocket") ||
        !http::token_list{res[http::field::connection]}.exists("upgrade") ||
        res[http::field::sec_websocket_accept] != std::string_view(accept.data(), accept.size()))
        co_return result{error_code(error::upgrade_declined), nullptr};
    // Frames the server sent right behind its answer are already in `buffer`.
    const std::string_view early(static_cast<const char*>(buffer.data().data()), buffer.size());
    co_return result{error_code{},
                     std::make_unique<websocket_connection<Next>>(std::move(stream), max_message_size,
                                                                  beast::role_type::client, std::move(context), early)};
}

// The wss:// halves (websocket_tls.cpp): the TLS handshake, then serve_http; the client's TLS
// handshake, then the upgrade.
asio::awaitable<void> serve_secure(std::shared_ptr<listener_state> state, tcp_socket socket);

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_secure(
    tcp_socket socket, tls_context_ptr context, const endpoint& ep, std::size_t max_message_size,
    const asio::cancellation_state& cancellation);

}  // namespace lmx::transport::detail::ws
