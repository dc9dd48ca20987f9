// Randomized model test of lmx::core::lock_table.
//
// A deliberately naive reference model (std::map / std::deque, O(n) everywhere, no indexes) of
// the lock semantics in PROTOCOL.md and lock_table.hpp is driven with the same long random
// operation sequences as the real table. After every step the test compares return values, the
// effects emitted (as a multiset of canonical texts, plus per-key FIFO grant order and fencing
// tokens), and the observable state (list_keys, info, counters, next_deadline, last_token,
// top_contended), and calls check_invariants().
//
// Replay: LMX_MODEL_SEED=<seed> runs one seed; LMX_MODEL_STEPS=<n> sets the total number of steps
// (with LMX_MODEL_SEED: the steps of that seed). A failure names the seed, the step and the last
// operations. There is no switch to narrow the generator or relax a comparison: wait deadlines,
// max raised over waiters, ties between deadlines, multi queued positions and info().last_token
// are always generated and checked strictly.
//
// Decisions on details the spec leaves open (the model encodes them; see the report):
// - expire(now) removes waiters whose wait deadline is <= now BEFORE it ends leases, so a waiter is
//   never granted at (or after) its own deadline, even on a tie with a lease end.
// - A key's max is "explicit" once any request gave one; shared holders are unbounded only while no
//   request ever gave a max for the (live) key. An empty key is forgotten, max included.
// - A multi request waits in the queue of every one of its keys. counters.holders / waiters /
//   grants / releases count per key (releases = holds ended for any reason, so grants == releases +
//   holders); expirations / forced count per lock (one lease, one force); queued / refused /
//   cancelled / timeouts / rejected count per request.
// - A multi-key lock is all or nothing: forcing it on one key ends it on every key.
// - Rejected and re-sent requests change nothing (no max update either).
// - A withdrawn waiter may or may not get a rejected(cancelled) notice; a hold released by
//   close_session may or may not get a lock_lost notice (the session is gone either way).

#include <lmx/core/lock_table.hpp>

#include "effect_record.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace lmx::core;
using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

const time_point t0 = time_point{} + 1h;

std::string at_text(std::optional<time_point> t) {
    if (!t) return "none";
    return std::to_string((*t - t0) / 1ms);
}

std::string name(effect_kind k) {
    switch (k) {
        case effect_kind::granted: return "granted";
        case effect_kind::queued: return "queued";
        case effect_kind::refused: return "refused";
        case effect_kind::rejected: return "rejected";
        case effect_kind::lock_lost: return "lost";
        case effect_kind::event: return "event";
        case effect_kind::unlocked: return "unlocked";
        case effect_kind::extended: return "extended";
        case effect_kind::released_many: return "released_many";
        case effect_kind::cancelled: return "cancelled";
    }
    return "?";
}

std::string name(errc c) {
    switch (c) {
        case errc::ok: return "ok";
        case errc::bad_request: return "bad_request";
        case errc::timeout: return "timeout";
        case errc::cancelled: return "cancelled";
        case errc::too_many_waiters: return "too_many_waiters";
        case errc::duplicate_request: return "duplicate_request";
        case errc::not_holder: return "not_holder";
        case errc::not_found: return "not_found";
        default: return "other";
    }
}

std::string name(release_status s) {
    switch (s) {
        case release_status::released: return "released";
        case release_status::withdrawn: return "withdrawn";
        case release_status::already_released: return "already_released";
        case release_status::not_holder: return "not_holder";
    }
    return "?";
}

std::string name(lock_mode m) { return m == lock_mode::shared ? "S" : "X"; }

using rec = lmx::test::effect_record;

rec copy(const effect& e) { return lmx::test::copy_effect(e); }

std::string keys_text(const rec& e) {
    if (!e.multi) return "key=" + e.key;
    std::string s = "keys=";
    for (std::size_t i = 0; i < e.keys.size(); ++i) {
        if (i) s += ',';
        s += e.keys[i].first;
    }
    return s;
}

// Canonical text of an effect: only the fields the spec pins down. `direct` marks the effect
// answering the operation's own request, whose queue figures are deterministic (figures of
// cascaded grants depend on the order the table happens to hand them out in).
void describe(const rec& e, bool direct, std::vector<std::string>& out) {
    std::string head = std::string(name(e.kind)) + " s=" + std::to_string(e.session) + " id=" + e.id;
    switch (e.kind) {
        case effect_kind::granted: {
            std::string s = head + " " + keys_text(e) + " exp=" + at_text(e.expires);
            if (direct && !e.multi) s += " w=" + std::to_string(e.waiters) + " r=" + std::to_string(e.readers);
            out.push_back(std::move(s));
            break;
        }
        case effect_kind::queued:
            out.push_back(head + " " + keys_text(e) + (e.multi ? " at=" + e.key : std::string()) +
                          " w=" + std::to_string(e.waiters) + " pos=" + std::to_string(e.position));
            break;
        case effect_kind::refused:
            out.push_back(head + " " + keys_text(e) + (e.multi ? std::string() : " w=" + std::to_string(e.waiters)));
            break;
        case effect_kind::rejected:
            // The keys of a rejected multi request are not compared: the caller has the request at
            // hand when it is rejected at once (see the report).
            out.push_back(head + " " + (e.multi ? std::string("multi") : keys_text(e)) + " code=" + name(e.code));
            break;
        case effect_kind::lock_lost: {
            // A multi hold may report its keys in one effect or one effect per key.
            const char* why = e.reason == lost_reason::ttl ? "ttl" : "forced";
            if (e.multi && !e.keys.empty()) {
                for (const auto& kt : e.keys) out.push_back(head + " key=" + kt.first + " why=" + why);
            } else {
                out.push_back(head + " key=" + e.key + " why=" + why);
            }
            break;
        }
        case effect_kind::event:
            out.push_back("event " + std::to_string(static_cast<int>(e.event)) + " key=" + e.key + " id=" + e.id);
            break;
        // The table answers its calls by returning; an answer effect from it is out of the model.
        case effect_kind::unlocked:
        case effect_kind::extended:
        case effect_kind::released_many:
        case effect_kind::cancelled: out.push_back(head); break;
    }
}

// Records effects and checks the token reservation protocol on the fly: reserve_tokens is called
// only when a step needs tokens past the ceiling, and no token above the ceiling is ever granted.
class checking_sink final : public effect_sink {
public:
    checking_sink(fencing_token seed, fencing_token block) : ceiling_(seed), block_(block) {}

    std::vector<rec> effects;
    std::vector<std::string> errors;
    std::uint64_t reservations = 0;

