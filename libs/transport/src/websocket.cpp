// WebSocket connections (Beast) and the ws:// listener, which is also a small HTTP server.

#include "detail.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <algorithm>
#include <unordered_set>

namespace lmx::transport::detail {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;

using ws_stream = websocket::stream<beast::tcp_stream>;

// Covers one request: reading it (also the keep-alive idle time before it) or writing the answer.
constexpr std::chrono::seconds http_timeout{30};
constexpr std::size_t http_body_limit = 64 * 1024;
constexpr std::string_view server_name = "lmx";

// Callers see transport and asio codes only, never Beast's (its headers stay private).
error_code map_ws_error(const error_code& ec) {
  if (!ec) return ec;
  if (ec == websocket::error::closed) return asio::error::eof;
  if (ec == websocket::error::message_too_big) return error::message_too_large;
  if (ec == beast::error::timeout) return asio::error::timed_out;
  if (ec == websocket::condition::protocol_violation) return error::bad_frame;
  return ec;
}

class websocket_connection final : public connection {
public:
  websocket_connection(beast::tcp_stream stream, std::size_t max_message_size, beast::role_type role)
      : ws_(std::move(stream)) {
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
      if (ec) co_return map_ws_error(ec);
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
        if (ec) co_return map_ws_error(ec);
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

private:
  ws_stream ws_;
  beast::flat_buffer buffer_;
  std::string remote_;
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

asio::awaitable<error_code> send_response(beast::tcp_stream& stream, http_response r, unsigned version, bool keep_alive,
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
  stream.expires_after(http_timeout);
  auto [ec, n] = co_await http::async_write(stream, res, use_tuple);
  co_return ec;
}

asio::awaitable<void> serve(std::shared_ptr<listener_state> state, tcp_socket socket) {
  beast::tcp_stream stream(std::move(socket));
  pending_session registration(*state, stream);
  beast::flat_buffer buffer;
  const auto& options = state->options;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(http_body_limit);
    stream.expires_after(options.handshake_timeout);
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
    const http_request_view view{req.method_string(), req.target(), req[http::field::origin], req[http::field::host],
                                 req[http::field::sec_fetch_site]};

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
      auto conn =
          std::make_unique<websocket_connection>(std::move(stream), options.max_message_size, beast::role_type::server);
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
      error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
  }
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
  websocket_listener(executor ex, listen_options options)
      : accept_(std::make_shared<accept_state<tcp>>(ex)), state_(std::make_shared<listener_state>()) {
    state_->options = std::move(options);
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
        if (state->options.on_error) state->options.on_error("too many connections in the HTTP handshake; one closed");
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
  auto result = std::make_unique<websocket_listener>(ex, std::move(options));
  if (!open_tcp_acceptor(result->acceptor(), ep, result->options(), ec, error_text)) return nullptr;
  result->set_local(bound_endpoint(result->acceptor(), ep));
  return result;
}

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_websocket(executor ex, endpoint ep,
                                                                                      connect_options options) {
  const auto cancellation = co_await asio::this_coro::cancellation_state;
  auto [ec, socket] = co_await connect_tcp(ex, ep, options.no_delay);
  if (ec) co_return std::pair{ec, std::unique_ptr<connection>()};
  auto conn = std::make_unique<websocket_connection>(beast::tcp_stream(std::move(socket)), options.max_message_size,
                                                     beast::role_type::client);
  websocket::response_type response;
  const std::string host = host_header(ep);
  const std::string target = ep.path.empty() ? std::string("/") : ep.path;
  auto [hec] = co_await conn->stream().async_handshake(response, host, target, use_tuple);
  if (hec == websocket::error::upgrade_declined) {
    const error e = response.result_int() == 403 ? error::origin_refused : error::upgrade_declined;
    co_return std::pair{error_code(e), std::unique_ptr<connection>()};
  }
  if (!hec && stop_requested(cancellation)) hec = asio::error::operation_aborted;
  if (hec) co_return std::pair{map_ws_error(hec), std::unique_ptr<connection>()};
  co_return std::pair{error_code{}, std::unique_ptr<connection>(std::move(conn))};
}

}  // namespace lmx::transport::detail
