#pragma once

// The wire protocol (docs: PROTOCOL.md) as plain structs, with no I/O: requests decoded from and
// encoded to JSON frames, replies written as JSON text and decoded back. The broker and the
// client share these definitions, so each message has exactly one spelling.

#include <lmx/core/lock_info.hpp>
#include <lmx/core/types.hpp>

#include <boost/json/object.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace lmx::core {

struct codec_limits {
    std::size_t max_message_size = 64 * 1024;  // bytes of one frame, without its '\n'
    std::size_t max_key_length = 1024;         // bytes
    std::size_t max_keys = 64;                 // entries of acquire-many / watch `keys`
    std::size_t max_id_length = 1024;          // bytes of uuid, _uuid, lockUuid, target
    std::size_t max_depth = 32;                // JSON nesting; bounds the parser's recursion
    // ttl and timeout above this are refused: a deadline must not overflow time_point.
    std::chrono::milliseconds max_duration{std::chrono::hours{24 * 366}};
    bool operator==(const codec_limits&) const = default;
};

// One struct per request type. `uuid` is the request id; `lock_id` is the wire `_uuid` (or
// `lockUuid`): the id of an existing hold. A `std::optional` field is unset when the frame
// omitted it or sent null.
namespace req {

struct version {
    std::string value{};  // live-mutex client package version, e.g. "0.2.25"
    bool operator==(const version&) const = default;
};

struct hello {
    std::string uuid{};
    std::string client{};  // e.g. "lmx-cpp/0.1.0"; may be empty
    std::uint32_t protocol = 0;
    std::string token{};  // when the broker requires authentication; may be empty
    bool operator==(const hello&) const = default;
};

struct lock {
    std::string uuid{};
    std::string key{};
    std::optional<std::chrono::milliseconds> ttl{};  // unset: broker default; no_expiry: never
    std::optional<std::uint32_t> max{};
    bool wait = true;
    std::optional<std::chrono::milliseconds> timeout{};
    lock_mode mode = lock_mode::exclusive;
    bool keep_on_exit = false;      // keepLocksOnExit or keepLocksAfterDeath
    bool force = false;             // live-mutex: jump the queue; the broker decides what it honours
    bool queued_notice = true;      // queuedNotice: false asks for no queued notice, only the answer
    std::optional<rw_status> rw{};  // rwStatus of live-mutex's read/write-lock clients
    bool operator==(const lock&) const = default;
};

struct unlock {
    std::string uuid{};
    std::string key{};
    std::optional<std::string> lock_id{};
    bool force = false;
    std::optional<rw_status> rw{};
    bool operator==(const unlock&) const = default;
};

// The control messages below identify the request by `uuid`; `key` is empty when omitted.
struct lock_received {
    std::string uuid{};
    std::string key{};
    bool operator==(const lock_received&) const = default;
};

struct lock_client_timeout {
    std::string uuid{};
    std::string key{};
    bool operator==(const lock_client_timeout&) const = default;
};

struct lock_client_error {
    std::string uuid{};
    std::string key{};
    bool operator==(const lock_client_error&) const = default;
};

struct lock_received_rejected {
    std::string uuid{};
    std::string key{};
    std::optional<std::string> lock_id{};
    bool operator==(const lock_received_rejected&) const = default;
};

struct cancel {
    std::string uuid{};
    std::string target{};
    bool operator==(const cancel&) const = default;
};

struct acquire_many {
    std::string uuid{};
    std::vector<std::string> keys{};  // as sent: any order, duplicates allowed, never empty
    std::optional<std::chrono::milliseconds> ttl{};
    bool wait = true;
    std::optional<std::chrono::milliseconds> timeout{};
    bool keep_on_exit = false;
    bool operator==(const acquire_many&) const = default;
};

struct release_many {
    std::string uuid{};
    std::string lock_id{};  // lockUuid
    bool operator==(const release_many&) const = default;
};

struct extend {
    std::string uuid{};
    std::string key{};
    std::string lock_id{};
    std::optional<std::chrono::milliseconds> ttl{};
    bool operator==(const extend&) const = default;
};

// Keys are listed in pages: at most `limit` (capped by the broker) from `cursor` on; the reply's
// `cursor` is where the next page starts, absent after the last page.
struct ls {
    std::string uuid{};
    std::optional<std::uint64_t> cursor{};
    std::optional<std::uint32_t> limit{};
    bool operator==(const ls&) const = default;
};

struct lock_info {  // wire type "lock-info-request"
    std::string uuid{};
    std::string key{};
    bool operator==(const lock_info&) const = default;
};

struct ping {
    std::string uuid{};
    std::optional<std::int64_t> timestamp{};
    bool operator==(const ping&) const = default;
};

struct system_stats {  // wire type "system-stats-request"
    std::string uuid{};
    bool operator==(const system_stats&) const = default;
};

struct watch {
    std::string uuid{};
    std::optional<std::vector<std::string>> keys{};  // unset: every key
    bool operator==(const watch&) const = default;
};

struct unwatch {
    std::string uuid{};
    bool operator==(const unwatch&) const = default;
};

// An operator pins the max of every key starting with `prefix` (as --key-max does), or with no
// max removes that pin. Needs the admin role when the broker requires authentication.
struct pin {
    std::string uuid{};
    std::string prefix{};
    std::optional<std::uint32_t> max{};
    bool operator==(const pin&) const = default;
};

// The messages of live-mutex's write-preferring read/write-lock client; each names one key.
enum class rw_message_kind : std::uint8_t {
    write_flag_check,              // register-write-flag-check: may a reader go in?
    write_flag_and_readers_check,  // register-write-flag-and-readers-check: may a writer go in?
    increment_readers,             // increment-readers
    decrement_readers,             // decrement-readers
    clear_write_flag,              // set-write-flag-false-and-broadcast
};

template <rw_message_kind K>
struct rw_message {
    static constexpr rw_message_kind kind = K;
    std::string uuid{};
    std::string key{};
    bool operator==(const rw_message&) const = default;
};
using write_flag_check = rw_message<rw_message_kind::write_flag_check>;
using write_flag_and_readers_check = rw_message<rw_message_kind::write_flag_and_readers_check>;
using increment_readers = rw_message<rw_message_kind::increment_readers>;
using decrement_readers = rw_message<rw_message_kind::decrement_readers>;
using clear_write_flag = rw_message<rw_message_kind::clear_write_flag>;

}  // namespace req