    void on_effect(const effect& e) override {
        effects.push_back(copy(e));
        if (e.kind != effect_kind::granted) return;
        auto check = [&](fencing_token t) {
            if (t > ceiling_)
                errors.push_back("token " + std::to_string(t) + " granted above the reserved ceiling " +
                                 std::to_string(ceiling_));
        };
        if (e.multi) {
            for (const auto& kt : e.keys) check(kt.token);
        } else {
            check(e.token);
        }
    }

    fencing_token reserve_tokens(fencing_token needed) override {
        if (needed <= ceiling_)
            errors.push_back("reserve_tokens(" + std::to_string(needed) + ") with ceiling " + std::to_string(ceiling_) +
                             " (asked without need)");
        ++reservations;
        ceiling_ = needed + block_ - 1;
        return ceiling_;
    }

private:
    fencing_token ceiling_;
    fencing_token block_;
};

// ----------------------------------------------------------------------------------------------
// The reference model.

struct mreq {
    std::string id;
    session_id session = 0;  // 0 once the session closed (keep-on-exit hold)
    bool multi = false;
    std::vector<std::string> keys;  // sorted, deduplicated
    lock_mode mode = lock_mode::exclusive;
    std::optional<ms> ttl;  // resolved; none: no expiry
    std::optional<time_point> deadline;
    bool keep = false;
    bool granted = false;
    time_point since{};
    std::optional<time_point> expires;
    std::map<std::string, fencing_token> held;  // granted: the keys still held, with tokens
};

struct mkey {
    std::optional<std::uint32_t> max;          // explicit max, if any request gave one
    bool over = false;                         // max lowered below the holder count: extra holders may stay
    std::vector<std::string> holders;          // lock ids
    std::deque<std::string> queue;             // request ids, arrival order
    std::map<std::string, std::uint32_t> seq;  // per queued id: one more than the id queued before it
    fencing_token last_token = 0;
};

struct release_many_expect {
    bool known = false;  // a granted multi lock: code ok and these keys
    std::vector<std::string> keys;
};

class model {
public:
    model(ms default_ttl, fencing_token seed) : last(seed), default_ttl_(default_ttl) {}

    std::map<std::string, mreq> reqs;
    std::map<std::string, mkey> keys;
    table_counters ctr;
    fencing_token last;
    bool events = false;
    std::uint64_t queue_grants = 0;  // grants of requests that had waited

    // Per-step outputs.
    std::vector<rec> expected;
    std::vector<std::string> bound_errors;  // the model's own check of the documented position bound
    std::vector<rec> optional;              // notices the table may or may not send
    std::string direct;                     // the operation's own request id
    std::set<std::string> resent;
    std::map<std::string, std::vector<std::string>> key_grants;  // new grants per key, in order
    std::vector<std::string> ended;                              // ids that ended this step

    void begin_step() {
        expected.clear();
        optional.clear();
        direct.clear();
        resent.clear();
        key_grants.clear();
        ended.clear();
    }

    // --- queries

    std::uint32_t readers(const mkey& k) const {
        std::uint32_t n = 0;
        for (const auto& h : k.holders) n += reqs.at(h).mode == lock_mode::shared;
        return n;
    }

    bool eligible(const mkey& k, lock_mode m) const {
        std::uint32_t shared = readers(k);
        auto n = static_cast<std::uint32_t>(k.holders.size());
        std::uint32_t exclusive = n - shared;
        if (m == lock_mode::exclusive) return shared == 0 && n < k.max.value_or(1);
        return exclusive == 0 && (!k.max || n < *k.max);
    }

    std::uint32_t queue_len(const std::string& key) const {
        auto it = keys.find(key);
        return it == keys.end() ? 0 : static_cast<std::uint32_t>(it->second.queue.size());
    }

    std::optional<time_point> next_deadline() const {
        std::optional<time_point> best;
        for (const auto& [id, r] : reqs) {
            std::optional<time_point> t = r.granted ? r.expires : r.deadline;
            if (t && (!best || *t < *best)) best = t;
        }
        return best;
    }

    std::uint64_t waiting_requests() const {
        std::uint64_t n = 0;
        for (const auto& [id, r] : reqs) n += !r.granted;
        return n;
    }

    void refresh_counters() {
        ctr.keys = keys.size();
        ctr.holders = 0;
        ctr.waiters = 0;
        std::set<session_id> sessions;
        for (const auto& [k, st] : keys) {
            ctr.holders += st.holders.size();
            ctr.waiters += st.queue.size();
        }
        for (const auto& [id, r] : reqs)
            if (r.session != 0) sessions.insert(r.session);
        ctr.sessions = sessions.size();
    }

    // --- building blocks

    rec base(effect_kind kind, const mreq& r) const {
        rec e;
        e.kind = kind;
        e.session = r.session;
        e.id = r.id;
        e.multi = r.multi;
        if (r.multi) {
            for (const auto& k : r.keys) e.keys.emplace_back(k, 0);
        } else {
            e.key = r.keys.front();
        }
        return e;
    }

    void grant(mreq& r, time_point now, bool from_queue) {
        r.granted = true;
        r.since = now;
        r.expires = r.ttl ? std::optional<time_point>(now + *r.ttl) : std::nullopt;
        for (const auto& k : r.keys) {
            mkey& st = keys.at(k);
            if (from_queue) {
                if (st.queue.empty() || st.queue.front() != r.id) throw std::logic_error("model: grant not at front");
                st.queue.pop_front();
            }
            st.holders.push_back(r.id);
            r.held[k] = 0;  // the table's token is adopted after the step
            key_grants[k].push_back(r.id);
            ++ctr.grants;
        }
        queue_grants += from_queue;
        rec e = base(effect_kind::granted, r);
        e.expires = r.expires;
        if (!r.multi) {
            const mkey& st = keys.at(r.keys.front());
            e.waiters = static_cast<std::uint32_t>(st.queue.size());
            e.readers = readers(st);
        }
        expected.push_back(std::move(e));
    }

    // Grants every waiter that is first in line on all its keys and fits there, until none is.
    void pump(time_point now) {
        for (;;) {
            bool progress = false;
            for (auto& [name_, st] : keys) {
                if (st.queue.empty()) continue;
                mreq& r = reqs.at(st.queue.front());
                bool ok = true;
                for (const auto& k : r.keys) {
                    const mkey& other = keys.at(k);
                    if (other.queue.front() != r.id || !eligible(other, r.mode)) {
                        ok = false;
                        break;
                    }
                }
                if (ok) {
                    grant(r, now, true);
                    progress = true;
                }
            }
            if (!progress) break;
        }
    }

    void erase_req(const std::string& id) {
        ended.push_back(id);
        reqs.erase(id);
    }

