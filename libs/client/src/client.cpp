#include <lmx/client.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/core/scoped_value.hpp>
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
#include <unordered_map>

namespace lmx {

namespace asio = boost::asio;
namespace req = core::req;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace detail {

constexpr std::int64_t no_deadline = std::numeric_limits<std::int64_t>::max();

// What a guard refers to. The atomics may be read from any thread while the client's strand
// updates them; the rest is the strand's. A hold keeps no executor: a guard may outlive its
// client and its io_context.
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

struct hold {
    std::weak_ptr<client_impl> owner;
    std::shared_ptr<const std::atomic<bool>> client_open;  // false once the client is closed or gone
    std::string key;  // single-key holds
    std::string id;
    std::uint64_t serial = 0;  // the id's number (client_impl::serial_of)
    ::lmx::fencing_token token = 0;
    bool multi = false;
    bool keep = false;
    std::vector<std::string> keys;                                   // multi: sorted
    std::vector<std::pair<std::string, ::lmx::fencing_token>> tokens;  // multi
    std::atomic<bool> lost{false};
    std::atomic<bool> released{false};
    std::atomic<std::int64_t> expires{no_deadline};  // steady_clock ticks: the lease as this client counts it
    std::atomic<int> ended{0};                        // the errc that ended it; 0 while it holds

    // The strand's.
    std::chrono::milliseconds ttl{};  // the lease asked for (no_expiry: none)
    bool renew = false;
    bool renewing = false;
    steady::time_point renew_at = steady::time_point::max();
    std::vector<std::pair<std::uint64_t, asio::any_completion_handler<void(error_code)>>> waiters;  // async_wait_lost

    bool holds_now() const noexcept {
        if (lost || released || !client_open || !client_open->load()) return false;
        const auto e = expires.load();
        return e == no_deadline || steady::now().time_since_epoch().count() < e;
    }
};

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Hands the result to the handler on its own executor: inline when the caller already runs
// there (a reply completing an operation from the reader), queued otherwise.
template <class Sig, class... Args>
void complete(asio::any_io_executor fallback, asio::any_completion_handler<Sig> h, Args&&... args) {
    auto ex = asio::get_associated_executor(h, fallback);
    asio::dispatch(ex, [h = std::move(h), ... a = std::forward<Args>(args)]() mutable { std::move(h)(std::move(a)...); });
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

// True for well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view s) noexcept {
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t n;
        unsigned cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (s.size() - i < n) return false;
        for (std::size_t k = 1; k < n; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            if ((b & 0xC0u) != 0x80u) return false;
            cp = cp << 6 | (b & 0x3Fu);
        }
        if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += n;
    }
    return true;
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

// One operation of the client: a request in flight (in pending_, keyed by its serial) or one
// waiting for the connection (in waiting_). Exactly one completion handler is set, per kind.
// Records are reused, so the steady request path allocates only the caller's handler.
struct op {
    enum class kind : std::uint8_t {
        connect,       // no request: completes when the client is connected
        call,          // any request; the reply is handed back (ls, info, stats, ping, hello)
        grant,         // lock: completes with a lock_guard
        grant_many,    // acquire-many: completes with a multi_lock_guard
        unlock,        // release(key, id) / force_release(key)
        release_hold,  // a guard's release
        extend_hold,   // a guard's extend
        renew,         // the client's own renewal of a lease (no caller)
        confirm,       // a renewal that completes a late grant (the caller's guard waits for it)
    };
    kind k = kind::call;
    bool raw = false;  // call: wire errors are replies too (the handshake reads them)
    bool keep = false;
    std::string uuid;
    std::uint64_t serial = 0;  // the number in uuid
    std::string key;    // grant: the key, to give back a grant that crosses a withdrawal
    std::string frame;  // the encoded request while waiting for the connection
    std::chrono::milliseconds timeout{};  // from sending to the local deadline; max: none
    steady::time_point deadline = steady::time_point::max();
    steady::time_point sent{};            // when the request left (a lease counts from here)
    std::chrono::milliseconds ttl{};      // grant, extend, renew: the lease asked for
    bool renew = false;                   // grant: renew the lease while held
    diagnostics* diag = nullptr;          // filled on failure
    std::shared_ptr<hold> h;  // release_hold, extend_hold, renew
    std::function<void(std::uint32_t)> on_queued;
    std::shared_ptr<struct cancel_link> link;  // ties the caller's cancellation slot to this op

    asio::any_completion_handler<void(error_code)> done;
    asio::any_completion_handler<void(error_code, lock_guard)> done_guard;
    asio::any_completion_handler<void(error_code, multi_lock_guard)> done_multi;
    asio::any_completion_handler<void(error_code, core::reply)> done_reply;

    bool is_grant() const noexcept { return k == kind::grant || k == kind::grant_many; }
    asio::cancellation_slot caller_slot() const noexcept {
        switch (k) {
            case kind::grant: return done_guard.get_cancellation_slot();
            case kind::grant_many: return done_multi.get_cancellation_slot();
            case kind::call: return done_reply.get_cancellation_slot();
            case kind::renew: return {};  // the client's own: no caller to cancel it
            case kind::confirm: return {};  // the grant it completes was no longer cancellable
            default: return done.get_cancellation_slot();
        }
    }
};
using op_ptr = std::unique_ptr<op>;

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

class client_impl : public std::enable_shared_from_this<client_impl> {
public:
    client_impl(asio::any_io_executor ex, client_options o)
        : strand_(asio::make_strand(ex)), opt_(std::move(o)), prefix_(id_prefix()) {}

    using strand_type = asio::strand<asio::any_io_executor>;
    strand_type strand_;
    client_options opt_;

    // ---- connection ---------------------------------------------------------------------
    enum class state { disconnected, connecting, connected, closed };
    state state_ = state::disconnected;
    std::shared_ptr<transport::connection> conn_;
    std::uint64_t generation_ = 0;
    error_code last_connect_error_;
    unsigned failures_ = 0;
    std::string session_;
    std::string epoch_;  // the broker's start epoch, from hello
    core::codec_limits limits_{};  // what the broker refuses (from hello; its defaults until then)
    steady::duration rtt_{};       // the last round trip measured
    bool hello_garbage_ = false;   // the peer answered the handshake with something not lmx's
    // Read by guards from any thread: false once the client is closed or destroyed.
    std::shared_ptr<std::atomic<bool>> open_ = std::make_shared<std::atomic<bool>>(true);
    std::shared_ptr<asio::cancellation_signal> stop_connect_;  // close() ends the connect in progress
    std::string hello_id_;  // the handshake's request id while it is pending

    // Requests are appended to outbox_ and go out together: at the end of the reader's turn
    // (requests made by operations the replies completed), or from one queued flush for requests
    // made elsewhere. A flush hands the kernel what it takes at once; the rest goes to the
    // connection's writer, which writes asynchronously and then takes whatever queued meanwhile.
    struct writer_state {
        asio::steady_timer timer;  // parked (never expires); cancel() wakes the writer
        std::string sending;
        bool busy = false;  // `sending` is being written
        explicit writer_state(asio::any_io_executor ex) : timer(ex, steady::time_point::max()) {}
    };
    std::string outbox_;
    std::shared_ptr<writer_state> writer_;
    bool in_reader_turn_ = false;
    bool flush_queued_ = false;

