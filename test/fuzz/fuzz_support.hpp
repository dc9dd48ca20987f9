#pragma once

// Shared by the fuzz targets: property checks that crash (so libFuzzer keeps the input as the
// reproducer) and UTF-8 helpers for the writers, whose contract is "strings must be valid UTF-8".

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

#define LMX_FUZZ_CHECK(cond) \
    ((cond) ? static_cast<void>(0) : ::lmx::fuzz::fail(__FILE__, __LINE__, #cond))

// Length of the well-formed UTF-8 sequence starting at s[i], or 0. Overlong forms, surrogates and
// code points past U+10FFFF are ill-formed, as Boost.JSON's validator has it.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) noexcept {
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = byte(i);
    if (c < 0x80) return 1;
    std::size_t n = 0;
    unsigned cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (s.size() - i < n) return 0;
    for (std::size_t k = 1; k < n; ++k) {
        if ((byte(i + k) & 0xC0u) != 0x80u) return 0;
        cp = cp << 6 | (byte(i + k) & 0x3Fu);
    }
    if (n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return n;
}

inline bool valid_utf8(std::string_view s) noexcept {
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

// Keeps every well-formed sequence of `s` and turns each other byte into '?', so fuzzed bytes
// reach the writers (control characters, quotes, multi-byte text) within their contract.
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
inline bool one_line(std::string_view frame) noexcept {
    return !frame.empty() && frame.find('\n') == frame.size() - 1;
}

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
