#include "etcd_store.hpp"

#include <lmx/broker/broker.hpp>
#include <lmx/core/failpoint.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/core/queue_rule.hpp>
#include <lmx/etcd/client.hpp>
#include <lmx/etcd/lease_keeper.hpp>
#include <lmx/etcd/prefix_mirror.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <charconv>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace lmx::detail {

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using core::time_point;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// One request on a lock key as the mirror shows it.
struct entry {
    std::string id{};
    core::lock_mode mode = core::lock_mode::exclusive;
    core::key_max max{};
    std::int64_t revision = 0;  // create revision of its q/ key: the queue order
    std::int64_t mod = 0;       // mod revision of its q/ key (an extend through another broker rewrites it)
    std::int64_t grant = 0;     // create revision of its g/ key (0: not granted)
    std::uint32_t slot = 0;     // granted at once: its place among those its txn granted
    bool multi = false;         // one key of an acquire-many
    time_point seen{};          // when this broker learnt of the grant
};

struct key_state {
    std::map<std::int64_t, entry> entries;  // by create revision
    std::unordered_map<std::string, std::int64_t> by_id;
    std::optional<core::named_max> last;
};

enum class answer : std::uint8_t { none, unlock, force, many, expiry };

// A write that claims a free key at once: the entry, marked granted, if etcd finds no entry on
// the key; else a read of what an earlier try wrote.
struct claim_at_once {
    etcd::txn_request txn{};
    json::object value{};  // the entry's value, marked with its slot when it is written
};
using entry_ref = std::pair<std::string, std::string>;  // (key, request id)

enum class phase : std::uint8_t {
    creating,  // its entry is being written
    waiting,   // its entry is in etcd, not granted
    claiming,  // its claim is being written
    holding,
    ending,  // this broker is deleting it (release, cancel, timeout, close): no notice when it goes
};

// A request of one of this broker's sessions.
struct own_request {
    std::string id{};
    std::string key{};                // a multi request: its first key
    std::vector<std::string> keys{};  // a multi request: every key, sorted (empty: single-key)
    core::session_id session = 0;
    core::lock_mode mode = core::lock_mode::exclusive;
    std::uint64_t ttl_ms = 0;  // 0: never expires
    std::optional<time_point> wait_deadline{};
    bool wait = true;
    bool queued_notice = true;
    bool told_queued = false;
    // A hold that outlives its connection. With a ttl its entries move to a lease of their own
    // when granted (kept_lease), so that they outlive this broker too, until the ttl (rounded up
    // to whole seconds, plus one); without one they stay on the session lease.
    bool keep_on_exit = false;
    std::optional<std::uint32_t> named{};  // the max it names (a single-key request)
    bool granted_at_once = false;          // its entry was written granted (no claim key)
    std::int64_t kept_lease = 0;
    std::int64_t kept_revision = 0;     // of the write that put the entries on kept_lease
    std::vector<std::string> values{};  // the entries' values, in refs_of order
    // Its own connection's cancel that met its claim under way: answered once the claim is decided
    // (after the grant when there is one, as in memory), or carried out when it failed.
    std::optional<std::string> cancel_uuid{};
    core::answer_style cancel_style = core::answer_style::plain;
    // Why this broker ends it, when watchers are told so by name (expired, timeout).
    std::optional<core::event_kind> why{};
    phase ph = phase::creating;
    std::int64_t revision = 0;
    core::fencing_token token = 0;
    std::optional<time_point> expires{};
    std::string extended{};        // the mark of the last extension through another broker applied
    bool extended_here = false;    // extended through this broker since that one
    std::int64_t extended_at = 0;  // the mod revision of that mark
    time_point since{};
};

std::uint64_t ttl_ms(const std::optional<milliseconds>& ttl, milliseconds dflt) {
    auto t = ttl.value_or(dflt);
    if (t != core::no_expiry && t.count() <= 0) t = dflt;
    if (t == core::no_expiry) return 0;
    return static_cast<std::uint64_t>(t.count());
}

std::string length_prefixed(std::string_view key) { return std::to_string(key.size()) + ":" + std::string(key); }

// Parses "<n>:<key>/<id>" (or "<n>:<key>" when `with_id` is false).
bool parse_entry_name(std::string_view rest, bool with_id, std::string& key, std::string& id) {
    const auto colon = rest.find(':');
    if (colon == std::string_view::npos) return false;
    std::size_t n = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + colon, n);
    if (ec != std::errc{} || p != rest.data() + colon || rest.size() < colon + 1 + n) return false;
    key.assign(rest.substr(colon + 1, n));
    rest.remove_prefix(colon + 1 + n);
    if (!with_id) return rest.empty();
    if (rest.size() < 2 || rest.front() != '/') return false;
    id.assign(rest.substr(1));
    return true;
}

class state : public std::enable_shared_from_this<state> {
public:
    state(asio::any_io_executor e, core::effect_sink& s, const core::table_config& c, etcd_store_options o,
          std::function<void()> done)
        : ex_(e),
          sink_(s),
          config_(c),
          opt_(std::move(o)),
          turn_done_(std::move(done)),
          client_(e, {.endpoints = opt_.endpoints,
                      .ca_file = opt_.ca_file,
                      .cert_file = opt_.cert_file,
                      .key_file = opt_.key_file,
                      // Well inside the session lease's margin (a third of its ttl), so that a
                      // renewal that gets no answer is tried again in time.
                      .request_timeout =
                          std::clamp<milliseconds>(opt_.session_ttl / 4, milliseconds(500), milliseconds(5000))}) {}

    void start() {
        auto self = shared_from_this();
        mirror_ = std::make_unique<etcd::prefix_mirror>(
            client_, opt_.prefix, [this](const std::vector<etcd::watch_event>& changes, std::int64_t) {
                if (stopped_) return;
                apply(changes);
                turn_done_();
            });
        keeper_ = std::make_unique<etcd::lease_keeper>(client_, opt_.session_ttl,
                                                       [this](const etcd::lease_keeper::event& ev) {
                                                           if (stopped_) return;
                                                           on_lease(ev);
                                                           turn_done_();
                                                       });
        asio::co_spawn(ex_, startup(self), [](std::exception_ptr) {});
    }

    void stop() noexcept {
        if (stopped_) return;
        stopped_ = true;
        if (mirror_) mirror_->stop();
        if (keeper_) keeper_->stop();
    }

    void acquire(const core::acquire_request& r, time_point now) {
        const std::string key(r.key);
        if (auto it = own_.find(std::string(r.id)); it != own_.end()) {
            own_request& o = it->second;
            // A request of an id whose release is still being written is refused: the id is in
            // use until then (in memory a release is done at once).
            if (o.session == r.session && o.key == r.key && o.ph != phase::ending) return resend(o, r.queued_notice);
            return reject(r.session, r.id, r.key, core::errc::duplicate_request);
        }
        if (!ready()) return reject(r.session, r.id, r.key, core::errc::unavailable);
        if (session_requests(r.session) >= config_.max_session_requests || over_key_limit({key}))
            return reject(r.session, r.id, r.key, core::errc::limit_reached);
        if (r.wait && waiting_entries() >= config_.max_waiters && would_wait(key, r.mode, r.max))
            return reject(r.session, r.id, r.key, core::errc::too_many_waiters);
        std::optional<std::uint32_t> named = r.max;
        if (auto pinned = pin_of(r.key)) {
            if (named && *named != *pinned) return reject(r.session, r.id, r.key, core::errc::max_pinned);
            named = pinned;
        }
        const core::key_max max = core::max_for_new(view(key), last_of(key), named);
        own_request o{.id = std::string(r.id),
                      .key = key,
                      .session = r.session,
                      .mode = r.mode,
                      .ttl_ms = ttl_ms(r.ttl, config_.default_ttl),
                      .wait_deadline = r.wait ? r.wait_deadline : std::nullopt,
                      .wait = r.wait,
                      .queued_notice = r.queued_notice,
                      .keep_on_exit = r.keep_on_exit,
                      .named = named,
                      .since = now};
        json::object v{{"mode", std::string(core::to_string(r.mode))},
                       {"max", max.max},
                       {"named", max.named},
                       {"broker", opt_.broker_id},
                       {"session", r.session}};
        if (r.keep_on_exit) v["keep"] = true;
        o.values.push_back(json::serialize(v));
        own_.emplace(o.id, o);
        etcd::txn_request t = creation_txn(o);
        // A key the mirror shows free is tried in one write: the entry, marked granted at its own
        // revision (no claim key: one key per hold, as etcd's own lock has), if etcd finds the
        // key free too (the first entry holds, whatever its mode and max). A hold kept on exit
        // with a ttl claims onto a lease of its own, so it takes the usual way.
        // A key etcd finds free starts afresh, as a freed key does in memory: the entry records
        // the max it names or the default, never one named on the key before (the mirror may
        // still show an entry whose end is being written), and that max's `m/` record goes in
        // the same write if the mirror shows it and its drop has not come yet (one it does not
        // show is older than this entry, and core::max_of passes over it).
        std::optional<claim_at_once> at_once;
        if (free_soon(key) && !(o.keep_on_exit && o.ttl_ms)) {
            const std::string entries = q_key(key, "");
            const core::key_max fresh = core::max_for_new({}, std::nullopt, named);
            v["max"] = fresh.max;
            v["named"] = fresh.named;
            v["granted"] = true;
            at_once.emplace();
            at_once->txn.compares.push_back({.key = entries,
                                             .what = etcd::compare::target::create_revision,
                                             .number = 0,
                                             .range_end = etcd::prefix_end(entries)});
            at_once->txn.success = t.success;
            at_once->txn.success.front() =
                etcd::put_op{.key = q_key(key, o.id), .value = json::serialize(v), .lease = lease_};
            if (!named && named_.contains(key)) at_once->txn.success.push_back(etcd::delete_op{.key = m_key(key)});
            at_once->txn.failure.push_back(etcd::range_op{.key = q_key(key, o.id)});
            at_once->value = std::move(v);
        }
        spawn(create(shared_from_this(), o.id, key, std::move(t), std::move(at_once)));
    }

    void acquire_many(const core::acquire_many_request& r, time_point now) {
        std::vector<std::string> keys(r.keys.begin(), r.keys.end());
        std::sort(keys.begin(), keys.end());
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        std::vector<core::key_token> kt;
        for (auto& k : keys) kt.push_back({k, 0});
        auto refuse = [&](core::errc code) {
            ++counters_.rejected;
            sink_.on_effect({.kind = core::effect_kind::rejected,
                             .session = r.session,
                             .id = r.id,
                             .keys = kt,
                             .multi = true,
                             .code = code});
        };
        if (auto it = own_.find(std::string(r.id)); it != own_.end()) {
            const own_request& o = it->second;
            if (o.session == r.session && o.keys == keys && o.ph != phase::ending) return resend(o, true);
            return refuse(core::errc::duplicate_request);
        }
        if (keys.empty()) return refuse(core::errc::bad_request);
        if (!ready()) return refuse(core::errc::unavailable);
        if (session_requests(r.session) >= config_.max_session_requests || over_key_limit(keys))
            return refuse(core::errc::limit_reached);
        if (r.wait && waiting_entries() + keys.size() > config_.max_waiters &&
            std::any_of(keys.begin(), keys.end(),
                        [&](auto& k) { return would_wait(k, core::lock_mode::exclusive, std::nullopt); }))
            return refuse(core::errc::too_many_waiters);
        own_request o{.id = std::string(r.id),
                      .key = keys.front(),
                      .keys = keys,
                      .session = r.session,
                      .ttl_ms = ttl_ms(r.ttl, config_.default_ttl),
                      .wait_deadline = r.wait ? r.wait_deadline : std::nullopt,
                      .wait = r.wait,
                      .keep_on_exit = r.keep_on_exit,
                      .since = now};
        // One txn: the entry on every key gets one create revision, so every broker orders two
        // multi requests the same way on every key, and none waits for another in a cycle.
        for (auto& k : keys) {
            const core::key_max max = core::max_for_new(view(k), last_of(k), std::nullopt);
            json::object v{{"mode", "exclusive"},      {"max", max.max},       {"named", max.named},
                           {"broker", opt_.broker_id}, {"session", r.session}, {"multi", true}};
            if (r.keep_on_exit) v["keep"] = true;
            o.values.push_back(json::serialize(v));
        }
        etcd::txn_request t = creation_txn(o);
        // etcd takes at most 128 compares and 128 operations in a txn, and an acquire-many is
        // written, claimed and ended in one: its end deletes two keys on each key (entry and
        // grant), and its write compares once on each key, twice on one whose named max it copies.
        if (keys.size() > batch_ops / 2 || ops_of(t) > batch_ops) return refuse(core::errc::too_many_keys);
        own_.emplace(o.id, o);
        spawn(create(shared_from_this(), o.id, keys.front(), std::move(t), std::nullopt));
    }

