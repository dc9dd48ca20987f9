// TLS: contexts from PEM files, error mapping, NDJSON over TLS (tls://) and its listener.

#include "tls.hpp"

#include <lmx/transport/line_buffer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cerrno>
#include <cstdio>
#include <unordered_set>

namespace lmx::transport::detail {
namespace {

using ssl_stream = asio::ssl::stream<tcp_socket>;

// OpenSSL's own message for a missing file is obscure ("system lib"): check it opens first.
bool readable(const std::string& path, const std::string& what, std::string& error_text) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) {
        error_text = "cannot read the " + what + " " + path + ": " +
                     error_code(errno, boost::system::system_category()).message();
        return false;
    }
    std::fclose(file);
    return true;
}

int ssl_reason(const error_code& ec) {
    if (ec.category() != asio::error::get_ssl_category()) return 0;
    return ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
}

// Loads the certificate (chain) and key into `ctx`; false with a sentence naming the file.
bool load_identity(asio::ssl::context& ctx, const std::string& cert_file, const std::string& key_file,
                   std::string& error_text) {
    // Without a callback OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    ctx.set_password_callback([](std::size_t, asio::ssl::context::password_purpose) { return std::string(); });
    if (!readable(cert_file, "TLS certificate", error_text)) return false;
    error_code ec;
    ctx.use_certificate_chain_file(cert_file, ec);
    if (ec) {
        error_text = "cannot load the TLS certificate " + cert_file + ": " + ec.message();
        return false;
    }
    if (!readable(key_file, "TLS key", error_text)) return false;
    ctx.use_private_key_file(key_file, asio::ssl::context::pem, ec);
    if (!ec && SSL_CTX_check_private_key(ctx.native_handle()) != 1) ec = asio::error::invalid_argument;
    if (ec) {
        if (ssl_reason(ec) == X509_R_KEY_VALUES_MISMATCH || ec == asio::error::invalid_argument)
            error_text = "the TLS key " + key_file + " does not match the certificate " + cert_file;
        else
            error_text = "cannot load the TLS key " + key_file + ": " + ec.message() +
                         (ssl_reason(ec) == EVP_R_BAD_DECRYPT || ssl_reason(ec) == PEM_R_BAD_PASSWORD_READ
                              ? " (encrypted keys are not supported)"
                              : "");
        return false;
    }
    return true;
}

void require_tls12(asio::ssl::context& ctx) {
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    SSL_CTX_set_options(ctx.native_handle(), SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
}

// Marks an SSL object whose server asked for a client certificate we did not have, so that the
// failure that follows can be told apart from other handshake failures.
int certificate_request_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}
char certificate_requested;  // its address is the mark

int note_certificate_request(SSL* ssl, X509**, EVP_PKEY**) {
    SSL_set_ex_data(ssl, certificate_request_index(), &certificate_requested);
    return 0;  // no certificate to send
}

bool certificate_was_requested(SSL* ssl) {
    return ssl && SSL_get_ex_data(ssl, certificate_request_index()) == &certificate_requested;
}

// A refusal for a missing client certificate: TLS 1.3's own alert, or the alerts TLS 1.2 servers
// send once they asked for a certificate we did not have.
bool refused_for_missing_certificate(const error_code& ec, SSL* ssl) {
    const int reason = ssl_reason(ec);
    if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) return true;
    return certificate_was_requested(ssl) &&
           (reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE || reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
            reason == SSL_R_TLSV1_ALERT_ACCESS_DENIED);
}

// The alerts a server sends about the certificate a client presented.
bool refused_our_certificate(const error_code& ec, SSL* ssl) {
    if (!ssl || SSL_is_server(ssl) || !SSL_get_certificate(ssl)) return false;
    switch (ssl_reason(ec)) {
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
        case SSL_R_TLSV1_ALERT_ACCESS_DENIED: return true;
        default: return false;
    }
}

error_code verify_error(long result) {
    switch (result) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
        case X509_V_ERR_EMAIL_MISMATCH: return error::tls_host_mismatch;
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID: return error::tls_certificate_expired;
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_CERT_UNTRUSTED:
        case X509_V_ERR_CERT_REJECTED:
        case X509_V_ERR_INVALID_CA:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE: return error::tls_certificate_untrusted;
        default: return error::tls_handshake_failed;
    }
}

