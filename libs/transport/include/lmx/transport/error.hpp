#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace lmx::transport {

// Errors raised by the transport itself; socket errors keep their system/asio codes
// (asio::error::eof when the peer closed, asio::error::timed_out for timeouts).
enum class error {
    message_too_large = 1,  // a message exceeded max_message_size; drop the connection
    bad_frame,              // the peer broke the WebSocket framing rules (bad opcode, bad UTF-8, ...)
    origin_refused,         // the server refused the WebSocket upgrade with HTTP 403
    upgrade_declined,       // the server answered the WebSocket upgrade with another status
    not_a_socket,           // unix: the path exists and is not a socket, so it is left alone
    invalid_endpoint,       // the endpoint cannot be used here (e.g. unix path too long)
    message_skipped,        // NDJSON: a line over max_message_size was skipped; the connection goes on
    // tls:// and wss:// (connect unless said otherwise); is_tls_error() knows them as the codes from
    // tls_certificate_untrusted to tls_config, so new ones go between those two:
    tls_certificate_untrusted,        // the server's certificate is not signed by a trusted CA (unknown, self-signed)
    tls_certificate_expired,          // the server's certificate has expired or is not valid yet
    tls_host_mismatch,                // the server's certificate is for another host name or address
    tls_client_certificate_required,  // the server demands a client certificate and none was configured
    // (TLS 1.3: may only show at the first read, as the server's alert)
    tls_client_certificate_refused,  // the server refused our client certificate (unknown CA, expired, ...);
    // TLS 1.3: may only show at the first read
    tls_handshake_failed,  // any other TLS handshake failure (no common protocol, bad alert, ...)
    tls_config,            // the local CA, certificate or key file is missing, unreadable or bad
    // (connect, and listener::open with error_text naming the file)
};

const boost::system::error_category& error_category() noexcept;

inline boost::system::error_code make_error_code(error e) noexcept { return {static_cast<int>(e), error_category()}; }

// True for the error::tls_* codes: a certificate, handshake or TLS configuration failure.
inline bool is_tls_error(const boost::system::error_code& ec) noexcept {
    return ec.category() == error_category() && ec.value() >= static_cast<int>(error::tls_certificate_untrusted) &&
           ec.value() <= static_cast<int>(error::tls_config);
}

}  // namespace lmx::transport

template <>
struct boost::system::is_error_code_enum<lmx::transport::error> : std::true_type {};
