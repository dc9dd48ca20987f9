#include "auth.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

namespace lmx::detail {

namespace {

constexpr std::size_t min_token_length = 16;

std::string_view trim(std::string_view s) {
    const auto begin = s.find_first_not_of(" \t\r");
    if (begin == std::string_view::npos) return {};
    const auto end = s.find_last_not_of(" \t\r");
    return s.substr(begin, end - begin + 1);
}

// Equal without an early exit: the time depends on the lengths only.
bool same(std::string_view a, std::string_view b) noexcept {
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    const std::size_t n = std::max(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
        diff |= static_cast<unsigned>(x ^ y);
    }
    return diff == 0;
}

}  // namespace

std::string_view to_string(role r) noexcept {
    switch (r) {
        case role::none: return "";
        case role::client: return "client";
        case role::admin: return "admin";
    }
    return "";
}

std::optional<token_set> token_set::load(const std::string& path, std::string& error, std::string& warning) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        error = "cannot read the token file " + path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
        error = "cannot read the token file " + path + ": not a regular file";
        return std::nullopt;
    }
    std::ifstream in(path);
    if (!in) {
        error = "cannot read the token file " + path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    if ((st.st_mode & 077) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        warning = "the token file " + path + " can be read by other users (mode " + mode + "); chmod 600 it";
    }
    token_set out;
    std::string line;
    for (std::size_t number = 1; std::getline(in, line); ++number) {
        std::string_view text = line;
        if (const auto hash = text.find(" #"); hash != std::string_view::npos) text = text.substr(0, hash);
        if (const auto hash = text.find("\t#"); hash != std::string_view::npos) text = text.substr(0, hash);
        text = trim(text);
        if (text.empty() || text.front() == '#') continue;
        const auto where = path + ":" + std::to_string(number) + ": ";
        const auto space = text.find_first_of(" \t");
        const std::string_view token = text.substr(0, space);
        const std::string_view rest = space == std::string_view::npos ? std::string_view{} : trim(text.substr(space));
        role grants = role::client;
        if (rest == "admin")
            grants = role::admin;
        else if (!rest.empty() && rest != "client") {
            error = where + "unknown role '" + std::string(rest) + "' (admin or client)";
            return std::nullopt;
        }
        if (token.size() < min_token_length) {
            error = where + "a token must be at least " + std::to_string(min_token_length) + " characters";
            return std::nullopt;
        }
        for (const char c : token) {
            if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
                error = where + "a token must be printable ASCII without spaces";
                return std::nullopt;
            }
        }
        out.entries_.push_back({std::string(token), grants});
    }
    if (in.bad()) {
        error = "cannot read the token file " + path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    return out;
}

role token_set::find(std::string_view token) const noexcept {
    role found = role::none;
    // Every entry is compared, matched or not.
    for (const auto& e : entries_)
        if (same(e.token, token) && e.grants > found) found = e.grants;
    return token.empty() ? role::none : found;
}

role unix_peer_role(const std::vector<unix_rule>& rules, std::uint32_t uid, std::uint32_t gid) noexcept {
    role found = role::none;
    for (const auto& r : rules)
        if (r.id == (r.group ? gid : uid) && r.grants > found) found = r.grants;
    return found;
}

std::string_view bearer_token(std::string_view authorization) noexcept {
    authorization = trim(authorization);
    constexpr std::string_view scheme = "bearer ";
    if (authorization.size() <= scheme.size()) return {};
    for (std::size_t i = 0; i < scheme.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i]) return {};
    return trim(authorization.substr(scheme.size()));
}

}  // namespace lmx::detail
