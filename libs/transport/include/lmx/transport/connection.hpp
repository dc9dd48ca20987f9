#pragma once

#include <lmx/transport/endpoint.hpp>
#include <lmx/transport/error.hpp>
#include <lmx/transport/line_buffer.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmx::transport {

namespace asio = boost::asio;
using executor = asio::any_io_executor;

// Who is at the other end of a Unix socket, as the kernel saw it at connect time (SO_PEERCRED).
struct peer_credentials {
    std::uint32_t uid;
    std::uint32_t gid;
    std::int32_t pid;
};

// One message stream: NDJSON over TCP, TLS or a Unix socket, or WebSocket messages (over TCP or TLS).
// At most one read and one write in flight at a time, and every call (close() included)
// made from the connection's executor, which must be a strand or a single-threaded context.
class connection {
public:
    connection() = default;
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    virtual ~connection();

    // Waits until at least one complete message is available, then appends every complete
    // message buffered so far to `out`. The views stay valid until the next read() call.
    // NDJSON: a message is one line without "\n" / "\r\n"; empty lines are skipped.
    // WebSocket: a message is one text or binary message; empty ones are skipped. Pings are
    // answered and a close is answered, then read as eof.
    // Errors: asio::error::eof when the peer closed, error::message_too_large (WebSocket: the
    // connection is done), error::message_skipped (NDJSON: one line over the limit was dropped;
    // skipped() tells what it was, and reading may go on), error::bad_frame,
    // asio::error::operation_aborted after close(), socket errors. TLS: a peer closing without
    // close_notify also reads as eof (NDJSON and WebSocket frame their own messages);
    // error::tls_client_certificate_required when a TLS 1.3 server refused us for lacking a
    // client certificate; other TLS failures keep Asio's ssl error codes.
    virtual asio::awaitable<boost::system::error_code> read(std::vector<std::string_view>& out) = 0;

    // After read() failed with error::message_skipped: the ends of the line that was dropped.
    virtual const skipped_line* skipped() const noexcept { return nullptr; }

    // `batch` holds one or more messages, each ending in '\n'. It is sent with one write call;
    // WebSocket sends one text message per line, all their frames in that call. Complete means
    // fully handed to the kernel.
    virtual asio::awaitable<boost::system::error_code> write(std::string_view batch) = 0;

    // Hands as much of `batch` to the kernel as it takes at once, without waiting, where the
    // transport can (tcp, unix, ws); returns the bytes taken, 0 when it cannot or none fit. Only
    // while no write() is in flight. A failure is left for the next write() to report. WebSocket
    // counts whole messages: a message whose frame went out in part is not counted, and the next
    // write() must start with the rest of `batch` (it finishes that frame first).
    virtual std::size_t write_now(std::string_view batch) noexcept {
        (void)batch;
        return 0;
    }

    // Cancels pending I/O and closes the socket (no WebSocket closing handshake).
    virtual void close() noexcept = 0;
    // A server going away says so before it closes: WebSocket sends a close frame with
    // `ws_code` (1001 going away) and `reason` (at most 123 bytes), then every transport ends its
    // sending side (TCP FIN), so the peer reads everything sent and then the end. Reading goes
    // on (the peer's answering close, its FIN) until close(). Only while no write() is in flight.
    virtual asio::awaitable<boost::system::error_code> goodbye(std::uint16_t ws_code, std::string_view reason);

    // "ip:port" ("[v6]:port") for TCP, TLS and WebSocket, the socket path for Unix sockets.
    virtual std::string remote_address() const = 0;
    // Who is at the other end, for per-peer limits: the IP address for TCP, TLS and WebSocket
    // ("1.2.3.4", "[::1]"), "uid N" for a Unix socket (credentials(); "uid ?" when unknown).
    virtual std::string peer() const;
    // Unix sockets: the peer's uid, gid and pid (SO_PEERCRED). Other transports: nullopt.
    virtual std::optional<peer_credentials> credentials() const { return std::nullopt; }

    // Server-side WebSocket connections: the token the client presented in its upgrade request,
    // either as "Authorization: Bearer <token>" or, for browsers (which cannot set headers), as the
    // subprotocol "lmx.token.<base64url(token), no padding>" offered beside "lmx" in
    // Sec-WebSocket-Protocol (decoded here; the listener answers "lmx" and never echoes the token
    // protocol). Never taken from the query string. Empty when none was presented, for client-side
    // and non-WebSocket connections, and when the token was malformed (see upgrade_token_malformed).
    virtual const std::string& upgrade_token() const;
    // True when the upgrade request tried to present a token and got it wrong, so the broker can
    // refuse instead of treating the client as anonymous: "Authorization: Bearer" with an empty or
    // badly formed token (RFC 6750 token68), more than one Authorization header, a token subprotocol
    // that is not valid base64url or decodes to nothing, more than one token subprotocol, or a
    // header and a subprotocol that disagree. Other Authorization schemes (Basic, ...) are ignored.
    virtual bool upgrade_token_malformed() const noexcept { return false; }
    virtual endpoint::kind kind() const noexcept = 0;  // tls: kind::tcp; wss: kind::websocket
    virtual executor get_executor() = 0;
};

struct connect_options {
    std::chrono::milliseconds timeout{5000};  // resolve + connect + TLS and WebSocket handshakes; <= 0: none
    bool no_delay = true;
    std::size_t max_message_size = 1 << 20;
    // tls:// and wss://: the server's certificate must chain to a CA of ca_file (PEM), or of the
    // system's default store when empty, and name the endpoint's host (DNS name or IP address;
    // names are also sent as SNI). cert_file and key_file (PEM, both or neither): a client
    // certificate for servers that require one (mutual TLS).
    // Views, copied when connect() starts: what they show must live until then, which the usual
    // `co_await connect(ex, ep, {.tls = {.ca_file = path}})` ensures. Not strings because g++ 12
    // copies an aggregate temporary with non-trivial members in a co_await expression bitwise and
    // destroys it twice, and connect_options is usually such a temporary.
    struct tls_client_files {
        std::string_view ca_file;
        std::string_view cert_file;
        std::string_view key_file;
    };
    tls_client_files tls{};
};

// Connects to a tcp, tls, unix, ws or wss endpoint (ws: TCP, then the WebSocket handshake on
// endpoint.path; tls and wss: the TLS handshake first). Timeout: asio::error::timed_out. A ws
// upgrade answered with HTTP 403: error::origin_refused. TLS failures: the error::tls_* codes
// (see error.hpp). The connection's executor is `ex`. Arguments are taken by value so the
// coroutine never refers to a caller's temporaries.
asio::awaitable<std::pair<boost::system::error_code, std::unique_ptr<connection>>> connect(
    executor ex, endpoint ep, connect_options options = {});

}  // namespace lmx::transport
