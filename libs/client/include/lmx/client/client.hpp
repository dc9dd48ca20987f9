#pragma once

// The lmx C++20 client: one connection to a broker, any number of requests in flight, an RAII
// guard per lock.
//
//   boost::asio::awaitable<void> work(lmx::client& client) {
//       co_await client.connect();
//       {
//           auto guard = co_await client.acquire("orders");   // released on scope exit
//           use(guard.fencing_token());
//       }
//       auto pool = co_await client.acquire("gpu", {.ttl = std::chrono::seconds(30), .max = 4});
//       co_await pool.release();                             // confirmed release
//   }
//
// Every asynchronous call takes an Asio completion token last (default: use_awaitable, which
// throws boost::system::system_error on failure); with callbacks, use_future, as_tuple or
// deferred the first completion argument is the error_code. Calls may be made from any thread;
// the client's work runs on its own strand. No call ever completes inside the initiating call.
// A reply completes its operation on the handler's associated executor: directly from the
// client's reader when that executor runs there (a coroutine on the client's strand, or on the
// same single-threaded io_context), so that what the handler sends next leaves in the reader's
// one write; through the executor's queue otherwise.

#include <lmx/client/errc.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace lmx {

namespace detail {
class client_impl;
struct hold;
struct watch_state;
}  // namespace detail

using error_code = boost::system::error_code;
using fencing_token = std::uint64_t;

// A ttl meaning "this hold never expires".
inline constexpr std::chrono::milliseconds no_expiry = std::chrono::milliseconds::max();
// A timeout meaning "wait in the queue as long as it takes".
inline constexpr std::chrono::milliseconds wait_forever = std::chrono::milliseconds::max();

// What a failed call was told, by the broker or by the client's own checks of the request.
struct diagnostics {
    std::string message;
};

enum class connection_state { disconnected, connecting, connected, closed };

struct client_options {
    // tcp://host:port, unix:///path, ws://host:port/path; over TLS: tls://host:port, wss://host:port/path.
    // Several, separated by commas (LMX_URL=tcp://a:6970,tcp://b:6970): see `urls`.
    std::string url = "tcp://127.0.0.1:6970";
    // Brokers that serve the same locks (over one etcd, `lmx broker --store`), used instead of
    // `url` when set. A connect tries them in order from the one in use, and takes the first that
    // answers; after a connection is lost the next connect starts with the next one.
    std::vector<std::string> urls{};
    std::chrono::milliseconds ttl{5000};                   // lease of a lock that does not name one (as the broker's)
    std::chrono::milliseconds lock_request_timeout{3000};  // one try of a waiting acquire
    unsigned max_retries = 3;                              // tries of an acquire (0 = 1 try, no retry)
    bool keep_locks_on_exit = false;                       // holds survive this client's connection closing
    bool no_delay = true;                                  // TCP_NODELAY
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds request_timeout{10000};  // replies to non-lock requests
    std::size_t max_message_size = 1 << 20;
    // An idle connection is pinged this often, and dropped as half-open when nothing comes back
    // for twice as long (its holds are then reported lost). Zero: never.
    std::chrono::milliseconds health_interval{5000};
    // For a broker that requires authentication (--auth-token-file): the token, sent in the
    // hello. Or a file holding it (its first word; '#' lines skipped), read again at every
    // connect, so that a rotated token is picked up. A file that cannot be read fails the
    // connect with `unauthenticated`. `token` wins when both are set.
    std::string token{};
    std::string token_file{};
    // tls:// and wss://: the broker's certificate must chain to a CA in tls_ca_file (PEM), or in
    // the system's store when empty, and name the URL's host; a client certificate and key (PEM)
    // for a broker that requires one (--tls-client-ca). Failures: errc::tls_failed, with the
    // reason in last_connect_error().
    std::string tls_ca_file{};
    std::string tls_cert_file{};
    std::string tls_key_file{};
    // Told on the client's strand of every change of the connection's state, with why it was
    // lost (empty on connected). Must not block.
    std::function<void(connection_state, error_code)> on_state{};