    // Keyed by the number in the request id: integer keys hash in a step, where string keys of a
    // small map are compared one by one.
    std::unordered_map<std::uint64_t, op_ptr> pending_;  // sent
    std::vector<op_ptr> waiting_;                      // for the connection
    std::vector<op_ptr> spare_;                        // finished records, for reuse
    std::unordered_map<std::uint64_t, std::weak_ptr<hold>> holds_;  // by serial

    // ---- watchers -----------------------------------------------------------------------
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
        if (keys.size() > limits_.max_keys) w.all = true;
        else w.keys = std::move(keys);
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
        auto [ec, rep] = co_await call(make);
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
        asio::co_spawn(strand_, [](std::shared_ptr<client_impl> self) -> asio::awaitable<void> {
            co_await self->sync_watch();
        }(shared_from_this()), asio::detached);
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

    void deliver(const core::reply& r) {
        const auto kind = event_kind(r.event);
        if (!kind) return;
        // A receiver completed inline may start or stop watchers: walk a copy.
        std::vector<std::shared_ptr<watch_state>> targets;
        for (const auto& [serial, s] : watchers_)
            if (s->all || std::binary_search(s->keys.begin(), s->keys.end(), r.key)) targets.push_back(s);
        for (auto& s : targets) {
            if (s->ended) continue;  // stopped by an earlier receiver of this event
            lock_event ev{*kind, r.key, r.uuid, r.token.value_or(0), r.lock_request_count.value_or(0), 0};
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
    std::unordered_map<std::string, std::string> abandoned_;  // request id -> key: release on grant
    std::unordered_map<std::string, std::string> cancels_;    // cancel uuid -> target
    std::string prefix_;
    std::uint64_t counter_ = 0;

    // Request ids are "<prefix>.<n>", n counting up in base 62, least significant digit first.
    std::string next_id() {
        static constexpr char digits[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        std::string id = prefix_;
        id += '.';
        std::uint64_t n = ++counter_;
        do {
            id += digits[n % 62];
            n /= 62;
        } while (n);
        return id;
    }

    // The number in one of this client's ids; 0 for any other string.
    std::uint64_t serial_of(std::string_view id) const noexcept {
        if (id.size() <= prefix_.size() + 1 || id.size() > prefix_.size() + 11 || !id.starts_with(prefix_) ||
            id[prefix_.size()] != '.' || (id.size() > prefix_.size() + 2 && id.back() == '0'))
            return 0;
        std::uint64_t n = 0;
        for (std::size_t i = id.size(); i-- > prefix_.size() + 1;) {
            const char c = id[i];
            int d = -1;
            if (c >= '0' && c <= '9') d = c - '0';
            else if (c >= 'a' && c <= 'z') d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'Z') d = c - 'A' + 36;
            if (d < 0) return 0;
            n = n * 62 + static_cast<std::uint64_t>(d);
        }
        return n;
    }

    // ---- operation records --------------------------------------------------------------
    op_ptr new_op(op::kind k, std::chrono::milliseconds timeout) {
        op_ptr o;
        if (spare_.empty()) {
            o = std::make_unique<op>();
        } else {
            o = std::move(spare_.back());
            spare_.pop_back();
        }
        o->k = k;
        o->uuid = next_id();
        o->serial = counter_;
        o->timeout = timeout;
        return o;
    }

    // The handler has been moved out; the record keeps its strings' storage for the next use.
    void recycle(op_ptr o) {
        if (spare_.size() >= 256) return;
        o->raw = false;
        o->keep = false;
        o->key.clear();
        o->frame.clear();
        o->deadline = steady::time_point::max();
        o->h.reset();
        o->on_queued = nullptr;
        o->link.reset();
        o->renew = false;
        o->diag = nullptr;
        spare_.push_back(std::move(o));
    }

    // Ops started inside the client (on its strand) get their canceller here; public calls
    // installed theirs while initiating (install_canceller).
    void watch_cancel(op& o) {
        if (!o.link) {
            auto slot = o.caller_slot();
            if (!slot.is_connected()) return;
            o.link = std::make_shared<cancel_link>();
            slot.template emplace<canceller>(weak_from_this(), o.link);
        }
        if (o.link->serial == 0) o.link->serial = o.serial;
    }

    static void unwatch_cancel(op& o) { o.link.reset(); }

    // A cancellation emitted before the op reached the strand is applied once it is there.
    void adopt_link(op& o, std::shared_ptr<cancel_link> link) {
        if (!link) return;
        link->serial = o.serial;
        o.link = std::move(link);
    }
    void cancel_if_requested(const std::shared_ptr<cancel_link>& link) {
        if (link && link->requested) cancel_op(link->serial);
    }

    void cancel_linked(const std::shared_ptr<cancel_link>& link) {
        if (link->serial == 0) link->requested = true;
        else cancel_op(link->serial);
    }

    // Sends `o` now when connected (its request `r`), or once the connection is up.
    void submit(op_ptr o, const core::request& r) {
        switch (state_) {
            case state::closed: return fail(std::move(o), make_error_code(errc::closed));
            case state::connected: return send_op(std::move(o), &r);
            case state::disconnected:
            case state::connecting:
                core::encode_request(r, o->frame);
                return wait_for_connection(std::move(o));
        }
    }

    // An op of kind connect: completes once connected.
    void submit_connect(op_ptr o) {
        switch (state_) {
            case state::closed: return fail(std::move(o), make_error_code(errc::closed));
            case state::connected: return succeed_connect(std::move(o));
            case state::disconnected:
            case state::connecting: return wait_for_connection(std::move(o));
        }
    }

    void wait_for_connection(op_ptr o) {
        watch_cancel(*o);
        waiting_.push_back(std::move(o));
        start_connecting();
    }

    // `r` null: the request is already encoded in o->frame.
    void send_op(op_ptr o, const core::request* r) {
        watch_cancel(*o);
        o->sent = steady::now();
        o->deadline = o->timeout == std::chrono::milliseconds::max() ? steady::time_point::max() : o->sent + o->timeout;
        if (o->deadline != steady::time_point::max()) arm_sweeper(o->deadline);
        if (r) {
            core::encode_request(*r, outbox_);
        } else {
            outbox_ += o->frame;
            o->frame.clear();
        }
        schedule_flush();
        const auto serial = o->serial;
        pending_.emplace(serial, std::move(o));
    }

    // Requests that need no reply: a withdrawal, the unlock of a dropped guard.
    void send_oneway(const core::request& r) {
        if (state_ != state::connected || !conn_) return;
        core::encode_request(r, outbox_);
        schedule_flush();
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
        if (!conn_ || !writer_ || outbox_.empty() || writer_->busy) return;
        const std::size_t taken = conn_->write_now(outbox_);
        if (taken == outbox_.size()) {
            outbox_.clear();
            return;
        }
        writer_->sending.assign(outbox_, taken);
        outbox_.clear();
        writer_->busy = true;
        writer_->timer.cancel();
    }

    asio::awaitable<void> writer(std::shared_ptr<client_impl>, std::shared_ptr<transport::connection> c,
                                 std::shared_ptr<writer_state> w, std::uint64_t gen) {
        while (gen == generation_) {
            if (!w->busy) {
                co_await w->timer.async_wait(use_tuple);
                continue;
            }
            const error_code ec = co_await c->write(w->sending);
            w->sending.clear();
            if (ec) {
                drop_connection(gen, make_error_code(errc::connection_lost));
                break;
            }
            if (gen != generation_) break;
            if (outbox_.empty()) w->busy = false;
            else std::swap(w->sending, outbox_);  // what queued during the write goes next
        }
    }

    asio::awaitable<void> reader(std::shared_ptr<client_impl>, std::shared_ptr<transport::connection> c, std::uint64_t gen) {
        std::vector<std::string_view> batch;
        for (;;) {
            batch.clear();
            auto ec = co_await c->read(batch);
            if (gen != generation_) co_return;
            last_rx_ = steady::now();
            {
                // Operations the replies complete resume here, and what they send goes out in
                // the one flush below.
                const core::scoped_value turn(in_reader_turn_, true);
                for (auto frame : batch) {
                    route(frame);
                    if (gen != generation_) co_return;
                }
            }
            flush();
            if (ec) break;
        }
        drop_connection(gen, make_error_code(state_ == state::closed ? errc::closed : errc::connection_lost));
    }

    void start_connecting() {
        if (state_ != state::disconnected) return;
        // The attempt runs as its own coroutine: cancelling an operation that waits for it must
        // not abort the connect for the others. Each attempt gets its own signal, kept alive by
        // the attempt's completion handler.
        state_ = state::connecting;
        notify_state(connection_state::connecting, {});
        stop_connect_ = std::make_shared<asio::cancellation_signal>();
        asio::co_spawn(strand_, connector(shared_from_this()),
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
        last_connect_error_ = ec;
        connect_done(ec);
    }

    std::atomic<connection_state> public_state_{connection_state::disconnected};
    void notify_state(connection_state st, error_code ec) {
        public_state_ = st;
        if (opt_.on_state) opt_.on_state(st, ec);
    }

    // ---- connection health --------------------------------------------------------------
    // An idle connection is pinged every health_interval; one from which nothing came for twice
    // that long is dropped as half-open, so its holds are reported lost instead of trusted.
    asio::steady_timer health_timer_{strand_, steady::time_point::max()};
    std::uint64_t health_generation_ = 0;
    steady::time_point last_rx_{};

    void start_health(std::uint64_t gen) {
        if (opt_.health_interval.count() <= 0) return;
        last_rx_ = steady::now();
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
        const auto idle = steady::now() - last_rx_;
        if (idle >= 2 * opt_.health_interval) {
            drop_connection(gen, make_error_code(errc::connection_lost));
            if (!holds_.empty()) start_connecting();  // kept holds are renewed over a new connection
            return;
        }
        if (idle >= opt_.health_interval) send_oneway(req::ping{next_id(), std::nullopt});
        arm_health(gen);
    }

    // The attempt has ended: operations waiting for it are sent, or fail with its error.
    void connect_done(error_code ec) {
        auto ops = std::move(waiting_);
        waiting_.clear();
        for (auto& o : ops) {
            if (state_ == state::connected) {
                if (o->k == op::kind::connect) succeed_connect(std::move(o));
                else send_op(std::move(o), nullptr);
            } else {
                fail(std::move(o), state_ == state::closed || !ec ? make_error_code(errc::closed) : ec);
            }
        }
    }

    asio::awaitable<error_code> do_connect() {
        std::string why;
        auto ep = transport::parse_endpoint(opt_.url, &why);
        if (!ep) co_return make_error_code(errc::invalid_url);
        if (failures_ > 0) {
            // Back off between attempts after failures: 50 ms doubling up to 2 s.
            asio::steady_timer t(strand_, std::min<steady::duration>(50ms * (1u << std::min(failures_ - 1, 6u)), 2s));
            co_await t.async_wait(use_tuple);
            if (state_ == state::closed) co_return make_error_code(errc::closed);
        }
        auto [ec, c] = co_await transport::connect(strand_, *ep,
                                                   {.timeout = opt_.connect_timeout,
                                                    .no_delay = opt_.no_delay,
                                                    .max_message_size = opt_.max_message_size});
        if (state_ == state::closed) co_return make_error_code(errc::closed);
        if (ec || !c) {
            ++failures_;
            if (ec == transport::error::origin_refused) co_return make_error_code(errc::origin_refused);
            if (ec == transport::error::upgrade_declined) co_return make_error_code(errc::wrong_endpoint);
            if (ec == asio::error::connection_refused || ec == boost::system::errc::no_such_file_or_directory)
                co_return make_error_code(errc::refused);
            if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again || ec == asio::error::no_data)
                co_return make_error_code(errc::name_not_resolved);
            co_return make_error_code(errc::unreachable);
        }
        conn_ = std::shared_ptr<transport::connection>(std::move(c));
        ++generation_;
        outbox_.clear();
        writer_ = std::make_shared<writer_state>(strand_);
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

        // The hello handshake tells an lmx broker from anything else.
        auto hello = new_op(op::kind::call, opt_.connect_timeout);
        hello->raw = true;
        hello_id_ = hello->uuid;
        hello_garbage_ = false;
        const auto hello_sent = steady::now();
        const core::request rq = req::hello{hello->uuid, "lmx-cpp/" LMX_VERSION_STRING, LMX_PROTOCOL_VERSION};
        auto init = [this, &hello, &rq](auto handler) {
            take(hello->done_reply, std::move(handler));
            send_op(std::move(hello), &rq);
        };
        auto [hello_ec, rep] = co_await asio::async_initiate<decltype(use_tuple), void(error_code, core::reply)>(init, use_tuple);
        hello_id_.clear();
        if (!hello_ec && rep.type == "hello" && rep.protocol == LMX_PROTOCOL_VERSION) {
            failures_ = 0;
            session_ = rep.session;
            rtt_ = steady::now() - hello_sent;
            limits_ = rep.limits.value_or(core::codec_limits{});
            // Another epoch is another broker run: holds kept across the reconnect are gone.
            if (!epoch_.empty() && rep.epoch != epoch_) lose_kept_holds();
            epoch_ = rep.epoch;
            co_return error_code{};
        }
        // No answer in time, or a wrong one: not an lmx broker (of this protocol).
        error_code bad = make_error_code(errc::broker_incompatible);
        if (hello_ec && hello_ec != errc::timeout) bad = hello_ec;
        // The peer answered something that is not lmx's protocol (an HTTP server, say).
        if (hello_garbage_) bad = make_error_code(errc::wrong_endpoint);
        if (hello_ec) ++failures_;
        drop_connection(gen, bad);
        co_return bad;
    }

    void lose_kept_holds() {
        for (auto& h : live_holds()) end_hold(h, errc::connection_lost);
        holds_.clear();
    }

    std::vector<std::shared_ptr<hold>> live_holds() {
        std::vector<std::shared_ptr<hold>> out;
        for (auto& [id, w] : holds_)
            if (auto h = w.lock()) out.push_back(std::move(h));
        return out;
    }

    // Ends connection `gen`: pending operations fail, holds not kept on exit become lost.
    void drop_connection(std::uint64_t gen, error_code why) {
        if (gen != generation_ || !conn_) return;
        const bool was_connected = state_ == state::connected;
        ++generation_;
        conn_->close();
        conn_.reset();
        if (writer_) writer_->timer.cancel();
        writer_.reset();
        outbox_.clear();
        // While connecting, the connector decides the state once its attempt has ended; moving
        // it here would let a second attempt start beside the first.
        if (state_ == state::connected) state_ = state::disconnected;
        auto failed = std::move(pending_);
        pending_.clear();
        for (auto& [id, o] : failed) fail(std::move(o), why);
        for (auto& h : live_holds()) {
            if (h->keep && state_ != state::closed) continue;  // it lives on at the broker
            end_hold(h, state_ == state::closed ? errc::closed : errc::connection_lost);
        }
        std::erase_if(holds_, [](const auto& entry) { return entry.second.expired(); });
        abandoned_.clear();
        cancels_.clear();
        end_watchers(state_ == state::closed ? make_error_code(errc::closed) : make_error_code(errc::connection_lost));
        if (was_connected && state_ != state::closed) notify_state(connection_state::disconnected, why);
    }

    void route(std::string_view frame) {
        auto parsed = core::parse_reply(frame);
        if (!parsed) {
            // A broker never sends these; ignore rather than fail everyone. During the handshake
            // it means the peer is something else (an HTTP server at a ws:// port, say).
            if (!hello_id_.empty()) hello_garbage_ = true;
            return;
        }
        core::reply& r = parsed.value();
        // A peer that does not know hello answers it without our id (an error, a live-mutex
        // version-mismatch): that is the handshake's answer, and a prompt "incompatible".
        if (!hello_id_.empty() && r.uuid.empty()) r.uuid = hello_id_;
        if (r.type == "event") return deliver(r);  // before the ids: an event may name our own request
        const std::uint64_t serial = serial_of(r.uuid);
        if (r.type == "lock-lost") {
            if (auto it = holds_.find(serial); serial && it != holds_.end()) {
                if (auto h = it->second.lock()) end_hold(h, r.reason == "forced" ? errc::forced : errc::lease_expired);
                else holds_.erase(it);
            }
            return;
        }
        if (auto it = pending_.find(serial); serial && it != pending_.end()) {
            // A queued notice is progress, not the answer: keep waiting for the grant.
            if ((r.type == "lock" || r.type == "acquire-many") && r.queued.value_or(false) && !r.acquired.value_or(false)) {
                // The callback may close the client, which ends this operation: it runs from a
                // local, and goes back only if the operation still waits.
                if (auto notify = std::move(it->second->on_queued)) {
                    notify(r.position.value_or(0));
                    if (auto again = pending_.find(serial); again != pending_.end()) again->second->on_queued = std::move(notify);
                }
                return;
            }
            op_ptr o = std::move(it->second);
            pending_.erase(it);
            finish(std::move(o), std::move(r));
            return;
        }
        if (auto it = abandoned_.find(r.uuid); it != abandoned_.end()) {
            // A grant that crossed our withdrawal: give it back at once.
            if (r.acquired.value_or(false)) {
                if (r.type == "acquire-many") queue_release_many(r.uuid);
                else queue_unlock(it->second, r.uuid);
            }
            if (r.acquired.has_value() && !r.queued.value_or(false)) abandoned_.erase(it);
            return;
        }
        if (r.type == "cancel") {
            // Any answer to the target (a grant, a rejection) came before this reply on the same
            // connection, so there is nothing left to wait for either way.
            if (auto it = cancels_.find(r.uuid); it != cancels_.end()) {
                abandoned_.erase(it->second);
                cancels_.erase(it);
            }
        }
    }

    // ---- completing operations ----------------------------------------------------------

    // The reply to `o` arrived: completes it, inline when the caller's executor allows (the
    // caller then runs inside the reader's turn, and its next request joins the turn's flush).
    void finish(op_ptr o, core::reply r) {
        unwatch_cancel(*o);
        error_code ec;
        const bool wire_error = r.error.has_value();
        if (o->k != op::kind::grant && o->k != op::kind::grant_many) rtt_ = steady::now() - o->sent;
        if (wire_error && o->diag) o->diag->message = *r.error;
        if (o->k == op::kind::renew) return renewed(std::move(o), r);
        switch (o->k) {
            case op::kind::connect: break;  // never sent
            case op::kind::call: {
                if ((wire_error || r.type == "error") && !o->raw) ec = make_error_code(errc_from_wire(r.code));
                auto done = std::move(o->done_reply);
                recycle(std::move(o));
                return complete(strand_, std::move(done), ec, std::move(r));
            }
            case op::kind::grant:
            case op::kind::grant_many: {
                std::shared_ptr<hold> h;
                if (!r.acquired.value_or(false)) {
                    ec = make_error_code(wire_error ? errc_from_wire(r.code) : errc::would_block);
                } else if (h = new_hold(o->uuid, o->serial, o->keep); o->k == op::kind::grant) {
                    h->key = std::move(o->key);
                    h->token = r.token.value_or(0);
                } else {
                    h->multi = true;
                    h->keys = std::move(r.keys);
                    h->tokens = std::move(r.fencing_tokens);
                }
                if (h) {
                    h->renew = o->renew;
                    // The broker's lease began at the grant, which the client only knows came
                    // after its request left. After a long wait in line that bound says little:
                    // a renewal sent now gives a fresh one before the caller gets the guard.
                    if (o->ttl != no_expiry && o->ttl.count() > 0 && steady::now() - o->sent > o->ttl / 3)
                        return confirm_grant(std::move(o), std::move(h));
                    set_lease(h, o->sent, o->ttl);
                }
                if (o->k == op::kind::grant) {
                    auto done = std::move(o->done_guard);
                    recycle(std::move(o));
                    return complete(strand_, std::move(done), ec, lock_guard(std::move(h)));
                }
                auto done = std::move(o->done_multi);
                recycle(std::move(o));
                return complete(strand_, std::move(done), ec, multi_lock_guard(std::move(h)));
            }
            case op::kind::confirm: {
                auto h = std::move(o->h);
                if (r.extended.value_or(false) && !h->ended.load()) {
                    set_lease(h, o->sent, o->ttl);
                } else {
                    // The hold ended between the grant and the renewal (its lease, or a force).
                    end_hold(h, errc::lease_expired);
                    ec = make_error_code(errc::lease_expired);
                    h.reset();
                }
                return complete_grant(std::move(o), ec, std::move(h));
            }
            case op::kind::unlock:
                if (wire_error || r.type == "error") ec = make_error_code(errc_from_wire(r.code));
                else if (!r.unlocked.value_or(false)) ec = make_error_code(errc::not_holder);
                // Unlocking is idempotent on the wire; the caller learns that the id held nothing.
                else if (!r.held.value_or(true) && !o->key.empty()) ec = make_error_code(errc::not_held);
                break;
            case op::kind::release_hold:
                if (wire_error || r.type == "error") ec = make_error_code(errc_from_wire(r.code));
                else if (o->h->multi && !r.released.value_or(false)) ec = make_error_code(errc::not_holder);
                // The broker answers an unlock of a hold that already ended with a warning.
                else if (!o->h->multi && (!r.unlocked.value_or(false) || r.warning)) ec = make_error_code(errc::lock_lost);
                if (ec == errc::lock_lost) o->h->lost = true;
                break;
            case op::kind::extend_hold:
                if (wire_error || r.type == "error") ec = make_error_code(errc_from_wire(r.code));
                if (ec == errc::not_holder) {
                    end_hold(o->h, errc::lease_expired);
                    ec = make_error_code(errc::lock_lost);
                } else if (!ec && !o->h->ended.load()) {
                    set_lease(o->h, o->sent, o->ttl);
                }
                break;
            case op::kind::renew: break;  // handled above
        }
        auto done = std::move(o->done);
        recycle(std::move(o));
        complete(strand_, std::move(done), ec);
    }

    // `o` ends without a reply (connection lost, closed, cancelled, timed out).
    void fail(op_ptr o, error_code ec) {
        unwatch_cancel(*o);
        if (o->diag && o->diag->message.empty()) o->diag->message = ec.message();
        if (o->k == op::kind::renew) {
            // Tried again once the connection is back (or the lease runs out first).
            if (o->h) {
                o->h->renewing = false;
                if (!o->h->ended.load() && ec != errc::closed) retry_renewal(o->h);
            }
            return recycle(std::move(o));
        }
        switch (o->k) {
            case op::kind::call: {
                auto done = std::move(o->done_reply);
                recycle(std::move(o));
                return complete_later(strand_, std::move(done), ec, core::reply{});
            }
            case op::kind::confirm: {
                // Unconfirmed, the hold is not handed out: it ends here and is given back.
                if (auto h = std::move(o->h); h && !h->ended.load()) give_back(h, errc::lease_expired);
                auto multi = !o->done_multi ? false : true;
                auto done_guard = std::move(o->done_guard);
                auto done_multi = std::move(o->done_multi);
                recycle(std::move(o));
                if (multi) return complete_later(strand_, std::move(done_multi), ec, multi_lock_guard{});
                return complete_later(strand_, std::move(done_guard), ec, lock_guard{});
            }
            case op::kind::grant: {
                auto done = std::move(o->done_guard);
                recycle(std::move(o));
                return complete_later(strand_, std::move(done), ec, lock_guard{});
            }
            case op::kind::grant_many: {
                auto done = std::move(o->done_multi);
                recycle(std::move(o));
                return complete_later(strand_, std::move(done), ec, multi_lock_guard{});
            }
            default: {
                auto done = std::move(o->done);
                recycle(std::move(o));
                return complete_later(strand_, std::move(done), ec);
            }
        }
    }

    void succeed_connect(op_ptr o) {
        unwatch_cancel(*o);
        auto done = std::move(o->done);
        recycle(std::move(o));
        complete_later(strand_, std::move(done), error_code{});
    }

    // The caller cancelled operation `id`: a request waiting in the broker's queue is withdrawn.
    void cancel_op(std::uint64_t serial) {
        for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
            if ((*it)->serial != serial) continue;
            op_ptr o = std::move(*it);
            waiting_.erase(it);
            return fail(std::move(o), make_error_code(errc::cancelled));
        }
        auto it = pending_.find(serial);
        if (it == pending_.end()) return;  // already completed
        op_ptr o = std::move(it->second);
        pending_.erase(it);
        if (o->is_grant()) abandon(o->uuid, o->key, o->k == op::kind::grant_many);
        fail(std::move(o), make_error_code(errc::cancelled));
    }

    // ---- deadlines ----------------------------------------------------------------------
    // One timer serves the deadlines of all requests. A timer per request would move the
    // reactor's earliest expiry (a timerfd_settime call) on nearly every request; this one is
    // re-armed only when a new deadline comes before the armed one.
    asio::steady_timer sweeper_{strand_, steady::time_point::max()};
    steady::time_point sweep_at_ = steady::time_point::max();
    std::uint64_t sweep_generation_ = 0;

    void arm_sweeper(steady::time_point at) {
        if (at >= sweep_at_) return;
        sweep_at_ = at;
        sweeper_.expires_at(at);  // a wait armed earlier completes with operation_aborted
        sweeper_.async_wait([weak = weak_from_this(), gen = ++sweep_generation_](error_code ec) {
            auto self = weak.lock();
            if (self && !ec && gen == self->sweep_generation_) self->sweep();
        });
    }

    // Fails every request past its deadline (withdrawing acquires) and arms the timer for the next.
    void sweep() {
        sweep_at_ = steady::time_point::max();
        const auto now = steady::now();
        auto next = steady::time_point::max();
        std::vector<std::uint64_t> expired;
        for (auto& [id, o] : pending_) {
            if (o->deadline <= now) expired.push_back(id);
            else next = std::min(next, o->deadline);
        }
        for (auto& id : expired) {
            auto it = pending_.find(id);
            op_ptr o = std::move(it->second);
            pending_.erase(it);
            if (o->is_grant()) abandon(o->uuid, o->key, o->k == op::kind::grant_many);
            fail(std::move(o), make_error_code(errc::timeout));
        }
        if (next != steady::time_point::max()) arm_sweeper(next);
    }

    // Withdraws request `id` at the broker; a grant that still arrives is released at once.
    void abandon(const std::string& id, const std::string& key, bool multi) {
        if (state_ != state::connected) return;
        abandoned_[id] = multi ? std::string() : key;
        std::string cancel_id = next_id();
        cancels_[cancel_id] = id;
        send_oneway(req::cancel{std::move(cancel_id), id});
    }

    void queue_unlock(const std::string& key, const std::string& id) { send_oneway(req::unlock{next_id(), key, id, false}); }
    void queue_release_many(const std::string& id) { send_oneway(req::release_many{next_id(), id}); }

    // Ends the hold here and gives it back at the broker (best effort: not when disconnected).
    void give_back(const std::shared_ptr<hold>& h, errc why) {
        end_hold(h, why);
        if (h->multi) queue_release_many(h->id);
        else queue_unlock(h->key, h->id);
    }

    // Renews hold `h` (one of its keys stands for all of a multi-key hold).
    static core::request extend_request(const std::string& uuid, const hold& h, std::chrono::milliseconds ttl) {
        return req::extend{uuid, h.multi ? h.keys.front() : h.key, h.id, ttl};
    }

    // ---- operations (on the strand) -----------------------------------------------------
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

    std::shared_ptr<hold> new_hold(std::string id, std::uint64_t serial, bool keep) {
        auto h = std::make_shared<hold>();
        h->owner = weak_from_this();
        h->client_open = open_;
        h->id = std::move(id);
        h->serial = serial;
        h->keep = keep;
        holds_[serial] = h;
        return h;
    }

    // ---- leases -------------------------------------------------------------------------
    // Renews a hold granted late before its guard is handed out (see finish).
    void confirm_grant(op_ptr grant, std::shared_ptr<hold> h) {
        auto c = new_op(op::kind::confirm, opt_.request_timeout);
        c->ttl = grant->ttl;
        c->h = h;
        if (grant->k == op::kind::grant) take(c->done_guard, std::move(grant->done_guard));
        else take(c->done_multi, std::move(grant->done_multi));
        recycle(std::move(grant));
        const core::request rq = extend_request(c->uuid, *h, c->ttl);
        submit(std::move(c), rq);
    }

    void complete_grant(op_ptr o, error_code ec, std::shared_ptr<hold> h) {
        if (o->done_multi) {
            auto done = std::move(o->done_multi);
            recycle(std::move(o));
            return complete(strand_, std::move(done), ec, multi_lock_guard(std::move(h)));
        }
        auto done = std::move(o->done_guard);
        recycle(std::move(o));
        complete(strand_, std::move(done), ec, lock_guard(std::move(h)));
    }

    // A lease counts from when its request was sent (the broker's starts later), less a margin
    // for the round trip: max(5% of the ttl, twice the last round trip measured).
    std::chrono::milliseconds margin(std::chrono::milliseconds ttl) const {
        return std::max(ttl / 20, std::chrono::ceil<std::chrono::milliseconds>(2 * rtt_));
    }

    void set_lease(const std::shared_ptr<hold>& h, steady::time_point sent, std::chrono::milliseconds ttl) {
        h->ttl = ttl;
        if (ttl == no_expiry || ttl.count() <= 0) {
            h->expires = no_deadline;
            h->renew_at = steady::time_point::max();
            return;
        }
        const auto end = sent + ttl - margin(ttl);
        h->expires = end.time_since_epoch().count();
        h->renew_at = h->renew ? sent + ttl / 3 : steady::time_point::max();
        // Both events: should the renewal go unanswered, the expiry still comes on time.
        schedule(h, end);
        if (h->renew) schedule(h, h->renew_at);
    }

    // Lease events in time order: (when, hold serial). Stale entries are skipped when they come up.
    using lease_event = std::pair<steady::time_point, std::uint64_t>;
    std::priority_queue<lease_event, std::vector<lease_event>, std::greater<>> lease_events_;
    asio::steady_timer lease_timer_{strand_, steady::time_point::max()};
    steady::time_point lease_at_ = steady::time_point::max();
    std::uint64_t lease_generation_ = 0;

    void schedule(const std::shared_ptr<hold>& h, steady::time_point at) {
        lease_events_.push({at, h->serial});
        if (at < lease_at_) arm_lease_timer(at);
    }

    void arm_lease_timer(steady::time_point at) {
        lease_at_ = at;
        lease_timer_.expires_at(at);
        lease_timer_.async_wait([weak = weak_from_this(), gen = ++lease_generation_](error_code ec) {
            auto self = weak.lock();
            if (self && !ec && gen == self->lease_generation_) self->tend_leases();
        });
    }

    // Ends the leases that ran out (whether or not the broker can be reached) and renews those
    // due, then waits for the next event.
    void tend_leases() {
        lease_at_ = steady::time_point::max();
        const auto now = steady::now();
        while (!lease_events_.empty() && lease_events_.top().first <= now) {
            const auto serial = lease_events_.top().second;
            lease_events_.pop();
            auto it = holds_.find(serial);
            if (it == holds_.end()) continue;
            auto h = it->second.lock();
            if (!h || h->ended.load()) continue;
            const auto e = h->expires.load();
            if (e != no_deadline && steady::time_point(steady::duration(e)) <= now) {
                // The broker's lease ends a little later (or a renewal it answers late extended
                // it): give the hold back now rather than leave the key taken by nobody.
                give_back(h, errc::lease_expired);
            } else if (h->renew && !h->renewing && h->renew_at <= now) {
                renew(h);
            }
        }
        if (lease_events_.size() > 64 && lease_events_.size() > 4 * holds_.size()) {
            // Mostly stale: rebuilt from the holds.
            decltype(lease_events_) fresh;
            for (auto& h : live_holds()) {
                const auto e = h->expires.load();
                if (e != no_deadline) fresh.push({steady::time_point(steady::duration(e)), h->serial});
                if (h->renew) fresh.push({h->renew_at, h->serial});
            }
            lease_events_ = std::move(fresh);
        }
        if (!lease_events_.empty()) arm_lease_timer(lease_events_.top().first);
    }

    void renew(const std::shared_ptr<hold>& h) {
        h->renewing = true;
        auto op = new_op(op::kind::renew, opt_.request_timeout);
        op->ttl = h->ttl;
        op->h = h;
        const core::request rq = extend_request(op->uuid, *h, h->ttl);
        submit(std::move(op), rq);
    }

    void renewed(op_ptr o, const core::reply& r) {
        auto h = std::move(o->h);
        const auto sent = o->sent;
        const auto ttl = o->ttl;
        recycle(std::move(o));
        h->renewing = false;
        if (h->ended.load()) return;
        if (r.extended.value_or(false)) return set_lease(h, sent, ttl);
        // The broker no longer has it: a lock-lost said why already, or the lease ran out.
        if (errc_from_wire(r.code) == errc::not_holder) return end_hold(h, errc::lease_expired);
        retry_renewal(h);
    }

    // A renewal that failed (no answer, no connection) is tried again soon, until the lease's
    // own deadline ends the hold.
    void retry_renewal(const std::shared_ptr<hold>& h) {
        const auto pause = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(h->ttl / 10),
                                      std::chrono::milliseconds(20), std::chrono::milliseconds(1000));
        h->renew_at = steady::now() + pause;
        schedule(h, h->renew_at);
    }

