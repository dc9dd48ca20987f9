#pragma once

// Who may use the broker, and as what: tokens from --auth-token-file and unix-socket peers
// allowed by uid or gid (SO_PEERCRED). Private to libs/broker.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::detail {

enum class role : std::uint8_t { none, client, admin };

std::string_view to_string(role r) noexcept;  // "", "client", "admin"

struct unix_rule {
    bool group = false;  // gid rather than uid
    std::uint32_t id = 0;
    role grants = role::client;
};

// The tokens of one token file. Lines: `TOKEN [ROLE]` (ROLE admin or client, default client);
// blank lines and lines starting with '#' are skipped, as is anything after " #".
class token_set {
public:
    // Reads `path`; on any problem, nullopt and a sentence naming the file and line.
    static std::optional<token_set> load(const std::string& path, std::string& error, std::string& warning);

    // The role of `token`, role::none when it is not listed. Takes the same time whatever the
    // token and wherever (or whether) it matches, apart from the number of tokens listed.
    role find(std::string_view token) const noexcept;
    std::size_t size() const noexcept { return entries_.size(); }

private:
    struct entry {
        std::string token;
        role grants;
    };
    std::vector<entry> entries_;
};

// The role for a unix peer by its uid and gid under `rules`; the strongest match wins.
role unix_peer_role(const std::vector<unix_rule>& rules, std::uint32_t uid, std::uint32_t gid) noexcept;

// "Bearer TOKEN" in an Authorization header value -> TOKEN; empty when it is not one.
std::string_view bearer_token(std::string_view authorization) noexcept;

}  // namespace lmx::detail