using request =
    std::variant<req::version, req::hello, req::lock, req::unlock, req::lock_received, req::lock_client_timeout,
                 req::lock_client_error, req::lock_received_rejected, req::cancel, req::acquire_many, req::release_many,
                 req::extend, req::ls, req::lock_info, req::ping, req::system_stats, req::watch, req::unwatch,
                 req::write_flag_check, req::write_flag_and_readers_check, req::increment_readers,
                 req::decrement_readers, req::clear_write_flag, req::pin>;

// The wire `type` of a request, e.g. "lock-info-request".
std::string_view type_name(const request& r) noexcept;
// The request id; empty for `version`, which has none.
std::string_view uuid_of(const request& r) noexcept;

// Why a frame was refused, with what is needed to answer it.
struct parse_error {
    errc code = errc::bad_request;
    std::string message{};
    std::string uuid{};  // the frame's uuid when it was a usable id (echo it on the error reply)
    std::string type{};  // the frame's type when it was a string
    std::string key{};   // the frame's key when it was a valid key
    bool operator==(const parse_error&) const = default;
};

template <class T>
class decode_result {
public:
    decode_result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    decode_result(parse_error error) : v_(std::in_place_index<1>, std::move(error)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    // Precondition: ok() for value(), !ok() for error().
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    const parse_error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, parse_error> v_{};
};

using parse_result = decode_result<request>;

// Decodes frames into requests. Keep one per connection (or thread): it reuses its parse buffers,
// so a typical frame costs no allocation beyond the strings the request owns.
class request_parser {
public:
    explicit request_parser(const codec_limits& limits = {});
    ~request_parser();
    request_parser(request_parser&&) noexcept;
    request_parser& operator=(request_parser&&) noexcept;
    request_parser(const request_parser&) = delete;
    request_parser& operator=(const request_parser&) = delete;

