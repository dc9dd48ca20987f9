#include <lmx/client.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/transport/connection.hpp>
#include <lmx/version.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/json/parse.hpp>

#include <atomic>
#include <random>
#include <unordered_map>

namespace lmx {

namespace asio = boost::asio;
namespace req = core::req;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace detail {

// What a guard refers to. Flags are atomic because guards may be inspected from any thread while
// the client's strand updates them.
struct hold {
    std::weak_ptr<client_impl> owner;
    asio::any_io_executor ex;
    std::string key;  // single-key holds
    std::string id;
    ::lmx::fencing_token token = 0;
    bool multi = false;
    bool keep = false;
    std::vector<std::string> keys;                                   // multi: sorted
    std::vector<std::pair<std::string, ::lmx::fencing_token>> tokens;  // multi
    std::atomic<bool> lost{false};
    std::atomic<bool> released{false};
};

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Hands the result to the handler on its own executor. Callers are never inside the initiating
// call (co_spawn posts a result that was ready without a context switch), so dispatch is safe.
template <class Sig, class... Args>
void complete(asio::any_io_executor fallback, asio::any_completion_handler<Sig> h, Args&&... args) {
    auto ex = asio::get_associated_executor(h, fallback);
    asio::dispatch(ex, [h = std::move(h), ... a = std::forward<Args>(args)]() mutable { std::move(h)(std::move(a)...); });
}

// One request waiting for its reply (or replies: a queued notice, then the grant).
struct pending_op {
    asio::steady_timer signal;  // parked (never expires); cancel() wakes the waiter
    std::optional<core::reply> reply;
    error_code failure;  // set when the connection is lost or the client closes
    bool done = false;
    std::function<void(std::uint32_t)> on_queued;  // an acquire's progress callback
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
    explicit pending_op(asio::any_io_executor ex) : signal(ex, std::chrono::steady_clock::time_point::max()) {}
};

std::string id_prefix() {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::random_device rd;
    std::uint64_t bits = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    std::string p;
    for (int i = 0; i < 8; ++i, bits >>= 6) p += alphabet[bits & 63];
    return p;
}

}  // namespace

class client_impl : public std::enable_shared_from_this<client_impl> {
public:
    client_impl(asio::any_io_executor ex, client_options o)
        : strand_(asio::make_strand(ex)), opt_(std::move(o)), connected_signal_(strand_, steady::time_point::max()), prefix_(id_prefix()) {}

    using strand_type = asio::strand<asio::any_io_executor>;
    strand_type strand_;
    client_options opt_;

    // ---- running operations -------------------------------------------------------------
    template <class R>
    using result = std::pair<error_code, R>;
    template <class R>
    static result<R> failed(error_code ec) {
        return result<R>(ec, R{});
    }

    // `op` is a coroutine of this object; the completion handler owns a reference so that the
    // object outlives it even when the client is destroyed while the operation runs.
    template <class R, class Sig>
    void launch(asio::awaitable<result<R>> op, asio::any_completion_handler<Sig> h) {
        auto slot = h.get_cancellation_slot();
        asio::any_io_executor fallback = strand_;
        asio::co_spawn(strand_, std::move(op),
                       asio::bind_cancellation_slot(
                           slot, [h = std::move(h), fallback, self = shared_from_this()](std::exception_ptr ep, result<R> r) mutable {
                               if (ep) r.first = make_error_code(errc::connection_lost);
                               if constexpr (std::is_same_v<R, std::monostate>) complete(fallback, std::move(h), r.first);
                               else complete(fallback, std::move(h), r.first, std::move(r.second));
                           }));
    }

    // ---- connection ---------------------------------------------------------------------
    enum class state { disconnected, connecting, connected, closed };
    state state_ = state::disconnected;
    std::shared_ptr<transport::connection> conn_;
    std::uint64_t generation_ = 0;
    asio::steady_timer connected_signal_;  // parked at max; cancel() wakes every caller waiting for a connect
    error_code last_connect_error_;
    unsigned failures_ = 0;
    std::string session_;

