#include "json_read.hpp"

#include <cmath>
#include <limits>

namespace lmx::core::wire {

int_status to_int64(const json::value& v, std::int64_t& out) noexcept {
    switch (v.kind()) {
        case json::kind::int64: out = v.get_int64(); return int_status::ok;
        case json::kind::uint64:
            if (v.get_uint64() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
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

parse_error malformed(std::string message) {
    parse_error e;
    e.code = errc::bad_request;
    e.message = std::move(message);
    return e;
}

}  // namespace lmx::core::wire