    void gc() {
        for (auto it = keys.begin(); it != keys.end();) {
            mkey& st = it->second;
            if (st.over && st.holders.size() <= st.max.value_or(1)) st.over = false;
            if (st.holders.empty() && st.queue.empty())
                it = keys.erase(it);
            else
                ++it;
        }
        refresh_counters();
    }

    void unqueue(const mreq& r) {
        for (const auto& k : r.keys) {
            auto& q = keys.at(k).queue;
            q.erase(std::find(q.begin(), q.end(), r.id));
        }
    }

    // A waiting request leaves the queue without a grant (cancel, abandon, release, disconnect).
    void withdraw(const std::string& id) {
        mreq& r = reqs.at(id);
        unqueue(r);
        ++ctr.cancelled;
        rec e = base(effect_kind::rejected, r);
        e.code = errc::cancelled;
        optional.push_back(std::move(e));
        erase_req(id);
    }

    enum class end_kind { release, ttl, forced, closed };

    // One key of a hold ends.
    void end_hold(const std::string& id, const std::string& key, end_kind how) {
        mreq& r = reqs.at(id);
        auto& hs = keys.at(key).holders;
        hs.erase(std::find(hs.begin(), hs.end(), id));
        r.held.erase(key);
        rec e = base(effect_kind::lock_lost, r);
        e.multi = false;
        e.keys.clear();
        e.key = key;
        ++ctr.releases;
        switch (how) {
            case end_kind::release: break;
            case end_kind::closed:
                e.reason = lost_reason::forced;
                optional.push_back(e);
                e.reason = lost_reason::ttl;
                optional.push_back(e);
                break;
            case end_kind::ttl:
                e.reason = lost_reason::ttl;
                expected.push_back(e);
                break;
            case end_kind::forced:
                e.reason = lost_reason::forced;
                expected.push_back(e);
                break;
        }
        if (r.held.empty()) erase_req(id);
    }

    void end_all(const std::string& id, end_kind how) {
        if (how == end_kind::ttl) ++ctr.expirations;
        if (how == end_kind::forced) ++ctr.forced;
        std::vector<std::string> ks;
        for (const auto& [k, t] : reqs.at(id).held) ks.push_back(k);
        for (const auto& k : ks) end_hold(id, k, how);
    }

    std::optional<ms> resolve_ttl(std::optional<ms> ttl) const {
        if (!ttl) return default_ttl_;
        if (*ttl == no_expiry) return std::nullopt;
        return *ttl;
    }

    // The contended key of a waiting multi request: the first key where it cannot go now.
    std::string contended(const mreq& r, bool before_enqueue) const {
        for (const auto& k : r.keys) {
            const mkey& st = keys.at(k);
            bool free_line = before_enqueue ? st.queue.empty() : st.queue.front() == r.id;
            if (!free_line || !eligible(st, r.mode)) return k;
        }
        return r.keys.front();
    }

    void resend(const mreq& r) {
        resent.insert(r.id);
        if (r.granted) {
            rec e = base(effect_kind::granted, r);
            e.expires = r.expires;
            if (!r.multi) {
                const mkey& st = keys.at(r.keys.front());
                e.waiters = static_cast<std::uint32_t>(st.queue.size());
                e.readers = readers(st);
            }
            expected.push_back(std::move(e));
        } else {
            rec e = base(effect_kind::queued, r);
            std::string at = r.multi ? contended(r, false) : r.keys.front();
            const mkey& mk = keys.at(at);
            const auto& q = mk.queue;
            if (r.multi) e.key = at;
            e.waiters = static_cast<std::uint32_t>(q.size());
            // A re-sent notice gives the distance from the head in arrival order: the exact place
            // unless someone ahead left out of turn, and never below it or beyond the queue.
            const auto exact = static_cast<std::uint32_t>(std::find(q.begin(), q.end(), r.id) - q.begin() + 1);
            e.position = std::clamp<std::uint32_t>(mk.seq.at(r.id) - mk.seq.at(q.front()) + 1, 1, e.waiters);
            if (e.position < exact)
                bound_errors.push_back("re-sent position " + std::to_string(e.position) + " below the exact " +
                                       std::to_string(exact));
            expected.push_back(std::move(e));
        }
    }

    effect_kind reject(const mreq& proto, errc code) {
        rec e = base(effect_kind::rejected, proto);
        e.code = code;
        expected.push_back(std::move(e));
        ++ctr.rejected;
        return effect_kind::rejected;
    }

    // --- operations (same signatures as the table, minus the sink)

    effect_kind acquire(session_id s, const std::string& id, const std::string& key, std::optional<ms> ttl,
                        std::optional<std::uint32_t> max, bool wait, std::optional<time_point> deadline, lock_mode mode,
                        bool keep, time_point now) {
        direct = id;
        mreq r;
        r.id = id;
        r.session = s;
        r.keys = {key};
        r.mode = mode;
        r.ttl = resolve_ttl(ttl);
        r.deadline = deadline;
        r.keep = keep;
        effect_kind out = place(std::move(r), max, wait, now);
        gc();
        return out;
    }

    effect_kind acquire_many(session_id s, const std::string& id, std::vector<std::string> ks, std::optional<ms> ttl,
                             bool wait, std::optional<time_point> deadline, bool keep, time_point now) {
        direct = id;
        std::sort(ks.begin(), ks.end());
        ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
        mreq r;
        r.id = id;
        r.session = s;
        r.multi = true;
        r.keys = std::move(ks);
        r.ttl = resolve_ttl(ttl);
        r.deadline = deadline;
        r.keep = keep;
        effect_kind out = place(std::move(r), std::nullopt, wait, now);
        gc();
        return out;
    }

