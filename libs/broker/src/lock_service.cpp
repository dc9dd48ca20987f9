#include "lock_service.hpp"

#include <lmx/broker/broker.hpp>
#include <lmx/core/failpoint.hpp>
#include <lmx/core/memory_store.hpp>
#include <lmx/core/scoped_value.hpp>
#include <lmx/core/store_answers.hpp>
#include <lmx/version.hpp>

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <limits>
#include <span>

namespace lmx::detail {

namespace req = core::req;
using core::time_point;

namespace {

// The session under which live-mutex's read/write-lock readers hold their group locks; no
// connection ever gets this id.
constexpr core::session_id rw_group_session = std::numeric_limits<core::session_id>::max();

// live-mutex clients announce their package version; any 0.2.x speaks our protocol.
bool compatible_live_mutex(std::string_view v) { return v.empty() || v.starts_with("0.2.") || v == "0.2"; }

std::optional<time_point> deadline_after(std::optional<std::chrono::milliseconds> timeout, time_point now) {
    if (!timeout) return std::nullopt;
    return now + *timeout;
}

}  // namespace

lock_service::store_factory lock_service::in_memory() {
    return [](core::effect_sink& sink, const core::table_config& config) -> std::unique_ptr<core::lock_store> {
        return std::make_unique<core::memory_store>(sink, config);
    };
}

lock_service::lock_service(service_host& host, service_config config, const store_factory& make_store)
    : host_(host), config_(std::move(config)) {
    store_ = make_store(*this, config_.table);
    rw_ = std::make_unique<core::rw_locks>(*store_, static_cast<core::rw_output&>(*this), rw_group_session);
    set_events();
}

// Events go to watchers, and tell the slow-request log when a hold ends.
void lock_service::set_events() { store_->set_events(!watchers_.empty() || config_.slow_hold.count() > 0); }

namespace {

std::string quoted(std::string_view text) { return boost::json::serialize(boost::json::string_view(text)); }

}  // namespace

// The request log (debug level): what each client asked, by type, id and key, never its token.
void lock_service::log_request(const client& c, const core::request& r) const {
    std::string line = "request " + std::string(core::type_name(r));
    if (const auto id = core::uuid_of(r); !id.empty()) line += " id " + quoted(id);
    std::visit(
        [&](const auto& one) {
            if constexpr (requires { std::string_view(one.key); }) {
                line += " key " + quoted(one.key);
            } else if constexpr (requires { one.keys.size(); }) {
                line += " keys " + std::to_string(one.keys.size());
            }
        },
        r);
    log_line(log_level::debug, line + " from " + c.remote);
}

void lock_service::log_slow(const core::effect& e, std::string_view what, std::chrono::steady_clock::duration took) {
    const auto now = std::chrono::steady_clock::now();
    if (now - slow_window_ >= std::chrono::seconds(1)) {
        if (slow_held_back_ > 0)
            log_line(log_level::warn,
                     std::to_string(slow_held_back_) + " more slow waits and holds in the last second, not logged");
        slow_window_ = now;
        slow_lines_ = 0;
        slow_held_back_ = 0;
    }
    if (++slow_lines_ > slow_lines_per_second) {
        ++slow_held_back_;
        return;
    }
    const client* c = e.session ? host_.find(e.session) : nullptr;
    if (!c && closing_ && closing_->id == e.session) c = closing_;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
    std::string key = e.multi ? std::to_string(e.keys.size()) + " keys" : "key " + quoted(e.key);
    log_line(log_level::warn, "slow " + std::string(what) + " " + std::to_string(ms) + " ms: " + key + ", lock id " +
                                  quoted(e.id) + ", client " + (c ? c->remote : std::string("(gone)")));
}

lock_service::~lock_service() = default;

void lock_service::serve(client& c, core::request& r, time_point now) {
    if (log_enabled(log_level::debug)) log_request(c, r);
    std::visit([&](auto& one) { serve(c, one, now); }, r);
    rw_->settle(now);
}

void lock_service::refuse(client& c, const core::parse_error& err) {
    std::string& out = host_.frames(c);
    // Answer in the shape the request's type expects, so clients route it to the caller.
    if (err.type == "lock" && !err.uuid.empty())
        core::write_lock_rejected(out, err.uuid, err.key, err.code, err.message);
    else if (err.type == "unlock" && !err.uuid.empty())
        core::write_unlock_error(out, err.uuid, err.key, err.code, err.message);
    else if (err.type == "acquire-many" && !err.uuid.empty())
        core::write_acquire_many_error(out, err.uuid, std::span<const std::string>{}, err.code, err.message);
    // live-mutex's client completes a request as failed only on a reply of its own type.
    else if (err.code == core::errc::unknown_type && !err.uuid.empty() && !err.type.empty() && err.type.size() <= 64)
        core::write_unknown_type(out, err.type, err.uuid, err.key, err.message);
    else
        core::write_error(out, err);
}

void lock_service::expire(time_point now) {
    store_->expire(now);
    rw_->settle(now);
}

void lock_service::settle(time_point now) { rw_->settle(now); }

void lock_service::stop_store() noexcept {
    stopping_ = true;
    store_->stop();
}

bool lock_service::resume_grants(time_point now) {
    const bool resumed = store_->resume_grants(now);
    rw_->settle(now);
    return resumed;
}

std::optional<time_point> lock_service::next_deadline() { return store_->next_deadline(); }

void lock_service::close(client& c, time_point now) {
    if (c.watching) stop_watching(c);
    // The slow-request log names the client whose holds end with its connection.
    const core::scoped_value<const client*> closing(closing_, &c);
    store_->close_session(c.id, now);
    rw_->close_session(c.id, now);
    rw_->settle(now);
}

bool lock_service::idle(const client& c) const {
    return !c.watching && store_->session_requests(c.id) == 0 && !rw_->tracks(c.id);
}

bool lock_service::announce_connections(std::size_t open) {
    bool any = false;
    for (client* w : watchers_) {
        if (!w->watch_keys.empty() || !host_.find(w->id)) continue;
        core::write_connections_event(host_.frames(*w), open);
        any = true;
    }
    return any;
}

void lock_service::add_figures(core::broker_stats& st, time_point now) {
    const auto c = store_->counters();
    st.keys = c.keys;
    st.holders = c.holders;
    st.waiters = c.waiters;
    st.grants = c.grants;
    st.releases = c.releases;
    st.expirations = c.expirations;
    st.timeouts = c.timeouts;
    if (top_at_ == time_point{} || now - top_at_ >= std::chrono::seconds(1)) {
        top_cache_ = store_->top_contended(10);
        top_at_ = now;
    }
    st.top_contended = top_cache_;
}

core::fencing_token lock_service::reserve_tokens(core::fencing_token needed) { return host_.reserve_tokens(needed); }

std::string* lock_service::frames_for(core::session_id id) {
    client* c = host_.find(id);
    return c ? &host_.frames(*c) : nullptr;
}

void lock_service::on_effect(const core::effect& e) {
    using k = core::effect_kind;
    if (e.kind == k::event) {
        const bool ended = e.event == core::event_kind::released || e.event == core::event_kind::expired ||
                           e.event == core::event_kind::forced;
        // Not the holds that end with the broker's stop, nor those of live-mutex's read/write
        // locks (held in the name of a group); a multi-key hold once, not once per key.
        if (ended && config_.slow_hold.count() > 0 && e.since != time_point{} && !stopping_ &&
            e.session != rw_group_session &&
            !(e.id == last_slow_hold_ && e.since == last_slow_since_ && e.session == last_slow_session_)) {
            const auto held = std::chrono::steady_clock::now() - e.since;
            if (held > config_.slow_hold) {
                last_slow_hold_ = e.id;
                last_slow_since_ = e.since;
                last_slow_session_ = e.session;
                const bool with_connection = closing_ && closing_->id == e.session;
                log_slow(e,
                         e.event == core::event_kind::expired  ? "hold (lease expired)"
                         : e.event == core::event_kind::forced ? "hold (forced)"
                         : with_connection                     ? "hold (ended with its connection)"
                                                               : "hold (released)",
                         held);
            }
        }
        return route_event(e);
    }
    if (e.session == rw_group_session) return rw_->defer(e);
    if (e.kind == k::queued && !e.multi && LMX_FAILPOINT("grant.double").error()) return fake_grant(e);
    // A retried request that already holds gets no second grant: the first is on its way, and
    // live-mutex clients answer an unexpected grant with lock-received-rejected, which would
    // release the hold they believe they have.
    if (e.kind == k::granted && e.repeat) return;
    if (e.kind == k::granted) {
        waits_.observe(e.waited);
        if (config_.slow_wait.count() > 0 && e.waited > config_.slow_wait) log_slow(e, "wait", e.waited);
    }
    // A lock request with queuedNotice:false waits for its answer without a notice.
    if (e.kind == k::queued && !e.notice) return;
    client* c = host_.find(e.session);
    if (!c) return;
    if (core::is_answer(e.kind)) {
        if (!e.uuid.empty()) core::write_answer(host_.frames(*c), e);
        return;
    }
    if (e.kind == k::lock_lost && c->live_mutex) return;  // its client only warns about unknown ids
    std::string& out = host_.frames(*c);
    switch (e.kind) {
        case k::granted:
            if (e.multi)
                core::write_acquire_many_granted(out, e.id, e.keys, e.id);
            else
                core::write_lock_granted(out, e.id, e.key, e.token, e.waiters, rw_->readers(e.key, e.readers));
            break;
        case k::queued:
            if (e.multi)
                core::write_acquire_many_queued(out, e.id, e.keys, e.key, e.waiters);
            else
                core::write_lock_queued(out, e.id, e.key, e.waiters, rw_->readers(e.key, e.readers), e.position);
            break;
        case k::refused:
            if (e.multi)
                core::write_acquire_many_refused(out, e.id, e.keys, e.key, e.waiters);
            else
                core::write_lock_refused(out, e.id, e.key, e.waiters);
            break;
        case k::rejected:
            if (e.multi)
                core::write_acquire_many_error(out, e.id, e.keys, e.code);
            else
                core::write_lock_rejected(out, e.id, e.key, e.code);
            break;
        case k::lock_lost:
            if (e.multi) {
                for (auto& kt : e.keys) core::write_lock_lost(out, kt.key, e.id, e.reason);
            } else {
                core::write_lock_lost(out, e.key, e.id, e.reason);
            }
            break;
        default: break;
    }
}

// Failpoint grant.double: answers a waiting request with a grant the store never made, so that
// tests can prove the safety checker notices a broker that hands one lock to two.
void lock_service::fake_grant(const core::effect& e) {
    if (std::string* out = frames_for(e.session))
        core::write_lock_granted(*out, e.id, e.key, store_->last_token() + 1, e.waiters, e.readers);
}

void lock_service::route_event(const core::effect& e) {
    for (client* w : watchers_) {
        if (!w->watch_keys.empty() && !w->watch_keys.contains(std::string(e.key))) continue;
        if (!host_.find(w->id)) continue;
        core::write_event(host_.frames(*w), e.event, e.key, e.id, e.token, e.waiters);
    }
}

void lock_service::stop_watching(client& c) {
    c.watching = false;
    c.watch_keys.clear();
    std::erase(watchers_, &c);
    set_events();
}

void lock_service::serve(client& c, req::version& r, time_point) {
    c.live_mutex = true;
    if (compatible_live_mutex(r.value)) return;
    core::write_version_mismatch(host_.frames(c), r.value, LMX_VERSION_STRING);
}

void lock_service::serve(client& c, req::hello& r, time_point) {
    static constexpr std::array<std::string_view, 12> features = {
        "semaphore", "shared", "ttl",   "fencing",      "timeout",  "acquire-many",
        "extend",    "cancel", "watch", "keep-on-exit", "rw-locks", "shared-store"};
    const std::span<const std::string_view> told(features.data(), features.size() - (store_->shared() ? 0 : 1));
    core::write_hello(host_.frames(c), r.uuid, "lmx/" LMX_VERSION_STRING, LMX_PROTOCOL_VERSION, std::to_string(c.id),
                      told, config_.epoch, &config_.limits,
                      config_.auth_on ? detail::to_string(c.role) : std::string_view{});
}

void lock_service::serve(client& c, req::lock& r, time_point now) {
    if (rw_->lock(c.id, r, deadline_after(r.timeout, now), now)) return;
    store_->acquire({.session = c.id,
                     .id = r.uuid,
                     .key = r.key,
                     .ttl = r.ttl,
                     .max = r.max,
                     .wait = r.wait,
                     .wait_deadline = deadline_after(r.timeout, now),
                     .mode = r.mode,
                     .keep_on_exit = r.keep_on_exit,
                     .queued_notice = r.queued_notice},
                    now);
}

void lock_service::serve(client& c, req::unlock& r, time_point now) {
    if (rw_->unlock(c.id, r, now)) return;
    // Any client may end a hold or a wait whose id it knows; every holder at once is the admin's.
    if (r.force && !r.lock_id && c.role != detail::role::admin)
        return core::write_unlock_error(host_.frames(c), r.uuid, r.key, core::errc::forbidden,
                                        "releasing every holder of a key needs the admin role; name the lock id");
    const core::reply_to to{.session = c.id, .uuid = r.uuid};
    if (r.lock_id && r.force)
        store_->force_release(to, r.key, *r.lock_id, now);
    else if (r.lock_id)
        store_->release(to, r.key, *r.lock_id, now);
    else if (r.force)
        store_->force_release(to, r.key, std::nullopt, now);
    else
        store_->release_own(to, r.key, now);
}

void lock_service::serve(client&, req::lock_received&, time_point) {}

void lock_service::serve(client& c, req::lock_client_timeout& r, time_point now) {
    if (!rw_->abandon(c.id, r.uuid, now)) store_->abandon(c.id, r.uuid, now);
}

void lock_service::serve(client& c, req::lock_client_error& r, time_point now) {
    if (!rw_->abandon(c.id, r.uuid, now)) store_->abandon(c.id, r.uuid, now);
}

template <req::rw_message_kind K>
void lock_service::serve(client& c, req::rw_message<K>& r, time_point now) {
    rw_->message(c.id, K, r.uuid, r.key, now);
}

void lock_service::serve(client& c, req::lock_received_rejected& r, time_point now) {
    store_->abandon(c.id, r.lock_id.value_or(r.uuid), now);
}

void lock_service::serve(client& c, req::cancel& r, time_point now) {
    store_->cancel({.session = c.id, .uuid = r.uuid}, r.target, now);
}

void lock_service::serve(client& c, req::acquire_many& r, time_point now) {
    std::vector<std::string_view> keys(r.keys.begin(), r.keys.end());
    store_->acquire_many({.session = c.id,
                          .id = r.uuid,
                          .keys = keys,
                          .ttl = r.ttl,
                          .wait = r.wait,
                          .wait_deadline = deadline_after(r.timeout, now),
                          .keep_on_exit = r.keep_on_exit},
                         now);
}

void lock_service::serve(client& c, req::release_many& r, time_point now) {
    store_->release_many({.session = c.id, .uuid = r.uuid}, r.lock_id, now);
}

void lock_service::serve(client& c, req::extend& r, time_point now) {
    store_->extend({.session = c.id, .uuid = r.uuid}, r.key, r.lock_id, r.ttl, now);
}

// A page at a time, so that no answer keeps the loop busy for long.
void lock_service::serve(client& c, req::ls& r, time_point) {
    const std::size_t limit = std::min<std::size_t>(r.limit.value_or(config_.max_list), config_.max_list);
    auto page = store_->list_keys(r.cursor.value_or(0), limit);
    core::write_ls(host_.frames(c), r.uuid, page.keys, page.next);
}

void lock_service::serve(client& c, req::lock_info& r, time_point now) {
    core::write_lock_info(host_.frames(c), r.uuid, store_->info(r.key, config_.max_list), now);
}

void lock_service::serve(client& c, req::ping& r, time_point) {
    const auto wall =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    core::write_pong(host_.frames(c), r.uuid, r.timestamp.value_or(wall), wall);
}

void lock_service::serve(client& c, req::system_stats& r, time_point) {
    const auto st = host_.stats();
    core::write_system_stats(host_.frames(c), r.uuid, st);
}

void lock_service::serve(client& c, req::watch& r, time_point) {
    if (!c.watching) watchers_.push_back(&c);
    c.watching = true;
    c.watch_keys.clear();
    if (r.keys) c.watch_keys.insert(r.keys->begin(), r.keys->end());
    set_events();
    core::write_watch_ack(host_.frames(c), r.uuid, true);
}

void lock_service::serve(client& c, req::unwatch& r, time_point) {
    if (c.watching) stop_watching(c);
    core::write_watch_ack(host_.frames(c), r.uuid, false);
}

void lock_service::serve(client& c, req::pin& r, time_point) {
    if (c.role != detail::role::admin)
        return core::write_error(host_.frames(c), r.uuid, core::errc::forbidden,
                                 "pinning a key's max needs the admin role");
    store_->set_pin(r.prefix, r.max);
    log_line(log_level::info, "client " + c.remote +
                                  (r.max ? " pinned max " + std::to_string(*r.max) : std::string(" unpinned")) +
                                  " for keys starting with '" + r.prefix + "'");
    core::write_pin(host_.frames(c), r.uuid, r.prefix, r.max);
}

}  // namespace lmx::detail
