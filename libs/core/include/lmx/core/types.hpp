#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

namespace lmx::core {

using session_id = std::uint64_t;
using fencing_token = std::uint64_t;
// Time is always passed in; the core never reads a clock. Any monotonic clock's epoch works.
using time_point = std::chrono::steady_clock::time_point;

// Fencing tokens stay at or below this (2^53 - 1), so every JSON reader reads them exactly.
inline constexpr fencing_token max_fencing_token = (fencing_token{1} << 53) - 1;

// A ttl meaning "this hold never expires" (live-mutex: `ttl: null`).
inline constexpr std::chrono::milliseconds no_expiry = std::chrono::milliseconds::max();

enum class lock_mode : std::uint8_t { exclusive, shared };

// live-mutex's read/write-lock clients tag their lock and unlock requests (`rwStatus`).
enum class rw_status : std::uint8_t {
    begin_read,
    end_read,
    begin_write,
    end_write,
    locking_write_key,
    unlocking_write_key
};

// Machine-readable failure codes; their names are the wire `code` strings.
enum class errc : std::uint8_t {
    ok = 0,
    bad_request,        // malformed or invalid input
    timeout,            // waited past the request's timeout
    cancelled,          // withdrawn by cancel, client give-up or disconnect
    too_many_waiters,   // the broker's waiter limit is reached
    duplicate_request,  // the request id is in use by another request
    not_holder,         // the given lock id does not hold the key
    not_found,          // no such lock id
    message_too_large,  // frame over the size limit
    too_many_keys,      // acquire-many over the keys limit
    key_too_long,       // key over the length limit
    unknown_type,       // unknown message type
    version_mismatch,   // incompatible client version
    shutting_down,      // the broker is stopping
    unavailable,        // the broker cannot grant now (its fencing state cannot be persisted)
    limit_reached,      // a bound of the broker: this connection's holds and waiters, or keys in total
    max_pinned,         // the request names a max other than the one the operator pinned for the key
    unauthenticated,    // the broker requires a token (or a permitted unix peer) before anything else
    forbidden,          // the connection's role does not permit this request
};

std::string_view to_string(errc c) noexcept;
std::string_view default_message(errc c) noexcept;
std::string_view to_string(lock_mode m) noexcept;

}  // namespace lmx::core
