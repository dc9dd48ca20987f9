#pragma once

// The client's protocol logic without I/O: request ids, requests in flight and those waiting for
// a connection, holds and their leases (deadlines, renewals, late grants), the routing of
// replies, and the crossings of a withdrawal with a grant. It takes decoded replies, the time
// and the caller's intents, and answers with frames (appended to outbox()) and a `step`: the
// operations it completed, the holds that ended, the queued notices. client_impl owns the
// socket, the strand, the timers and the completion handlers, and applies each step.
//
// Every time it needs is passed in, so tests drive crossings (a cancel against a grant, a
// release against an expiry, a renewal against a loss) in any order, deterministically.

#include <lmx/client/client.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/core/replies.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmx::detail {

using steady = std::chrono::steady_clock;
using error_code = boost::system::error_code;

constexpr std::int64_t no_deadline = std::numeric_limits<std::int64_t>::max();

class client_impl;

// What a guard refers to. The atomics may be read from any thread while the client's strand
// updates them; the rest is the strand's. A hold keeps no executor: a guard may outlive its
// client and its io_context.
struct hold {
    std::weak_ptr<client_impl> owner;
    std::shared_ptr<const std::atomic<bool>> client_open;  // false once the client is closed or gone
    std::string key;                                       // single-key holds
    std::string id;
    std::uint64_t serial = 0;  // the id's number (client_session::serial_of)
    ::lmx::fencing_token token = 0;
    bool multi = false;
    bool keep = false;
    std::vector<std::string> keys;                                     // multi: sorted
    std::vector<std::pair<std::string, ::lmx::fencing_token>> tokens;  // multi
    std::atomic<bool> lost{false};
    std::atomic<bool> released{false};
    std::atomic<std::int64_t> expires{no_deadline};  // steady_clock ticks: the lease as this client counts it
    std::atomic<int> ended{0};                       // the errc that ended it; 0 while it holds

    // The strand's.
    std::chrono::milliseconds ttl{};  // the lease asked for (no_expiry: none)
    bool renew = false;
    bool renewing = false;
    steady::time_point renew_at = steady::time_point::max();

    bool holds_now() const noexcept {
        if (lost || released || !client_open || !client_open->load()) return false;
        const auto e = expires.load();
        return e == no_deadline || steady::now().time_since_epoch().count() < e;
    }
};

// A request of the client: in flight (sent, waiting for its reply) or waiting for the connection.
struct request_op {
    enum class kind : std::uint8_t {
        call,          // any request; the reply is handed back (ls, info, stats, ping, hello)
        grant,         // lock: completes with a hold
        grant_many,    // acquire-many: completes with a multi-key hold
        unlock,        // release(key, id) / force_release(key)
        release_hold,  // a guard's release
        extend_hold,   // a guard's extend
        renew,         // the client's own renewal of a lease (no caller)
        confirm,       // a renewal that completes a late grant (its caller waits for it)
    };
    kind k = kind::call;
    bool raw = false;            // call: wire errors are replies too (the handshake reads them)
    bool keep = false;           // grant: keepLocksOnExit
    bool renew = false;          // grant: renew the lease while held
    bool notify_queued = false;  // grant: report queued notices
    std::string uuid;
    std::uint64_t serial = 0;  // the number in uuid
    std::uint64_t caller = 0;  // the operation a completion goes to (0: none; usually == serial)
    std::string key;           // grant: the key, to give back a grant that crosses a withdrawal; unlock by id
    std::string frame;         // the encoded request while waiting for the connection
    std::chrono::milliseconds timeout{};  // from sending to the local deadline; max: none
    steady::time_point deadline = steady::time_point::max();
    steady::time_point sent{};        // when the request left (a lease counts from here)
    std::chrono::milliseconds ttl{};  // grant, extend, renew, confirm: the lease asked for
    std::shared_ptr<hold> h;          // release_hold, extend_hold, renew, confirm
};
using request_ptr = std::unique_ptr<request_op>;

