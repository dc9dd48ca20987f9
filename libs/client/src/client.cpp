#include "session.hpp"

#include <lmx/client/client.hpp>
#include <lmx/client/settings.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/core/replies.hpp>
#include <lmx/core/scoped_value.hpp>
#include <lmx/transport/batched_writer.hpp>
#include <lmx/transport/connection.hpp>
#include <lmx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/this_coro.hpp>

#include <atomic>
#include <limits>
#include <queue>
#include <random>
#include <algorithm>
#include <deque>
#include <list>
#include <unordered_map>

namespace lmx {

namespace asio = boost::asio;
namespace req = core::req;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace detail {

// A watcher's subscription; every field is used on the client's strand only.
struct watch_state {
    std::weak_ptr<class client_impl> owner;
    std::uint64_t serial = 0;
    bool all = false;
    std::vector<std::string> keys;  // sorted, unique
    std::deque<lock_event> queue;
    error_code ended;  // set once the subscription is over
    asio::any_completion_handler<void(error_code, lock_event)> receiver;
    std::shared_ptr<const char> receive_tag;  // identifies the pending receive for its canceller
};

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Hands the result to the handler on its own executor: inline when the caller already runs
// there (a reply completing an operation from the reader), queued otherwise.
template <class Sig, class... Args>
void complete(asio::any_io_executor fallback, asio::any_completion_handler<Sig> h, Args&&... args) {
    auto ex = asio::get_associated_executor(h, fallback);
    asio::dispatch(ex,
                   [h = std::move(h), ... a = std::forward<Args>(args)]() mutable { std::move(h)(std::move(a)...); });
}

// The same, always queued: for results produced outside the reader (failures, cancellations,
// results known at the start), so that no handler runs inside a call that can be re-entered.
template <class Sig, class... Args>
void complete_later(asio::any_io_executor fallback, asio::any_completion_handler<Sig> h, Args&&... args) {
    asio::post(fallback, [fallback, h = std::move(h), ... a = std::forward<Args>(args)]() mutable {
        complete(fallback, std::move(h), std::move(a)...);
    });
}

// Completes a handler whose client may be gone, and its io_context with it: on the handler's
// own executor, or (a plain callback) on the system executor, never inside the calling function.
template <class Sig, class... Args>
void complete_orphan(asio::any_completion_handler<Sig> h, Args... args) {
    asio::post(asio::system_executor(), [h = std::move(h), ... a = std::move(args)]() mutable {
        auto ex = asio::get_associated_executor(h, asio::system_executor());
        asio::dispatch(ex, [h = std::move(h), ... a = std::move(a)]() mutable { std::move(h)(std::move(a)...); });
    });
}

// Stores a handler in `slot`. (Boost 1.81's any_completion_handler move assignment recurses
// without end, so it is never used.)
template <class Sig, class H>
void take(asio::any_completion_handler<Sig>& slot, H&& h) {
    asio::any_completion_handler<Sig> tmp(std::forward<H>(h));
    slot.swap(tmp);
}

std::atomic<std::uint64_t> next_waiter{1};

std::string id_prefix() {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::random_device rd;
    std::uint64_t bits = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    std::string p;
    for (int i = 0; i < 8; ++i, bits >>= 6) p += alphabet[bits & 63];
    return p;
}

}  // namespace

class client_impl;

// Installed in a caller's cancellation slot: withdraws the operation on the client's strand.
// The caller's cancellation handler is installed by the initiating call, on the caller's thread,
// and never cleared by the client: a signal may be emitted from any thread that the caller
// synchronises with its own call, and the client's strand never touches the caller's slot. The
// link is touched on the strand only: `serial` once the op exists there, `requested` when a
// cancellation arrived before that.
struct cancel_link {
    std::uint64_t serial = 0;
    bool requested = false;
};

struct canceller {
    std::weak_ptr<client_impl> client;
    std::shared_ptr<cancel_link> link;
    void operator()(asio::cancellation_type type);
};

template <class Handler>
std::shared_ptr<cancel_link> install_canceller(const std::weak_ptr<client_impl>& c, Handler& h) {
    auto slot = asio::get_associated_cancellation_slot(h);
    if (!slot.is_connected()) return nullptr;
    auto link = std::make_shared<cancel_link>();
    slot.template emplace<canceller>(c, link);
    return link;
}

// The caller's side of one operation: the handler its completion goes to (exactly one is set)
// and what it asked to hear. The session keeps the protocol side under the same serial.
struct caller_op {
    asio::any_completion_handler<void(error_code)> done;                           // connect, release, extend
    asio::any_completion_handler<void(error_code, lock_guard)> done_guard;         // acquire
    asio::any_completion_handler<void(error_code, multi_lock_guard)> done_multi;   // acquire_many
    asio::any_completion_handler<void(error_code, core::typed_reply)> done_reply;  // any other request
    diagnostics* diag = nullptr;                                                   // filled on failure
    std::function<void(std::uint32_t)> on_queued;
    std::shared_ptr<cancel_link> link;  // ties the caller's cancellation slot to this op

    asio::cancellation_slot caller_slot() const noexcept {
        if (done_guard) return done_guard.get_cancellation_slot();
        if (done_multi) return done_multi.get_cancellation_slot();
        if (done_reply) return done_reply.get_cancellation_slot();
        return done.get_cancellation_slot();
    }
};

class client_impl : public std::enable_shared_from_this<client_impl> {
public:
    client_impl(asio::any_io_executor ex, client_options o)
        : strand_(asio::make_strand(ex)), opt_(std::move(o)), ses_(id_prefix(), opt_.request_timeout, {}, open_) {}

    using strand_type = asio::strand<asio::any_io_executor>;
    using kind = request_op::kind;
    strand_type strand_;
    client_options opt_;
    // Read by guards from any thread: false once the client is closed or destroyed.
    std::shared_ptr<std::atomic<bool>> open_ = std::make_shared<std::atomic<bool>>(true);
    // The protocol: ids, requests, holds, leases. Everything else here is I/O and handlers.
    client_session ses_;

    enum class state { disconnected, connecting, connected, closed };
    state state_ = state::disconnected;
    std::shared_ptr<transport::connection> conn_;
    std::uint64_t generation_ = 0;
    unsigned failures_ = 0;
    std::string session_;
    std::string epoch_;  // the broker's start epoch, from hello
    std::vector<std::string> urls_ = broker_urls(opt_);
    std::size_t url_at_ = 0;         // the broker in use, or tried first by the next connect
    error_code last_connect_error_;  // the transport's error of the last connect attempt
    bool hello_garbage_ = false;     // the peer answered the handshake with something not lmx's
    std::shared_ptr<asio::cancellation_signal> stop_connect_;  // close() ends the connect in progress
    std::string hello_id_;                                     // the handshake's request id while it is pending

    // The session appends requests to its outbox; they go out together at the end of the
    // reader's turn (requests made by operations the replies completed), or from one queued
    // flush for requests made elsewhere. One writer per connection, abandoned with it.
    std::shared_ptr<transport::batched_writer> writer_;
    static constexpr std::size_t early_flush = 8;  // replies routed between flushes in one read turn
    bool in_reader_turn_ = false;
    bool flush_queued_ = false;

    using callers_map = std::unordered_map<std::uint64_t, caller_op>;
    callers_map callers_;  // by the session's serial
    // Emptied records, reused so that the steady request path allocates none of its own.
    std::vector<callers_map::node_type> spare_callers_;
    // connect(): waiting for the connection. A list: erasing from a vector would move-assign
    // handlers, which Boost 1.81's any_completion_handler cannot do (see take).
    std::list<std::pair<std::uint64_t, caller_op>> connects_;
    // async_wait_lost handlers by hold serial, each with its own id (for its canceller).
    std::unordered_map<std::uint64_t,
                       std::list<std::pair<std::uint64_t, asio::any_completion_handler<void(error_code)>>>>
        lost_waiters_;