    void release_many(const core::reply_to& to, std::string_view id) {
        if (hold_back(to, id, [this, id = std::string(id)](const core::reply_to& t) { release_many(t, id); })) return;
        std::vector<entry_ref> refs;
        if (auto it = own_.find(std::string(id)); it != own_.end() && !it->second.keys.empty()) {
            own_request& o = it->second;
            // An end began here first (its owner's release, or another connection's): that one
            // releases it, and this finds nothing (refs stays empty), as it would after it in memory.
            if (o.ph != phase::ending && o.session == to.session) {
                if (o.ph == phase::creating) {  // the write's completion deletes it
                    o.ph = phase::ending;
                    sink_.on_effect({.kind = core::effect_kind::released_many,
                                     .session = to.session,
                                     .id = id,
                                     .multi = true,
                                     .uuid = to.uuid,
                                     .style = to.style,
                                     .names = o.keys});
                    return;
                }
                o.ph = phase::ending;
                refs = refs_of(o);
            } else if (o.ph != phase::ending) {
                refs = refs_of(o);
            }
        } else {
            for (auto& [key, ks] : keys_)
                if (auto r = ks.by_id.find(std::string(id)); r != ks.by_id.end() && ks.entries.at(r->second).multi)
                    refs.emplace_back(key, id);
        }
        if (refs.empty()) {
            sink_.on_effect({.kind = core::effect_kind::released_many,
                             .session = to.session,
                             .id = id,
                             .multi = true,
                             .code = core::errc::not_found,
                             .uuid = to.uuid,
                             .style = to.style});
            return;
        }
        end_entries(to, std::move(refs), std::string(id), answer::many);
    }

    void release(const core::reply_to& to, std::string_view key, std::string_view id) {
        if (hold_back(to, id, [this, key = std::string(key), id = std::string(id)](const core::reply_to& t) {
                release(t, key, id);
            }))
            return;
        const entry* e = find_entry(key, id);
        auto it = own_.find(std::string(id));
        const bool mine = it != own_.end() && on_key(it->second, key);
        if (!e && !mine) return answer_unlock(to, key, id, core::release_status::already_released, 0);
        // An end began here first (its owner's release, or another connection's): that one
        // releases it, and this finds nothing, as it would after it in memory.
        if (mine && it->second.ph == phase::ending)
            return answer_unlock(to, key, id, core::release_status::already_released, 0);
        if (mine && it->second.session == to.session) {
            // Not written yet: the write's completion deletes it.
            if (it->second.ph == phase::creating) {
                it->second.ph = phase::ending;
                return answer_unlock(to, key, id, core::release_status::withdrawn, 0);
            }
            it->second.ph = phase::ending;
        }
        std::vector<entry_ref> refs{{std::string(key), std::string(id)}};
        if (mine) refs = refs_of(it->second);  // a multi hold ends on every key
        end_entries(to, std::move(refs), std::string(id), answer::unlock);
    }

    // `ended_before`: holders a force decided again had ended already (see end()).
    void force_release(const core::reply_to& to, std::string_view key, std::optional<std::string_view> id,
                       std::uint32_t ended_before = 0) {
        // The holders are the admitted entries whose grant the mirror shows. An admitted entry
        // without one may have been claimed through another broker a moment ago: the txn then
        // requires that its grant key is still absent, and on a miss the force is decided again
        // from a mirror that has caught up. A claim written after the force is a grant after it.
        std::vector<entry_ref> refs;
        std::vector<etcd::compare> unclaimed;
        if (auto ks = keys_.find(std::string(key)); ks != keys_.end()) {
            const auto v = view(ks->first);
            const std::size_t n = core::holder_count(v, core::max_of(v, ks->second.last));
            std::size_t at = 0;
            for (auto& [rev, e] : ks->second.entries) {
                if (at++ >= n) break;
                if (id && e.id != *id) continue;
                if (e.grant)
                    refs.emplace_back(key, e.id);
                else
                    unclaimed.push_back(
                        {.key = g_key(key, e.id), .what = etcd::compare::target::create_revision, .number = 0});
            }
        }
        if (refs.empty() && unclaimed.empty())
            return answer_unlock(to, key, id.value_or(std::string_view{}),
                                 ended_before ? core::release_status::released
                                 : id         ? core::release_status::not_holder
                                              : core::release_status::already_released,
                                 ended_before);
        // etcd refuses a txn of more than batch_ops operations or compares: the holders of a
        // semaphore with many go out in parts, in order, each with its holders' deletes and
        // reason records (three operations a holder), the compares with the first parts.
        std::vector<etcd::txn_request> parts;
        constexpr std::size_t holders_per_part = batch_ops / 3;
        for (std::size_t i = 0; i < std::max(refs.size(), std::size_t{1}); i += holders_per_part) {
            etcd::txn_request& t = parts.emplace_back();
            const std::vector<entry_ref> some(
                refs.begin() + static_cast<std::ptrdiff_t>(std::min(i, refs.size())),
                refs.begin() + static_cast<std::ptrdiff_t>(std::min(i + holders_per_part, refs.size())));
            for (auto& [k, rid] : some) {
                t.success.push_back(etcd::delete_op{.key = q_key(k, rid)});
                t.success.push_back(etcd::delete_op{.key = g_key(k, rid)});
            }
            record_why(t, some, core::event_kind::forced);
        }
        for (std::size_t i = 0; i < unclaimed.size(); ++i) {
            if (i / batch_ops == parts.size()) parts.emplace_back();
            parts[i / batch_ops].compares.push_back(std::move(unclaimed[i]));
        }
        for (auto& [k, rid] : refs) ending(rid, core::event_kind::forced);
        counters_.forced += refs.size();
        spawn(end(shared_from_this(), owned(to), std::move(refs), std::string(id.value_or("")), answer::force,
                  std::move(parts), std::string(key), ended_before));
    }

    void release_own(const core::reply_to& to, std::string_view key) {
        for (auto& [id, o] : own_)
            if (o.session == to.session && o.keys.empty() && o.key == key && o.ph == phase::holding) {
                if (hold_back(to, id, [this, key = std::string(key)](const core::reply_to& t) { release_own(t, key); }))
                    return;
                o.ph = phase::ending;
                return end_entries(to, refs_of(o), {}, answer::unlock);
            }
        answer_unlock(to, key, {}, core::release_status::already_released, 0);
    }

    void cancel(const core::reply_to& to, std::string_view id) {
        auto it = own_.find(std::string(id));
        if (it != own_.end() && it->second.session == to.session && it->second.ph == phase::claiming &&
            !it->second.cancel_uuid) {
            it->second.cancel_uuid = std::string(to.uuid);
            it->second.cancel_style = to.style;
            return;
        }
        const bool unwritten = it != own_.end() && it->second.session == to.session && it->second.ph == phase::creating;
        if (unwritten) it->second.ph = phase::ending;  // the write's completion deletes it
        if (unwritten || it == own_.end() || it->second.session != to.session || it->second.ph != phase::waiting) {
            sink_.on_effect({.kind = core::effect_kind::cancelled,
                             .session = to.session,
                             .id = id,
                             .uuid = to.uuid,
                             .style = to.style,
                             .done = unwritten});
            return;
        }
        it->second.ph = phase::ending;
        ++counters_.cancelled;
        ending(it->second.id, core::event_kind::cancelled, refs_of(it->second).size());
        // Its grant too: a claim whose answer was lost may have been written.
        etcd::txn_request t;
        for (auto& [key, rid] : refs_of(it->second)) {
            t.success.push_back(etcd::delete_op{.key = q_key(key, rid)});
            t.success.push_back(etcd::delete_op{.key = g_key(key, rid)});
        }
        spawn(cancel_entry(shared_from_this(), owned(to), std::string(id), std::move(t)));
    }

    void extend(const core::reply_to& to, std::string_view key, std::string_view id, std::optional<milliseconds> ttl,
                time_point now) {
        auto it = own_.find(std::string(id));
        core::effect ef = extend_answer(to, id, key);
        const entry* e = find_entry(key, id);
        if (it == own_.end() && e && e->grant) {  // a hold taken through another broker
            if (!ready()) {
                ef.code = core::errc::unavailable;
                return sink_.on_effect(ef);
            }
            extend_begins(std::string(id), to.session);
            return spawn(extend_elsewhere(shared_from_this(), owned(to), std::string(id), std::string(key),
                                          ttl_ms(ttl, config_.default_ttl)));
        }
        if (it == own_.end() || !on_key(it->second, key) || it->second.ph != phase::holding) {
            ef.code = core::errc::not_holder;
            return sink_.on_effect(ef);
        }
        own_request& o = it->second;
        const std::uint64_t renewed = ttl_ms(ttl, config_.default_ttl);
        // A hold kept on exit moves to a lease that covers its new ttl before the answer goes.
        if (o.keep_on_exit) {
            extend_begins(o.id, o.session);
            return spawn(extend_kept(shared_from_this(), owned(to), o.id, std::string(key), renewed, now));
        }
        o.ttl_ms = renewed;
        o.expires = o.ttl_ms ? std::optional(now + milliseconds(o.ttl_ms)) : std::nullopt;
        o.extended_here = true;
        if (o.expires) ef.lease = milliseconds(o.ttl_ms);
        sink_.on_effect(ef);
    }

    void abandon(core::session_id s, std::string_view id) {
        auto it = own_.find(std::string(id));
        if (it != own_.end() && it->second.session == s) give_up(it->second);
    }

    void close_session(core::session_id s) {
        for (auto& [id, o] : own_) {
            if (o.session != s) continue;
            if (o.keep_on_exit && o.ph == phase::holding)
                o.session = 0;  // kept, as in memory: ended by its ttl or by a release naming it
            else
                give_up(o);
        }
    }

    std::uint32_t session_requests(core::session_id s) const noexcept {
        std::uint32_t n = 0;
        for (auto& [id, o] : own_) n += o.session == s && o.ph != phase::ending;
        return n;
    }

    void expire(time_point now) {
        for (auto& [id, o] : own_) {
            if (o.ph == phase::holding && o.expires && *o.expires <= now) {
                ++counters_.expirations;
                tell_lost(o, core::lost_reason::ttl);
                ending(o.id, core::event_kind::expired, refs_of(o).size());
                o.ph = phase::ending;
                o.why = core::event_kind::expired;
                // Guarded by the entries' mod revisions: an extend through another broker
                // rewrites them, and then this expiry is decided again (see extend_elsewhere).
                const auto refs = refs_of(o);
                etcd::txn_request t;
                for (auto& [k, rid] : refs) {
                    const entry* e = find_entry(k, rid);
                    t.compares.push_back(
                        {.key = q_key(k, rid), .what = etcd::compare::target::mod_revision, .number = e ? e->mod : 0});
                    t.success.push_back(etcd::delete_op{.key = q_key(k, rid)});
                    t.success.push_back(etcd::delete_op{.key = g_key(k, rid)});
                }
                record_why(t, refs, o.why);
                std::vector<etcd::txn_request> parts;
                parts.push_back(std::move(t));
                spawn(end(shared_from_this(), {}, refs, {}, answer::expiry, std::move(parts)));
            } else if ((o.ph == phase::waiting || o.ph == phase::creating) && o.wait_deadline &&
                       *o.wait_deadline <= now) {
                ++counters_.timeouts;
                reject_request(o, core::errc::timeout);
                ending(o.id, core::event_kind::timeout, refs_of(o).size());
                const bool written = o.ph == phase::waiting;
                o.ph = phase::ending;
                o.why = core::event_kind::timeout;
                if (written) end_entries({}, refs_of(o), {}, answer::none, o.why);
            }
        }
    }

    std::optional<time_point> next_deadline() const {
        std::optional<time_point> next;
        auto take = [&](std::optional<time_point> t) {
            if (t && (!next || *t < *next)) next = t;
        };
        for (auto& [id, o] : own_) {
            if (o.ph == phase::holding) take(o.expires);
            if (o.ph == phase::waiting || o.ph == phase::creating) take(o.wait_deadline);
        }
        return next;
    }

    bool grants_stalled() const noexcept { return !ready(); }
    std::string stall_reason() const { return ready() ? std::string() : trouble_; }

    void set_events(bool enabled) noexcept {
        events_ = enabled;
        if (!enabled) ending_why_.clear();
    }

    void set_pin(std::string_view prefix, std::optional<std::uint32_t> max) {
        std::erase_if(pins_, [&](const core::key_pin& p) { return p.prefix == prefix; });
        if (max) pins_.push_back({std::string(prefix), *max});
    }

    core::key_page list_keys(std::uint64_t cursor, std::size_t limit) const {
        core::key_page page;
        std::uint64_t i = 0;
        for (auto& [key, ks] : keys_) {
            if (i++ < cursor) continue;
            if (page.keys.size() == limit) {
                page.next = i - 1;
                break;
            }
            page.keys.push_back(key);
        }
        return page;
    }

