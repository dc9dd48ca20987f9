// WebSocket connections (Beast answers and makes the upgrades; the frames are ws_frames.cpp) and
// the ws:// and wss:// listener, which is also a small HTTP server (over TLS for wss://). The TLS
// halves are in websocket_tls.cpp.

#include "websocket_session.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <cctype>
#include <cstdint>
#include <optional>

namespace lmx::transport::detail {
namespace ws {

error_code map_ws_error(const error_code& ec, SSL* ssl) {
    if (!ec) return ec;
    if (ssl) {
        if (const auto mapped = tls_read_error(ec, ssl); mapped != ec) return mapped;
    }
    if (ec == websocket::error::closed) return asio::error::eof;
    if (ec == websocket::error::message_too_big) return error::message_too_large;
    if (ec == beast::error::timeout) return asio::error::timed_out;
    if (ec == websocket::condition::protocol_violation) return error::bad_frame;
    return ec;
}

namespace {

// The subprotocol a browser names beside "lmx" to carry its token, since it cannot set headers.
constexpr std::string_view token_protocol_prefix = "lmx.token.";

bool iequals_ascii(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// RFC 7235 token68, the form a bearer token takes (RFC 6750).
bool is_token68(std::string_view s) {
    const auto end = s.find_last_not_of('=');
    if (end == std::string_view::npos) return false;
    return std::all_of(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(end + 1), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
    });
}

int base64url_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

// Unpadded base64url, canonical only (unused trailing bits zero): one token has one spelling.
std::optional<std::string> decode_base64url(std::string_view in) {
    if (in.size() % 4 == 1) return std::nullopt;
    std::string out;
    out.reserve(in.size() * 3 / 4);
    std::uint32_t bits = 0;
    int count = 0;
    for (const char c : in) {
        const int v = base64url_value(c);
        if (v < 0) return std::nullopt;
        bits = (bits << 6) | static_cast<std::uint32_t>(v);
        count += 6;
        if (count >= 8) {
            count -= 8;
            out.push_back(static_cast<char>((bits >> count) & 0xff));
        }
    }
    if ((bits & ((1u << count) - 1)) != 0) return std::nullopt;
    return out;
}

}  // namespace

upgrade_credentials read_upgrade_credentials(std::size_t authorization_headers, std::string_view authorization,
                                             std::string_view protocols) {
    upgrade_credentials out;
    std::optional<std::string> from_header;
    if (authorization_headers > 1) {
        out.malformed = true;
    } else if (authorization_headers == 1) {
        const auto value = trim_ows(authorization);
        const auto space = value.find_first_of(" \t");
        const auto scheme = value.substr(0, space);
        if (iequals_ascii(scheme, "Bearer")) {
            const auto credentials =
                space == std::string_view::npos ? std::string_view{} : trim_ows(value.substr(space));
            if (is_token68(credentials))
                from_header = std::string(credentials);
            else
                out.malformed = true;
        }
    }

    std::optional<std::string> from_protocol;
    std::size_t token_protocols = 0;
    while (!protocols.empty()) {
        const auto comma = protocols.find(',');
        const auto item = trim_ows(protocols.substr(0, comma));
        protocols = comma == std::string_view::npos ? std::string_view{} : protocols.substr(comma + 1);
        if (item == lmx_protocol) {
            out.lmx_offered = true;
        } else if (item.starts_with(token_protocol_prefix)) {
            ++token_protocols;
            from_protocol = decode_base64url(item.substr(token_protocol_prefix.size()));
            if (!from_protocol || from_protocol->empty()) out.malformed = true;
        }
    }
    if (token_protocols > 1) out.malformed = true;
    if (from_header && from_protocol && *from_header != *from_protocol) out.malformed = true;
    if (!out.malformed) {
        if (from_header)
            out.token = std::move(*from_header);
        else if (from_protocol)
            out.token = std::move(*from_protocol);
    }
    return out;
}

std::string host_header(const endpoint& ep) {
    // An IPv6 zone id is local to this machine and never sent.
    std::string host =
        ep.host.find(':') != std::string::npos ? "[" + ep.host.substr(0, ep.host.find('%')) + "]" : ep.host;
    return host + ":" + std::to_string(ep.port);
}

pending_session::pending_session(listener_state& state, beast::tcp_stream& stream) : state_(state), stream_(&stream) {
    state_.pending.insert(this);
}
pending_session::~pending_session() { state_.pending.erase(this); }

http_response plain_response(unsigned status, std::string body) {
    http_response r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

namespace {

asio::awaitable<void> serve(std::shared_ptr<listener_state> state, tcp_socket socket) {
    if (state->tls) {
        co_await serve_secure(std::move(state), std::move(socket));
        co_return;
    }
    plain_stream stream(std::move(socket));
    pending_session registration(*state, stream);
    co_await serve_http(state, stream);
}

// A failure inside one connection drops that connection only; the listener goes on, and the
// owner hears of it.
asio::awaitable<void> serve_guarded(std::shared_ptr<listener_state> state, tcp_socket socket) {
    struct counted {
        listener_state& s;
        ~counted() { --s.handshakes; }
    } count{*state};
    std::string what;
    try {
        co_await serve(state, std::move(socket));
    } catch (const std::exception& e) {
        what = e.what();
    } catch (...) {
        what = "unknown exception";
    }
    if (!what.empty() && state->options.on_error) state->options.on_error("HTTP/WebSocket connection dropped: " + what);
}

class websocket_listener final : public listener {
public:
    websocket_listener(executor ex, listen_options options, tls_context_ptr tls)
        : accept_(std::make_shared<accept_state<tcp>>(ex)), state_(std::make_shared<listener_state>()) {
        state_->options = std::move(options);
        state_->tls = std::move(tls);
    }
    ~websocket_listener() override { close(); }

    tcp_acceptor& acceptor() { return accept_->acceptor; }
    const listen_options& options() const { return state_->options; }

    void set_local(endpoint ep) {
        local_ = std::move(ep);
        auto paths = state_->options.websocket_paths;
        const auto own = std::string(path_of(local_.path.empty() ? "/" : local_.path));
        if (std::find(paths.begin(), paths.end(), own) == paths.end()) paths.push_back(own);
        state_->websocket_paths = std::move(paths);
    }

    asio::awaitable<void> run(std::function<void(std::unique_ptr<connection>)> on_connection) override {
        // A copy: after the first suspension this listener may already be closed and destroyed.
        auto state = state_;
        state->on_connection = std::move(on_connection);
        auto accept = accept_;
        // Named, not a temporary in the co_await expression: g++ 12 destroys those twice.
        auto handle = [state](tcp_socket socket) {
            if (!admit_handshake(socket, state->options, state->handshakes,
                                 state->tls ? "too many connections in the TLS or HTTP handshake; one closed"
                                            : "too many connections in the HTTP handshake; one closed"))
                return;
            auto ex = socket.get_executor();
            asio::co_spawn(ex, serve_guarded(state, std::move(socket)), asio::detached);
        };
        co_await accept_loop(std::move(accept), std::move(handle));
    }

    void close() noexcept override {
        accept_->close();
        state_->closed = true;
        for (auto* session : state_->pending) session->close();
    }

    endpoint local_endpoint() const override { return local_; }

private:
    std::shared_ptr<accept_state<tcp>> accept_;
    std::shared_ptr<listener_state> state_;
    endpoint local_;
};

}  // namespace
}  // namespace ws

std::unique_ptr<listener> open_websocket_listener(executor ex, const endpoint& ep, listen_options options,
                                                  error_code& ec, std::string& error_text) {
    tls_context_ptr tls;
    if (ep.tls) {
        tls = make_server_context(options.tls, to_string(ep), ec, error_text);
        if (!tls) return nullptr;
    }
    auto result = std::make_unique<ws::websocket_listener>(ex, std::move(options), std::move(tls));
    if (!open_tcp_acceptor(result->acceptor(), ep, result->options(), ec, error_text)) return nullptr;
    result->set_local(bound_endpoint(result->acceptor(), ep));
    return result;
}

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_websocket(executor ex, endpoint ep,
                                                                                      connect_options options) {
    const auto cancellation = co_await asio::this_coro::cancellation_state;
    tls_context_ptr context;
    if (ep.tls) {
        error_code cec;
        context = make_client_context(options.tls, cec);
        if (!context) co_return std::pair{cec, std::unique_ptr<connection>()};
    }
    auto [ec, socket] = co_await connect_tcp(ex, ep, options.no_delay);
    if (ec) co_return std::pair{ec, std::unique_ptr<connection>()};
    if (!context)
        co_return co_await ws::upgrade(ws::plain_stream(std::move(socket)), ep, options.max_message_size, {},
                                       cancellation);
    co_return co_await ws::connect_secure(std::move(socket), std::move(context), ep, options.max_message_size,
                                          cancellation);
}

}  // namespace lmx::transport::detail