    // After every call into the session: sends what it queued, arms the timer for its next
    // deadline, and hands out its completions, queued notices and ended holds. Handlers run
    // after the session's state is settled, so one that calls back into the client is safe.
    void apply() {
        if (!ses_.outbox().empty()) schedule_flush();
        arm_wake(ses_.next_wake());
        if (ses_.output().empty()) return;
        step s;
        std::swap(s, ses_.output());
        for (auto& [h, why] : s.ended) hold_ended(*h, why);
        for (auto& [caller, position] : s.queued) notify_queued(caller, position);
        for (auto& c : s.done) hand_out(c);
        s.clear();
        if (ses_.output().empty()) std::swap(s, ses_.output());  // keeps the vectors' storage
    }

    void hand_out(completion& c) {
        auto it = callers_.find(c.caller);
        if (it == callers_.end()) {
            if (c.h) ses_.drop_hold(c.h);  // nobody to hand it to
            return;
        }
        auto node = callers_.extract(it);
        caller_op& op = node.mapped();
        op.link.reset();
        if (op.diag) {
            if (!c.message.empty())
                op.diag->message = std::move(c.message);
            else if (c.ec && !c.from_reply && op.diag->message.empty())
                op.diag->message = c.ec.message();
        }
        op.on_queued = nullptr;
        auto finish = [&](auto handler, auto&&... args) {
            if (c.from_reply)
                complete(strand_, std::move(handler), c.ec, std::forward<decltype(args)>(args)...);
            else
                complete_later(strand_, std::move(handler), c.ec, std::forward<decltype(args)>(args)...);
        };
        if (op.done_guard)
            finish(std::move(op.done_guard), lock_guard(std::move(c.h)));
        else if (op.done_multi)
            finish(std::move(op.done_multi), multi_lock_guard(std::move(c.h)));
        else if (op.done_reply)
            finish(std::move(op.done_reply), c.reply ? std::move(*c.reply) : core::typed_reply{});
        else if (op.done)
            finish(std::move(op.done));
        if (spare_callers_.size() < 256) spare_callers_.push_back(std::move(node));
    }

    // The callback may close the client, which ends this operation: it runs from a local, and
    // goes back only if the operation still waits.
    void notify_queued(std::uint64_t caller, std::uint32_t position) {
        auto it = callers_.find(caller);
        if (it == callers_.end() || !it->second.on_queued) return;
        auto notify = std::move(it->second.on_queued);
        notify(position);
        if (auto again = callers_.find(caller); again != callers_.end()) again->second.on_queued = std::move(notify);
    }

    void hold_ended(const hold& h, errc why) {
        if (lost_waiters_.empty()) return;
        auto it = lost_waiters_.find(h.serial);
        if (it == lost_waiters_.end()) return;
        auto waiters = std::move(it->second);
        lost_waiters_.erase(it);
        for (auto& [id, w] : waiters) complete_later(strand_, std::move(w), make_error_code(why));
    }

    // Registers the caller of operation `serial`, applies a cancellation that came first, and
    // hands out whatever the session decided.
    void started(std::uint64_t serial, caller_op op, std::shared_ptr<cancel_link> link) {
        link = linked(op, std::move(link), serial);
        if (spare_callers_.empty()) {
            callers_.emplace(serial, std::move(op));
        } else {
            auto node = std::move(spare_callers_.back());
            spare_callers_.pop_back();
            node.key() = serial;
            caller_op& into = node.mapped();  // handlers by take(): never move-assigned
            take(into.done, std::move(op.done));
            take(into.done_guard, std::move(op.done_guard));
            take(into.done_multi, std::move(op.done_multi));
            take(into.done_reply, std::move(op.done_reply));
            into.diag = op.diag;
            into.on_queued = std::move(op.on_queued);
            into.link = std::move(op.link);
            callers_.insert(std::move(node));
        }
        if (ses_.state() == client_session::link::down) start_connecting();
        if (link && link->requested) ses_.cancel(serial, steady::now());
        apply();
    }

    // Ops started inside the client (on its strand) get their canceller here; public calls
    // installed theirs while initiating (install_canceller).
    std::shared_ptr<cancel_link> linked(caller_op& op, std::shared_ptr<cancel_link> link, std::uint64_t serial) {
        if (!link) {
            auto slot = op.caller_slot();
            if (!slot.is_connected()) return nullptr;
            link = std::make_shared<cancel_link>();
            slot.template emplace<canceller>(weak_from_this(), link);
        }
        link->serial = serial;
        op.link = link;
        return link;
    }

    void cancel_linked(const std::shared_ptr<cancel_link>& link) {
        if (link->serial == 0) {
            link->requested = true;
            return;
        }
        for (auto it = connects_.begin(); it != connects_.end(); ++it) {
            if (it->first != link->serial) continue;
            caller_op op(std::move(it->second));
            connects_.erase(it);
            return complete_later(strand_, std::move(op.done), make_error_code(errc::cancelled));
        }
        ses_.cancel(link->serial, steady::now());
        apply();
    }

    // A timer per request would move the reactor's earliest expiry (a timerfd_settime call) on
    // nearly every request; this one is re-armed only when a deadline comes before the armed one.
    asio::steady_timer wake_timer_{strand_, steady::time_point::max()};
    steady::time_point wake_at_ = steady::time_point::max();
    std::uint64_t wake_generation_ = 0;

    void arm_wake(steady::time_point at) {
        if (at >= wake_at_) return;
        wake_at_ = at;
        wake_timer_.expires_at(at);  // a wait armed earlier completes with operation_aborted
        wake_timer_.async_wait([weak = weak_from_this(), gen = ++wake_generation_](error_code ec) {
            auto self = weak.lock();
            if (!self || ec || gen != self->wake_generation_) return;
            self->wake_at_ = steady::time_point::max();
            self->ses_.on_time(steady::now());
            self->apply();
        });
    }

    std::unordered_map<std::uint64_t, std::shared_ptr<watch_state>> watchers_;
    std::uint64_t watch_serial_ = 0;
    // A connection has one watch set at the broker: the union of the watchers' keys, or every
    // key when one watches all or the union is over the broker's limit.
    struct watch_set {
        bool active = false;  // false: nothing watched
        bool all = false;
        bool known = true;  // false after a failed change: resent on the next one
        std::vector<std::string> keys;
        bool operator==(const watch_set&) const = default;
    };
    watch_set broker_watch_;

    watch_set wanted_watch() const {
        watch_set w;
        if (watchers_.empty()) return w;
        w.active = true;
        std::vector<std::string> keys;
        for (const auto& [serial, s] : watchers_) {
            if (s->all) {
                w.all = true;
                return w;
            }
            keys.insert(keys.end(), s->keys.begin(), s->keys.end());
        }
        std::sort(keys.begin(), keys.end());
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        if (keys.size() > ses_.limits().max_keys)
            w.all = true;
        else
            w.keys = std::move(keys);
        return w;
    }

    // Asks the broker for the watch set the watchers need, when it changed.
    asio::awaitable<error_code> sync_watch() {
        auto want = wanted_watch();
        if (want == broker_watch_) co_return error_code{};
        broker_watch_ = want;
        auto make = [&want](const std::string& uuid) {
            if (!want.active) return core::request(req::unwatch{uuid});
            return core::request(req::watch{uuid, want.all ? std::nullopt : std::optional(want.keys)});
        };
        auto [ec, rep] = co_await call<core::rep::other>(make);
        if (ec) broker_watch_.known = false;
        co_return ec;
    }

    void end_watch(watch_state& s, error_code why) {
        if (!s.ended) s.ended = why;
        if (s.receiver && s.queue.empty()) {
            s.receive_tag.reset();
            complete_later(strand_, std::move(s.receiver), why, lock_event{});
        }
    }

    void end_watchers(error_code why) {
        auto all = std::move(watchers_);
        watchers_.clear();
        broker_watch_ = {};
        for (auto& [serial, s] : all) end_watch(*s, why);
    }

