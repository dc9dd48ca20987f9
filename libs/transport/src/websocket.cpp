// WebSocket connections (Beast) and the ws:// and wss:// listener, which is also a small HTTP
// server (over TLS for wss://).

#include "tls.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <unordered_set>

namespace lmx::transport::detail {
namespace {

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

// The subprotocol a browser names beside "lmx" to carry its token, since it cannot set headers.
constexpr std::string_view token_protocol_prefix = "lmx.token.";
constexpr std::string_view lmx_protocol = "lmx";

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

// The token an upgrade request presents (see connection::upgrade_token) and whether "lmx" was offered.
struct upgrade_credentials {
  std::string token;
  bool malformed = false;
  bool lmx_offered = false;
};

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
      const auto credentials = space == std::string_view::npos ? std::string_view{} : trim_ows(value.substr(space));
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

std::string host_header(const endpoint& ep) {
  // An IPv6 zone id is local to this machine and never sent.
  std::string host =
      ep.host.find(':') != std::string::npos ? "[" + ep.host.substr(0, ep.host.find('%')) + "]" : ep.host;
  return host + ":" + std::to_string(ep.port);
}

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

bool header_safe(std::string_view s) { return s.find_first_of("\r\n") == std::string_view::npos; }

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
asio::awaitable<void> serve_http(std::shared_ptr<listener_state> state, Stream& stream,
                                 pending_session& registration) {
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
      co_await send_response(stream, plain_response(400, "bad request: this port speaks HTTP and WebSocket\n"), 11, false,
                             false);
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
    const http_request_view view{req.method_string(),        req.target(), req[http::field::origin],
                                 req[http::field::host],     req[http::field::sec_fetch_site],
                                 req[http::field::authorization], protocols};

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
        const char* text = refused == 403 ? "websocket upgrade refused\n" : refused == 404 ? "not found\n" : "error\n";
        auto response = plain_response(refused, text);
        co_await send_response(stream, std::move(response), req.version(), false, false);
        co_return;
      }
      auto conn = std::make_unique<websocket_connection<Stream>>(std::move(stream), options.max_message_size,
                                                                 beast::role_type::server, state->tls);
      conn->set_upgrade_credentials(
          read_upgrade_credentials(req.count(http::field::authorization), view.authorization, view.websocket_protocols));
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

asio::awaitable<void> serve(std::shared_ptr<listener_state> state, tcp_socket socket) {
  if (!state->tls) {
    plain_stream stream(std::move(socket));
    pending_session registration(*state, stream);
    co_await serve_http(state, stream, registration);
    co_return;
  }
  error_code ignored;
  const auto peer = socket.remote_endpoint(ignored);
  const std::string remote = ignored ? std::string("?") : format_address(peer);
  secure_stream stream(plain_stream(std::move(socket)), *state->tls);
  pending_session registration(*state, beast::get_lowest_layer(stream));
  beast::get_lowest_layer(stream).expires_after(state->options.handshake_timeout);
  auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
  if (state->closed) co_return;
  if (ec) {
    if (state->options.on_error) {
      state->options.on_error("TLS handshake with " + remote + " failed: " +
                              (ec == beast::error::timeout
                                   ? "no handshake within " + std::to_string(state->options.handshake_timeout.count()) +
                                         " ms"
                                   : server_handshake_failure(ec, stream.native_handle())));
    }
    co_return;
  }
  co_await serve_http(state, stream, registration);
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
      if (state->handshakes >= state->options.max_handshakes) {
        // Slow or idle upgrades cannot hold every slot: the newest is turned away at once.
        error_code ignored;
        socket.close(ignored);
        if (state->options.on_error)
          state->options.on_error(state->tls ? "too many connections in the TLS or HTTP handshake; one closed"
                                             : "too many connections in the HTTP handshake; one closed");
        return;
      }
      ++state->handshakes;
      if (state->options.no_delay) {
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
      }
      set_keepalive(socket, state->options.keepalive);
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

std::unique_ptr<listener> open_websocket_listener(executor ex, const endpoint& ep, listen_options options,
                                                  error_code& ec, std::string& error_text) {
  tls_context_ptr tls;
  if (ep.tls) {
    tls = make_server_context(options.tls, to_string(ep), ec, error_text);
    if (!tls) return nullptr;
  }
  auto result = std::make_unique<websocket_listener>(ex, std::move(options), std::move(tls));
  if (!open_tcp_acceptor(result->acceptor(), ep, result->options(), ec, error_text)) return nullptr;
  result->set_local(bound_endpoint(result->acceptor(), ep));
  return result;
}

namespace {

// The client's upgrade on an established stream (TCP, or TLS after its handshake).
template <class Next>
asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> upgrade(
    std::unique_ptr<websocket_connection<Next>> conn, const endpoint& ep, const asio::cancellation_state& cancellation) {
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

}  // namespace

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
  if (!context) {
    auto conn = std::make_unique<websocket_connection<plain_stream>>(plain_stream(std::move(socket)),
                                                                     options.max_message_size, beast::role_type::client);
    co_return co_await upgrade(std::move(conn), ep, cancellation);
  }
  auto& ctx = *context;
  auto conn = std::make_unique<websocket_connection<secure_stream>>(
      secure_stream(plain_stream(std::move(socket)), ctx), options.max_message_size, beast::role_type::client,
      std::move(context));
  auto& tls = conn->stream().next_layer();
  if (auto pec = prepare_client(tls.native_handle(), ep.host)) co_return std::pair{pec, std::unique_ptr<connection>()};
  auto [tec] = co_await tls.async_handshake(asio::ssl::stream_base::client, use_tuple);
  if (!tec && stop_requested(cancellation)) tec = asio::error::operation_aborted;
  if (tec) co_return std::pair{client_handshake_error(tec, tls.native_handle()), std::unique_ptr<connection>()};
  co_return co_await upgrade(std::move(conn), ep, cancellation);
}

}  // namespace lmx::transport::detail
