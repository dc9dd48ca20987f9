#include <lmx/transport/error.hpp>

#include <string>

namespace lmx::transport {
namespace {

// boost::system::error_category has a protected non-virtual destructor by design; instances
// are never deleted through the base.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "lmx.transport"; }

    std::string message(int ev) const override {
        switch (static_cast<error>(ev)) {
            case error::message_too_large: return "message too large";
            case error::message_skipped: return "a line over the message size limit was skipped";
            case error::bad_frame: return "bad frame";
            case error::origin_refused: return "websocket upgrade refused (HTTP 403)";
            case error::upgrade_declined: return "websocket upgrade declined by the server";
            case error::not_a_socket: return "path exists and is not a socket";
            case error::invalid_endpoint: return "invalid endpoint";
            case error::tls_certificate_untrusted:
                return "the server's TLS certificate is not signed by a trusted certificate authority";
            case error::tls_certificate_expired: return "the server's TLS certificate has expired or is not valid yet";
            case error::tls_host_mismatch: return "the server's TLS certificate is for another host name";
            case error::tls_client_certificate_required:
                return "the server requires a TLS client certificate and none was configured";
            case error::tls_client_certificate_refused: return "the server refused our TLS client certificate";
            case error::tls_handshake_failed: return "TLS handshake failed";
            case error::tls_config: return "cannot use the local TLS files (CA, certificate or key)";
        }
        return "unknown lmx.transport error " + std::to_string(ev);
    }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& error_category() noexcept {
    static const category instance;
    return instance;
}

}  // namespace lmx::transport