    effect_kind place(mreq r, std::optional<std::uint32_t> max, bool wait, time_point now) {
        if (max && *max == 0) return reject(r, errc::bad_request);
        if (auto it = reqs.find(r.id); it != reqs.end()) {
            const mreq& old = it->second;
            if (old.multi == r.multi && old.session == r.session && old.keys == r.keys) {
                resend(old);
                return old.granted ? effect_kind::granted : effect_kind::queued;
            }
            return reject(r, errc::duplicate_request);
        }
        for (const auto& k : r.keys) {
            auto [it, created] = keys.try_emplace(k);
            mkey& st = it->second;
            if (created) {
                st.max = max;
            } else if (max && st.max != max) {
                if (st.holders.size() > *max) st.over = true;
                st.max = max;
            }
        }
        pump(now);  // a raised max lets earlier waiters in first
        bool now_ok = true;
        for (const auto& k : r.keys) {
            const mkey& st = keys.at(k);
            if (!st.queue.empty() || !eligible(st, r.mode)) now_ok = false;
        }
        std::string id = r.id;
        if (now_ok) {
            mreq& stored = reqs.emplace(id, std::move(r)).first->second;
            grant(stored, now, false);
            return effect_kind::granted;
        }
        if (wait) {
            mreq& stored = reqs.emplace(id, std::move(r)).first->second;
            std::string at = stored.multi ? contended(stored, true) : stored.keys.front();
            for (const auto& k : stored.keys) {
                mkey& mk = keys.at(k);
                mk.seq[id] = mk.queue.empty() ? 0 : mk.seq.at(mk.queue.back()) + 1;
                mk.queue.push_back(id);
            }
            ++ctr.queued;
            rec e = base(effect_kind::queued, stored);
            if (stored.multi) e.key = at;
            e.waiters = e.position = queue_len(at);
            expected.push_back(std::move(e));
            return effect_kind::queued;
        }
        ++ctr.refused;
        rec e = base(effect_kind::refused, r);
        e.waiters = queue_len(r.keys.front());
        expected.push_back(std::move(e));
        return effect_kind::refused;
    }

    release_result release(const std::string& key, const std::string& id, time_point now) {
        release_result out{release_status::already_released, 0, 0};
        auto it = reqs.find(id);
        if (it != reqs.end() && it->second.multi) {
            // A multi-key lock ends only as a whole (release_many): refused, nothing changes.
            out.status = release_status::not_holder;
        } else if (it != reqs.end() && it->second.keys.front() == key) {
            if (it->second.granted) {
                end_hold(id, key, end_kind::release);
                out.status = release_status::released;
                out.released = 1;
            } else {
                withdraw(id);
                out.status = release_status::withdrawn;
            }
            pump(now);
        }
        out.waiters = queue_len(key);
        gc();
        return out;
    }

    // Returns the expected result; `lenient` is set when either released or already_released
    // would be fine (force on a key that has waiters but no holder).
    release_result force(const std::string& key, std::optional<std::string> id, time_point now, bool& lenient) {
        lenient = false;
        release_result out{release_status::already_released, 0, 0};
        auto kit = keys.find(key);
        if (!id) {
            if (kit != keys.end()) {
                std::vector<std::string> hs = kit->second.holders;
                lenient = hs.empty();
                for (const auto& h : hs) end_all(h, end_kind::forced);
                out.status = release_status::released;
                out.released = static_cast<std::uint32_t>(hs.size());
                pump(now);
            }
        } else {
            bool holds = kit != keys.end() && std::find(kit->second.holders.begin(), kit->second.holders.end(), *id) !=
                                                  kit->second.holders.end();
            if (holds) {
                end_all(*id, end_kind::forced);
                out.status = release_status::released;
                out.released = 1;
                pump(now);
            } else {
                out.status = release_status::not_holder;
            }
        }
        out.waiters = queue_len(key);
        gc();
        return out;
    }

    release_many_expect release_many(const std::string& id, time_point now) {
        release_many_expect out;
        auto it = reqs.find(id);
        if (it != reqs.end() && it->second.multi) {
            out.known = true;
            if (it->second.granted) {
                for (const auto& [k, t] : it->second.held) out.keys.push_back(k);
                end_all(id, end_kind::release);
            } else {
                out.keys = it->second.keys;  // still waiting: withdrawn, like release() of a waiter
                withdraw(id);
            }
            pump(now);
        }
        gc();
        return out;
    }

    bool cancel(session_id s, const std::string& id, time_point now) {
        auto it = reqs.find(id);
        bool out = false;
        if (it != reqs.end() && !it->second.granted && it->second.session == s) {
            withdraw(id);
            pump(now);
            out = true;
        }
        gc();
        return out;
    }

    void abandon(session_id s, const std::string& id, time_point now) {
        auto it = reqs.find(id);
        if (it != reqs.end() && it->second.session == s) {
            if (it->second.granted)
                end_all(id, end_kind::release);
            else
                withdraw(id);
            pump(now);
        }
        gc();
    }

    extend_result extend(const std::string& key, const std::string& id, std::optional<ms> ttl, time_point now) {
        extend_result out{errc::not_holder, std::nullopt};
        auto it = reqs.find(id);
        // A multi-key lock has one lease: extending it on any of its keys renews all of them.
        if (it != reqs.end() && it->second.granted && it->second.held.count(key)) {
            auto t = resolve_ttl(ttl);
            it->second.expires = t ? std::optional<time_point>(now + *t) : std::nullopt;
            out = {errc::ok, it->second.expires};
        }
        return out;
    }

    void close(session_id s, time_point now) {
        std::vector<std::string> mine;
        for (const auto& [id, r] : reqs)
            if (r.session == s) mine.push_back(id);
        for (const auto& id : mine) {
            mreq& r = reqs.at(id);
            if (!r.granted)
                withdraw(id);
            else if (r.keep)
                r.session = 0;
            else
                end_all(id, end_kind::closed);
        }
        pump(now);
        gc();
    }

    // Wait deadlines first: a waiter is never granted at its own deadline.
    void expire(time_point now) {
        std::vector<std::string> due;
        for (const auto& [id, r] : reqs)
            if (!r.granted && r.deadline && *r.deadline <= now) due.push_back(id);
        for (const auto& id : due) {
            mreq& r = reqs.at(id);
            unqueue(r);
            ++ctr.timeouts;
            rec e = base(effect_kind::rejected, r);
            e.code = errc::timeout;
            expected.push_back(std::move(e));
            erase_req(id);
        }
        end_leases(now);
        pump(now);
        gc();
    }

    void end_leases(time_point now) {
        std::vector<std::string> due;
        for (const auto& [id, r] : reqs)
            if (r.granted && r.expires && *r.expires <= now) due.push_back(id);
        for (const auto& id : due) end_all(id, end_kind::ttl);
    }

private:
    ms default_ttl_;
};

// ----------------------------------------------------------------------------------------------
// Operations and the random driver.

enum class op_kind {
    acquire,
    acquire_many,
    release,
    force,
    release_many,
    cancel,
    abandon,
    extend,
    close,
    advance,
    events,
};

struct op {
    op_kind kind = op_kind::acquire;
    session_id session = 0;
    std::string id;
    std::string key;
    std::vector<std::string> keys;
    std::optional<ms> ttl;
    std::optional<std::uint32_t> max;
    bool wait = true;
    std::optional<ms> timeout;
    lock_mode mode = lock_mode::exclusive;
    bool keep = false;
    bool with_id = false;
    ms dt{0};
    bool flag = false;

