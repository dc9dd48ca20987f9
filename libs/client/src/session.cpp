#include "session.hpp"

#include <lmx/core/utf8.hpp>

#include <algorithm>

namespace lmx::detail {

namespace req = core::req;
namespace rep = core::rep;

namespace {

// Renews hold `h` (one of its keys stands for all of a multi-key hold).
core::request extend_request(const std::string& uuid, const hold& h, std::chrono::milliseconds ttl) {
    return req::extend{uuid, h.multi ? h.keys.front() : h.key, h.id, ttl};
}

}  // namespace

client_session::client_session(std::string prefix, std::chrono::milliseconds request_timeout,
                               std::weak_ptr<client_impl> owner, std::shared_ptr<const std::atomic<bool>> open)
    : prefix_(std::move(prefix)), request_timeout_(request_timeout), owner_(std::move(owner)), open_(std::move(open)) {}

steady::time_point client_session::next_wake() const noexcept {
    auto at = deadline_min_;
    if (!lease_events_.empty()) at = std::min(at, lease_events_.top().first);
    return at;
}

std::string client_session::next_id() {
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

std::uint64_t client_session::serial_of(std::string_view id) const noexcept {
    if (id.size() <= prefix_.size() + 1 || id.size() > prefix_.size() + 11 || !id.starts_with(prefix_) ||
        id[prefix_.size()] != '.' || (id.size() > prefix_.size() + 2 && id.back() == '0'))
        return 0;
    std::uint64_t n = 0;
    for (std::size_t i = id.size(); i-- > prefix_.size() + 1;) {
        const char c = id[i];
        int d = -1;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'z')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'Z')
            d = c - 'A' + 36;
        if (d < 0) return 0;
        n = n * 62 + static_cast<std::uint64_t>(d);
    }
    return n;
}

std::string client_session::invalid_key(std::string_view key) const {
    if (key.empty()) return "a key must not be empty";
    if (key.size() > limits_.max_key_length)
        return "the key is " + std::to_string(key.size()) + " bytes, over the broker's limit of " +
               std::to_string(limits_.max_key_length);
    if (!core::valid_utf8(key)) return "the key is not valid UTF-8";
    return {};
}

std::string client_session::invalid_options(const acquire_options& o) const {
    const auto longest = limits_.max_duration;
    if (o.ttl && *o.ttl != no_expiry && o.ttl->count() <= 0) return "ttl must be positive (no_expiry for none)";
    if (o.ttl && *o.ttl != no_expiry && *o.ttl > longest)
        return "ttl is over the broker's limit of " + std::to_string(longest.count()) + " ms (no_expiry for none)";
    if (o.timeout && o.timeout->count() < 0) return "timeout must not be negative";
    if (o.timeout && *o.timeout != wait_forever && *o.timeout > longest)
        return "timeout is over the broker's limit of " + std::to_string(longest.count()) +
               " ms (wait_forever for none)";
    if (o.max && *o.max == 0) return "max must be at least 1";
    return {};
}

request_ptr client_session::open_request(request_op::kind k, std::chrono::milliseconds timeout) {
    request_ptr o;
    if (spare_.empty()) {
        o = std::make_unique<request_op>();
    } else {
        o = std::move(spare_.back());
        spare_.pop_back();
    }
    o->k = k;
    o->uuid = next_id();
    o->serial = counter_;
    o->caller = k == request_op::kind::renew ? 0 : counter_;
    o->timeout = timeout;
    return o;
}

// The record keeps its strings' storage for the next use.
void client_session::recycle(request_ptr o) {
    if (spare_.size() >= 256) return;
    o->raw = o->keep = o->renew = o->notify_queued = false;
    o->key.clear();
    o->frame.clear();
    o->deadline = steady::time_point::max();
    o->h.reset();
    spare_.push_back(std::move(o));
}

std::uint64_t client_session::submit(request_ptr o, const core::request& r, steady::time_point now, bool immediate) {
    const auto caller = o->caller;
    switch (link_) {
        case link::closed: fail(std::move(o), make_error_code(errc::closed), now); break;
        case link::up: send(std::move(o), &r, now); break;
        case link::handshake:
            if (immediate) {
                send(std::move(o), &r, now);
                break;
            }
            [[fallthrough]];
        case link::down:
            core::encode_request(r, o->frame);
            waiting_.push_back(std::move(o));
            break;
    }
    return caller;
}