    // `base` with the connection settings found in, by precedence: the environment (LMX_URL,
    // or LMX_UDS_PATH, or LMX_HOST/LMX_PORT; LMX_TOKEN_FILE; LMX_TLS_CA, LMX_TLS_CERT, LMX_TLS_KEY
    // where the fields are empty) over the settings file the `lmx set`
    // command writes ($XDG_CONFIG_HOME/lmx/config.json, default ~/.config/lmx/config.json) over
    // `base`.
    static client_options from_env(client_options base);
    static client_options from_env();
};

// Members in this order so that designated initializers read naturally:
//   client.acquire("gpu", {.ttl = 30s, .max = 4})
//
// Every value has one meaning: ttl must be positive (or no_expiry); timeout 0 means "do not
// wait" (as wait = false), wait_forever means no limit; max must be at least 1. Anything else
// fails the call with bad_request before it is sent, as do keys that are empty, not UTF-8, or
// longer than the broker takes (it says its limits when the client connects).
struct acquire_options {
    std::optional<std::chrono::milliseconds> ttl{};  // unset: the client's ttl; no_expiry: never
    std::optional<std::uint32_t> max{};              // holders allowed on the key (semaphore)
    bool wait = true;                                // false: try-lock, fails with would_block
    // How long to wait in the queue before failing with `timeout`. Unset: the client's
    // lock_request_timeout for each of max_retries tries (3 x 3000 ms = 9 s by default). The
    // request keeps its place in line for the whole wait and is withdrawn at the broker at its end.
    std::optional<std::chrono::milliseconds> timeout{};
    bool shared = false;  // a reader lock: coexists with other shared holders, never with exclusive
    std::optional<bool> keep_locks_on_exit{};  // unset: the client's setting
    std::optional<unsigned> max_retries{};     // unset: the client's setting
    // Called on the client's strand each time the broker queues the request, with its place in
    // line (1 = next). Must not block. Unset, the request asks the broker for no queued notice.
    std::function<void(std::uint32_t position)> on_queued{};
    // Renews the lease a third of the way through while the guard holds the lock, so that work
    // of any length keeps it. Unset: on when `ttl` is unset (the client's ttl), off otherwise.
    std::optional<bool> auto_renew{};
    // Filled with the reason when the call fails (the broker's words, or the client's check).
    diagnostics* diag = nullptr;
};

// One hold of one key. Move-only; if it still holds when destroyed, the unlock is queued on the
// client's strand without blocking (use release() for a confirmed release).
class [[nodiscard]] lock_guard {
    friend class multi_lock_guard;

public:
    lock_guard() noexcept = default;
    lock_guard(lock_guard&&) noexcept = default;
    lock_guard& operator=(lock_guard&& other) noexcept;
    lock_guard(const lock_guard&) = delete;
    lock_guard& operator=(const lock_guard&) = delete;
    ~lock_guard();

    const std::string& key() const noexcept;
    const std::string& id() const noexcept;  // the lock id (also the request uuid)
    ::lmx::fencing_token fencing_token() const noexcept;
    // True while this guard holds the lock as far as the client knows: not released, not lost,
    // its client open, and its lease not past expires_at(), whether or not the broker can be
    // reached to say so.
    bool owns_lock() const noexcept;
    explicit operator bool() const noexcept { return owns_lock(); }
    // True once the hold ended other than by its own release: its lease ran out, it was forced,
    // its connection was lost or its client closed (async_wait_lost says which).
    bool lost() const noexcept;
    // When the lease ends as this client counts it: from when the request (or the last renewal)
    // was sent, less a margin of max(5% of the ttl, twice the last round trip). Unset: no expiry.
    std::optional<std::chrono::steady_clock::time_point> expires_at() const noexcept;

    // Completes once the hold has ended, with why: errc::lease_expired, errc::forced,
    // errc::connection_lost, errc::closed, or errc::released (its own release or detach).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto async_wait_lost(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [h = hold_](auto handler) { start_wait_lost(h, std::move(handler)); }, token);
    }

    // Confirmed release. The operation refers to the hold, not to this guard object, so a
    // deferred release stays valid when the guard is moved; once started, the guard no longer
    // owns the lock.
    template <class Token = boost::asio::use_awaitable_t<>>
    auto release(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [h = hold_](auto handler) { start_release(h, std::move(handler)); }, token);
    }
    // Renews the lease: it now ends `ttl` from now (no_expiry: never).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto extend(std::chrono::milliseconds ttl, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [h = hold_](auto handler, std::chrono::milliseconds t) { start_extend(h, t, std::move(handler)); }, token,
            ttl);
    }

    // Stops tracking the hold without releasing it (it then ends by ttl or an unlock by id).
    void detach() noexcept;

