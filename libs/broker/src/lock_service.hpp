#pragma once

// The broker's lock service, without I/O: a parsed request and the time come in; the answers,
// grants, notices and watch events go out as frames appended to the clients' reply buffers,
// which the sessions part (broker.cpp) owns and writes. Lock state lives in a core::lock_store
// (core::memory_store unless the broker is given another). Private to libs/broker.

#include <lmx/core/lock_store.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/core/rw_locks.hpp>

#include "auth.hpp"
#include "wait_histogram.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace lmx::detail {

// A connection as the lock service sees it. The sessions part owns it (its session type derives
// from it) and tells the service when it ends.
struct client {
    core::session_id id = 0;
    detail::role role = detail::role::none;  // none until the sessions part authenticates it
    std::string remote;                      // for log lines
    bool live_mutex = false;                 // announced itself with a live-mutex `version` message
    bool watching = false;
    std::unordered_set<std::string> watch_keys;  // empty: every key
};

// What the lock service needs from the sessions part.
class service_host {
public:
    virtual ~service_host() = default;
    // The client with session id `id`; null when it is gone or closing (nothing more is sent to it).
    virtual client* find(core::session_id id) = 0;
    // The buffer that one more frame for `c` is appended to.
    virtual std::string& frames(client& c) = 0;
    // As core::effect_sink::reserve_tokens: persists a fencing reservation up to at least `needed`.
    virtual core::fencing_token reserve_tokens(core::fencing_token needed) = 0;
    // The whole figures of the broker, for system-stats.
    virtual core::broker_stats stats() = 0;
};

struct service_config {
    core::table_config table{};
    std::size_t max_list = 1000;  // keys per ls page and holders per lock-info answer
    core::codec_limits limits{};  // announced in hello
    std::string epoch{};          // announced in hello
    bool auth_on = false;         // hello announces the client's role
    // The slow-request log: grants that waited longer, and holds that lasted longer (0: off).
    std::chrono::milliseconds slow_wait{0};
    std::chrono::milliseconds slow_hold{0};
};

class lock_service final : core::effect_sink, core::rw_output {
public:
    // Builds the store that holds the lock state; it reports to `sink`.
    using store_factory =
        std::function<std::unique_ptr<core::lock_store>(core::effect_sink& sink, const core::table_config& config)>;
    // The in-memory store (core::memory_store).
    static store_factory in_memory();

    lock_service(service_host& host, service_config config, const store_factory& make_store = in_memory());
    ~lock_service() override;
    lock_service(const lock_service&) = delete;
    lock_service& operator=(const lock_service&) = delete;

    // One parsed request of client `c`.
    void serve(client& c, core::request& r, core::time_point now);
    // A frame that did not parse: the error, in the shape its type expects when it has one.
    void refuse(client& c, const core::parse_error& err);

    // Ends the leases and wait timeouts due at `now`.
    void expire(core::time_point now);
    // After the store told the sink something outside a call (a store that answers later):
    // finishes what live-mutex's read/write-lock layer has to do with it.
    void settle(core::time_point now);
    // Ends the store's background work; the broker is stopping.
    void stop_store() noexcept;
    // After a failed fencing reservation: reserves again and, on success, grants what waited.
    bool resume_grants(core::time_point now);
    std::optional<core::time_point> next_deadline();
    // The client's connection ended: its waits end, its holds too unless kept on exit.
    void close(client& c, core::time_point now);
    // Whether `c` holds, waits for or takes part in nothing (an idle connection may be closed).
    bool idle(const client& c) const;
    // Watchers of every key learn the connection count; true when any was told.
    bool announce_connections(std::size_t open);

    // The lock figures of `st` (keys, holders, waiters, grants, ..., top contended keys, cached
    // for a second as `now` counts it, since finding them scans every key).
    void add_figures(core::broker_stats& st, core::time_point now);
    const core::lock_store& store() const { return *store_; }
    const wait_histogram& waits() const { return waits_; }

private:
    void on_effect(const core::effect& e) override;
    core::fencing_token reserve_tokens(core::fencing_token needed) override;
    std::string* frames_for(core::session_id id) override;

    void fake_grant(const core::effect& e);
    void route_event(const core::effect& e);
    void stop_watching(client& c);
    void set_events();
    void log_request(const client& c, const core::request& r) const;
    void log_slow(const core::effect& e, std::string_view what, std::chrono::steady_clock::duration took);

    void serve(client& c, core::req::version& r, core::time_point now);
    void serve(client& c, core::req::hello& r, core::time_point now);
    void serve(client& c, core::req::lock& r, core::time_point now);
    void serve(client& c, core::req::unlock& r, core::time_point now);
    void serve(client& c, core::req::lock_received& r, core::time_point now);
    void serve(client& c, core::req::lock_client_timeout& r, core::time_point now);
    void serve(client& c, core::req::lock_client_error& r, core::time_point now);
    template <core::req::rw_message_kind K>
    void serve(client& c, core::req::rw_message<K>& r, core::time_point now);
    void serve(client& c, core::req::lock_received_rejected& r, core::time_point now);
    void serve(client& c, core::req::cancel& r, core::time_point now);
    void serve(client& c, core::req::acquire_many& r, core::time_point now);
    void serve(client& c, core::req::release_many& r, core::time_point now);
    void serve(client& c, core::req::extend& r, core::time_point now);
    void serve(client& c, core::req::ls& r, core::time_point now);
    void serve(client& c, core::req::lock_info& r, core::time_point now);
    void serve(client& c, core::req::ping& r, core::time_point now);
    void serve(client& c, core::req::system_stats& r, core::time_point now);
    void serve(client& c, core::req::watch& r, core::time_point now);
    void serve(client& c, core::req::unwatch& r, core::time_point now);
    void serve(client& c, core::req::pin& r, core::time_point now);

    service_host& host_;
    service_config config_;
    std::unique_ptr<core::lock_store> store_;
    std::unique_ptr<core::rw_locks> rw_;
    std::vector<client*> watchers_;
    wait_histogram waits_;
    std::vector<core::contended_key> top_cache_;
    core::time_point top_at_{};
    // The slow-request log writes at most slow_lines_per_second lines a second, then says how
    // many it held back.
    static constexpr unsigned slow_lines_per_second = 20;
    const client* closing_ = nullptr;  // during close(): the client whose connection ends
    bool stopping_ = false;            // the broker is stopping: its holds end with it
    std::string last_slow_hold_;       // the last hold logged, so a multi-key one is logged once
    core::time_point last_slow_since_{};
    core::session_id last_slow_session_ = 0;
    core::time_point slow_window_{};
    unsigned slow_lines_ = 0;
    std::uint64_t slow_held_back_ = 0;
};

}  // namespace lmx::detail
