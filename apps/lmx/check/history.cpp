#include "history.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <deque>
#include <fstream>
#include <functional>
#include <limits>
#include <queue>
#include <optional>
#include <tuple>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace lmx::check {

namespace json = boost::json;

namespace {

constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t ms_ns = 1'000'000;
constexpr std::int64_t default_ttl_ns = 5000 * ms_ns;  // the broker's default when a lock names none

std::string str(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

bool is_true(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    return v && v->is_bool() && v->get_bool();
}

bool has(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    return v && !v->is_null();
}

std::optional<std::uint64_t> u64(const json::object& o, std::string_view name) {
    auto* v = o.if_contains(name);
    if (!v) return std::nullopt;
    if (v->is_uint64()) return v->get_uint64();
    if (v->is_int64() && v->get_int64() >= 0) return static_cast<std::uint64_t>(v->get_int64());
    return std::nullopt;
}

std::int64_t i64(const json::object& o, std::string_view name, std::int64_t dflt = 0) {
    auto* v = o.if_contains(name);
    if (!v) return dflt;
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
    return dflt;
}

struct session_st {
    std::string name;  // src/s, for messages
    std::string src;
    std::string epoch;
    bool live_mutex = false;
    bool closed = false;
    bool clean = false;
    std::int64_t t_close = never;
    std::vector<std::string> requests;
};

struct held_key {
    std::string key;
    std::uint64_t token = 0;
    std::int64_t t_lost = never;
};

struct request_st {
    std::string type;
    session_st* sess = nullptr;
    std::int64_t t_send = 0;
    int answers = 0;         // final answers
    int retries = 0;         // the same uuid sent again
    bool withdrawn = false;  // its owner's cancel or unlock took it out of the queue
    bool abandoned = false;  // its owner gave up on it (lock-client-timeout); no answer owed
    // lock and acquire-many
    bool multi = false;
    bool shared = false;
    std::int64_t ttl_ns = default_ttl_ns;  // never: no expiry
    bool granted = false;
    std::int64_t t_grant = 0;
    std::int64_t lease_end = never;
    std::int64_t t_release_sent = never;  // its owner's first release of the hold
    bool cut = false;                     // another connection ended it, or a force may have
    std::vector<held_key> keys;
    // unlock, release-many, extend, cancel, lock-client-timeout
    std::string target;
    std::string key;
    bool force = false;
    std::int64_t extend_ttl_ns = default_ttl_ns;

    held_key* on(std::string_view k) {
        for (auto& h : keys)
            if (h.key == k) return &h;
        return nullptr;
    }
};

struct stream_key {
    std::unordered_map<std::string, bool> holders;  // id -> shared
    std::deque<std::string> queue;
};

struct interval {
    std::int64_t start, end;
    bool shared;
    const std::string* id;
};

}  // namespace

struct analyzer::impl {
    analyze_options opt;
    summary sum;
    std::map<std::pair<std::string, std::int64_t>, session_st> sessions;
    std::unordered_map<std::string, request_st> reqs;
    std::unordered_map<std::string, std::uint32_t> key_max;  // the largest max any request named
    std::set<std::string> epochs;

    // The watch stream of the current broker run.
    std::string stream_epoch;
    bool shared_store = false;  // the stream's broker shares its state with others (hello "shared-store")
    std::unordered_map<std::string, stream_key> stream;
    std::set<std::string> streamed_epochs;     // epochs whose events were watched from their start
    std::set<std::string> past_stream_epochs;  // broker runs the stream watched before the current one
    std::set<std::tuple<std::string, std::string, std::string, std::uint64_t>> stream_grants;
    std::set<std::pair<std::string, std::string>> forced;  // (id, key) ended by force
    std::unordered_map<std::string, std::uint64_t> key_last_token;
    std::uint64_t last_token = 0;
    std::string last_token_id;                                    // the request last_token was granted to
    std::map<std::string, std::vector<std::int64_t>> key_forces;  // force without id, by key

