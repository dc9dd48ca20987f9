#pragma once

// Where a client finds its broker: flags > environment > the settings file > defaults.
// The `lmx set/get/unset` commands and client_options::from_env share this code.

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace lmx {

struct connection_settings {
    std::optional<std::string> url;       // wins over everything else in the same layer
    std::optional<std::string> uds_path;  // wins over host/port in the same layer (as in live-mutex)
    std::optional<std::string> host;
    std::optional<std::uint16_t> port;
    std::optional<std::string> token_file{};  // not part of the address: the first layer naming one wins

    bool empty() const noexcept { return !url && !uds_path && !host && !port; }
};

// $XDG_CONFIG_HOME/lmx/config.json, or ~/.config/lmx/config.json.
std::string settings_path();

// The settings file; an absent file is empty settings. A file that cannot be read or parsed
// gives nullopt and a one-line `error`.
std::optional<connection_settings> load_settings(std::string* error = nullptr);
bool save_settings(const connection_settings& s, std::string* error = nullptr);

// LMX_URL, LMX_UDS_PATH, LMX_HOST, LMX_PORT, LMX_TOKEN_FILE. An unparsable LMX_PORT gives
// nullopt and `error`.
std::optional<connection_settings> env_settings(std::string* error = nullptr);

// The URL from layers ordered from highest precedence to lowest: the first layer that names
// anything decides; host and port left out there come from lower layers, then the defaults
// 127.0.0.1 and 6970.
std::string resolve_url(std::span<const connection_settings> layers);

// The token in a token file: its first word that is not on a '#' line. Empty with `error` when
// the file cannot be read or holds none.
std::string read_token_file(const std::string& path, std::string* error = nullptr);

}  // namespace lmx
