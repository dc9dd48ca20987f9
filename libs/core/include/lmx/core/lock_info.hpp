#pragma once

// What the lock table reports about locks and the protocol writes on the wire: how a hold ended,
// watch events, a key's holders, the most contended keys. Plain data, shared by lock_table.hpp
// and protocol.hpp so that the codec does not depend on the table.

#include <lmx/core/types.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::core {

// ttl: the lease ran out; forced: another request ended it; unavailable: the broker lost its
// store (etcd) and cannot vouch for the hold any more.
enum class lost_reason : std::uint8_t { ttl, forced, unavailable };

enum class event_kind : std::uint8_t { granted, released, expired, queued, cancelled, timeout, forced };

struct key_token {
    std::string_view key{};
    fencing_token token;
};

struct holder_info {
    std::string id;
    session_id session;
    lock_mode mode;
    fencing_token token;
    std::optional<time_point> expires{};
    time_point since;
    bool keep_on_exit;
};

struct key_info {
    std::string key;
    bool exists = false;
    std::uint32_t max = 1;
    lock_mode holder_mode = lock_mode::exclusive;
    std::vector<holder_info> holders;  // at most the max_holders asked for
    std::uint32_t holder_count = 0;    // every holder, listed or not
    std::uint32_t waiters = 0;
    fencing_token last_token = 0;  // the last token granted on this key
};

struct contended_key {
    std::string key;
    std::uint32_t waiters;
    std::uint32_t holders;
};

}  // namespace lmx::core
