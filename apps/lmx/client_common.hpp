#pragma once

// What every client subcommand shares: where the broker is (flags > environment > settings file
// > defaults), --ensure-broker, --json, and running one coroutine against a connected client with
// failures turned into one line on stderr and a documented exit code.

#include "commands.hpp"

#include <lmx/client/client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace lmx::app {

// Completion token for calls whose error is handled where they are made.
inline constexpr auto use_tuple = boost::asio::as_tuple(boost::asio::use_awaitable);

struct client_args {
    std::string url;
    std::string host;
    std::uint16_t port = 0;
    std::string uds_path;
    std::string token_file;
    std::string tls_ca, tls_cert, tls_key;
    bool ensure_broker = false;
    std::int64_t connect_timeout_ms = 3000;
    bool json = false;
};

// What `acquire` and `run` ask for: the key and how to wait for it.
struct lock_args {
    std::string key;
    std::uint32_t max = 0;        // 0: the broker's default (1)
    std::int64_t timeout_ms = 0;  // 0: wait until granted
    bool no_wait = false;
    bool shared = false;

    // The acquire options for these flags with lease `ttl` (no_expiry: none).
    acquire_options options(std::chrono::milliseconds ttl, bool keep_on_exit) const;
};

// KEY, --max, --timeout, --no-wait/--wait, --shared.
void add_lock_flags(CLI::App* cmd, lock_args& a);

// --url, --host, --port, --uds-path, --ensure-broker, --connect-timeout and, if `json`, --json.
void add_client_flags(CLI::App* cmd, client_args& a, bool json = true);

// The body gets a client whose options come from `args` over `base`; it returns the exit code.
using client_body = std::function<boost::asio::awaitable<int>(lmx::client&)>;
int run_client(const char* command, const client_args& args, client_options base, client_body body);

// The one-line message and exit code for a failed client call; prints "lmx COMMAND: ..." to stderr.
// `why`: what the client's checks or the broker said of a refused request (diagnostics).
int report(const char* command, const boost::system::error_code& ec, const std::string& url,
           const std::string& what = {}, const std::string& why = {});

// Both streams: is this a terminal?
bool stdout_is_tty();
bool stderr_is_tty();

// 'KEY' for messages, cut to 60 characters.
std::string quoted(const std::string& key);

// Milliseconds as "1.2 s", "350 ms", "2 min"...
std::string human_duration(std::chrono::milliseconds d);

}  // namespace lmx::app
