#pragma once

// Broker replies as the client acts on them: one type per meaning, decoded once from the frame
// (decode_reply). The flat `reply` of protocol.hpp is what the wire reader fills; classify() is
// the one place that turns its fields into a meaning, so that nothing after it tests type
// strings or flags.

#include <lmx/core/protocol.hpp>

#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace lmx::core {

namespace rep {

// lock: granted, with its fencing token.
struct granted {
    std::string uuid;
    std::string key;
    fencing_token token = 0;
    bool operator==(const granted&) const = default;
};

// acquire-many: every key granted, one token per key.
struct granted_many {
    std::string uuid;
    std::vector<std::string> keys;
    std::vector<std::pair<std::string, fencing_token>> tokens;  // in frame order
    bool operator==(const granted_many&) const = default;
};

// lock or acquire-many: the request waits in line (`position`, 1 = next; 0: not told).
struct queued {
    std::string uuid;
    std::uint32_t position = 0;
    bool operator==(const queued&) const = default;
};

// lock or acquire-many: not granted and not waiting (a try-lock found the key taken).
struct refused {
    std::string uuid;
    std::optional<std::string> contended_key;  // acquire-many: a key that was taken
    bool operator==(const refused&) const = default;
};

// unlock: `ok` false when the id does not hold the key; `held` false when the id held nothing
// (an unlock is idempotent on the wire); `warned` when the broker added a warning (an unlock of
// a hold that had already ended).
struct unlocked {
    std::string uuid;
    bool ok = false;
    bool held = true;
    bool warned = false;
    bool operator==(const unlocked&) const = default;
};

// release-many.
struct released {
    std::string uuid;
    bool ok = false;
    bool operator==(const released&) const = default;
};

// extend.
struct extended {
    std::string uuid;
    bool ok = false;
    std::optional<std::chrono::milliseconds> expires_in;  // no_expiry: the hold has no lease now
    bool operator==(const extended&) const = default;
};

// cancel: the answer to a withdrawal (any answer to its target came before it).
struct cancelled {
    std::string uuid;
    bool ok = false;  // something was withdrawn
    bool operator==(const cancelled&) const = default;
};

// lock-lost: the hold of request `uuid` ended at the broker.
struct lock_lost {
    std::string uuid;
    std::string key;
    std::string reason;  // ttl, forced, ...
    bool operator==(const lock_lost&) const = default;
};

// event: a watched key changed.
struct event {
    std::string uuid;
    std::string key;
    std::string name;  // granted, released, ...
    fencing_token token = 0;
    std::uint32_t waiters = 0;
    bool operator==(const event&) const = default;
};

// hello: the broker's side of the handshake.
struct hello {
    std::string uuid;
    std::uint32_t protocol = 0;
    std::string broker;
    std::string session;
    std::string epoch;
    std::optional<codec_limits> limits;
    std::vector<std::string> features;
    bool operator==(const hello&) const = default;
};

// ls: one page of key names; `cursor` starts the next page, when there is one.
struct keys_page {
    std::string uuid;
    std::vector<std::string> keys;
    std::optional<std::uint64_t> cursor;
    bool operator==(const keys_page&) const = default;
};

// lock-info-response.
struct key_state {
    std::string uuid;
    std::string key;
    bool locked = false;
    std::vector<std::string> holders;
    std::uint32_t waiters = 0;
    std::uint32_t max = 1;
    fencing_token last_token = 0;
    bool operator==(const key_state&) const = default;
};

// system-stats-response.
struct stats {
    std::string uuid;
    boost::json::object figures;
    bool operator==(const stats&) const = default;
};

// pong.
struct pong {
    std::string uuid;
    bool operator==(const pong&) const = default;
};

// Any request refused with an error (`code` is the wire code, see errc_from_wire; `type` the
// reply's type, "error" for a frame the broker could not read).
struct failed {
    std::string uuid;
    std::string type;
    std::string code;
    std::string message;
    bool operator==(const failed&) const = default;
};

// A plain acknowledgement the client reads nothing from (watch, unwatch, pin), or a reply of
// another broker (live-mutex's version-mismatch).
struct other {
    std::string uuid;
    std::string type;
    bool operator==(const other&) const = default;
};

}  // namespace rep

// Default-constructed: rep::other, a reply that says nothing.
using typed_reply = std::variant<rep::other, rep::granted, rep::granted_many, rep::queued, rep::refused, rep::unlocked,
                                 rep::released, rep::extended, rep::cancelled, rep::lock_lost, rep::event, rep::hello,
                                 rep::keys_page, rep::key_state, rep::stats, rep::pong, rep::failed>;

// The request id a reply answers (empty for frames that name none).
const std::string& reply_uuid(const typed_reply& r) noexcept;
std::string& reply_uuid(typed_reply& r) noexcept;

// What the fields of a reply mean.
typed_reply classify(reply&& r);

using typed_reply_result = decode_result<typed_reply>;

// parse_reply, then classify.
typed_reply_result decode_reply(std::string_view frame);

}  // namespace lmx::core