// `r` null: the request is already encoded in o->frame.
void client_session::send(request_ptr o, const core::request* r, steady::time_point now) {
    o->sent = now;
    o->deadline = o->timeout == std::chrono::milliseconds::max() ? steady::time_point::max() : now + o->timeout;
    deadline_min_ = std::min(deadline_min_, o->deadline);
    if (r) {
        core::encode_request(*r, outbox_);
    } else {
        outbox_ += o->frame;
        o->frame.clear();
    }
    const auto serial = o->serial;
    pending_.emplace(serial, std::move(o));
}

void client_session::send_oneway(const core::request& r) {
    if (link_ == link::up) core::encode_request(r, outbox_);
}

void client_session::cancel(std::uint64_t caller, steady::time_point now) {
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if ((*it)->caller != caller) continue;
        request_ptr o = std::move(*it);
        waiting_.erase(it);
        return fail(std::move(o), make_error_code(errc::cancelled), now);
    }
    // A confirm has another serial than its caller: a grant being confirmed is not cancelled.
    auto it = pending_.find(caller);
    if (it == pending_.end() || it->second->caller != caller) return;  // already completed
    request_ptr o = std::move(it->second);
    pending_.erase(it);
    abandon(*o);
    fail(std::move(o), make_error_code(errc::cancelled), now);
}

// Withdraws a waiting acquire at the broker; a grant that still arrives is given back at once.
void client_session::abandon(const request_op& o) {
    if (o.k != request_op::kind::grant && o.k != request_op::kind::grant_many) return;
    if (link_ != link::up) return;
    abandoned_[o.uuid] = o.k == request_op::kind::grant_many ? std::string() : o.key;
    std::string cancel_id = next_id();
    cancels_[cancel_id] = o.uuid;
    send_oneway(req::cancel{std::move(cancel_id), o.uuid});
}

std::uint64_t client_session::release_hold(std::shared_ptr<hold> h, std::chrono::milliseconds timeout,
                                           steady::time_point now) {
    auto o = open_request(request_op::kind::release_hold, timeout);
    if (expire_if_due(h, now)) {
        // The guard already reports the hold lost; its release must not say otherwise.
        const auto caller = o->caller;
        fail(std::move(o), make_error_code(errc::lock_lost), now);
        return caller;
    }
    end_hold(h, errc::released);
    const core::request rq = h->multi ? core::request(req::release_many{o->uuid, h->id})
                                      : core::request(req::unlock{o->uuid, h->key, h->id, false});
    o->h = std::move(h);
    return submit(std::move(o), rq, now);
}

std::uint64_t client_session::extend_hold(std::shared_ptr<hold> h, std::chrono::milliseconds ttl,
                                          std::chrono::milliseconds timeout, steady::time_point now) {
    auto o = open_request(request_op::kind::extend_hold, timeout);
    const auto caller = o->caller;
    error_code early;
    if (expire_if_due(h, now) || h->lost)
        early = make_error_code(errc::lock_lost);
    else if (h->released)
        early = make_error_code(errc::not_holder);
    else if (ttl != no_expiry && ttl.count() <= 0)
        early = make_error_code(errc::bad_request);
    if (early) {
        fail(std::move(o), early, now);
        return caller;
    }
    o->ttl = ttl;
    const core::request rq = extend_request(o->uuid, *h, ttl);
    o->h = std::move(h);
    return submit(std::move(o), rq, now);
}

void client_session::give_back(const std::shared_ptr<hold>& h, errc why) {
    end_hold(h, why);
    if (h->multi)
        send_oneway(req::release_many{next_id(), h->id});
    else
        send_oneway(req::unlock{next_id(), h->key, h->id, false});
}

// Ends a hold whose lease ran out by `now` (given back, lease_expired). Its lease event does this,
// and so does a release or extend that comes first: the guard reports the hold lost from that
// moment on, so neither may succeed after it.
bool client_session::expire_if_due(const std::shared_ptr<hold>& h, steady::time_point now) {
    const auto e = h->expires.load();
    if (h->ended.load() || e == no_deadline || steady::time_point(steady::duration(e)) > now) return false;
    give_back(h, errc::lease_expired);
    return true;
}

void client_session::end_hold(const std::shared_ptr<hold>& h, errc why) {
    int expected = 0;
    if (!h->ended.compare_exchange_strong(expected, static_cast<int>(why))) return;
    if (why != errc::released) h->lost = true;
    holds_.erase(h->serial);
    out_.ended.emplace_back(h, why);
}