    struct client_grant {
        std::string epoch, id, key;
        std::uint64_t token;
        std::int64_t t;
        const session_st* sess;
    };
    std::set<std::pair<std::string, std::string>> streamed_ids;  // (epoch, request id) the stream named
    std::vector<client_grant> client_grants;
    std::int64_t t_last = 0;

    explicit impl(analyze_options o) : opt(o) {}

    void flag(std::string kind, std::string detail, std::int64_t t) {
        ++sum.violation_count;
        ++sum.violations_by_kind[kind];
        if (sum.violations.size() < opt.keep) sum.violations.push_back({std::move(kind), std::move(detail), t});
    }

    std::uint32_t max_of(const std::string& key) const {
        auto it = key_max.find(key);
        return it == key_max.end() ? 1 : it->second;
    }

    void add(std::string_view line) {
        if (line.empty()) return;
        json::error_code ec;
        auto v = json::parse(json::string_view(line.data(), line.size()), ec);
        if (ec || !v.is_object()) return;  // a line cut short by a kill
        const auto& r = v.get_object();
        ++sum.records;
        std::int64_t t = i64(r, "t");
        t_last = std::max(t_last, t);
        std::string src = str(r, "src");
        std::string ev = str(r, "ev");
        if (src == "check") return on_control(ev, r, t);
        const json::value* mv = r.if_contains("m");
        const json::object* m = mv && mv->is_object() ? &mv->get_object() : nullptr;
        if (src == "watch") {
            if (ev == "recv" && m) on_watch(*m, t);
            return;
        }
        auto [it, fresh] = sessions.try_emplace({src, i64(r, "s")});
        session_st& s = it->second;
        if (fresh) {
            s.src = src;
            s.name = src + "/" + std::to_string(i64(r, "s"));
            ++sum.sessions;
        }
        if (ev == "send" && m)
            on_send(s, *m, t);
        else if (ev == "recv" && m)
            on_recv(s, *m, t);
        else if (ev == "close")
            on_close(s, str(r, "how"), t);
    }

    void on_control(const std::string& ev, const json::object& r, std::int64_t t) {
        if (ev == "broker-kill") {
            ++sum.broker_kills;
            // Every hold of the dying broker ends now, whenever its client notices.
            for (auto& [k, s] : sessions)
                if (!s.closed && !s.epoch.empty() && s.epoch == stream_epoch) on_close(s, "broker-killed", t);
            stream.clear();
            if (!stream_epoch.empty()) past_stream_epochs.insert(stream_epoch);
            stream_epoch.clear();
        } else if (ev == "worker-kill") {
            ++sum.worker_kills;
            const std::string w = str(r, "worker");
            for (auto& [k, s] : sessions)
                if (s.src == w && !s.closed) on_close(s, "killed", t);
        }
    }

    // Over a shared store a grant reaches the stream when its claim is written, and the claims of
    // requests the queue admits together (a semaphore, shared holds) are written in any order.
    // So `id` may be granted before those ahead of it when all of them fit beside the holders at
    // once: the key's max is not exceeded and they are all of the holders' mode.
    bool admitted_together(const stream_key& sk, const std::string& key, const std::string& id) const {
        auto at = std::find(sk.queue.begin(), sk.queue.end(), id);
        if (at == sk.queue.end()) return false;
        const auto ahead = static_cast<std::size_t>(at - sk.queue.begin());
        if (sk.holders.size() + ahead + 1 > max_of(key)) return false;
        const auto mode_of = [&](const std::string& r) {
            auto q = reqs.find(r);
            return q != reqs.end() && q->second.shared && !q->second.multi;
        };
        const bool shared = mode_of(id);
        for (auto& [holder, holder_shared] : sk.holders)
            if (holder_shared != shared) return false;
        for (auto it = sk.queue.begin(); it != at; ++it)
            if (mode_of(*it) != shared) return false;
        return true;
    }