std::string remote_of(const tcp_socket& socket) {
    error_code ec;
    const auto ep = socket.remote_endpoint(ec);
    return ec ? std::string("?") : format_address(ep);
}

// NDJSON over TLS: the stream connection's framing on an SSL stream.
class tls_connection final : public connection {
public:
    tls_connection(tcp_socket socket, tls_context_ptr context, std::size_t max_message_size)
        : remote_(remote_of(socket)),
          context_(std::move(context)),
          stream_(std::move(socket), *context_),
          buffer_(max_message_size) {}

    ssl_stream& stream() noexcept { return stream_; }

    asio::awaitable<error_code> read(std::vector<std::string_view>& out) override {
        const auto before = out.size();
        for (;;) {
            if (auto ec = buffer_.take(out); ec || out.size() != before) co_return ec;
            const auto space = buffer_.prepare();
            auto [ec, n] = co_await stream_.async_read_some(asio::buffer(space.data(), space.size()), use_tuple);
            if (ec) co_return tls_read_error(ec, stream_.native_handle());
            buffer_.commit(n);
        }
    }

    asio::awaitable<error_code> write(std::string_view batch) override {
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(batch.data(), batch.size()), use_tuple);
        co_return ec;
    }

    void close() noexcept override {
        error_code ignored;
        stream_.next_layer().close(ignored);
    }

    // TCP FIN without a close_notify: a TLS shutdown would read while read() does. The peer's
    // NDJSON reader takes the end of the stream after a whole line as the end.
    asio::awaitable<error_code> goodbye(std::uint16_t, std::string_view) override {
        error_code ec;
        stream_.next_layer().shutdown(tcp_socket::shutdown_send, ec);
        co_return ec;
    }

    const skipped_line* skipped() const noexcept override { return &buffer_.skipped(); }
    std::string remote_address() const override { return remote_; }
    endpoint::kind kind() const noexcept override { return endpoint::kind::tcp; }
    executor get_executor() override { return stream_.get_executor(); }

private:
    std::string remote_;
    tls_context_ptr context_;  // before stream_: outlives the SSL object
    ssl_stream stream_;
    line_buffer buffer_;
};

// Outlives the listener object while handshakes still run.
struct tls_listener_state {
    listen_options options;
    tls_context_ptr context;
    std::function<void(std::unique_ptr<connection>)> on_connection;
    std::unordered_set<tcp_socket*> pending;  // in the handshake; closed with the listener
    std::size_t handshakes = 0;
    bool closed = false;
};

void report(const tls_listener_state& state, const std::string& text) {
    if (state.options.on_error) state.options.on_error(text);
}

asio::awaitable<void> server_handshake(std::shared_ptr<tls_listener_state> state, tcp_socket socket) {
    using namespace asio::experimental::awaitable_operators;
    auto conn = std::make_unique<tls_connection>(std::move(socket), state->context, state->options.max_message_size);
    struct registration {
        tls_listener_state& state;
        tcp_socket* socket;
        ~registration() {
            if (socket) state.pending.erase(socket);
            --state.handshakes;
        }
    } registered{*state, &conn->stream().next_layer()};
    state->pending.insert(registered.socket);

    asio::steady_timer timer(conn->get_executor(), state->options.handshake_timeout);
    auto result = co_await (conn->stream().async_handshake(asio::ssl::stream_base::server, use_tuple) ||
                            timer.async_wait(use_tuple));
    if (state->closed) co_return;
    if (result.index() == 1) {
        report(*state, "TLS handshake with " + conn->remote_address() + " failed: no handshake within " +
                           std::to_string(state->options.handshake_timeout.count()) + " ms");
        co_return;
    }
    if (const auto ec = std::get<0>(std::get<0>(result))) {
        report(*state, "TLS handshake with " + conn->remote_address() +
                           " failed: " + server_handshake_failure(ec, conn->stream().native_handle()));
        co_return;
    }
    // Handed over: no longer the listener's to close, even if on_connection closes the listener.
    state->pending.erase(registered.socket);
    registered.socket = nullptr;
    if (state->on_connection) state->on_connection(std::move(conn));
}

// A failure inside one handshake drops that connection only; the listener goes on.
asio::awaitable<void> server_handshake_guarded(std::shared_ptr<tls_listener_state> state, tcp_socket socket) {
    std::string what;
    try {
        co_await server_handshake(state, std::move(socket));
    } catch (const std::exception& e) {
        what = e.what();
    } catch (...) {
        what = "unknown exception";
    }
    if (!what.empty()) report(*state, "TLS connection dropped: " + what);
}

