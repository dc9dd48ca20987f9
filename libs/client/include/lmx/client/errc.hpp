#pragma once

#include <boost/system/error_code.hpp>

#include <string_view>
#include <type_traits>

namespace lmx {

// Why an lmx client operation failed. Compare with `ec == lmx::errc::timeout`; where one fits,
// a code also compares equal to the standard condition (errc::timeout == std::errc::timed_out,
// errc::cancelled == std::errc::operation_canceled, errc::refused ==
// std::errc::connection_refused, ...).
enum class errc {
    timeout = 1,          // the lock was not granted within the request's timeout
    would_block,          // try-lock (wait = false): the lock is not free now
    connection_lost,      // the connection to the broker dropped; pending operations fail with this
    unreachable,          // no broker answers at the URL (nothing more precise is known)
    broker_incompatible,  // the peer is not an lmx broker speaking our protocol version
    bad_request,          // the broker refused the request as invalid, or the client did (see diagnostics)
    not_holder,           // the lock id does not hold the key (expired, released or forced)
    cancelled,            // the operation was cancelled; nothing is left queued or held at the broker
    too_many_waiters,     // the broker's waiter limit is reached
    duplicate_request,    // the request id is in use by another request
    lock_lost,            // the hold ended (ttl or force) before the operation
    closed,               // the client was closed
    invalid_url,          // the URL cannot be parsed
    shutting_down,        // the broker is stopping
    unavailable,          // the broker grants nothing now (it cannot persist its fencing state); retry later
    lease_expired,        // the hold's lease ran out (as this client counts it, or as the broker said)
    forced,               // another client ended the hold (a force, or an unlock by its id)
    released,             // the hold ended by its guard's own release (async_wait_lost)
    not_held,             // release(key, id): that id held nothing on the key (it had already ended)
    refused,              // the broker's address refused the connection (no broker listening there)
    name_not_resolved,    // the broker's host name did not resolve
    wrong_endpoint,       // the peer answered, but not in lmx's protocol (e.g. tcp:// at a ws:// port)
    origin_refused,       // the broker refuses WebSocket connections from this origin (its --allow-origin)
    limit_reached,        // a bound of the broker: this connection's holds and waiters, or keys in total
    max_pinned,           // the broker's operator pinned the key's max; the request named another
    unauthenticated,      // the broker requires a valid token (client_options::token) and had none
    forbidden,            // the token's role does not permit the request (it needs admin)
    tls_failed,           // the TLS handshake failed: certificate untrusted, expired or for another host
};

const boost::system::error_category& client_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), client_category()}; }

// The errc for a broker `code` string (e.g. "timeout"); bad_request for codes it does not know.
errc errc_from_wire(std::string_view code) noexcept;

}  // namespace lmx

template <>
struct boost::system::is_error_code_enum<lmx::errc> : std::true_type {};