    // The writer of one connection parks on `timer` (at max) while the outbox is empty. Each
    // connection has its own, so a writer of a dropped connection can never steal a wake-up.
    struct writer_state {
        asio::steady_timer timer;
        bool idle = false;
        std::string sending;
        explicit writer_state(asio::any_io_executor ex) : timer(ex, steady::time_point::max()) {}
    };
    std::string outbox_;
    std::shared_ptr<writer_state> writer_;
    std::shared_ptr<asio::cancellation_signal> stop_connect_;  // close() ends the connect in progress
    std::string hello_id_;                    // the handshake's request id while it is pending

    std::unordered_map<std::string, std::shared_ptr<pending_op>> pending_;
    std::unordered_map<std::string, std::weak_ptr<hold>> holds_;
    std::unordered_map<std::string, std::string> abandoned_;  // request id -> key: release on grant
    std::unordered_map<std::string, std::string> cancels_;    // cancel uuid -> target
    std::string prefix_;
    std::uint64_t counter_ = 0;

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

    // The common case of ensure_connected() without starting a coroutine.
    bool connected_now() const noexcept { return state_ == state::connected; }

    asio::awaitable<error_code> ensure_connected() {
        for (;;) {
            switch (state_) {
                case state::connected: co_return error_code{};
                case state::closed: co_return make_error_code(errc::closed);
                case state::disconnected:
                    // The attempt runs as its own coroutine: cancelling the operation that happened
                    // to start it must not abort the connect, nor fail the others waiting for it.
                    // Each attempt gets its own signal, kept alive by the attempt's completion
                    // handler: a slot reused by the next attempt could free what the previous
                    // attempt's coroutine still refers to while it winds down.
                    state_ = state::connecting;
                    stop_connect_ = std::make_shared<asio::cancellation_signal>();
                    asio::co_spawn(strand_, connector(shared_from_this()),
                                   asio::bind_cancellation_slot(stop_connect_->slot(), [stop = stop_connect_](std::exception_ptr) {}));
                    // co_spawn may run the attempt inline up to its first suspension, and one that
                    // fails before any I/O (a bad URL) has already ended.
                    if (state_ == state::disconnected) co_return last_connect_error_;
                    break;
                case state::connecting: {
                    co_await connected_signal_.async_wait(use_tuple);
                    auto cs = co_await asio::this_coro::cancellation_state;
                    if (cs.cancelled() != asio::cancellation_type::none) co_return make_error_code(errc::cancelled);
                    if (state_ == state::disconnected) co_return last_connect_error_;
                    break;
                }
            }
        }
    }

    asio::awaitable<void> connector(std::shared_ptr<client_impl>) {
        auto ec = co_await do_connect();
        if (state_ == state::connecting) state_ = ec ? state::disconnected : state::connected;
        last_connect_error_ = ec;
        connected_signal_.cancel();
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
            if (ec == transport::error::origin_refused || ec == transport::error::upgrade_declined)
                co_return make_error_code(errc::broker_incompatible);
            co_return make_error_code(errc::unreachable);
        }
        conn_ = std::shared_ptr<transport::connection>(std::move(c));
        ++generation_;
        outbox_.clear();
        writer_ = std::make_shared<writer_state>(strand_);
        auto self = shared_from_this();
        asio::co_spawn(strand_, reader(self, conn_, generation_), asio::detached);
        asio::co_spawn(strand_, writer(self, conn_, writer_, generation_), asio::detached);

        // The hello handshake tells an lmx broker from anything else.
        std::string uuid = next_id();
        auto op = std::make_shared<pending_op>(strand_);
        pending_.emplace(uuid, op);
        hello_id_ = uuid;
        std::string frame;
        core::encode_request(req::hello{uuid, "lmx-cpp/" LMX_VERSION_STRING, LMX_PROTOCOL_VERSION}, frame);
        send(frame);
        auto res = co_await wait(op, steady::now() + opt_.connect_timeout);
        pending_.erase(uuid);
        hello_id_.clear();
        error_code bad = make_error_code(errc::broker_incompatible);
        if (res == wait_result::reply && op->reply->type == "hello" && op->reply->protocol == LMX_PROTOCOL_VERSION) {
            failures_ = 0;
            session_ = op->reply->session;
            co_return error_code{};
        }
        if (res == wait_result::failed) bad = op->failure;
        if (res == wait_result::cancelled) bad = make_error_code(errc::cancelled);
        if (res != wait_result::reply) ++failures_;
        drop_connection(generation_, bad);
        co_return bad;
    }

