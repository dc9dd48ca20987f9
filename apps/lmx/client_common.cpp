#include "client_common.hpp"

#include <lmx/client/ensure_broker.hpp>
#include <lmx/client/settings.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <CLI/CLI.hpp>

#include <array>
#include <csignal>
#include <cstdlib>
#include <cstdio>

#include <unistd.h>

namespace lmx::app {

void add_client_flags(CLI::App* cmd, client_args& a, bool json) {
    auto* g = cmd->add_option_group("Connection",
                                    "Where the broker is (default: LMX_URL, LMX_UDS_PATH, LMX_HOST/LMX_PORT, "
                                    "then `lmx set`, then tcp://127.0.0.1:6970)");
    g->add_option("-u,--url", a.url,
                  "Broker URL: tcp://HOST:PORT, unix:///PATH, ws://HOST:PORT/PATH, or over TLS tls://HOST:PORT, "
                  "wss://HOST:PORT/PATH")
        ->type_name("URL");
    g->add_option("--host", a.host, "Broker host (TCP)")->type_name("HOST");
    g->add_option("-p,--port", a.port, "Broker port (TCP)")->check(CLI::Range(1, 65535))->type_name("PORT");
    g->add_option("--uds-path", a.uds_path, "Broker Unix socket path (wins over host/port)")->type_name("PATH");
    g->add_option("--token-file", a.token_file,
                  "File holding the token for a broker that requires one (default: LMX_TOKEN_FILE, then `lmx set "
                  "token_file`)")
        ->type_name("FILE");
    g->add_option("--tls-ca", a.tls_ca,
                  "tls:// and wss://: trust the broker's certificate when a CA in FILE (PEM) signed it (default: "
                  "LMX_TLS_CA, then the system's CAs)")
        ->type_name("FILE");
    g->add_option("--tls-cert", a.tls_cert,
                  "Client certificate (PEM) for a broker that requires one (default: LMX_TLS_CERT)")
        ->type_name("FILE");
    g->add_option("--tls-key", a.tls_key, "Key of --tls-cert (PEM) (default: LMX_TLS_KEY)")->type_name("FILE");
    g->add_flag("--ensure-broker", a.ensure_broker,
                "Start a broker in the background if none answers (log and state under $XDG_STATE_HOME/lmx)");
    g->add_option("--connect-timeout", a.connect_timeout_ms, "Give up connecting after MS")
        ->default_val(3000)
        ->check(CLI::Range(std::int64_t{1}, max_duration_ms))
        ->type_name("MS");
    if (json) cmd->add_flag("--json", a.json, "Print one JSON object for scripts");
}

void add_lock_flags(CLI::App* cmd, lock_args& a) {
    cmd->add_option("key", a.key, "The key to lock")->required();
    cmd->add_option("--max", a.max, "Holders allowed at once on this key (a semaphore; default 1)")
        ->check(CLI::Range(1u, (1u << 29) - 1))
        ->type_name("N");
    cmd->add_option("--timeout", a.timeout_ms,
                    "Give up (exit 1) after waiting MS for the lock (default: wait until granted)")
        ->check(CLI::Range(std::int64_t{1}, max_duration_ms))
        ->type_name("MS");
    cmd->add_flag("--no-wait,!--wait", a.no_wait, "Exit 1 at once if the lock is not free (default: --wait)");
    cmd->add_flag("--shared", a.shared,
                  "A shared (reader) lock: coexists with other shared holders, never with an exclusive one");
}

acquire_options lock_args::options(std::chrono::milliseconds ttl, bool keep_on_exit) const {
    acquire_options o;
    o.ttl = ttl;
    if (max) o.max = max;
    o.wait = !no_wait;
    o.timeout = timeout_ms > 0 ? std::chrono::milliseconds{timeout_ms} : wait_forever;
    o.shared = shared;
    o.keep_locks_on_exit = keep_on_exit;
    return o;
}

std::string quoted(const std::string& key) {
    if (key.size() <= 60) return "'" + key + "'";
    std::size_t cut = 57;
    while (cut > 0 && (static_cast<unsigned char>(key[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
    return "'" + key.substr(0, cut) + "...' (" + std::to_string(key.size()) + " bytes)";
}

bool stdout_is_tty() { return ::isatty(1) == 1; }
bool stderr_is_tty() { return ::isatty(2) == 1; }

std::string human_duration(std::chrono::milliseconds d) {
    auto ms = d.count();
    char buf[64];
    if (ms < 1000)
        std::snprintf(buf, sizeof buf, "%lld ms", static_cast<long long>(ms));
    else if (ms < 60'000)
        std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000);
    else if (ms < 3'600'000)
        std::snprintf(buf, sizeof buf, "%.1f min", static_cast<double>(ms) / 60'000);
    else
        std::snprintf(buf, sizeof buf, "%.1f h", static_cast<double>(ms) / 3'600'000);
    return buf;
}

int report(const char* command, const boost::system::error_code& ec, const std::string& url, const std::string& what,
           const std::string& why) {
    std::string msg;
    int code = exit_unreachable;
    std::string subject = what.empty() ? std::string() : what + ": ";
    if (ec == errc::unreachable || ec == errc::refused) {
        msg = "no broker at " + url + " — start one with `lmx broker` or pass --ensure-broker";
    } else if (ec == errc::name_not_resolved) {
        msg = "the host name in " + url + " does not resolve";
    } else if (ec == errc::wrong_endpoint) {
        msg = "the peer at " + url +
              " does not speak lmx's protocol (a WebSocket port given as tcp://, or another server?)";
    } else if (ec == errc::connection_lost) {
        msg = "lost the connection to the broker at " + url;
    } else if (ec == errc::broker_incompatible) {
        msg = "the peer at " + url + " is not a compatible lmx broker";
    } else if (ec == errc::invalid_url) {
        msg = "invalid broker URL '" + url + "' (use tcp://HOST:PORT, unix:///PATH or ws://HOST:PORT/PATH)";
        code = exit_usage;
    } else if (ec == errc::shutting_down) {
        msg = "the broker at " + url + " is shutting down";
    } else if (ec == errc::unavailable) {
        msg = "the broker at " + url +
              " grants no locks now: it cannot persist its fencing state or reach its store (its /healthz says why)";
        code = exit_not_obtained;
    } else if (ec == errc::limit_reached) {
        msg = subject + "refused by the broker at " + url +
              ": a limit is reached (its holds and waiters per connection, or keys in total)";
        code = exit_not_obtained;
    } else if (ec == errc::timeout) {
        msg = what.empty() ? "the broker at " + url + " did not answer in time"
                           : subject + "not granted before the timeout";
        code = exit_not_obtained;
    } else if (ec == errc::would_block) {
        msg = subject + "held by someone else (--no-wait)";
        code = exit_not_obtained;
    } else if (ec == errc::too_many_waiters) {
        msg = subject + "the broker's waiter limit is reached; try again later";
        code = exit_not_obtained;
    } else if (ec == errc::cancelled) {
        msg = subject + "cancelled";
        code = exit_not_obtained;
    } else if (ec == errc::not_held) {
        msg = subject + "that lock id holds nothing on the key (never held, or already released, expired or forced)";
        code = exit_not_obtained;
    } else if (ec == errc::not_holder) {
        msg = subject + "that lock id does not hold the key (already released, expired or forced)";
        code = exit_not_obtained;
    } else if (ec == errc::max_pinned) {
        msg = subject + "the broker at " + url + " pins the key's --max" +
              (why.empty() ? std::string() : " (" + why + ")") + "; give no --max, or that one";
        code = exit_usage;
    } else if (ec == errc::tls_failed) {
        msg = "TLS with the broker at " + url + " failed" + (why.empty() ? std::string() : ": " + why);
    } else if (ec == errc::unauthenticated) {
        msg = "the broker at " + url + " requires a valid token (--token-file, LMX_TOKEN_FILE or `lmx set token_file`)";
        code = exit_usage;
    } else if (ec == errc::forbidden) {
        msg = subject + "the broker at " + url + " refused it: it needs a token with the admin role";
        code = exit_not_obtained;
    } else if (ec == errc::bad_request) {
        msg = subject + "invalid request: " + (why.empty() ? "an empty or too long key, or a value out of range" : why);
        code = exit_usage;
    } else {
        msg = subject + ec.message();
        code = exit_not_obtained;
    }
    std::fprintf(stderr, "lmx %s: %s\n", command, msg.c_str());
    return code;
}

int run_client(const char* command, const client_args& args, client_options base, client_body body) {
    std::string env_error, file_error;
    auto env = env_settings(&env_error);
    if (!env) {
        std::fprintf(stderr, "lmx %s: %s\n", command, env_error.c_str());
        return exit_usage;
    }
    auto file = load_settings(&file_error);
    if (!file) {
        std::fprintf(stderr, "lmx %s: %s\n", command, file_error.c_str());
        return exit_usage;
    }
    connection_settings flags;
    if (!args.url.empty()) flags.url = args.url;
    if (!args.uds_path.empty()) flags.uds_path = args.uds_path;
    if (!args.host.empty()) flags.host = args.host;
    if (args.port) flags.port = args.port;
    if (!args.token_file.empty()) flags.token_file = args.token_file;
    std::array layers{flags, *env, *file};
    base.url = resolve_url(layers);
    for (const auto& layer : layers) {
        if (!layer.token_file) continue;
        // Read now so that a wrong path is reported as such, not as a refusal by the broker.
        std::string error;
        base.token = read_token_file(*layer.token_file, &error);
        if (base.token.empty()) {
            std::fprintf(stderr, "lmx %s: %s\n", command, error.c_str());
            return exit_usage;
        }
        break;
    }
    base.connect_timeout = std::chrono::milliseconds{args.connect_timeout_ms};
    auto flag_or_env = [](const std::string& flag, const char* variable) {
        const char* v = std::getenv(variable);
        return !flag.empty() ? flag : v ? std::string(v) : std::string();
    };
    base.tls_ca_file = flag_or_env(args.tls_ca, "LMX_TLS_CA");
    base.tls_cert_file = flag_or_env(args.tls_cert, "LMX_TLS_CERT");
    base.tls_key_file = flag_or_env(args.tls_key, "LMX_TLS_KEY");

    std::signal(SIGPIPE, SIG_IGN);
    if (args.ensure_broker) {
        ensure_broker_options how;
        std::array<char, 4096> self{};
        // This very executable, unless LMX_BROKER_PATH names another.
        const char* env_path = std::getenv("LMX_BROKER_PATH");
        if (env_path && *env_path)
            how.broker_path = env_path;
        else if (auto n = ::readlink("/proc/self/exe", self.data(), self.size() - 1); n > 0)
            how.broker_path.assign(self.data(), n);
        auto r = ensure_broker(base, how);
        if (r.error) {
            std::fprintf(stderr, "lmx %s: %s\n", command, r.message.c_str());
            return r.error == errc::invalid_url ? exit_usage : exit_unreachable;
        }
        if (r.started && stderr_is_tty())
            std::fprintf(stderr, "lmx: started a broker at %s (log: %s)\n", base.url.c_str(), r.log_path.c_str());
    }

    boost::asio::io_context io(1);
    int code = exit_unreachable;
    {
        lmx::client c(io.get_executor(), base);
        std::string url = base.url;
        boost::asio::co_spawn(
            io,
            [&]() -> boost::asio::awaitable<int> {
                try {
                    co_await c.connect();
                    co_return co_await body(c);
                } catch (const boost::system::system_error& e) {
                    co_return report(command, e.code(), url, {},
                                     e.code() == errc::tls_failed ? c.last_connect_error().message() : std::string());
                }
            },
            [&](std::exception_ptr ep, int rc) {
                code = rc;
                if (ep) {
                    try {
                        std::rethrow_exception(ep);
                    } catch (const std::exception& e) {
                        std::fprintf(stderr, "lmx %s: %s\n", command, e.what());
                        code = exit_not_obtained;
                    }
                }
                c.close();
            });
        io.run();
    }
    return code;
}

}  // namespace lmx::app