std::shared_ptr<hold> client_session::new_hold(const request_op& o) {
    auto h = std::make_shared<hold>();
    h->owner = owner_;
    h->client_open = open_;
    h->id = o.uuid;
    h->serial = o.serial;
    h->keep = o.keep;
    h->renew = o.renew;
    holds_[o.serial] = h;
    return h;
}

std::vector<std::shared_ptr<hold>> client_session::live_holds() const {
    std::vector<std::shared_ptr<hold>> out;
    for (auto& [id, w] : holds_)
        if (auto h = w.lock()) out.push_back(std::move(h));
    return out;
}

void client_session::complete(request_ptr o, error_code ec, std::shared_ptr<hold> h, bool from_reply,
                              std::unique_ptr<core::typed_reply> r, std::string message) {
    if (o->caller) out_.done.push_back({o->caller, ec, std::move(h), std::move(r), std::move(message), from_reply});
    recycle(std::move(o));
}

void client_session::finish(request_ptr o, core::typed_reply&& r, steady::time_point now) {
    using k = request_op::kind;
    error_code ec;
    const auto* failure = std::get_if<rep::failed>(&r);
    const error_code refusal = failure ? make_error_code(errc_from_wire(failure->code)) : error_code{};
    std::string message = failure ? failure->message : std::string();
    if (o->k != k::grant && o->k != k::grant_many) rtt_ = now - o->sent;
    switch (o->k) {
        case k::renew: return renewed(std::move(o), r, now);
        case k::call:
            if (failure && !o->raw) ec = refusal;
            return complete(std::move(o), ec, nullptr, true, std::make_unique<core::typed_reply>(std::move(r)),
                            std::move(message));
        case k::grant:
        case k::grant_many: {
            auto* one = o->k == k::grant ? std::get_if<rep::granted>(&r) : nullptr;
            auto* many = o->k == k::grant_many ? std::get_if<rep::granted_many>(&r) : nullptr;
            if (!one && !many) {
                ec = failure ? refusal : make_error_code(errc::would_block);
                return complete(std::move(o), ec, nullptr, true, nullptr, std::move(message));
            }
            auto h = new_hold(*o);
            if (one) {
                h->key = o->key;
                h->token = one->token;
            } else {
                h->multi = true;
                h->keys = std::move(many->keys);
                h->tokens = std::move(many->tokens);
            }
            // The broker's lease began at the grant, which the client only knows came after its
            // request left. After a long wait in line that bound says little: a renewal sent now
            // gives a fresh one before the caller gets the guard.
            if (o->ttl != no_expiry && o->ttl.count() > 0 && now - o->sent > o->ttl / 3)
                return confirm_grant(std::move(o), std::move(h), now);
            set_lease(h, o->sent, o->ttl);
            return complete(std::move(o), ec, std::move(h), true);
        }
        case k::confirm: {
            auto h = std::move(o->h);
            if (const auto* x = std::get_if<rep::extended>(&r); x && x->ok && !h->ended.load()) {
                set_lease(h, o->sent, o->ttl);
            } else {
                // The hold ended between the grant and the renewal (its lease, or a force).
                end_hold(h, errc::lease_expired);
                ec = make_error_code(errc::lease_expired);
                h.reset();
            }
            return complete(std::move(o), ec, std::move(h), true, nullptr, std::move(message));
        }
        case k::unlock:
            if (failure)
                ec = refusal;
            else if (const auto* u = std::get_if<rep::unlocked>(&r); !u || !u->ok)
                ec = make_error_code(errc::not_holder);
            // Unlocking is idempotent on the wire; the caller learns that the id held nothing.
            else if (!u->held && !o->key.empty())
                ec = make_error_code(errc::not_held);
            break;
        case k::release_hold:
            if (failure) {
                ec = refusal;
            } else if (o->h->multi) {
                if (const auto* x = std::get_if<rep::released>(&r); !x || !x->ok)
                    ec = make_error_code(errc::not_holder);
            } else if (const auto* u = std::get_if<rep::unlocked>(&r); !u || !u->ok || u->warned) {
                // The broker answers an unlock of a hold that already ended with a warning.
                ec = make_error_code(errc::lock_lost);
            }
            if (ec == errc::lock_lost) o->h->lost = true;
            break;
        case k::extend_hold:
            if (failure) ec = refusal;
            if (ec == errc::not_holder) {
                end_hold(o->h, errc::lease_expired);
                ec = make_error_code(errc::lock_lost);
            } else if (!ec && !o->h->ended.load()) {
                set_lease(o->h, o->sent, o->ttl);
            }
            break;
    }
    complete(std::move(o), ec, nullptr, true, nullptr, std::move(message));
}

