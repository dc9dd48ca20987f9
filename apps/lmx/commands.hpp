#pragma once

#include <cstdint>
#include <functional>

namespace CLI {
class App;
}  // namespace CLI

namespace lmx::app {

// Documented exit codes of every lmx command.
inline constexpr int exit_ok = 0;
inline constexpr int exit_not_obtained = 1;  // lock not obtained (timeout, try-lock refused)
inline constexpr int exit_usage = 2;
inline constexpr int exit_unreachable = 3;  // cannot reach the broker

// The longest ttl or timeout the broker accepts (366 days); options in ms are bounded by it, so
// that a bad value gets a readable range in its error.
inline constexpr std::int64_t max_duration_ms = std::int64_t{366} * 24 * 3600 * 1000;

// Each subcommand registers itself and, when chosen, hands its action to `set_action`.
using action_setter = std::function<void(std::function<int()>)>;
void add_broker_command(CLI::App& app, action_setter set_action);
void add_lock_commands(CLI::App& app, action_setter set_action);  // acquire, release, pin
void add_run_command(CLI::App& app, action_setter set_action);
void add_inspect_commands(CLI::App& app, action_setter set_action);   // ls, info, stats, ping
void add_settings_commands(CLI::App& app, action_setter set_action);  // set, get, unset
void add_check_command(CLI::App& app, action_setter set_action);      // the safety checker

}  // namespace lmx::app