    void on_watch(const json::object& m, std::int64_t t) {
        const std::string type = str(m, "type");
        if (type == "hello") {
            if (!stream_epoch.empty() && stream_epoch != str(m, "epoch")) past_stream_epochs.insert(stream_epoch);
            stream_epoch = str(m, "epoch");
            stream.clear();
            epochs.insert(stream_epoch);
            shared_store = false;
            if (auto* f = m.if_contains("features"); f && f->is_array())
                for (auto& name : f->get_array())
                    if (name.is_string() && name.get_string() == "shared-store") shared_store = true;
            return;
        }
        if (type == "watch" && is_true(m, "watching")) {
            streamed_epochs.insert(stream_epoch);
            return;
        }
        if (type != "event" || !opt.broker_stream) return;
        const std::string event = str(m, "event");
        const std::string key = str(m, "key");
        const std::string id = str(m, "uuid");
        if (key.empty() || !key_max.contains(key)) return;  // not a key of this run
        ++sum.stream_events;
        streamed_ids.insert({stream_epoch, id});
        auto rq = reqs.find(id);
        if (rq == reqs.end())
            return flag("unknown-request",
                        "stream event " + event + " on " + key + " for " + id + ", which no client sent", t);
        stream_key& sk = stream[key];
        // Over a shared store a request outlives the broker run it was sent to (until that run's
        // session lease ends), and a later run's stream may tell of it without having told of its
        // start: its end is no violation then.
        const bool inherited = shared_store && rq->second.sess && past_stream_epochs.contains(rq->second.sess->epoch);
        if (event == "queued") {
            if (std::find(sk.queue.begin(), sk.queue.end(), id) != sk.queue.end())
                flag("queued-twice", id + " queued twice on " + key, t);
            sk.queue.push_back(id);
        } else if (event == "granted") {
            if (!sk.queue.empty() && sk.queue.front() != id && shared_store && admitted_together(sk, key, id)) {
                sk.queue.erase(std::find(sk.queue.begin(), sk.queue.end(), id));
            } else if (!sk.queue.empty() && sk.queue.front() != id) {
                auto at = std::find(sk.queue.begin(), sk.queue.end(), id);
                flag("fifo",
                     id + " granted " + key + " while " + sk.queue.front() + " was first in line" +
                         (at == sk.queue.end() ? " (it never queued)" : ""),
                     t);
                if (at != sk.queue.end()) sk.queue.erase(at);
            } else if (!sk.queue.empty()) {
                sk.queue.pop_front();
            }
            if (sk.holders.contains(id)) flag("double-grant", id + " granted " + key + " twice", t);
            const bool shared = rq->second.shared && !rq->second.multi;
            sk.holders[id] = shared;
            if (sk.holders.size() > max_of(key))
                flag("over-max",
                     key + " has " + std::to_string(sk.holders.size()) + " holders (max " +
                         std::to_string(max_of(key)) + ") after granting " + id,
                     t);
            for (auto& [other, other_shared] : sk.holders)
                if (other_shared != shared) {
                    flag("shared-with-exclusive",
                         key + ": " + id + (shared ? " (shared)" : " (exclusive)") + " granted while " + other +
                             " holds it in the other mode",
                         t);
                    break;
                }
            auto token = u64(m, "fencingToken").value_or(0);
            auto& kt = key_last_token[key];
            if (token <= kt)
                flag("token-order",
                     key + ": token " + std::to_string(token) + " granted to " + id + " after token " +
                         std::to_string(kt),
                     t);
            // The keys of one acquire-many may share its token (over etcd: one claim, one
            // revision); each key still checks its own order above.
            const bool same_grant = token == last_token && rq->second.multi && id == last_token_id;
            if (token <= last_token && !same_grant)
                flag("token-order",
                     "token " + std::to_string(token) + " granted to " + id + " after token " +
                         std::to_string(last_token) + " (on any key, across restarts)",
                     t);
            kt = std::max(kt, token);
            if (token >= last_token) last_token_id = id;
            last_token = std::max(last_token, token);
            stream_grants.insert({stream_epoch, id, key, token});
        } else if (event == "released" || event == "expired" || event == "forced") {
            if (sk.holders.erase(id) == 0 && !inherited)
                flag("end-of-nothing", event + " event for " + id + " on " + key + ", which did not hold it", t);
            if (event == "forced") forced.insert({id, key});
        } else if (event == "cancelled" || event == "timeout") {
            auto at = std::find(sk.queue.begin(), sk.queue.end(), id);
            if (at != sk.queue.end())
                sk.queue.erase(at);
            else if (!inherited)
                flag("end-of-nothing", event + " event for " + id + " on " + key + ", which was not queued", t);
        }
        if (sk.holders.empty() && sk.queue.empty()) stream.erase(key);
    }