// `o` ends without a reply (connection lost, closed, cancelled, timed out).
void client_session::fail(request_ptr o, error_code ec, steady::time_point now) {
    if (o->k == request_op::kind::renew) {
        // Tried again once the connection is back (or the lease runs out first).
        if (auto h = std::move(o->h)) {
            h->renewing = false;
            if (!h->ended.load() && ec != errc::closed) retry_renewal(h, now);
        }
        return recycle(std::move(o));
    }
    // Unconfirmed, a late grant is not handed out: it ends here and is given back.
    if (o->k == request_op::kind::confirm && o->h && !o->h->ended.load()) give_back(o->h, errc::lease_expired);
    complete(std::move(o), ec, nullptr, false);
}

void client_session::on_reply(core::typed_reply&& r, steady::time_point now) {
    const std::string& id = core::reply_uuid(r);
    const std::uint64_t serial = serial_of(id);
    if (const auto* lost = std::get_if<rep::lock_lost>(&r)) {
        if (auto it = holds_.find(serial); serial && it != holds_.end()) {
            if (auto h = it->second.lock())
                end_hold(h, lost->reason == "forced" ? errc::forced : errc::lease_expired);
            else
                holds_.erase(it);
        }
        return;
    }
    if (auto it = pending_.find(serial); serial && it != pending_.end()) {
        // A queued notice is progress, not the answer: keep waiting for the grant.
        if (const auto* q = std::get_if<rep::queued>(&r)) {
            if (it->second->notify_queued) out_.queued.emplace_back(it->second->caller, q->position);
            return;
        }
        request_ptr o = std::move(it->second);
        pending_.erase(it);
        return finish(std::move(o), std::move(r), now);
    }
    if (auto it = abandoned_.find(id); it != abandoned_.end()) {
        // A grant that crossed our withdrawal: give it back at once.
        if (std::holds_alternative<rep::granted>(r))
            send_oneway(req::unlock{next_id(), it->second, id, false});
        else if (std::holds_alternative<rep::granted_many>(r))
            send_oneway(req::release_many{next_id(), id});
        // Anything but a queued notice is the request's last answer.
        if (!std::holds_alternative<rep::queued>(r)) abandoned_.erase(it);
        return;
    }
    if (std::holds_alternative<rep::cancelled>(r)) {
        // Any answer to the target (a grant, a rejection) came before this reply on the same
        // connection, so there is nothing left to wait for either way.
        if (auto it = cancels_.find(id); it != cancels_.end()) {
            abandoned_.erase(it->second);
            cancels_.erase(it);
        }
    }
}

void client_session::on_transport_up() {
    if (link_ == link::closed) return;
    link_ = link::handshake;
    outbox_.clear();
}

void client_session::on_handshake_done(steady::time_point now) {
    if (link_ == link::closed) return;
    link_ = link::up;
    auto ops = std::move(waiting_);
    waiting_.clear();
    for (auto& o : ops) send(std::move(o), nullptr, now);
}

void client_session::on_connect_failed(error_code ec, steady::time_point now) {
    auto ops = std::move(waiting_);
    waiting_.clear();
    for (auto& o : ops) fail(std::move(o), link_ == link::closed || !ec ? make_error_code(errc::closed) : ec, now);
}

void client_session::on_disconnect(error_code why, steady::time_point now) {
    const bool closing = link_ == link::closed;
    if (!closing) link_ = link::down;
    outbox_.clear();
    auto failed = std::move(pending_);
    pending_.clear();
    for (auto& [id, o] : failed) fail(std::move(o), why, now);
    for (auto& h : live_holds()) {
        if (h->keep && !closing) continue;  // it lives on at the broker
        end_hold(h, closing ? errc::closed : errc::connection_lost);
    }
    std::erase_if(holds_, [](const auto& entry) { return entry.second.expired(); });
    abandoned_.clear();
    cancels_.clear();
}

void client_session::lose_kept_holds() {
    for (auto& h : live_holds()) end_hold(h, errc::connection_lost);
    holds_.clear();
}

