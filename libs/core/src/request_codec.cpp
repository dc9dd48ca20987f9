// Requests: the reader (a one-pass path for flat lock and unlock frames, the DOM path for the
// rest, both deciding alike) and the encoder.

#include "json_frame.hpp"
#include "json_read.hpp"
#include "wire_names.hpp"

#include <lmx/core/protocol.hpp>

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

// Cuts at a UTF-8 boundary so that the result stays valid UTF-8.
std::string_view truncate_utf8(std::string_view s, std::size_t max) noexcept {
    if (s.size() <= max) return s;
    while (max > 0 && (static_cast<unsigned char>(s[max]) & 0xC0) == 0x80) --max;
    return s.substr(0, max);
}

// The request fields the codec reads. A frame's members are sorted into these slots in one pass,
// so reading a field is an array index rather than a search by name.
enum class field : std::uint8_t {
    type,
    uuid,
    key,
    ttl,
    max,
    wait,
    timeout,
    mode,
    keep_locks_after_death,
    keep_locks_on_exit,
    force,
    lock_id,
    target,
    keys,
    lock_uuid,
    timestamp,
    value,
    client,
    protocol,
    queued_notice,
    cursor,
    limit,
    rw_status,
    token,
    prefix,
};

constexpr std::array<std::string_view, 25> field_names{
    "type",
    "uuid",
    "key",
    "ttl",
    "max",
    "wait",
    "timeout",
    "mode",
    "keepLocksAfterDeath",
    "keepLocksOnExit",
    "force",
    "_uuid",
    "target",
    "keys",
    "lockUuid",
    "timestamp",
    "value",
    "client",
    "protocol",
    "queuedNotice",
    "cursor",
    "limit",
    "rwStatus",
    "token",
    "prefix",
};

class field_slots {
public:
    explicit field_slots(const json::object& obj) noexcept {
        for (const auto& member : obj)
            if (const std::size_t i = index_of(field_names, member.key()); i < field_names.size())
                slots_[i] = &member.value();
    }
    const json::value* operator[](field f) const noexcept { return slots_[static_cast<std::size_t>(f)]; }

private:
    std::array<const json::value*, field_names.size()> slots_{};
};

std::string quoted_name(field f) { return wire::quoted_name(field_names[static_cast<std::size_t>(f)]); }

// Reads the fields of one request object. Every accessor returns false after recording the
// first error; absent and null optional fields leave the target untouched.
class reader {
public:
    reader(const field_slots& fields, const codec_limits& limits, parse_error& err) noexcept
        : fields_(fields), limits_(limits), err_(err) {}

    const json::value* find(field f) const noexcept {
        const json::value* v = fields_[f];
        return v && !v->is_null() ? v : nullptr;
    }

    bool fail(errc code, std::string message) {
        err_.code = code;
        err_.message = std::move(message);
        return false;
    }

    bool id(field name, std::string& out) {
        const json::value* v = find(name);
        if (!v) return fail(errc::bad_request, "missing " + quoted_name(name));
        return id_value(name, *v, out);
    }

    bool optional_id(field name, std::optional<std::string>& out) {
        const json::value* v = find(name);
        if (!v) return true;
        return id_value(name, *v, out.emplace());
    }

    bool key(std::string& out) {
        const json::value* v = find(field::key);
        if (!v) return fail(errc::bad_request, "missing field \"key\"");
        return key_value("field \"key\"", *v, out);
    }

    // A key prefix: like a key, but "" (every key) is allowed.
    bool pin_prefix(std::string& out) {
        const json::value* v = find(field::prefix);
        if (v && v->is_string() && v->get_string().empty()) return true;
        return v && key_value("field \"prefix\"", *v, out);
    }

    bool optional_key(std::string& out) {
        const json::value* v = find(field::key);
        return !v || key_value("field \"key\"", *v, out);
    }

    bool flag(field name, bool& out) {
        const json::value* v = find(name);
        if (!v) return true;
        if (!v->is_bool()) return fail(errc::bad_request, quoted_name(name) + " must be a boolean");
        out = v->get_bool();
        return true;
    }