    // Only lmx connections hear lock-lost; without it a hold's silent end cannot be judged.
    bool tells_lost(const session_st& s) const { return opt.broker_stream && !s.live_mutex; }

    request_st* own(session_st& s, const std::string& id) {
        auto it = reqs.find(id);
        return it != reqs.end() && it->second.sess == &s ? &it->second : nullptr;
    }

    void on_send(session_st& s, const json::object& m, std::int64_t t) {
        const std::string type = str(m, "type");
        ++sum.requests;
        ++sum.requests_by_type[type];
        if (type == "version") {
            s.live_mutex = true;
            return;
        }
        static const std::set<std::string> inspection = {
            "hello", "ping", "lock-info-request", "ls", "system-stats-request", "watch", "unwatch", "lock-received"};
        if (!inspection.contains(type)) ++sum.operations;
        const std::string uuid = str(m, "uuid");
        if (type == "lock-received") return;
        if (type == "lock-client-timeout" || type == "lock-client-error") {
            // The broker withdraws the request, or releases a grant that crosses this message.
            if (auto* tg = own(s, uuid)) {
                if (tg->answers == 0) tg->abandoned = true;
                if (tg->t_release_sent == never) tg->t_release_sent = t;
            }
            return;
        }
        if (type == "lock-received-rejected") {
            std::string id = has(m, "_uuid") ? str(m, "_uuid") : uuid;
            if (auto* tg = own(s, id); tg && tg->t_release_sent == never) tg->t_release_sent = t;
            return;
        }
        if (uuid.empty()) return;
        if (auto it = reqs.find(uuid); it != reqs.end()) {
            if (it->second.sess == &s && it->second.type == type)
                ++it->second.retries;
            else
                flag("reused-id", "request id " + uuid + " sent again by " + s.name, t);
            return;
        }
        request_st& r = reqs[uuid];
        r.type = type;
        r.sess = &s;
        r.t_send = t;
        s.requests.push_back(uuid);
        if (type == "lock" || type == "acquire-many") {
            if (type == "lock") {
                const std::string key = str(m, "key");
                r.keys.push_back({key});
                r.shared = str(m, "mode") == "shared";
                auto mx = u64(m, "max").value_or(1);
                auto& km = key_max[key];
                km = std::max<std::uint32_t>(
                    {km, 1u, static_cast<std::uint32_t>(std::min<std::uint64_t>(mx, 1u << 30))});
            } else {
                r.multi = true;
                if (auto* ks = m.if_contains("keys"); ks && ks->is_array()) {
                    std::set<std::string> uniq;
                    for (auto& k : ks->get_array())
                        if (k.is_string()) uniq.insert(std::string(k.get_string()));
                    for (auto& k : uniq) {
                        r.keys.push_back({k});
                        key_max.try_emplace(k, 1);
                    }
                }
            }
            if (auto* ttl = m.if_contains("ttl")) {
                if (ttl->is_null())
                    r.ttl_ns = never;
                else if (auto v = u64(m, "ttl"); v && *v > 0)
                    r.ttl_ns = static_cast<std::int64_t>(*v) * ms_ns;
            }
            return;
        }
        r.key = str(m, "key");
        r.force = is_true(m, "force");
        if (type == "unlock")
            r.target = str(m, "_uuid");
        else if (type == "release-many")
            r.target = str(m, "lockUuid");
        else if (type == "extend") {
            r.target = str(m, "_uuid");
            if (auto* ttl = m.if_contains("ttl"); ttl && ttl->is_null())
                r.extend_ttl_ns = never;
            else if (auto v = u64(m, "ttl"); v && *v > 0)
                r.extend_ttl_ns = static_cast<std::int64_t>(*v) * ms_ns;
        } else if (type == "cancel")
            r.target = str(m, "target");
        if (type == "unlock" && r.target.empty() && r.force) key_forces[r.key].push_back(t);
        if ((type == "unlock" || type == "release-many") && !r.target.empty()) {
            auto tg = reqs.find(r.target);
            if (tg == reqs.end()) return;
            if (tg->second.sess == &s && !r.force) {
                // Sent while it still waited, it releases a grant that crosses it.
                if (tg->second.t_release_sent == never) tg->second.t_release_sent = t;
            } else {
                tg->second.cut = true;  // another connection (or a force) may end it
            }
        }
    }