    void remove_watcher(const std::shared_ptr<watch_state>& s) {
        end_watch(*s, make_error_code(errc::closed));
        if (watchers_.erase(s->serial) == 0 || state_ != state::connected) return;
        asio::co_spawn(
            strand_,
            [](std::shared_ptr<client_impl> self) -> asio::awaitable<void> {
                co_await self->sync_watch();
            }(shared_from_this()),
            asio::detached);
    }

    static std::optional<lock_event::kind> event_kind(std::string_view name) {
        using k = lock_event::kind;
        if (name == "granted") return k::granted;
        if (name == "released") return k::released;
        if (name == "expired") return k::expired;
        if (name == "forced") return k::forced;
        if (name == "queued") return k::queued;
        if (name == "cancelled") return k::cancelled;
        if (name == "timeout") return k::timeout;
        return std::nullopt;  // e.g. the connection count, not a key's event
    }

    void deliver(const core::rep::event& r) {
        const auto what = event_kind(r.name);
        if (!what) return;
        // A receiver completed inline may start or stop watchers: walk a copy.
        std::vector<std::shared_ptr<watch_state>> targets;
        for (const auto& [serial, s] : watchers_)
            if (s->all || std::binary_search(s->keys.begin(), s->keys.end(), r.key)) targets.push_back(s);
        for (auto& s : targets) {
            if (s->ended) continue;  // stopped by an earlier receiver of this event
            lock_event ev{*what, r.key, r.uuid, r.token, r.waiters, 0};
            if (s->receiver) {
                s->receive_tag.reset();
                complete(strand_, std::move(s->receiver), error_code{}, std::move(ev));
                continue;
            }
            if (s->queue.size() >= watch_queue_limit) {
                // The oldest goes; the next one says how many were dropped before it.
                const auto gone = s->queue.front().dropped + 1;
                s->queue.pop_front();
                (s->queue.empty() ? ev : s->queue.front()).dropped += gone;
            }
            s->queue.push_back(std::move(ev));
        }
    }

    void receive(const std::shared_ptr<watch_state>& s, std::shared_ptr<const char> tag,
                 asio::any_completion_handler<void(error_code, lock_event)> h) {
        if (s->receiver) return complete_later(strand_, std::move(h), make_error_code(errc::bad_request), lock_event{});
        if (!s->queue.empty()) {
            auto ev = std::move(s->queue.front());
            s->queue.pop_front();
            return complete_later(strand_, std::move(h), error_code{}, std::move(ev));
        }
        if (s->ended) return complete_later(strand_, std::move(h), s->ended, lock_event{});
        take(s->receiver, std::move(h));
        s->receive_tag = std::move(tag);
    }

    void cancel_receive(const std::shared_ptr<watch_state>& s, const std::shared_ptr<const char>& tag) {
        if (!s->receiver || !tag || s->receive_tag != tag) return;
        s->receive_tag.reset();
        complete_later(strand_, std::move(s->receiver), make_error_code(errc::cancelled), lock_event{});
    }

    void schedule_flush() {
        if (in_reader_turn_ || flush_queued_) return;
        flush_queued_ = true;
        asio::post(strand_, [self = shared_from_this()] {
            self->flush_queued_ = false;
            self->flush();
        });
    }

    void flush() {
        if (writer_) writer_->flush();
    }

    asio::awaitable<void> writer(std::shared_ptr<client_impl>, std::shared_ptr<transport::connection> /*for w*/,
                                 std::shared_ptr<transport::batched_writer> w, std::uint64_t gen) {
        const error_code ec = co_await w->run();
        if (ec) drop_connection(gen, make_error_code(errc::connection_lost));
    }

    asio::awaitable<void> reader(std::shared_ptr<client_impl>, std::shared_ptr<transport::connection> c,
                                 std::uint64_t gen) {
        std::vector<std::string_view> batch;
        for (;;) {
            batch.clear();
            auto ec = co_await c->read(batch);
            if (gen != generation_) co_return;
            last_rx_ = steady::now();
            {
                // Operations the replies complete resume here, and what they send goes out in the
                // flush below, and every `early_flush` replies before it: the broker then serves
                // those while the rest are routed, instead of the two taking turns.
                const core::scoped_value turn(in_reader_turn_, true);
                std::size_t routed = 0;
                for (auto frame : batch) {
                    route(frame);
                    if (gen != generation_) co_return;
                    if (++routed % early_flush == 0) flush();
                }
            }
            flush();
            if (!ec) continue;
            // TLS 1.3: a broker that wants a client certificate says so only after the handshake,
            // in answer to the hello.
            if (!hello_id_.empty() && transport::is_tls_error(ec)) {
                last_connect_error_ = ec;
                co_return drop_connection(gen, make_error_code(errc::tls_failed));
            }
            break;
        }
        drop_connection(gen, make_error_code(state_ == state::closed ? errc::closed : errc::connection_lost));
    }

    void route(std::string_view frame) {
        auto parsed = core::decode_reply(frame);
        if (!parsed) {
            // A broker never sends these; ignore rather than fail everyone. During the handshake
            // it means the peer is something else (an HTTP server at a ws:// port, say).
            if (!hello_id_.empty()) hello_garbage_ = true;
            return;
        }
        core::typed_reply& r = parsed.value();
        // A peer that does not know hello answers it without our id (an error, a live-mutex
        // version-mismatch): that is the handshake's answer, and a prompt "incompatible".
        if (auto& id = core::reply_uuid(r); !hello_id_.empty() && id.empty()) id = hello_id_;
        // Before the ids: an event may name our own request.
        if (const auto* ev = std::get_if<core::rep::event>(&r)) return deliver(*ev);
        // A broker that is stopping says so before it closes: nothing more will be answered on
        // this connection, so it is dropped at once and the next attempt goes to the next URL.
        if (const auto* f = std::get_if<core::rep::failed>(&r);
            f && f->uuid.empty() && hello_id_.empty() && errc_from_wire(f->code) == errc::shutting_down)
            return drop_connection(generation_, make_error_code(errc::shutting_down));
        ses_.on_reply(std::move(r), steady::now());
        apply();
    }

    void start_connecting() {
        if (state_ != state::disconnected) return;
        // The attempt runs as its own coroutine: cancelling an operation that waits for it must
        // not abort the connect for the others. Each attempt gets its own signal, kept alive by
        // the attempt's completion handler.
        state_ = state::connecting;
        notify_state(connection_state::connecting, {});
        stop_connect_ = std::make_shared<asio::cancellation_signal>();
        asio::co_spawn(
            strand_, connector(shared_from_this()),
            asio::bind_cancellation_slot(stop_connect_->slot(), [stop = stop_connect_](std::exception_ptr e) {
                // Thrown by a completion handler run from the attempt: it belongs to
                // whoever runs the io_context, like the reader's.
                if (e) std::rethrow_exception(e);
            }));
    }

    asio::awaitable<void> connector(std::shared_ptr<client_impl>) {
        auto ec = co_await do_connect();
        if (state_ == state::connecting) {
            state_ = ec ? state::disconnected : state::connected;
            notify_state(ec ? connection_state::disconnected : connection_state::connected, ec);
            if (!ec) start_health(generation_);
        }
        connect_done(ec);
    }

    std::atomic<connection_state> public_state_{connection_state::disconnected};
    void notify_state(connection_state st, error_code ec) {
        public_state_ = st;
        if (opt_.on_state) opt_.on_state(st, ec);
    }

    // The attempt has ended: operations waiting for it are sent, or fail with its error.
    void connect_done(error_code ec) {
        if (state_ == state::connected)
            ses_.on_handshake_done(steady::now());
        else
            ses_.on_connect_failed(ec, steady::now());
        auto waiting = std::move(connects_);
        connects_.clear();
        const error_code outcome = state_ == state::connected       ? error_code{}
                                   : state_ == state::closed || !ec ? make_error_code(errc::closed)
                                                                    : ec;
        for (auto& [serial, op] : waiting) complete_later(strand_, std::move(op.done), outcome);
        apply();
    }