    bool keep_on_exit(bool& out) {
        bool after_death = false;
        bool on_exit = false;
        if (!flag(field::keep_locks_after_death, after_death) || !flag(field::keep_locks_on_exit, on_exit))
            return false;
        out = after_death || on_exit;
        return true;
    }

    // Absent or 0: broker default. null: no expiry.
    bool ttl(std::optional<milliseconds>& out) {
        const json::value* v = fields_[field::ttl];
        if (!v) return true;
        if (v->is_null()) {
            out = no_expiry;
            return true;
        }
        std::int64_t n = 0;
        auto s = to_int64(*v, n);
        if (s == int_status::ok && n > limits_.max_duration.count()) s = int_status::too_large;
        if (s == int_status::ok && n < 0) s = int_status::too_small;
        switch (s) {
            case int_status::ok: break;
            case int_status::too_large:
                return fail(errc::bad_request, "field \"ttl\" must be at most " +
                                                   std::to_string(limits_.max_duration.count()) +
                                                   " ms (null means no expiry)");
            default:
                return fail(errc::bad_request, "field \"ttl\" must be null or a non-negative integer (milliseconds)");
        }
        if (n == 0)
            out.reset();
        else
            out = milliseconds{n};
        return true;
    }

    bool timeout(std::optional<milliseconds>& out) {
        std::optional<std::int64_t> n;
        if (!bounded(field::timeout, 1, limits_.max_duration.count(), "a positive integer (milliseconds)", n))
            return false;
        if (n) out = milliseconds{*n};
        return true;
    }

    bool max(std::optional<std::uint32_t>& out) {
        std::optional<std::int64_t> n;
        if (!bounded(field::max, 1, std::numeric_limits<std::uint32_t>::max(), "an integer >= 1", n)) return false;
        if (n) out = static_cast<std::uint32_t>(*n);
        return true;
    }

    // null, absent, or a string lmx gives no meaning to (older live-mutex clients send others,
    // which its broker ignores too): none.
    bool rw(std::optional<rw_status>& out) {
        const json::value* v = find(field::rw_status);
        if (!v) return true;
        if (!v->is_string()) return fail(errc::bad_request, "field \"rwStatus\" must be a string or null");
        if (const std::size_t i = index_of(rw_status_names, v->get_string()); i < rw_status_names.size())
            out = static_cast<rw_status>(i);
        return true;
    }

    bool range(field name, std::int64_t lo, std::int64_t hi, std::string_view what, std::optional<std::int64_t>& out) {
        return bounded(name, lo, hi, what, out);
    }

    bool integer(field name, std::optional<std::int64_t>& out) {
        return bounded(name, std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max(),
                       "an integer", out);
    }

    bool mode(lock_mode& out) {
        const json::value* v = find(field::mode);
        if (!v) return true;
        if (v->is_string() && v->get_string() == "exclusive")
            out = lock_mode::exclusive;
        else if (v->is_string() && v->get_string() == "shared")
            out = lock_mode::shared;
        else
            return fail(errc::bad_request, "field \"mode\" must be \"exclusive\" or \"shared\"");
        return true;
    }

    bool string(field name, std::string& out) {
        const json::value* v = find(name);
        if (!v) return true;
        if (!v->is_string()) return fail(errc::bad_request, quoted_name(name) + " must be a string");
        if (v->get_string().size() > limits_.max_id_length)
            return fail(errc::bad_request,
                        quoted_name(name) + " is longer than " + std::to_string(limits_.max_id_length) + " bytes");
        out = v->get_string();
        return true;
    }