    void on_recv(session_st& s, const json::object& m, std::int64_t t) {
        const std::string type = str(m, "type");
        const std::string uuid = str(m, "uuid");
        if (type == "lock-lost") return on_lost(s, m, t);
        if (type == "event" || (type == "version-mismatch")) return;
        auto it = reqs.find(uuid);
        if (it == reqs.end() || it->second.sess != &s) {
            if (type == "error" && uuid.empty()) return;
            return flag(
                "stray-answer",
                s.name + " got a " + type + " answer for " + (uuid.empty() ? "no id" : uuid) + ", which it never sent",
                t);
        }
        request_st& r = it->second;
        if (type == "hello") {
            s.epoch = str(m, "epoch");
            epochs.insert(s.epoch);
        }
        if (type == "lock" || type == "acquire-many") return on_lock_answer(s, r, uuid, m, t);
        if (++r.answers > 1 + r.retries) flag("double-answer", uuid + " (" + r.type + ") answered more than once", t);
        if (r.target.empty() || type == "error") return;
        request_st* tg = own(s, r.target);
        if (!tg) return;
        if (type == "unlock" && !r.force) {
            bool ok = is_true(m, "unlocked") && !has(m, "warning") && !has(m, "error");
            if (tg->granted && !tg->multi) {
                if (tg->keys[0].t_lost == never && tg->t_release_sent == r.t_send && tells_lost(s) && !ok)
                    flag("silent-end",
                         uuid + ": hold " + r.target + " on " + r.key +
                             " was gone when its owner released it, "
                             "and no lock-lost said so: " +
                             json::serialize(m),
                         t);
            } else if (tg->answers == 0 && is_true(m, "unlocked")) {
                tg->withdrawn = true;
            }
        } else if (type == "release-many") {
            if (tg->granted) {
                bool lost =
                    std::any_of(tg->keys.begin(), tg->keys.end(), [](const held_key& h) { return h.t_lost != never; });
                if (!lost && tg->t_release_sent == r.t_send && tells_lost(s) && !is_true(m, "released"))
                    flag("silent-end",
                         uuid + ": multi-key hold " + r.target +
                             " was gone when its owner released it, "
                             "and no lock-lost said so: " +
                             json::serialize(m),
                         t);
            } else if (tg->answers == 0 && is_true(m, "released")) {
                tg->withdrawn = true;
            }
        } else if (type == "extend") {
            held_key* h = tg->on(r.key);
            if (tg->granted && h && h->t_lost == never && tg->t_release_sent > r.t_send && tells_lost(s)) {
                if (!is_true(m, "extended"))
                    flag("silent-end",
                         uuid + ": hold " + r.target + " on " + r.key +
                             " could not be extended, "
                             "and no lock-lost said it had ended: " +
                             json::serialize(m),
                         t);
            }
            // The broker sets the lease to end `ttl` after it serves the extend (no earlier than
            // its send), whether that is later or sooner than before.
            if (is_true(m, "extended") && tg->granted)
                tg->lease_end = r.extend_ttl_ns == never ? never : r.t_send + r.extend_ttl_ns;
        } else if (type == "cancel") {
            if (is_true(m, "cancelled")) {
                // A retry that arrived after the request ended starts it again; that one may be cancelled.
                if (tg->answers > tg->retries)
                    flag("double-answer", uuid + ": cancel of " + r.target + " succeeded after it was answered", t);
                tg->withdrawn = true;
            } else if (tg->answers == 0 && !tg->withdrawn && !tg->abandoned) {
                flag("lost-answer",
                     uuid + ": cancel found " + r.target + " no longer waiting, yet it was never answered", t);
            }
        }
    }

