#pragma once

// The embeddable lmx broker: listeners -> sessions -> the lock service over one lock store, all on one thread.
// Run it inside any process (tests, `lmx::ensure_broker`, the `lmx broker` app):
//
//   boost::asio::io_context io;
//   lmx::broker b(io.get_executor(), {.listen = {"unix:///run/lmx.sock"}});
//   if (auto err = b.start(); !err.empty()) { ...; }
//   io.run();   // until b.stop()

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::core {
struct broker_stats;
}  // namespace lmx::core

namespace lmx {

enum class log_level : std::uint8_t { error, warn, info, debug };

struct broker_options {
    std::vector<std::string> listen = {"tcp://127.0.0.1:6970", "ws://127.0.0.1:6971"};
    std::chrono::milliseconds default_ttl{5000};
    std::size_t max_message_size = 64 * 1024;
    std::size_t max_key_length = 1024;
    std::size_t max_keys = 64;                    // per acquire-many
    std::size_t max_connections = 0;              // 0: the file-descriptor limit less 64
    std::size_t max_connections_per_peer = 1024;  // per IP address (tcp, ws) or uid (unix)
    std::uint32_t max_waiters = 1'000'000;
    std::uint32_t max_connection_locks = 100'000;  // holds and waiting requests of one connection
    std::uint64_t max_total_keys = 10'000'000;     // keys in the lock table
    std::size_t max_outbox = 8 * 1024 * 1024;      // bytes queued for a client that does not read
    std::size_t max_outbox_total = 0;              // all clients together; 0: 1 GiB or a quarter of RAM, the smaller
    std::size_t max_handshakes = 256;              // ws: connections not yet upgraded
    std::chrono::milliseconds handshake_timeout{10000};  // ws: for each HTTP request to arrive
    std::chrono::seconds tcp_keepalive{60};              // idle time before the first keepalive probe; 0: off
    // Connections that send nothing for this long while they hold, wait for and watch nothing
    // are closed; 0: never (idle live-mutex clients are legitimate).
    std::chrono::milliseconds idle_timeout{0};
    // The slow-request log (warn level): grants that waited longer than slow_wait, holds that
    // lasted longer than slow_hold, with key, lock id and client address; 0: off.
    std::chrono::milliseconds slow_wait{0};
    std::chrono::milliseconds slow_hold{0};
    std::vector<std::pair<std::string, std::uint32_t>> key_max;  // (prefix, max): pinned by the operator
    std::size_t max_list = 10000;                                // keys per ls page, holders listed by lock-info
    unsigned unix_mode = 0660;
    int unix_group = -1;                     // group of unix socket files; -1: the broker's
    std::string state_dir;                   // empty: fencing tokens are seeded from the wall clock
    std::uint64_t fencing_block = 100'000;   // tokens reserved per state-dir write
    std::vector<std::string> allow_origins;  // WebSocket origins besides our own; "*" allows all
    // Authentication. With a token file (one `TOKEN [admin|client]` per line), every connection
    // must present a listed token before anything else: in its hello, or in its WebSocket
    // upgrade (Authorization: Bearer, or the subprotocol lmx.token.<base64url>). Unix-socket
    // peers may be let in by uid or gid instead. Empty file name and no unix rules: off.
    std::string auth_token_file;
    struct unix_peer {
        bool group = false;  // gid (the peer's primary group) rather than uid
        std::uint32_t id = 0;
        bool admin = false;
    };
    std::vector<unix_peer> unix_allow;
    bool auth_http = false;
    // tls:// and wss:// listeners: PEM certificate (chain) and key; with tls_client_ca, clients
    // must present a certificate signed by one of its CAs (mutual TLS).
    std::string tls_cert;
    std::string tls_key;
    std::string tls_client_ca;  // /metrics and /healthz need a token too (/v1/stats always does when auth is on)
    log_level level = log_level::info;
    // Lock state in an etcd cluster shared with other brokers (etcd://HOST:PORT[,HOST:PORT...]);
    // empty: in this process's memory.
    std::string store;
    std::string store_prefix = "/lmx/";
    std::chrono::seconds session_ttl{10};         // the lease this broker's entries hang on
    std::string store_ca, store_cert, store_key;  // TLS to etcd (https:// endpoints when store_ca is set)
};

// What the broker's automatic limits come to on this machine (after raising the soft
// file-descriptor limit to the hard one): max_connections and max_outbox_total when they are 0.
// The note says what was adjusted, for the log; empty when nothing was.
struct resolved_limits {
    std::size_t max_connections = 0;
    std::size_t max_outbox_total = 0;
    std::string note;
};
resolved_limits resolve_limits(const broker_options& options);

// Why `url` is not a usable broker_options::store (empty when it is one).
std::string store_url_error(std::string_view url);

class broker {
public:
    broker(boost::asio::any_io_executor ex, broker_options options);
    ~broker();
    broker(const broker&) = delete;
    broker& operator=(const broker&) = delete;

    // Binds every listener and starts serving. Returns an empty string on success, otherwise a
    // one-line description of what failed (nothing is left listening then).
    std::string start();
    // Stops accepting, closes every session, removes Unix socket files. Idempotent.
    void stop();
    // Reads the token file again (SIGHUP): connections whose token is gone are closed, those
    // whose role changed get the new one. On error (a sentence) the old tokens stay in force.
    std::string reload();

    // The URLs actually bound (ephemeral ports resolved), in --listen order.
    std::vector<std::string> urls() const;
    // What system-stats and /v1/stats report (callers include <lmx/core/protocol.hpp>).
    core::broker_stats stats() const;

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

// One line to stderr: "2026-11-27T20:01:02.345Z info  message", or in the json format one object
// a line for log collectors: {"time":"2026-11-27T20:01:02.345Z","level":"info","message":"..."}.
// Shared by the broker and apps.
enum class log_format : std::uint8_t { text, json };
void log_line(log_level level, const std::string& message);
void set_log_level(log_level level);
void set_log_format(log_format format);
bool log_enabled(log_level level);

}  // namespace lmx