    void send(std::string_view frame) {
        if (state_ == state::closed || !conn_) return;
        outbox_ += frame;
        if (writer_ && writer_->idle) writer_->timer.cancel();
    }

    asio::awaitable<void> writer(std::shared_ptr<client_impl>, std::shared_ptr<transport::connection> c,
                                 std::shared_ptr<writer_state> w, std::uint64_t gen) {
        while (gen == generation_) {
            if (outbox_.empty()) {
                w->idle = true;
                co_await w->timer.async_wait(use_tuple);
                w->idle = false;
                continue;
            }
            // Everything queued since the last write goes out in one write: straight to the
            // kernel when it takes it all (no completion to wait for), asynchronously otherwise.
            std::swap(outbox_, w->sending);
            const std::string_view rest = std::string_view(w->sending).substr(c->write_now(w->sending));
            error_code ec;
            if (!rest.empty()) ec = co_await c->write(rest);
            w->sending.clear();
            if (ec) {
                drop_connection(gen, make_error_code(errc::connection_lost));
                break;
            }
        }
    }

    asio::awaitable<void> reader(std::shared_ptr<client_impl>, std::shared_ptr<transport::connection> c, std::uint64_t gen) {
        std::vector<std::string_view> batch;
        for (;;) {
            batch.clear();
            auto ec = co_await c->read(batch);
            if (gen != generation_) co_return;
            for (auto frame : batch) route(frame);
            if (ec) break;
        }
        drop_connection(gen, make_error_code(state_ == state::closed ? errc::closed : errc::connection_lost));
    }

    // Ends connection `gen`: pending operations fail, holds not kept on exit become lost.
    void drop_connection(std::uint64_t gen, error_code why) {
        if (gen != generation_ || !conn_) return;
        ++generation_;
        conn_->close();
        conn_.reset();
        if (writer_) writer_->timer.cancel();
        writer_.reset();
        outbox_.clear();
        // While connecting, the connector decides the state once its attempt has ended; moving
        // it here would let a second attempt start beside the first.
        if (state_ == state::connected) state_ = state::disconnected;
        for (auto& [id, op] : pending_) {
            op->failure = why;
            op->done = true;
            op->signal.cancel();
        }
        for (auto it = holds_.begin(); it != holds_.end();) {
            auto h = it->second.lock();
            if (h && h->keep && state_ != state::closed) {
                ++it;
                continue;
            }
            if (h) h->lost = true;
            it = holds_.erase(it);
        }
        abandoned_.clear();
        cancels_.clear();
    }

