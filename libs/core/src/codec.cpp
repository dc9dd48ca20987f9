#include <lmx/core/protocol.hpp>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_stack.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>

namespace lmx::core {

namespace json = boost::json;
using std::chrono::milliseconds;

std::string_view to_string(errc c) noexcept {
    switch (c) {
        case errc::ok: return "ok";
        case errc::bad_request: return "bad_request";
        case errc::timeout: return "timeout";
        case errc::cancelled: return "cancelled";
        case errc::too_many_waiters: return "too_many_waiters";
        case errc::duplicate_request: return "duplicate_request";
        case errc::not_holder: return "not_holder";
        case errc::not_found: return "not_found";
        case errc::message_too_large: return "message_too_large";
        case errc::too_many_keys: return "too_many_keys";
        case errc::key_too_long: return "key_too_long";
        case errc::unknown_type: return "unknown_type";
        case errc::version_mismatch: return "version_mismatch";
        case errc::shutting_down: return "shutting_down";
        case errc::unavailable: return "unavailable";
        case errc::limit_reached: return "limit_reached";
        case errc::max_pinned: return "max_pinned";
        case errc::unauthenticated: return "unauthenticated";
        case errc::forbidden: return "forbidden";
    }
    return "unknown";
}

std::string_view default_message(errc c) noexcept {
    switch (c) {
        case errc::ok: return "success";
        case errc::bad_request: return "bad request";
        case errc::timeout: return "timed out waiting for the lock";
        case errc::cancelled: return "the request was cancelled";
        case errc::too_many_waiters: return "too many requests are waiting";
        case errc::duplicate_request: return "the request id is already in use";
        case errc::not_holder: return "the lock id does not hold this key";
        case errc::not_found: return "no such lock id";
        case errc::message_too_large: return "message too large";
        case errc::too_many_keys: return "too many keys";
        case errc::key_too_long: return "key too long";
        case errc::unknown_type: return "unknown message type";
        case errc::version_mismatch: return "incompatible client version";
        case errc::shutting_down: return "the broker is shutting down";
        case errc::unavailable: return "the broker cannot grant locks now (its fencing state cannot be persisted)";
        case errc::limit_reached: return "a limit of the broker is reached (holds and waiters of this connection, or keys in total)";
        case errc::max_pinned: return "the key's max is pinned by the broker (--key-max): name no max, or that one";
        case errc::unauthenticated: return "the broker requires authentication: a valid token in the hello";
        case errc::forbidden: return "this connection's role does not permit the request";
    }
    return "unknown error";
}

std::string_view to_string(lock_mode m) noexcept {
    return m == lock_mode::shared ? "shared" : "exclusive";
}

std::string_view to_string(lost_reason r) noexcept {
    return r == lost_reason::forced ? "forced" : "ttl";
}

std::string_view to_string(rw_status s) noexcept {
    switch (s) {
        case rw_status::begin_read: return "begin_read";
        case rw_status::end_read: return "end_read";
        case rw_status::begin_write: return "begin_write";
        case rw_status::end_write: return "end_write";
        case rw_status::locking_write_key: return "locking_write_key";
        case rw_status::unlocking_write_key: return "unlocking_write_key";
    }
    return "unknown";
}

std::string_view to_string(event_kind e) noexcept {
    switch (e) {
        case event_kind::granted: return "granted";
        case event_kind::released: return "released";
        case event_kind::expired: return "expired";
        case event_kind::queued: return "queued";
        case event_kind::cancelled: return "cancelled";
        case event_kind::timeout: return "timeout";
        case event_kind::forced: return "forced";
    }
    return "unknown";
}

std::optional<errc> errc_from_string(std::string_view s) noexcept {
    for (auto i = static_cast<unsigned>(errc::ok); i <= static_cast<unsigned>(errc::forbidden);
         ++i) {
        auto c = static_cast<errc>(i);
        if (to_string(c) == s) return c;
    }
    return std::nullopt;
}

namespace {

constexpr std::array<std::string_view, std::variant_size_v<request>> type_names{
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

constexpr std::array<std::string_view, 6> rw_status_names{
    "begin_read", "end_read", "begin_write", "end_write", "locking_write_key", "unlocking_write_key"};

constexpr char hex_digits[] = "0123456789abcdef";

// Builds one frame in place at the end of `out`: it writes through a raw cursor into space it
// sized beforehand, so a frame costs a handful of bounds checks instead of dozens of appends.
// A separator is written unless the value opens an object or array.
class frame {
public:
    frame(std::string& out, std::string_view type) : out_(out), base_(out.size()) {
        grow(256);
        literal("{\"type\":");
        quoted(type);
    }
    ~frame() {
        if (!done_) out_.resize(base_);  // an exception left half a frame: take it back
    }
    frame(const frame&) = delete;
    frame& operator=(const frame&) = delete;

    frame& str(std::string_view name, std::string_view v) {
        field(name);
        quoted(v);
        return *this;
    }
    frame& str_if(std::string_view name, std::string_view v) {
        return v.empty() ? *this : str(name, v);
    }
    template <std::integral Int>
    frame& num(std::string_view name, Int v) {
        field(name);
        number(v);
        return *this;
    }
    // A member whose name comes from the wire (fencingTokens: {key: token}), so it is escaped.
    frame& num_member(std::string_view member, std::uint64_t v) {
        separate();
        quoted(member);
        put(':');
        number(v);
        return *this;
    }
    frame& boolean(std::string_view name, bool v) {
        field(name);
        if (v)
            literal("true");
        else
            literal("false");
        return *this;
    }
    frame& null(std::string_view name) {
        field(name);
        literal("null");
        return *this;
    }
    frame& failure(errc code, std::string_view message) {
        str("error", message.empty() ? default_message(code) : message);
        return str("code", to_string(code));
    }
    frame& open_object(std::string_view name) {
        field(name);
        put('{');
        return *this;
    }
    frame& open_array(std::string_view name) {
        field(name);
        put('[');
        return *this;
    }
    frame& open_object_element() {
        separate();
        put('{');
        return *this;
    }
    frame& str_element(std::string_view v) {
        separate();
        quoted(v);
        return *this;
    }
    frame& close_object() {
        put('}');
        return *this;
    }
    frame& close_array() {
        put(']');
        return *this;
    }
    template <class Range>
    frame& str_array(std::string_view name, const Range& values) {
        open_array(name);
        for (const auto& v : values) str_element(v);
        return close_array();
    }
    // Appends raw JSON text (a number's digits, say) to the value being written.
    frame& raw(std::string_view text) {
        reserve(text.size());
        copy(text.data(), text.size());
        return *this;
    }
    void end() {
        literal("}\n");
        out_.resize(static_cast<std::size_t>(cursor_ - out_.data()));
        done_ = true;
    }

private:
    void grow(std::size_t n) {
        std::size_t used = cursor_ ? static_cast<std::size_t>(cursor_ - out_.data()) : out_.size();
        out_.resize(used + std::max<std::size_t>(n, 256));
        cursor_ = out_.data() + used;
        end_ = out_.data() + out_.size();
    }
    void reserve(std::size_t n) {
        if (static_cast<std::size_t>(end_ - cursor_) < n) grow(n);
    }
    void copy(const char* p, std::size_t n) {
        std::memcpy(cursor_, p, n);
        cursor_ += n;
    }
    void put(char c) {
        reserve(1);
        *cursor_++ = c;
    }
    template <std::size_t N>
    void literal(const char (&s)[N]) {
        reserve(N - 1);
        copy(s, N - 1);
    }
    void separate() {
        reserve(1);
        char last = cursor_[-1];
        if (last != '{' && last != '[') *cursor_++ = ',';
    }
    void field(std::string_view name) {
        separate();
        reserve(name.size() + 3);
        *cursor_++ = '"';
        copy(name.data(), name.size());
        *cursor_++ = '"';
        *cursor_++ = ':';
    }
    template <std::integral Int>
    void number(Int v) {
        reserve(24);
        cursor_ = std::to_chars(cursor_, cursor_ + 24, v).ptr;
    }
    // JSON string escaping: quote, backslash and control characters; UTF-8 passes through.
    void quoted(std::string_view s) {
        reserve(s.size() * 6 + 2);
        *cursor_++ = '"';
        std::size_t run = 0;  // start of the pending stretch that needs no escaping
        for (std::size_t i = 0; i < s.size(); ++i) {
            auto c = static_cast<unsigned char>(s[i]);
            if (c >= 0x20 && c != '"' && c != '\\') continue;
            copy(s.data() + run, i - run);
            run = i + 1;
            *cursor_++ = '\\';
            switch (c) {
                case '"': *cursor_++ = '"'; break;
                case '\\': *cursor_++ = '\\'; break;
                case '\n': *cursor_++ = 'n'; break;
                case '\r': *cursor_++ = 'r'; break;
                case '\t': *cursor_++ = 't'; break;
                case '\b': *cursor_++ = 'b'; break;
                case '\f': *cursor_++ = 'f'; break;
                default: {
                    const char esc[] = {'u', '0', '0', hex_digits[c >> 4], hex_digits[c & 0xf]};
                    copy(esc, sizeof esc);
                }
            }
        }
        copy(s.data() + run, s.size() - run);
        *cursor_++ = '"';
    }

    std::string& out_;
    std::size_t base_;
    char* cursor_ = nullptr;
    char* end_ = nullptr;
    bool done_ = false;
};

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
    std::stable_sort(order.begin(), order.end(),
                     [](const T* a, const T* b) { return key_of(*a) < key_of(*b); });
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

void append_optional_ms(frame& fr, std::string_view name,
                        const std::optional<milliseconds>& value) {
    if (!value) return;
    if (*value == no_expiry)
        fr.null(name);
    else
        fr.num(name, value->count());
}

enum class int_status : std::uint8_t { ok, not_number, not_integer, too_small, too_large };

// JS clients may write integral numbers as doubles (3000.0); fractions are refused.
int_status to_int64(const json::value& v, std::int64_t& out) noexcept {
    switch (v.kind()) {
        case json::kind::int64: out = v.get_int64(); return int_status::ok;
        case json::kind::uint64:
            if (v.get_uint64() >
                static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                return int_status::too_large;
            out = static_cast<std::int64_t>(v.get_uint64());
            return int_status::ok;
        case json::kind::double_: {
            double d = v.get_double();
            if (std::isnan(d)) return int_status::not_integer;
            if (d >= 0x1p63) return int_status::too_large;
            if (d < -0x1p63) return int_status::too_small;
            if (std::trunc(d) != d) return int_status::not_integer;
            out = static_cast<std::int64_t>(d);
            return int_status::ok;
        }
        default: return int_status::not_number;
    }
}

int_status to_uint64(const json::value& v, std::uint64_t& out) noexcept {
    if (v.is_uint64()) {
        out = v.get_uint64();
        return int_status::ok;
    }
    if (v.is_double()) {
        double d = v.get_double();
        if (d >= 0x1p63 && d < 0x1p64 && std::trunc(d) == d) {
            out = static_cast<std::uint64_t>(d);
            return int_status::ok;
        }
        if (d >= 0x1p64) return int_status::too_large;
    }
    std::int64_t i = 0;
    auto s = to_int64(v, i);
    if (s != int_status::ok) return s;
    if (i < 0) return int_status::too_small;
    out = static_cast<std::uint64_t>(i);
    return int_status::ok;
}

std::string quoted_name(std::string_view name) {
    std::string s = "field \"";
    s.append(name);
    s.push_back('"');
    return s;
}

// Cuts at a UTF-8 boundary so that the result stays valid UTF-8.
std::string_view truncate_utf8(std::string_view s, std::size_t max) noexcept {
    if (s.size() <= max) return s;
    while (max > 0 && (static_cast<unsigned char>(s[max]) & 0xC0) == 0x80) --max;
    return s.substr(0, max);
}

// The frames on a lock's hot path (lock and unlock requests; grants, queued notices, unlock and
// extend replies) are flat objects of short ASCII strings, unsigned integers and booleans. They
// are read in one pass without building a DOM. A frame with anything this reader would have to
// judge (an escape, non-ASCII text, a nested value, a number that is not a plain unsigned
// integer, a duplicate name, bad syntax) is left to the DOM readers, which then decide, so
// errors read exactly as they always did.
struct flat_value {
    enum class kind { string, number, boolean, null };
    kind k = kind::null;
    std::string_view text;     // string
    std::uint64_t number = 0;  // number: at most 18 digits
    bool flag = false;         // boolean
};

// Calls on_member(name, value) for each member of the object `frame`; false when the frame is
// not a flat object or on_member returns false.
template <class OnMember>
bool scan_flat_object(std::string_view frame, OnMember&& on_member) {
    const char* p = frame.data();
    const char* const end = p + frame.size();
    auto ws = [&] {
        while (p != end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
    };
    auto eat = [&](char c) {
        if (p == end || *p != c) return false;
        ++p;
        return true;
    };
    auto string = [&](std::string_view& out) {  // printable ASCII without escapes only
        if (!eat('"')) return false;
        const char* start = p;
        while (p != end && *p != '"') {
            const auto c = static_cast<unsigned char>(*p);
            if (c < 0x20 || c >= 0x80 || c == '\\') return false;
            ++p;
        }
        if (p == end) return false;
        out = std::string_view(start, static_cast<std::size_t>(p - start));
        ++p;
        return true;
    };
    auto literal = [&](std::string_view word) {
        if (static_cast<std::size_t>(end - p) < word.size() || std::string_view(p, word.size()) != word) return false;
        p += word.size();
        return true;
    };
    auto value = [&](flat_value& v) {
        if (p == end) return false;
        switch (*p) {
            case '"': v.k = flat_value::kind::string; return string(v.text);
            case 't': v.k = flat_value::kind::boolean; v.flag = true; return literal("true");
            case 'f': v.k = flat_value::kind::boolean; v.flag = false; return literal("false");
            case 'n': v.k = flat_value::kind::null; return literal("null");
            default: break;
        }
        // Up to 18 digits, no leading zero, no sign, fraction or exponent: always fits.
        const char* start = p;
        v.number = 0;
        while (p != end && *p >= '0' && *p <= '9') v.number = v.number * 10 + static_cast<std::uint64_t>(*p++ - '0');
        const auto digits = p - start;
        if (digits == 0 || digits > 18 || (digits > 1 && *start == '0')) return false;
        if (p != end && (*p == '.' || *p == 'e' || *p == 'E')) return false;
        v.k = flat_value::kind::number;
        return true;
    };
    ws();
    if (!eat('{')) return false;
    ws();
    if (!eat('}')) {
        for (;;) {
            std::string_view name;
            flat_value v;
            if (!string(name)) return false;
            ws();
            if (!eat(':')) return false;
            ws();
            if (!value(v) || !on_member(name, v)) return false;
            ws();
            if (eat(',')) {
                ws();
                continue;
            }
            if (eat('}')) break;
            return false;
        }
    }
    ws();
    return p == end;
}

// The index of `name` in `names`, or names.size().
template <std::size_t N>
std::size_t index_of(const std::array<std::string_view, N>& names, std::string_view name) noexcept {
    std::size_t i = 0;
    while (i < N && (names[i].size() != name.size() || names[i].front() != name.front() || names[i] != name)) ++i;
    return i;
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
    const json::value* operator[](field f) const noexcept {
        return slots_[static_cast<std::size_t>(f)];
    }

private:
    std::array<const json::value*, field_names.size()> slots_{};
};

std::string quoted_name(field f) { return quoted_name(field_names[static_cast<std::size_t>(f)]); }

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
        if (!flag(field::keep_locks_after_death, after_death) ||
            !flag(field::keep_locks_on_exit, on_exit))
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
                return fail(errc::bad_request,
                            "field \"ttl\" must be null or a non-negative integer (milliseconds)");
        }
        if (n == 0)
            out.reset();
        else
            out = milliseconds{n};
        return true;
    }

    bool timeout(std::optional<milliseconds>& out) {
        std::optional<std::int64_t> n;
        if (!bounded(field::timeout, 1, limits_.max_duration.count(),
                     "a positive integer (milliseconds)", n))
            return false;
        if (n) out = milliseconds{*n};
        return true;
    }

    bool max(std::optional<std::uint32_t>& out) {
        std::optional<std::int64_t> n;
        if (!bounded(field::max, 1, std::numeric_limits<std::uint32_t>::max(), "an integer >= 1",
                     n))
            return false;
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
        return bounded(name, std::numeric_limits<std::int64_t>::min(),
                       std::numeric_limits<std::int64_t>::max(), "an integer", out);
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
        if (!v->is_string())
            return fail(errc::bad_request, quoted_name(name) + " must be a string");
        if (v->get_string().size() > limits_.max_id_length)
            return fail(errc::bad_request, quoted_name(name) + " is longer than " +
                                               std::to_string(limits_.max_id_length) + " bytes");
        out = v->get_string();
        return true;
    }

    // A non-empty array of valid keys, at most max_keys long.
    bool key_list(field name, const json::value& v, std::vector<std::string>& out) {
        if (!v.is_array() || v.get_array().empty())
            return fail(errc::bad_request,
                        quoted_name(name) + " must be a non-empty array of keys");
        const auto& array = v.get_array();
        if (array.size() > limits_.max_keys)
            return fail(errc::too_many_keys,
                        quoted_name(name) + " has " + std::to_string(array.size()) +
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
            return fail(errc::bad_request, quoted_name(name) + " is longer than " +
                                               std::to_string(limits_.max_id_length) + " bytes");
        out = v.get_string();
        return true;
    }

    bool key_value(const std::string& what, const json::value& v, std::string& out) {
        if (!v.is_string()) return fail(errc::bad_request, what + " must be a string");
        const auto& s = v.get_string();
        if (s.empty()) return fail(errc::bad_request, what + " must not be empty");
        if (s.size() > limits_.max_key_length)
            return fail(errc::key_too_long, what + " is " + std::to_string(s.size()) +
                                                " bytes, over the limit of " +
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
                return fail(errc::bad_request,
                            quoted_name(name) + " must be at most " + std::to_string(hi));
            default:
                return fail(errc::bad_request, quoted_name(name) + " must be " + std::string(what));
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
    if (!r.id(field::uuid, m.uuid) || !r.string(field::client, m.client) || !r.string(field::token, m.token)) return false;
    if (!r.find(field::protocol)) return r.fail(errc::bad_request, "missing field \"protocol\"");
    if (!r.integer(field::protocol, protocol)) return false;
    if (*protocol < 0 || *protocol > std::numeric_limits<std::uint32_t>::max())
        return r.fail(errc::bad_request, "field \"protocol\" must be a non-negative integer");
    m.protocol = static_cast<std::uint32_t>(*protocol);
    return true;
}

bool decode(reader& r, req::lock& m) {
    return r.id(field::uuid, m.uuid) && r.key(m.key) && r.ttl(m.ttl) && r.max(m.max) &&
           r.flag(field::wait, m.wait) && r.timeout(m.timeout) && r.mode(m.mode) &&
           r.keep_on_exit(m.keep_on_exit) && r.flag(field::force, m.force) &&
           r.flag(field::queued_notice, m.queued_notice) && r.rw(m.rw);
}

bool decode(reader& r, req::unlock& m) {
    return r.id(field::uuid, m.uuid) && r.key(m.key) && r.optional_id(field::lock_id, m.lock_id) &&
           r.flag(field::force, m.force) && r.rw(m.rw);
}

template <req::rw_message_kind K>
bool decode(reader& r, req::rw_message<K>& m) { return r.id(field::uuid, m.uuid) && r.key(m.key); }

template <class Control>
requires std::same_as<Control, req::lock_received> ||
    std::same_as<Control, req::lock_client_timeout> || std::same_as<Control, req::lock_client_error>
bool decode(reader& r, Control& m) { return r.id(field::uuid, m.uuid) && r.optional_key(m.key); }

bool decode(reader& r, req::lock_received_rejected& m) {
    return r.id(field::uuid, m.uuid) && r.optional_key(m.key) &&
           r.optional_id(field::lock_id, m.lock_id);
}

bool decode(reader& r, req::cancel& m) {
    return r.id(field::uuid, m.uuid) && r.id(field::target, m.target);
}

bool decode(reader& r, req::acquire_many& m) {
    if (!r.id(field::uuid, m.uuid)) return false;
    const json::value* keys = r.find(field::keys);
    if (!keys) return r.fail(errc::bad_request, "missing field \"keys\"");
    return r.key_list(field::keys, *keys, m.keys) && r.ttl(m.ttl) && r.flag(field::wait, m.wait) &&
           r.timeout(m.timeout) && r.keep_on_exit(m.keep_on_exit);
}

bool decode(reader& r, req::release_many& m) {
    return r.id(field::uuid, m.uuid) && r.id(field::lock_uuid, m.lock_id);
}

bool decode(reader& r, req::extend& m) {
    return r.id(field::uuid, m.uuid) && r.key(m.key) && r.id(field::lock_id, m.lock_id) &&
           r.ttl(m.ttl);
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

bool decode(reader& r, req::ping& m) {
    return r.id(field::uuid, m.uuid) && r.integer(field::timestamp, m.timestamp);
}

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
    if (const auto* u = fields[field::uuid]; u && u->is_string() && !u->get_string().empty() &&
                                             u->get_string().size() <= limits.max_id_length)
        err.uuid = u->get_string();
    if (const auto* t = fields[field::type]; t && t->is_string()) err.type = t->get_string();
    if (const auto* k = fields[field::key]; k && k->is_string() && !k->get_string().empty() &&
                                            k->get_string().size() <= limits.max_key_length)
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
        type, uuid, key, ttl, max, wait, timeout, mode, after_death, on_exit, force, queued_notice, lock_id, count
    };
    static constexpr std::array<std::string_view, count> names = {
        "type", "uuid", "key", "ttl", "max", "wait", "timeout", "mode", "keepLocksAfterDeath", "keepLocksOnExit",
        "force", "queuedNotice", "_uuid"};
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
        if (!present(key) || f[key]->k != kind::string || f[key]->text.empty() || f[key]->text.size() > limits.max_key_length)
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
            if (f[mode]->k == kind::string && f[mode]->text == "exclusive") m.mode = lock_mode::exclusive;
            else if (f[mode]->k == kind::string && f[mode]->text == "shared") m.mode = lock_mode::shared;
            else return std::nullopt;
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

parse_error malformed(std::string message) {
    parse_error e;
    e.code = errc::bad_request;
    e.message = std::move(message);
    return e;
}

}  // namespace

std::string_view type_name(const request& r) noexcept { return type_names[r.index()]; }

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
    explicit impl(const codec_limits& l)
        : limits(l), parser(parse_options_for(l), stack_buffer, sizeof stack_buffer) {}

    codec_limits limits;
    // The DOM of one frame lives in resource_buffer (spilling to the heap only for big frames)
    // and is thrown away before the next frame.
    alignas(std::max_align_t) unsigned char resource_buffer[8192];
    unsigned char stack_buffer[2048];
    std::optional<json::monotonic_resource> resource;
    json::basic_parser<dom_handler> parser;
};

request_parser::request_parser(const codec_limits& limits)
    : impl_(std::make_unique<impl>(limits)) {}
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

void encode(std::string& out, const req::version& m) {
    frame(out, "version").str("value", m.value).end();
}

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

void encode(std::string& out, const req::unwatch& m) {
    frame(out, "unwatch").str("uuid", m.uuid).end();
}

}  // namespace

void encode_request(const request& r, std::string& out) {
    std::visit([&out](const auto& m) { encode(out, m); }, r);
}

void write_lock_granted(std::string& out, std::string_view uuid, std::string_view key,
                        fencing_token token, std::uint32_t lock_request_count,
                        std::uint32_t readers_count) {
    frame(out, "lock")
        .str("uuid", uuid)
        .str("key", key)
        .boolean("acquired", true)
        .num("fencingToken", token)
        .num("lockRequestCount", lock_request_count)
        .num("readersCount", readers_count)
        .end();
}

void write_lock_queued(std::string& out, std::string_view uuid, std::string_view key,
                       std::uint32_t lock_request_count, std::uint32_t readers_count,
                       std::uint32_t position) {
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
    frame(out, "lock")
        .str("uuid", uuid)
        .str("key", key)
        .boolean("acquired", false)
        .failure(code, message)
        .end();
}

void write_unlock_ok(std::string& out, std::string_view uuid, std::string_view key,
                     std::uint32_t lock_request_count, std::string_view warning, bool held) {
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
    frame(out, "unlock")
        .str("uuid", uuid)
        .str("key", key)
        .boolean("unlocked", false)
        .failure(code, message)
        .end();
}

void write_acquire_many_granted(std::string& out, std::string_view uuid,
                                std::span<const key_token> keys, std::string_view lock_id) {
    frame fr(out, "acquire-many");
    fr.str("uuid", uuid);
    append_keys(fr, keys);
    fr.boolean("acquired", true).str("lockUuid", lock_id).open_object("fencingTokens");
    for_each_sorted_unique(keys, [&](const key_token& k) { fr.num_member(k.key, k.token); });
    fr.close_object().end();
}

void write_acquire_many_queued(std::string& out, std::string_view uuid,
                               std::span<const key_token> keys, std::string_view contended_key,
                               std::uint32_t lock_request_count) {
    acquire_many_queued(out, uuid, keys, contended_key, lock_request_count);
}

void write_acquire_many_queued(std::string& out, std::string_view uuid,
                               std::span<const std::string> keys, std::string_view contended_key,
                               std::uint32_t lock_request_count) {
    acquire_many_queued(out, uuid, keys, contended_key, lock_request_count);
}

void write_acquire_many_refused(std::string& out, std::string_view uuid,
                                std::span<const key_token> keys, std::string_view contended_key,
                                std::uint32_t lock_request_count) {
    frame fr(out, "acquire-many");
    fr.str("uuid", uuid);
    append_keys(fr, keys);
    fr.boolean("acquired", false)
        .boolean("queued", false)
        .str_if("contendedKey", contended_key)
        .num("lockRequestCount", lock_request_count)
        .end();
}

void write_acquire_many_error(std::string& out, std::string_view uuid,
                              std::span<const key_token> keys, errc code,
                              std::string_view message) {
    acquire_many_error(out, uuid, keys, code, message);
}

void write_acquire_many_error(std::string& out, std::string_view uuid,
                              std::span<const std::string> keys, errc code,
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

void write_release_many_error(std::string& out, std::string_view uuid, errc code,
                              std::string_view message) {
    frame(out, "release-many")
        .str("uuid", uuid)
        .boolean("released", false)
        .failure(code, message)
        .end();
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
    frame(out, "extend")
        .str("uuid", uuid)
        .str("key", key)
        .boolean("extended", false)
        .failure(code, message)
        .end();
}

void write_cancel(std::string& out, std::string_view uuid, bool cancelled) {
    frame(out, "cancel").str("uuid", uuid).boolean("cancelled", cancelled).end();
}

void write_pin(std::string& out, std::string_view uuid, std::string_view prefix, std::optional<std::uint32_t> max) {
    frame fr(out, "pin");
    fr.str("uuid", uuid).str("prefix", prefix);
    if (max) fr.num("max", *max);
    else fr.null("max");
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
            if (h.expires) fr.num("expiresInMs", ms(*h.expires - *now));
            else fr.null("expiresInMs");
            fr.close_object();
        }
        fr.close_array();
    }
    fr.end();
}

void write_pong(std::string& out, std::string_view uuid, std::int64_t timestamp,
                std::int64_t server_timestamp) {
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
        .num("messagesOut", stats.messages_out);
    if (stats.pid != 0) fr.num("pid", stats.pid);
    fr.open_array("topContendedKeys");
    for (const auto& k : stats.top_contended) {
        fr.open_object_element()
            .str("key", k.key)
            .num("waiters", k.waiters)
            .num("holders", k.holders)
            .close_object();
    }
    fr.close_array().close_object().end();
}

void write_hello(std::string& out, std::string_view uuid, std::string_view broker,
                 std::uint32_t protocol, std::string_view session,
                 std::span<const std::string_view> features, std::string_view epoch,
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

void write_version_mismatch(std::string& out, std::string_view client_version,
                            std::string_view broker_version) {
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
    frame(out, watching ? "watch" : "unwatch")
        .str("uuid", uuid)
        .boolean("watching", watching)
        .end();
}

void write_lock_lost(std::string& out, std::string_view key, std::string_view lock_id,
                     lost_reason reason) {
    frame(out, "lock-lost")
        .str("key", key)
        .str("uuid", lock_id)
        .str("reason", to_string(reason))
        .end();
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

void write_error(std::string& out, std::string_view uuid, errc code, std::string_view message,
                 std::string_view key) {
    frame(out, "error").str_if("uuid", uuid).str_if("key", key).failure(code, message).end();
}

void write_error(std::string& out, const parse_error& e) {
    write_error(out, e.uuid, e.code, e.message, e.key);
}

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
        if (to_int64(*v, n) != int_status::ok || n < 0 ||
            n > std::numeric_limits<std::uint32_t>::max())
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
        if (to_int64(*v, n) != int_status::ok || n < 0)
            return fail("expiresInMs", "null or a non-negative integer");
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
        if (!inner.str("clientVersion", r.client_version) ||
            !inner.str("brokerVersion", r.broker_version)) {
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
        const std::size_t h = k.empty() ? 0 : k.size() * 31 + static_cast<unsigned char>(k.front()) * 7 +
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
            "type", "uuid", "key", "acquired", "queued", "unlocked", "extended", "cancelled", "released",
            "watching", "error", "code", "warning", "fencingToken", "lockRequestCount", "readersCount",
            "position", "lockUuid", "contendedKey", "expiresInMs", "lockInfo", "isLocked", "max",
            "timestamp", "serverTimestamp", "broker", "protocol", "session", "reason", "event",
            "keys", "fencingTokens", "ls_result", "lockholderUUIDs", "features", "stats", "versions", "epoch", "cursor",
            "held", "limits"};
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
    const json::value doc = json::parse(json::string_view(frame.data(), frame.size()), ec,
                                        json::storage_ptr(&resource));
    if (ec) return malformed("malformed JSON: " + ec.message());
    if (!doc.is_object()) return malformed("reply must be a JSON object");

    reply r;
    reply_reader rd(doc.get_object());
    bool ok =
        rd.str("type", r.type) && rd.str("uuid", r.uuid) && rd.str("key", r.key) &&
        rd.boolean("acquired", r.acquired) && rd.boolean("queued", r.queued) &&
        rd.boolean("unlocked", r.unlocked) && rd.boolean("extended", r.extended) &&
        rd.boolean("cancelled", r.cancelled) && rd.boolean("released", r.released) &&
        rd.boolean("watching", r.watching) && rd.str("error", r.error) && rd.str("code", r.code) &&
        rd.str("warning", r.warning) && rd.token("fencingToken", r.token) &&
        rd.u32("lockRequestCount", r.lock_request_count) &&
        rd.u32("readersCount", r.readers_count) && rd.u32("position", r.position) &&
        rd.str("lockUuid", r.lock_id) && rd.strings("keys", r.keys) &&
        rd.tokens(r.fencing_tokens) && rd.str("contendedKey", r.contended_key) &&
        rd.expires(r.expires_in) && rd.strings("ls_result", r.ls_result) &&
        rd.boolean("lockInfo", r.lock_info) && rd.boolean("isLocked", r.is_locked) &&
        rd.strings("lockholderUUIDs", r.lockholder_uuids) && rd.u32("max", r.max) &&
        rd.i64("timestamp", r.timestamp) && rd.i64("serverTimestamp", r.server_timestamp) &&
        rd.str("broker", r.broker) && rd.u32("protocol", r.protocol) &&
        rd.str("session", r.session) && rd.strings("features", r.features) && rd.stats(r.stats) &&
        rd.versions(r) && rd.str("reason", r.reason) && rd.str("event", r.event) && rd.str("epoch", r.epoch) && rd.token("cursor", r.cursor) &&
        rd.boolean("held", r.held) && rd.limits(r);
    if (!ok) {
        parse_error e = malformed(std::move(rd.error));
        e.uuid = r.uuid;
        e.type = r.type;
        e.key = r.key;
        return e;
    }
    return r;
}

}  // namespace lmx::core
