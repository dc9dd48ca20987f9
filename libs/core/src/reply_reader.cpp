// The client's reader of broker frames (parse_reply): a one-pass path for flat frames, the DOM
// path for the rest; and what a reply means (classify, decode_reply).

#include "json_read.hpp"

#include <lmx/core/protocol.hpp>
#include <lmx/core/replies.hpp>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_stack.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>

namespace lmx::core {

using namespace wire;
using std::chrono::milliseconds;

namespace {

// Reads reply fields; null counts as absent, a wrong type fails the whole reply.
class reply_reader {
public:
    // A reply is read by looking up some 40 names, most of them absent: an open-addressing index
    // of the members, built once, answers each with about one comparison (a linear search of
    // the object compares every member). Large objects are searched as they are.
    explicit reply_reader(const json::object& obj) noexcept : obj_(obj), indexed_(obj.size() <= max_indexed) {
        if (!indexed_) return;
        for (const auto& m : obj_) {
            const std::string_view k = m.key();
            std::size_t i = slot_of(k);
            while (slots_[i].value && slots_[i].key != k) i = (i + 1) % slots_.size();
            slots_[i] = {k, &m.value()};
        }
    }

    const json::value* member(std::string_view name) const noexcept {
        if (!indexed_) return obj_.if_contains(name);
        for (std::size_t i = slot_of(name);; i = (i + 1) % slots_.size()) {
            if (!slots_[i].value) return nullptr;
            if (slots_[i].key == name) return slots_[i].value;
        }
    }

    const json::value* find(std::string_view name) const noexcept {
        const json::value* v = member(name);
        return v && !v->is_null() ? v : nullptr;
    }

    bool fail(std::string_view name, std::string_view what) {
        if (error.empty()) error = quoted_name(name) + " must be " + std::string(what);
        return false;
    }

    bool str(std::string_view name, std::string& out) {
        const json::value* v = find(name);
        if (!v) return true;
        if (!v->is_string()) return fail(name, "a string");
        out = v->get_string();
        return true;
    }
    bool str(std::string_view name, std::optional<std::string>& out) {
        if (!find(name)) return true;
        return str(name, out.emplace());
    }
    bool boolean(std::string_view name, std::optional<bool>& out) {
        const json::value* v = find(name);
        if (!v) return true;
        if (!v->is_bool()) return fail(name, "a boolean");
        out = v->get_bool();
        return true;
    }
    bool boolean(std::string_view name, bool& out) {
        std::optional<bool> b;
        if (!boolean(name, b)) return false;
        out = b.value_or(false);
        return true;
    }
    bool u32(std::string_view name, std::optional<std::uint32_t>& out) {
        const json::value* v = find(name);
        if (!v) return true;
        std::int64_t n = 0;
        if (to_int64(*v, n) != int_status::ok || n < 0 || n > std::numeric_limits<std::uint32_t>::max())
            return fail(name, "a non-negative 32-bit integer");
        out = static_cast<std::uint32_t>(n);
        return true;
    }
    bool i64(std::string_view name, std::optional<std::int64_t>& out) {
        const json::value* v = find(name);
        if (!v) return true;
        std::int64_t n = 0;
        if (to_int64(*v, n) != int_status::ok) return fail(name, "an integer");
        out = n;
        return true;
    }
    bool token(std::string_view name, const json::value& v, fencing_token& out) {
        if (to_uint64(v, out) != int_status::ok) return fail(name, "a non-negative integer");
        return true;
    }
    bool token(std::string_view name, std::optional<fencing_token>& out) {
        const json::value* v = find(name);
        return !v || token(name, *v, out.emplace());
    }
    bool strings(std::string_view name, std::vector<std::string>& out) {
        const json::value* v = find(name);
        if (!v) return true;
        if (!v->is_array()) return fail(name, "an array of strings");
        for (const auto& e : v->get_array()) {
            if (!e.is_string()) return fail(name, "an array of strings");
            out.emplace_back(e.get_string());
        }
        return true;
    }
    bool expires(std::optional<milliseconds>& out) {
        const json::value* v = member("expiresInMs");
        if (!v) return true;
        if (v->is_null()) {
            out = no_expiry;
            return true;
        }
        std::int64_t n = 0;
        if (to_int64(*v, n) != int_status::ok || n < 0) return fail("expiresInMs", "null or a non-negative integer");
        out = milliseconds{n};
        return true;
    }
    bool tokens(std::vector<std::pair<std::string, fencing_token>>& out) {
        const json::value* v = find("fencingTokens");
        if (!v) return true;
        if (!v->is_object()) return fail("fencingTokens", "an object of key: token");
        for (const auto& member : v->get_object()) {
            auto& entry = out.emplace_back(std::string(member.key()), 0);
            if (!token("fencingTokens", member.value(), entry.second)) return false;
        }
        return true;
    }
    bool versions(reply& r) {
        const json::value* v = find("versions");
        if (!v) return true;
        if (!v->is_object()) return fail("versions", "an object");
        reply_reader inner(v->get_object());
        if (!inner.str("clientVersion", r.client_version) || !inner.str("brokerVersion", r.broker_version)) {
            error = inner.error;
            return false;
        }
        return true;
    }
    bool limits(reply& r) {
        const json::value* v = find("limits");
        if (!v) return true;
        if (!v->is_object()) return fail("limits", "an object");
        reply_reader inner(v->get_object());
        std::optional<std::uint32_t> size, key, keys, id;
        std::optional<std::uint64_t> duration;
        if (!inner.u32("maxMessageSize", size) || !inner.u32("maxKeyLength", key) || !inner.u32("maxKeys", keys) ||
            !inner.u32("maxIdLength", id) || !inner.token("maxDurationMs", duration)) {
            error = inner.error;
            return false;
        }
        auto& l = r.limits.emplace();
        if (size) l.max_message_size = *size;
        if (key) l.max_key_length = *key;
        if (keys) l.max_keys = *keys;
        if (id) l.max_id_length = *id;
        if (duration) l.max_duration = std::chrono::milliseconds(static_cast<std::int64_t>(*duration));
        return true;
    }
    bool stats(json::object& out) {
        const json::value* v = find("stats");
        if (!v) return true;
        if (!v->is_object()) return fail("stats", "an object");
        out = json::object(v->get_object(), json::storage_ptr());
        return true;
    }

