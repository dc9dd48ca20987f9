#include <lmx/client/errc.hpp>

#include <string>

namespace lmx {

namespace {
class category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "lmx"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::timeout: return "the lock was not granted within the timeout";
            case errc::would_block: return "the lock is not free (try-lock)";
            case errc::connection_lost: return "the connection to the broker was lost";
            case errc::unreachable: return "no broker answers at the URL";
            case errc::broker_incompatible: return "the peer is not a compatible lmx broker";
            case errc::bad_request: return "the request is invalid";
            case errc::not_holder: return "the lock id does not hold the key";
            case errc::cancelled: return "the operation was cancelled";
            case errc::too_many_waiters: return "the broker's waiter limit is reached";
            case errc::duplicate_request: return "the request id is already in use";
            case errc::lock_lost: return "the lock was lost (ttl expired or forced)";
            case errc::closed: return "the client is closed";
            case errc::invalid_url: return "the broker URL is invalid";
            case errc::shutting_down: return "the broker is shutting down";
            case errc::unavailable: return "the broker cannot grant locks now (its fencing state cannot be persisted)";
            case errc::lease_expired: return "the lock's lease ran out";
            case errc::forced: return "another client ended the lock";
            case errc::released: return "the lock was released";
            case errc::not_held: return "the lock id held nothing on the key";
            case errc::refused: return "the broker's address refused the connection";
            case errc::name_not_resolved: return "the broker's host name did not resolve";
            case errc::wrong_endpoint: return "the peer does not speak lmx's protocol";
            case errc::origin_refused:
                return "the broker refuses connections from this origin (see its --allow-origin)";
            case errc::limit_reached:
                return "a limit of the broker is reached (holds and waiters of this connection, or keys in total)";
            case errc::max_pinned: return "the broker pins this key's max; name no max, or that one";
            case errc::unauthenticated: return "the broker requires a valid token";
            case errc::forbidden: return "the token's role does not permit this request";
            case errc::tls_failed: return "the TLS handshake with the broker failed";
        }
        return "unknown lmx error " + std::to_string(ev);
    }

    // The standard condition each code stands for, where one does.
    boost::system::error_condition default_error_condition(int ev) const noexcept override {
        using std_errc = boost::system::errc::errc_t;
        auto cond = [](std_errc e) { return boost::system::errc::make_error_condition(e); };
        switch (static_cast<errc>(ev)) {
            case errc::timeout: return cond(std_errc::timed_out);
            case errc::cancelled: return cond(std_errc::operation_canceled);
            case errc::would_block: return cond(std_errc::resource_unavailable_try_again);
            case errc::unavailable: return cond(std_errc::resource_unavailable_try_again);
            case errc::too_many_waiters: return cond(std_errc::resource_unavailable_try_again);
            case errc::limit_reached: return cond(std_errc::resource_unavailable_try_again);
            case errc::connection_lost: return cond(std_errc::not_connected);
            case errc::refused: return cond(std_errc::connection_refused);
            case errc::unreachable: return cond(std_errc::host_unreachable);
            case errc::bad_request: return cond(std_errc::invalid_argument);
            case errc::invalid_url: return cond(std_errc::invalid_argument);
            case errc::wrong_endpoint: return cond(std_errc::protocol_error);
            case errc::origin_refused: return cond(std_errc::permission_denied);
            case errc::max_pinned: return cond(std_errc::operation_not_permitted);
            case errc::unauthenticated: return cond(std_errc::permission_denied);
            case errc::forbidden: return cond(std_errc::operation_not_permitted);
            case errc::tls_failed: return cond(std_errc::permission_denied);
            case errc::broker_incompatible: return cond(std_errc::protocol_error);
            default: return {ev, *this};
        }
    }
};
}  // namespace

const boost::system::error_category& client_category() noexcept {
    static const category c;
    return c;
}

errc errc_from_wire(std::string_view code) noexcept {
    if (code == "timeout") return errc::timeout;
    if (code == "cancelled") return errc::cancelled;
    if (code == "not_holder" || code == "not_found") return errc::not_holder;
    if (code == "too_many_waiters") return errc::too_many_waiters;
    if (code == "duplicate_request") return errc::duplicate_request;
    if (code == "version_mismatch") return errc::broker_incompatible;
    if (code == "shutting_down") return errc::shutting_down;
    if (code == "unavailable") return errc::unavailable;
    if (code == "limit_reached") return errc::limit_reached;
    if (code == "max_pinned") return errc::max_pinned;
    if (code == "unauthenticated") return errc::unauthenticated;
    if (code == "forbidden") return errc::forbidden;
    return errc::bad_request;
}

}  // namespace lmx
