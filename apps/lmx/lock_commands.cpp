// lmx acquire / lmx release: take a lock that outlives the command, and give it back.

#include "client_common.hpp"
#include "progress.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>

namespace lmx::app {

namespace {

struct acquire_args {
    client_args conn;
    lock_args lock;
    std::int64_t ttl_ms = 0;  // 0: no expiry
    bool no_expiry = false;
};

int run_acquire(const acquire_args& a) {
    client_options base;
    base.keep_locks_on_exit = true;
    return run_client("acquire", a.conn, base, [&a](lmx::client& c) -> boost::asio::awaitable<int> {
        const std::string& key = a.lock.key;
        acquire_options o =
            a.lock.options(a.ttl_ms > 0 && !a.no_expiry ? std::chrono::milliseconds{a.ttl_ms} : no_expiry, true);
        waiting_notice notice(c.get_executor(), key);
        o.on_queued = notice.on_queued();
        lmx::diagnostics diag;
        o.diag = &diag;
        auto [ec, guard] = co_await c.acquire(key, o, use_tuple);
        notice.done();
        if (ec) co_return report("acquire", ec, c.options().url, "lock on " + quoted(key), diag.message);
        std::string id = guard.id();
        auto token = guard.fencing_token();
        guard.detach();  // the hold stays at the broker (keepLocksOnExit) after this process exits
        if (a.conn.json) {
            boost::json::object out{{"key", key}, {"id", id}, {"fencing_token", token}};
            if (o.ttl != no_expiry)
                out["ttl_ms"] = o.ttl->count();
            else
                out["ttl_ms"] = nullptr;
            std::printf("%s\n", boost::json::serialize(out).c_str());
        } else if (stdout_is_tty()) {
            std::printf(
                "acquired %s\n  lock id        %s\n  fencing token  %llu\n  expires        %s\n  release with   lmx "
                "release %s --id %s\n",
                key.c_str(), id.c_str(), static_cast<unsigned long long>(token),
                o.ttl == no_expiry ? "never" : ("in " + human_duration(*o.ttl)).c_str(), key.c_str(), id.c_str());
        } else {
            std::printf("%s %llu\n", id.c_str(), static_cast<unsigned long long>(token));
        }
        if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
            // Nobody learned the id of a hold that never expires: give it back.
            co_await c.release(key, id, use_tuple);
            std::fprintf(stderr, "lmx acquire: could not write the lock id to stdout; released the lock\n");
            co_return exit_not_obtained;
        }
        co_return exit_ok;
    });
}

struct release_args {
    client_args conn;
    std::string key;
    std::string id;
    bool force = false;
};

int run_release(const release_args& a) {
    // Ending every holder of a key is never the default: it takes --force.
    if (a.id.empty() && !a.force) {
        std::fprintf(stderr,
                     "lmx release: name the hold to end: --id ID (printed by `lmx acquire`), or --force to end every "
                     "holder of '%s'\n",
                     a.key.c_str());
        return exit_usage;
    }
    return run_client("release", a.conn, {}, [&a](lmx::client& c) -> boost::asio::awaitable<int> {
        const bool force = a.force;
        error_code ec;
        if (force)
            std::tie(ec) = co_await c.force_release(a.key, use_tuple);
        else
            std::tie(ec) = co_await c.release(a.key, a.id, use_tuple);
        if (ec)
            co_return report("release", ec, c.options().url,
                             force ? "force release of '" + a.key + "'" : "release of '" + a.key + "' by id " + a.id);
        if (a.conn.json) {
            boost::json::object out{{"key", a.key}, {"released", true}, {"forced", force}};
            if (!force) out["id"] = a.id;
            std::printf("%s\n", boost::json::serialize(out).c_str());
        } else if (force) {
            std::printf("force-released %s (every holder of the key lost its lock)\n", a.key.c_str());
        } else {
            std::printf("released %s (lock id %s)\n", a.key.c_str(), a.id.c_str());
        }
        co_return exit_ok;
    });
}

struct pin_args {
    client_args conn;
    std::string prefix;
    std::uint32_t max = 0;
    bool remove = false;
};

int run_pin(const pin_args& a) {
    if ((a.max == 0) == !a.remove) {
        std::fprintf(stderr, "lmx pin: give the max to pin (lmx pin PREFIX N), or --remove\n");
        return exit_usage;
    }
    return run_client("pin", a.conn, {}, [&a](lmx::client& c) -> boost::asio::awaitable<int> {
        std::optional<std::uint32_t> max;
        if (!a.remove) max = a.max;
        auto [ec] = co_await c.pin(a.prefix, max, use_tuple);
        if (ec) co_return report("pin", ec, c.options().url, "pin of '" + a.prefix + "'");
        if (a.conn.json) {
            boost::json::object out{{"prefix", a.prefix}, {"pinned", !a.remove}};
            out["max"] = a.remove ? boost::json::value(nullptr) : boost::json::value(a.max);
            std::printf("%s\n", boost::json::serialize(out).c_str());
        } else if (a.remove) {
            std::printf("unpinned keys starting with '%s'\n", a.prefix.c_str());
        } else {
            std::printf("pinned max %u for keys starting with '%s' (until the broker stops)\n", a.max,
                        a.prefix.c_str());
        }
        co_return exit_ok;
    });
}

}  // namespace

void add_lock_commands(CLI::App& app, action_setter set_action) {
    {
        auto a = std::make_shared<acquire_args>();
        auto* cmd = app.add_subcommand(
            "acquire", "Take a lock that stays held after this command exits; prints the lock id and fencing token");
        add_lock_flags(cmd, a->lock);
        auto* ttl =
            cmd->add_option("--ttl", a->ttl_ms, "Lease in ms; the broker ends the hold after it (default: no expiry)")
                ->check(CLI::Range(std::int64_t{1}, max_duration_ms))
                ->type_name("MS");
        cmd->add_flag("--no-expiry", a->no_expiry, "The hold never expires (the default)")->excludes(ttl);
        add_client_flags(cmd, a->conn);
        cmd->callback([a, set_action] { set_action([a] { return run_acquire(*a); }); });
    }
    {
        auto a = std::make_shared<release_args>();
        auto* cmd =
            app.add_subcommand("release", "Release a lock by its id (--id), or end every hold of the key (--force)");
        cmd->add_option("key", a->key, "The key to release")->required();
        auto* id = cmd->add_option("--id", a->id, "The lock id printed by `lmx acquire`")->type_name("ID");
        cmd->add_flag("--force", a->force, "End every hold of the key, whoever holds it")->excludes(id);
        add_client_flags(cmd, a->conn);
        cmd->callback([a, set_action] { set_action([a] { return run_release(*a); }); });
    }
    {
        auto a = std::make_shared<pin_args>();
        auto* cmd = app.add_subcommand("pin",
                                       "Pin the max of every key starting with PREFIX at a running broker, as its "
                                       "--key-max does (admin role with authentication)");
        cmd->add_option("prefix", a->prefix, "Keys starting with PREFIX (\"\" for every key)")->required();
        auto* max = cmd->add_option("max", a->max, "Holders allowed at once on each such key")
                        ->check(CLI::Range(std::uint32_t{1}, std::uint32_t{4294967295u}))
                        ->type_name("N");
        cmd->add_flag("--remove", a->remove, "Remove the pin: requests' own max applies again")->excludes(max);
        add_client_flags(cmd, a->conn);
        cmd->callback([a, set_action] { set_action([a] { return run_pin(*a); }); });
    }
}

}  // namespace lmx::app
