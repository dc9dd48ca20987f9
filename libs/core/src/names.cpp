// Wire names of the protocol's enums and request types.

#include "wire_names.hpp"

#include <lmx/core/protocol.hpp>

namespace lmx::core {

std::string_view to_string(errc c) noexcept {
    switch (c) {
        case errc::ok: return "ok";
        case errc::bad_request: return "bad_request";
        case errc::timeout: return "timeout";
        case errc::cancelled: return "cancelled";
        case errc::too_many_waiters: return "too_many_waiters";
        case errc::duplicate_request: return "duplicate_request";
        case errc::not_holder: return "not_holder";
        case errc::not_found: return "not_found";
        case errc::message_too_large: return "message_too_large";
        case errc::too_many_keys: return "too_many_keys";
        case errc::key_too_long: return "key_too_long";
        case errc::unknown_type: return "unknown_type";
        case errc::version_mismatch: return "version_mismatch";
        case errc::shutting_down: return "shutting_down";
        case errc::unavailable: return "unavailable";
        case errc::limit_reached: return "limit_reached";
        case errc::max_pinned: return "max_pinned";
        case errc::unauthenticated: return "unauthenticated";
        case errc::forbidden: return "forbidden";
    }
    return "unknown";
}

std::string_view default_message(errc c) noexcept {
    switch (c) {
        case errc::ok: return "success";
        case errc::bad_request: return "bad request";
        case errc::timeout: return "timed out waiting for the lock";
        case errc::cancelled: return "the request was cancelled";
        case errc::too_many_waiters: return "too many requests are waiting";
        case errc::duplicate_request: return "the request id is already in use";
        case errc::not_holder: return "the lock id does not hold this key";
        case errc::not_found: return "no such lock id";
        case errc::message_too_large: return "message too large";
        case errc::too_many_keys: return "too many keys";
        case errc::key_too_long: return "key too long";
        case errc::unknown_type: return "unknown message type";
        case errc::version_mismatch: return "incompatible client version";
        case errc::shutting_down: return "the broker is shutting down";
        case errc::unavailable: return "the broker cannot grant locks now (its fencing state cannot be persisted)";
        case errc::limit_reached:
            return "a limit of the broker is reached (holds and waiters of this connection, or keys in total)";
        case errc::max_pinned: return "the key's max is pinned by the broker (--key-max): name no max, or that one";
        case errc::unauthenticated: return "the broker requires authentication: a valid token in the hello";
        case errc::forbidden: return "this connection's role does not permit the request";
    }
    return "unknown error";
}

std::string_view to_string(lock_mode m) noexcept { return m == lock_mode::shared ? "shared" : "exclusive"; }

std::string_view to_string(lost_reason r) noexcept {
    switch (r) {
        case lost_reason::forced: return "forced";
        case lost_reason::unavailable: return "unavailable";
        case lost_reason::ttl: break;
    }
    return "ttl";
}

std::string_view to_string(rw_status s) noexcept {
    switch (s) {
        case rw_status::begin_read: return "begin_read";
        case rw_status::end_read: return "end_read";
        case rw_status::begin_write: return "begin_write";
        case rw_status::end_write: return "end_write";
        case rw_status::locking_write_key: return "locking_write_key";
        case rw_status::unlocking_write_key: return "unlocking_write_key";
    }
    return "unknown";
}

std::string_view to_string(event_kind e) noexcept {
    switch (e) {
        case event_kind::granted: return "granted";
        case event_kind::released: return "released";
        case event_kind::expired: return "expired";
        case event_kind::queued: return "queued";
        case event_kind::cancelled: return "cancelled";
        case event_kind::timeout: return "timeout";
        case event_kind::forced: return "forced";
    }
    return "unknown";
}

std::optional<errc> errc_from_string(std::string_view s) noexcept {
    for (auto i = static_cast<unsigned>(errc::ok); i <= static_cast<unsigned>(errc::forbidden); ++i) {
        auto c = static_cast<errc>(i);
        if (to_string(c) == s) return c;
    }
    return std::nullopt;
}

std::string_view type_name(const request& r) noexcept { return wire::type_names[r.index()]; }

}  // namespace lmx::core