    // The brokers to try: `urls`, or the comma-separated list in `url`.
    static std::vector<std::string> broker_urls(const client_options& o) {
        if (!o.urls.empty()) return o.urls;
        std::vector<std::string> out;
        std::string_view rest = o.url;
        for (;;) {
            const auto comma = rest.find(',');
            std::string_view one = rest.substr(0, comma);
            while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
            while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
            if (!one.empty() || out.empty()) out.emplace_back(one);
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
        return out;
    }

    asio::awaitable<error_code> do_connect() {
        std::vector<transport::endpoint> eps;
        for (auto& u : urls_) {
            std::string why;
            auto ep = transport::parse_endpoint(u, &why);
            if (!ep) co_return make_error_code(errc::invalid_url);
            eps.push_back(std::move(*ep));
        }
        if (failures_ > 0) {
            // Back off between attempts after failures: 50 ms doubling up to 2 s.
            asio::steady_timer t(strand_, std::min<steady::duration>(50ms * (1u << std::min(failures_ - 1, 6u)), 2s));
            co_await t.async_wait(use_tuple);
            if (state_ == state::closed) co_return make_error_code(errc::closed);
        }
        // Each broker in turn, from the one in use; the first that answers is kept.
        error_code last;
        const unsigned failed_before = failures_;
        for (std::size_t tried = 0; tried < eps.size(); ++tried) {
            const std::size_t at = (url_at_ + tried) % eps.size();
            last = co_await connect_to(eps[at]);
            if (!last) {
                url_at_ = at;
                co_return last;
            }
            if (state_ == state::closed || last == errc::closed) co_return last;
        }
        failures_ = failed_before + 1;
        co_return last;
    }

    // One connect and hello at `ep`.
    asio::awaitable<error_code> connect_to(const transport::endpoint& ep) {
        auto [ec, c] = co_await transport::connect(
            strand_, ep,
            {.timeout = opt_.connect_timeout,
             .no_delay = opt_.no_delay,
             .max_message_size = opt_.max_message_size,
             .tls = {.ca_file = opt_.tls_ca_file, .cert_file = opt_.tls_cert_file, .key_file = opt_.tls_key_file}});
        if (state_ == state::closed) co_return make_error_code(errc::closed);
        last_connect_error_ = ec;
        if (ec || !c) {
            ++failures_;
            if (transport::is_tls_error(ec)) co_return make_error_code(errc::tls_failed);
            if (ec == transport::error::origin_refused) co_return make_error_code(errc::origin_refused);
            if (ec == transport::error::upgrade_declined) co_return make_error_code(errc::wrong_endpoint);
            if (ec == asio::error::connection_refused || ec == boost::system::errc::no_such_file_or_directory)
                co_return make_error_code(errc::refused);
            if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
                ec == asio::error::no_data)
                co_return make_error_code(errc::name_not_resolved);
            co_return make_error_code(errc::unreachable);
        }
        conn_ = std::shared_ptr<transport::connection>(std::move(c));
        ++generation_;
        ses_.on_transport_up();
        writer_ = std::make_shared<transport::batched_writer>(*conn_, ses_.outbox());
        auto self = shared_from_this();
        const auto gen = generation_;
        asio::co_spawn(strand_, reader(self, conn_, gen), [self, gen](std::exception_ptr e) {
            if (!e) return;
            // Thrown by a completion handler run from the reader: the connection cannot go on,
            // and the exception belongs to whoever runs the io_context.
            self->drop_connection(gen, make_error_code(errc::connection_lost));
            std::rethrow_exception(e);
        });
        asio::co_spawn(strand_, writer(self, conn_, writer_, gen), [self, gen](std::exception_ptr e) {
            if (!e) return;
            self->drop_connection(gen, make_error_code(errc::connection_lost));
            std::rethrow_exception(e);
        });

        // The hello handshake tells an lmx broker from anything else, and carries the token.
        std::string token = opt_.token;
        if (token.empty() && !opt_.token_file.empty()) {
            token = read_token_file(opt_.token_file);
            if (token.empty()) {
                ++failures_;
                drop_connection(gen, make_error_code(errc::unauthenticated));
                co_return make_error_code(errc::unauthenticated);
            }
        }
        hello_garbage_ = false;
        auto init = [this, &token](auto handler) {
            auto o = ses_.open_request(kind::call, opt_.connect_timeout);
            o->raw = true;
            hello_id_ = o->uuid;
            const core::request rq =
                req::hello{o->uuid, "lmx-cpp/" LMX_VERSION_STRING, LMX_PROTOCOL_VERSION, std::move(token)};
            caller_op op;
            take(op.done_reply, std::move(handler));
            started(ses_.submit(std::move(o), rq, steady::now(), true), std::move(op), nullptr);
        };
        auto [hello_ec, answer] =
            co_await asio::async_initiate<decltype(use_tuple), void(error_code, core::typed_reply)>(init, use_tuple);
        hello_id_.clear();
        const auto* rep = std::get_if<core::rep::hello>(&answer);
        if (!hello_ec && rep && rep->protocol == LMX_PROTOCOL_VERSION) {
            failures_ = 0;
            session_ = rep->session;
            ses_.set_limits(rep->limits.value_or(core::codec_limits{}));
            // Another epoch is another broker run: holds kept across the reconnect are gone.
            if (!epoch_.empty() && rep->epoch != epoch_) ses_.lose_kept_holds();
            epoch_ = rep->epoch;
            apply();
            co_return error_code{};
        }
        // No answer in time, or a wrong one: not an lmx broker (of this protocol).
        error_code bad = make_error_code(errc::broker_incompatible);
        if (hello_ec && hello_ec != errc::timeout) bad = hello_ec;
        // The peer answered something that is not lmx's protocol (an HTTP server, say).
        if (hello_garbage_) bad = make_error_code(errc::wrong_endpoint);
        // A broker that requires a token and got none, or a wrong one.
        const auto* refusal = std::get_if<core::rep::failed>(&answer);
        const bool refused_token = !hello_ec && refusal && refusal->code == "unauthenticated";
        if (refused_token) bad = make_error_code(errc::unauthenticated);
        // A broker that began to stop before it served the hello: another attempt may find it
        // (or the next URL's) serving.
        const bool stopping = !hello_ec && refusal && errc_from_wire(refusal->code) == errc::shutting_down;
        if (stopping) bad = make_error_code(errc::shutting_down);
        if (hello_ec || refused_token || stopping) ++failures_;
        drop_connection(gen, bad);
        co_return bad;
    }

    // Ends connection `gen`: pending operations fail, holds not kept on exit become lost.
    void drop_connection(std::uint64_t gen, error_code why) {
        if (gen != generation_ || !conn_) return;
        const bool was_connected = state_ == state::connected;
        // The broker in use is gone: the next connect starts with the next one.
        if (was_connected && !urls_.empty()) url_at_ = (url_at_ + 1) % urls_.size();
        ++generation_;
        conn_->close();
        conn_.reset();
        if (writer_) writer_->abandon();
        writer_.reset();
        // While connecting, the connector decides the state once its attempt has ended; moving
        // it here would let a second attempt start beside the first.
        if (state_ == state::connected) state_ = state::disconnected;
        ses_.on_disconnect(why, steady::now());
        end_watchers(state_ == state::closed ? make_error_code(errc::closed) : make_error_code(errc::connection_lost));
        if (was_connected && state_ != state::closed) notify_state(connection_state::disconnected, why);
        apply();
    }

    // An idle connection is pinged every health_interval; one that leaves a ping unanswered for
    // that long (nothing came for at most twice the interval) is dropped as half-open, so its
    // holds are reported lost instead of trusted.
    asio::steady_timer health_timer_{strand_, steady::time_point::max()};
    std::uint64_t health_generation_ = 0;
    steady::time_point last_rx_{};
    steady::time_point ping_sent_{};  // the last ping; answered when last_rx_ is later