    void on_lock_answer(session_st& s, request_st& r, const std::string& uuid, const json::object& m, std::int64_t t) {
        const bool acquired = is_true(m, "acquired");
        const bool failed = has(m, "error");
        if (!acquired && !failed && is_true(m, "queued")) {
            // A retry that arrives after the request ended starts it again, and may wait again.
            if (r.answers > r.retries)
                flag("notice-after-answer", uuid + " got a queued notice after its final answer", t);
            return;
        }
        ++r.answers;
        int allowed = 1 + r.retries + (r.abandoned ? 1 : 0);
        if (r.answers > allowed)
            flag("double-answer", uuid + " (" + r.type + ") answered more than once: " + json::serialize(m), t);
        else if (r.withdrawn)
            flag("double-answer", uuid + " answered after its owner's withdrawal was confirmed: " + json::serialize(m),
                 t);
        if (failed) ++sum.rejections_by_code[str(m, "code")];
        if (!acquired) return;
        ++sum.grants;
        if (r.granted) return;
        r.granted = true;
        r.t_grant = t;
        r.lease_end = r.ttl_ns == never ? never : r.t_send + r.ttl_ns;
        if (!r.multi) {
            r.keys[0].token = u64(m, "fencingToken").value_or(0);
        } else if (auto* ft = m.if_contains("fencingTokens"); ft && ft->is_object()) {
            for (auto& [k, v] : ft->get_object())
                if (held_key* h = r.on(std::string(k)); h && (v.is_uint64() || v.is_int64()))
                    h->token = v.to_number<std::uint64_t>();
        }
        if (opt.broker_stream)
            for (auto& h : r.keys) client_grants.push_back({s.epoch, uuid, h.key, h.token, t, &s});
    }

    void on_lost(session_st& s, const json::object& m, std::int64_t t) {
        ++sum.lost;
        const std::string id = str(m, "uuid"), key = str(m, "key");
        request_st* r = own(s, id);
        if (!r || !r->granted)
            return flag("stray-answer", s.name + " got lock-lost for " + id + ", which it did not hold", t);
        if (held_key* h = r->on(key); h && h->t_lost == never) h->t_lost = t;
    }

    // A clean close (the client drained: withdrew and released everything, then closed) owes every
    // request an answer; the answers may still arrive after it, so they are counted at the end.
    void on_close(session_st& s, const std::string& how, std::int64_t t) {
        if (s.closed) return;
        s.closed = true;
        s.t_close = t;
        s.clean = how == "clean";
        if (!s.clean) ++sum.sessions_cut;
    }

    void check_owed_answers() {
        for (auto& [k, s] : sessions) {
            if (!s.clean) continue;
            for (const auto& id : s.requests) {
                const request_st& r = reqs.at(id);
                const bool lockish = r.type == "lock" || r.type == "acquire-many";
                const bool owed = lockish ? !r.withdrawn && !r.abandoned : r.type != "version";
                if (owed && r.answers == 0)
                    flag("lost-answer",
                         id + " (" + r.type +
                             ") was never answered, though its connection stayed open "
                             "until everything was drained",
                         s.t_close);
            }
        }
    }

    // The stream can end early: the broker writes a grant to its client before the event to the
    // watcher, and a watcher that lags loses the broker's unwritten events when it is killed. So a
    // grant must be in the stream only when the stream went on past it in the broker's order:
    // when it names a later request of the same connection, sent after the grant arrived.
    bool stream_went_past(const client_grant& g) const {
        const auto& ids = g.sess->requests;
        auto first_after = std::upper_bound(
            ids.begin(), ids.end(), g.t, [&](std::int64_t t, const std::string& id) { return t < reqs.at(id).t_send; });
        return std::any_of(first_after, ids.end(), [&](const std::string& id) {
            return streamed_ids.contains({g.epoch, id});
        });
    }