    core::key_info info(std::string_view key, std::size_t max_holders) const {
        core::key_info out;
        out.key = std::string(key);
        auto it = keys_.find(out.key);
        if (it == keys_.end()) return out;
        out.exists = true;
        const auto v = view(out.key);
        out.max = core::max_of(v, it->second.last).max;
        const std::size_t n = core::holder_count(v, core::max_of(v, it->second.last));
        std::size_t i = 0;
        for (auto& [rev, e] : it->second.entries) {
            if (i++ >= n) break;
            out.holder_mode = e.mode;
            ++out.holder_count;
            if (e.grant) out.last_token = std::max(out.last_token, token_of(e));
            if (out.holders.size() >= max_holders) continue;
            core::holder_info h{.id = e.id,
                                .session = 0,
                                .mode = e.mode,
                                .token = e.grant ? token_of(e) : 0,
                                .since = e.seen,
                                .keep_on_exit = false};
            if (auto o = own_.find(e.id); o != own_.end() && on_key(o->second, key)) {
                h.session = o->second.session;
                h.expires = o->second.expires;
                h.since = o->second.since;
                h.keep_on_exit = o->second.keep_on_exit;
            }
            out.holders.push_back(std::move(h));
        }
        out.waiters = static_cast<std::uint32_t>(v.size() - n);
        return out;
    }

    core::table_counters counters() const noexcept {
        core::table_counters c = counters_;
        c.keys = keys_.size();
        c.holders = c.waiters = 0;
        for (auto& [key, ks] : keys_)
            for (auto& [rev, e] : ks.entries) (e.grant ? c.holders : c.waiters) += 1;
        std::unordered_set<core::session_id> sessions;
        for (auto& [id, o] : own_) sessions.insert(o.session);
        c.sessions = sessions.size();
        return c;
    }

    std::vector<core::contended_key> top_contended(std::size_t n) const {
        std::vector<core::contended_key> all;
        for (auto& [key, ks] : keys_) {
            std::uint32_t held_n = 0, waiting = 0;
            for (auto& [rev, e] : ks.entries) (e.grant ? held_n : waiting) += 1;
            if (waiting) all.push_back({key, waiting, held_n});
        }
        std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.waiters > b.waiters; });
        if (all.size() > n) all.resize(n);
        return all;
    }

    core::fencing_token last_token() const noexcept { return last_token_; }