    std::string describe() const {
        std::ostringstream o;
        auto ttl_text = [&] {
            if (!ttl) return std::string("default");
            if (*ttl == no_expiry) return std::string("never");
            return std::to_string(ttl->count());
        };
        switch (kind) {
            case op_kind::acquire:
                o << "acquire s=" << session << " id=" << id << " key=" << key << " " << name(mode)
                  << " max=" << (max ? std::to_string(*max) : "-") << " wait=" << wait
                  << " timeout=" << (timeout ? std::to_string(timeout->count()) : "-") << " ttl=" << ttl_text()
                  << " keep=" << keep;
                break;
            case op_kind::acquire_many:
                o << "acquire_many s=" << session << " id=" << id << " keys=";
                for (const auto& k : keys) o << k << ",";
                o << " wait=" << wait << " timeout=" << (timeout ? std::to_string(timeout->count()) : "-")
                  << " ttl=" << ttl_text() << " keep=" << keep;
                break;
            case op_kind::release: o << "release key=" << key << " id=" << id; break;
            case op_kind::force:
                o << "force_release key=" << key << " id=" << (with_id ? id : std::string("(none)"));
                break;
            case op_kind::release_many: o << "release_many id=" << id; break;
            case op_kind::cancel: o << "cancel s=" << session << " id=" << id; break;
            case op_kind::abandon: o << "abandon s=" << session << " id=" << id; break;
            case op_kind::extend: o << "extend key=" << key << " id=" << id << " ttl=" << ttl_text(); break;
            case op_kind::close: o << "close_session s=" << session; break;
            case op_kind::advance: o << "advance+expire dt=" << dt.count(); break;
            case op_kind::events: o << "set_events " << flag; break;
        }
        return o.str();
    }
};

const std::vector<std::string> universe = {"a", "b", "c", "d"};