class tls_listener final : public listener {
public:
    tls_listener(executor ex, listen_options options, tls_context_ptr context)
        : accept_(std::make_shared<accept_state<tcp>>(ex)), state_(std::make_shared<tls_listener_state>()) {
        state_->options = std::move(options);
        state_->context = std::move(context);
    }
    ~tls_listener() override { close(); }

    tcp_acceptor& acceptor() { return accept_->acceptor; }
    const listen_options& options() const { return state_->options; }
    void set_local(endpoint ep) { local_ = std::move(ep); }

    asio::awaitable<void> run(std::function<void(std::unique_ptr<connection>)> on_connection) override {
        // A copy: after the first suspension this listener may already be closed and destroyed.
        auto state = state_;
        state->on_connection = std::move(on_connection);
        auto accept = accept_;
        auto handle = [state](tcp_socket socket) {
            if (!admit_handshake(socket, state->options, state->handshakes,
                                 "too many connections in the TLS handshake; one closed"))
                return;
            auto ex = socket.get_executor();
            asio::co_spawn(ex, server_handshake_guarded(state, std::move(socket)), asio::detached);
        };
        co_await accept_loop(std::move(accept), std::move(handle));
    }

    void close() noexcept override {
        accept_->close();
        state_->closed = true;
        for (auto* socket : state_->pending) {
            error_code ignored;
            socket->close(ignored);
        }
    }

    endpoint local_endpoint() const override { return local_; }

private:
    std::shared_ptr<accept_state<tcp>> accept_;
    std::shared_ptr<tls_listener_state> state_;
    endpoint local_;
};

}  // namespace

tls_context_ptr make_server_context(const listen_options::tls_server_files& files, const std::string& where,
                                    error_code& ec, std::string& error_text) {
    auto fail = [&](std::string text) -> tls_context_ptr {
        ec = error::tls_config;
        error_text = std::move(text);
        return nullptr;
    };
    if (files.cert_file.empty() || files.key_file.empty())
        return fail("cannot listen on " + where + ": TLS needs a certificate file and a key file");
    auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    require_tls12(*context);
    std::string text;
    if (!load_identity(*context, files.cert_file, files.key_file, text)) return fail(std::move(text));
    auto* native = context->native_handle();
    if (!files.client_ca_file.empty()) {
        if (!readable(files.client_ca_file, "TLS client CA file", text)) return fail(std::move(text));
        error_code load;
        context->load_verify_file(files.client_ca_file, load);
        STACK_OF(X509_NAME)* names = load ? nullptr : SSL_load_client_CA_file(files.client_ca_file.c_str());
        if (load || !names)
            return fail("cannot load the TLS client CA file " + files.client_ca_file + ": " +
                        (load ? load.message() : std::string("no certificate in it")));
        SSL_CTX_set_client_CA_list(native, names);  // tells clients which CAs we accept
        context->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    }
    // Session resumption with verified clients needs a session id context.
    static constexpr unsigned char session_context[] = "lmx";
    SSL_CTX_set_session_id_context(native, session_context, sizeof session_context - 1);
    return context;
}

tls_context_ptr make_client_context(const connect_options::tls_client_files& files, error_code& ec) {
    ec.clear();
    const std::string ca_file(files.ca_file), cert_file(files.cert_file), key_file(files.key_file);
    auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    require_tls12(*context);
    context->set_verify_mode(asio::ssl::verify_peer);
    std::string ignored;
    if (!ca_file.empty()) {
        if (!readable(ca_file, "TLS CA file", ignored)) ec = error::tls_config;
        if (!ec) context->load_verify_file(ca_file, ec);
    } else {
        context->set_default_verify_paths(ec);
    }
    if (!ec && cert_file.empty() != key_file.empty()) ec = error::tls_config;
    if (!ec && !cert_file.empty() && !load_identity(*context, cert_file, key_file, ignored)) ec = error::tls_config;
    if (ec) {
        ec = error::tls_config;
        return nullptr;
    }
    if (cert_file.empty()) SSL_CTX_set_client_cert_cb(context->native_handle(), note_certificate_request);
    return context;
}