    std::string error;

private:
    static constexpr std::size_t max_indexed = 32;  // at most half the slots used
    static std::size_t slot_of(std::string_view k) noexcept {
        const std::size_t h = k.empty() ? 0
                                        : k.size() * 31 + static_cast<unsigned char>(k.front()) * 7 +
                                              static_cast<unsigned char>(k.back());
        return h % 64;
    }
    struct slot {
        std::string_view key;
        const json::value* value = nullptr;
    };

    const json::object& obj_;
    bool indexed_;
    std::array<slot, 64> slots_{};
};

// Reads a flat reply (see scan_flat_object); false leaves the frame to reply_reader.
class flat_reply_reader {
public:
    bool read(std::string_view frame, reply& r) {
        return scan_flat_object(frame, [&](std::string_view name, const flat_value& v) { return assign(name, v, r); });
    }

private:
    using kind = flat_value::kind;

    static bool str(const flat_value& v, std::string& out) {
        if (v.k == kind::null) return true;
        if (v.k != kind::string) return false;
        out = v.text;
        return true;
    }
    static bool str(const flat_value& v, std::optional<std::string>& out) {
        if (v.k == kind::null) return true;
        if (v.k != kind::string) return false;
        out.emplace(v.text);
        return true;
    }
    static bool boolean(const flat_value& v, std::optional<bool>& out) noexcept {
        if (v.k == kind::null) return true;
        if (v.k != kind::boolean) return false;
        out = v.flag;
        return true;
    }
    static bool boolean(const flat_value& v, bool& out) noexcept {
        if (v.k == kind::null) return true;
        if (v.k != kind::boolean) return false;
        out = v.flag;
        return true;
    }
    template <class T>
    static bool number(const flat_value& v, std::optional<T>& out) noexcept {
        if (v.k == kind::null) return true;
        if (v.k != kind::number || v.number > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return false;
        out = static_cast<T>(v.number);
        return true;
    }
    static bool expires(const flat_value& v, std::optional<milliseconds>& out) noexcept {
        if (v.k == kind::null) {
            out = no_expiry;
            return true;
        }
        if (v.k != kind::number) return false;
        out = milliseconds{static_cast<std::int64_t>(v.number)};
        return true;
    }

    // Each known name once; a name whose value is not scalar is only accepted as null (absent).
    bool assign(std::string_view name, const flat_value& v, reply& r) {
        static constexpr std::array<std::string_view, 41> names = {
            "type",         "uuid",          "key",       "acquired",        "queued",
            "unlocked",     "extended",      "cancelled", "released",        "watching",
            "error",        "code",          "warning",   "fencingToken",    "lockRequestCount",
            "readersCount", "position",      "lockUuid",  "contendedKey",    "expiresInMs",
            "lockInfo",     "isLocked",      "max",       "timestamp",       "serverTimestamp",
            "broker",       "protocol",      "session",   "reason",          "event",
            "keys",         "fencingTokens", "ls_result", "lockholderUUIDs", "features",
            "stats",        "versions",      "epoch",     "cursor",          "held",
            "limits"};
        const std::size_t i = index_of(names, name);
        if (i == names.size()) return true;  // not a reply field: ignored, as the DOM reader does
        const std::uint64_t bit = std::uint64_t{1} << i;
        if (seen_ & bit) return false;
        seen_ |= bit;
        switch (i) {
            case 0: return str(v, r.type);
            case 1: return str(v, r.uuid);
            case 2: return str(v, r.key);
            case 3: return boolean(v, r.acquired);
            case 4: return boolean(v, r.queued);
            case 5: return boolean(v, r.unlocked);
            case 6: return boolean(v, r.extended);
            case 7: return boolean(v, r.cancelled);
            case 8: return boolean(v, r.released);
            case 9: return boolean(v, r.watching);
            case 10: return str(v, r.error);
            case 11: return str(v, r.code);
            case 12: return str(v, r.warning);
            case 13: return number(v, r.token);
            case 14: return number(v, r.lock_request_count);
            case 15: return number(v, r.readers_count);
            case 16: return number(v, r.position);
            case 17: return str(v, r.lock_id);
            case 18: return str(v, r.contended_key);
            case 19: return expires(v, r.expires_in);
            case 20: return boolean(v, r.lock_info);
            case 21: return boolean(v, r.is_locked);
            case 22: return number(v, r.max);
            case 23: return number(v, r.timestamp);
            case 24: return number(v, r.server_timestamp);
            case 25: return str(v, r.broker);
            case 26: return number(v, r.protocol);
            case 27: return str(v, r.session);
            case 28: return str(v, r.reason);
            case 29: return str(v, r.event);
            case 37: return str(v, r.epoch);
            case 38: return number(v, r.cursor);
            case 39: return boolean(v, r.held);
            default: return v.k == kind::null;
        }
    }

    std::uint64_t seen_ = 0;
};

}  // namespace

reply_result parse_reply(std::string_view frame) {
    {
        reply r;
        if (flat_reply_reader().read(frame, r)) return r;
    }
    alignas(std::max_align_t) unsigned char buffer[4096];
    json::monotonic_resource resource(buffer, sizeof buffer);
    json::error_code ec;
    const json::value doc =
        json::parse(json::string_view(frame.data(), frame.size()), ec, json::storage_ptr(&resource));
    if (ec) return malformed("malformed JSON: " + ec.message());
    if (!doc.is_object()) return malformed("reply must be a JSON object");

    reply r;
    reply_reader rd(doc.get_object());
    bool ok = rd.str("type", r.type) && rd.str("uuid", r.uuid) && rd.str("key", r.key) &&
              rd.boolean("acquired", r.acquired) && rd.boolean("queued", r.queued) &&
              rd.boolean("unlocked", r.unlocked) && rd.boolean("extended", r.extended) &&
              rd.boolean("cancelled", r.cancelled) && rd.boolean("released", r.released) &&
              rd.boolean("watching", r.watching) && rd.str("error", r.error) && rd.str("code", r.code) &&
              rd.str("warning", r.warning) && rd.token("fencingToken", r.token) &&
              rd.u32("lockRequestCount", r.lock_request_count) && rd.u32("readersCount", r.readers_count) &&
              rd.u32("position", r.position) && rd.str("lockUuid", r.lock_id) && rd.strings("keys", r.keys) &&
              rd.tokens(r.fencing_tokens) && rd.str("contendedKey", r.contended_key) && rd.expires(r.expires_in) &&
              rd.strings("ls_result", r.ls_result) && rd.boolean("lockInfo", r.lock_info) &&
              rd.boolean("isLocked", r.is_locked) && rd.strings("lockholderUUIDs", r.lockholder_uuids) &&
              rd.u32("max", r.max) && rd.i64("timestamp", r.timestamp) &&
              rd.i64("serverTimestamp", r.server_timestamp) && rd.str("broker", r.broker) &&
              rd.u32("protocol", r.protocol) && rd.str("session", r.session) && rd.strings("features", r.features) &&
              rd.stats(r.stats) && rd.versions(r) && rd.str("reason", r.reason) && rd.str("event", r.event) &&
              rd.str("epoch", r.epoch) && rd.token("cursor", r.cursor) && rd.boolean("held", r.held) && rd.limits(r);
    if (!ok) {
        parse_error e = malformed(std::move(rd.error));
        e.uuid = r.uuid;
        e.type = r.type;
        e.key = r.key;
        return e;
    }
    return r;
}

const std::string& reply_uuid(const typed_reply& r) noexcept {
    return std::visit([](const auto& x) -> const std::string& { return x.uuid; }, r);
}

std::string& reply_uuid(typed_reply& r) noexcept {
    return std::visit([](auto& x) -> std::string& { return x.uuid; }, r);
}

typed_reply classify(reply&& r) {
    std::string& id = r.uuid;
    const std::string_view type = r.type;
    if (r.error || type == "error")
        return rep::failed{std::move(id), std::move(r.type), std::move(r.code), std::move(r.error).value_or("")};
    if (type == "lock" || type == "acquire-many") {
        if (r.acquired.value_or(false)) {
            if (type == "lock") return rep::granted{std::move(id), std::move(r.key), r.token.value_or(0)};
            return rep::granted_many{std::move(id), std::move(r.keys), std::move(r.fencing_tokens)};
        }
        if (r.queued.value_or(false)) return rep::queued{std::move(id), r.position.value_or(0)};
        return rep::refused{std::move(id), std::move(r.contended_key)};
    }
    if (type == "unlock")
        return rep::unlocked{std::move(id), r.unlocked.value_or(false), r.held.value_or(true), r.warning.has_value()};
    if (type == "release-many") return rep::released{std::move(id), r.released.value_or(false)};
    if (type == "extend") return rep::extended{std::move(id), r.extended.value_or(false), r.expires_in};
    if (type == "cancel") return rep::cancelled{std::move(id), r.cancelled.value_or(false)};
    if (type == "lock-lost") return rep::lock_lost{std::move(id), std::move(r.key), std::move(r.reason)};
    if (type == "event")
        return rep::event{std::move(id), std::move(r.key), std::move(r.event), r.token.value_or(0),
                          r.lock_request_count.value_or(0)};
    if (type == "hello")
        return rep::hello{std::move(id),        r.protocol.value_or(0), std::move(r.broker),
                          std::move(r.session), std::move(r.epoch),     r.limits,
                          std::move(r.features)};
    if (type == "ls") return rep::keys_page{std::move(id), std::move(r.ls_result), r.cursor};
    if (type == "lock-info-response")
        return rep::key_state{std::move(id),
                              std::move(r.key),
                              r.is_locked.value_or(false),
                              std::move(r.lockholder_uuids),
                              r.lock_request_count.value_or(0),
                              r.max.value_or(1),
                              r.token.value_or(0)};
    if (type == "system-stats-response") return rep::stats{std::move(id), std::move(r.stats)};
    if (type == "pong") return rep::pong{std::move(id)};
    return rep::other{std::move(id), std::move(r.type)};
}

typed_reply_result decode_reply(std::string_view frame) {
    auto r = parse_reply(frame);
    if (!r) return r.error();
    return classify(std::move(r).value());
}

}  // namespace lmx::core