class harness {
public:
    harness(std::uint64_t seed, std::uint64_t steps) : seed_(seed), steps_(steps), rng_(seed) {
        static constexpr fencing_token seeds[] = {0, 1000, fencing_token{1} << 40};
        static constexpr fencing_token blocks[] = {1, 2, 5, 1'000'000'000};
        cfg_.default_ttl = 40ms;
        cfg_.fencing_seed = seeds[seed % 3];
        sink_ = std::make_unique<checking_sink>(cfg_.fencing_seed, blocks[(seed / 3) % 4]);
        table_ = std::make_unique<lock_table>(*sink_, cfg_);
        model_ = std::make_unique<model>(cfg_.default_ttl, cfg_.fencing_seed);
        for (int i = 0; i < 4; ++i) sessions_.push_back(next_session_++);
    }

    // Returns an empty string on success, else the failure report.
    std::string run() {
        for (step_ = 1; step_ <= steps_ && failure_.empty(); ++step_) apply(generate());
        if (failure_.empty()) drain();
        if (failure_.empty()) return {};
        std::ostringstream o;
        o << "seed " << seed_ << " failed at step " << step_ << " (replay: LMX_MODEL_SEED=" << seed_
          << " LMX_MODEL_STEPS=" << steps_ << "): " << failure_ << "\n  last operations:";
        for (const auto& l : log_) o << "\n    " << l;
        return o.str();
    }

    std::uint64_t steps_done() const { return step_ - 1; }

private:
    // --- randomness

    std::uint64_t below(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }
    bool chance(int percent) { return below(100) < static_cast<std::uint64_t>(percent); }
    template <class T>
    const T& pick(const std::vector<T>& v) {
        return v[below(v.size())];
    }

    bool is_live(const std::string& id) const { return model_->reqs.count(id) != 0; }

    std::string fresh_id() {
        if (!dead_.empty() && chance(5)) {  // an id may be used again once its request ended
            const std::string& id = dead_[below(dead_.size())];
            if (!is_live(id)) return id;
        }
        return "r" + std::to_string(next_id_++);
    }

    std::optional<ms> random_ttl() {
        auto p = below(100);
        if (p < 35) return std::nullopt;
        if (p < 42) return no_expiry;
        return ms(5 + below(76));
    }

    std::optional<ms> random_timeout() {
        if (chance(50)) return std::nullopt;
        return ms(1 + below(60));
    }

    std::vector<const mreq*> live(bool single_only = false) const {
        std::vector<const mreq*> v;
        for (const auto& [id, r] : model_->reqs)
            if (!single_only || !r.multi) v.push_back(&r);
        return v;
    }

    // An id that names no live request (ended ones, as after a ttl expiry, or never used).
    std::string dead_or_new() {
        if (!dead_.empty() && chance(70)) {
            const std::string& id = dead_[below(dead_.size())];
            if (!is_live(id)) return id;
        }
        return "zz" + std::to_string(below(1000));
    }

    void random_acquire_params(op& o) {
        o.mode = chance(30) ? lock_mode::shared : lock_mode::exclusive;
        auto p = below(100);
        if (p < 55)
            o.max = std::nullopt;
        else if (p < 67)
            o.max = 1;
        else if (p < 83)
            o.max = 2;
        else
            o.max = 3;
        o.wait = chance(80);
        o.timeout = random_timeout();
        o.ttl = random_ttl();
        o.keep = chance(20);
    }

    std::vector<std::string> random_keys() {
        std::vector<std::string> ks;
        auto n = 2 + below(2);
        for (std::uint64_t i = 0; i < n; ++i) ks.push_back(pick(universe));
        if (chance(20)) ks.push_back(ks.front());  // duplicates are allowed
        return ks;
    }

    op generate() {
        op o;
        auto w = below(100);
        if (w < 26) {
            o.kind = op_kind::acquire;
            o.session = pick(sessions_);
            o.id = fresh_id();
            o.key = pick(universe);
            random_acquire_params(o);
            if (chance(2) && !model_->reqs.count(o.id)) o.max = 0;
        } else if (w < 34) {
            o.kind = op_kind::acquire_many;
            o.session = pick(sessions_);
            o.id = fresh_id();
            o.keys = random_keys();
            o.wait = chance(80);
            o.timeout = random_timeout();
            o.ttl = random_ttl();
            o.keep = chance(20);
        } else if (w < 40) {
            generate_resend(o);
        } else if (w < 53) {
            o.kind = op_kind::release;
            auto v = live(!chance(5));
            if (!v.empty() && chance(85)) {
                const mreq& r = *pick(v);
                o.id = r.id;
                o.key = chance(10) ? pick(universe) : r.keys.front();
            } else {
                o.id = dead_or_new();
                o.key = pick(universe);
            }
        } else if (w < 58) {
            o.kind = op_kind::force;
            o.key = pick(universe);
            o.with_id = chance(60);
            if (o.with_id) {
                auto v = live();
                if (!v.empty() && chance(80)) {
                    const mreq& r = *pick(v);
                    o.id = r.id;
                    o.key = chance(80) ? pick(r.keys) : pick(universe);
                } else {
                    o.id = dead_or_new();
                }
            }
        } else if (w < 62) {
            o.kind = op_kind::release_many;
            std::vector<const mreq*> v;
            for (const auto* r : live())
                if (r->multi && (r->granted || chance(30))) v.push_back(r);
            o.id = !v.empty() && chance(85) ? pick(v)->id : dead_or_new();
        } else if (w < 71) {
            o.kind = w < 67 ? op_kind::cancel : op_kind::abandon;
            auto v = live();
            if (!v.empty() && chance(85)) {
                const mreq& r = *pick(v);
                o.id = r.id;
                o.session = chance(80) && r.session != 0 ? r.session : pick(sessions_);
            } else {
                o.id = dead_or_new();
                o.session = pick(sessions_);
            }
        } else if (w < 75) {
            o.kind = op_kind::extend;
            auto v = live();
            if (!v.empty() && chance(85)) {
                const mreq& r = *pick(v);
                o.id = r.id;
                o.key = chance(90) ? pick(r.keys) : pick(universe);
            } else {
                o.id = dead_or_new();
                o.key = pick(universe);
            }
            o.ttl = random_ttl();
        } else if (w < 77) {
            o.kind = op_kind::close;
            o.session = pick(sessions_);
        } else if (w < 99) {
            o.kind = op_kind::advance;
            o.dt = ms(1 + below(25));
        } else {
            o.kind = op_kind::events;
            o.flag = !model_->events;
        }
        return o;
    }

    // The same request id again: from its own session on the same key(s) (a live-mutex retry,
    // answered with the current state) or from elsewhere (rejected as a duplicate).
    void generate_resend(op& o) {
        std::vector<const mreq*> v;
        for (const auto* r : live())
            if (r->session != 0) v.push_back(r);
        if (v.empty()) {
            o.kind = op_kind::advance;
            o.dt = 1ms;
            return;
        }
        const mreq& r = *pick(v);
        o.id = r.id;
        o.session = r.session;
        bool same = chance(70);
        bool as_multi = r.multi;
        if (!same && chance(30)) as_multi = !as_multi;  // single id reused by a multi and back
        if (as_multi) {
            o.kind = op_kind::acquire_many;
            o.keys = r.multi ? r.keys : random_keys();
            std::shuffle(o.keys.begin(), o.keys.end(), rng_);
            if (chance(30)) o.keys.push_back(o.keys.front());
            o.wait = chance(80);
            o.timeout = random_timeout();
            o.ttl = random_ttl();
            o.keep = chance(20);
        } else {
            o.kind = op_kind::acquire;
            o.key = r.multi ? pick(r.keys) : r.keys.front();
            random_acquire_params(o);
        }
        if (!same) {
            if (chance(50)) {
                o.session = pick(sessions_);
            } else if (o.kind == op_kind::acquire) {
                o.key = pick(universe);
            } else {
                o.keys = random_keys();
            }
        }
    }

    // --- one step

    void fail(const std::string& what) {
        if (failure_.empty()) failure_ = what;
    }

    template <class A, class B>
    void expect_eq(const A& got, const B& want, const std::string& what) {
        if (!(got == want)) {
            std::ostringstream o;
            o << what << ": table " << got << ", model " << want;
            fail(o.str());
        }
    }

    std::optional<time_point> deadline_of(const op& o) const {
        if (!o.timeout) return std::nullopt;
        return now_ + *o.timeout;
    }

    void apply(const op& o) {
        log_.push_back(std::to_string(step_) + ": " + o.describe() + " @" + at_text(now_));
        if (log_.size() > 40) log_.pop_front();
        sink_->effects.clear();
        model& m = *model_;
        m.begin_step();
        switch (o.kind) {
            case op_kind::acquire: {
                acquire_request r{.session = o.session,
                                  .id = o.id,
                                  .key = o.key,
                                  .ttl = o.ttl,
                                  .max = o.max,
                                  .wait = o.wait,
                                  .wait_deadline = deadline_of(o),
                                  .mode = o.mode,
                                  .keep_on_exit = o.keep};
                auto got = table_->acquire(r, now_);
                auto want =
                    m.acquire(o.session, o.id, o.key, o.ttl, o.max, o.wait, deadline_of(o), o.mode, o.keep, now_);
                expect_eq(name(got), name(want), "acquire result");
                break;
            }
            case op_kind::acquire_many: {
                std::vector<std::string_view> views(o.keys.begin(), o.keys.end());
                acquire_many_request r{.session = o.session,
                                       .id = o.id,
                                       .keys = views,
                                       .ttl = o.ttl,
                                       .wait = o.wait,
                                       .wait_deadline = deadline_of(o),
                                       .keep_on_exit = o.keep};
                auto got = table_->acquire_many(r, now_);
                auto want = m.acquire_many(o.session, o.id, o.keys, o.ttl, o.wait, deadline_of(o), o.keep, now_);
                expect_eq(name(got), name(want), "acquire_many result");
                break;
            }
            case op_kind::release: {
                auto got = table_->release(o.key, o.id, now_);
                auto want = m.release(o.key, o.id, now_);
                expect_eq(name(got.status), name(want.status), "release status");
                expect_eq(got.released, want.released, "release released");
                expect_eq(got.waiters, want.waiters, "release waiters");
                break;
            }
            case op_kind::force: {
                std::optional<std::string_view> id;
                if (o.with_id) id = o.id;
                auto got = table_->force_release(o.key, id, now_);
                bool lenient = false;
                auto want = m.force(o.key, o.with_id ? std::optional<std::string>(o.id) : std::nullopt, now_, lenient);
                if (!(lenient && got.status == release_status::already_released))
                    expect_eq(name(got.status), name(want.status), "force_release status");
                expect_eq(got.released, want.released, "force_release released");
                expect_eq(got.waiters, want.waiters, "force_release waiters");
                break;
            }
            case op_kind::release_many: {
                auto got = table_->release_many(o.id, now_);
                auto want = m.release_many(o.id, now_);
                if (want.known) {
                    expect_eq(name(got.code), "ok", "release_many code");
                    expect_eq(join(got.keys), join(want.keys), "release_many keys");
                } else if (got.code == errc::ok && !got.keys.empty()) {
                    fail("release_many of an unknown id released " + join(got.keys));
                }
                break;
            }
            case op_kind::cancel: {
                bool got = table_->cancel(o.session, o.id, now_);
                bool want = m.cancel(o.session, o.id, now_);
                expect_eq(got, want, "cancel result");
                break;
            }
            case op_kind::abandon:
                table_->abandon(o.session, o.id, now_);
                m.abandon(o.session, o.id, now_);
                break;
            case op_kind::extend: {
                auto got = table_->extend(o.key, o.id, o.ttl, now_);
                auto want = m.extend(o.key, o.id, o.ttl, now_);
                expect_eq(name(got.code), name(want.code), "extend code");
                expect_eq(at_text(got.expires), at_text(want.expires), "extend expires");
                break;
            }
            case op_kind::close: {
                table_->close_session(o.session, now_);
                m.close(o.session, now_);
                // Session ids are never reused (the broker hands out fresh ones).
                std::replace(sessions_.begin(), sessions_.end(), o.session, next_session_++);
                break;
            }
            case op_kind::advance: {
                // Never jump past a pending deadline: the broker's timer fires at next_deadline().
                time_point t = now_ + o.dt;
                if (auto d = m.next_deadline(); d && *d < t) t = *d;
                now_ = t;
                table_->expire(now_);
                m.expire(now_);
                break;
            }
            case op_kind::events:
                table_->set_events(o.flag);
                m.events = o.flag;
                break;
        }
        if (failure_.empty()) compare_effects();
        if (failure_.empty()) adopt_tokens();
        if (failure_.empty()) compare_state(o);
        for (const auto& id : m.ended) {
            dead_.push_back(id);
            if (dead_.size() > 64) dead_.pop_front();
        }
    }

    static std::string join(const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v) s += x + " ";
        return s;
    }

