#pragma once

#include <lmx/transport/endpoint.hpp>
#include <lmx/transport/error.hpp>
#include <lmx/transport/line_buffer.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmx::transport {

namespace asio = boost::asio;
using executor = asio::any_io_executor;

// One message stream: NDJSON over TCP or a Unix socket, or WebSocket messages.
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
  // WebSocket: one text or binary message per call.
  // Errors: asio::error::eof when the peer closed, error::message_too_large (WebSocket: the
  // connection is done), error::message_skipped (NDJSON: one line over the limit was dropped;
  // skipped() tells what it was, and reading may go on), error::bad_frame,
  // asio::error::operation_aborted after close(), socket errors.
  virtual asio::awaitable<boost::system::error_code> read(std::vector<std::string_view>& out) = 0;

  // After read() failed with error::message_skipped: the ends of the line that was dropped.
  virtual const skipped_line* skipped() const noexcept { return nullptr; }

  // `batch` holds one or more messages, each ending in '\n'. Stream sockets send it with one
  // write call; WebSocket sends one text message per line. Complete means fully handed to the kernel.
  virtual asio::awaitable<boost::system::error_code> write(std::string_view batch) = 0;

  // Hands as much of `batch` to the kernel as it takes at once, without waiting, where the
  // transport can (stream sockets); returns the bytes taken, 0 when it cannot or none fit. Only
  // while no write() is in flight. A failure is left for the next write() to report.
  virtual std::size_t write_now(std::string_view batch) noexcept {
    (void)batch;
    return 0;
  }

  // Cancels pending I/O and closes the socket (no WebSocket closing handshake).
  virtual void close() noexcept = 0;

  // "ip:port" ("[v6]:port") for TCP and WebSocket, the socket path for Unix sockets.
  virtual std::string remote_address() const = 0;
  // Who is at the other end, for per-peer limits: the IP address for TCP and WebSocket ("1.2.3.4",
  // "[::1]"), "uid N" for a Unix socket (SO_PEERCRED; "uid ?" when unknown).
  virtual std::string peer() const;
  virtual endpoint::kind kind() const noexcept = 0;
  virtual executor get_executor() = 0;
};

struct connect_options {
  std::chrono::milliseconds timeout{5000};  // resolve + connect + handshake; <= 0: none
  bool no_delay = true;
  std::size_t max_message_size = 1 << 20;
};

// Connects to a tcp, unix or ws endpoint (ws: TCP, then the WebSocket handshake on
// endpoint.path). Timeout: asio::error::timed_out. A ws upgrade answered with HTTP 403:
// error::origin_refused. The connection's executor is `ex`. Arguments are taken by value so
// the coroutine never refers to a caller's temporaries.
asio::awaitable<std::pair<boost::system::error_code, std::unique_ptr<connection>>> connect(
    executor ex, endpoint ep, connect_options options = {});

}  // namespace lmx::transport
