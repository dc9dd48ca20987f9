// lmx ls / info / stats / ping: what the broker holds, as tables for people and JSON for scripts.

#include "client_common.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <functional>
#include <optional>
#include <cstdio>
#include <thread>

namespace lmx::app {

namespace {

boost::json::object to_json(const lock_info& i) {
    boost::json::array holders;
    for (auto& h : i.holders) holders.emplace_back(h);
    return {{"key", i.key},         {"locked", i.locked}, {"holders", std::move(holders)},
            {"waiters", i.waiters}, {"max", i.max},       {"last_fencing_token", i.last_token}};
}

void print_json(const boost::json::value& v) { std::printf("%s\n", boost::json::serialize(v).c_str()); }

// Characters, not bytes, of UTF-8 text: what a terminal column counts.
std::size_t columns(const std::string& s) {
    return static_cast<std::size_t>(
        std::count_if(s.begin(), s.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0) != 0x80; }));
}

// A plain text table: columns padded to their widest cell.
void print_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width;
    for (auto& r : rows)
        for (std::size_t i = 0; i < r.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], columns(r[i]));
        }
    for (auto& r : rows) {
        std::string line;
        for (std::size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line.append(width[i] - columns(r[i]) + 2, ' ');
        }
        std::printf("%s\n", line.c_str());
    }
}

std::string holders_cell(const lock_info& i) {
    if (i.holders.empty()) return "-";
    std::string s = i.holders.front();
    if (i.holders.size() > 1) s += " (+" + std::to_string(i.holders.size() - 1) + ")";
    return s;
}

struct ls_args {
    client_args conn;
    std::string prefix;
};

int run_ls(const ls_args& a) {
    return run_client("ls", a.conn, {}, [&a](lmx::client& c) -> boost::asio::awaitable<int> {
        auto keys = co_await c.ls();
        std::sort(keys.begin(), keys.end());
        std::erase_if(keys, [&](const std::string& k) { return k.rfind(a.prefix, 0) != 0; });
        // Up to 64 info requests in flight: a broker with many keys answers in a few round trips.
        std::vector<std::optional<lock_info>> found(keys.size());
        std::size_t next = 0, answered = 0;
        error_code failure;
        boost::asio::steady_timer all_answered(c.get_executor(), std::chrono::steady_clock::time_point::max());
        std::function<void()> launch = [&] {
            while (next < keys.size() && next - answered < 64) {
                std::size_t i = next++;
                c.info(keys[i], [&, i](error_code ec, lock_info info) {
                    if (!ec)
                        found[i] = std::move(info);
                    else if (ec != errc::not_holder && !failure)
                        failure = ec;  // not_holder: freed meanwhile
                    if (++answered == keys.size())
                        all_answered.cancel();
                    else
                        launch();
                });
            }
        };
        if (!keys.empty()) {
            launch();
            co_await all_answered.async_wait(use_tuple);
        }
        if (failure) co_return report("ls", failure, c.options().url);
        std::vector<lock_info> infos;
        for (auto& f : found)
            if (f && (f->locked || f->waiters > 0)) infos.push_back(std::move(*f));
        if (a.conn.json) {
            boost::json::array arr;
            for (auto& i : infos) arr.emplace_back(to_json(i));
            print_json(boost::json::object{{"locks", std::move(arr)}});
            co_return exit_ok;
        }
        if (infos.empty()) {
            std::printf("no locks held or waited for%s\n",
                        a.prefix.empty() ? "" : (" under '" + a.prefix + "'").c_str());
            co_return exit_ok;
        }
        std::vector<std::vector<std::string>> rows{{"KEY", "HOLDERS", "MAX", "WAITERS", "LOCK ID", "LAST TOKEN"}};
        for (auto& i : infos)
            rows.push_back({i.key, std::to_string(i.holders.size()), std::to_string(i.max), std::to_string(i.waiters),
                            holders_cell(i), std::to_string(i.last_token)});
        print_table(rows);
        co_return exit_ok;
    });
}

struct info_args {
    client_args conn;
    std::string key;
};