// An operation's end, for the owner to hand to its caller.
struct completion {
    std::uint64_t caller = 0;
    error_code ec;
    std::shared_ptr<hold> h;                   // grant, grant_many: the hold on success
    std::unique_ptr<core::typed_reply> reply;  // call: the reply (held apart: a reply is large to move)
    std::string message;                       // the broker's words when it refused
    bool from_reply = false;                   // ended by a reply (the caller may resume inline)
};

// What one call into the session produced, besides frames.
struct step {
    std::vector<completion> done;
    std::vector<std::pair<std::uint64_t, std::uint32_t>> queued;  // (caller, place in line)
    std::vector<std::pair<std::shared_ptr<hold>, errc>> ended;    // holds that ended, and why
    bool empty() const noexcept { return done.empty() && queued.empty() && ended.empty(); }
    void clear() noexcept {
        done.clear();
        queued.clear();
        ended.clear();
    }
};

class client_session {
public:
    enum class link : std::uint8_t {
        down,       // no connection: requests wait for one
        handshake,  // connected, hello in flight: only immediate requests go out
        up,         // requests go out at once
        closed,     // the client is closed: requests fail
    };

    // `prefix`: the start of every request id of this client; `request_timeout`: the local
    // deadline of the session's own requests (renewals, confirmations); `owner` and `open` are
    // what its holds refer to (read by guards).
    client_session(std::string prefix, std::chrono::milliseconds request_timeout, std::weak_ptr<client_impl> owner,
                   std::shared_ptr<const std::atomic<bool>> open);

    void set_owner(std::weak_ptr<client_impl> owner) { owner_ = std::move(owner); }

    link state() const noexcept { return link_; }
    std::string& outbox() noexcept { return outbox_; }  // frames to send, in order
    step& output() noexcept { return out_; }            // taken and cleared by the owner
    const core::codec_limits& limits() const noexcept { return limits_; }
    void set_limits(const core::codec_limits& l) noexcept { limits_ = l; }
    steady::duration rtt() const noexcept { return rtt_; }
    bool has_holds() const noexcept { return !holds_.empty(); }
    std::size_t in_flight() const noexcept { return pending_.size(); }
    std::size_t waiting() const noexcept { return waiting_.size(); }
    // The earliest moment on_time has work (a request's deadline, a lease event); max: none.
    steady::time_point next_wake() const noexcept;

    // Request ids are "<prefix>.<n>", n counting up in base 62, least significant digit first.
    std::string next_id();
    std::uint64_t new_serial() { return ++counter_; }             // a handle that names no request
    std::uint64_t serial_of(std::string_view id) const noexcept;  // 0: not one of ours

    // Why a key or an acquire's options would be refused by the broker; empty when fine.
    std::string invalid_key(std::string_view key) const;
    std::string invalid_options(const acquire_options& o) const;

    // A new request record of kind k; its uuid is set. Fill it, build its request from the uuid,
    // and submit both. Returns the caller's handle (the record's serial).
    request_ptr open_request(request_op::kind k, std::chrono::milliseconds timeout);
    std::uint64_t submit(request_ptr o, const core::request& r, steady::time_point now, bool immediate = false);
    // A request that needs no reply (a withdrawal, a give-back, a ping): sent only when up.
    void send_oneway(const core::request& r);

    // The caller gave up on operation `caller`: a waiting request is dropped, one in flight is
    // withdrawn (a grant that crosses the withdrawal is given back). Completes it `cancelled`.
    void cancel(std::uint64_t caller, steady::time_point now);

    // A guard's own release and extend; the guard claimed `released` before.
    std::uint64_t release_hold(std::shared_ptr<hold> h, std::chrono::milliseconds timeout, steady::time_point now);
    std::uint64_t extend_hold(std::shared_ptr<hold> h, std::chrono::milliseconds ttl, std::chrono::milliseconds timeout,
                              steady::time_point now);
    // A guard dropped without release: ended here, given back at the broker.
    void drop_hold(const std::shared_ptr<hold>& h) { give_back(h, errc::released); }
    // The hold ended (released, lost, closed, ...): its guard no longer owns it.
    void end_hold(const std::shared_ptr<hold>& h, errc why);

