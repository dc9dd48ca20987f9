#include "commands.hpp"
#include "config_file.hpp"
#include "service_notify.hpp"

#include <lmx/broker/broker.hpp>
#include <lmx/core/failpoint.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/version.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <CLI/CLI.hpp>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <grp.h>
#include <map>
#include <optional>
#include <pwd.h>
#include <sched.h>
#include <thread>
#include <time.h>

namespace lmx::app {

namespace {

struct broker_args {
    broker_options opt;
    std::vector<std::string> listen;
    std::int64_t ttl_ms = 5000;
    std::int64_t handshake_timeout_ms = 10000;
    std::int64_t keepalive_s = 60;
    std::int64_t idle_timeout_ms = 0;
    std::int64_t busy_poll_us = 0;
    std::int64_t slow_wait_ms = 0;
    std::int64_t slow_hold_ms = 0;
    std::vector<std::string> key_max;
    std::string unix_mode = "0660";
    std::string unix_group;
    std::vector<std::string> unix_allow_uid, unix_allow_gid;
    std::string level = "info";
    std::string log_format = "text";
    std::string urls_file;
    std::string config_file;
    bool print_config = false;
};

// io.run() with --busy-poll: after the last ready handler, the loop keeps polling (yielding the
// CPU to anything else runnable on it) for up to `window` before it sleeps in epoll_wait, so that
// a request arriving soon is served without the sleep and wake-up. It spins only while the last
// wait for work was shorter than the window: a broker whose requests come further apart sleeps
// at once, and an idle one costs no CPU.
void run_busy_polling(boost::asio::io_context& io, std::chrono::microseconds window) {
    using clock = std::chrono::steady_clock;
    auto idle_since = clock::now();
    bool spin = true;
    while (!io.stopped()) {
        if (io.poll() > 0) {
            idle_since = clock::now();
            continue;
        }
        if (spin && clock::now() - idle_since < window) {
            ::sched_yield();
            continue;
        }
        if (io.run_one() == 0) break;
        const auto now = clock::now();
        spin = now - idle_since < window;
        idle_since = now;
    }
}

// A user or group by number or name, optionally followed by ":admin" (or ":client").
std::optional<broker_options::unix_peer> parse_unix_peer(const std::string& text, bool group, std::string& error) {
    broker_options::unix_peer out{.group = group};
    std::string who = text;
    if (const auto colon = text.rfind(':'); colon != std::string::npos) {
        const auto role = text.substr(colon + 1);
        if (role != "admin" && role != "client") {
            error = "unknown role '" + role + "' (admin or client)";
            return std::nullopt;
        }
        out.admin = role == "admin";
        who = text.substr(0, colon);
    }
    const char* end = who.data() + who.size();
    if (const auto [ptr, ec] = std::from_chars(who.data(), end, out.id);
        ec == std::errc{} && ptr == end && !who.empty())
        return out;
    if (group) {
        if (const ::group* g = ::getgrnam(who.c_str())) {
            out.id = g->gr_gid;
            return out;
        }
        error = "no group named '" + who + "'";
    } else {
        if (const ::passwd* p = ::getpwnam(who.c_str())) {
            out.id = p->pw_uid;
            return out;
        }
        error = "no user named '" + who + "'";
    }
    return std::nullopt;
}

int run_broker(broker_args& a) {
    if (!a.listen.empty()) a.opt.listen = a.listen;
    a.opt.default_ttl = std::chrono::milliseconds{a.ttl_ms};
    a.opt.handshake_timeout = std::chrono::milliseconds{a.handshake_timeout_ms};
    a.opt.tcp_keepalive = std::chrono::seconds{a.keepalive_s};
    a.opt.idle_timeout = std::chrono::milliseconds{a.idle_timeout_ms};
    a.opt.slow_wait = std::chrono::milliseconds{a.slow_wait_ms};
    a.opt.slow_hold = std::chrono::milliseconds{a.slow_hold_ms};
    for (const auto& pin : a.key_max) {
        const auto eq = pin.rfind('=');
        std::uint32_t max = 0;
        bool ok = eq != std::string::npos;
        if (ok) {
            const char* end = pin.data() + pin.size();
            const auto [ptr, ec] = std::from_chars(pin.data() + eq + 1, end, max);
            ok = ec == std::errc{} && ptr == end && max > 0;
        }
        if (!ok) {
            std::fprintf(stderr, "lmx broker: --key-max wants PREFIX=N with N at least 1, such as jobs/=4, not '%s'\n",
                         pin.c_str());
            return exit_usage;
        }
        a.opt.key_max.emplace_back(pin.substr(0, eq), max);
    }
    std::size_t used = 0;
    unsigned long mode = 0;
    try {
        mode = std::stoul(a.unix_mode, &used, 8);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != a.unix_mode.size() || mode > 0777) {
        std::fprintf(stderr, "lmx broker: --unix-mode must be an octal file mode such as 0660, not '%s'\n",
                     a.unix_mode.c_str());
        return exit_usage;
    }
    a.opt.unix_mode = static_cast<unsigned>(mode);
    if (a.opt.tls_cert.empty() != a.opt.tls_key.empty()) {
        std::fprintf(stderr, "lmx broker: --tls-cert and --tls-key go together\n");
        return exit_usage;
    }
    for (const bool group : {false, true}) {
        for (const auto& text : group ? a.unix_allow_gid : a.unix_allow_uid) {
            std::string error;
            auto rule = parse_unix_peer(text, group, error);
            if (!rule) {
                std::fprintf(stderr, "lmx broker: %s %s: %s\n", group ? "--unix-allow-gid" : "--unix-allow-uid",
                             text.c_str(), error.c_str());
                return exit_usage;
            }
            a.opt.unix_allow.push_back(*rule);
        }
    }
    if (!a.unix_group.empty()) {
        std::string error;
        auto g = parse_unix_peer(a.unix_group, true, error);
        if (!g || a.unix_group.find(':') != std::string::npos) {
            std::fprintf(stderr, "lmx broker: --unix-group %s: %s\n", a.unix_group.c_str(),
                         error.empty() ? "a group name or number" : error.c_str());
            return exit_usage;
        }
        a.opt.unix_group = static_cast<int>(g->id);
    }
    static const std::map<std::string, log_level> levels = {
        {"error", log_level::error}, {"warn", log_level::warn}, {"info", log_level::info}, {"debug", log_level::debug}};
    a.opt.level = levels.at(a.level);
    set_log_level(a.opt.level);
    set_log_format(a.log_format == "json" ? log_format::json : log_format::text);
    if (a.opt.unix_mode & 0002)
        log_line(log_level::warn,
                 "--unix-mode makes the socket world-writable: any local user can take and release locks");

    std::signal(SIGPIPE, SIG_IGN);
    boost::asio::io_context io(1);
    broker b(io.get_executor(), a.opt);
    // SIGINT/SIGTERM are caught before readiness is announced (the urls file, the log line): a
    // supervisor may stop the broker the moment it reads either.
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    boost::asio::signal_set hangups(io, SIGHUP);
    if (auto err = b.start(); !err.empty()) {
        log_line(log_level::error, "lmx broker: " + err);
        return 1;
    }
    std::string list;
    for (auto& u : b.urls()) {
        log_line(log_level::info, "listening on " + u);
        list += u + "\n";
    }
    if (!a.urls_file.empty()) {
        std::string tmp = a.urls_file + ".tmp";
        std::ofstream(tmp) << list;
        std::rename(tmp.c_str(), a.urls_file.c_str());
    }
    log_line(log_level::info, "lmx " LMX_VERSION_STRING " broker started (pid " + std::to_string(::getpid()) +
                                  ", default ttl " + std::to_string(a.ttl_ms) + " ms" +
                                  (a.opt.state_dir.empty() ? std::string() : ", state dir " + a.opt.state_dir) + ")");

    notify_service("READY=1\nSTATUS=listening on " +
                   [&] {
                       std::string joined;
                       for (auto& u : b.urls()) joined += (joined.empty() ? "" : " ") + u;
                       return joined;
                   }() +
                   "\nMAINPID=" + std::to_string(::getpid()));

    // WatchdogSec= in the unit: a keep-alive at half the interval from the broker's own loop, so a
    // loop that stops turning gets the broker restarted.
    boost::asio::steady_timer watchdog(io);
    std::function<void()> keep_alive = [&, every = service_watchdog_interval() / 2] {
        if (every.count() <= 0) return;
        notify_service("WATCHDOG=1");
        watchdog.expires_after(every);
        watchdog.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) keep_alive();
        });
    };
    keep_alive();

    if (auto fp = LMX_FAILPOINT("broker.ready"); fp.sleep()) std::this_thread::sleep_for(fp.delay);
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        log_line(log_level::info, std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
        notify_service("STOPPING=1");
        hangups.cancel();
        watchdog.cancel();
        b.stop();
    });
    std::function<void()> on_hangup = [&] {
        hangups.async_wait([&](const boost::system::error_code& ec, int) {
            if (ec) return;
            log_line(log_level::info, "received SIGHUP, reloading");
            ::timespec now{};
            ::clock_gettime(CLOCK_MONOTONIC, &now);
            notify_service("RELOADING=1\nMONOTONIC_USEC=" +
                           std::to_string(std::uint64_t(now.tv_sec) * 1000000 + std::uint64_t(now.tv_nsec) / 1000));
            b.reload();  // logs what it did, or why it kept the old settings
            notify_service("READY=1");
            on_hangup();
        });
    };
    on_hangup();
    if (a.busy_poll_us > 0)
        run_busy_polling(io, std::chrono::microseconds(a.busy_poll_us));
    else
        io.run();
    const auto f = b.stats();
    log_line(log_level::info, "stopped after " + std::to_string(f.uptime_ms / 1000) + " s, " +
                                  std::to_string(f.connections_total) + " connections, " +
                                  std::to_string(f.messages_in) + " messages");
    if (!a.urls_file.empty()) std::remove(a.urls_file.c_str());
    return 0;
}

}  // namespace