    void start_health(std::uint64_t gen) {
        if (opt_.health_interval.count() <= 0) return;
        last_rx_ = steady::now();
        ping_sent_ = {};
        arm_health(gen);
    }

    void arm_health(std::uint64_t gen) {
        health_timer_.expires_after(opt_.health_interval);
        health_timer_.async_wait([weak = weak_from_this(), gen, hg = ++health_generation_](error_code ec) {
            auto self = weak.lock();
            if (self && !ec && hg == self->health_generation_) self->check_health(gen);
        });
    }

    void check_health(std::uint64_t gen) {
        if (gen != generation_ || state_ != state::connected) return;
        const auto now = steady::now();
        const bool waiting_for_pong = ping_sent_ > last_rx_;
        if (waiting_for_pong && now - ping_sent_ >= opt_.health_interval) {
            drop_connection(gen, make_error_code(errc::connection_lost));
            if (ses_.has_holds()) start_connecting();  // kept holds are renewed over a new connection
            return;
        }
        // Half an interval of silence is enough for a ping: the pong of the last one comes back
        // just after a check, so the next check finds a little under a whole interval, and
        // waiting for a whole one would skip a ping, then drop a connection that answers.
        if (!waiting_for_pong && now - last_rx_ >= opt_.health_interval / 2) {
            ses_.send_oneway(req::ping{ses_.next_id(), std::nullopt});
            ping_sent_ = now;
            apply();
        }
        arm_health(gen);
    }

    void wait_lost(const std::shared_ptr<hold>& h, std::uint64_t id,
                   asio::any_completion_handler<void(error_code)> done) {
        if (const int why = h->ended.load())
            return complete_later(strand_, std::move(done), make_error_code(static_cast<errc>(why)));
        lost_waiters_[h->serial].emplace_back(id, std::move(done));
    }

    void cancel_wait_lost(const std::shared_ptr<hold>& h, std::uint64_t id) {
        auto list = lost_waiters_.find(h->serial);
        if (list == lost_waiters_.end()) return;
        for (auto it = list->second.begin(); it != list->second.end(); ++it) {
            if (it->first != id) continue;
            auto done = std::move(it->second);
            list->second.erase(it);
            if (list->second.empty()) lost_waiters_.erase(list);
            return complete_later(strand_, std::move(done), make_error_code(errc::cancelled));
        }
    }

    // The destructor path of a guard: synchronous, on the strand.
    void drop_hold(const std::shared_ptr<hold>& h) {
        ses_.drop_hold(h);
        apply();
    }

    void end_hold(const std::shared_ptr<hold>& h, errc why) {
        ses_.end_hold(h, why);
        apply();
    }

    // Fails `h` before anything is sent, with the reason in the diagnostics.
    template <class Sig, class... Args>
    void refuse(asio::any_completion_handler<Sig> h, diagnostics* diag, std::string why, Args&&... empty) {
        if (diag) diag->message = std::move(why);
        complete_later(strand_, std::move(h), make_error_code(errc::bad_request), std::forward<Args>(empty)...);
    }

    std::chrono::milliseconds wait_budget(const acquire_options& o) const {
        if (o.timeout) return *o.timeout;
        unsigned tries = std::max(1u, o.max_retries.value_or(opt_.max_retries));
        return opt_.lock_request_timeout * tries;
    }

    // The local deadline of a waiting acquire: its budget plus request_timeout (it only guards
    // against a broker that never answers); none when it may wait forever.
    std::chrono::milliseconds local_budget(std::chrono::milliseconds budget) const {
        if (budget == wait_forever) return std::chrono::milliseconds::max();
        return budget + opt_.request_timeout;
    }

    // An acquire's record, from its options (after they were checked).
    request_ptr open_acquire(kind k, acquire_options& o, std::chrono::milliseconds budget) {
        if (o.timeout && o.timeout->count() == 0) o.wait = false;  // a timeout of 0: do not wait
        auto r = ses_.open_request(k, local_budget(budget));
        r->keep = o.keep_locks_on_exit.value_or(opt_.keep_locks_on_exit);
        r->notify_queued = static_cast<bool>(o.on_queued);
        r->ttl = o.ttl.value_or(opt_.ttl);
        r->renew = o.auto_renew.value_or(!o.ttl.has_value()) && r->ttl != no_expiry;
        return r;
    }

    static caller_op acquire_caller(acquire_options& o) {
        caller_op op;
        op.diag = o.diag;
        op.on_queued = std::move(o.on_queued);
        return op;
    }

    // The broker withdraws a waiting request at `budget`; the local deadline (budget plus
    // request_timeout) only guards against a broker that never answers. On cancellation or
    // timeout the request is withdrawn and a grant that crosses the withdrawal is given back.
    void acquire(std::string key, acquire_options o, asio::any_completion_handler<void(error_code, lock_guard)> h,
                 std::shared_ptr<cancel_link> link = nullptr) {
        if (auto why = ses_.invalid_key(key); !why.empty()) return refuse(std::move(h), o.diag, why, lock_guard{});
        if (auto why = ses_.invalid_options(o); !why.empty()) return refuse(std::move(h), o.diag, why, lock_guard{});
        const auto budget = wait_budget(o);
        auto r = open_acquire(kind::grant, o, budget);
        const core::request rq =
            req::lock{.uuid = r->uuid,
                      .key = key,
                      .ttl = r->ttl,
                      .max = o.max,
                      .wait = o.wait,
                      .timeout = o.wait && budget != wait_forever ? std::optional(budget) : std::nullopt,
                      .mode = o.shared ? core::lock_mode::shared : core::lock_mode::exclusive,
                      .keep_on_exit = r->keep,
                      .force = false,
                      // Nobody listens for the place in line: no notice.
                      .queued_notice = r->notify_queued};
        r->key = std::move(key);
        auto op = acquire_caller(o);
        take(op.done_guard, std::move(h));
        started(ses_.submit(std::move(r), rq, steady::now()), std::move(op), std::move(link));
    }

    void acquire_many(std::vector<std::string> keys, acquire_options o,
                      asio::any_completion_handler<void(error_code, multi_lock_guard)> h,
                      std::shared_ptr<cancel_link> link = nullptr) {
        if (keys.empty()) return refuse(std::move(h), o.diag, "no keys to acquire", multi_lock_guard{});
        if (keys.size() > ses_.limits().max_keys)
            return refuse(std::move(h), o.diag,
                          std::to_string(keys.size()) + " keys, over the broker's limit of " +
                              std::to_string(ses_.limits().max_keys),
                          multi_lock_guard{});
        for (const auto& k : keys)
            if (auto why = ses_.invalid_key(k); !why.empty())
                return refuse(std::move(h), o.diag, why, multi_lock_guard{});
        if (auto why = ses_.invalid_options(o); !why.empty())
            return refuse(std::move(h), o.diag, why, multi_lock_guard{});
        const auto budget = wait_budget(o);
        auto r = open_acquire(kind::grant_many, o, budget);
        const core::request rq =
            req::acquire_many{.uuid = r->uuid,
                              .keys = std::move(keys),
                              .ttl = r->ttl,
                              .wait = o.wait,
                              .timeout = o.wait && budget != wait_forever ? std::optional(budget) : std::nullopt,
                              .keep_on_exit = r->keep};
        auto op = acquire_caller(o);
        take(op.done_multi, std::move(h));
        started(ses_.submit(std::move(r), rq, steady::now()), std::move(op), std::move(link));
    }

