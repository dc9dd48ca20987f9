#pragma once

#include <boost/system/error_code.hpp>

#include <string_view>
#include <type_traits>

namespace lmx {

// Why an lmx client operation failed. Compare with `ec == lmx::errc::timeout`.
enum class errc {
    timeout = 1,          // the lock was not granted within the request's timeout
    would_block,          // try-lock (wait = false): the lock is not free now
    connection_lost,      // the connection to the broker dropped; pending operations fail with this
    unreachable,          // no broker answers at the URL
    broker_incompatible,  // the peer is not an lmx broker speaking our protocol version
    bad_request,          // the broker refused the request as invalid (see the message)
    not_holder,           // the lock id does not hold the key (expired, released or forced)
    cancelled,            // the operation was cancelled; nothing is left queued or held at the broker
    too_many_waiters,     // the broker's waiter limit is reached
    duplicate_request,    // the request id is in use by another request
    lock_lost,            // the hold ended (ttl or force) before the operation
    closed,               // the client was closed
    invalid_url,          // the URL cannot be parsed
    shutting_down,        // the broker is stopping
    unavailable,          // the broker grants nothing now (it cannot persist its fencing state); retry later
};

const boost::system::error_category& client_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), client_category()};
}

// The errc for a broker `code` string (e.g. "timeout"); bad_request for codes it does not know.
errc errc_from_wire(std::string_view code) noexcept;

}  // namespace lmx

template <>
struct boost::system::is_error_code_enum<lmx::errc> : std::true_type {};
