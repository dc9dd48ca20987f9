#pragma once

// The seam between the broker's lock service and where lock state lives. The in-memory store
// (memory_store over a lock_table) is one; a store shared by several brokers plugs in here too.
// A store is driven by plain calls with the current time passed in, and it answers through the
// effect_sink it was built with, now or later: every outcome that concerns a session (grants,
// queue notices, refusals, rejections, lost holds, watch events) and the answer to every call
// that changes state (unlocked, extended, released_many, cancelled, addressed by a reply_to).
// So a store may answer only once a shared log has committed a change; the in-memory store
// answers before the call returns, after the grants and notices the call caused.

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

// Who a state-changing call answers: the asking session and the uuid of its request. An empty
// uuid asks for no answer (the effect still comes, and its receiver drops it).
enum class answer_style : std::uint8_t {
    plain,
    // live-mutex's end of a write (rwStatus end-write): finding no hold of the session is no error.
    rw_end_write,
};

struct reply_to {
    session_id session = 0;
    std::string_view uuid{};
    answer_style style = answer_style::plain;
};

enum class release_status : std::uint8_t {
    released,          // the hold ended now
    withdrawn,         // the id was still waiting; it is removed from the queue
    already_released,  // unknown id or key (late unlock after ttl/force): harmless
    not_holder,        // force with an id that does not hold the key
};

enum class effect_kind : std::uint8_t {
    granted,  // request `id` now holds `key` (or all `keys` of a multi request)
    queued,   // request `id` waits; `waiters` is the queue length, `position` its place (1 = next;
    // exact in a first notice, an upper bound when re-sent, see queue_position)
    refused,    // try-lock not granted
    rejected,   // request ended without a grant: see `code`
    lock_lost,  // hold `id` ended without its owner's unlock: see `reason`
    event,      // watch stream: see `event`
    // Answers to calls, addressed to `session` with the request's `uuid`:
    unlocked,       // release / force_release / release_own: `status`, `waiters`, `released`
    extended,       // extend: `code`, `lease`
    released_many,  // release_many: `code`, `names`
    cancelled,      // cancel: `done`
};

// Whether `k` answers a call (as opposed to telling a session what happened to its request).
constexpr bool is_answer(effect_kind k) noexcept { return k >= effect_kind::unlocked; }

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
    time_point since{};                   // event of a hold: when it was granted (stores that keep it)
    // Answers (is_answer(kind)):
    std::string_view uuid{};  // the request answered
    answer_style style = answer_style::plain;
    release_status status{};                           // unlocked
    std::uint32_t released = 0;                        // unlocked: holds ended (force without id may end several)
    std::optional<std::chrono::milliseconds> lease{};  // extended: the new lease from now (none: no expiry)
    std::span<const std::string> names{};              // released_many: the keys, sorted
    bool done = false;                                 // cancelled: the request was waiting and is withdrawn
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

    // The outcome goes to the sink: granted, queued, refused or rejected. A repeated id of the
    // same session on the same key re-sends the current state (granted again or queued again)
    // and changes nothing.
    virtual void acquire(const acquire_request& r, time_point now) = 0;
    virtual void acquire_many(const acquire_many_request& r, time_point now) = 0;

    // The calls below answer `to` with one answer effect each. `to.session` is the session
    // asking: when it is not the owner's, the owner is told (a hold gets lock_lost(forced), a
    // waiting request a rejection with errc::cancelled).
    virtual void release(const reply_to& to, std::string_view key, std::string_view id, time_point now) = 0;
    // No id: every holder of `key` loses it. With an id: only that hold, and only if it holds.
    virtual void force_release(const reply_to& to, std::string_view key, std::optional<std::string_view> id,
                               time_point now) = 0;
    virtual void release_many(const reply_to& to, std::string_view id, time_point now) = 0;
    // Releases one single-key hold of `to.session` on `key` (any, when it holds several slots).
    virtual void release_own(const reply_to& to, std::string_view key, time_point now) = 0;
    // Withdraws a waiting request of `to.session`; `done` is false when it is not waiting.
    virtual void cancel(const reply_to& to, std::string_view id, time_point now) = 0;
    virtual void extend(const reply_to& to, std::string_view key, std::string_view id,
                        std::optional<std::chrono::milliseconds> ttl, time_point now) = 0;

    // The client gave up on request `id` (live-mutex lock-client-timeout / lock-received-rejected):
    // withdraw it if it waits, release it if it was granted meanwhile. No answer.
    virtual void abandon(session_id session, std::string_view id, time_point now) = 0;
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
    // Why grants are stalled when the store knows better than the broker (a store over etcd that
    // lost its session); empty otherwise.
    virtual std::string stall_reason() const { return {}; }
    // Ends the store's background work (connections, watches, timers) when the broker stops.
    virtual void stop() noexcept {}
    // Whether other brokers share this state (a store over etcd): hello says so ("shared-store"),
    // since grants then reach watchers once written, not in one turn with the queue.
    virtual bool shared() const noexcept { return false; }

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