private:
    friend class detail::client_impl;
    explicit lock_guard(std::shared_ptr<detail::hold> h) noexcept : hold_(std::move(h)) {}
    static void start_release(std::shared_ptr<detail::hold> hold,
                              boost::asio::any_completion_handler<void(error_code)> h);
    static void start_extend(std::shared_ptr<detail::hold> hold, std::chrono::milliseconds ttl,
                             boost::asio::any_completion_handler<void(error_code)> h);
    static void start_wait_lost(std::shared_ptr<detail::hold> hold,
                                boost::asio::any_completion_handler<void(error_code)> h);
    static void detach_hold(std::shared_ptr<detail::hold>& hold) noexcept;
    std::shared_ptr<detail::hold> hold_;
};

// A hold of several keys taken atomically by acquire_many.
class [[nodiscard]] multi_lock_guard {
public:
    multi_lock_guard() noexcept = default;
    multi_lock_guard(multi_lock_guard&&) noexcept = default;
    multi_lock_guard& operator=(multi_lock_guard&& other) noexcept;
    multi_lock_guard(const multi_lock_guard&) = delete;
    multi_lock_guard& operator=(const multi_lock_guard&) = delete;
    ~multi_lock_guard();

    const std::string& id() const noexcept;
    const std::vector<std::string>& keys() const noexcept;  // sorted
    // The fencing token of `key`; 0 when the guard does not cover it.
    ::lmx::fencing_token fencing_token(std::string_view key) const noexcept;
    bool owns_lock() const noexcept;
    explicit operator bool() const noexcept { return owns_lock(); }
    bool lost() const noexcept;
    std::optional<std::chrono::steady_clock::time_point> expires_at() const noexcept;

    // Confirmed release of every key (see lock_guard::release).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto release(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [h = hold_](auto handler) { lock_guard::start_release(h, std::move(handler)); }, token);
    }
    // Renews the lease of every key (see lock_guard::extend).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto extend(std::chrono::milliseconds ttl, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [h = hold_](auto handler, std::chrono::milliseconds t) {
                lock_guard::start_extend(h, t, std::move(handler));
            },
            token, ttl);
    }
    template <class Token = boost::asio::use_awaitable_t<>>
    auto async_wait_lost(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [h = hold_](auto handler) { lock_guard::start_wait_lost(h, std::move(handler)); }, token);
    }
    // Stops tracking the hold without releasing it (see lock_guard::detach).
    void detach() noexcept { lock_guard::detach_hold(hold_); }

private:
    friend class detail::client_impl;
    explicit multi_lock_guard(std::shared_ptr<detail::hold> h) noexcept : hold_(std::move(h)) {}
    std::shared_ptr<detail::hold> hold_;
};

// The keys of acquire_many: a std::vector<std::string>, or keys written out in braces, string
// literals, std::string or std::string_view alike. The braces call a constructor rather than
// build a std::initializer_list, so they also compile inside co_await with g++ 12.
class key_list {
public:
    key_list(std::vector<std::string> keys) : keys_(std::move(keys)) {}
    template <class... Keys>
    requires(sizeof...(Keys) > 0 && (std::is_convertible_v<const Keys&, std::string_view> && ...))
        key_list(const Keys&... keys)
        : keys_{std::string(std::string_view(keys))...} {}

    std::vector<std::string> take() && { return std::move(keys_); }

private:
    std::vector<std::string> keys_;
};

struct lock_info {
    std::string key;
    bool locked = false;
    std::vector<std::string> holders;  // lock ids
    std::uint32_t waiters = 0;
    std::uint32_t max = 1;
    ::lmx::fencing_token last_token = 0;
};