    void check_client_grants() {
        for (const auto& g : client_grants) {
            if (!streamed_epochs.contains(g.epoch)) continue;  // no stream to compare with
            if (stream_grants.contains({g.epoch, g.id, g.key, g.token})) continue;
            if (!stream_went_past(g)) continue;
            flag("phantom-grant",
                 g.id + " was told it holds " + g.key + " with token " + std::to_string(g.token) +
                     ", a grant the broker's own stream never made",
                 g.t);
        }
    }

    // From the clients' side: while a hold's lease is valid as its client computes it (from the
    // request's send time, so never later than the broker's), and it has neither released it nor
    // heard lock-lost, no other client may hold the key against max or mode. Holds another
    // connection may have cut short (foreign unlock, force) are left out.
    void check_client_intervals() {
        std::unordered_map<std::string, std::vector<interval>> per_key;
        for (auto& [id, r] : reqs) {
            if (!r.granted) continue;
            for (auto& h : r.keys) {
                std::int64_t end = std::min({r.t_release_sent, h.t_lost, r.lease_end, r.sess->t_close});
                if (end == never) end = t_last + 1;  // still held when the history ends
                if (end <= r.t_grant || r.cut || forced.contains({id, h.key})) continue;
                bool forced_key = false;
                if (auto fk = key_forces.find(h.key); fk != key_forces.end())
                    for (auto ft : fk->second)
                        if (ft <= end && ft >= r.t_send) forced_key = true;
                if (forced_key) continue;
                per_key[h.key].push_back({r.t_grant, end, r.shared && !r.multi, &id});
            }
        }
        for (auto& [key, list] : per_key) {
            std::sort(list.begin(), list.end(), [](const interval& a, const interval& b) { return a.start < b.start; });
            std::vector<const interval*> active;
            const std::uint32_t mx = max_of(key);
            for (const auto& iv : list) {
                std::erase_if(active, [&](const interval* a) { return a->end <= iv.start; });
                for (const interval* a : active) {
                    if (a->shared != iv.shared) {
                        flag("client-overlap",
                             key + ": " + *iv.id + " held it " + (iv.shared ? "shared" : "exclusively") + " while " +
                                 *a->id +
                                 " still held it in the other mode, both within "
                                 "their leases",
                             iv.start);
                        break;
                    }
                }
                active.push_back(&iv);
                if (active.size() > mx)
                    flag("client-overlap",
                         key + ": " + std::to_string(active.size()) + " clients held it at once (max " +
                             std::to_string(mx) + ") within their leases, the last " + *iv.id,
                         iv.start);
            }
        }
    }

