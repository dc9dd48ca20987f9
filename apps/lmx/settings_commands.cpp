// lmx set / get / unset: the connection settings kept in $XDG_CONFIG_HOME/lmx/config.json.

#include "client_common.hpp"

#include <lmx/client/settings.hpp>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <CLI/CLI.hpp>

#include <array>
#include <cstdio>

namespace lmx::app {

namespace {

const std::vector<std::string> names = {"url", "uds_path", "host", "port", "token_file"};

std::optional<std::string> value_of(const connection_settings& s, const std::string& name) {
    if (name == "url") return s.url;
    if (name == "token_file") return s.token_file;
    if (name == "uds_path") return s.uds_path;
    if (name == "host") return s.host;
    if (s.port) return std::to_string(*s.port);
    return std::nullopt;
}

std::optional<connection_settings> load_or_complain(const char* command) {
    std::string error;
    auto s = load_settings(&error);
    if (!s) std::fprintf(stderr, "lmx %s: %s\n", command, error.c_str());
    return s;
}

bool save_or_complain(const char* command, const connection_settings& s) {
    std::string error;
    if (save_settings(s, &error)) return true;
    std::fprintf(stderr, "lmx %s: %s\n", command, error.c_str());
    return false;
}

struct set_args {
    std::string name;
    std::string value;
};

int run_set(const set_args& a) {
    auto s = load_or_complain("set");
    if (!s) return exit_usage;
    if (a.name == "port") {
        unsigned long v = 0;
        std::size_t used = 0;
        try {
            v = std::stoul(a.value, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != a.value.size() || v == 0 || v > 65535) {
            std::fprintf(stderr, "lmx set: port must be a number from 1 to 65535, not '%s'\n", a.value.c_str());
            return exit_usage;
        }
        s->port = static_cast<std::uint16_t>(v);
    } else if (a.value.empty()) {
        std::fprintf(stderr, "lmx set: %s cannot be empty (use `lmx unset %s`)\n", a.name.c_str(), a.name.c_str());
        return exit_usage;
    } else if (a.name == "url") {
        s->url = a.value;
    } else if (a.name == "uds_path") {
        s->uds_path = a.value;
    } else if (a.name == "token_file") {
        std::string error;
        if (read_token_file(a.value, &error).empty()) {
            std::fprintf(stderr, "lmx set: %s\n", error.c_str());
            return exit_usage;
        }
        s->token_file = a.value;
    } else {
        s->host = a.value;
    }
    if (!save_or_complain("set", *s)) return exit_usage;
    std::printf("%s = %s (saved in %s)\n", a.name.c_str(), a.value.c_str(), settings_path().c_str());
    return exit_ok;
}

int run_unset(const std::string& name) {
    auto s = load_or_complain("unset");
    if (!s) return exit_usage;
    if (name == "url")
        s->url.reset();
    else if (name == "uds_path")
        s->uds_path.reset();
    else if (name == "token_file")
        s->token_file.reset();
    else if (name == "host")
        s->host.reset();
    else
        s->port.reset();
    if (!save_or_complain("unset", *s)) return exit_usage;
    std::printf("%s unset\n", name.c_str());
    return exit_ok;
}

struct get_args {
    std::string name;
    bool json = false;
};

int run_get(const get_args& a) {
    auto file = load_or_complain("get");
    if (!file) return exit_usage;
    if (!a.name.empty()) {
        auto v = value_of(*file, a.name);
        if (!v) return exit_not_obtained;  // unset: prints nothing, like `git config`
        std::printf("%s\n", v->c_str());
        return exit_ok;
    }
    std::string env_error;
    auto env = env_settings(&env_error);
    if (!env) {
        std::fprintf(stderr, "lmx get: %s\n", env_error.c_str());
        return exit_usage;
    }
    std::array layers{*env, *file};
    std::string url = resolve_url(layers);
    const char* source = !env->empty() ? "environment" : !file->empty() ? "settings file" : "default";
    if (a.json) {
        boost::json::object o;
        for (auto& n : names)
            if (auto v = value_of(*file, n)) o[n] = *v;
        std::printf("%s\n", boost::json::serialize(
                                boost::json::object{
                                    {"settings", o}, {"file", settings_path()}, {"url", url}, {"url_from", source}})
                                .c_str());
        return exit_ok;
    }
    std::printf("settings file: %s\n", settings_path().c_str());
    for (auto& n : names) {
        auto v = value_of(*file, n);
        std::printf("  %-9s %s\n", n.c_str(), v ? v->c_str() : "(unset)");
    }
    std::printf("broker URL:    %s (from the %s)\n", url.c_str(), source);
    return exit_ok;
}

}  // namespace

void add_settings_commands(CLI::App& app, action_setter set_action) {
    const std::string where = " in " + settings_path();
    {
        auto a = std::make_shared<set_args>();
        auto* cmd = app.add_subcommand("set", "Save a connection setting" + where);
        cmd->add_option("name", a->name, "url, uds_path, host, port or token_file")
            ->required()
            ->check(CLI::IsMember(names));
        cmd->add_option("value", a->value, "The value")->required();
        cmd->callback([a, set_action] { set_action([a] { return run_set(*a); }); });
    }
    {
        auto a = std::make_shared<get_args>();
        auto* cmd = app.add_subcommand("get", "Show a saved setting, or all of them and the broker URL they give");
        cmd->add_option("name", a->name, "url, uds_path, host, port or token_file (exit 1 when unset)")
            ->check(CLI::IsMember(names));
        cmd->add_flag("--json", a->json, "Print one JSON object for scripts");
        cmd->callback([a, set_action] { set_action([a] { return run_get(*a); }); });
    }
    {
        auto a = std::make_shared<std::string>();
        auto* cmd = app.add_subcommand("unset", "Remove a saved setting");
        cmd->add_option("name", *a, "url, uds_path, host, port or token_file")->required()->check(CLI::IsMember(names));
        cmd->callback([a, set_action] { set_action([a] { return run_unset(*a); }); });
    }
}

}  // namespace lmx::app
