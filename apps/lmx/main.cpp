#include "commands.hpp"

#include <lmx/broker/build_info.hpp>
#include <lmx/version.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    CLI::App app{"lmx — networked mutex and semaphore broker, and its command line client"};
    app.set_version_flag("-V,--version",
                         "lmx " LMX_VERSION_STRING " (protocol " + std::to_string(LMX_PROTOCOL_VERSION) + ", commit " +
                             std::string(lmx::build_commit()) + ", " + std::string(lmx::build_type()) + " build)");
    app.name("lmx");  // in usage lines, whatever path it was started by
    app.require_subcommand(1);
    app.get_formatter()->column_width(36);

    std::function<int()> action;
    auto set_action = [&](std::function<int()> a) { action = std::move(a); };
    lmx::app::add_broker_command(app, set_action);
    lmx::app::add_lock_commands(app, set_action);
    lmx::app::add_run_command(app, set_action);
    lmx::app::add_inspect_commands(app, set_action);
    lmx::app::add_settings_commands(app, set_action);
    lmx::app::add_check_command(app, set_action);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        // CLI11 returns 0 for --help/--version and its own codes for errors; ours is 2 for usage.
        return code == 0 ? 0 : lmx::app::exit_usage;
    }
    return action ? action() : lmx::app::exit_usage;
}
