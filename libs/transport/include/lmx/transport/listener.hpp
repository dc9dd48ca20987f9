#pragma once

#include <lmx/transport/connection.hpp>
#include <lmx/transport/endpoint.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmx::transport {

// A plain HTTP request seen by a ws listener; the views live for the callback only.
struct http_request_view {
    std::string_view method;
    std::string_view target;  // path and query
    std::string_view origin;  // empty when absent
    std::string_view host;
    std::string_view sec_fetch_site;  // empty when absent; browsers send it with every request
    std::string_view authorization;   // the Authorization header, empty when absent
    // Sec-WebSocket-Protocol (several header lines joined with ", "), empty when absent. May hold
    // a token subprotocol (see connection::upgrade_token): never log it.
    std::string_view websocket_protocols;
};

struct http_response {
    unsigned status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

struct listen_options {
    std::size_t max_message_size = 64 * 1024;
    unsigned unix_mode = 0660;  // chmod of the socket file
    bool no_delay = true;
    int backlog = asio::socket_base::max_listen_connections;
    // tcp, tls, ws and wss: TCP keepalive on accepted sockets, first probe after this much idle time, then
    // every 10 s, 6 probes (a vanished peer is found in idle + 60 s). Zero: off.
    std::chrono::seconds keepalive{60};
    // ws, wss and tls listeners: connections not yet handed over (in the TLS handshake, plain HTTP
    // or the WebSocket upgrade) at once; more are closed at accept. The TLS handshake and each HTTP
    // request must complete within handshake_timeout.
    std::size_t max_handshakes = 256;
    std::chrono::milliseconds handshake_timeout{10000};
    // ws and wss listeners only: answers plain HTTP GET/HEAD requests on any path (/healthz,
    // /metrics, ...). Unset: 404. An exception becomes a 500.
    std::function<http_response(const http_request_view&)> http;
    // ws and wss listeners only: whether a WebSocket upgrade is accepted (judge Origin and Host).
    // Unset: accept. Refused: HTTP 403.
    std::function<bool(const http_request_view&)> accept_websocket;
    // ws, wss and tls listeners: told, in a sentence, when a connection is dropped before it was
    // handed over: a failed TLS handshake (with the peer address and the reason), an exception in
    // HTTP or the upgrade, too many handshakes at once. The listener goes on.
    std::function<void(const std::string&)> on_error;
    // tls and wss listeners: PEM files, read when the listener opens (a missing, unreadable or
    // mismatched file fails open() with error::tls_config and a sentence naming it). cert_file may
    // hold the chain (leaf first). With client_ca_file, clients must present a certificate signed
    // by one of its CAs (mutual TLS). TLS 1.2 at least.
    struct tls_server_files {
        std::string cert_file;
        std::string key_file;
        std::string client_ca_file;  // empty: no client certificate asked for
    };
    tls_server_files tls{};
    // ws and wss listeners only: upgrade on these paths (query ignored), plus the endpoint's own path.
    std::vector<std::string> websocket_paths = {"/", "/ws"};
};

// Accepts connections on one endpoint. Use it from its executor (a strand or a
// single-threaded context), like the connections it hands out.
class listener {
public:
    // Binds and listens now, so start-up errors are synchronous: `ec` and a sentence in
    // `error_text`. unix: a live socket at the path -> address_in_use; a stale one (connect
    // refused) is replaced; anything that is not a socket -> error::not_a_socket, left alone.
    static std::unique_ptr<listener> open(executor ex, const endpoint& ep, listen_options options,
                                          boost::system::error_code& ec, std::string& error_text);

    listener() = default;
    listener(const listener&) = delete;
    listener& operator=(const listener&) = delete;
    virtual ~listener();

    // Accepts until close(), handing over each fully set-up connection (tls and wss: after the TLS
    // handshake; ws and wss: after the upgrade; plain HTTP is served inside the listener).
    // Transient accept errors (EMFILE, ...) back off briefly instead of ending the loop. Call once. g++ 12 destroys a lambda temporary written
    // inside a co_await expression twice: name the callback first, then co_await run(std::move(cb)).
    virtual asio::awaitable<void> run(std::function<void(std::unique_ptr<connection>)> on_connection) = 0;

    // Stops accepting and ends run(); ws, wss and tls: also drops connections still in HTTP or a
    // handshake. unix: removes the socket file if it is still the one this listener created.
    // The destructor does the same; destroying the listener while run() is suspended is safe.
    virtual void close() noexcept = 0;

    // The bound address (the actual port when bound to port 0).
    virtual endpoint local_endpoint() const = 0;
};

}  // namespace lmx::transport