    // A non-empty array of valid keys, at most max_keys long.
    bool key_list(field name, const json::value& v, std::vector<std::string>& out) {
        if (!v.is_array() || v.get_array().empty())
            return fail(errc::bad_request, quoted_name(name) + " must be a non-empty array of keys");
        const auto& array = v.get_array();
        if (array.size() > limits_.max_keys)
            return fail(errc::too_many_keys, quoted_name(name) + " has " + std::to_string(array.size()) +
                                                 " keys, over the limit of " + std::to_string(limits_.max_keys));
        out.clear();
        out.reserve(array.size());
        for (std::size_t i = 0; i < array.size(); ++i) {
            std::string what = quoted_name(name);
            what.append(" entry ").append(std::to_string(i));
            if (!key_value(what, array[i], out.emplace_back())) return false;
        }
        return true;
    }

private:
    bool id_value(field name, const json::value& v, std::string& out) {
        if (!v.is_string() || v.get_string().empty())
            return fail(errc::bad_request, quoted_name(name) + " must be a non-empty string");
        if (v.get_string().size() > limits_.max_id_length)
            return fail(errc::bad_request,
                        quoted_name(name) + " is longer than " + std::to_string(limits_.max_id_length) + " bytes");
        out = v.get_string();
        return true;
    }

    bool key_value(const std::string& what, const json::value& v, std::string& out) {
        if (!v.is_string()) return fail(errc::bad_request, what + " must be a string");
        const auto& s = v.get_string();
        if (s.empty()) return fail(errc::bad_request, what + " must not be empty");
        if (s.size() > limits_.max_key_length)
            return fail(errc::key_too_long, what + " is " + std::to_string(s.size()) + " bytes, over the limit of " +
                                                std::to_string(limits_.max_key_length));
        out = s;
        return true;
    }

    bool bounded(field name, std::int64_t lo, std::int64_t hi, std::string_view what,
                 std::optional<std::int64_t>& out) {
        const json::value* v = find(name);
        if (!v) return true;
        std::int64_t n = 0;
        auto s = to_int64(*v, n);
        if (s == int_status::ok && n < lo) s = int_status::too_small;
        if (s == int_status::ok && n > hi) s = int_status::too_large;
        switch (s) {
            case int_status::ok: out = n; return true;
            case int_status::too_large:
                return fail(errc::bad_request, quoted_name(name) + " must be at most " + std::to_string(hi));
            default: return fail(errc::bad_request, quoted_name(name) + " must be " + std::string(what));
        }
    }

    const field_slots& fields_;
    const codec_limits& limits_;
    parse_error& err_;
};

bool decode(reader& r, req::version& m) {
    const json::value* v = r.find(field::value);
    if (!v) return r.fail(errc::bad_request, "missing field \"value\"");
    return r.string(field::value, m.value);
}

bool decode(reader& r, req::hello& m) {
    std::optional<std::int64_t> protocol;
    if (!r.id(field::uuid, m.uuid) || !r.string(field::client, m.client) || !r.string(field::token, m.token))
        return false;
    if (!r.find(field::protocol)) return r.fail(errc::bad_request, "missing field \"protocol\"");
    if (!r.integer(field::protocol, protocol)) return false;
    if (*protocol < 0 || *protocol > std::numeric_limits<std::uint32_t>::max())
        return r.fail(errc::bad_request, "field \"protocol\" must be a non-negative integer");
    m.protocol = static_cast<std::uint32_t>(*protocol);
    return true;
}

bool decode(reader& r, req::lock& m) {
    return r.id(field::uuid, m.uuid) && r.key(m.key) && r.ttl(m.ttl) && r.max(m.max) && r.flag(field::wait, m.wait) &&
           r.timeout(m.timeout) && r.mode(m.mode) && r.keep_on_exit(m.keep_on_exit) && r.flag(field::force, m.force) &&
           r.flag(field::queued_notice, m.queued_notice) && r.rw(m.rw);
}

bool decode(reader& r, req::unlock& m) {
    return r.id(field::uuid, m.uuid) && r.key(m.key) && r.optional_id(field::lock_id, m.lock_id) &&
           r.flag(field::force, m.force) && r.rw(m.rw);
}

template <req::rw_message_kind K>
bool decode(reader& r, req::rw_message<K>& m) {
    return r.id(field::uuid, m.uuid) && r.key(m.key);
}

template <class Control>
requires std::same_as<Control, req::lock_received> || std::same_as<Control, req::lock_client_timeout> ||
    std::same_as<Control, req::lock_client_error>
bool decode(reader& r, Control& m) { return r.id(field::uuid, m.uuid) && r.optional_key(m.key); }