    void on_transport_up();                                         // the handshake may go out (immediate requests)
    void on_handshake_done(steady::time_point now);                 // everything waiting goes out
    void on_connect_failed(error_code ec, steady::time_point now);  // everything waiting fails with ec
    // The connection ended: requests in flight fail, holds not kept on exit end.
    void on_disconnect(error_code why, steady::time_point now);
    void lose_kept_holds();  // the broker restarted: holds kept across the reconnect are gone
    void on_reply(core::typed_reply&& r, steady::time_point now);  // not events: those are the watchers'
    void on_time(steady::time_point now);                          // deadlines, lease ends and renewals due by `now`
    void close(steady::time_point now);                            // every request fails, every hold ends `closed`

private:
    void send(request_ptr o, const core::request* r, steady::time_point now);
    void finish(request_ptr o, core::typed_reply&& r, steady::time_point now);
    void fail(request_ptr o, error_code ec, steady::time_point now);
    void complete(request_ptr o, error_code ec, std::shared_ptr<hold> h, bool from_reply,
                  std::unique_ptr<core::typed_reply> r = nullptr, std::string message = {});
    void recycle(request_ptr o);
    void abandon(const request_op& o);
    void give_back(const std::shared_ptr<hold>& h, errc why);
    bool expire_if_due(const std::shared_ptr<hold>& h, steady::time_point now);
    std::shared_ptr<hold> new_hold(const request_op& o);
    void confirm_grant(request_ptr grant, std::shared_ptr<hold> h, steady::time_point now);
    std::chrono::milliseconds margin(std::chrono::milliseconds ttl) const;
    void set_lease(const std::shared_ptr<hold>& h, steady::time_point sent, std::chrono::milliseconds ttl);
    void schedule(const std::shared_ptr<hold>& h, steady::time_point at);
    void sweep(steady::time_point now);
    void tend_leases(steady::time_point now);
    void renew(const std::shared_ptr<hold>& h, steady::time_point now);
    void renewed(request_ptr o, const core::typed_reply& r, steady::time_point now);
    void retry_renewal(const std::shared_ptr<hold>& h, steady::time_point now);
    std::vector<std::shared_ptr<hold>> live_holds() const;

    std::string prefix_;
    std::chrono::milliseconds request_timeout_;
    std::uint64_t counter_ = 0;
    std::weak_ptr<client_impl> owner_;
    std::shared_ptr<const std::atomic<bool>> open_;
    link link_ = link::down;
    core::codec_limits limits_{};  // what the broker refuses (from hello; its defaults until then)
    steady::duration rtt_{};       // the last round trip measured
    std::string outbox_;
    step out_;

    // Keyed by the number in the request id: integer keys hash in a step, where string keys of a
    // small map are compared one by one.
    std::unordered_map<std::uint64_t, request_ptr> pending_;        // sent
    std::vector<request_ptr> waiting_;                              // for the connection
    std::vector<request_ptr> spare_;                                // finished records, for reuse
    std::unordered_map<std::uint64_t, std::weak_ptr<hold>> holds_;  // by serial
    std::unordered_map<std::string, std::string> abandoned_;        // withdrawn request id -> key: give back on grant
    std::unordered_map<std::string, std::string> cancels_;          // cancel uuid -> target
    steady::time_point deadline_min_ = steady::time_point::max();   // no request is due before this

    // Lease events in time order: (when, hold serial). Stale entries are skipped when they come up.
    using lease_event = std::pair<steady::time_point, std::uint64_t>;
    std::priority_queue<lease_event, std::vector<lease_event>, std::greater<>> lease_events_;
};

}  // namespace lmx::detail