    void release(std::string key, std::string id, bool force, asio::any_completion_handler<void(error_code)> h,
                 std::shared_ptr<cancel_link> link = nullptr) {
        if (auto why = ses_.invalid_key(key); !why.empty()) return refuse(std::move(h), nullptr, why);
        auto r = ses_.open_request(kind::unlock, opt_.request_timeout);
        if (!force) r->key = key;  // a release by id: "held nothing" is the caller's error
        std::optional<std::string> lock_id;
        if (!id.empty()) lock_id = std::move(id);
        const core::request rq = req::unlock{r->uuid, std::move(key), std::move(lock_id), force};
        caller_op op;
        take(op.done, std::move(h));
        started(ses_.submit(std::move(r), rq, steady::now()), std::move(op), std::move(link));
    }

    // The hold was claimed (released = true) by the initiating call.
    void release_hold(std::shared_ptr<hold> h, asio::any_completion_handler<void(error_code)> done,
                      std::shared_ptr<cancel_link> link = nullptr) {
        caller_op op;
        take(op.done, std::move(done));
        started(ses_.release_hold(std::move(h), opt_.request_timeout, steady::now()), std::move(op), std::move(link));
    }

    void extend_hold(std::shared_ptr<hold> h, std::chrono::milliseconds ttl,
                     asio::any_completion_handler<void(error_code)> done, std::shared_ptr<cancel_link> link = nullptr) {
        caller_op op;
        take(op.done, std::move(done));
        started(ses_.extend_hold(std::move(h), ttl, opt_.request_timeout, steady::now()), std::move(op),
                std::move(link));
    }

    void connect(asio::any_completion_handler<void(error_code)> done, std::shared_ptr<cancel_link> link = nullptr) {
        caller_op op;
        take(op.done, std::move(done));
        if (state_ == state::closed) return complete_later(strand_, std::move(op.done), make_error_code(errc::closed));
        if (state_ == state::connected) return complete_later(strand_, std::move(op.done), error_code{});
        const auto serial = ses_.new_serial();
        link = linked(op, std::move(link), serial);
        if (link && link->requested)
            return complete_later(strand_, std::move(op.done), make_error_code(errc::cancelled));
        connects_.emplace_back(serial, std::move(op));
        start_connecting();
    }

    template <class R>
    using result = std::pair<error_code, R>;

    // `op` is a coroutine of this object; the completion handler owns a reference so that the
    // object outlives it even when the client is destroyed while the operation runs.
    //
    // The caller's cancellation slot is not handed to co_spawn: co_spawn's handler in that slot
    // defers its emit through the executor while the slot's storage belongs to the caller, who
    // may free it (by completing or reusing the slot) before the deferred emit runs. Instead the
    // caller's slot gets a relay that carries a cancellation onto the strand, where it is emitted
    // on a signal owned here, and only while the operation still runs.
    struct launch_cancel {
        asio::cancellation_signal signal;
        bool finished = false;
    };
    struct launch_relay {
        std::weak_ptr<launch_cancel> state;
        strand_type strand;
        void operator()(asio::cancellation_type type) const {
            asio::post(strand, [st = state, type] {
                if (auto s = st.lock(); s && !s->finished) s->signal.emit(type);
            });
        }
    };

    template <class R, class Sig>
    void launch(asio::awaitable<result<R>> op, asio::any_completion_handler<Sig> h) {
        auto cancel = std::make_shared<launch_cancel>();
        if (auto slot = h.get_cancellation_slot(); slot.is_connected())
            slot.template emplace<launch_relay>(std::weak_ptr<launch_cancel>(cancel), strand_);
        asio::any_io_executor fallback = strand_;
        auto inner = cancel->signal.slot();
        asio::co_spawn(
            strand_, std::move(op),
            asio::bind_cancellation_slot(inner, [h = std::move(h), fallback, cancel, self = shared_from_this()](
                                                    std::exception_ptr ep, result<R> r) mutable {
                cancel->finished = true;
                if (ep) r.first = make_error_code(errc::connection_lost);
                if constexpr (std::is_same_v<R, std::monostate>)
                    complete(fallback, std::move(h), r.first);
                else
                    complete(fallback, std::move(h), r.first, std::move(r.second));
            }));
    }

    asio::awaitable<error_code> ensure_connected() {
        if (state_ == state::connected) co_return error_code{};
        auto init = [this](auto handler) { connect(std::move(handler)); };
        auto [ec] = co_await asio::async_initiate<decltype(use_tuple), void(error_code)>(init, use_tuple);
        co_return ec;
    }

    // Sends the request make(uuid) and waits for its reply, of type Reply; wire errors become the
    // error code, and so does an answer of another type (broker_incompatible).
    template <class Reply, class MakeRequest>
    asio::awaitable<result<Reply>> call(MakeRequest make) {
        auto init = [this, &make](auto handler) {
            auto r = ses_.open_request(kind::call, opt_.request_timeout);
            const core::request rq = make(r->uuid);
            caller_op op;
            take(op.done_reply, std::move(handler));
            started(ses_.submit(std::move(r), rq, steady::now()), std::move(op), nullptr);
        };
        auto [ec, answer] =
            co_await asio::async_initiate<decltype(use_tuple), void(error_code, core::typed_reply)>(init, use_tuple);
        if (auto* rep = std::get_if<Reply>(&answer)) co_return result<Reply>{ec, std::move(*rep)};
        if (!ec) ec = make_error_code(errc::broker_incompatible);
        co_return result<Reply>{ec, Reply{}};
    }

    void close() {
        if (state_ == state::closed) return;
        open_->store(false);
        flush();  // what is queued (the unlock of a guard just dropped) still goes out if it fits
        state_ = state::closed;
        public_state_ = connection_state::closed;
        ses_.close(steady::now());
        ++wake_generation_;
        wake_at_ = steady::time_point::max();
        wake_timer_.cancel();
        ++health_generation_;
        health_timer_.cancel();
        if (opt_.on_state) opt_.on_state(connection_state::closed, make_error_code(errc::closed));
        drop_connection(generation_, make_error_code(errc::closed));
        auto waiting = std::move(connects_);
        connects_.clear();
        for (auto& [serial, op] : waiting) complete_later(strand_, std::move(op.done), make_error_code(errc::closed));
        if (stop_connect_) stop_connect_->emit(asio::cancellation_type::terminal);
        apply();
    }
};

void canceller::operator()(asio::cancellation_type type) {
    // Terminal cancellation only, as for any coroutine: a partial or total cancellation must not
    // leave an effect behind, and a sent unlock or extend may already have had its effect.
    if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none) return;
    auto c = client.lock();
    if (!c) return;
    // Queued, never inline: this runs on the caller's thread, the op lives on the strand.
    asio::post(c->strand_, [c, link = link] { c->cancel_linked(link); });
}

}  // namespace detail

using detail::client_impl;
using detail::hold;

namespace {
void queue_drop(const std::shared_ptr<hold>& h) noexcept {
    if (!h || h->lost || h->released.exchange(true)) return;
    try {
        if (auto owner = h->owner.lock()) asio::dispatch(owner->strand_, [owner, h] { owner->drop_hold(h); });
    } catch (...) {
        // Out of memory while queueing: the lease ends the hold instead.
    }
}
}  // namespace

lock_guard& lock_guard::operator=(lock_guard&& other) noexcept {
    if (this != &other) {
        queue_drop(hold_);
        hold_ = std::move(other.hold_);
    }
    return *this;
}
lock_guard::~lock_guard() { queue_drop(hold_); }

namespace {
const std::string empty_string;
}  // namespace

const std::string& lock_guard::key() const noexcept { return hold_ ? hold_->key : empty_string; }
const std::string& lock_guard::id() const noexcept { return hold_ ? hold_->id : empty_string; }
fencing_token lock_guard::fencing_token() const noexcept { return hold_ ? hold_->token : 0; }
namespace {
bool lease_ran_out(const hold& h) noexcept {
    const auto e = h.expires.load();
    return e != detail::no_deadline && steady::now().time_since_epoch().count() >= e;
}
std::optional<steady::time_point> expiry_of(const std::shared_ptr<hold>& h) noexcept {
    if (!h) return std::nullopt;
    const auto e = h->expires.load();
    if (e == detail::no_deadline) return std::nullopt;
    return steady::time_point(steady::duration(e));
}
}  // namespace