bool decode(reader& r, req::lock_received_rejected& m) {
    return r.id(field::uuid, m.uuid) && r.optional_key(m.key) && r.optional_id(field::lock_id, m.lock_id);
}

bool decode(reader& r, req::cancel& m) { return r.id(field::uuid, m.uuid) && r.id(field::target, m.target); }

bool decode(reader& r, req::acquire_many& m) {
    if (!r.id(field::uuid, m.uuid)) return false;
    const json::value* keys = r.find(field::keys);
    if (!keys) return r.fail(errc::bad_request, "missing field \"keys\"");
    return r.key_list(field::keys, *keys, m.keys) && r.ttl(m.ttl) && r.flag(field::wait, m.wait) &&
           r.timeout(m.timeout) && r.keep_on_exit(m.keep_on_exit);
}

bool decode(reader& r, req::release_many& m) { return r.id(field::uuid, m.uuid) && r.id(field::lock_uuid, m.lock_id); }

bool decode(reader& r, req::extend& m) {
    return r.id(field::uuid, m.uuid) && r.key(m.key) && r.id(field::lock_id, m.lock_id) && r.ttl(m.ttl);
}

template <class UuidOnly>
requires std::same_as<UuidOnly, req::system_stats> || std::same_as<UuidOnly, req::unwatch>
bool decode(reader& r, UuidOnly& m) { return r.id(field::uuid, m.uuid); }

bool decode(reader& r, req::ls& m) {
    std::optional<std::int64_t> cursor, limit;
    if (!r.id(field::uuid, m.uuid) ||
        !r.range(field::cursor, 0, std::numeric_limits<std::int64_t>::max(), "a non-negative integer", cursor) ||
        !r.range(field::limit, 1, std::numeric_limits<std::uint32_t>::max(), "a positive integer", limit))
        return false;
    if (cursor) m.cursor = static_cast<std::uint64_t>(*cursor);
    if (limit) m.limit = static_cast<std::uint32_t>(*limit);
    return true;
}

bool decode(reader& r, req::lock_info& m) { return r.id(field::uuid, m.uuid) && r.key(m.key); }

bool decode(reader& r, req::pin& m) {
    if (!r.id(field::uuid, m.uuid)) return false;
    if (!r.find(field::prefix)) return r.fail(errc::bad_request, "missing field \"prefix\"");
    return r.pin_prefix(m.prefix) && r.max(m.max);
}

bool decode(reader& r, req::ping& m) { return r.id(field::uuid, m.uuid) && r.integer(field::timestamp, m.timestamp); }

bool decode(reader& r, req::watch& m) {
    if (!r.id(field::uuid, m.uuid)) return false;
    const json::value* keys = r.find(field::keys);
    return !keys || r.key_list(field::keys, *keys, m.keys.emplace());
}

template <class T>
bool decode_into(reader& r, request& out) {
    T m;
    if (!decode(r, m)) return false;
    out.emplace<T>(std::move(m));
    return true;
}

using decoder = bool (*)(reader&, request&);

template <std::size_t... I>
constexpr std::array<decoder, sizeof...(I)> make_decoders(std::index_sequence<I...>) {
    return {&decode_into<std::variant_alternative_t<I, request>>...};
}

constexpr auto decoders = make_decoders(std::make_index_sequence<std::variant_size_v<request>>{});

// Fills the fields an error reply echoes, from whatever the frame got right.
void fill_echo(const field_slots& fields, const codec_limits& limits, parse_error& err) {
    if (const auto* u = fields[field::uuid];
        u && u->is_string() && !u->get_string().empty() && u->get_string().size() <= limits.max_id_length)
        err.uuid = u->get_string();
    if (const auto* t = fields[field::type]; t && t->is_string()) err.type = t->get_string();
    if (const auto* k = fields[field::key];
        k && k->is_string() && !k->get_string().empty() && k->get_string().size() <= limits.max_key_length)
        err.key = k->get_string();
}

constexpr std::string_view live_mutex_malformed = "Malformed data sent to Live-Mutex broker";