    void compare_effects() {
        for (const auto& e : sink_->errors) fail(e);
        sink_->errors.clear();
        for (const auto& e : model_->bound_errors) fail(e);
        model_->bound_errors.clear();
        if (auto diff = effects_mismatch(); !diff.empty()) fail(diff);
    }

    // Empty when the table's effects match the model's, else the difference.
    std::string effects_mismatch() const {
        const model& m = *model_;
        std::multiset<std::string> want, maybe;
        std::vector<std::string> tmp;
        for (const auto& e : m.expected) describe(e, e.id == m.direct, tmp);
        want.insert(tmp.begin(), tmp.end());
        tmp.clear();
        for (const auto& e : m.optional) describe(e, false, tmp);
        maybe.insert(tmp.begin(), tmp.end());
        tmp.clear();
        std::vector<std::string> unexpected;
        for (const auto& e : sink_->effects) {
            if (e.kind == effect_kind::event) {
                if (!m.events) unexpected.push_back("event while events are disabled");
                continue;
            }
            std::vector<std::string> texts;
            describe(e, e.id == m.direct, texts);
            for (auto& t : texts) {
                if (auto it = want.find(t); it != want.end())
                    want.erase(it);
                else if (auto jt = maybe.find(t); jt != maybe.end())
                    maybe.erase(jt);
                else
                    unexpected.push_back(t);
            }
        }
        if (unexpected.empty() && want.empty()) return {};
        std::string s = "effects differ;";
        for (const auto& t : unexpected) s += "\n      table only: " + t;
        for (const auto& t : want) s += "\n      model only: " + t;
        return s;
    }

    // Checks FIFO order of new grants per key and strictly increasing, gap-free tokens across all
    // grants (each key of a multi grant its own token, in key order), then records the table's
    // tokens in the model.
    void adopt_tokens() {
        model& m = *model_;
        std::map<std::string, std::vector<std::string>> order;
        for (const auto& e : sink_->effects) {
            if (e.kind != effect_kind::granted) continue;
            std::vector<std::pair<std::string, fencing_token>> kt = e.keys;
            if (!e.multi) kt = {{e.key, e.token}};
            if (m.resent.count(e.id)) {
                const mreq& r = m.reqs.at(e.id);
                for (const auto& [k, t] : kt)
                    if (r.held.count(k) == 0 || r.held.at(k) != t)
                        fail("re-sent grant of " + e.id + " on " + k + " carries token " + std::to_string(t) +
                             " instead of the original");
                continue;
            }
            for (const auto& [k, t] : kt) {
                if (t != m.last + 1)
                    fail("grant of " + e.id + " on " + k + " has token " + std::to_string(t) + ", expected " +
                         std::to_string(m.last + 1) + " (one table-wide counter, +1 per grant)");
                m.last = t;
                order[k].push_back(e.id);
                auto it = m.reqs.find(e.id);
                if (it != m.reqs.end() && it->second.held.count(k)) it->second.held[k] = t;
                if (auto kit = m.keys.find(k); kit != m.keys.end()) kit->second.last_token = t;
            }
        }
        if (order != m.key_grants) {
            std::string s = "grant order differs from FIFO;";
            for (const auto& [k, ids] : order) s += "\n      table " + k + ": " + join(ids);
            for (const auto& [k, ids] : m.key_grants) s += "\n      model " + k + ": " + join(ids);
            fail(s);
        }
    }

    void compare_state(const op& o) {
        model& m = *model_;
        try {
            table_->check_invariants();
        } catch (const std::exception& e) {
            fail(std::string("check_invariants: ") + e.what());
            return;
        }
        std::vector<std::string> want_keys;
        for (const auto& [k, st] : m.keys) want_keys.push_back(k);
        auto got_keys = table_->list_keys();
        std::sort(got_keys.begin(), got_keys.end());
        expect_eq(join(got_keys), join(want_keys), "list_keys");

        std::vector<std::string> probe = universe;
        probe.push_back("zz");
        for (const auto& k : probe) compare_key(k);

        const table_counters got = table_->counters();
        const table_counters& want = m.ctr;
#define LMX_CMP(f) expect_eq(got.f, want.f, "counters." #f)
        LMX_CMP(grants);
        LMX_CMP(releases);
        LMX_CMP(expirations);
        LMX_CMP(timeouts);
        LMX_CMP(forced);
        LMX_CMP(refused);
        LMX_CMP(queued);
        LMX_CMP(cancelled);
        LMX_CMP(rejected);
        LMX_CMP(keys);
        LMX_CMP(holders);
        LMX_CMP(waiters);
        LMX_CMP(sessions);
#undef LMX_CMP
        // No waiter lost: every request that queued ended in exactly one way or still waits.
        if (m.ctr.queued != m.queue_grants + m.ctr.timeouts + m.ctr.cancelled + m.waiting_requests())
            fail("model accounting: queued != granted-from-queue + timeouts + cancelled + waiting");

        expect_eq(at_text(table_->next_deadline()), at_text(m.next_deadline()), "next_deadline");
        expect_eq(table_->last_token(), m.last, "last_token");

        auto top = table_->top_contended(3);
        std::vector<std::uint32_t> want_w;
        for (const auto& [k, st] : m.keys)
            if (!st.queue.empty()) want_w.push_back(static_cast<std::uint32_t>(st.queue.size()));
        std::sort(want_w.rbegin(), want_w.rend());
        if (want_w.size() > 3) want_w.resize(3);
        std::vector<std::uint32_t> got_w;
        for (const auto& c : top) {
            auto it = m.keys.find(c.key);
            if (it == m.keys.end()) {
                if (c.waiters != 0 || c.holders != 0) fail("top_contended lists a missing key " + c.key);
                continue;
            }
            if (c.waiters != it->second.queue.size() || c.holders != it->second.holders.size())
                fail("top_contended figures of " + c.key + " are wrong");
            if (c.waiters > 0) got_w.push_back(c.waiters);
        }
        if (top.size() > 3) fail("top_contended(3) returned more than 3 keys");
        if (got_w != want_w) fail("top_contended is not the keys with the most waiters, by waiters desc");

        // Nothing of a closed session is left but keep-on-exit holds (re-owned by session 0).
        if (o.kind == op_kind::close) {
            for (const auto& k : universe) {
                for (const auto& h : table_->info(k).holders) {
                    if (h.session == o.session)
                        fail("closed session " + std::to_string(o.session) + " still holds " + k);
                    if (h.session == 0 && !h.keep_on_exit)
                        fail("hold " + h.id + " of a closed session without keep_on_exit");
                }
            }
        }
    }

