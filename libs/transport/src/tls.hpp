#pragma once

// Private to libs/transport: TLS contexts and error mapping, shared by tls:// (tls.cpp) and
// wss:// (websocket_session.hpp). The private headers of the transport reach OpenSSL; its public
// ones do not.

#include "detail.hpp"

#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string>

namespace lmx::transport::detail {

// Shared by a listener and its connections: a context must outlive every SSL object made from it.
using tls_context_ptr = std::shared_ptr<asio::ssl::context>;

// A server context from listen_options::tls for the endpoint `where`; null with error::tls_config
// and a sentence naming the file on failure.
tls_context_ptr make_server_context(const listen_options::tls_server_files& files, const std::string& where,
                                    error_code& ec, std::string& error_text);

// A client context from connect_options::tls; null with error::tls_config on failure.
tls_context_ptr make_client_context(const connect_options::tls_client_files& files, error_code& ec);

// Before a client handshake: SNI and the host name (or IP address) check against `host`.
error_code prepare_client(SSL* ssl, const std::string& host);

// Turns a failed client handshake into an error::tls_* code (asio codes such as timed_out and
// operation_aborted pass through).
error_code client_handshake_error(const error_code& ec, SSL* ssl);

// Read errors of an established TLS connection: a truncated close is eof, a TLS 1.3 server's
// certificate_required alert is error::tls_client_certificate_required.
error_code tls_read_error(const error_code& ec, SSL* ssl);

// Why a server handshake failed, in words (OpenSSL's reason, and the certificate check's).
std::string server_handshake_failure(const error_code& ec, SSL* ssl);

}  // namespace lmx::transport::detail
