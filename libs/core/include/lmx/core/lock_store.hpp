#pragma once

// The seam between the broker's lock service and where lock state lives. The in-memory
// lock_table is one store; a store shared by several brokers plugs in here too. A store is a
// state machine driven by plain calls with the current time passed in: what a call decides at
// once it returns, and every outcome that concerns a session (grants, queue notices, refusals,
// rejections, lost holds, watch events) goes to the effect_sink it was built with, now or later.

#include <lmx/core/lock_info.hpp>
#include <lmx/core/types.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::core {

// The operator's `max` for every key that starts with `prefix` (the longest matching prefix wins):
// requests naming another max are refused with errc::max_pinned.
struct key_pin {
    std::string prefix;
    std::uint32_t max = 1;
};

struct table_config {
    std::chrono::milliseconds default_ttl{5000};
    std::uint32_t max_waiters = 1'000'000;         // all keys together
    std::uint32_t max_session_requests = 100'000;  // holds and waiting requests of one session
    std::uint64_t max_keys = 10'000'000;           // keys in the table (held or waited for)
    std::vector<key_pin> pins{};
    fencing_token fencing_seed = 0;  // the first grant gets seed + 1
};

struct acquire_request {
    session_id session = 0;
    std::string_view id{};  // request uuid; becomes the lock id
    std::string_view key{};
    std::optional<std::chrono::milliseconds> ttl{};  // unset: table default; no_expiry: never expires
    std::optional<std::uint32_t> max{};              // unset: keep the key's max (1 for a new key)
    bool wait = true;                                // false: try-lock, never queued
    std::optional<time_point> wait_deadline{};       // when a queued request gives up
    lock_mode mode = lock_mode::exclusive;
    bool keep_on_exit = false;
    bool queued_notice = true;  // false: the queued effect for this request says notice = false
};

struct acquire_many_request {
    session_id session = 0;
    std::string_view id{};
    std::span<const std::string_view> keys{};  // any order, duplicates allowed
    std::optional<std::chrono::milliseconds> ttl{};
    bool wait = true;
    std::optional<time_point> wait_deadline{};
    bool keep_on_exit = false;
};

enum class effect_kind : std::uint8_t {
    granted,  // request `id` now holds `key` (or all `keys` of a multi request)
    queued,   // request `id` waits; `waiters` is the queue length, `position` its place (1 = next;
    // exact in a first notice, an upper bound when re-sent, see queue_position)
    refused,    // try-lock not granted
    rejected,   // request ended without a grant: see `code`
    lock_lost,  // hold `id` ended without its owner's unlock: see `reason`
    event,      // watch stream: see `event`
};

// Views inside an effect are valid only during the on_effect call.
struct effect {
    effect_kind kind{};
    session_id session = 0;  // 0: the hold's session has closed (keep-on-exit hold)
    std::string_view id{};
    std::string_view key{};             // for multi requests: the contended key, if any
    std::span<const key_token> keys{};  // multi requests: every key (tokens when granted)
    bool multi = false;
    bool repeat = false;  // re-sent state for a repeated request id (nothing changed)
    // queued: false when the request asked for no queued notice (acquire_request::queued_notice);
    // its client waits for the grant or the refusal alone.
    bool notice = true;
    fencing_token token = 0;
    std::uint32_t waiters = 0;            // lockRequestCount: requests still queued on `key`
    std::uint32_t readers = 0;            // shared holders on `key`
    std::uint32_t position = 0;           // queued: 1-based place in line
    std::optional<time_point> expires{};  // granted: lease end (none: no expiry)
    time_point::duration waited{};        // granted: time spent in the queue
    errc code = errc::ok;                 // rejected
    lost_reason reason{};                 // lock_lost
    event_kind event{};                   // event
};

class effect_sink {
public:
    virtual ~effect_sink() = default;
    virtual void on_effect(const effect& e) = 0;
    // Called before the table hands out tokens up to `needed` when `needed` passes the last
    // reservation. Returns the new reservation ceiling (tokens up to it may be handed out without
    // asking again). The broker persists the ceiling here so that tokens never go backwards
    // across a restart. A ceiling below `needed` (or an exception) means the reservation failed:
    // the table then grants nothing until resume_grants() succeeds, and it changes nothing
    // before it knows it has the tokens, so a failure never leaves a request half-granted.
    // The default reserves everything.
    virtual fencing_token reserve_tokens(fencing_token needed);
};

enum class release_status : std::uint8_t {
    released,          // the hold ended now
    withdrawn,         // the id was still waiting; it is removed from the queue
    already_released,  // unknown id or key (late unlock after ttl/force): harmless
    not_holder,        // force with an id that does not hold the key
};

struct release_result {
    release_status status;
    std::uint32_t waiters = 0;   // still queued on the key afterwards
    std::uint32_t released = 0;  // holds ended (force without id may end several)
};