void add_broker_command(CLI::App& app, std::function<void(std::function<int()>)> set_action) {
    auto a = std::make_shared<broker_args>();
    auto* cmd = app.add_subcommand("broker", "Run the lock broker in the foreground (alias: start)");
    cmd->alias("start");
    cmd->add_option("-l,--listen", a->listen,
                    "Endpoint URL to listen on, repeatable: tcp://HOST:PORT, unix:///PATH, ws://HOST:PORT/PATH,\n"
                    "tls://HOST:PORT, wss://HOST:PORT/PATH (TLS: --tls-cert and --tls-key)\n"
                    "(default: tcp://127.0.0.1:6970 and ws://127.0.0.1:6971)")
        ->type_name("URL");
    cmd->add_option("--ttl", a->ttl_ms, "Default lease in ms for locks that do not name one")
        ->default_val(5000)
        ->check(CLI::Range(std::int64_t{1}, max_duration_ms))
        ->type_name("MS");
    cmd->add_option("--max-message-size", a->opt.max_message_size, "Largest accepted message in bytes")
        ->default_val(64 * 1024)
        ->check(CLI::Range(256, 64 * 1024 * 1024))
        ->type_name("BYTES");
    cmd->add_option("--max-key-length", a->opt.max_key_length, "Longest accepted key in bytes")
        ->default_val(1024)
        ->check(CLI::Range(1, 1024 * 1024))
        ->type_name("BYTES");
    cmd->add_option("--max-keys", a->opt.max_keys, "Most keys in one acquire-many")
        ->default_val(64)
        ->check(CLI::Range(1, 100000))
        ->type_name("N");
    cmd->add_option("--max-connections", a->opt.max_connections,
                    "Connections served at once; more are refused (default: the file-descriptor limit less 64)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
        ->type_name("N");
    cmd->add_option("--max-connections-per-peer", a->opt.max_connections_per_peer,
                    "Connections from one IP address (tcp, ws) or one uid (unix socket)")
        ->default_val(1024)
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
        ->type_name("N");
    cmd->add_option("--max-waiters", a->opt.max_waiters, "Queued lock requests on all keys together")
        ->default_val(1000000)
        ->check(CLI::Range(std::uint32_t{1}, std::uint32_t{4294967295u}))
        ->type_name("N");
    cmd->add_option("--max-locks-per-connection", a->opt.max_connection_locks,
                    "Holds and waiting requests of one connection; more are refused with limit_reached")
        ->default_val(100000)
        ->check(CLI::Range(std::uint32_t{1}, std::uint32_t{4294967295u}))
        ->type_name("N");
    cmd->add_option("--max-total-keys", a->opt.max_total_keys,
                    "Keys held or waited for, all clients together; requests for more are refused with limit_reached")
        ->default_val(10000000)
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40))
        ->type_name("N");
    cmd->add_option("--max-outbox", a->opt.max_outbox,
                    "Bytes of replies queued for one client before it is disconnected as not reading")
        ->default_val(8 * 1024 * 1024)
        ->check(CLI::Range(4096, 1 << 30))
        ->type_name("BYTES");
    cmd->add_option("--max-outbox-total", a->opt.max_outbox_total,
                    "Bytes of replies queued for all clients together; over it the clients with the most queued are "
                    "disconnected (default: 1 GiB or a quarter of RAM, the smaller)")
        ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 40))
        ->type_name("BYTES");
    cmd->add_option("--max-handshakes", a->opt.max_handshakes,
                    "ws: connections still in HTTP or the WebSocket handshake; more are closed at accept")
        ->default_val(256)
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
        ->type_name("N");
    cmd->add_option("--handshake-timeout", a->handshake_timeout_ms,
                    "ws: ms for each HTTP request (and the upgrade) to arrive")
        ->default_val(10000)
        ->check(CLI::Range(std::int64_t{100}, std::int64_t{3600000}))
        ->type_name("MS");
    cmd->add_option("--idle-timeout", a->idle_timeout_ms,
                    "Close connections that sent nothing for MS while holding, waiting for and watching nothing; "
                    "0: never (the default: idle live-mutex clients are legitimate)")
        ->default_val(0)
        ->check(CLI::Range(std::int64_t{0}, max_duration_ms))
        ->type_name("MS");
    cmd->add_option("--busy-poll", a->busy_poll_us,
                    "Keep polling for up to US after the last request before sleeping, while requests come "
                    "closer together than that: lower latency and more throughput for more CPU while busy (none "
                    "when idle); 0: off")
        ->default_val(0)
        ->check(CLI::Range(std::int64_t{0}, std::int64_t{10000}))
        ->type_name("US");
    cmd->add_option("--key-max", a->key_max,
                    "Pin the max of every key starting with PREFIX, repeatable (the longest prefix wins); a request "
                    "naming another max is refused with max_pinned, one naming none gets N")
        ->type_name("PREFIX=N");
    cmd->add_option("--tcp-keepalive", a->keepalive_s,
                    "Seconds a tcp/ws connection may be silent before keepalive probes look for its peer "
                    "(then every 10 s, 6 probes); 0: off")
        ->default_val(60)
        ->check(CLI::Range(std::int64_t{0}, std::int64_t{32767}))
        ->type_name("S");
    cmd->add_option("--max-list", a->opt.max_list, "Most keys in one ls page and holders listed by lock-info")
        ->default_val(10000)
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
        ->type_name("N");
    cmd->add_option("--unix-mode", a->unix_mode, "File mode of Unix socket files (octal)")
        ->default_val("0660")
        ->type_name("MODE");
    cmd->add_option("--unix-group", a->unix_group,
                    "Group of Unix socket files (with --unix-mode 0660 its members may connect)")
        ->type_name("GROUP");
    cmd->add_option("--tls-cert", a->opt.tls_cert,
                    "PEM certificate (chain, leaf first) of the tls:// and wss:// listeners")
        ->type_name("FILE");
    cmd->add_option("--tls-key", a->opt.tls_key, "PEM private key of --tls-cert")->type_name("FILE");
    cmd->add_option("--tls-client-ca", a->opt.tls_client_ca,
                    "Require TLS clients to present a certificate signed by a CA in FILE (PEM): mutual TLS")
        ->type_name("FILE");
    cmd->add_option("--auth-token-file", a->opt.auth_token_file,
                    "Require authentication: FILE lists one token per line, optionally followed by a role (admin or "
                    "client, the default); '#' starts a comment; re-read on SIGHUP")
        ->type_name("FILE");
    cmd->add_option("--unix-allow-uid", a->unix_allow_uid,
                    "With authentication, let Unix-socket peers of this user in without a token (by SO_PEERCRED), "
                    "repeatable; ':admin' gives them the admin role")
        ->type_name("USER[:admin]");
    cmd->add_option("--unix-allow-gid", a->unix_allow_gid,
                    "Like --unix-allow-uid, for peers whose primary group is GROUP")
        ->type_name("GROUP[:admin]");
    cmd->add_flag("--auth-http", a->opt.auth_http,
                  "With authentication, /metrics and /healthz need a token too (Authorization: Bearer); /v1/stats "
                  "always does");
    cmd->add_option("--state-dir", a->opt.state_dir,
                    "Directory for durable state (the fencing-token high-water mark); unset: tokens start from the "
                    "wall clock in microseconds")
        ->type_name("DIR");
    cmd->add_option("--fencing-block", a->opt.fencing_block,
                    "Tokens reserved per write of the state dir: one fsync per block; a restart skips at most "
                    "one block")
        ->default_val(100000)
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40))
        ->type_name("N");
    cmd->add_option("--store", a->opt.store,
                    "Keep the lock state in an etcd cluster shared with other brokers: their clients contend "
                    "for the same locks (unset: in this process's memory)")
        ->check([](const std::string& url) { return store_url_error(url); }, "")
        ->type_name("etcd://HOST:PORT[,HOST:PORT...]");
    cmd->add_option("--store-prefix", a->opt.store_prefix, "Key prefix of the lock state in etcd")
        ->default_val("/lmx/")
        ->type_name("PREFIX");
    cmd->add_option_function<std::int64_t>(
           "--session-ttl", [a](std::int64_t s) { a->opt.session_ttl = std::chrono::seconds(s); },
           "Seconds after which etcd drops the holds and waits of a broker that died (at least 2)")
        ->default_val(10)
        ->check(CLI::Range(std::int64_t{2}, std::int64_t{3600}))
        ->type_name("SECONDS");
    cmd->add_option("--store-cacert", a->opt.store_ca, "CA file (PEM) for TLS to etcd: endpoints are then https://")
        ->check(CLI::ExistingFile.description(""))
        ->type_name("FILE");
    cmd->add_option("--store-cert", a->opt.store_cert, "Client certificate (PEM) shown to etcd")
        ->check(CLI::ExistingFile.description(""))
        ->type_name("FILE");
    cmd->add_option("--store-key", a->opt.store_key, "Key (PEM) of --store-cert")
        ->check(CLI::ExistingFile.description(""))
        ->type_name("FILE");
    cmd->add_option("--allow-origin", a->opt.allow_origins,
                    "Browser origin allowed to open a WebSocket, repeatable; '*' allows all (default: only the "
                    "broker's own origin and clients that send no Origin)")
        ->type_name("ORIGIN");
    cmd->add_option("--log-level", a->level, "Log level")
        ->default_val("info")
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
    cmd->add_option("--log-format", a->log_format,
                    "Log lines as text, or as json (one object a line: time, level, message) for log collectors")
        ->default_val("text")
        ->check(CLI::IsMember({"text", "json"}));
    cmd->add_option("--slow-wait", a->slow_wait_ms,
                    "Log (warn) every grant that waited in line longer than MS, with key, lock id and client "
                    "address; 0: off")
        ->default_val(0)
        ->check(CLI::Range(std::int64_t{0}, max_duration_ms))
        ->type_name("MS");
    cmd->add_option("--slow-hold", a->slow_hold_ms,
                    "Log (warn) every hold that lasted longer than MS when it ends (released, expired or forced), "
                    "with key, lock id and client address; 0: off. Requests of every client are logged at "
                    "--log-level debug")
        ->default_val(0)
        ->check(CLI::Range(std::int64_t{0}, max_duration_ms))
        ->type_name("MS");
    cmd->add_option("--urls-file", a->urls_file, "Write the bound URLs (one per line) to FILE once listening")
        ->type_name("FILE");
    cmd->add_option("--config", a->config_file,
                    "Read settings from FILE, a JSON object with the long options as keys, such as {\"ttl\": 8000, "
                    "\"listen\": [\"tcp://0.0.0.0:6970\"]}; options on the command line win")
        ->type_name("FILE");
    cmd->add_flag("--print-config", a->print_config,
                  "Print the effective settings (command line over --config over defaults) as such a file, and exit; "
                  "null: the default, which for max-connections and max-outbox-total is computed at start");
    cmd->callback([a, cmd, set_action] {
        if (!a->config_file.empty()) {
            if (auto err = apply_config_file(*cmd, a->config_file); !err.empty()) {
                set_action([err] {
                    std::fprintf(stderr, "lmx broker: %s\n", err.c_str());
                    return exit_usage;
                });
                return;
            }
        }
        if (a->print_config) {
            set_action([text = effective_config(*cmd, {{"listen", broker_options{}.listen}})] {
                std::fputs(text.c_str(), stdout);
                return std::fflush(stdout) == 0 ? exit_ok : 1;
            });
            return;
        }
        set_action([a] { return run_broker(*a); });
    });
}

}  // namespace lmx::app