// One event on a watched key, in the order the broker applied it.
struct lock_event {
    enum class kind { granted, released, expired, forced, queued, cancelled, timeout };
    kind type{};
    std::string key;
    std::string id;                          // the lock id; for queued, cancelled and timeout the waiting request's id
    ::lmx::fencing_token fencing_token = 0;  // on events of holds (granted, released, expired, forced)
    std::uint32_t waiting = 0;               // requests queued on the key once the event happened
    // Events of this watcher dropped just before this one because it was not read fast enough
    // (it keeps the newest watch_queue_limit events).
    std::uint64_t dropped = 0;
};

inline constexpr std::size_t watch_queue_limit = 10000;

// A subscription to the broker's lock events (client::watch). Move-only; destroying it, or
// stop(), ends the subscription. It ends by itself when the connection is lost or the client
// closes: async_receive then hands out the events still queued, then fails with
// errc::connection_lost or errc::closed (watch again after a reconnect).
class [[nodiscard]] watcher {
public:
    watcher() noexcept = default;
    watcher(watcher&&) noexcept = default;
    watcher& operator=(watcher&& other) noexcept;
    watcher(const watcher&) = delete;
    watcher& operator=(const watcher&) = delete;
    ~watcher();

    // The next event; one receive at a time. Cancellable (terminal): fails with errc::cancelled.
    template <class Token = boost::asio::use_awaitable_t<>>
    auto async_receive(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, lock_event)>(
            [s = state_](auto handler) { start_receive(s, std::move(handler)); }, token);
    }
    // Ends the subscription; a pending receive fails with errc::closed.
    void stop() noexcept;
    // The watched keys, sorted; empty when it watches every key.
    const std::vector<std::string>& keys() const noexcept;

private:
    friend class detail::client_impl;
    friend class client;
    explicit watcher(std::shared_ptr<detail::watch_state> s) noexcept : state_(std::move(s)) {}
    static void start_receive(std::shared_ptr<detail::watch_state> s,
                              boost::asio::any_completion_handler<void(error_code, lock_event)> h);
    std::shared_ptr<detail::watch_state> state_;
};

class client {
public:
    using executor_type = boost::asio::any_io_executor;

    explicit client(executor_type ex, client_options options = {});
    // On an io_context (or any execution context): client c(ioc, {.url = ...}).
    template <class ExecutionContext>
    requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    explicit client(ExecutionContext& context, client_options options = {})
        : client(executor_type(context.get_executor()), std::move(options)) {}
    // Closes the connection; holds not kept on exit end at the broker.
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    executor_type get_executor() const noexcept;
    const client_options& options() const noexcept;
    connection_state state() const noexcept;