    // The hold ended: its guard no longer owns it, and whoever waits for that hears why.
    void end_hold(const std::shared_ptr<hold>& h, errc why) {
        int expected = 0;
        if (!h->ended.compare_exchange_strong(expected, static_cast<int>(why))) return;
        if (why != errc::released) h->lost = true;
        holds_.erase(h->serial);
        auto waiters = std::move(h->waiters);
        h->waiters.clear();
        for (auto& [id, w] : waiters) complete_later(strand_, std::move(w), make_error_code(why));
    }

    void wait_lost(const std::shared_ptr<hold>& h, std::uint64_t id, asio::any_completion_handler<void(error_code)> done) {
        if (const int why = h->ended.load())
            return complete_later(strand_, std::move(done), make_error_code(static_cast<errc>(why)));
        h->waiters.emplace_back(id, std::move(done));
    }

    void cancel_wait_lost(const std::shared_ptr<hold>& h, std::uint64_t id) {
        for (auto it = h->waiters.begin(); it != h->waiters.end(); ++it) {
            if (it->first != id) continue;
            auto done = std::move(it->second);
            h->waiters.erase(it);
            return complete_later(strand_, std::move(done), make_error_code(errc::cancelled));
        }
    }

    // ---- checks before sending ----------------------------------------------------------
    std::string invalid_key(std::string_view key) const {
        if (key.empty()) return "a key must not be empty";
        if (key.size() > limits_.max_key_length)
            return "the key is " + std::to_string(key.size()) + " bytes, over the broker's limit of " +
                   std::to_string(limits_.max_key_length);
        if (!valid_utf8(key)) return "the key is not valid UTF-8";
        return {};
    }