parse_result decode_object(const json::object& obj, const codec_limits& limits) {
    const field_slots fields(obj);
    parse_error err;
    auto failed = [&]() -> parse_result {
        fill_echo(fields, limits, err);
        return err;
    };
    const json::value* type = fields[field::type];
    if (!type || type->is_null()) {
        err.message = std::string(live_mutex_malformed) + ": missing field \"type\".";
        return failed();
    }
    if (!type->is_string()) {
        err.message = std::string(live_mutex_malformed) + ": field \"type\" must be a string.";
        return failed();
    }
    std::string_view name = type->get_string();
    auto it = std::find(type_names.begin(), type_names.end(), name);
    if (it == type_names.end()) {
        err.code = errc::unknown_type;
        err.message = std::string(live_mutex_malformed) + ": unknown message type \"";
        err.message.append(truncate_utf8(name, 64)).append("\".");
        return failed();
    }
    request out;
    reader r(fields, limits, err);
    if (!decoders[static_cast<std::size_t>(it - type_names.begin())](r, out)) return failed();
    return out;
}

// Reads a flat lock or unlock request (see scan_flat_object) with the checks decode() makes;
// nullopt leaves the frame to the DOM path: other types, names these two do not use, and every
// frame that would be refused, so that refusals read as they always did.
std::optional<request> parse_flat_lock_request(std::string_view frame, const codec_limits& limits) {
    enum slot : std::size_t {
        type,
        uuid,
        key,
        ttl,
        max,
        wait,
        timeout,
        mode,
        after_death,
        on_exit,
        force,
        queued_notice,
        lock_id,
        count
    };
    static constexpr std::array<std::string_view, count> names = {"type",
                                                                  "uuid",
                                                                  "key",
                                                                  "ttl",
                                                                  "max",
                                                                  "wait",
                                                                  "timeout",
                                                                  "mode",
                                                                  "keepLocksAfterDeath",
                                                                  "keepLocksOnExit",
                                                                  "force",
                                                                  "queuedNotice",
                                                                  "_uuid"};
    std::array<std::optional<flat_value>, count> f;
    const bool flat = scan_flat_object(frame, [&](std::string_view name, const flat_value& v) {
        const std::size_t i = index_of(names, name);
        if (i == names.size() || f[i]) return false;  // another name, or a duplicate
        f[i] = v;
        return true;
    });
    if (!flat || !f[type] || f[type]->k != flat_value::kind::string) return std::nullopt;
    using kind = flat_value::kind;
    auto present = [&](slot i) { return f[i] && f[i]->k != kind::null; };
    auto id = [&](slot i, std::string& out) {
        if (!present(i) || f[i]->k != kind::string || f[i]->text.empty() || f[i]->text.size() > limits.max_id_length)
            return false;
        out = f[i]->text;
        return true;
    };
    auto key_of = [&](std::string& out) {
        if (!present(key) || f[key]->k != kind::string || f[key]->text.empty() ||
            f[key]->text.size() > limits.max_key_length)
            return false;
        out = f[key]->text;
        return true;
    };
    auto flag = [&](slot i, bool& out) {
        if (!present(i)) return true;
        if (f[i]->k != kind::boolean) return false;
        out = f[i]->flag;
        return true;
    };
    auto bounded = [&](slot i, std::uint64_t lo, std::uint64_t hi, auto& out) {
        if (!present(i)) return true;
        if (f[i]->k != kind::number || f[i]->number < lo || f[i]->number > hi) return false;
        out = static_cast<std::remove_cvref_t<decltype(*out)>>(f[i]->number);
        return true;
    };
    const auto max_ms = static_cast<std::uint64_t>(limits.max_duration.count());
    const std::string_view t = f[type]->text;
    if (t == "lock") {
        if (f[lock_id]) return std::nullopt;
        req::lock m;
        if (!id(uuid, m.uuid) || !key_of(m.key)) return std::nullopt;
        if (f[ttl]) {
            if (f[ttl]->k == kind::null) {
                m.ttl = no_expiry;
            } else {
                std::optional<std::uint64_t> n;
                if (!bounded(ttl, 0, max_ms, n)) return std::nullopt;
                if (*n != 0) m.ttl = milliseconds{static_cast<std::int64_t>(*n)};
            }
        }
        std::optional<std::uint64_t> n;
        if (!bounded(max, 1, std::numeric_limits<std::uint32_t>::max(), n)) return std::nullopt;
        if (n) m.max = static_cast<std::uint32_t>(*n);
        if (!flag(wait, m.wait)) return std::nullopt;
        n.reset();
        if (!bounded(timeout, 1, max_ms, n)) return std::nullopt;
        if (n) m.timeout = milliseconds{static_cast<std::int64_t>(*n)};
        if (present(mode)) {
            if (f[mode]->k == kind::string && f[mode]->text == "exclusive")
                m.mode = lock_mode::exclusive;
            else if (f[mode]->k == kind::string && f[mode]->text == "shared")
                m.mode = lock_mode::shared;
            else
                return std::nullopt;
        }
        bool keep_after_death = false, keep_on_exit = false;
        if (!flag(after_death, keep_after_death) || !flag(on_exit, keep_on_exit) || !flag(force, m.force) ||
            !flag(queued_notice, m.queued_notice))
            return std::nullopt;
        m.keep_on_exit = keep_after_death || keep_on_exit;
        return request(std::move(m));
    }
    if (t == "unlock") {
        for (slot unused : {ttl, max, wait, timeout, mode, after_death, on_exit, queued_notice})
            if (f[unused]) return std::nullopt;
        req::unlock m;
        if (!id(uuid, m.uuid) || !key_of(m.key)) return std::nullopt;
        if (present(lock_id) && !id(lock_id, m.lock_id.emplace())) return std::nullopt;
        if (!flag(force, m.force)) return std::nullopt;
        return request(std::move(m));
    }
    return std::nullopt;
}