struct extend_result {
    errc code = errc::ok;                 // not_holder when the hold is gone
    std::optional<time_point> expires{};  // none: no expiry
};

struct release_many_result {
    errc code = errc::ok;
    std::vector<std::string> keys;  // sorted
};

struct table_counters {
    std::uint64_t grants = 0;
    std::uint64_t releases = 0;
    std::uint64_t expirations = 0;  // holds ended by ttl
    std::uint64_t timeouts = 0;     // waiters removed at their wait deadline
    std::uint64_t forced = 0;       // holds ended by force
    std::uint64_t refused = 0;      // try-locks not granted
    std::uint64_t queued = 0;       // requests that had to wait
    std::uint64_t cancelled = 0;    // waiters withdrawn (cancel, client give-up, disconnect)
    std::uint64_t rejected = 0;     // requests refused for bad input or limits
    std::uint64_t keys = 0;         // current
    std::uint64_t holders = 0;      // current
    std::uint64_t waiters = 0;      // current
    std::uint64_t sessions = 0;     // current, with anything held or queued
};

// One page of key names: resume from `next` (slot order, stable while a key lives) until unset.
struct key_page {
    std::vector<std::string> keys;
    std::optional<std::uint64_t> next;
};

class lock_store {
public:
    virtual ~lock_store() = default;

    // Outcome goes to the sink (granted / queued / refused / rejected) and is also returned.
    // A repeated id of the same session on the same key re-sends the current state
    // (granted again or queued again) and changes nothing.
    virtual effect_kind acquire(const acquire_request& r, time_point now) = 0;
    virtual effect_kind acquire_many(const acquire_many_request& r, time_point now) = 0;

    // `by`: the session asking. When it is not the owner's, the owner is told: a hold gets a
    // lock_lost(forced) notice, a waiting request a rejection with errc::cancelled.
    virtual release_result release(std::string_view key, std::string_view id, time_point now,
                                   std::optional<session_id> by = std::nullopt) = 0;
    // No id: every holder of `key` loses it. With an id: only that hold, and only if it holds.
    virtual release_result force_release(std::string_view key, std::optional<std::string_view> id, time_point now) = 0;
    // `by` as for release(): another session ending the request tells its owner (lock_lost for
    // a hold, rejected with errc::cancelled for a waiting request).
    virtual release_many_result release_many(std::string_view id, time_point now,
                                             std::optional<session_id> by = std::nullopt) = 0;
    // Releases one single-key hold of `session` on `key` (any, when it holds several slots).
    virtual release_result release_own(session_id session, std::string_view key, time_point now) = 0;

    // Withdraws a waiting request of `session`. False when it is not waiting (granted or unknown).
    virtual bool cancel(session_id session, std::string_view id, time_point now) = 0;
    // The client gave up on request `id` (live-mutex lock-client-timeout / lock-received-rejected):
    // withdraw it if it waits, release it if it was granted meanwhile.
    virtual void abandon(session_id session, std::string_view id, time_point now) = 0;

    virtual extend_result extend(std::string_view key, std::string_view id,
                                 std::optional<std::chrono::milliseconds> ttl, time_point now) = 0;

    // Removes every waiter of the session and releases its holds except keep-on-exit ones.
    virtual void close_session(session_id session, time_point now) = 0;
    // Holds and waiting requests of `session` (a multi-key request counts once).
    virtual std::uint32_t session_requests(session_id session) const noexcept = 0;

    // Ends leases and wait timeouts due at `now`.
    virtual void expire(time_point now) = 0;
    // The earliest pending lease end or wait deadline.
    virtual std::optional<time_point> next_deadline() = 0;

    // True after a token reservation failed: every new acquire is rejected with
    // errc::unavailable and queued requests stay queued, while releases, cancels, extends and
    // expiry go on. resume_grants() reserves again; on success it hands out what waited and
    // returns true.
    virtual bool grants_stalled() const noexcept = 0;
    virtual bool resume_grants(time_point now) = 0;

    // Watch events cost a call per operation; they are emitted only while enabled.
    virtual void set_events(bool enabled) noexcept = 0;

    // Pins the max of keys starting with `prefix` (replacing a pin of the same prefix), or with
    // no max removes it. Applies from the next request on each key; holds stay as they are.
    virtual void set_pin(std::string_view prefix, std::optional<std::uint32_t> max) = 0;

    // Up to `limit` keys from `cursor` on.
    virtual key_page list_keys(std::uint64_t cursor, std::size_t limit) const = 0;
    virtual key_info info(std::string_view key, std::size_t max_holders = static_cast<std::size_t>(-1)) const = 0;
    virtual table_counters counters() const noexcept = 0;
    virtual std::vector<contended_key> top_contended(std::size_t n) const = 0;
    virtual fencing_token last_token() const noexcept = 0;
};

}  // namespace lmx::core