    std::string invalid_options(const acquire_options& o) const {
        const auto longest = limits_.max_duration;
        if (o.ttl && *o.ttl != no_expiry && o.ttl->count() <= 0) return "ttl must be positive (no_expiry for none)";
        if (o.ttl && *o.ttl != no_expiry && *o.ttl > longest)
            return "ttl is over the broker's limit of " + std::to_string(longest.count()) + " ms (no_expiry for none)";
        if (o.timeout && o.timeout->count() < 0) return "timeout must not be negative";
        if (o.timeout && *o.timeout != wait_forever && *o.timeout > longest)
            return "timeout is over the broker's limit of " + std::to_string(longest.count()) + " ms (wait_forever for none)";
        if (o.max && *o.max == 0) return "max must be at least 1";
        return {};
    }

    // Fails `h` before anything is sent, with the reason in the diagnostics.
    template <class Sig, class... Args>
    void refuse(asio::any_completion_handler<Sig> h, diagnostics* diag, std::string why, Args&&... empty) {
        if (diag) diag->message = std::move(why);
        complete_later(strand_, std::move(h), make_error_code(errc::bad_request), std::forward<Args>(empty)...);
    }

    // The broker withdraws a waiting request at `budget`; the local deadline (budget plus
    // request_timeout) only guards against a broker that never answers. On cancellation or
    // timeout the request is withdrawn and a grant that crosses the withdrawal is given back.
    void acquire(std::string key, acquire_options o, asio::any_completion_handler<void(error_code, lock_guard)> h,
                 std::shared_ptr<cancel_link> link = nullptr) {
        if (auto why = invalid_key(key); !why.empty()) return refuse(std::move(h), o.diag, why, lock_guard{});
        if (auto why = invalid_options(o); !why.empty()) return refuse(std::move(h), o.diag, why, lock_guard{});
        if (o.timeout && o.timeout->count() == 0) o.wait = false;  // a timeout of 0: do not wait
        const auto budget = wait_budget(o);
        auto op = new_op(op::kind::grant, local_budget(budget));
        adopt_link(*op, link);
        op->keep = o.keep_locks_on_exit.value_or(opt_.keep_locks_on_exit);
        op->on_queued = std::move(o.on_queued);
        op->ttl = o.ttl.value_or(opt_.ttl);
        op->renew = o.auto_renew.value_or(!o.ttl.has_value()) && op->ttl != no_expiry;
        op->diag = o.diag;
        take(op->done_guard, std::move(h));
        const core::request rq = req::lock{.uuid = op->uuid,
                                           .key = key,
                                           .ttl = op->ttl,
                                           .max = o.max,
                                           .wait = o.wait,
                                           .timeout = o.wait && budget != wait_forever ? std::optional(budget) : std::nullopt,
                                           .mode = o.shared ? core::lock_mode::shared : core::lock_mode::exclusive,
                                           .keep_on_exit = op->keep,
                                           .force = false,
                                           // Nobody listens for the place in line: no notice.
                                           .queued_notice = static_cast<bool>(op->on_queued)};
        op->key = std::move(key);
        submit(std::move(op), rq);
        cancel_if_requested(link);
    }