// Builds the DOM like boost::json::parser's handler does, and also records how many members the
// outermost object had as written: the DOM keeps only the last of duplicate names, and two
// readers disagreeing on which one counts is how requests get smuggled.
struct dom_handler {
    static constexpr std::size_t max_object_size = json::object::max_size();
    static constexpr std::size_t max_array_size = json::array::max_size();
    static constexpr std::size_t max_key_size = json::string::max_size();
    static constexpr std::size_t max_string_size = json::string::max_size();

    json::value_stack st;
    std::size_t depth = 0;
    std::size_t top_members = 0;

    dom_handler(unsigned char* temp, std::size_t size) : st(json::storage_ptr(), temp, size) {}

    bool on_document_begin(json::error_code&) {
        depth = 0;
        top_members = 0;
        return true;
    }
    bool on_document_end(json::error_code&) { return true; }
    bool on_object_begin(json::error_code&) {
        ++depth;
        return true;
    }
    bool on_object_end(std::size_t n, json::error_code&) {
        if (--depth == 0) top_members = n;
        st.push_object(n);
        return true;
    }
    bool on_array_begin(json::error_code&) {
        ++depth;
        return true;
    }
    bool on_array_end(std::size_t n, json::error_code&) {
        --depth;
        st.push_array(n);
        return true;
    }
    bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
        st.push_chars(s);
        return true;
    }
    bool on_key(json::string_view s, std::size_t, json::error_code&) {
        st.push_key(s);
        return true;
    }
    bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
        st.push_chars(s);
        return true;
    }
    bool on_string(json::string_view s, std::size_t, json::error_code&) {
        st.push_string(s);
        return true;
    }
    bool on_number_part(json::string_view, json::error_code&) { return true; }
    bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
        st.push_int64(i);
        return true;
    }
    bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
        st.push_uint64(u);
        return true;
    }
    bool on_double(double d, json::string_view, json::error_code&) {
        st.push_double(d);
        return true;
    }
    bool on_bool(bool b, json::error_code&) {
        st.push_bool(b);
        return true;
    }
    bool on_null(json::error_code&) {
        st.push_null();
        return true;
    }
    bool on_comment_part(json::string_view, json::error_code&) { return true; }
    bool on_comment(json::string_view, json::error_code&) { return true; }
};

