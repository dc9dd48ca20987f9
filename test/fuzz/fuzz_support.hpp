#pragma once

// Shared by the fuzz targets: property checks that crash (so libFuzzer keeps the input as the
// reproducer) and UTF-8 helpers for the writers, whose contract is "strings must be valid UTF-8".

#include <lmx/core/utf8.hpp>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace lmx::fuzz {

[[noreturn]] inline void fail(const char* file, int line, const char* what) {
    std::fprintf(stderr, "%s:%d: fuzz property broken: %s\n", file, line, what);
    std::abort();
}

#define LMX_FUZZ_CHECK(cond) ((cond) ? static_cast<void>(0) : ::lmx::fuzz::fail(__FILE__, __LINE__, #cond))

using core::utf8_sequence;
using core::valid_utf8;

inline std::string to_valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence(s, i);
        if (n == 0) {
            out.push_back('?');
            ++i;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
    return out;
}

// One NDJSON frame: a single line ending in '\n', no other newline (escaping must remove them).
inline bool one_line(std::string_view frame) noexcept { return !frame.empty() && frame.find('\n') == frame.size() - 1; }

// The same JSON object with one more member that no reader uses. The flat (DOM-free) readers
// leave any frame with an escape to the DOM readers, so this copy is always read the DOM way and
// both ways must agree. nullopt when `frame` does not start like an object or may already hold
// that member.
inline std::optional<std::string> with_ignored_member(std::string_view frame) {
    constexpr std::string_view member = R"("\u0000":0)";
    constexpr std::string_view space = " \t\r\n";
    if (frame.find(R"(\u0000)") != std::string_view::npos) return std::nullopt;
    const std::size_t open = frame.find_first_not_of(space);
    if (open == std::string_view::npos || frame[open] != '{') return std::nullopt;
    const std::size_t next = frame.find_first_not_of(space, open + 1);
    std::string out(frame.substr(0, open + 1));
    out.append(member);
    if (next != std::string_view::npos && frame[next] != '}') out.push_back(',');
    out.append(frame.substr(open + 1));
    return out;
}

}  // namespace lmx::fuzz