    void acquire_many(std::vector<std::string> keys, acquire_options o,
                      asio::any_completion_handler<void(error_code, multi_lock_guard)> h,
                      std::shared_ptr<cancel_link> link = nullptr) {
        if (keys.empty()) return refuse(std::move(h), o.diag, "no keys to acquire", multi_lock_guard{});
        if (keys.size() > limits_.max_keys)
            return refuse(std::move(h), o.diag,
                          std::to_string(keys.size()) + " keys, over the broker's limit of " + std::to_string(limits_.max_keys),
                          multi_lock_guard{});
        for (const auto& k : keys)
            if (auto why = invalid_key(k); !why.empty()) return refuse(std::move(h), o.diag, why, multi_lock_guard{});
        if (auto why = invalid_options(o); !why.empty()) return refuse(std::move(h), o.diag, why, multi_lock_guard{});
        if (o.timeout && o.timeout->count() == 0) o.wait = false;
        const auto budget = wait_budget(o);
        auto op = new_op(op::kind::grant_many, local_budget(budget));
        adopt_link(*op, link);
        op->keep = o.keep_locks_on_exit.value_or(opt_.keep_locks_on_exit);
        op->on_queued = std::move(o.on_queued);
        op->ttl = o.ttl.value_or(opt_.ttl);
        op->renew = o.auto_renew.value_or(!o.ttl.has_value()) && op->ttl != no_expiry;
        op->diag = o.diag;
        take(op->done_multi, std::move(h));
        const core::request rq = req::acquire_many{.uuid = op->uuid,
                                                   .keys = std::move(keys),
                                                   .ttl = op->ttl,
                                                   .wait = o.wait,
                                                   .timeout = o.wait && budget != wait_forever ? std::optional(budget) : std::nullopt,
                                                   .keep_on_exit = op->keep};
        submit(std::move(op), rq);
        cancel_if_requested(link);
    }