json::parse_options parse_options_for(const codec_limits& limits) {
    json::parse_options opt;
    opt.max_depth = limits.max_depth;
    return opt;
}

}  // namespace

std::string_view uuid_of(const request& r) noexcept {
    return std::visit(
        [](const auto& m) -> std::string_view {
            if constexpr (requires { m.uuid; })
                return m.uuid;
            else
                return {};
        },
        r);
}

struct request_parser::impl {
    explicit impl(const codec_limits& l) : limits(l), parser(parse_options_for(l), stack_buffer, sizeof stack_buffer) {}

    codec_limits limits;
    // The DOM of one frame lives in resource_buffer (spilling to the heap only for big frames)
    // and is thrown away before the next frame.
    alignas(std::max_align_t) unsigned char resource_buffer[8192];
    unsigned char stack_buffer[2048];
    std::optional<json::monotonic_resource> resource;
    json::basic_parser<dom_handler> parser;
};

request_parser::request_parser(const codec_limits& limits) : impl_(std::make_unique<impl>(limits)) {}
request_parser::~request_parser() = default;
request_parser::request_parser(request_parser&&) noexcept = default;
request_parser& request_parser::operator=(request_parser&&) noexcept = default;

const codec_limits& request_parser::limits() const noexcept { return impl_->limits; }

parse_result request_parser::parse(std::string_view frame) {
    impl& s = *impl_;
    if (frame.size() > s.limits.max_message_size) {
        parse_error e;
        e.code = errc::message_too_large;
        e.message = "message of " + std::to_string(frame.size()) + " bytes is over the limit of " +
                    std::to_string(s.limits.max_message_size);
        return e;
    }
    if (auto flat = parse_flat_lock_request(frame, s.limits)) return std::move(*flat);
    auto& handler = s.parser.handler();
    s.parser.reset();
    handler.st.reset();  // drops any partial DOM of a failed parse while its memory is still there
    // A fresh resource rather than release(): in Boost 1.81 release() keeps the doubled size of
    // the next heap block, so a long run of big frames would ask for ever larger blocks.
    s.resource.emplace(s.resource_buffer, sizeof s.resource_buffer);
    handler.st.reset(json::storage_ptr(&*s.resource));
    try {
        json::error_code ec;
        std::size_t used = s.parser.write_some(false, frame.data(), frame.size(), ec);
        if (!ec && used < frame.size()) ec = json::error::extra_data;
        if (ec) return malformed("malformed JSON: " + ec.message());
        // Built on s.resource: moving it anywhere else would copy it.
        const json::value doc = handler.st.release();
        if (!doc.is_object()) return malformed("message must be a JSON object");
        const json::object& obj = doc.get_object();
        if (obj.size() != handler.top_members) {
            parse_error e = malformed("message has a duplicate field name");
            fill_echo(field_slots(obj), s.limits, e);
            return e;
        }
        return decode_object(obj, s.limits);
    } catch (const std::exception& ex) {
        // Allocation failures and container limits: the frame is refused, the parser stays usable.
        return malformed(std::string("could not parse the message: ") + ex.what());
    }
}

parse_result parse_request(std::string_view frame, const codec_limits& limits) {
    request_parser parser(limits);
    return parser.parse(frame);
}

