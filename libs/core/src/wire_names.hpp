#pragma once

// Private to libs/core: the wire names of request types and rwStatus values, shared by the
// request reader and encoder (request_codec.cpp) and names.cpp.

#include <lmx/core/protocol.hpp>

#include <array>
#include <string_view>
#include <variant>

namespace lmx::core::wire {

// Indexed by the request variant's alternatives.
inline constexpr std::array<std::string_view, std::variant_size_v<request>> type_names{
    "version",
    "hello",
    "lock",
    "unlock",
    "lock-received",
    "lock-client-timeout",
    "lock-client-error",
    "lock-received-rejected",
    "cancel",
    "acquire-many",
    "release-many",
    "extend",
    "ls",
    "lock-info-request",
    "ping",
    "system-stats-request",
    "watch",
    "unwatch",
    "register-write-flag-check",
    "register-write-flag-and-readers-check",
    "increment-readers",
    "decrement-readers",
    "set-write-flag-false-and-broadcast",
    "pin",
};

inline constexpr std::array<std::string_view, 6> rw_status_names{
    "begin_read", "end_read", "begin_write", "end_write", "locking_write_key", "unlocking_write_key"};

}  // namespace lmx::core::wire