int run_info(const info_args& a) {
    return run_client("info", a.conn, {}, [&a](lmx::client& c) -> boost::asio::awaitable<int> {
        auto [ec, i] = co_await c.info(a.key, use_tuple);
        if (ec == errc::not_holder) {  // an unknown key is simply free
            i = lock_info{.key = a.key, .locked = false, .holders = {}, .waiters = 0, .max = 1, .last_token = 0};
        } else if (ec) {
            co_return report("info", ec, c.options().url, "info of '" + a.key + "'");
        }
        if (a.conn.json) {
            print_json(to_json(i));
            co_return exit_ok;
        }
        std::vector<std::vector<std::string>> rows{
            {"key", i.key},
            {"state", i.locked ? (i.holders.size() >= i.max ? "held" : "held (slots free)") : "free"},
            {"holders", std::to_string(i.holders.size()) + " of max " + std::to_string(i.max)},
            {"waiters", std::to_string(i.waiters)},
            {"last fencing token", i.last_token ? std::to_string(i.last_token) : "-"}};
        for (auto& h : i.holders) rows.push_back({"lock id", h});
        print_table(rows);
        co_return exit_ok;
    });
}

int run_stats(const client_args& a) {
    return run_client("stats", a, {}, [&a](lmx::client& c) -> boost::asio::awaitable<int> {
        auto s = co_await c.stats();
        if (a.json) {
            print_json(s);
            co_return exit_ok;
        }
        std::vector<std::vector<std::string>> rows;
        for (auto& [k, v] : s) {
            std::string value;
            if (v.is_string()) {
                value = v.as_string();
            } else if (v.is_double()) {
                char buf[32];
                std::snprintf(buf, sizeof buf, "%.3f", v.as_double());
                value = buf;
            } else {
                value = boost::json::serialize(v);
            }
            rows.push_back({std::string(k), value});
        }
        std::printf("broker at %s\n", c.options().url.c_str());
        print_table(rows);
        co_return exit_ok;
    });
}

struct ping_args {
    client_args conn;
    unsigned count = 1;
    std::int64_t interval_ms = 1000;
};

int run_ping(const ping_args& a) {
    return run_client("ping", a.conn, {}, [&a](lmx::client& c) -> boost::asio::awaitable<int> {
        std::vector<double> rtts;
        for (unsigned n = 0; n < a.count; ++n) {
            if (n) {
                boost::asio::steady_timer t(c.get_executor(), std::chrono::milliseconds{a.interval_ms});
                co_await t.async_wait(boost::asio::use_awaitable);
            }
            auto rtt = co_await c.ping();
            double us = static_cast<double>(rtt.count());
            rtts.push_back(us);
            if (!a.conn.json) std::printf("reply from %s: time=%.0f us\n", c.options().url.c_str(), us);
            std::fflush(stdout);
        }
        std::sort(rtts.begin(), rtts.end());
        double mn = rtts.front(), mx = rtts.back(), med = rtts[rtts.size() / 2];
        if (a.conn.json)
            print_json(boost::json::object{
                {"url", c.options().url}, {"count", rtts.size()}, {"min_us", mn}, {"median_us", med}, {"max_us", mx}});
        else if (a.count > 1)
            std::printf("%zu replies: min %.0f us, median %.0f us, max %.0f us\n", rtts.size(), mn, med, mx);
        co_return exit_ok;
    });
}

}  // namespace

void add_inspect_commands(CLI::App& app, action_setter set_action) {
    {
        auto a = std::make_shared<ls_args>();
        auto* cmd = app.add_subcommand("ls", "List the keys that are held or waited for");
        cmd->add_option("prefix", a->prefix, "Only keys starting with PREFIX")->type_name("PREFIX");
        add_client_flags(cmd, a->conn);
        cmd->callback([a, set_action] { set_action([a] { return run_ls(*a); }); });
    }
    {
        auto a = std::make_shared<info_args>();
        auto* cmd = app.add_subcommand("info", "Show one key: holders, waiters, max, last fencing token");
        cmd->add_option("key", a->key, "The key")->required();
        add_client_flags(cmd, a->conn);
        cmd->callback([a, set_action] { set_action([a] { return run_info(*a); }); });
    }
    {
        auto a = std::make_shared<client_args>();
        auto* cmd = app.add_subcommand("stats", "Show the broker's counters: connections, locks, waiters, grants...");
        add_client_flags(cmd, *a);
        cmd->callback([a, set_action] { set_action([a] { return run_stats(*a); }); });
    }
    {
        auto a = std::make_shared<ping_args>();
        auto* cmd = app.add_subcommand("ping", "Check that a broker answers and show the round trip time");
        cmd->add_option("-c,--count", a->count, "Pings to send")
            ->default_val(1)
            ->check(CLI::Range(1u, 1000000u))
            ->type_name("N");
        cmd->add_option("-i,--interval", a->interval_ms, "Pause between pings")
            ->default_val(1000)
            ->check(CLI::NonNegativeNumber)
            ->type_name("MS");
        add_client_flags(cmd, a->conn);
        cmd->callback([a, set_action] { set_action([a] { return run_ping(*a); }); });
    }
}

}  // namespace lmx::app