namespace {

void encode(std::string& out, const req::version& m) { frame(out, "version").str("value", m.value).end(); }

void encode(std::string& out, const req::hello& m) {
    frame(out, "hello")
        .str("uuid", m.uuid)
        .str_if("client", m.client)
        .num("protocol", m.protocol)
        .str_if("token", m.token)
        .end();
}

void encode(std::string& out, const req::lock& m) {
    frame fr(out, "lock");
    fr.str("uuid", m.uuid).str("key", m.key);
    append_optional_ms(fr, "ttl", m.ttl);
    if (m.max) fr.num("max", *m.max);
    if (!m.wait) fr.boolean("wait", false);
    if (m.timeout) fr.num("timeout", m.timeout->count());
    if (m.mode != lock_mode::exclusive) fr.str("mode", to_string(m.mode));
    if (m.keep_on_exit) fr.boolean("keepLocksOnExit", true);
    if (m.force) fr.boolean("force", true);
    if (!m.queued_notice) fr.boolean("queuedNotice", false);
    if (m.rw) fr.str("rwStatus", to_string(*m.rw));
    fr.end();
}

void encode(std::string& out, const req::unlock& m) {
    frame fr(out, "unlock");
    fr.str("uuid", m.uuid).str("key", m.key);
    if (m.lock_id) fr.str("_uuid", *m.lock_id);
    if (m.force) fr.boolean("force", true);
    if (m.rw) fr.str("rwStatus", to_string(*m.rw));
    fr.end();
}

template <req::rw_message_kind K>
void encode(std::string& out, const req::rw_message<K>& m) {
    frame(out, type_names[request(req::rw_message<K>{}).index()]).str("uuid", m.uuid).str("key", m.key).end();
}

void encode(std::string& out, const req::lock_received& m) {
    frame(out, "lock-received").str("uuid", m.uuid).str_if("key", m.key).end();
}

void encode(std::string& out, const req::lock_client_timeout& m) {
    frame(out, "lock-client-timeout").str("uuid", m.uuid).str_if("key", m.key).end();
}

void encode(std::string& out, const req::lock_client_error& m) {
    frame(out, "lock-client-error").str("uuid", m.uuid).str_if("key", m.key).end();
}

void encode(std::string& out, const req::lock_received_rejected& m) {
    frame fr(out, "lock-received-rejected");
    fr.str("uuid", m.uuid).str_if("key", m.key);
    if (m.lock_id) fr.str("_uuid", *m.lock_id);
    fr.end();
}

void encode(std::string& out, const req::cancel& m) {
    frame(out, "cancel").str("uuid", m.uuid).str("target", m.target).end();
}

void encode(std::string& out, const req::acquire_many& m) {
    frame fr(out, "acquire-many");
    fr.str("uuid", m.uuid).str_array("keys", m.keys);
    append_optional_ms(fr, "ttl", m.ttl);
    if (!m.wait) fr.boolean("wait", false);
    if (m.timeout) fr.num("timeout", m.timeout->count());
    if (m.keep_on_exit) fr.boolean("keepLocksOnExit", true);
    fr.end();
}

void encode(std::string& out, const req::release_many& m) {
    frame(out, "release-many").str("uuid", m.uuid).str("lockUuid", m.lock_id).end();
}

void encode(std::string& out, const req::extend& m) {
    frame fr(out, "extend");
    fr.str("uuid", m.uuid).str("key", m.key).str("_uuid", m.lock_id);
    append_optional_ms(fr, "ttl", m.ttl);
    fr.end();
}

void encode(std::string& out, const req::pin& m) {
    frame fr(out, "pin");
    fr.str("uuid", m.uuid).str("prefix", m.prefix);
    if (m.max) fr.num("max", *m.max);
    fr.end();
}

void encode(std::string& out, const req::ls& m) {
    frame fr(out, "ls");
    fr.str("uuid", m.uuid);
    if (m.cursor) fr.num("cursor", *m.cursor);
    if (m.limit) fr.num("limit", *m.limit);
    fr.end();
}

void encode(std::string& out, const req::lock_info& m) {
    frame(out, "lock-info-request").str("uuid", m.uuid).str("key", m.key).end();
}

void encode(std::string& out, const req::ping& m) {
    frame fr(out, "ping");
    fr.str("uuid", m.uuid);
    if (m.timestamp) fr.num("timestamp", *m.timestamp);
    fr.end();
}

void encode(std::string& out, const req::system_stats& m) {
    frame(out, "system-stats-request").str("uuid", m.uuid).end();
}

void encode(std::string& out, const req::watch& m) {
    frame fr(out, "watch");
    fr.str("uuid", m.uuid);
    if (m.keys) fr.str_array("keys", *m.keys);
    fr.end();
}

void encode(std::string& out, const req::unwatch& m) { frame(out, "unwatch").str("uuid", m.uuid).end(); }

}  // namespace

void encode_request(const request& r, std::string& out) {
    std::visit([&out](const auto& m) { encode(out, m); }, r);
}

}  // namespace lmx::core