error_code prepare_client(SSL* ssl, const std::string& host) {
    // An IPv6 zone id is local to this machine and never part of a certificate.
    const std::string bare = host.substr(0, host.find('%'));
    error_code not_ip;
    asio::ip::make_address(bare, not_ip);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (!not_ip) {
        // No SNI for addresses (RFC 6066); the certificate must list the address itself.
        if (X509_VERIFY_PARAM_set1_ip_asc(param, bare.c_str()) != 1) return error::invalid_endpoint;
        return {};
    }
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, host.c_str()) != 1 || SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)
        return error::invalid_endpoint;
    return {};
}

error_code client_handshake_error(const error_code& ec, SSL* ssl) {
    if (!ec || ec == asio::error::operation_aborted || ec == asio::error::timed_out) return ec;
    if (const long result = SSL_get_verify_result(ssl); result != X509_V_OK) return verify_error(result);
    if (refused_for_missing_certificate(ec, ssl)) return error::tls_client_certificate_required;
    if (refused_our_certificate(ec, ssl)) return error::tls_client_certificate_refused;
    if (ec.category() == asio::error::get_ssl_category() || ec == asio::ssl::error::stream_truncated ||
        ec == asio::error::eof)
        return error::tls_handshake_failed;
    return ec;  // socket errors (reset, ...) keep their codes
}

error_code tls_read_error(const error_code& ec, SSL* ssl) {
    if (ec == asio::ssl::error::stream_truncated) return asio::error::eof;
    if (refused_for_missing_certificate(ec, ssl)) return error::tls_client_certificate_required;
    if (refused_our_certificate(ec, ssl)) return error::tls_client_certificate_refused;
    return ec;
}

std::string server_handshake_failure(const error_code& ec, SSL* ssl) {
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
        return "the peer closed the connection during the handshake";
    if (const long result = SSL_get_verify_result(ssl); result != X509_V_OK)
        return std::string("the client's certificate was refused: ") + X509_verify_cert_error_string(result);
    switch (ssl_reason(ec)) {
        case 0: return ec.message();
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: return "the client presented no certificate and one is required";
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST: return "plain HTTP where TLS was expected";
        case SSL_R_WRONG_VERSION_NUMBER: return "not TLS, or TLS older than 1.2";
        case SSL_R_UNSUPPORTED_PROTOCOL: return "the client offers only TLS older than 1.2";
        default: break;
    }
    // OpenSSL's reason alone, without Asio's "(SSL routines)".
    const char* reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    return reason ? std::string(reason) : ec.message();
}

std::unique_ptr<listener> open_tls_listener(executor ex, const endpoint& ep, listen_options options, error_code& ec,
                                            std::string& error_text) {
    auto context = make_server_context(options.tls, to_string(ep), ec, error_text);
    if (!context) return nullptr;
    auto result = std::make_unique<tls_listener>(ex, std::move(options), std::move(context));
    if (!open_tcp_acceptor(result->acceptor(), ep, result->options(), ec, error_text)) return nullptr;
    result->set_local(bound_endpoint(result->acceptor(), ep));
    return result;
}

asio::awaitable<std::pair<error_code, std::unique_ptr<connection>>> connect_tls(executor ex, endpoint ep,
                                                                                connect_options options) {
    const auto cancellation = co_await asio::this_coro::cancellation_state;
    error_code ec;
    auto context = make_client_context(options.tls, ec);
    if (!context) co_return std::pair{ec, std::unique_ptr<connection>()};
    auto [cec, socket] = co_await connect_tcp(ex, ep, options.no_delay);
    if (cec) co_return std::pair{cec, std::unique_ptr<connection>()};
    auto conn = std::make_unique<tls_connection>(std::move(socket), std::move(context), options.max_message_size);
    auto* ssl = conn->stream().native_handle();
    if (auto pec = prepare_client(ssl, ep.host)) co_return std::pair{pec, std::unique_ptr<connection>()};
    auto [hec] = co_await conn->stream().async_handshake(asio::ssl::stream_base::client, use_tuple);
    if (!hec && stop_requested(cancellation)) hec = asio::error::operation_aborted;
    if (hec) co_return std::pair{client_handshake_error(hec, ssl), std::unique_ptr<connection>()};
    co_return std::pair{error_code{}, std::unique_ptr<connection>(std::move(conn))};
}

}  // namespace lmx::transport::detail