bool lock_guard::owns_lock() const noexcept { return hold_ && hold_->holds_now(); }
bool lock_guard::lost() const noexcept {
    return hold_ && (hold_->lost || (!hold_->released && (lease_ran_out(*hold_) || !hold_->client_open->load())));
}
std::optional<std::chrono::steady_clock::time_point> lock_guard::expires_at() const noexcept {
    return expiry_of(hold_);
}
void lock_guard::detach() noexcept { detach_hold(hold_); }

void lock_guard::detach_hold(std::shared_ptr<hold>& h) noexcept {
    if (!h) return;
    h->released = true;
    try {
        // Untracked from now on: no renewal, and whoever waits for its end hears "released".
        if (auto owner = h->owner.lock())
            asio::post(owner->strand_, [owner, h] { owner->end_hold(h, errc::released); });
    } catch (...) {}
    h.reset();
}

namespace {
// Runs op(client, handler) on the hold's client strand, or fails with `early` (or `closed` when
// the client is gone) through a post, so that even an early failure never completes inside the
// initiating call.
template <class Op>
void run_on_owner(const std::shared_ptr<hold>& h, error_code early,
                  asio::any_completion_handler<void(error_code)> handler, Op op) {
    std::shared_ptr<client_impl> owner = h && !early ? h->owner.lock() : nullptr;
    if (!owner) {
        if (!early) early = make_error_code(errc::closed);
        return detail::complete_orphan(std::move(handler), early);
    }
    auto link = detail::install_canceller(owner, handler);
    asio::dispatch(owner->strand_, [owner, op, handler = std::move(handler), link]() mutable {
        op(*owner, std::move(handler), std::move(link));
    });
}
}  // namespace

void lock_guard::start_release(std::shared_ptr<hold> h, asio::any_completion_handler<void(error_code)> handler) {
    // Claimed here, in the initiating call, so that a guard destroyed right after starting its
    // release does not queue a second unlock, and a second release fails at once.
    error_code early;
    if (!h)
        early = make_error_code(errc::not_holder);
    else if (h->lost)
        early = make_error_code(errc::lock_lost);
    else if (h->released.exchange(true))
        early = make_error_code(errc::not_holder);
    run_on_owner(h, early, std::move(handler),
                 [h](client_impl& c, auto done, auto link) { c.release_hold(h, std::move(done), std::move(link)); });
}

void lock_guard::start_extend(std::shared_ptr<hold> h, std::chrono::milliseconds ttl,
                              asio::any_completion_handler<void(error_code)> handler) {
    error_code early;
    if (!h) early = make_error_code(errc::not_holder);
    run_on_owner(h, early, std::move(handler), [h, ttl](client_impl& c, auto done, auto link) {
        c.extend_hold(h, ttl, std::move(done), std::move(link));
    });
}

namespace {
// Withdraws one async_wait_lost on the client's strand.
struct wait_canceller {
    std::weak_ptr<client_impl> client;
    std::weak_ptr<hold> h;
    std::uint64_t id;
    void operator()(asio::cancellation_type type) {
        if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none) return;
        auto c = client.lock();
        auto held = h.lock();
        if (c && held) asio::post(c->strand_, [c, held, id = id] { c->cancel_wait_lost(held, id); });
    }
};
}  // namespace

void lock_guard::start_wait_lost(std::shared_ptr<hold> h, asio::any_completion_handler<void(error_code)> handler) {
    std::shared_ptr<client_impl> owner = h ? h->owner.lock() : nullptr;
    if (!owner) {
        error_code why = make_error_code(errc::not_holder);
        if (h) why = make_error_code(h->ended.load() ? static_cast<errc>(h->ended.load()) : errc::closed);
        return detail::complete_orphan(std::move(handler), why);
    }
    const std::uint64_t id = detail::next_waiter++;
    if (auto slot = asio::get_associated_cancellation_slot(handler); slot.is_connected())
        slot.template emplace<wait_canceller>(owner, h, id);
    asio::dispatch(owner->strand_, [owner, h, id, handler = std::move(handler)]() mutable {
        owner->wait_lost(h, id, std::move(handler));
    });
}

multi_lock_guard& multi_lock_guard::operator=(multi_lock_guard&& other) noexcept {
    if (this != &other) {
        queue_drop(hold_);
        hold_ = std::move(other.hold_);
    }
    return *this;
}
multi_lock_guard::~multi_lock_guard() { queue_drop(hold_); }

const std::string& multi_lock_guard::id() const noexcept { return hold_ ? hold_->id : empty_string; }
const std::vector<std::string>& multi_lock_guard::keys() const noexcept {
    static const std::vector<std::string> none;
    return hold_ ? hold_->keys : none;
}
fencing_token multi_lock_guard::fencing_token(std::string_view key) const noexcept {
    if (!hold_) return 0;
    for (auto& [k, t] : hold_->tokens)
        if (k == key) return t;
    return 0;
}
bool multi_lock_guard::owns_lock() const noexcept { return hold_ && hold_->holds_now(); }
bool multi_lock_guard::lost() const noexcept {
    return hold_ && (hold_->lost || (!hold_->released && (lease_ran_out(*hold_) || !hold_->client_open->load())));
}
std::optional<std::chrono::steady_clock::time_point> multi_lock_guard::expires_at() const noexcept {
    return expiry_of(hold_);
}

client::client(executor_type ex, client_options options)
    : impl_(std::make_shared<client_impl>(std::move(ex), std::move(options))) {
    impl_->ses_.set_owner(impl_);
}

// close() runs on the strand: at once when called there, queued otherwise, in order with the
// operations and guard drops started before it. The impl lives on in the reader and writer
// until they finish.
client::~client() {
    // Guards read this at once; the rest of closing runs on the strand.
    impl_->open_->store(false);
    try {
        asio::dispatch(impl_->strand_, [impl = impl_] { impl->close(); });
    } catch (...) {}
}

client::executor_type client::get_executor() const noexcept { return impl_->strand_; }
const client_options& client::options() const noexcept { return impl_->opt_; }
connection_state client::state() const noexcept { return impl_->public_state_.load(); }

void client::close() {
    impl_->open_->store(false);
    asio::dispatch(impl_->strand_, [impl = impl_] { impl->close(); });
}

// The lock operations start on the client's strand: inline when the caller already runs there
// (as a coroutine resumed by a reply does), queued otherwise. They never complete inline.
void client::start_connect(asio::any_completion_handler<void(error_code)> h) {
    auto link = detail::install_canceller(impl_, h);
    asio::dispatch(impl_->strand_,
                   [impl = impl_, h = std::move(h), link]() mutable { impl->connect(std::move(h), std::move(link)); });
}

void client::start_acquire(std::string key, acquire_options o,
                           asio::any_completion_handler<void(error_code, lock_guard)> h) {
    auto link = detail::install_canceller(impl_, h);
    asio::dispatch(impl_->strand_,
                   [impl = impl_, key = std::move(key), o = std::move(o), h = std::move(h), link]() mutable {
                       impl->acquire(std::move(key), std::move(o), std::move(h), std::move(link));
                   });
}

void client::start_acquire_many(std::vector<std::string> keys, acquire_options o,
                                asio::any_completion_handler<void(error_code, multi_lock_guard)> h) {
    auto link = detail::install_canceller(impl_, h);
    asio::dispatch(impl_->strand_,
                   [impl = impl_, keys = std::move(keys), o = std::move(o), h = std::move(h), link]() mutable {
                       impl->acquire_many(std::move(keys), std::move(o), std::move(h), std::move(link));
                   });
}