    // Connects and checks the broker (hello). Other calls connect on first use too.
    template <class Token = boost::asio::use_awaitable_t<>>
    auto connect(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [this](auto handler) { start_connect(std::move(handler)); }, token);
    }

    template <class Token = boost::asio::use_awaitable_t<>>
    auto acquire(std::string_view key, acquire_options options = {}, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, lock_guard)>(
            [this](auto handler, std::string k, acquire_options o) {
                start_acquire(std::move(k), o, std::move(handler));
            },
            token, std::string(key), std::move(options));
    }
    template <class Token>
    requires(!std::is_convertible_v<Token, acquire_options>) auto acquire(std::string_view key, Token&& token) {
        return acquire(key, acquire_options{}, std::forward<Token>(token));
    }

    // All keys or none; uses ttl, wait, timeout, keep_locks_on_exit, auto_renew and diag of
    // `options`. Keys as a vector or written out: acquire_many({"a", "b"}), acquire_many({k1, k2}).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto acquire_many(key_list keys, acquire_options options = {}, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, multi_lock_guard)>(
            [this](auto handler, std::vector<std::string> k, acquire_options o) {
                start_acquire_many(std::move(k), o, std::move(handler));
            },
            token, std::move(keys).take(), std::move(options));
    }
    template <class Token>
    requires(!std::is_convertible_v<Token, acquire_options>) auto acquire_many(key_list keys, Token&& token) {
        return acquire_many(std::move(keys), acquire_options{}, std::forward<Token>(token));
    }

    // Releases the hold `id` of `key`, e.g. one taken by another process with keep-on-exit.
    // Fails with errc::not_held when that id held nothing (it had already ended).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto release(std::string_view key, std::string_view id, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [this](auto handler, std::string k, std::string i) {
                start_release(std::move(k), std::move(i), false, std::move(handler));
            },
            token, std::string(key), std::string(id));
    }
    // Ends every hold of `key`, whoever holds it (each holder gets a lock-lost notice).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto force_release(std::string_view key, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [this](auto handler, std::string k) { start_release(std::move(k), {}, true, std::move(handler)); }, token,
            std::string(key));
    }

    template <class Token = boost::asio::use_awaitable_t<>>
    auto ls(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, std::vector<std::string>)>(
            [this](auto handler) { start_ls(std::move(handler)); }, token);
    }
    template <class Token = boost::asio::use_awaitable_t<>>
    auto info(std::string_view key, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, lock_info)>(
            [this](auto handler, std::string k) { start_info(std::move(k), std::move(handler)); }, token,
            std::string(key));
    }
    // Round trip time to the broker.
    template <class Token = boost::asio::use_awaitable_t<>>
    auto ping(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, std::chrono::microseconds)>(
            [this](auto handler) { start_ping(std::move(handler)); }, token);
    }
    // Pins the max of every key starting with `prefix` ("" for every key) at the broker, as its
    // --key-max does, until the broker stops; with no max, removes the pin. Requests naming
    // another max then fail with errc::max_pinned. Needs the admin role when the broker requires
    // authentication (errc::forbidden otherwise).
    template <class Token = boost::asio::use_awaitable_t<>>
    auto pin(std::string_view prefix, std::optional<std::uint32_t> max, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code)>(
            [this](auto handler, std::string p, std::optional<std::uint32_t> m) {
                start_pin(std::move(p), m, std::move(handler));
            },
            token, std::string(prefix), max);
    }

    // Why the last connect attempt failed, in the transport's words (a TLS certificate that has
    // expired or names another host, say), where the client's error is less precise. Empty
    // after a connect that succeeded. Call from the client's executor.
    error_code last_connect_error() const;

    // The broker's system-stats figures.
    template <class Token = boost::asio::use_awaitable_t<>>
    auto stats(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, boost::json::object)>(
            [this](auto handler) { start_stats(std::move(handler)); }, token);
    }

    // Watches `keys` (1 to any number): completes once the broker sends their events. A client
    // may hold many watchers; the broker gets the union of their keys, or every key past its
    // per-connection limit, and each watcher sees only its own keys.
    template <class Token = boost::asio::use_awaitable_t<>>
    auto watch(key_list keys, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, watcher)>(
            [this](auto handler, std::vector<std::string> k) { start_watch(std::move(k), false, std::move(handler)); },
            token, std::move(keys).take());
    }
    // Watches every key.
    template <class Token = boost::asio::use_awaitable_t<>>
    auto watch_all(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(error_code, watcher)>(
            [this](auto handler) { start_watch({}, true, std::move(handler)); }, token);
    }

    // Closes the connection; pending operations fail with errc::closed. Later calls fail too.
    void close();

private:
    void start_connect(boost::asio::any_completion_handler<void(error_code)> h);
    void start_acquire(std::string key, acquire_options o,
                       boost::asio::any_completion_handler<void(error_code, lock_guard)> h);
    void start_acquire_many(std::vector<std::string> keys, acquire_options o,
                            boost::asio::any_completion_handler<void(error_code, multi_lock_guard)> h);
    void start_release(std::string key, std::string id, bool force,
                       boost::asio::any_completion_handler<void(error_code)> h);
    void start_ls(boost::asio::any_completion_handler<void(error_code, std::vector<std::string>)> h);
    void start_info(std::string key, boost::asio::any_completion_handler<void(error_code, lock_info)> h);
    void start_ping(boost::asio::any_completion_handler<void(error_code, std::chrono::microseconds)> h);
    void start_stats(boost::asio::any_completion_handler<void(error_code, boost::json::object)> h);
    void start_pin(std::string prefix, std::optional<std::uint32_t> max,
                   boost::asio::any_completion_handler<void(error_code)> h);
    void start_watch(std::vector<std::string> keys, bool all,
                     boost::asio::any_completion_handler<void(error_code, watcher)> h);

    std::shared_ptr<detail::client_impl> impl_;
};

}  // namespace lmx