    summary finish() {
        check_owed_answers();
        if (opt.broker_stream) check_client_grants();
        check_client_intervals();
        sum.epochs = epochs.size() - (epochs.contains("") ? 1 : 0);
        std::sort(sum.violations.begin(), sum.violations.end(),
                  [](const violation& a, const violation& b) { return a.t < b.t; });
        return std::move(sum);
    }
};

analyzer::analyzer(analyze_options options) : impl_(std::make_unique<impl>(options)) {}
analyzer::~analyzer() = default;
void analyzer::add(std::string_view line) { impl_->add(line); }
summary analyzer::finish() { return impl_->finish(); }

namespace {
std::int64_t time_of(const std::string& line) {
    auto at = line.find("\"t\":");
    return at == std::string::npos ? 0 : std::strtoll(line.c_str() + at + 4, nullptr, 10);
}
}  // namespace

void merge_histories(const std::vector<std::string>& paths, const std::function<void(const std::string&)>& each) {
    // A k-way merge: memory for one line per file, however long the run was.
    struct source {
        std::ifstream in;
        std::string line;
        std::int64_t t = 0;
        std::size_t number = 0;
    };
    std::vector<source> sources(paths.size());
    auto next = [&](std::size_t i) {
        source& s = sources[i];
        do {
            if (!std::getline(s.in, s.line)) return false;
            ++s.number;
        } while (s.line.empty() || s.line.back() != '}');  // a line cut short by a kill: skipped
        const std::int64_t t = time_of(s.line);
        if (t < s.t)
            throw std::runtime_error(paths[i] + " is not in time order (line " + std::to_string(s.number) + ")");
        s.t = t;
        return true;
    };
    using item = std::pair<std::int64_t, std::size_t>;  // (time, file): ties keep file order
    std::priority_queue<item, std::vector<item>, std::greater<>> heap;
    for (std::size_t i = 0; i < paths.size(); ++i) {
        sources[i].in.open(paths[i]);
        if (!sources[i].in) throw std::runtime_error("cannot read " + paths[i]);
        if (next(i)) heap.push({sources[i].t, i});
    }
    while (!heap.empty()) {
        const std::size_t i = heap.top().second;
        heap.pop();
        each(sources[i].line);
        if (next(i)) heap.push({sources[i].t, i});
    }
}

summary analyze_files(const std::vector<std::string>& paths, analyze_options options) {
    analyzer a(options);
    merge_histories(paths, [&](const std::string& line) { a.add(line); });
    return a.finish();
}

std::string format_summary(const summary& s) {
    auto n = [](std::uint64_t v) { return std::to_string(v); };
    std::string out;
    out += "operations " + n(s.operations) + " (requests " + n(s.requests) + "), grants " + n(s.grants) +
           ", lock-lost " + n(s.lost) + ", stream events " + n(s.stream_events) + "\n";
    out += "broker runs " + n(s.epochs) + " (kills " + n(s.broker_kills) + "), connections " + n(s.sessions) +
           " (cut " + n(s.sessions_cut) + "), client kills " + n(s.worker_kills) + "\n";
    if (!s.requests_by_type.empty()) {
        out += "requests:";
        for (auto& [k, v] : s.requests_by_type) out += " " + k + "=" + n(v);
        out += "\n";
    }
    if (!s.rejections_by_code.empty()) {
        out += "rejections:";
        for (auto& [k, v] : s.rejections_by_code) out += " " + k + "=" + n(v);
        out += "\n";
    }
    if (s.violation_count == 0) {
        out += "no violations\n";
        return out;
    }
    out += n(s.violation_count) + " VIOLATIONS:";
    for (auto& [k, v] : s.violations_by_kind) out += " " + k + "=" + n(v);
    out += "\n";
    for (auto& v : s.violations) out += "  [" + v.kind + "] " + v.detail + "\n";
    if (s.violations.size() < s.violation_count)
        out += "  ... (" + n(s.violation_count - s.violations.size()) + " more)\n";
    return out;
}

std::string summary_json(const summary& s) {
    json::object o;
    o["operations"] = s.operations;
    o["requests"] = s.requests;
    o["grants"] = s.grants;
    o["lockLost"] = s.lost;
    o["streamEvents"] = s.stream_events;
    o["brokerRuns"] = s.epochs;
    o["brokerKills"] = s.broker_kills;
    o["clientKills"] = s.worker_kills;
    o["connections"] = s.sessions;
    o["connectionsCut"] = s.sessions_cut;
    json::object by_type, by_code, by_kind;
    for (auto& [k, v] : s.requests_by_type) by_type[k] = v;
    for (auto& [k, v] : s.rejections_by_code) by_code[k] = v;
    for (auto& [k, v] : s.violations_by_kind) by_kind[k] = v;
    o["requestsByType"] = std::move(by_type);
    o["rejectionsByCode"] = std::move(by_code);
    o["violationCount"] = s.violation_count;
    o["violationsByKind"] = std::move(by_kind);
    json::array list;
    for (auto& v : s.violations) list.push_back(json::object{{"kind", v.kind}, {"detail", v.detail}, {"t", v.t}});
    o["violations"] = std::move(list);
    return json::serialize(o);
}

}  // namespace lmx::check