    // `frame` is one JSON text without framing (a trailing '\r' or '\n' is tolerated).
    parse_result parse(std::string_view frame);
    const codec_limits& limits() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_{};
};

// One-off decode (tests, cold paths); builds a parser per call.
parse_result parse_request(std::string_view frame, const codec_limits& limits = {});

// Appends the frame of `r` followed by '\n'. Strings must be valid UTF-8.
void encode_request(const request& r, std::string& out);

// Wire strings of the table's enums, and the inverse of to_string(errc).
std::string_view to_string(lost_reason r) noexcept;
std::string_view to_string(rw_status s) noexcept;
std::string_view to_string(event_kind e) noexcept;
std::optional<errc> errc_from_string(std::string_view s) noexcept;

// Reply writers: each appends one JSON object and '\n' to `out`. Strings must be valid UTF-8;
// they are escaped as needed. An empty error `message` means default_message(code).

// type "lock"
void write_lock_granted(std::string& out, std::string_view uuid, std::string_view key, fencing_token token,
                        std::uint32_t lock_request_count, std::uint32_t readers_count);
// `position` (1 = next in line) is written when non-zero.
void write_lock_queued(std::string& out, std::string_view uuid, std::string_view key, std::uint32_t lock_request_count,
                       std::uint32_t readers_count, std::uint32_t position = 0);
void write_lock_refused(std::string& out, std::string_view uuid, std::string_view key,
                        std::uint32_t lock_request_count);
void write_lock_rejected(std::string& out, std::string_view uuid, std::string_view key, errc code,
                         std::string_view message = {});

// type "unlock"; `warning` is written when non-empty, `held: false` when the id held nothing
// (the unlock still succeeds: unlocking is idempotent).
void write_unlock_ok(std::string& out, std::string_view uuid, std::string_view key, std::uint32_t lock_request_count,
                     std::string_view warning = {}, bool held = true);
void write_unlock_error(std::string& out, std::string_view uuid, std::string_view key, errc code,
                        std::string_view message = {});

// type "acquire-many"; keys are written sorted and deduplicated whatever the input order.
void write_acquire_many_granted(std::string& out, std::string_view uuid, std::span<const key_token> keys,
                                std::string_view lock_id);
void write_acquire_many_queued(std::string& out, std::string_view uuid, std::span<const key_token> keys,
                               std::string_view contended_key, std::uint32_t lock_request_count);
void write_acquire_many_queued(std::string& out, std::string_view uuid, std::span<const std::string> keys,
                               std::string_view contended_key, std::uint32_t lock_request_count);
// Try-lock (wait:false) not granted: `acquired:false, queued:false`, like the single-key refusal.
void write_acquire_many_refused(std::string& out, std::string_view uuid, std::span<const key_token> keys,
                                std::string_view contended_key, std::uint32_t lock_request_count);
// `keys` is omitted when empty (e.g. the request's keys were unusable).
void write_acquire_many_error(std::string& out, std::string_view uuid, std::span<const key_token> keys, errc code,
                              std::string_view message = {});
void write_acquire_many_error(std::string& out, std::string_view uuid, std::span<const std::string> keys, errc code,
                              std::string_view message = {});

// type "release-many"
void write_release_many_ok(std::string& out, std::string_view uuid, std::string_view lock_id,
                           std::span<const std::string> keys);
void write_release_many_error(std::string& out, std::string_view uuid, errc code, std::string_view message = {});

// type "extend"; `expires_in` unset (no expiry) is written as `expiresInMs: null`.
void write_extend_ok(std::string& out, std::string_view uuid, std::string_view key,
                     std::optional<std::chrono::milliseconds> expires_in);
void write_extend_error(std::string& out, std::string_view uuid, std::string_view key, errc code,
                        std::string_view message = {});

void write_cancel(std::string& out, std::string_view uuid, bool cancelled);
// Answers pin: {type:"pin", uuid, prefix, max (null: unpinned), pinned}.
void write_pin(std::string& out, std::string_view uuid, std::string_view prefix, std::optional<std::uint32_t> max);
// `cursor` (written when set) is where the next page starts.
void write_ls(std::string& out, std::string_view uuid, std::span<const std::string> keys,
              std::optional<std::uint64_t> cursor = std::nullopt);
// type "lock-info-response": isLocked, lockholderUUIDs, lockRequestCount, max, fencingToken
// (the key's last token, 0 when none) from `info`; the key written is `info.key`. With `now`,
// also `holders`: [{uuid, fencingToken, mode, heldMs, expiresInMs (null: no expiry)}].
void write_lock_info(std::string& out, std::string_view uuid, const key_info& info,
                     std::optional<time_point> now = std::nullopt);
void write_pong(std::string& out, std::string_view uuid, std::int64_t timestamp, std::int64_t server_timestamp);

struct broker_stats {
    std::uint64_t uptime_ms = 0;
    std::uint64_t connections = 0;
    std::uint64_t connections_total = 0;  // accepted since the start
    std::uint64_t keys = 0;
    std::uint64_t holders = 0;
    std::uint64_t waiters = 0;
    std::uint64_t grants = 0;
    std::uint64_t releases = 0;
    std::uint64_t expirations = 0;
    std::uint64_t timeouts = 0;
    std::uint64_t messages_in = 0;
    std::uint64_t messages_out = 0;
    std::uint64_t connections_refused = 0;  // at --max-connections or --max-connections-per-peer
    std::uint64_t auth_refused = 0;         // connections refused for want of a valid token
    std::uint64_t clients_cut_off = 0;      // disconnected for not reading their replies
    std::int64_t pid = 0;                   // written when non-zero
    std::vector<contended_key> top_contended{};
};
// type "system-stats-response"; `stats` also carries live-mutex's names for the same figures
// (uptime in seconds, connectedClients, totalLocks, pendingRequests).
void write_system_stats(std::string& out, std::string_view uuid, const broker_stats& stats);

// `epoch` (written when non-empty) is new at every broker start: a client that reconnects and
// sees another epoch knows that the broker lost every hold, keep-on-exit ones too.
// `limits` (written when given) tells clients what the broker refuses, so that they can refuse
// it first: {"maxMessageSize","maxKeyLength","maxKeys","maxIdLength","maxDurationMs"}.
// `role` (written when non-empty, i.e. when the broker requires authentication): "admin" or "client".
void write_hello(std::string& out, std::string_view uuid, std::string_view broker, std::uint32_t protocol,
                 std::string_view session, std::span<const std::string_view> features, std::string_view epoch = {},
                 const codec_limits* limits = nullptr, std::string_view role = {});
void write_version_mismatch(std::string& out, std::string_view client_version, std::string_view broker_version);
// Answers watch (`{type:"watch", uuid, watching:true}`) and unwatch (type "unwatch",
// `watching:false`).
void write_watch_ack(std::string& out, std::string_view uuid, bool watching);
// `uuid` on the wire is the lock id of the hold that ended.
void write_lock_lost(std::string& out, std::string_view key, std::string_view lock_id, lost_reason reason);
// type "event": `uuid` when `lock_id` is non-empty, `fencingToken` when non-zero,
// `lockRequestCount` when given.
void write_event(std::string& out, event_kind event, std::string_view key, std::string_view lock_id,
                 fencing_token token = 0, std::optional<std::uint32_t> lock_request_count = std::nullopt);
// The answers of live-mutex's read/write-lock messages: `type` as given (e.g.
// "register-write-flag-success"), `uuid`, `key`, and `readersCount` / `writerFlag` when set.
void write_rw_answer(std::string& out, std::string_view type, std::string_view uuid, std::string_view key,
                     std::optional<std::uint32_t> readers_count = std::nullopt,
                     std::optional<bool> writer_flag = std::nullopt);
// A request type this broker does not serve, answered in its own type so that live-mutex clients
// complete the request as failed: {type, uuid, key?, error, code: "unknown_type"}.
void write_unknown_type(std::string& out, std::string_view type, std::string_view uuid, std::string_view key,
                        std::string_view message);

// type "event", event "connections": the broker's open connection count, `connections`.
void write_connections_event(std::string& out, std::size_t connections);
// type "error"; `uuid` and `key` are written when non-empty.
void write_error(std::string& out, std::string_view uuid, errc code, std::string_view message = {},
                 std::string_view key = {});
void write_error(std::string& out, const parse_error& e);

// Client side: any broker frame, decoded into one generic struct. Fields the frame does not
// carry stay empty/unset; null counts as absent.
struct reply {
    std::string type{};
    std::string uuid{};
    std::string key{};
    std::optional<bool> acquired{};
    std::optional<bool> queued{};
    std::optional<bool> unlocked{};
    std::optional<bool> extended{};
    std::optional<bool> cancelled{};
    std::optional<bool> released{};
    std::optional<bool> watching{};
    std::optional<std::string> error{};  // present only on failure replies
    std::string code{};                  // wire code, see errc_from_string
    std::optional<std::string> warning{};
    std::optional<fencing_token> token{};  // fencingToken
    std::optional<std::uint32_t> lock_request_count{};
    std::optional<std::uint32_t> readers_count{};
    std::optional<std::uint32_t> position{};
    std::optional<std::string> lock_id{};  // lockUuid
    std::vector<std::string> keys{};
    std::vector<std::pair<std::string, fencing_token>> fencing_tokens{};  // in frame order
    std::optional<std::string> contended_key{};
    std::optional<std::chrono::milliseconds> expires_in{};  // expiresInMs; null -> no_expiry
    std::vector<std::string> ls_result{};
    std::optional<std::uint64_t> cursor{};  // ls: the next page starts here
    std::optional<bool> held{};             // unlock: false when the id held nothing
    std::optional<codec_limits> limits{};   // hello: what the broker refuses
    bool lock_info = false;                 // lockInfo
    std::optional<bool> is_locked{};
    std::vector<std::string> lockholder_uuids{};
    std::optional<std::uint32_t> max{};
    std::optional<std::int64_t> timestamp{};
    std::optional<std::int64_t> server_timestamp{};
    std::string broker{};
    std::optional<std::uint32_t> protocol{};
    std::string session{};
    std::string epoch{};  // hello
    std::vector<std::string> features{};
    boost::json::object stats{};
    std::string client_version{};  // version-mismatch
    std::string broker_version{};
    std::string reason{};  // lock-lost
    std::string event{};   // event
    bool operator==(const reply&) const = default;
};

using reply_result = decode_result<reply>;

reply_result parse_reply(std::string_view frame);

}  // namespace lmx::core