    void compare_key(const std::string& k) {
        model& m = *model_;
        key_info got = table_->info(k);
        auto it = m.keys.find(k);
        expect_eq(got.exists, it != m.keys.end(), "info(" + k + ").exists");
        if (it == m.keys.end()) {
            expect_eq(got.holders.size(), 0u, "info(" + k + ").holders of a missing key");
            expect_eq(got.waiters, 0u, "info(" + k + ").waiters of a missing key");
            return;
        }
        const mkey& st = it->second;
        expect_eq(got.key, k, "info(" + k + ").key");
        expect_eq(got.max, st.max.value_or(1), "info(" + k + ").max");
        expect_eq(got.waiters, st.queue.size(), "info(" + k + ").waiters");
        expect_eq(got.last_token, st.last_token, "info(" + k + ").last_token");
        std::vector<std::string> want_h, got_h;
        for (const auto& id : st.holders) {
            const mreq& r = m.reqs.at(id);
            want_h.push_back(id + "/s" + std::to_string(r.session) + "/" + name(r.mode) + "/t" +
                             std::to_string(r.held.at(k)) + "/exp" + at_text(r.expires) + "/since" + at_text(r.since) +
                             "/keep" + std::to_string(r.keep));
        }
        bool shared = false, exclusive = false;
        for (const auto& h : got.holders) {
            got_h.push_back(h.id + "/s" + std::to_string(h.session) + "/" + name(h.mode) + "/t" +
                            std::to_string(h.token) + "/exp" + at_text(h.expires) + "/since" + at_text(h.since) +
                            "/keep" + std::to_string(h.keep_on_exit));
            (h.mode == lock_mode::shared ? shared : exclusive) = true;
        }
        std::sort(want_h.begin(), want_h.end());
        std::sort(got_h.begin(), got_h.end());
        expect_eq(join(got_h), join(want_h), "info(" + k + ").holders");
        if (!got.holders.empty())
            expect_eq(name(got.holder_mode), name(got.holders.front().mode), "info(" + k + ").holder_mode");

        // Invariants straight on the table's view.
        if (shared && exclusive) fail("shared and exclusive holders together on " + k);
        bool bounded = exclusive || st.max.has_value();
        if (bounded && got.holders.size() > got.max && !st.over)
            fail("more holders than max on " + k + " although max was not lowered");
    }

    // Ends the run: every session closes, kept holds are forced, time runs out; the table must be
    // empty and every waiter accounted for.
    void drain() {
        for (auto s : std::vector<session_id>(sessions_)) {
            ++step_;
            op o;
            o.kind = op_kind::close;
            o.session = s;
            apply(o);
        }
        for (const auto& k : universe) {
            ++step_;
            op o;
            o.kind = op_kind::force;
            o.key = k;
            apply(o);
        }
        for (int i = 0; i < 10000 && failure_.empty() && model_->next_deadline(); ++i) {
            ++step_;
            op o;
            o.kind = op_kind::advance;
            o.dt = 1h;
            apply(o);
        }
        if (!failure_.empty()) return;
        auto c = table_->counters();
        if (c.keys || c.holders || c.waiters || c.sessions || !table_->list_keys().empty())
            fail("table not empty after every session closed and every key was forced");
        if (table_->next_deadline()) fail("next_deadline() still set on an empty table");
    }

    std::uint64_t seed_;
    std::uint64_t steps_;
    std::mt19937_64 rng_;
    table_config cfg_;
    std::unique_ptr<checking_sink> sink_;
    std::unique_ptr<lock_table> table_;
    std::unique_ptr<model> model_;
    time_point now_ = t0;
    std::vector<session_id> sessions_;
    session_id next_session_ = 1;
    std::uint64_t next_id_ = 0;
    std::deque<std::string> dead_;
    std::deque<std::string> log_;
    std::uint64_t step_ = 0;
    std::string failure_;
};

std::optional<std::uint64_t> env_number(const char* var) {
    const char* v = std::getenv(var);
    if (!v || !*v) return std::nullopt;
    return std::strtoull(v, nullptr, 10);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(lock_model_test)

BOOST_AUTO_TEST_CASE(random_sequences_match_the_reference_model) {
    constexpr std::uint64_t steps_per_seed = 5000;
    const auto total = env_number("LMX_MODEL_STEPS").value_or(1'000'000);
    std::vector<std::uint64_t> seeds;
    std::uint64_t per_seed = steps_per_seed;
    if (auto one = env_number("LMX_MODEL_SEED")) {
        seeds.push_back(*one);
        if (env_number("LMX_MODEL_STEPS")) per_seed = total;
    } else {
        for (std::uint64_t s = 1; s <= std::max<std::uint64_t>(1, total / steps_per_seed); ++s) seeds.push_back(s);
    }
    std::uint64_t steps = 0;
    auto started = std::chrono::steady_clock::now();
    for (auto seed : seeds) {
        harness h(seed, per_seed);
        std::string failure = h.run();
        steps += h.steps_done();
        if (!failure.empty()) BOOST_FAIL(failure);
    }
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    BOOST_TEST_MESSAGE("lock_model_test: " << seeds.size() << " seeds, " << steps << " steps in " << secs << " s");
    BOOST_TEST(steps >= std::min<std::uint64_t>(total, seeds.size() * per_seed));
}

BOOST_AUTO_TEST_SUITE_END()