    void release(std::string key, std::string id, bool force, asio::any_completion_handler<void(error_code)> h,
                 std::shared_ptr<cancel_link> link = nullptr) {
        if (auto why = invalid_key(key); !why.empty()) return refuse(std::move(h), nullptr, why);
        auto op = new_op(op::kind::unlock, opt_.request_timeout);
        adopt_link(*op, link);
        take(op->done, std::move(h));
        if (!force) op->key = key;  // a release by id: "held nothing" is the caller's error
        std::optional<std::string> lock_id;
        if (!id.empty()) lock_id = std::move(id);
        const core::request rq = req::unlock{op->uuid, std::move(key), std::move(lock_id), force};
        submit(std::move(op), rq);
        cancel_if_requested(link);
    }

    // The hold was claimed (released = true) by the initiating call.
    void release_hold(std::shared_ptr<hold> h, asio::any_completion_handler<void(error_code)> done,
                      std::shared_ptr<cancel_link> link = nullptr) {
        end_hold(h, errc::released);
        auto op = new_op(op::kind::release_hold, opt_.request_timeout);
        adopt_link(*op, link);
        take(op->done, std::move(done));
        const core::request rq = h->multi ? core::request(req::release_many{op->uuid, h->id})
                                          : core::request(req::unlock{op->uuid, h->key, h->id, false});
        op->h = std::move(h);
        submit(std::move(op), rq);
        cancel_if_requested(link);
    }

