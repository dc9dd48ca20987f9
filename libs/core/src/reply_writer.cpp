// The broker's reply writers (lmx/core/protocol.hpp): one frame each, written in place.

#include "json_frame.hpp"

#include <lmx/core/protocol.hpp>

#include <algorithm>
#include <span>
#include <vector>

namespace lmx::core {

using namespace wire;
using std::chrono::milliseconds;

namespace {

std::string_view key_of(const key_token& k) noexcept { return k.key; }
std::string_view key_of(const std::string& s) noexcept { return s; }

// Calls f on each element in ascending key order, once per key. The table hands keys over
// sorted already; the copy is only made when they are not.
template <class T, class F>
void for_each_sorted_unique(std::span<const T> items, F&& f) {
    auto not_ascending = [](const T& a, const T& b) { return !(key_of(a) < key_of(b)); };
    if (std::adjacent_find(items.begin(), items.end(), not_ascending) == items.end()) {
        for (const auto& item : items) f(item);
        return;
    }
    std::vector<const T*> order;
    order.reserve(items.size());
    for (const auto& item : items) order.push_back(&item);
    std::stable_sort(order.begin(), order.end(), [](const T* a, const T* b) { return key_of(*a) < key_of(*b); });
    const T* previous = nullptr;
    for (const T* item : order) {
        if (previous && key_of(*previous) == key_of(*item)) continue;
        f(*item);
        previous = item;
    }
}

template <class T>
void append_keys(frame& fr, std::span<const T> keys) {
    fr.open_array("keys");
    for_each_sorted_unique(keys, [&](const T& k) { fr.str_element(key_of(k)); });
    fr.close_array();
}

template <class T>
void acquire_many_queued(std::string& out, std::string_view uuid, std::span<const T> keys,
                         std::string_view contended_key, std::uint32_t lock_request_count) {
    frame fr(out, "acquire-many");
    fr.str("uuid", uuid);
    append_keys(fr, keys);
    fr.boolean("acquired", false)
        .boolean("queued", true)
        .str("contendedKey", contended_key)
        .num("lockRequestCount", lock_request_count)
        .end();
}

template <class T>
void acquire_many_error(std::string& out, std::string_view uuid, std::span<const T> keys, errc code,
                        std::string_view message) {
    frame fr(out, "acquire-many");
    fr.str("uuid", uuid);
    if (!keys.empty()) append_keys(fr, keys);
    fr.boolean("acquired", false).failure(code, message).end();
}

}  // namespace

void write_lock_granted(std::string& out, std::string_view uuid, std::string_view key, fencing_token token,
                        std::uint32_t lock_request_count, std::uint32_t readers_count) {
    frame(out, "lock")
        .str("uuid", uuid)
        .str("key", key)
        .boolean("acquired", true)
        .num("fencingToken", token)
        .num("lockRequestCount", lock_request_count)
        .num("readersCount", readers_count)
        .end();
}

void write_lock_queued(std::string& out, std::string_view uuid, std::string_view key, std::uint32_t lock_request_count,
                       std::uint32_t readers_count, std::uint32_t position) {
    frame fr(out, "lock");
    fr.str("uuid", uuid)
        .str("key", key)
        .boolean("acquired", false)
        .boolean("queued", true)
        .num("lockRequestCount", lock_request_count)
        .num("readersCount", readers_count);
    if (position != 0) fr.num("position", position);
    fr.end();
}

void write_lock_refused(std::string& out, std::string_view uuid, std::string_view key,
                        std::uint32_t lock_request_count) {
    frame(out, "lock")
        .str("uuid", uuid)
        .str("key", key)
        .boolean("acquired", false)
        .boolean("queued", false)
        .num("lockRequestCount", lock_request_count)
        .end();
}

void write_lock_rejected(std::string& out, std::string_view uuid, std::string_view key, errc code,
                         std::string_view message) {
    frame(out, "lock").str("uuid", uuid).str("key", key).boolean("acquired", false).failure(code, message).end();
}

void write_unlock_ok(std::string& out, std::string_view uuid, std::string_view key, std::uint32_t lock_request_count,
                     std::string_view warning, bool held) {
    frame fr(out, "unlock");
    fr.str("uuid", uuid)
        .str("key", key)
        .boolean("unlocked", true)
        .num("lockRequestCount", lock_request_count)
        .str_if("warning", warning);
    if (!held) fr.boolean("held", false);
    fr.end();
}

void write_unlock_error(std::string& out, std::string_view uuid, std::string_view key, errc code,
                        std::string_view message) {
    frame(out, "unlock").str("uuid", uuid).str("key", key).boolean("unlocked", false).failure(code, message).end();
}

void write_acquire_many_granted(std::string& out, std::string_view uuid, std::span<const key_token> keys,
                                std::string_view lock_id) {
    frame fr(out, "acquire-many");
    fr.str("uuid", uuid);
    append_keys(fr, keys);
    fr.boolean("acquired", true).str("lockUuid", lock_id).open_object("fencingTokens");
    for_each_sorted_unique(keys, [&](const key_token& k) { fr.num_member(k.key, k.token); });
    fr.close_object().end();
}

void write_acquire_many_queued(std::string& out, std::string_view uuid, std::span<const key_token> keys,
                               std::string_view contended_key, std::uint32_t lock_request_count) {
    acquire_many_queued(out, uuid, keys, contended_key, lock_request_count);
}

void write_acquire_many_queued(std::string& out, std::string_view uuid, std::span<const std::string> keys,
                               std::string_view contended_key, std::uint32_t lock_request_count) {
    acquire_many_queued(out, uuid, keys, contended_key, lock_request_count);
}

void write_acquire_many_refused(std::string& out, std::string_view uuid, std::span<const key_token> keys,
                                std::string_view contended_key, std::uint32_t lock_request_count) {
    frame fr(out, "acquire-many");
    fr.str("uuid", uuid);
    append_keys(fr, keys);
    fr.boolean("acquired", false)
        .boolean("queued", false)
        .str_if("contendedKey", contended_key)
        .num("lockRequestCount", lock_request_count)
        .end();
}

void write_acquire_many_error(std::string& out, std::string_view uuid, std::span<const key_token> keys, errc code,
                              std::string_view message) {
    acquire_many_error(out, uuid, keys, code, message);
}

void write_acquire_many_error(std::string& out, std::string_view uuid, std::span<const std::string> keys, errc code,
                              std::string_view message) {
    acquire_many_error(out, uuid, keys, code, message);
}

void write_release_many_ok(std::string& out, std::string_view uuid, std::string_view lock_id,
                           std::span<const std::string> keys) {
    frame fr(out, "release-many");
    fr.str("uuid", uuid).str("lockUuid", lock_id);
    append_keys(fr, keys);
    fr.boolean("released", true).end();
}

void write_release_many_error(std::string& out, std::string_view uuid, errc code, std::string_view message) {
    frame(out, "release-many").str("uuid", uuid).boolean("released", false).failure(code, message).end();
}

void write_extend_ok(std::string& out, std::string_view uuid, std::string_view key,
                     std::optional<milliseconds> expires_in) {
    frame fr(out, "extend");
    fr.str("uuid", uuid).str("key", key).boolean("extended", true);
    if (expires_in && *expires_in != no_expiry)
        fr.num("expiresInMs", std::max<std::int64_t>(expires_in->count(), 0));
    else
        fr.null("expiresInMs");
    fr.end();
}

void write_extend_error(std::string& out, std::string_view uuid, std::string_view key, errc code,
                        std::string_view message) {
    frame(out, "extend").str("uuid", uuid).str("key", key).boolean("extended", false).failure(code, message).end();
}

void write_cancel(std::string& out, std::string_view uuid, bool cancelled) {
    frame(out, "cancel").str("uuid", uuid).boolean("cancelled", cancelled).end();
}

void write_pin(std::string& out, std::string_view uuid, std::string_view prefix, std::optional<std::uint32_t> max) {
    frame fr(out, "pin");
    fr.str("uuid", uuid).str("prefix", prefix);
    if (max)
        fr.num("max", *max);
    else
        fr.null("max");
    fr.boolean("pinned", max.has_value()).end();
}

void write_ls(std::string& out, std::string_view uuid, std::span<const std::string> keys,
              std::optional<std::uint64_t> cursor) {
    frame fr(out, "ls");
    fr.str("uuid", uuid).str_array("ls_result", keys);
    if (cursor) fr.num("cursor", *cursor);
    fr.end();
}

void write_lock_info(std::string& out, std::string_view uuid, const key_info& info, std::optional<time_point> now) {
    frame fr(out, "lock-info-response");
    fr.str("uuid", uuid)
        .str("key", info.key)
        .boolean("lockInfo", true)
        .boolean("isLocked", info.holder_count > 0 || !info.holders.empty())
        .open_array("lockholderUUIDs");
    for (const auto& h : info.holders) fr.str_element(h.id);
    fr.close_array()
        .num("holderCount", std::max<std::size_t>(info.holder_count, info.holders.size()))
        .num("lockRequestCount", info.waiters)
        .num("max", info.max)
        .num("fencingToken", info.last_token);
    if (now) {
        auto ms = [](time_point::duration d) {
            return std::max<std::int64_t>(0, std::chrono::ceil<std::chrono::milliseconds>(d).count());
        };
        fr.open_array("holders");
        for (const auto& h : info.holders) {
            fr.open_object_element()
                .str("uuid", h.id)
                .num("fencingToken", h.token)
                .str("mode", to_string(h.mode))
                .num("heldMs", ms(*now - h.since));
            if (h.expires)
                fr.num("expiresInMs", ms(*h.expires - *now));
            else
                fr.null("expiresInMs");
            fr.close_object();
        }
        fr.close_array();
    }
    fr.end();
}

void write_pong(std::string& out, std::string_view uuid, std::int64_t timestamp, std::int64_t server_timestamp) {
    frame(out, "pong")
        .str("uuid", uuid)
        .num("timestamp", timestamp)
        .num("serverTimestamp", server_timestamp)
        .boolean("ping", true)
        .end();
}

void write_system_stats(std::string& out, std::string_view uuid, const broker_stats& stats) {
    frame fr(out, "system-stats-response");
    fr.str("uuid", uuid).open_object("stats").num("uptimeMs", stats.uptime_ms);
    // live-mutex reports uptime in seconds (process.uptime()).
    fr.num("uptime", stats.uptime_ms / 1000);
    const char millis[4] = {'.', static_cast<char>('0' + stats.uptime_ms % 1000 / 100),
                            static_cast<char>('0' + stats.uptime_ms % 100 / 10),
                            static_cast<char>('0' + stats.uptime_ms % 10)};
    fr.raw(std::string_view(millis, sizeof millis));
    fr.num("connections", stats.connections)
        .num("connectedClients", stats.connections)
        .num("connectionsTotal", stats.connections_total)
        .num("keys", stats.keys)
        .num("totalLocks", stats.keys)
        .num("holders", stats.holders)
        .num("waiters", stats.waiters)
        .num("pendingRequests", stats.waiters)
        .num("grants", stats.grants)
        .num("releases", stats.releases)
        .num("expirations", stats.expirations)
        .num("timeouts", stats.timeouts)
        .num("messagesIn", stats.messages_in)
        .num("messagesOut", stats.messages_out)
        .num("connectionsRefused", stats.connections_refused)
        .num("authRefused", stats.auth_refused)
        .num("clientsCutOff", stats.clients_cut_off);
    if (stats.pid != 0) fr.num("pid", stats.pid);
    fr.open_array("topContendedKeys");
    for (const auto& k : stats.top_contended) {
        fr.open_object_element().str("key", k.key).num("waiters", k.waiters).num("holders", k.holders).close_object();
    }
    fr.close_array().close_object().end();
}

void write_hello(std::string& out, std::string_view uuid, std::string_view broker, std::uint32_t protocol,
                 std::string_view session, std::span<const std::string_view> features, std::string_view epoch,
                 const codec_limits* limits, std::string_view role) {
    frame fr(out, "hello");
    fr.str("uuid", uuid).str("broker", broker).num("protocol", protocol).str("session", session);
    if (!epoch.empty()) fr.str("epoch", epoch);
    if (!role.empty()) fr.str("role", role);
    fr.str_array("features", features);
    if (limits) {
        fr.open_object("limits")
            .num("maxMessageSize", limits->max_message_size)
            .num("maxKeyLength", limits->max_key_length)
            .num("maxKeys", limits->max_keys)
            .num("maxIdLength", limits->max_id_length)
            .num("maxDurationMs", static_cast<std::uint64_t>(limits->max_duration.count()))
            .close_object();
    }
    fr.end();
}

void write_version_mismatch(std::string& out, std::string_view client_version, std::string_view broker_version) {
    frame(out, "version-mismatch")
        .open_object("versions")
        .str("clientVersion", client_version)
        .str("brokerVersion", broker_version)
        .close_object()
        .end();
}

void write_rw_answer(std::string& out, std::string_view type, std::string_view uuid, std::string_view key,
                     std::optional<std::uint32_t> readers_count, std::optional<bool> writer_flag) {
    frame fr(out, type);
    fr.str("uuid", uuid).str("key", key);
    if (readers_count) fr.num("readersCount", *readers_count);
    if (writer_flag) fr.boolean("writerFlag", *writer_flag);
    fr.end();
}

void write_unknown_type(std::string& out, std::string_view type, std::string_view uuid, std::string_view key,
                        std::string_view message) {
    frame fr(out, type);
    fr.str("uuid", uuid).str_if("key", key).failure(errc::unknown_type, message).end();
}

void write_watch_ack(std::string& out, std::string_view uuid, bool watching) {
    frame(out, watching ? "watch" : "unwatch").str("uuid", uuid).boolean("watching", watching).end();
}

void write_lock_lost(std::string& out, std::string_view key, std::string_view lock_id, lost_reason reason) {
    frame(out, "lock-lost").str("key", key).str("uuid", lock_id).str("reason", to_string(reason)).end();
}

void write_event(std::string& out, event_kind event, std::string_view key, std::string_view lock_id,
                 fencing_token token, std::optional<std::uint32_t> lock_request_count) {
    frame fr(out, "event");
    fr.str("event", to_string(event)).str("key", key).str_if("uuid", lock_id);
    if (token != 0) fr.num("fencingToken", token);
    if (lock_request_count) fr.num("lockRequestCount", *lock_request_count);
    fr.end();
}

void write_connections_event(std::string& out, std::size_t connections) {
    frame(out, "event").str("event", "connections").num("connections", connections).end();
}

void write_error(std::string& out, std::string_view uuid, errc code, std::string_view message, std::string_view key) {
    frame(out, "error").str_if("uuid", uuid).str_if("key", key).failure(code, message).end();
}

void write_error(std::string& out, const parse_error& e) { write_error(out, e.uuid, e.code, e.message, e.key); }

}  // namespace lmx::core