void client_session::close(steady::time_point now) {
    if (link_ == link::closed) return;
    link_ = link::closed;
    for (auto& h : live_holds()) end_hold(h, errc::closed);
    on_disconnect(make_error_code(errc::closed), now);
    on_connect_failed(make_error_code(errc::closed), now);
    // Every request has failed: nothing is due any more.
    deadline_min_ = steady::time_point::max();
    lease_events_ = {};
}

void client_session::on_time(steady::time_point now) {
    if (deadline_min_ <= now) sweep(now);
    tend_leases(now);
}

// Fails every request past its deadline (withdrawing acquires).
void client_session::sweep(steady::time_point now) {
    deadline_min_ = steady::time_point::max();
    std::vector<std::uint64_t> expired;
    for (auto& [id, o] : pending_) {
        if (o->deadline <= now)
            expired.push_back(id);
        else
            deadline_min_ = std::min(deadline_min_, o->deadline);
    }
    for (auto id : expired) {
        auto it = pending_.find(id);
        request_ptr o = std::move(it->second);
        pending_.erase(it);
        abandon(*o);
        fail(std::move(o), make_error_code(errc::timeout), now);
    }
}

// Renews a hold granted late before its guard is handed out (see finish).
void client_session::confirm_grant(request_ptr grant, std::shared_ptr<hold> h, steady::time_point now) {
    auto c = open_request(request_op::kind::confirm, request_timeout_);
    c->caller = grant->caller;
    c->ttl = grant->ttl;
    c->h = h;
    grant->caller = 0;  // completed by the confirm
    recycle(std::move(grant));
    const core::request rq = extend_request(c->uuid, *h, c->ttl);
    submit(std::move(c), rq, now);
}

// A lease counts from when its request was sent (the broker's starts later), less a margin for
// the round trip: max(5% of the ttl, twice the last round trip measured).
std::chrono::milliseconds client_session::margin(std::chrono::milliseconds ttl) const {
    return std::max(ttl / 20, std::chrono::ceil<std::chrono::milliseconds>(2 * rtt_));
}

void client_session::set_lease(const std::shared_ptr<hold>& h, steady::time_point sent, std::chrono::milliseconds ttl) {
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

void client_session::schedule(const std::shared_ptr<hold>& h, steady::time_point at) {
    lease_events_.push({at, h->serial});
}

// Ends the leases that ran out (whether or not the broker can be reached) and renews those due.
void client_session::tend_leases(steady::time_point now) {
    while (!lease_events_.empty() && lease_events_.top().first <= now) {
        const auto serial = lease_events_.top().second;
        lease_events_.pop();
        auto it = holds_.find(serial);
        if (it == holds_.end()) continue;
        auto h = it->second.lock();
        if (!h || h->ended.load()) continue;
        // The broker's lease ends a little later (or a renewal it answers late extended it): a
        // hold whose lease ran out is given back now rather than leave the key taken by nobody.
        if (!expire_if_due(h, now) && h->renew && !h->renewing && h->renew_at <= now) renew(h, now);
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
}

void client_session::renew(const std::shared_ptr<hold>& h, steady::time_point now) {
    h->renewing = true;
    auto o = open_request(request_op::kind::renew, request_timeout_);
    o->ttl = h->ttl;
    o->h = h;
    const core::request rq = extend_request(o->uuid, *h, h->ttl);
    submit(std::move(o), rq, now);
}

void client_session::renewed(request_ptr o, const core::typed_reply& r, steady::time_point now) {
    auto h = std::move(o->h);
    const auto sent = o->sent;
    const auto ttl = o->ttl;
    recycle(std::move(o));
    h->renewing = false;
    if (h->ended.load()) return;
    if (const auto* x = std::get_if<rep::extended>(&r); x && x->ok) return set_lease(h, sent, ttl);
    // The broker no longer has it: a lock-lost said why already, or the lease ran out.
    if (const auto* f = std::get_if<rep::failed>(&r); f && errc_from_wire(f->code) == errc::not_holder)
        return end_hold(h, errc::lease_expired);
    retry_renewal(h, now);
}

// A renewal that failed (no answer, no connection) is tried again soon, until the lease's own
// deadline ends the hold.
void client_session::retry_renewal(const std::shared_ptr<hold>& h, steady::time_point now) {
    const auto pause = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(h->ttl / 10),
                                  std::chrono::milliseconds(20), std::chrono::milliseconds(1000));
    h->renew_at = now + pause;
    schedule(h, h->renew_at);
}

}  // namespace lmx::detail