private:
    struct owned_reply {
        core::session_id session = 0;
        std::string uuid{};
        core::answer_style style = core::answer_style::plain;
    };
    static owned_reply owned(const core::reply_to& to) { return {to.session, std::string(to.uuid), to.style}; }

    // The answer to an extend (ok until a code is set); it views `to`, `id` and `key`.
    template <class ReplyTo>  // core::reply_to or owned_reply
    static core::effect extend_answer(const ReplyTo& to, std::string_view id, std::string_view key) {
        return {.kind = core::effect_kind::extended,
                .session = to.session,
                .id = id,
                .key = key,
                .uuid = to.uuid,
                .style = to.style};
    }

    // Starts `work` from the executor's queue, never inside the caller: a coroutine that fails
    // before it first suspends must not change the state under a loop of its caller.
    void spawn(asio::awaitable<void> work) {
        asio::post(ex_, [this, self = shared_from_this(), w = std::move(work)]() mutable {
            if (!stopped_) asio::co_spawn(ex_, std::move(w), [](std::exception_ptr) {});
        });
    }

    // Serving once the prefix has been read and the session lease is held. A watch that breaks
    // later does not stop it: the mirror reads again and reports what changed meanwhile, and a
    // grant decided from an older view still holds (docs/design/ha.md, "Who holds").
    bool ready() const noexcept { return !stopped_ && lease_ != 0 && base_ >= 0 && mirror_ && mirror_->reads() > 0; }

    std::string q_key(std::string_view key, std::string_view id) const {
        return opt_.prefix + "q/" + length_prefixed(key) + "/" + std::string(id);
    }
    std::string g_key(std::string_view key, std::string_view id) const {
        return opt_.prefix + "g/" + length_prefixed(key) + "/" + std::string(id);
    }
    std::string m_key(std::string_view key) const { return opt_.prefix + "m/" + length_prefixed(key); }
    std::string r_key(std::string_view id) const { return opt_.prefix + "r/" + std::string(id); }

    // Why requests end, for the watchers of every broker: a watch tells a delete, not who made it
    // or why. An end that its default name does not tell (a hold "released", a wait "cancelled")
    // writes a reason record for each request it ends, in the txn of its deletes, so that every
    // broker reads it in the same revision; the records are deleted once the end is done. (An
    // end that has no room left for them in a txn, such as an acquire-many of 64 keys, goes
    // without, and is told by its default name.)
    void record_why(etcd::txn_request& t, const std::vector<entry_ref>& refs,
                    std::optional<core::event_kind> why) const {
        if (!why || *why == core::event_kind::released || *why == core::event_kind::cancelled) return;
        std::set<std::string_view> ids;
        for (auto& [key, id] : refs) ids.insert(id);
        if (t.success.size() + ids.size() > batch_ops) return;
        for (auto id : ids)
            t.success.push_back(
                etcd::put_op{.key = r_key(id), .value = std::string(core::to_string(*why)), .lease = lease_});
    }
    static std::optional<core::event_kind> recorded_why(std::string_view value) {
        for (auto k : {core::event_kind::expired, core::event_kind::timeout, core::event_kind::forced})
            if (value == core::to_string(k)) return k;
        return std::nullopt;
    }

    // Grants of one txn share its revision; each has its own slot there (below slots_per_txn).
    static constexpr std::uint32_t slots_per_txn = 64;
    core::fencing_token token_of(std::int64_t revision, std::uint32_t slot) const noexcept {
        return static_cast<core::fencing_token>(base_) + static_cast<core::fencing_token>(revision) * slots_per_txn +
               slot;
    }
    core::fencing_token token_of(const entry& e) const noexcept { return token_of(e.grant, e.slot); }

    std::optional<std::uint32_t> pin_of(std::string_view key) const {
        std::optional<std::uint32_t> best;
        std::size_t len = 0;
        for (auto& p : pins_)
            if (key.starts_with(p.prefix) && (!best || p.prefix.size() >= len)) {
                best = p.max;
                len = p.prefix.size();
            }
        return best;
    }

    // The bounds of --max-total-keys and --max-waiters, over what the mirror shows of the whole
    // cluster: keys with entries, and entries not granted (waiting, or admitted and being claimed).
    bool over_key_limit(const std::vector<std::string>& names) const {
        std::uint64_t fresh = 0;
        for (auto& k : names) fresh += !keys_.contains(k);
        return keys_.size() + fresh > config_.max_keys;
    }
    std::size_t waiting_entries() const noexcept { return entry_count_ - granted_count_; }
    // Whether a request of `mode` (naming `named`) on `key` would wait, as the mirror shows it.
    bool would_wait(const std::string& key, core::lock_mode mode, std::optional<std::uint32_t> named) const {
        auto v = view(key);
        if (v.empty()) return false;
        const core::key_max max = core::max_for_new(v, last_of(key), named);
        v.push_back({.revision = v.back().revision + 1, .mode = mode, .max = max});
        return core::holder_count(v, core::max_of(v, std::nullopt)) < v.size();
    }

    const entry* find_entry(std::string_view key, std::string_view id) const {
        auto ks = keys_.find(std::string(key));
        if (ks == keys_.end()) return nullptr;
        auto r = ks->second.by_id.find(std::string(id));
        return r == ks->second.by_id.end() ? nullptr : &ks->second.entries.at(r->second);
    }

    // Whether `e` counts as a holder: granted, or ours and being claimed.
    bool held(std::string_view key, const entry& e) const {
        if (e.grant) return true;
        auto o = own_.find(e.id);
        return o != own_.end() && on_key(o->second, key) &&
               (o->second.ph == phase::claiming || o->second.ph == phase::holding);
    }

    std::vector<core::queue_entry> view(const std::string& key) const {
        std::vector<core::queue_entry> v;
        auto ks = keys_.find(key);
        if (ks == keys_.end()) return v;
        for (auto& [rev, e] : ks->second.entries)
            v.push_back({.revision = rev, .mode = e.mode, .max = e.max, .holds = held(key, e)});
        return v;
    }

    std::optional<core::named_max> last_of(const std::string& key) const {
        auto ks = keys_.find(key);
        return ks == keys_.end() ? std::nullopt : ks->second.last;
    }

    std::uint32_t waiters_on(const std::string& key) const {
        const auto v = view(key);
        auto ks = keys_.find(key);
        if (ks == keys_.end()) return 0;
        return static_cast<std::uint32_t>(v.size() - core::holder_count(v, core::max_of(v, ks->second.last)));
    }

    // A release of request `id` by the connection that extends it (its owner's, or any through
    // another broker than the hold's) while that extend is being written waits for the extend's
    // answer, so that the two are done and answered in the order they came, as in memory. True
    // when `release` was kept for later.
    template <class Release>
    bool hold_back(const core::reply_to& to, std::string_view id, Release release) {
        auto x = extending_.find(std::string(id));
        if (x == extending_.end() || x->second.session != to.session) return false;
        x->second.later.emplace_back(owned(to), std::move(release));
        return true;
    }
    void extend_begins(const std::string& id, core::session_id session) {
        auto& x = extending_[id];
        ++x.writing;
        x.session = session;
    }
    // After an extend's answer: the releases it held back go now, in the order they came.
    void extend_done(const std::string& id) {
        auto x = extending_.find(id);
        if (x == extending_.end() || --x->second.writing > 0) return;
        auto later = std::move(x->second.later);
        extending_.erase(x);
        for (auto& [reply, release] : later)
            release({.session = reply.session, .uuid = reply.uuid, .style = reply.style});
    }

    // Whether `key` is free, or will be once the mirror shows the deletes this broker made or is
    // making: a hint (the write that claims at once checks it), so that a client that releases
    // and acquires again at once is not sent the long way for want of its delete's echo.
    bool free_soon(const std::string& key) const {
        auto ks = keys_.find(key);
        if (ks == keys_.end()) return true;
        for (auto& [rev, e] : ks->second.entries) {
            if (deleted_.contains(e.id)) continue;
            auto o = own_.find(e.id);
            if (o == own_.end() || o->second.ph != phase::ending) return false;
        }
        return true;
    }

    // Answers a cancel that waited for `o`'s claim, when there is one: `o` is no longer waiting.
    void settle_cancel(own_request& o) {
        if (!o.cancel_uuid) return;
        const std::string uuid = std::move(*o.cancel_uuid);
        o.cancel_uuid.reset();
        sink_.on_effect({.kind = core::effect_kind::cancelled,
                         .session = o.session,
                         .id = o.id,
                         .uuid = uuid,
                         .style = o.cancel_style,
                         .done = false});
    }

    // Ends one of this broker's requests without a word to anyone: deleted now, or, while its
    // entry is being written, by the write's completion.
    void give_up(own_request& o) {
        if (o.ph == phase::ending) return;
        const bool written = o.ph != phase::creating;
        o.ph = phase::ending;
        if (written) end_entries({}, refs_of(o));
    }

    void reject(core::session_id s, std::string_view id, std::string_view key, core::errc code) {
        ++counters_.rejected;
        sink_.on_effect({.kind = core::effect_kind::rejected, .session = s, .id = id, .key = key, .code = code});
    }

    void resend(const own_request& o, bool notice) {
        const auto kt = key_tokens(o);
        if (o.ph == phase::holding)
            sink_.on_effect({.kind = core::effect_kind::granted,
                             .session = o.session,
                             .id = o.id,
                             .key = o.key,
                             .keys = kt,
                             .multi = !o.keys.empty(),
                             .repeat = true,
                             .token = o.token,
                             .waiters = waiters_on(o.key),
                             .expires = o.expires});
        else if (o.ph == phase::waiting && o.told_queued)
            sink_.on_effect({.kind = core::effect_kind::queued,
                             .session = o.session,
                             .id = o.id,
                             .key = o.key,
                             .keys = kt,
                             .multi = !o.keys.empty(),
                             .repeat = true,
                             .notice = notice,
                             .waiters = waiters_on(o.key),
                             .position = waiters_on(o.key)});
    }

    void answer_unlock(const core::reply_to& to, std::string_view key, std::string_view id, core::release_status status,
                       std::uint32_t released) {
        if (to.uuid.empty()) return;
        sink_.on_effect({.kind = core::effect_kind::unlocked,
                         .session = to.session,
                         .id = id,
                         .key = key,
                         .waiters = waiters_on(std::string(key)),
                         .uuid = to.uuid,
                         .style = to.style,
                         .status = status,
                         .released = released});
    }

    static bool on_key(const own_request& o, std::string_view key) {
        return o.keys.empty() ? o.key == key : std::binary_search(o.keys.begin(), o.keys.end(), key);
    }

    // The keys of a multi request with its token, for its effects.
    static std::vector<core::key_token> key_tokens(const own_request& o) {
        std::vector<core::key_token> out;
        for (auto& k : o.keys) out.push_back({k, o.token});
        return out;
    }

    void tell_lost(const own_request& o, core::lost_reason why) {
        const auto kt = key_tokens(o);
        sink_.on_effect({.kind = core::effect_kind::lock_lost,
                         .session = o.session,
                         .id = o.id,
                         .key = o.key,
                         .keys = kt,
                         .multi = !o.keys.empty(),
                         .reason = why});
    }

    void reject_request(const own_request& o, core::errc code) {
        ++counters_.rejected;
        const auto kt = key_tokens(o);
        sink_.on_effect({.kind = core::effect_kind::rejected,
                         .session = o.session,
                         .id = o.id,
                         .key = o.key,
                         .keys = kt,
                         .multi = !o.keys.empty(),
                         .code = code});
    }

    // The txn that writes `o`'s entries. A request that names no max records the key's max as the
    // mirror shows it, and the key's max is its newest entry's record (see core::max_of): so the
    // txn requires that the key's named-max record is still the one the mirror showed. A max named
    // since (written with its request's entry, perhaps not seen yet) fails it, and the request's
    // max is taken again (retake_max) once the mirror shows that: an older copy never hides it.
    // A named max it copies holds only while the key lives on (a key freed meanwhile starts
    // afresh, as in memory): the key's newest entry in the mirror must still be in etcd then,
    // which it is only if the key never was without entries since.
    etcd::txn_request creation_txn(const own_request& o) const {
        const auto refs = refs_of(o);
        etcd::txn_request t = create_txn(q_key(refs.front().first, o.id));
        for (std::size_t i = 0; i < refs.size() && i < o.values.size(); ++i) {
            const std::string& k = refs[i].first;
            t.success.push_back(etcd::put_op{.key = q_key(k, o.id), .value = o.values[i], .lease = lease_});
            if (o.named) {
                t.success.push_back(etcd::put_op{.key = m_key(k), .value = std::to_string(*o.named)});
                continue;
            }
            const auto n = named_.find(k);
            t.compares.push_back({.key = m_key(k),
                                  .what = etcd::compare::target::mod_revision,
                                  .number = n == named_.end() ? 0 : n->second.revision});
            auto ks = keys_.find(k);
            if (ks != keys_.end() && !ks->second.entries.empty() &&
                core::max_for_new(view(k), last_of(k), std::nullopt).named) {
                const entry& newest = ks->second.entries.rbegin()->second;
                t.compares.push_back({.key = q_key(k, newest.id),
                                      .what = etcd::compare::target::create_revision,
                                      .number = newest.revision});
            }
        }
        return t;
    }
    void retake_max(own_request& o) const {
        const auto refs = refs_of(o);
        for (std::size_t i = 0; i < refs.size() && i < o.values.size(); ++i) {
            json::error_code ec;
            auto v = json::parse(o.values[i], ec);
            if (ec || !v.is_object()) continue;
            const core::key_max max = core::max_for_new(view(refs[i].first), last_of(refs[i].first), o.named);
            v.get_object()["max"] = max.max;
            v.get_object()["named"] = max.named;
            o.values[i] = json::serialize(v);
        }
    }

    // A txn that writes a request's entries once: tried again after an answer that did not come
    // (etcd may have applied it), it finds them there and reads their create revision instead.
    static etcd::txn_request create_txn(const std::string& first_entry) {
        etcd::txn_request t;
        t.compares.push_back({.key = first_entry, .what = etcd::compare::target::create_revision, .number = 0});
        t.failure.push_back(etcd::range_op{.key = first_entry});
        return t;
    }

    // Whether an entry found where a request's entry was to be written is an earlier try of the
    // same write (on this broker's lease, for the same connection), not a request of the same id
    // made elsewhere.
    static bool earlier_try(const etcd::key_value& kv, std::int64_t lease, core::session_id session) {
        if (kv.lease != lease) return false;
        json::error_code ec;
        const auto v = json::parse(kv.value, ec);
        const auto* o = !ec ? v.if_object() : nullptr;
        const auto* s = o ? o->if_contains("session") : nullptr;
        if (!s) return false;
        if (s->is_uint64()) return s->get_uint64() == session;
        return s->is_int64() && s->get_int64() >= 0 && static_cast<std::uint64_t>(s->get_int64()) == session;
    }

    // Writes of a request go through etcd's leader; while it changes, or when a proposal is lost
    // with a dying leader, an answer may not come. Such writes are made so that they can be
    // sent again, and are, a few times.
    static constexpr int write_tries = 4;

    // The stall a failpoint's sleep(MS) asks for here (test builds; see docs/guarantees.md).
    asio::awaitable<void> failpoint_pause([[maybe_unused]] std::string_view name) {
        if (const auto fp = LMX_FAILPOINT(name); fp.sleep()) {
            asio::steady_timer t(ex_, fp.delay);
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    asio::awaitable<void> pause_for(int attempt) {
        asio::steady_timer t(ex_, milliseconds(std::min(100 << std::min(attempt, 3), 800)));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }

    // The entries of a request of this broker: one per key.
    static std::vector<entry_ref> refs_of(const own_request& o) {
        std::vector<entry_ref> refs;
        if (o.keys.empty()) refs.emplace_back(o.key, o.id);
        for (auto& k : o.keys) refs.emplace_back(k, o.id);
        return refs;
    }

    // Deletes the entries (and grants) `refs` in one txn, and answers `to` as `how` says when it
    // has a uuid (`named`: the lock id the answer names).
    void end_entries(const core::reply_to& to, std::vector<entry_ref> refs, std::string named = {},
                     answer how = answer::none, std::optional<core::event_kind> why = std::nullopt) {
        etcd::txn_request t;
        for (auto& [key, id] : refs) {
            t.success.push_back(etcd::delete_op{.key = q_key(key, id)});
            t.success.push_back(etcd::delete_op{.key = g_key(key, id)});
        }
        record_why(t, refs, why);
        std::vector<etcd::txn_request> parts;
        parts.push_back(std::move(t));
        spawn(end(shared_from_this(), owned(to), std::move(refs), std::move(named), how, std::move(parts)));
    }

    asio::awaitable<void> startup(std::shared_ptr<state> self) {
        asio::steady_timer timer(ex_);
        const std::string base_key = opt_.prefix + "meta/token-base";
        while (!stopped_ && base_ < 0) {
            try {
                const auto wall = std::chrono::duration_cast<std::chrono::microseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count();
                const auto proposed = std::max<std::int64_t>(wall, static_cast<std::int64_t>(config_.fencing_seed));
                etcd::txn_request t;
                t.compares.push_back({.key = base_key, .what = etcd::compare::target::create_revision, .number = 0});
                t.success.push_back(etcd::put_op{.key = base_key, .value = std::to_string(proposed)});
                t.failure.push_back(etcd::range_op{.key = base_key});
                const auto r = co_await client_.txn(t);
                if (stopped_) co_return;
                if (r.succeeded) {
                    base_ = proposed;
                } else if (!r.responses.empty() && !r.responses[0].range.kvs.empty()) {
                    const auto& text = r.responses[0].range.kvs[0].value;
                    std::int64_t b = -1;
                    std::from_chars(text.data(), text.data() + text.size(), b);
                    base_ = b;
                }
                if (base_ >= 0)
                    log_line(log_level::info, "etcd store: fencing tokens are " + std::to_string(base_) +
                                                  " + 64 x the grant's revision + its slot");
            } catch (const std::exception& e) {
                trouble_ = std::string("etcd does not answer: ") + e.what();
            }
            if (base_ < 0) {
                timer.expires_after(milliseconds(500));
                co_await timer.async_wait(asio::use_awaitable);
            }
        }
        co_await failpoint_pause("etcd.start");
        if (stopped_) co_return;
        asio::co_spawn(ex_, keep_running(self, true), [](std::exception_ptr) {});
        asio::co_spawn(ex_, keep_running(self, false), [](std::exception_ptr) {});
        // Grants start once the mirror is in place; the broker is told so that /healthz turns.
        while (!stopped_ && !mirror_->synced()) {
            timer.expires_after(milliseconds(20));
            co_await timer.async_wait(asio::use_awaitable);
        }
        if (!stopped_) turn_done_();
        (void)self;
    }

    // The mirror's or the keeper's run(), with this state (and so the client they use) kept alive
    // until it returns.
    asio::awaitable<void> keep_running(std::shared_ptr<state> self, bool mirror) {
        if (mirror)
            co_await mirror_->run();
        else
            co_await keeper_->run();
        (void)self;
    }

    // Writes a request's entries with `t`; or first with `at_once` (in a batch with other
    // writes), which writes the entry marked granted when etcd finds the key free, and else reads
    // back what an earlier try wrote.
    asio::awaitable<void> create(std::shared_ptr<state> self, std::string id, std::string lock_key, etcd::txn_request t,
                                 std::optional<claim_at_once> at_once) {
        bool failed = true, foreign = false;
        int retakes = 0;
        std::int64_t revision = 0, granted = 0;
        std::uint32_t slot = 0;
        const std::int64_t lease = lease_;
        const auto mine = own_.find(id);
        const core::session_id session = mine == own_.end() ? 0 : mine->second.session;
        for (int attempt = 0; attempt < write_tries && !stopped_ && lease_ == lease && !foreign; ++attempt) {
            if (attempt > 0) co_await pause_for(attempt);
            try {
                if (at_once) {
                    auto fast = std::make_shared<batched_write>(
                        batched_write{.locks = {lock_key}, .nested = &at_once->txn, .claim = &*at_once});
                    co_await in_batch(fast);
                    if (!fast->result) throw std::runtime_error("the batch it was written in had no answer");
                    const auto& r = *fast->result;
                    std::string written;
                    if (r.succeeded) {
                        revision = granted = r.revision;
                        slot = fast->slot;
                        written = std::move(fast->written);
                    } else if (r.responses.size() == 1 && !r.responses[0].range.kvs.empty()) {
                        const auto& earlier = r.responses[0].range.kvs[0];  // an earlier try got through
                        if (!(foreign = !earlier_try(earlier, lease, session))) revision = earlier.create_revision;
                        if (const auto s = granted_slot(earlier.value); s && !foreign) {
                            granted = revision;
                            slot = *s;
                            written = earlier.value;
                        }
                    }
                    if (granted)
                        if (auto it = own_.find(id); it != own_.end()) {
                            it->second.values.front() = std::move(written);
                            it->second.granted_at_once = true;
                        }
                    at_once.reset();  // the key was not free: the usual way, at once
                    if (foreign) break;
                    if (revision) {
                        failed = false;
                        break;
                    }
                }
                co_await failpoint_pause("etcd.create");
                const auto r = co_await client_.txn(t);
                if (r.succeeded) {
                    revision = r.revision;
                } else if (!r.responses.empty() && !r.responses[0].range.kvs.empty()) {
                    const auto& earlier = r.responses[0].range.kvs[0];  // an earlier try got through
                    if (!(foreign = !earlier_try(earlier, lease, session))) revision = earlier.create_revision;
                } else if (retakes < 50) {
                    // Not written: a key's named max moved since the mirror showed it (see
                    // creation_txn). Taken again once the mirror shows the move.
                    ++retakes;
                    co_await mirror_at(r.revision);
                    auto it = own_.find(id);
                    if (stopped_ || it == own_.end()) co_return;
                    retake_max(it->second);
                    t = creation_txn(it->second);
                    attempt = -1;
                    continue;
                }
                failed = revision == 0;
                break;
            } catch (const std::exception& e) {
                log_line(log_level::warn, std::string("etcd store: writing a lock request: ") + e.what() +
                                              (attempt + 1 < write_tries ? "; trying again" : ""));
            }
        }
        if (stopped_) co_return;
        auto it = own_.find(id);
        if (it == own_.end()) co_return;
        own_request& o = it->second;
        if (foreign) {
            // Its id names a request made through another broker or connection, still in etcd: as in
            // memory, an id in use is refused, and that request is left alone.
            const bool quiet = o.ph == phase::ending;
            const own_request refused = std::move(o);
            own_.erase(it);
            if (!quiet) reject_request(refused, core::errc::duplicate_request);
            turn_done_();
            co_return;
        }
        if (failed) {
            const bool quiet = o.ph == phase::ending;
            const own_request gone = std::move(o);
            own_.erase(it);
            if (!quiet) reject_request(gone, core::errc::unavailable);
            // The entries may have been written: take them away again (on the session lease anyway).
            end_entries({}, refs_of(gone));
            turn_done_();
            co_return;
        }
        o.revision = revision;
        const bool gone_already = !find_entry(o.key, id) && mirror_->revision() >= revision;
        if (granted && o.ph != phase::ending) {  // written and claimed at once
            grant(o, granted, slot);
            if (gone_already) ended_elsewhere(it);  // and ended since by someone else, as the watch told
            turn_done_();
            co_return;
        }
        if (gone_already && o.ph != phase::ending) {
            // Ended by another connection (an unlock or force naming it) before this write's
            // answer came back: the watch told of the delete while the request was unconfirmed.
            const own_request ended = std::move(o);
            own_.erase(it);
            reject_request(ended, core::errc::cancelled);
            turn_done_();
            co_return;
        }
        if (o.ph == phase::ending) {
            end_entries({}, refs_of(o), {}, answer::none, o.why);
        } else {
            o.ph = phase::waiting;
            for (auto& [key, rid] : refs_of(o)) evaluate(key);
        }
        turn_done_();
        (void)self;
    }

    asio::awaitable<void> claim(std::shared_ptr<state> self, std::string id, std::int64_t revision) {
        const auto claiming = [&] {
            auto it = own_.find(id);
            return it != own_.end() && it->second.revision == revision && it->second.ph == phase::claiming ? &it->second
                                                                                                           : nullptr;
        };
        std::optional<etcd::txn_result> r;
        std::int64_t lease = lease_;
        try {
            const own_request* o = claiming();
            if (!o) co_return;
            if (o->keep_on_exit && o->ttl_ms) {
                lease = (co_await client_.grant_lease(kept_lease_ttl(o->ttl_ms))).id;
                if (stopped_) co_return;
                if (!(o = claiming())) {
                    forget_lease(lease);
                    co_return;
                }
            }
            r = co_await client_.txn(claim_txn(*o, lease));
        } catch (const std::exception& e) {
            log_line(log_level::warn, std::string("etcd store: a claim failed, trying again: ") + e.what());
        }
        if (stopped_) co_return;
        auto it = own_.find(id);
        if (it == own_.end() || it->second.revision != revision) co_return;
        own_request& o = it->second;
        if (o.ph != phase::claiming) {
            // Released, timed out or closed while the claim was under way: whatever the claim
            // did, the entry is being deleted.
            if (r && r->succeeded) forget_lease(lease);
            settle_cancel(o);
            co_return;
        }
        if (r && r->succeeded) {
            o.kept_lease = lease == lease_ ? 0 : lease;
            o.kept_revision = r->revision;
            grant(o, r->revision);
            settle_cancel(o);
        } else if (r && !r->responses.empty() && !r->responses[0].range.kvs.empty()) {
            const auto& earlier = r->responses[0].range.kvs[0];  // an earlier try got through
            if (earlier.lease != lease) forget_lease(lease);
            o.kept_lease = earlier.lease == lease_ ? 0 : earlier.lease;
            o.kept_revision = earlier.mod_revision;
            grant(o, earlier.create_revision);
            settle_cancel(o);
        } else {
            // Not claimed: the entry is gone (the watch reports that), or etcd did not answer
            // (decided again after a pause, and claimed again if still admitted). A lease of its
            // own is dropped only when etcd said no: after no answer, the claim may have used it.
            if (r) forget_lease(lease);
            o.ph = phase::waiting;
            if (o.cancel_uuid) {  // the cancel it waited for is carried out now
                const std::string uuid = std::move(*o.cancel_uuid);
                o.cancel_uuid.reset();
                cancel({.session = o.session, .uuid = uuid, .style = o.cancel_style}, id);
                turn_done_();
                co_return;
            }
            if (!r) {
                co_await pause_for(1);
                if (stopped_) co_return;
                if (auto again = own_.find(id); again != own_.end() && again->second.ph == phase::waiting)
                    for (auto& [key, rid] : refs_of(again->second)) evaluate(key);
            }
        }
        turn_done_();
        (void)self;
    }

    // An extend of a hold taken through another broker (its owner), which may be gone. Its entries
    // are rewritten with the new ttl and a mark of this extend, each write guarded by the entry's
    // mod revision; the owner's mirror sees the mark and moves the hold's timer, and the owner's
    // expiry is guarded by the same revisions, so etcd orders the two and neither is lost. A hold
    // kept on exit moves, grant keys too, to a lease of its own that covers the new ttl, as its
    // owner would move it (its owner may be gone); that lease is left to run out: it holds nothing
    // once the hold ends.
    asio::awaitable<void> extend_elsewhere(std::shared_ptr<state> self, owned_reply to, std::string id, std::string key,
                                           std::uint64_t renewed) {
        core::effect ef = extend_answer(to, id, key);
        ef.code = core::errc::unavailable;  // until the hold is found, or found gone
        std::vector<std::string> keys{key};
        if (const entry* e = find_entry(key, id); e && e->multi) {  // every key of an acquire-many
            keys.clear();
            for (auto& [k, ks] : keys_)
                if (ks.by_id.contains(id)) keys.push_back(k);
        }
        const std::string mark = opt_.broker_id + ":" + std::to_string(++extends_);
        std::int64_t lease = 0;
        try {
            for (int attempt = 0; attempt < 3 && !stopped_; ++attempt) {
                etcd::txn_request read;
                for (auto& k : keys) {
                    read.success.push_back(etcd::range_op{.key = q_key(k, id)});
                    read.success.push_back(etcd::range_op{.key = g_key(k, id)});
                }
                const auto found = co_await client_.txn(read);
                etcd::txn_request t;
                bool held = found.responses.size() == 2 * keys.size(), keep = false;
                std::vector<std::pair<etcd::key_value, json::object>> entries;
                for (std::size_t i = 0; held && i < keys.size(); ++i) {
                    const auto& q = found.responses[2 * i].range.kvs;
                    const auto& g = found.responses[2 * i + 1].range.kvs;
                    json::error_code ec;
                    auto v = q.empty() ? json::value() : json::parse(q.front().value, ec);
                    held = !ec && v.is_object() && (!g.empty() || granted_slot(v.get_object()));
                    if (!held) break;
                    keep = keep || v.get_object().contains("keep");
                    t.compares.push_back({.key = q.front().key,
                                          .what = etcd::compare::target::mod_revision,
                                          .number = q.front().mod_revision});
                    entries.emplace_back(q.front(), std::move(v.get_object()));
                    if (!g.empty()) entries.emplace_back(g.front(), json::object());
                }
                if (!held) {
                    ef.code = core::errc::not_holder;
                    break;
                }
                if (keep && renewed && !lease) lease = (co_await client_.grant_lease(kept_lease_ttl(renewed))).id;
                // A hold kept on exit moves to a lease of its own that covers the new ttl (its
                // owner may be gone), or, without one, to this broker's session lease; any other
                // stays on its owner's session lease, and ends with that broker, as every hold not
                // kept on exit does.
                const auto lease_of = [&](const etcd::key_value& kv) {
                    return !keep ? kv.lease : renewed ? lease : lease_;
                };
                for (auto& [kv, v] : entries) {
                    if (v.empty()) {  // a grant key: moves with its entry
                        t.success.push_back(etcd::put_op{.key = kv.key, .value = kv.value, .lease = lease_of(kv)});
                        continue;
                    }
                    v["extended"] = mark;
                    v["ttl"] = renewed;
                    t.success.push_back(
                        etcd::put_op{.key = kv.key, .value = json::serialize(v), .lease = lease_of(kv)});
                }
                const auto r = co_await client_.txn(t);
                if (r.succeeded) {
                    ef.code = core::errc::ok;
                    if (renewed) ef.lease = milliseconds(renewed);
                    break;
                }
            }
        } catch (const std::exception& e) {
            log_line(log_level::warn, std::string("etcd store: extending a hold of another broker: ") + e.what());
            ef.code = core::errc::unavailable;
        }
        if (stopped_) co_return;
        sink_.on_effect(ef);
        extend_done(id);
        turn_done_();
        (void)self;
    }

    asio::awaitable<void> extend_kept(std::shared_ptr<state> self, owned_reply to, std::string id, std::string key,
                                      std::uint64_t renewed, time_point now) {
        const auto holding = [&]() -> own_request* {
            auto it = own_.find(id);
            return it != own_.end() && it->second.ph == phase::holding ? &it->second : nullptr;
        };
        std::int64_t lease = lease_;
        std::optional<etcd::txn_result> r;
        bool unanswered = false;  // the txn went out and no answer came: the new lease may be in use
        try {
            if (renewed) lease = (co_await client_.grant_lease(kept_lease_ttl(renewed))).id;
            if (const own_request* o = holding(); o && !stopped_) {
                etcd::txn_request t;
                const auto refs = refs_of(*o);
                for (std::size_t i = 0; i < refs.size() && i < o->values.size(); ++i) {
                    const auto& [k, rid] = refs[i];
                    t.compares.push_back(
                        {.key = q_key(k, rid), .what = etcd::compare::target::create_revision, .number = o->revision});
                    t.success.push_back(etcd::put_op{.key = q_key(k, rid), .value = o->values[i], .lease = lease});
                    if (!o->granted_at_once)  // granted through a claim key, which moves too
                        t.success.push_back(
                            etcd::put_op{.key = g_key(k, rid), .value = opt_.broker_id, .lease = lease});
                }
                unanswered = true;
                r = co_await client_.txn(t);
                unanswered = false;
            }
        } catch (const std::exception& e) {
            log_line(log_level::warn, std::string("etcd store: extending a hold kept on exit: ") + e.what());
        }
        if (stopped_) co_return;
        core::effect ef = extend_answer(to, id, key);
        auto found = own_.find(id);
        own_request* o = found == own_.end() ? nullptr : &found->second;
        if (r && r->succeeded) {
            // Written while it held: extended, even when an end begun since is under way now
            // (that end is answered after this, as in memory). Of two extends at once, the later
            // write is what etcd keeps.
            // (A later extend through another broker, whose mark the mirror has applied already,
            // is not undone by this older write.)
            if (o && r->revision > o->kept_revision && r->revision > o->extended_at) {
                forget_lease(o->kept_lease);
                o->kept_lease = lease == lease_ ? 0 : lease;
                o->kept_revision = r->revision;
                o->ttl_ms = renewed;
                o->expires = renewed ? std::optional(now + milliseconds(renewed)) : std::nullopt;
                o->extended_here = true;
            } else {
                forget_lease(lease);
            }
            if (renewed) ef.lease = milliseconds(renewed);
        } else {
            o = holding();
            // The hold keeps its old lease and expiry. A txn that found its entry gone met an end
            // by someone else that the watch has not told yet: its owner hears of it first.
            if (o && r && !r->succeeded) {
                ended_elsewhere(own_.find(id));
                o = nullptr;
            }
            ef.code = o ? core::errc::unavailable : core::errc::not_holder;
            if (!unanswered) forget_lease(lease);
        }
        sink_.on_effect(ef);
        extend_done(id);
        turn_done_();
        (void)self;
    }

    // Writes of several requests in one txn: the deletes of ends (they need no compare), the
    // writes that claim a free key at once and the drops of a key's named max (each a nested txn
    // with its own compares, decided against the store as it was before the txn). Up to two
    // batches are written at once (one more than that was slower on bench/etcd.sh's W2), and the
    // next gathers meanwhile.
    // A txn may name a key once and hold at most 128 operations (etcd's default); a nested txn
    // waits for the next batch when its lock key is touched by one already in, whose delete it
    // would not see (etcd decides every compare first) or with which it would share a revision on
    // one key; and at most slots_per_txn claims go in one, each with its own slot for its token.
    // So a batch takes the writes that fit, in order, and leaves the others for the next.
    struct batched_write {
        std::vector<etcd::op> ops{};               // deletes, and the reason records of ends
        std::vector<std::string> locks{};          // the lock keys it touches
        const etcd::txn_request* nested{};         // or a nested txn (valid until it is done)
        claim_at_once* claim{};                    // nested is its txn: a claim at once, which takes a slot
        std::uint32_t slot = 0;                    // claim: its slot in the batch
        std::string written{};                     // claim: the entry's value as written
        std::optional<etcd::txn_result> result{};  // its own operations' results; none: no answer
        bool done = false;
        asio::steady_timer* wake = nullptr;
    };
    static constexpr std::size_t batch_ops = 128;
    // What etcd counts of a txn against its operation limit.
    static std::size_t ops_of(const etcd::txn_request& t) {
        return std::max({t.compares.size(), t.success.size(), t.failure.size()});
    }
    // The key a put or delete of a batch writes.
    static const std::string& written_key(const etcd::op& op) {
        if (const auto* p = std::get_if<etcd::put_op>(&op)) return p->key;
        return std::get<etcd::delete_op>(op).key;
    }
    static constexpr int batch_writers = 2;

    asio::awaitable<std::optional<etcd::txn_result>> in_batch(std::vector<etcd::op> ops,
                                                              std::vector<std::string> locks) {
        auto me = std::make_shared<batched_write>(batched_write{.ops = std::move(ops), .locks = std::move(locks)});
        co_await in_batch(me);
        co_return std::move(me->result);
    }

    asio::awaitable<void> in_batch(std::shared_ptr<batched_write> me) {
        asio::steady_timer wake(ex_, steady::time_point::max());
        me->wake = &wake;
        batches_.push_back(me);
        if (batching_ < batch_writers) {
            ++batching_;
            spawn(write_batches(shared_from_this()));
        }
        while (!me->done && !stopped_) co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
        me->wake = nullptr;
    }

    asio::awaitable<void> write_batches(std::shared_ptr<state> self) {
        while (!batches_.empty() && !stopped_) {
            std::vector<std::shared_ptr<batched_write>> now;
            std::unordered_set<std::string> keys, locks, nested_locks;
            std::uint32_t slots = 0;
            std::size_t nested_ops = 0;  // the most operations of one nested txn in the batch
            etcd::txn_request t;
            for (auto it = batches_.begin(); it != batches_.end();) {
                batched_write& w = **it;
                const std::size_t n = w.nested ? 1 : w.ops.size();
                // etcd allows a nested txn only what its outer txn leaves of the 128 operations.
                const std::size_t inner = std::max(nested_ops, w.nested ? ops_of(*w.nested) : 0);
                const bool fits =
                    now.empty() || (t.success.size() + n + inner <= batch_ops && (!w.claim || slots < slots_per_txn));
                const auto touched = [&](const auto& set) {
                    return std::any_of(w.locks.begin(), w.locks.end(),
                                       [&](const std::string& k) { return set.contains(k); });
                };
                // A nested txn's keys are not listed: it shares no lock key with anything in the batch.
                // A claim at once also waits for the end of an entry on its key that is being
                // written in the other batch, so that the two are written in the order they came
                // (the claim would fail first, then find the key's old max).
                const bool apart = w.nested ? !touched(locks) && !(w.claim && touched(ends_in_flight_))
                                            : !touched(nested_locks) &&
                                                  std::none_of(w.ops.begin(), w.ops.end(), [&](const etcd::op& op) {
                                                      return keys.contains(written_key(op));
                                                  });
                if (!fits || !apart) {
                    ++it;
                    continue;
                }
                if (w.nested) {
                    auto nested = std::make_shared<etcd::txn_request>(*w.nested);
                    if (w.claim) {
                        w.slot = slots++;
                        auto& put = std::get<etcd::put_op>(nested->success.front());
                        if (w.slot) {
                            w.claim->value["slot"] = w.slot;
                            put.value = json::serialize(w.claim->value);
                        }
                        w.written = put.value;
                    }
                    t.success.push_back(etcd::txn_op{std::move(nested)});
                    nested_ops = inner;
                    nested_locks.insert(w.locks.begin(), w.locks.end());
                } else {
                    for (auto& op : w.ops) {
                        keys.insert(written_key(op));
                        t.success.push_back(op);
                    }
                }
                locks.insert(w.locks.begin(), w.locks.end());
                now.push_back(*it);
                it = batches_.erase(it);
            }
            if (now.empty()) break;  // all wait for the other batch, whose writer takes them next
            std::optional<etcd::txn_result> r;
            {
                // The lock keys of this batch's ends, while it is written (whatever ends the write).
                struct in_flight {
                    std::unordered_multiset<std::string>& set;
                    std::vector<std::string> keys{};
                    ~in_flight() {
                        for (auto& k : keys) set.erase(set.find(k));
                    }
                } ends{ends_in_flight_};
                for (auto& w : now)
                    if (!w->nested) ends.keys.insert(ends.keys.end(), w->locks.begin(), w->locks.end());
                for (auto& k : ends.keys) ends_in_flight_.insert(k);
                try {
                    r = co_await client_.txn(t);
                } catch (const std::exception& e) {
                    log_line(log_level::warn, std::string("etcd store: a batch of writes failed: ") + e.what());
                }
            }
            if (stopped_) co_return;
            std::size_t at = 0;
            for (auto& w : now) {
                const std::size_t n = w->nested ? 1 : w->ops.size();
                if (r && r->responses.size() >= at + n) {
                    if (w->nested) {
                        auto& nested = r->responses[at];
                        w->result = etcd::txn_result{.revision = r->revision,
                                                     .succeeded = nested.succeeded,
                                                     .responses = std::move(nested.responses)};
                    } else {
                        w->result = etcd::txn_result{.revision = r->revision, .succeeded = r->succeeded};
                        w->result->responses.assign(r->responses.begin() + static_cast<std::ptrdiff_t>(at),
                                                    r->responses.begin() + static_cast<std::ptrdiff_t>(at + n));
                    }
                }
                at += n;
                w->done = true;
                if (w->wake) w->wake->cancel();
            }
        }
        --batching_;
        (void)self;
    }

    // Waits (2 s at most) until the mirror shows revision `revision`.
    asio::awaitable<void> mirror_at(std::int64_t revision) {
        asio::steady_timer pause(ex_);
        for (int i = 0; i < 200 && !stopped_ && mirror_->revision() < revision; ++i) {
            pause.expires_after(milliseconds(10));
            co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    // Ends the entries `refs`: `parts` are the txns, written in order, each deleting the entry and
    // grant keys of the next refs first (two operations a ref), then its reason records.
    asio::awaitable<void> end(std::shared_ptr<state> self, owned_reply to, std::vector<entry_ref> refs,
                              std::string named, answer how, std::vector<etcd::txn_request> parts,
                              std::string forced_key = {}, std::uint32_t ended_before = 0) {
        // Entries granted at once have no claim key: deleting such an entry ends a hold. (Read
        // before the first suspension, while the mirror still shows them.)
        std::vector<bool> granted_at_once;
        for (auto& [key, id] : refs) {
            const entry* e = find_entry(key, id);
            const auto o = own_.find(id);
            granted_at_once.push_back((e && e->grant && e->grant == e->revision) ||
                                      (o != own_.end() && o->second.granted_at_once));
        }
        // Each part is tried until it is done: an entry left behind would block its key for as
        // long as this broker's session lease lives. Once that lease is lost the entries go with it.
        // `r` gathers the parts' results, the deletes' responses in refs order.
        std::optional<etcd::txn_result> r;
        std::size_t ended_refs = 0;  // the refs of the parts done
        std::vector<etcd::op> records;
        const std::int64_t lease = lease_;
        asio::steady_timer pause(ex_);
        for (auto& t : parts) {
            const auto deletes =
                static_cast<std::size_t>(std::count_if(t.success.begin(), t.success.end(), [](auto& op) {
                    return std::holds_alternative<etcd::delete_op>(op);
                }));
            std::optional<etcd::txn_result> part;
            for (int attempt = 0; !part && !stopped_ && lease_ == lease; ++attempt) {
                if (t.compares.empty()) {  // plain deletes: one txn with other ends under way
                    std::vector<std::string> locks;
                    for (std::size_t i = ended_refs; i < ended_refs + deletes / 2 && i < refs.size(); ++i)
                        locks.push_back(refs[i].first);
                    part = co_await in_batch(t.success, std::move(locks));
                    if (!part && attempt == 0) log_line(log_level::warn, "etcd store: a release failed, trying again");
                } else {
                    try {
                        part = co_await client_.txn(t);
                    } catch (const std::exception& e) {
                        if (attempt == 0)
                            log_line(log_level::warn,
                                     std::string("etcd store: a release failed, trying again: ") + e.what());
                    }
                }
                if (!part && !stopped_) {
                    pause.expires_after(milliseconds(std::min(50 << std::min(attempt, 4), 500)));
                    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
                }
            }
            if (!part) break;  // this broker's lease is lost (its entries go with it), or it stops
            if (!r) r.emplace();
            r->revision = part->revision;
            r->succeeded = part->succeeded;
            if (!part->succeeded) break;
            for (std::size_t i = 0; i < deletes && i < part->responses.size(); ++i)
                r->responses.push_back(std::move(part->responses[i]));
            ended_refs += deletes / 2;
            // The reason records have been read with the deletes: dropped now.
            for (auto& op : t.success)
                if (const auto* p = std::get_if<etcd::put_op>(&op)) records.push_back(etcd::delete_op{.key = p->key});
        }
        if (stopped_) co_return;
        if (!records.empty()) spawn(drop_records(shared_from_this(), std::move(records)));
        if (r && !r->succeeded && how == answer::force) {
            // A grant this broker had not seen yet: decided again once the mirror shows it, with
            // the holders of the parts done counted as ended.
            std::uint32_t ended = ended_before;
            for (std::size_t i = 0; i + 1 < r->responses.size(); i += 2) ended += r->responses[i].deleted > 0;
            for (std::size_t i = ended_refs; i < refs.size(); ++i) ending_why_.erase(refs[i].second);
            counters_.forced -= refs.size() - ended_refs;
            co_await mirror_at(r->revision);
            if (stopped_) co_return;
            const core::reply_to again{.session = to.session, .uuid = to.uuid, .style = to.style};
            force_release(again, forced_key, named.empty() ? std::nullopt : std::optional<std::string_view>(named),
                          ended);
            turn_done_();
            co_return;
        }
        if (r && !r->succeeded && how == answer::expiry) {
            // The entries were rewritten since the mirror showed them: extended through another
            // broker (or moved by this broker's own extend of a hold kept on exit). Decided again
            // once the mirror shows the rewrite. Its holder has been told that the hold ended, so
            // a hold that lives on is the extender's now: detached from the holder's connection
            // (as a hold kept on exit is), it ends at the new expiry, or by a release naming it.
            // Entries gone meanwhile were ended by someone else, or by an earlier try of this
            // delete whose answer was lost.
            for (auto& [key, id] : refs) ending_why_.erase(id);
            --counters_.expirations;
            co_await mirror_at(r->revision);
            if (stopped_) co_return;
            auto it = own_.find(refs.front().second);
            if (it != own_.end() && it->second.ph == phase::ending && it->second.why == core::event_kind::expired) {
                own_request& o = it->second;
                const bool gone =
                    std::any_of(refs.begin(), refs.end(), [&](auto& x) { return !find_entry(x.first, x.second); });
                if (gone) {
                    std::vector<etcd::op> written;  // this delete's reason record, if an earlier try got through
                    for (auto& op : parts.front().success)
                        if (const auto* p = std::get_if<etcd::put_op>(&op))
                            written.push_back(etcd::delete_op{.key = p->key});
                    if (!written.empty()) spawn(drop_records(shared_from_this(), std::move(written)));
                    if (o.keys.empty()) {
                        forget_lease(o.kept_lease);
                        own_.erase(it);
                    } else {  // a multi hold is all or nothing: its other keys go too
                        o.why.reset();
                        end_entries({}, refs_of(o));
                    }
                } else {
                    o.ph = phase::holding;
                    o.why.reset();
                    o.session = 0;
                }
            }
            turn_done_();
            co_return;
        }
        if (r && r->succeeded) {
            std::set<std::string> maxed;
            for (auto& [key, id] : refs)
                if (auto n = named_.find(key); n != named_.end() && maxed.insert(key).second)
                    spawn(drop_max(shared_from_this(), key, n->second.revision));
        }
        const bool none_deleted = r && std::none_of(r->responses.begin(), r->responses.end(),
                                                    [](const etcd::op_result& x) { return x.deleted > 0; });
        // A request is forgotten by the end its owner began (its release, timeout, close); an end
        // by someone else (a force, another connection's unlock) leaves it to that one, or to
        // the watch, which tells its owner of the loss.
        const auto owners_end = [&](const own_request& o) {
            return how != answer::force && (to.uuid.empty() || to.session == o.session);
        };
        for (auto& [key, id] : refs)
            if (r && find_entry(key, id)) deleted_.insert(id);  // until the watch shows it
        for (auto& [key, id] : refs)
            if (auto it = own_.find(id); it != own_.end() && it->second.ph == phase::ending && owners_end(it->second)) {
                // Its owner's release of a hold that someone else (through another broker) ended
                // first: as in memory, the owner hears of that loss before the answer.
                if ((how == answer::unlock || how == answer::many) && none_deleted && it->second.token &&
                    it->second.session == to.session && !to.uuid.empty())
                    tell_lost(it->second, core::lost_reason::forced);
                forget_lease(it->second.kept_lease);
                own_.erase(it);
            }
        std::uint32_t entries = 0, grants = 0;
        std::vector<std::string> names;
        for (std::size_t i = 0; r && i + 1 < r->responses.size() && i / 2 < refs.size(); i += 2) {
            const bool entry_gone = r->responses[i].deleted > 0;
            const bool grant_gone = r->responses[i + 1].deleted > 0 || (entry_gone && granted_at_once[i / 2]);
            entries += entry_gone;
            grants += grant_gone;
            if (entry_gone || grant_gone) names.push_back(refs[i / 2].first);
        }
        if (grants) counters_.releases += grants;
        const core::reply_to reply{.session = to.session, .uuid = to.uuid, .style = to.style};
        if (!to.uuid.empty() && how == answer::many) {
            std::sort(names.begin(), names.end());
            sink_.on_effect({.kind = core::effect_kind::released_many,
                             .session = to.session,
                             .id = named,
                             .multi = true,
                             .code = names.empty() ? core::errc::not_found : core::errc::ok,
                             .uuid = to.uuid,
                             .style = to.style,
                             .names = names});
        } else if (!to.uuid.empty() && how != answer::none) {
            auto status = grants    ? core::release_status::released
                          : entries ? core::release_status::withdrawn
                                    : core::release_status::already_released;
            std::uint32_t ended = std::min<std::uint32_t>(grants, 1);
            if (how == answer::force) {  // every admitted entry counts as a hold, claimed yet or not
                ended = entries + ended_before;
                status = ended ? core::release_status::released : core::release_status::already_released;
            }
            answer_unlock(reply, refs.empty() ? forced_key : refs.front().first, named, status, ended);
        }
        turn_done_();
        (void)self;
    }

    // A key keeps the max last named on it while it is held or waited for, as in memory: once an
    // end may have left it without entries, its `m/` record is deleted if etcd finds no entry
    // and the record unchanged (a later batch than the end's, so that the end's deletes count).
    // A miss leaves it to the end of the key's last entry.
    asio::awaitable<void> drop_max(std::shared_ptr<state> self, std::string key, std::int64_t revision) {
        const std::string entries = q_key(key, "");
        etcd::txn_request t;
        t.compares.push_back({.key = entries,
                              .what = etcd::compare::target::create_revision,
                              .number = 0,
                              .range_end = etcd::prefix_end(entries)});
        t.compares.push_back({.key = m_key(key), .what = etcd::compare::target::mod_revision, .number = revision});
        t.success.push_back(etcd::delete_op{.key = m_key(key)});
        co_await failpoint_pause("etcd.drop-max");
        for (int attempt = 0; attempt < write_tries && !stopped_; ++attempt) {
            if (attempt > 0) co_await pause_for(attempt);
            auto w = std::make_shared<batched_write>(batched_write{.locks = {key}, .nested = &t});
            co_await in_batch(w);
            if (w->result) break;
        }
        (void)self;
    }

    // Tried a few times; after that the records are left to the session lease.
    asio::awaitable<void> drop_records(std::shared_ptr<state> self, std::vector<etcd::op> deletes) {
        for (int attempt = 0; attempt < write_tries && !stopped_; ++attempt) {
            if (attempt > 0) co_await pause_for(attempt);
            if (co_await in_batch(deletes, {})) break;
        }
        (void)self;
    }

    asio::awaitable<void> cancel_entry(std::shared_ptr<state> self, owned_reply to, std::string id,
                                       etcd::txn_request t) {
        bool done = false;
        std::optional<etcd::txn_result> r;
        try {
            r = co_await client_.txn(t);
            done = !r->responses.empty() && r->responses[0].deleted > 0;
        } catch (const std::exception& e) {
            log_line(log_level::warn, std::string("etcd store: a cancel failed: ") + e.what());
        }
        if (stopped_) co_return;
        if (auto it = own_.find(id); it != own_.end() && it->second.ph == phase::ending) {
            // Gone already: someone else (another connection's unlock) ended it first, so, as in
            // memory, the request is answered cancelled and then the cancel finds nothing.
            if (r && !done) reject_request(it->second, core::errc::cancelled);
            own_.erase(it);
        }
        sink_.on_effect({.kind = core::effect_kind::cancelled,
                         .session = to.session,
                         .id = id,
                         .uuid = to.uuid,
                         .style = to.style,
                         .done = done});
        turn_done_();
        (void)self;
    }

    void on_lease(const etcd::lease_keeper::event& ev) {
        if (ev.kind == etcd::lease_keeper::event_kind::granted) {
            lease_ = ev.lease;
            log_line(log_level::info, "etcd store: session lease " + std::to_string(lease_) + " granted");
            return;
        }
        lease_ = 0;
        ending_why_.clear();
        trouble_ = "lost its etcd session lease: " + ev.why;
        log_line(log_level::error, "etcd store: " + trouble_ + "; every hold of this broker is given up");
        // Whatever this broker held or waited for may be gone: its holders hear it now, before
        // etcd can have let anyone else in.
        auto all = std::move(own_);
        own_.clear();
        for (auto& [id, o] : all) {
            if (o.ph == phase::holding || o.ph == phase::claiming)
                tell_lost(o, core::lost_reason::unavailable);
            else if (o.ph != phase::ending)
                reject_request(o, core::errc::unavailable);
            settle_cancel(o);
        }
    }

    void apply(const std::vector<etcd::watch_event>& changes) {
        std::unordered_set<std::string> touched;
        // Watch events, told once the batch is applied: every broker tells the same, in etcd's order.
        // The mirror's first read is the state the broker starts from, not what happened: its
        // requests and holds were told by the brokers they came through (a read after the watch
        // was away is what happened meanwhile, and is told).
        const bool telling = events_ && !(mirror_->reads() == 1 && !mirror_->synced());
        struct told {
            core::event_kind kind;
            std::string key, id;
            core::fencing_token token;
        };
        std::vector<told> events;
        const std::string& p = opt_.prefix;
        // Reason records first: one is written in the txn of the deletes it names, after them.
        // Their deletes come in a later revision, and are applied in order below.
        for (const auto& ev : changes) {
            std::string_view name(ev.kv.key);
            if (ev.what != etcd::watch_event::type::put || !name.starts_with(p) ||
                !name.substr(p.size()).starts_with("r/"))
                continue;
            if (const auto why = recorded_why(ev.kv.value)) recorded_[std::string(name.substr(p.size() + 2))] = *why;
        }
        for (const auto& ev : changes) {
            std::string_view name(ev.kv.key);
            if (!name.starts_with(p)) continue;
            name.remove_prefix(p.size());
            std::string key, id;
            const bool put = ev.what == etcd::watch_event::type::put;
            if (name.starts_with("q/") && parse_entry_name(name.substr(2), true, key, id)) {
                touched.insert(key);
                if (put) {
                    // Every request waits for its claim to be written, so each is told queued
                    // first: watchers see the queue in etcd's order, and grants leave it.
                    if (put_entry(key, id, ev.kv)) {
                        if (telling) events.push_back({core::event_kind::queued, key, id, 0});
                        if (const entry* e = find_entry(key, id); e && e->grant) {  // granted at once
                            last_token_ = std::max(last_token_, token_of(*e));
                            if (telling) events.push_back({core::event_kind::granted, key, id, token_of(*e)});
                        }
                    }
                } else {
                    const entry* e = find_entry(key, id);
                    const bool was_held = e && e->grant;
                    const core::fencing_token token = was_held ? token_of(*e) : 0;
                    core::event_kind why = was_held ? core::event_kind::released : core::event_kind::cancelled;
                    // A granted entry ends as a hold does, whatever ended it: a cancel or a timeout
                    // that met a claim whose answer was lost still ends a grant.
                    const auto tell = [&](core::event_kind k) {
                        if (!(was_held && (k == core::event_kind::cancelled || k == core::event_kind::timeout)))
                            why = k;
                    };
                    if (auto w = ending_why_.find(id); w != ending_why_.end()) {
                        tell(w->second.first);
                        if (--w->second.second <= 0) ending_why_.erase(w);
                    } else if (auto r = recorded_.find(id); r != recorded_.end()) {
                        tell(r->second);  // ended through another broker, which said why
                    }
                    drop_entry(key, id);
                    if (telling && e) events.push_back({why, key, id, token});
                }
            } else if (name.starts_with("g/") && parse_entry_name(name.substr(2), true, key, id)) {
                touched.insert(key);
                auto ks = keys_.find(key);
                if (ks == keys_.end()) continue;
                auto r = ks->second.by_id.find(id);
                if (r == ks->second.by_id.end()) continue;
                entry& e = ks->second.entries.at(r->second);
                // A grant key goes only with its entry, in the same txn or lease, and the watch may
                // tell the two deletes in either order: the entry keeps its grant until it goes.
                if (!put || e.grant) continue;  // a delete; a move to another lease, or an entry granted at once
                e.grant = ev.kv.create_revision;
                ++granted_count_;
                e.seen = steady::now();
                last_token_ = std::max(last_token_, token_of(e));
                if (telling) events.push_back({core::event_kind::granted, key, id, token_of(e)});
            } else if (name.starts_with("r/")) {
                if (!put) recorded_.erase(std::string(name.substr(2)));
            } else if (name.starts_with("m/") && parse_entry_name(name.substr(2), false, key, id)) {
                touched.insert(key);
                std::uint32_t max = 1;
                std::from_chars(ev.kv.value.data(), ev.kv.value.data() + ev.kv.value.size(), max);
                auto ks = keys_.find(key);
                if (put) {
                    named_[key] = core::named_max{ev.kv.mod_revision, {max, true}};
                    if (ks != keys_.end()) ks->second.last = named_[key];
                } else {
                    named_.erase(key);
                    if (ks != keys_.end()) ks->second.last.reset();
                }
            }
        }
        for (auto& [key, id] : std::exchange(recheck_, {}))
            if (auto it = own_.find(id); it != own_.end() && on_key(it->second, key) &&
                                         it->second.ph != phase::ending && it->second.ph != phase::creating &&
                                         !find_entry(key, id) && mirror_->revision() >= it->second.revision)
                ended_elsewhere(it);
        for (const auto& key : touched) evaluate(key);
        for (const auto& t : events)
            sink_.on_effect({.kind = core::effect_kind::event,
                             .id = t.id,
                             .key = t.key,
                             .token = t.token,
                             .waiters = waiters_on(t.key),
                             .event = t.kind});
    }

    // Why this broker ends request `id` (on `keys` keys), for the watch events its deletes bring.
    void ending(const std::string& id, core::event_kind why, std::size_t keys = 1) {
        if (events_) ending_why_[id] = {why, static_cast<int>(keys)};
    }

    // The slot of an entry whose value marks it granted at its own revision (written and claimed
    // at once); nullopt when it is not marked so.
    static std::optional<std::uint32_t> granted_slot(const json::object& v) {
        const auto* g = v.if_contains("granted");
        if (!g || !g->is_bool() || !g->get_bool()) return std::nullopt;
        const auto* slot = v.if_contains("slot");
        const auto n = slot && slot->is_int64() ? slot->get_int64() : 0;
        return static_cast<std::uint32_t>(n >= 0 && n < slots_per_txn ? n : 0);
    }
    static std::optional<std::uint32_t> granted_slot(std::string_view value) {
        json::error_code ec;
        const auto v = json::parse(json::string_view(value.data(), value.size()), ec);
        return !ec && v.is_object() ? granted_slot(v.get_object()) : std::nullopt;
    }

    // A rewrite of an entry of this broker's hold that carries the mark of an extend through
    // another broker: the hold's timer moves to the ttl written. Had it been extended through this
    // broker since the last such mark, the two are concurrent, and the later expiry is kept: a
    // holder is never cut short of what it was told.
    void extended_elsewhere(const std::string& id, std::string_view value, std::int64_t revision) {
        auto it = own_.find(id);
        if (it == own_.end() || !it->second.token) return;
        json::error_code ec;
        const auto v = json::parse(json::string_view(value.data(), value.size()), ec);
        const auto* o = v.if_object();
        const auto* mark = o ? o->if_contains("extended") : nullptr;
        const auto* ttl = o ? o->if_contains("ttl") : nullptr;
        if (!mark || !mark->is_string() || !ttl || !(ttl->is_uint64() || ttl->is_int64())) return;
        own_request& h = it->second;
        if (h.extended == mark->get_string()) return;  // a move to another lease, or known
        h.extended = std::string(mark->get_string());
        h.extended_at = revision;
        const auto ms = ttl->to_number<std::uint64_t>();
        const std::optional<time_point> at =
            ms ? std::optional(time_point(steady::now()) + milliseconds(ms)) : std::nullopt;
        // A hold kept on exit is moved by every extend, its owner's too: etcd orders them, and the
        // later write is the hold's lease. Any other is extended through its owner by its timer
        // alone, so the two cannot be ordered, and the owner keeps the later expiry (its entries
        // stay on its session lease, which lives as long as it does).
        if (h.keep_on_exit ? revision < h.kept_revision : h.extended_here && (!h.expires || (at && *at < *h.expires)))
            return;
        h.extended_here = false;
        h.ttl_ms = ms;
        h.expires = at;
    }

    // Whether the entry is new: a put of one already known (moved to another lease) changes nothing.
    bool put_entry(const std::string& key, const std::string& id, const etcd::key_value& kv) {
        if (auto ks = keys_.find(key); ks != keys_.end())
            if (auto r = ks->second.by_id.find(id); r != ks->second.by_id.end() && r->second == kv.create_revision) {
                ks->second.entries.at(r->second).mod = kv.mod_revision;
                extended_elsewhere(id, kv.value, kv.mod_revision);
                return false;
            }
        entry e{.id = id, .revision = kv.create_revision, .mod = kv.mod_revision};
        try {
            const auto v = json::parse(kv.value).as_object();
            if (auto* m = v.if_contains("mode"); m && m->is_string() && m->get_string() == "shared")
                e.mode = core::lock_mode::shared;
            if (auto* m = v.if_contains("max"); m && m->is_int64())
                e.max.max = static_cast<std::uint32_t>(m->get_int64());
            if (auto* m = v.if_contains("named"); m && m->is_bool()) e.max.named = m->get_bool();
            if (auto* m = v.if_contains("multi"); m && m->is_bool()) e.multi = m->get_bool();
            if (auto slot = granted_slot(v)) {
                ++granted_count_;
                e.grant = kv.create_revision;
                e.slot = *slot;
                e.seen = steady::now();
            }
        } catch (const std::exception&) {
            log_line(log_level::warn, "etcd store: an unreadable entry " + kv.key + " counts as an exclusive request");
        }
        key_state& ks = keys_[key];
        if (auto n = named_.find(key); n != named_.end()) ks.last = n->second;
        ks.by_id[id] = e.revision;
        ks.entries[e.revision] = std::move(e);
        ++entry_count_;
        return true;
    }

    void drop_entry(const std::string& key, const std::string& id) {
        deleted_.erase(id);
        std::int64_t dropped = 0;  // the create revision of the entry gone, when the mirror had it
        auto ks = keys_.find(key);
        if (ks != keys_.end()) {
            if (auto r = ks->second.by_id.find(id); r != ks->second.by_id.end()) {
                dropped = r->second;
                auto e = ks->second.entries.find(r->second);
                --entry_count_;
                granted_count_ -= e->second.grant != 0;
                ks->second.entries.erase(e);
                ks->second.by_id.erase(r);
            }
            if (ks->second.entries.empty()) keys_.erase(ks);
        }
        auto it = own_.find(id);
        if (it == own_.end() || !on_key(it->second, key)) return;
        if (it->second.ph == phase::ending || it->second.ph == phase::creating) return;
        // The entry of an earlier request of the same id (released, then asked for again): the
        // watch may tell of its delete after this one's write was answered. (A read after the
        // watch was away may tell one delete for both: whether this one's entry is gone too is
        // decided once the whole change is applied.)
        if (dropped && it->second.revision && dropped != it->second.revision) {
            recheck_.emplace_back(key, id);
            return;
        }
        ended_elsewhere(it);
    }

    // Someone else ended this broker's request `it` (a force, another connection's unlock or
    // cancel): its owner hears it, and it is forgotten.
    void ended_elsewhere(std::unordered_map<std::string, own_request>::iterator it) {
        own_request& o = it->second;
        if (o.ph == phase::holding)
            tell_lost(o, core::lost_reason::forced);
        else
            reject_request(o, core::errc::cancelled);
        settle_cancel(o);
        if (o.keys.empty()) {
            own_.erase(it);
        } else {  // a multi request is all or nothing: its other keys go too
            o.ph = phase::ending;
            end_entries({}, refs_of(o));
        }
    }

    // Grants what the rule admits of this broker's requests on `key`, and answers try-locks
    // and first queue notices.
    void evaluate(const std::string& key) {
        auto ks = keys_.find(key);
        if (ks == keys_.end() || !ready()) return;
        const auto v = view(key);
        const std::size_t n = core::holder_count(v, core::max_of(v, ks->second.last));
        const auto waiting = static_cast<std::uint32_t>(v.size() - n);
        std::size_t i = 0;
        std::vector<std::string> to_claim;
        for (auto& [rev, e] : ks->second.entries) {
            const std::size_t at = i++;
            auto it = own_.find(e.id);
            if (it == own_.end() || !on_key(it->second, key)) continue;
            own_request& o = it->second;
            if (o.ph != phase::waiting || o.revision != rev) continue;
            if (e.grant) {  // claimed by a claim whose answer was lost
                grant(o, e.grant, e.slot);
                continue;
            }
            // A multi request holds when it is among the holders of every key at once.
            const bool admitted = at < n && (o.keys.empty() || admitted_everywhere(o));
            if (admitted) {
                to_claim.push_back(o.id);
            } else if (!o.wait) {
                ++counters_.refused;
                const auto kt = key_tokens(o);
                sink_.on_effect({.kind = core::effect_kind::refused,
                                 .session = o.session,
                                 .id = o.id,
                                 .key = key,
                                 .keys = kt,
                                 .multi = !o.keys.empty(),
                                 .waiters = at < n ? waiting : waiting - 1});
                o.ph = phase::ending;
                end_entries({}, refs_of(o));
            } else if (!o.told_queued && at >= n) {  // a multi request: told by a key it waits on
                o.told_queued = true;
                ++counters_.queued;
                const auto kt = key_tokens(o);
                sink_.on_effect({.kind = core::effect_kind::queued,
                                 .session = o.session,
                                 .id = o.id,
                                 .key = key,
                                 .keys = kt,
                                 .multi = !o.keys.empty(),
                                 .notice = o.queued_notice,
                                 .waiters = waiting,
                                 .position = static_cast<std::uint32_t>(at - n + 1)});
            }
        }
        for (auto& id : to_claim) {
            own_request& o = own_.at(id);
            o.ph = phase::claiming;
            spawn(claim(shared_from_this(), id, o.revision));
        }
    }

    // The txn that makes `o` a holder: its grant key on every key, in one txn, so that a multi
    // request gets one revision and one token for all. Sent again after a lost answer, it finds
    // its grant there and takes its revision. On a lease other than the session's (a hold kept
    // on exit), the entries move onto that lease too.
    etcd::txn_request claim_txn(const own_request& o, std::int64_t lease) const {
        etcd::txn_request t;
        const auto refs = refs_of(o);
        const std::string first_grant = g_key(refs.front().first, o.id);
        t.compares.push_back({.key = first_grant, .what = etcd::compare::target::create_revision, .number = 0});
        t.failure.push_back(etcd::range_op{.key = first_grant});
        for (std::size_t i = 0; i < refs.size(); ++i) {
            const auto& [k, rid] = refs[i];
            t.compares.push_back(
                {.key = q_key(k, rid), .what = etcd::compare::target::create_revision, .number = o.revision});
            t.success.push_back(etcd::put_op{.key = g_key(k, rid), .value = opt_.broker_id, .lease = lease});
            if (lease != lease_ && i < o.values.size())
                t.success.push_back(etcd::put_op{.key = q_key(k, rid), .value = o.values[i], .lease = lease});
        }
        return t;
    }

    // The lease a hold kept on exit with a ttl of `ttl_ms` lives on once granted: whole seconds,
    // rounded up, and one more, so that while this broker lives its own timer ends the hold first.
    static std::chrono::seconds kept_lease_ttl(std::uint64_t ttl_ms) {
        return std::chrono::seconds(static_cast<std::int64_t>((ttl_ms + 999) / 1000) + 1);
    }

    void forget_lease(std::int64_t lease) {
        if (lease == 0 || lease == lease_) return;
        spawn([](std::shared_ptr<state> self, std::int64_t id) -> asio::awaitable<void> {
            try {
                co_await self->client_.revoke_lease(id);
            } catch (const std::exception&) {}  // it expires by itself
        }(shared_from_this(), lease));
    }

    // Whether multi request `o` is among the holders of each of its keys, as the mirror shows them.
    bool admitted_everywhere(const own_request& o) const {
        for (auto& k : o.keys) {
            auto ks = keys_.find(k);
            if (ks == keys_.end()) return false;
            const auto v = view(k);
            const std::size_t n = core::holder_count(v, core::max_of(v, ks->second.last));
            auto r = ks->second.by_id.find(o.id);
            if (r == ks->second.by_id.end()) return false;
            const auto at =
                static_cast<std::size_t>(std::distance(ks->second.entries.begin(), ks->second.entries.find(r->second)));
            if (at >= n) return false;
        }
        return true;
    }

    void grant(own_request& o, std::int64_t revision, std::uint32_t slot = 0) {
        const time_point now = steady::now();
        o.ph = phase::holding;
        o.token = token_of(revision, slot);
        o.expires = o.ttl_ms ? std::optional(now + milliseconds(o.ttl_ms)) : std::nullopt;
        last_token_ = std::max(last_token_, o.token);
        ++counters_.grants;
        const auto kt = key_tokens(o);
        sink_.on_effect({.kind = core::effect_kind::granted,
                         .session = o.session,
                         .id = o.id,
                         .key = o.key,
                         .keys = kt,
                         .multi = !o.keys.empty(),
                         .token = o.token,
                         .waiters = waiters_on(o.key),
                         .expires = o.expires,
                         .waited = now - o.since});
    }

    asio::any_io_executor ex_;
    core::effect_sink& sink_;
    core::table_config config_;
    etcd_store_options opt_;
    std::function<void()> turn_done_;
    etcd::client client_;
    std::unique_ptr<etcd::prefix_mirror> mirror_;
    std::unique_ptr<etcd::lease_keeper> keeper_;
    std::vector<core::key_pin> pins_ = config_.pins;
    std::int64_t lease_ = 0;
    std::int64_t base_ = -1;
    core::fencing_token last_token_ = 0;
    bool stopped_ = false;
    std::string trouble_ = "connecting to etcd";
    std::map<std::string, key_state> keys_;
    std::unordered_map<std::string, core::named_max> named_;
    std::unordered_map<std::string, own_request> own_;
    std::unordered_set<std::string> deleted_;            // entries this broker deleted that the mirror still shows
    std::list<std::shared_ptr<batched_write>> batches_;  // writes waiting for the next batch
    int batching_ = 0;                                   // batches being written
    // Requests with extends being written, and the extending connection's releases held back till then.
    struct extending {
        int writing = 0;
        core::session_id session = 0;
        std::vector<std::pair<owned_reply, std::function<void(const core::reply_to&)>>> later{};
    };
    std::unordered_map<std::string, extending> extending_;
    bool events_ = false;
    std::unordered_multiset<std::string> ends_in_flight_;  // lock keys of the ends in a batch being written
    std::vector<entry_ref> recheck_;  // requests whose entry may have gone with an older one of their id
    std::unordered_map<std::string, std::pair<core::event_kind, int>> ending_why_;  // reason, deletes to come
    std::unordered_map<std::string, core::event_kind> recorded_;                    // reason records, by request id
    core::table_counters counters_{};
    std::uint64_t extends_ = 0;      // extends through this broker of other brokers' holds: their marks
    std::size_t entry_count_ = 0;    // entries in the mirror
    std::size_t granted_count_ = 0;  // of them, granted
};

class etcd_store final : public core::lock_store {
public:
    explicit etcd_store(std::shared_ptr<state> s) : s_(std::move(s)) {}
    ~etcd_store() override { s_->stop(); }

    void acquire(const core::acquire_request& r, time_point now) override { s_->acquire(r, now); }
    void acquire_many(const core::acquire_many_request& r, time_point now) override { s_->acquire_many(r, now); }
    void release(const core::reply_to& to, std::string_view key, std::string_view id, time_point) override {
        s_->release(to, key, id);
    }
    void force_release(const core::reply_to& to, std::string_view key, std::optional<std::string_view> id,
                       time_point) override {
        s_->force_release(to, key, id);
    }
    void release_many(const core::reply_to& to, std::string_view id, time_point) override { s_->release_many(to, id); }
    void release_own(const core::reply_to& to, std::string_view key, time_point) override { s_->release_own(to, key); }
    void cancel(const core::reply_to& to, std::string_view id, time_point) override { s_->cancel(to, id); }
    void extend(const core::reply_to& to, std::string_view key, std::string_view id, std::optional<milliseconds> ttl,
                time_point now) override {
        s_->extend(to, key, id, ttl, now);
    }
    void abandon(core::session_id session, std::string_view id, time_point) override { s_->abandon(session, id); }
    void close_session(core::session_id session, time_point) override { s_->close_session(session); }
    std::uint32_t session_requests(core::session_id session) const noexcept override {
        return s_->session_requests(session);
    }
    void expire(time_point now) override { s_->expire(now); }
    std::optional<time_point> next_deadline() override { return s_->next_deadline(); }
    bool grants_stalled() const noexcept override { return s_->grants_stalled(); }
    bool resume_grants(time_point) override { return !s_->grants_stalled(); }
    std::string stall_reason() const override { return s_->stall_reason(); }
    void stop() noexcept override { s_->stop(); }
    bool shared() const noexcept override { return true; }
    void set_events(bool enabled) noexcept override { s_->set_events(enabled); }
    void set_pin(std::string_view prefix, std::optional<std::uint32_t> max) override { s_->set_pin(prefix, max); }
    core::key_page list_keys(std::uint64_t cursor, std::size_t limit) const override {
        return s_->list_keys(cursor, limit);
    }
    core::key_info info(std::string_view key, std::size_t max_holders) const override {
        return s_->info(key, max_holders);
    }
    core::table_counters counters() const noexcept override { return s_->counters(); }
    std::vector<core::contended_key> top_contended(std::size_t n) const override { return s_->top_contended(n); }
    core::fencing_token last_token() const noexcept override { return s_->last_token(); }

private:
    std::shared_ptr<state> s_;
};

}  // namespace

std::unique_ptr<core::lock_store> make_etcd_store(asio::any_io_executor ex, core::effect_sink& sink,
                                                  const core::table_config& config, etcd_store_options options,
                                                  std::function<void()> turn_done) {
    auto s = std::make_shared<state>(ex, sink, config, std::move(options), std::move(turn_done));
    s->start();
    return std::make_unique<etcd_store>(s);
}

}  // namespace lmx::detail

namespace lmx {

std::string store_url_error(std::string_view url) {
    std::string why;
    if (detail::parse_store_url(url, false, &why).empty()) return why.empty() ? "no endpoint" : why;
    return {};
}

}  // namespace lmx

namespace lmx::detail {

std::vector<std::string> parse_store_url(std::string_view url, bool tls, std::string* why) {
    constexpr std::string_view scheme = "etcd://";
    std::vector<std::string> out;
    if (!url.starts_with(scheme)) {
        if (why) *why = "the store URL must start with etcd:// (etcd://HOST:PORT[,HOST:PORT...])";
        return out;
    }
    url.remove_prefix(scheme.size());
    while (!url.empty()) {
        const auto comma = url.find(',');
        std::string_view one = url.substr(0, comma);
        url = comma == std::string_view::npos ? std::string_view{} : url.substr(comma + 1);
        const auto colon = one.rfind(':');
        if (one.empty() || colon == std::string_view::npos || colon == 0 || colon + 1 == one.size()) {
            if (why) *why = "'" + std::string(one) + "' is not HOST:PORT";
            out.clear();
            return out;
        }
        out.push_back(std::string(tls ? "https://" : "http://") + std::string(one));
    }
    if (out.empty() && why) *why = "no etcd endpoint named";
    return out;
}

}  // namespace lmx::detail