    void extend_hold(std::shared_ptr<hold> h, std::chrono::milliseconds ttl, asio::any_completion_handler<void(error_code)> done,
                     std::shared_ptr<cancel_link> link = nullptr) {
        if (h->lost) return complete_later(strand_, std::move(done), make_error_code(errc::lock_lost));
        if (h->released) return complete_later(strand_, std::move(done), make_error_code(errc::not_holder));
        if (ttl != no_expiry && ttl.count() <= 0)
            return complete_later(strand_, std::move(done), make_error_code(errc::bad_request));
        auto op = new_op(op::kind::extend_hold, opt_.request_timeout);
        adopt_link(*op, link);
        op->ttl = ttl;
        take(op->done, std::move(done));
        const core::request rq = extend_request(op->uuid, *h, ttl);
        op->h = std::move(h);
        submit(std::move(op), rq);
        cancel_if_requested(link);
    }

    void connect(asio::any_completion_handler<void(error_code)> done, std::shared_ptr<cancel_link> link = nullptr) {
        auto op = new_op(op::kind::connect, opt_.request_timeout);
        adopt_link(*op, link);
        take(op->done, std::move(done));
        submit_connect(std::move(op));
        cancel_if_requested(link);
    }

    // ---- coroutine helpers for the less frequent calls ----------------------------------
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
        asio::co_spawn(strand_, std::move(op),
                       asio::bind_cancellation_slot(
                           inner, [h = std::move(h), fallback, cancel, self = shared_from_this()](std::exception_ptr ep, result<R> r) mutable {
                               cancel->finished = true;
                               if (ep) r.first = make_error_code(errc::connection_lost);
                               if constexpr (std::is_same_v<R, std::monostate>) complete(fallback, std::move(h), r.first);
                               else complete(fallback, std::move(h), r.first, std::move(r.second));
                           }));
    }

    asio::awaitable<error_code> ensure_connected() {
        if (state_ == state::connected) co_return error_code{};
        auto init = [this](auto handler) { connect(std::move(handler)); };
        auto [ec] = co_await asio::async_initiate<decltype(use_tuple), void(error_code)>(init, use_tuple);
        co_return ec;
    }