void client::start_release(std::string key, std::string id, bool force,
                           asio::any_completion_handler<void(error_code)> h) {
    auto link = detail::install_canceller(impl_, h);
    asio::dispatch(impl_->strand_,
                   [impl = impl_, key = std::move(key), id = std::move(id), force, h = std::move(h), link]() mutable {
                       impl->release(std::move(key), std::move(id), force, std::move(h), std::move(link));
                   });
}

void client::start_ls(asio::any_completion_handler<void(error_code, std::vector<std::string>)> h) {
    auto impl = impl_;
    impl->launch<std::vector<std::string>>(
        [](std::shared_ptr<client_impl> c) -> asio::awaitable<client_impl::result<std::vector<std::string>>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            // The broker answers in pages; each page is its own request, so other clients are
            // served between them.
            std::vector<std::string> keys;
            std::optional<std::uint64_t> cursor;
            do {
                auto make = [&cursor](const std::string& uuid) {
                    return core::request(req::ls{uuid, cursor, std::nullopt});
                };
                auto [ec, rep] = co_await c->call<core::rep::keys_page>(make);
                if (ec) co_return client_impl::result<std::vector<std::string>>{ec, {}};
                if (keys.empty())
                    keys = std::move(rep.keys);
                else
                    keys.insert(keys.end(), std::make_move_iterator(rep.keys.begin()),
                                std::make_move_iterator(rep.keys.end()));
                cursor = rep.cursor;
            } while (cursor);
            co_return client_impl::result<std::vector<std::string>>{error_code{}, std::move(keys)};
        }(impl),
        std::move(h));
}

void client::start_info(std::string key, asio::any_completion_handler<void(error_code, lock_info)> h) {
    auto impl = impl_;
    impl->launch<lock_info>(
        [](std::shared_ptr<client_impl> c, std::string k) -> asio::awaitable<client_impl::result<lock_info>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            auto make = [&k](const std::string& uuid) { return core::request(req::lock_info{uuid, k}); };
            auto [ec, rep] = co_await c->call<core::rep::key_state>(make);
            lock_info info;
            info.key = k;
            info.locked = rep.locked;
            info.holders = std::move(rep.holders);
            info.waiters = rep.waiters;
            info.max = rep.max;
            info.last_token = rep.last_token;
            co_return client_impl::result<lock_info>{ec, std::move(info)};
        }(impl, std::move(key)),
        std::move(h));
}

void client::start_ping(asio::any_completion_handler<void(error_code, std::chrono::microseconds)> h) {
    auto impl = impl_;
    impl->launch<std::chrono::microseconds>(
        [](std::shared_ptr<client_impl> c) -> asio::awaitable<client_impl::result<std::chrono::microseconds>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            // The round trip is timed once connected, so that it never includes the connect.
            if (auto ec = co_await c->ensure_connected())
                co_return client_impl::result<std::chrono::microseconds>{ec, {}};
            auto t0 = steady::now();
            auto make = [](const std::string& uuid) { return core::request(req::ping{uuid, std::nullopt}); };
            auto [ec, rep] = co_await c->call<core::rep::pong>(make);
            auto rtt = std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0);
            co_return client_impl::result<std::chrono::microseconds>{ec, rtt};
        }(impl),
        std::move(h));
}

void client::start_stats(asio::any_completion_handler<void(error_code, boost::json::object)> h) {
    auto impl = impl_;
    impl->launch<boost::json::object>(
        [](std::shared_ptr<client_impl> c) -> asio::awaitable<client_impl::result<boost::json::object>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            auto make = [](const std::string& uuid) { return core::request(req::system_stats{uuid}); };
            auto [ec, rep] = co_await c->call<core::rep::stats>(make);
            co_return client_impl::result<boost::json::object>{ec, std::move(rep.figures)};
        }(impl),
        std::move(h));
}

error_code client::last_connect_error() const { return impl_->last_connect_error_; }

void client::start_pin(std::string prefix, std::optional<std::uint32_t> max,
                       asio::any_completion_handler<void(error_code)> h) {
    auto impl = impl_;
    impl->launch<std::monostate>(
        [](std::shared_ptr<client_impl> c, std::string p,
           std::optional<std::uint32_t> m) -> asio::awaitable<client_impl::result<std::monostate>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            auto make = [&p, m](const std::string& uuid) { return core::request(req::pin{uuid, p, m}); };
            auto [ec, rep] = co_await c->call<core::rep::other>(make);
            co_return client_impl::result<std::monostate>{ec, {}};
        }(impl, std::move(prefix), max),
        std::move(h));
}

namespace {
// Installed in a receive's cancellation slot: withdraws that receive, on the client's strand.
struct receive_canceller {
    std::weak_ptr<client_impl> client;
    std::weak_ptr<detail::watch_state> state;
    std::weak_ptr<const char> tag;
    void operator()(asio::cancellation_type type) const {
        if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none) return;
        auto c = client.lock();
        if (!c) return;
        asio::post(c->strand_, [c, st = state, tg = tag] {
            if (auto s = st.lock()) c->cancel_receive(s, tg.lock());
        });
    }
};
}  // namespace

void watcher::start_receive(std::shared_ptr<detail::watch_state> s,
                            asio::any_completion_handler<void(error_code, lock_event)> h) {
    // The owner is read on the caller's thread: set once at creation, never changed.
    auto owner = s ? s->owner.lock() : nullptr;
    if (!owner) return detail::complete_orphan(std::move(h), make_error_code(errc::closed), lock_event{});
    auto tag = std::make_shared<const char>('\0');
    if (auto slot = h.get_cancellation_slot(); slot.is_connected())
        slot.template emplace<receive_canceller>(owner, s, tag);
    asio::dispatch(owner->strand_, [owner, s = std::move(s), tag = std::move(tag), h = std::move(h)]() mutable {
        owner->receive(s, std::move(tag), std::move(h));
    });
}

void watcher::stop() noexcept {
    auto s = std::move(state_);
    if (!s) return;
    try {
        if (auto owner = s->owner.lock()) asio::dispatch(owner->strand_, [owner, s] { owner->remove_watcher(s); });
    } catch (...) {
        // Out of memory while queueing: the subscription ends with the connection instead.
    }
}

watcher::~watcher() { stop(); }

watcher& watcher::operator=(watcher&& other) noexcept {
    if (this != &other) {
        stop();
        state_ = std::move(other.state_);
    }
    return *this;
}

const std::vector<std::string>& watcher::keys() const noexcept {
    static const std::vector<std::string> none;
    return state_ ? state_->keys : none;
}

void client::start_watch(std::vector<std::string> keys, bool all,
                         asio::any_completion_handler<void(error_code, watcher)> h) {
    auto impl = impl_;
    impl->launch<watcher>(
        [](std::shared_ptr<client_impl> c, std::vector<std::string> wanted,
           bool every) -> asio::awaitable<client_impl::result<watcher>> {
            using result = client_impl::result<watcher>;
            co_await asio::this_coro::throw_if_cancelled(false);
            if (!every && wanted.empty())
                co_return result{make_error_code(errc::bad_request), watcher{}};  // watch_all is explicit
            for (const auto& k : wanted)
                if (!c->ses_.invalid_key(k).empty()) co_return result{make_error_code(errc::bad_request), watcher{}};
            if (auto ec = co_await c->ensure_connected()) co_return result{ec, watcher{}};
            auto s = std::make_shared<detail::watch_state>();
            s->owner = c;
            s->all = every;
            std::sort(wanted.begin(), wanted.end());
            wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
            s->keys = std::move(wanted);
            s->serial = ++c->watch_serial_;
            c->watchers_[s->serial] = s;
            auto ec = co_await c->sync_watch();
            // The connection may have dropped meanwhile, which ended the subscription.
            if (!ec && s->ended) ec = s->ended;
            if (ec) {
                c->watchers_.erase(s->serial);
                co_return result{ec, watcher{}};
            }
            co_return result{error_code{}, watcher(std::move(s))};
        }(impl, std::move(keys), all),
        std::move(h));
}

}  // namespace lmx
