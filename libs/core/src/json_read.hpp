#pragma once

// Private to libs/core: what the request reader (request_codec.cpp) and the reply reader
// (reply_reader.cpp) share: the one-pass reader of flat frames and number conversions.

#include <lmx/core/protocol.hpp>

#include <boost/json/value.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace lmx::core::wire {

namespace json = boost::json;

enum class int_status : std::uint8_t { ok, not_number, not_integer, too_small, too_large };

// JS clients may write integral numbers as doubles (3000.0); fractions are refused.
int_status to_int64(const json::value& v, std::int64_t& out) noexcept;
int_status to_uint64(const json::value& v, std::uint64_t& out) noexcept;

// `field "name"`, for messages.
std::string quoted_name(std::string_view name);

// A bad_request parse_error with `message`.
parse_error malformed(std::string message);

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
inline bool scan_flat_object(std::string_view frame, OnMember&& on_member) {
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
            case 't':
                v.k = flat_value::kind::boolean;
                v.flag = true;
                return literal("true");
            case 'f':
                v.k = flat_value::kind::boolean;
                v.flag = false;
                return literal("false");
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
inline std::size_t index_of(const std::array<std::string_view, N>& names, std::string_view name) noexcept {
    std::size_t i = 0;
    while (i < N && (names[i].size() != name.size() || names[i].front() != name.front() || names[i] != name)) ++i;
    return i;
}

}  // namespace lmx::core::wire