    // Sends the request make(uuid) and waits for its reply; wire errors become the error code.
    template <class MakeRequest>
    asio::awaitable<result<core::reply>> call(MakeRequest make) {
        auto init = [this, &make](auto handler) {
            auto op = new_op(op::kind::call, opt_.request_timeout);
            take(op->done_reply, std::move(handler));
            const core::request rq = make(op->uuid);
            submit(std::move(op), rq);
        };
        auto [ec, rep] = co_await asio::async_initiate<decltype(use_tuple), void(error_code, core::reply)>(init, use_tuple);
        co_return result<core::reply>{ec, std::move(rep)};
    }

    // The destructor path of a guard: synchronous, on the strand.
    void drop_hold(const std::shared_ptr<hold>& h) { give_back(h, errc::released); }

    void close() {
        if (state_ == state::closed) return;
        open_->store(false);
        flush();  // what is queued (the unlock of a guard just dropped) still goes out if it fits
        state_ = state::closed;
        public_state_ = connection_state::closed;
        for (auto& h : live_holds()) end_hold(h, errc::closed);
        ++lease_generation_;
        lease_timer_.cancel();
        ++health_generation_;
        health_timer_.cancel();
        if (opt_.on_state) opt_.on_state(connection_state::closed, make_error_code(errc::closed));
        drop_connection(generation_, make_error_code(errc::closed));
        auto ops = std::move(waiting_);
        waiting_.clear();
        for (auto& o : ops) fail(std::move(o), make_error_code(errc::closed));
        if (stop_connect_) stop_connect_->emit(asio::cancellation_type::terminal);
        // Every request has failed above; an armed sweeper would only keep the executor busy.
        sweep_at_ = steady::time_point::max();
        ++sweep_generation_;
        sweeper_.cancel();
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

// ---- lock_guard -------------------------------------------------------------------------

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
}

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
std::optional<std::chrono::steady_clock::time_point> lock_guard::expires_at() const noexcept { return expiry_of(hold_); }
void lock_guard::detach() noexcept { detach_hold(hold_); }

void lock_guard::detach_hold(std::shared_ptr<hold>& h) noexcept {
    if (!h) return;
    h->released = true;
    try {
        // Untracked from now on: no renewal, and whoever waits for its end hears "released".
        if (auto owner = h->owner.lock()) asio::post(owner->strand_, [owner, h] { owner->end_hold(h, errc::released); });
    } catch (...) {
    }
    h.reset();
}

namespace {
// Runs op(client, handler) on the hold's client strand, or fails with `early` (or `closed` when
// the client is gone) through a post, so that even an early failure never completes inside the
// initiating call.
template <class Op>
void run_on_owner(const std::shared_ptr<hold>& h, error_code early, asio::any_completion_handler<void(error_code)> handler,
                  Op op) {
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
    if (!h) early = make_error_code(errc::not_holder);
    else if (h->lost) early = make_error_code(errc::lock_lost);
    else if (h->released.exchange(true)) early = make_error_code(errc::not_holder);
    run_on_owner(h, early, std::move(handler), [h](client_impl& c, auto done, auto link) {
        c.release_hold(h, std::move(done), std::move(link));
    });
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

// ---- multi_lock_guard -------------------------------------------------------------------

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


// ---- client -----------------------------------------------------------------------------

client::client(executor_type ex, client_options options)
    : impl_(std::make_shared<client_impl>(std::move(ex), std::move(options))) {}

// close() runs on the strand: at once when called there, queued otherwise, in order with the
// operations and guard drops started before it. The impl lives on in the reader and writer
// until they finish.
client::~client() {
    // Guards read this at once; the rest of closing runs on the strand.
    impl_->open_->store(false);
    try {
        asio::dispatch(impl_->strand_, [impl = impl_] { impl->close(); });
    } catch (...) {
    }
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
    asio::dispatch(impl_->strand_, [impl = impl_, h = std::move(h), link]() mutable { impl->connect(std::move(h), std::move(link)); });
}

void client::start_acquire(std::string key, acquire_options o,
                           asio::any_completion_handler<void(error_code, lock_guard)> h) {
    auto link = detail::install_canceller(impl_, h);
    asio::dispatch(impl_->strand_, [impl = impl_, key = std::move(key), o = std::move(o), h = std::move(h), link]() mutable {
        impl->acquire(std::move(key), std::move(o), std::move(h), std::move(link));
    });
}

void client::start_acquire_many(std::vector<std::string> keys, acquire_options o,
                                asio::any_completion_handler<void(error_code, multi_lock_guard)> h) {
    auto link = detail::install_canceller(impl_, h);
    asio::dispatch(impl_->strand_, [impl = impl_, keys = std::move(keys), o = std::move(o), h = std::move(h), link]() mutable {
        impl->acquire_many(std::move(keys), std::move(o), std::move(h), std::move(link));
    });
}

void client::start_release(std::string key, std::string id, bool force,
                           asio::any_completion_handler<void(error_code)> h) {
    auto link = detail::install_canceller(impl_, h);
    asio::dispatch(impl_->strand_, [impl = impl_, key = std::move(key), id = std::move(id), force, h = std::move(h), link]() mutable {
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
                auto make = [&cursor](const std::string& uuid) { return core::request(req::ls{uuid, cursor, std::nullopt}); };
                auto [ec, rep] = co_await c->call(make);
                if (ec) co_return client_impl::result<std::vector<std::string>>{ec, {}};
                if (keys.empty()) keys = std::move(rep.ls_result);
                else keys.insert(keys.end(), std::make_move_iterator(rep.ls_result.begin()), std::make_move_iterator(rep.ls_result.end()));
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
            auto [ec, rep] = co_await c->call(make);
            lock_info info;
            info.key = k;
            info.locked = rep.is_locked.value_or(false);
            info.holders = std::move(rep.lockholder_uuids);
            info.waiters = rep.lock_request_count.value_or(0);
            info.max = rep.max.value_or(1);
            info.last_token = rep.token.value_or(0);
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
            if (auto ec = co_await c->ensure_connected()) co_return client_impl::result<std::chrono::microseconds>{ec, {}};
            auto t0 = steady::now();
            auto make = [](const std::string& uuid) { return core::request(req::ping{uuid, std::nullopt}); };
            auto [ec, rep] = co_await c->call(make);
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
            auto [ec, rep] = co_await c->call(make);
            co_return client_impl::result<boost::json::object>{ec, std::move(rep.stats)};
        }(impl),
        std::move(h));
}

// ---- watch ------------------------------------------------------------------------------

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

void client::start_watch(std::vector<std::string> keys, bool all, asio::any_completion_handler<void(error_code, watcher)> h) {
    auto impl = impl_;
    impl->launch<watcher>(
        [](std::shared_ptr<client_impl> c, std::vector<std::string> wanted, bool every) -> asio::awaitable<client_impl::result<watcher>> {
            using result = client_impl::result<watcher>;
            co_await asio::this_coro::throw_if_cancelled(false);
            if (!every && wanted.empty()) co_return result{make_error_code(errc::bad_request), watcher{}};  // watch_all is explicit
            for (const auto& k : wanted)
                if (!c->invalid_key(k).empty()) co_return result{make_error_code(errc::bad_request), watcher{}};
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