    void route(std::string_view frame) {
        auto parsed = core::parse_reply(frame);
        if (!parsed) return;  // a broker never sends these; ignore rather than fail everyone
        core::reply& r = parsed.value();
        // A peer that does not know hello answers it without our id (an error, a live-mutex
        // version-mismatch): that is the handshake's answer, and a prompt "incompatible".
        if (!hello_id_.empty() && r.uuid.empty()) r.uuid = hello_id_;
        if (r.type == "lock-lost") {
            if (auto it = holds_.find(r.uuid); it != holds_.end()) {
                if (auto h = it->second.lock()) h->lost = true;
                holds_.erase(it);
            }
            return;
        }
        if (auto it = pending_.find(r.uuid); it != pending_.end()) {
            auto& op = it->second;
            // A queued notice is progress, not the answer: keep waiting for the grant.
            if ((r.type == "lock" || r.type == "acquire-many") && r.queued.value_or(false) && !r.acquired.value_or(false)) {
                if (op->on_queued) op->on_queued(r.position.value_or(0));
                return;
            }
            op->reply = std::move(r);
            op->done = true;
            op->signal.cancel();
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

    // ---- waiting ------------------------------------------------------------------------
    enum class wait_result { reply, failed, cancelled, timed_out };

    // `op` must be in pending_ while it waits: the sweeper finds it there at its deadline.
    asio::awaitable<wait_result> wait(std::shared_ptr<pending_op> op, steady::time_point deadline) {
        op->deadline = deadline;
        arm_sweeper(deadline);
        for (;;) {
            if (op->done) co_return op->reply ? wait_result::reply : wait_result::failed;
            // A cancellation delivered while no wait was pending is only recorded in the state.
            auto cs = co_await asio::this_coro::cancellation_state;
            if (cs.cancelled() != asio::cancellation_type::none) co_return wait_result::cancelled;
            co_await op->signal.async_wait(use_tuple);
            if (op->done) continue;
            if (cs.cancelled() != asio::cancellation_type::none) co_return wait_result::cancelled;
            if (steady::now() >= deadline) co_return wait_result::timed_out;
        }
    }

    // One timer serves the deadlines of all waiting requests. A timer per request would move the
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

    // Wakes every request past its deadline and arms the timer for the next one.
    void sweep() {
        sweep_at_ = steady::time_point::max();
        const auto now = steady::now();
        auto next = steady::time_point::max();
        for (auto& [id, op] : pending_) {
            if (op->done) continue;
            if (op->deadline <= now) op->signal.cancel();
            else next = std::min(next, op->deadline);
        }
        if (next != steady::time_point::max()) arm_sweeper(next);
    }

    // Withdraws request `id` at the broker; a grant that still arrives is released at once.
    void abandon(const std::string& id, const std::string& key, bool multi) {
        pending_.erase(id);
        if (state_ != state::connected) return;
        abandoned_[id] = multi ? std::string() : key;
        std::string cancel_id = next_id();
        cancels_[cancel_id] = id;
        std::string frame;
        core::encode_request(req::cancel{cancel_id, id}, frame);
        send(frame);
    }

    void queue_unlock(const std::string& key, const std::string& id) {
        if (state_ != state::connected) return;
        std::string frame;
        core::encode_request(req::unlock{next_id(), key, id, false}, frame);
        send(frame);
    }

    void queue_release_many(const std::string& id) {
        if (state_ != state::connected) return;
        std::string frame;
        core::encode_request(req::release_many{next_id(), id}, frame);
        send(frame);
    }

    // Sends `r` (its uuid already set) and waits for the reply carrying the same uuid.
    asio::awaitable<std::pair<error_code, core::reply>> call(const std::string& uuid, const core::request& r) {
        error_code ec_connect;
        if (!connected_now()) ec_connect = co_await ensure_connected();
        if (auto ec = ec_connect) co_return std::pair{ec, core::reply{}};
        auto op = std::make_shared<pending_op>(strand_);
        pending_.emplace(uuid, op);
        std::string frame;
        core::encode_request(r, frame);
        send(frame);
        auto res = co_await wait(op, steady::now() + opt_.request_timeout);
        pending_.erase(uuid);
        switch (res) {
            case wait_result::reply: break;
            case wait_result::failed: co_return std::pair{op->failure, core::reply{}};
            case wait_result::cancelled: co_return std::pair{make_error_code(errc::cancelled), core::reply{}};
            case wait_result::timed_out: co_return std::pair{make_error_code(errc::timeout), core::reply{}};
        }
        core::reply rep = std::move(*op->reply);
        if (rep.error || rep.type == "error") co_return std::pair{make_error_code(errc_from_wire(rep.code)), std::move(rep)};
        co_return std::pair{error_code{}, std::move(rep)};
    }

    // ---- operations ---------------------------------------------------------------------
    std::chrono::milliseconds wait_budget(const acquire_options& o) const {
        if (o.timeout) return *o.timeout;
        unsigned tries = std::max(1u, o.max_retries.value_or(opt_.max_retries));
        return opt_.lock_request_timeout * tries;
    }

    std::shared_ptr<hold> new_hold(std::string id, bool keep) {
        auto h = std::make_shared<hold>();
        h->owner = weak_from_this();
        h->ex = strand_;
        h->id = std::move(id);
        h->keep = keep;
        holds_[h->id] = h;
        return h;
    }

    // Sends the acquire or acquire-many request `r` (its uuid already set) and waits for the
    // grant. The broker withdraws the request at `budget`; the local deadline only guards
    // against a broker that never answers. On cancellation or timeout the request is withdrawn
    // and a grant that crosses the withdrawal is given back (see abandon).
    asio::awaitable<std::pair<error_code, core::reply>> request_grant(const std::string& uuid, const core::request& r,
                                                                      acquire_options& o, std::chrono::milliseconds budget,
                                                                      const std::string& key, bool multi) {
        error_code ec_connect;
        if (!connected_now()) ec_connect = co_await ensure_connected();
        if (ec_connect) co_return std::pair{ec_connect, core::reply{}};
        auto op = std::make_shared<pending_op>(strand_);
        op->on_queued = std::move(o.on_queued);
        pending_.emplace(uuid, op);
        std::string frame;
        core::encode_request(r, frame);
        send(frame);
        auto res = co_await wait(op, steady::now() + budget + opt_.request_timeout);
        error_code ec;
        switch (res) {
            case wait_result::reply: pending_.erase(uuid); break;
            case wait_result::failed: pending_.erase(uuid); ec = op->failure; break;
            case wait_result::cancelled: abandon(uuid, key, multi); ec = make_error_code(errc::cancelled); break;
            case wait_result::timed_out: abandon(uuid, key, multi); ec = make_error_code(errc::timeout); break;
        }
        if (ec) co_return std::pair{ec, core::reply{}};
        core::reply rep = std::move(*op->reply);
        if (!rep.acquired.value_or(false))
            ec = make_error_code(rep.error ? errc_from_wire(rep.code) : errc::would_block);
        co_return std::pair{ec, std::move(rep)};
    }

    asio::awaitable<result<lock_guard>> acquire(std::string key, acquire_options o) {
        co_await asio::this_coro::throw_if_cancelled(false);
        std::string uuid = next_id();
        bool keep = o.keep_locks_on_exit.value_or(opt_.keep_locks_on_exit);
        auto budget = wait_budget(o);
        core::request rq = req::lock{.uuid = uuid,
                                     .key = key,
                                     .ttl = o.ttl.value_or(opt_.ttl),
                                     .max = o.max,
                                     .wait = o.wait,
                                     .timeout = o.wait ? std::optional(budget) : std::nullopt,
                                     .mode = o.shared ? core::lock_mode::shared : core::lock_mode::exclusive,
                                     .keep_on_exit = keep,
                                     .force = false};
        auto [ec, rep] = co_await request_grant(uuid, rq, o, budget, key, false);
        if (ec) co_return failed<lock_guard>(ec);
        auto h = new_hold(uuid, keep);
        h->key = std::move(key);
        h->token = rep.token.value_or(0);
        co_return result<lock_guard>{error_code{}, lock_guard(std::move(h))};
    }

    asio::awaitable<result<multi_lock_guard>> acquire_many(std::vector<std::string> keys, acquire_options o) {
        co_await asio::this_coro::throw_if_cancelled(false);
        std::string uuid = next_id();
        bool keep = o.keep_locks_on_exit.value_or(opt_.keep_locks_on_exit);
        auto budget = wait_budget(o);
        core::request rq = req::acquire_many{.uuid = uuid,
                                             .keys = keys,
                                             .ttl = o.ttl.value_or(opt_.ttl),
                                             .wait = o.wait,
                                             .timeout = o.wait ? std::optional(budget) : std::nullopt,
                                             .keep_on_exit = keep};
        const std::string no_key;
        auto [ec, rep] = co_await request_grant(uuid, rq, o, budget, no_key, true);
        if (ec) co_return failed<multi_lock_guard>(ec);
        auto h = new_hold(uuid, keep);
        h->multi = true;
        h->keys = rep.keys;
        h->tokens = rep.fencing_tokens;
        co_return result<multi_lock_guard>{error_code{}, multi_lock_guard(std::move(h))};
    }

    asio::awaitable<result<std::monostate>> release(std::string key, std::string id, bool force) {
        co_await asio::this_coro::throw_if_cancelled(false);
        std::string uuid = next_id();
        std::optional<std::string> lock_id;
        if (!id.empty()) lock_id = id;
        core::request rq = req::unlock{uuid, key, lock_id, force};
        auto [ec, rep] = co_await call(uuid, rq);
        if (!ec && !rep.unlocked.value_or(false)) ec = make_error_code(errc::not_holder);
        co_return failed<std::monostate>(ec);
    }

    // The hold was claimed (released = true) by the initiating call.
    asio::awaitable<result<std::monostate>> release_hold(std::shared_ptr<hold> h) {
        co_await asio::this_coro::throw_if_cancelled(false);
        holds_.erase(h->id);
        std::string uuid = next_id();
        error_code ec;
        core::reply rep;
        if (h->multi) {
            core::request rq = req::release_many{uuid, h->id};
            std::tie(ec, rep) = co_await call(uuid, rq);
            if (!ec && !rep.released.value_or(false)) ec = make_error_code(errc::not_holder);
        } else {
            core::request rq = req::unlock{uuid, h->key, h->id, false};
            std::tie(ec, rep) = co_await call(uuid, rq);
            // The broker answers an unlock of a hold that already ended with a warning.
            if (!ec && (!rep.unlocked.value_or(false) || rep.warning)) ec = make_error_code(errc::lock_lost);
        }
        if (ec == errc::lock_lost) h->lost = true;
        co_return failed<std::monostate>(ec);
    }

    asio::awaitable<result<std::monostate>> extend_hold(std::shared_ptr<hold> h, std::chrono::milliseconds ttl) {
        co_await asio::this_coro::throw_if_cancelled(false);
        if (h->lost) co_return failed<std::monostate>(make_error_code(errc::lock_lost));
        if (h->released) co_return failed<std::monostate>(make_error_code(errc::not_holder));
        std::string uuid = next_id();
        std::string key = h->multi ? h->keys.front() : h->key;
        core::request rq = req::extend{uuid, key, h->id, ttl};
        auto [ec, rep] = co_await call(uuid, rq);
        if (ec == errc::not_holder) {
            h->lost = true;
            holds_.erase(h->id);
            ec = make_error_code(errc::lock_lost);
        }
        co_return failed<std::monostate>(ec);
    }

    // The destructor path of a guard: synchronous, on the strand.
    void drop_hold(const std::shared_ptr<hold>& h) {
        holds_.erase(h->id);
        if (h->multi) queue_release_many(h->id);
        else queue_unlock(h->key, h->id);
    }

    void close() {
        if (state_ == state::closed) return;
        state_ = state::closed;
        drop_connection(generation_, make_error_code(errc::closed));
        if (stop_connect_) stop_connect_->emit(asio::cancellation_type::terminal);
        connected_signal_.cancel();
        // Every request has failed above; an armed sweeper would only keep the executor busy.
        sweep_at_ = steady::time_point::max();
        ++sweep_generation_;
        sweeper_.cancel();
    }
};

}  // namespace detail

using detail::client_impl;
using detail::hold;

// ---- lock_guard -------------------------------------------------------------------------

namespace {
void queue_drop(const std::shared_ptr<hold>& h) noexcept {
    if (!h || h->lost || h->released.exchange(true)) return;
    try {
        if (auto owner = h->owner.lock()) asio::post(owner->strand_, [owner, h] { owner->drop_hold(h); });
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
bool lock_guard::owns_lock() const noexcept { return hold_ && !hold_->lost && !hold_->released; }
bool lock_guard::lost() const noexcept { return hold_ && hold_->lost; }
void lock_guard::detach() noexcept {
    if (!hold_) return;
    hold_->released = true;
    try {
        // Forget it on the strand too, so that a long-lived client does not collect dead entries.
        if (auto owner = hold_->owner.lock())
            asio::post(owner->strand_, [owner, id = hold_->id] { owner->holds_.erase(id); });
    } catch (...) {
    }
    hold_.reset();
}

namespace {
// Starts `op` on the hold's client, or fails with `early` (or `closed` when the client is gone)
// through a post, so that even an early failure never completes inside the initiating call.
template <class Op>
void run_on_owner(const std::shared_ptr<hold>& h, error_code early, asio::any_completion_handler<void(error_code)> handler,
                  Op&& op) {
    std::shared_ptr<client_impl> owner = h && !early ? h->owner.lock() : nullptr;
    if (!owner) {
        if (!early) early = make_error_code(errc::closed);
        asio::any_io_executor fallback = h ? h->ex : asio::any_io_executor(asio::system_executor());
        return asio::post(fallback, [handler = std::move(handler), fallback, early]() mutable {
            detail::complete(fallback, std::move(handler), early);
        });
    }
    owner->launch<std::monostate>(op(*owner), std::move(handler));
}
}  // namespace

void lock_guard::start_release(std::shared_ptr<hold> h, asio::any_completion_handler<void(error_code)> handler) {
    // Claimed here, in the initiating call, so that a guard destroyed right after starting its
    // release does not queue a second unlock, and a second release fails at once.
    error_code early;
    if (!h) early = make_error_code(errc::not_holder);
    else if (h->lost) early = make_error_code(errc::lock_lost);
    else if (h->released.exchange(true)) early = make_error_code(errc::not_holder);
    run_on_owner(h, early, std::move(handler), [h](client_impl& c) { return c.release_hold(h); });
}

void lock_guard::start_extend(std::shared_ptr<hold> h, std::chrono::milliseconds ttl,
                              asio::any_completion_handler<void(error_code)> handler) {
    error_code early;
    if (!h) early = make_error_code(errc::not_holder);
    run_on_owner(h, early, std::move(handler), [h, ttl](client_impl& c) { return c.extend_hold(h, ttl); });
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
bool multi_lock_guard::owns_lock() const noexcept { return hold_ && !hold_->lost && !hold_->released; }
bool multi_lock_guard::lost() const noexcept { return hold_ && hold_->lost; }


// ---- client -----------------------------------------------------------------------------

client::client(executor_type ex, client_options options)
    : impl_(std::make_shared<client_impl>(std::move(ex), std::move(options))) {}

client::~client() {
    // Runs close() on the strand; the impl lives on in the reader/writer until they finish.
    try {
        asio::post(impl_->strand_, [impl = impl_] { impl->close(); });
    } catch (...) {
    }
}

client::executor_type client::get_executor() const noexcept { return impl_->strand_; }
const client_options& client::options() const noexcept { return impl_->opt_; }

void client::close() {
    asio::post(impl_->strand_, [impl = impl_] { impl->close(); });
}

void client::start_connect(asio::any_completion_handler<void(error_code)> h) {
    auto impl = impl_;
    impl->launch<std::monostate>(
        [](std::shared_ptr<client_impl> c) -> asio::awaitable<client_impl::result<std::monostate>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            auto ec = co_await c->ensure_connected();
            co_return client_impl::failed<std::monostate>(ec);
        }(impl),
        std::move(h));
}

void client::start_acquire(std::string key, acquire_options o,
                           asio::any_completion_handler<void(error_code, lock_guard)> h) {
    impl_->launch<lock_guard>(impl_->acquire(std::move(key), o), std::move(h));
}

void client::start_acquire_many(std::vector<std::string> keys, acquire_options o,
                                asio::any_completion_handler<void(error_code, multi_lock_guard)> h) {
    impl_->launch<multi_lock_guard>(impl_->acquire_many(std::move(keys), o), std::move(h));
}

void client::start_release(std::string key, std::string id, bool force,
                           asio::any_completion_handler<void(error_code)> h) {
    impl_->launch<std::monostate>(impl_->release(std::move(key), std::move(id), force), std::move(h));
}

void client::start_ls(asio::any_completion_handler<void(error_code, std::vector<std::string>)> h) {
    auto impl = impl_;
    impl->launch<std::vector<std::string>>(
        [](std::shared_ptr<client_impl> c) -> asio::awaitable<client_impl::result<std::vector<std::string>>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            std::string uuid = c->next_id();
            core::request rq = req::ls{uuid};
            auto [ec, rep] = co_await c->call(uuid, rq);
            co_return client_impl::result<std::vector<std::string>>{ec, std::move(rep.ls_result)};
        }(impl),
        std::move(h));
}

void client::start_info(std::string key, asio::any_completion_handler<void(error_code, lock_info)> h) {
    auto impl = impl_;
    impl->launch<lock_info>(
        [](std::shared_ptr<client_impl> c, std::string k) -> asio::awaitable<client_impl::result<lock_info>> {
            co_await asio::this_coro::throw_if_cancelled(false);
            std::string uuid = c->next_id();
            core::request rq = req::lock_info{uuid, k};
            auto [ec, rep] = co_await c->call(uuid, rq);
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
            error_code ec_connect;
            if (!c->connected_now()) ec_connect = co_await c->ensure_connected();
            if (auto ec = ec_connect) co_return client_impl::result<std::chrono::microseconds>{ec, {}};
            std::string uuid = c->next_id();
            auto t0 = steady::now();
            core::request rq = req::ping{uuid, std::nullopt};
            auto [ec, rep] = co_await c->call(uuid, rq);
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
            std::string uuid = c->next_id();
            core::request rq = req::system_stats{uuid};
            auto [ec, rep] = co_await c->call(uuid, rq);
            co_return client_impl::result<boost::json::object>{ec, std::move(rep.stats)};
        }(impl),
        std::move(h));
}

}  // namespace lmx
