#include <lmx/core/rw_locks.hpp>

#include <algorithm>
#include <deque>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace lmx::core {

namespace {

struct pending_read {
    session_id s;
    std::string uuid;
};

enum class group_hold : std::uint8_t { none, requested, held };

// The readers of one read key R (read-preferring clients).
struct read_group {
    std::uint32_t readers = 0;  // between their begin_read and end_read (or disconnect)
    group_hold g = group_hold::none;
    std::string group_id;  // the shared hold on R that stands for the readers
    std::string write_key;
    std::string write_id;  // the write-key request or hold taken for the readers; empty: none
    bool write_granted = false;
    session_id linker = 0;             // the first reader: its next locking_write_key lock is the group's
    std::deque<pending_read> waiting;  // begin_reads not yet let in, in arrival order
};

struct parked_check {
    session_id s;
    std::string uuid;
    bool writer;
};

// One key of write-preferring clients.
struct write_pref {
    std::uint32_t readers = 0;
    bool flag = false;
    session_id flag_owner = 0;
    std::deque<parked_check> parked;
};

struct session_rw {
    std::unordered_map<std::string, std::uint32_t> reads;  // read key -> this session's readers inside
    std::unordered_map<std::string, std::uint32_t> incs;   // key -> increment-readers not yet decremented
    std::unordered_set<std::string> announced;             // keys whose next lock from this session is a reader's
    std::unordered_set<std::string> virtual_ids;           // begin_read / end_read requests answered here
    std::unordered_set<std::string> pending_in;            // read keys where a begin_read of it waits
    std::unordered_set<std::string> parked_in;             // keys where a message of it is parked
    std::unordered_set<std::string> flags;                 // keys whose writer flag it set
    std::string link_for;                                  // the read key whose write key this session is to lock

    bool empty() const noexcept {
        return reads.empty() && incs.empty() && announced.empty() && virtual_ids.empty() && pending_in.empty() &&
               parked_in.empty() && flags.empty() && link_for.empty();
    }
};

struct deferred {
    effect_kind kind;
    std::string id;
    errc code;
    fencing_token token;
    std::uint32_t waiters;
    std::uint32_t position;
    bool repeat;
};

constexpr std::string_view reader_ok = "register-write-flag-success";
constexpr std::string_view writer_ok = "register-write-flag-and-readers-check-success";

}  // namespace

struct rw_locks::impl {
    lock_store& table;
    rw_output& out;
    session_id group;
    std::unordered_map<std::string, read_group> reads;
    std::unordered_map<std::string, std::string> group_of;  // lock id under `group` -> read key
    std::unordered_map<std::string, write_pref> wprefs;
    std::unordered_map<session_id, session_rw> sessions;
    std::vector<deferred> effects;
    std::uint64_t serial = 0;
    // Keys write-preferring clients used lately: a writer's max of 1 there is no bound on readers.
    std::unordered_set<std::string> rw_keys;

    impl(lock_store& t, rw_output& o, session_id g) : table(t), out(o), group(g) {}

    void granted(session_id s, std::string_view uuid, std::string_view key, std::uint32_t readers_count) {
        if (std::string* o = out.frames_for(s))
            write_lock_granted(*o, uuid, key, table.info(key, 0).last_token, 0, readers_count);
    }
    void answer(session_id s, std::string_view type, std::string_view uuid, std::string_view key,
                std::optional<std::uint32_t> readers_count = std::nullopt, std::optional<bool> flag = std::nullopt) {
        if (std::string* o = out.frames_for(s)) write_rw_answer(*o, type, uuid, key, readers_count, flag);
    }

    void forget_session_if_empty(session_id s) {
        auto it = sessions.find(s);
        if (it != sessions.end() && it->second.empty()) sessions.erase(it);
    }

    void begin_read(session_id s, const req::lock& r, time_point now) {
        session_rw& sr = sessions[s];
        if (!sr.virtual_ids.insert(r.uuid).second) return;  // a retry: its answer is on the way or sent
        read_group& g = reads[r.key];
        g.waiting.push_back({s, r.uuid});
        sr.pending_in.insert(r.key);
        pump(r.key, now);
    }

    // Lets waiting readers in while it can: the readers' hold on R must be in place, and a first
    // reader must have taken the write key before anyone else comes in.
    void pump(const std::string& key, time_point now) {
        auto it = reads.find(key);
        if (it == reads.end()) return;
        read_group& g = it->second;
        while (!g.waiting.empty() && g.linker == 0) {
            if (g.g == group_hold::none) request_group(key, g, now);
            if (g.g != group_hold::held) break;
            pending_read p = std::move(g.waiting.front());
            g.waiting.pop_front();
            note_not_pending(p.s, key, g);
            admit(key, g, p);
        }
        // Nobody reads or waits to: the readers' hold (or its request) goes.
        if (g.readers == 0 && g.waiting.empty() && g.linker == 0) {
            release_write_key(g, now);
            release_group(g, now);
        }
        forget_group_if_idle(key);
    }

    void note_not_pending(session_id s, const std::string& key, const read_group& g) {
        bool more = std::any_of(g.waiting.begin(), g.waiting.end(), [&](const pending_read& p) { return p.s == s; });
        if (!more) sessions[s].pending_in.erase(key);
    }

    void request_group(const std::string& key, read_group& g, time_point now) {
        g.group_id = "rw-readers-" + std::to_string(++serial);
        group_of[g.group_id] = key;
        g.g = group_hold::requested;
        // Its outcome comes back as an effect (settle): granted now or later, or refused.
        table.acquire({.session = group, .id = g.group_id, .key = key, .ttl = no_expiry, .mode = lock_mode::shared},
                      now);
    }

    void admit(const std::string& key, read_group& g, const pending_read& p) {
        session_rw& sr = sessions[p.s];
        ++g.readers;
        ++sr.reads[key];
        if (g.readers == 1) {
            // The first reader takes the write key for everyone (its client does, seeing 1).
            g.linker = p.s;
            sr.link_for = key;
        }
        granted(p.s, p.uuid, key, g.readers);
    }

    void end_read(session_id s, const req::lock& r, time_point now) {
        session_rw& sr = sessions[s];
        if (!sr.virtual_ids.insert(r.uuid).second) return;
        auto it = reads.find(r.key);
        auto mine = sr.reads.find(r.key);
        if (it == reads.end() || mine == sr.reads.end()) {
            granted(s, r.uuid, r.key, 0);  // this connection has no read to end
            return;
        }
        read_group& g = it->second;
        // The count before this reader leaves: 1 tells its client it was the last one.
        granted(s, r.uuid, r.key, g.readers);
        if (--mine->second == 0) sr.reads.erase(mine);
        readers_leave(g, s, 1, now);
        pump(r.key, now);
    }

    // `n` readers of session `s` leave R; the caller has taken them off the session's count.
    void readers_leave(read_group& g, session_id s, std::uint32_t n, time_point now) {
        g.readers -= std::min(n, g.readers);
        if (g.linker == s) unlink(g);
        if (g.readers == 0) release_write_key(g, now);
        if (g.readers == 0 && g.waiting.empty()) release_group(g, now);
    }

    void unlink(read_group& g) {
        auto it = sessions.find(g.linker);
        if (it != sessions.end()) it->second.link_for.clear();
        g.linker = 0;
    }

    // A request of the group session ends, whether it waits or holds: a grant may have happened
    // in the table with its effect not yet settled here.
    void end_group_request(const std::string& id, time_point now) { table.abandon(group, id, now); }

    void release_write_key(read_group& g, time_point now) {
        if (g.write_id.empty()) return;
        end_group_request(g.write_id, now);
        group_of.erase(g.write_id);
        g.write_id.clear();
        g.write_granted = false;
    }

    void release_group(read_group& g, time_point now) {
        if (g.group_id.empty()) return;
        end_group_request(g.group_id, now);
        group_of.erase(g.group_id);
        g.group_id.clear();
        g.g = group_hold::none;
    }

    void forget_group_if_idle(const std::string& key) {
        auto it = reads.find(key);
        if (it == reads.end()) return;
        const read_group& g = it->second;
        if (g.readers == 0 && g.waiting.empty() && g.g == group_hold::none && g.write_id.empty() && g.linker == 0)
            reads.erase(it);
    }

    // The first reader's lock of the write key: taken for the readers, under the group session.
    bool lock_write_key(session_id s, const req::lock& r, std::optional<time_point> deadline, time_point now) {
        auto sit = sessions.find(s);
        if (sit == sessions.end() || sit->second.link_for.empty()) return false;
        const std::string key = sit->second.link_for;
        auto git = reads.find(key);
        if (git == reads.end() || git->second.linker != s) return false;
        read_group& g = git->second;
        if (!g.write_id.empty()) {
            if (r.uuid != g.write_id) return false;
            // A retry of the same request: the table answers it as a repeat (settle relays it).
            table.acquire({.session = group,
                           .id = r.uuid,
                           .key = g.write_key,
                           .ttl = no_expiry,
                           .wait = r.wait,
                           .wait_deadline = deadline},
                          now);
            return true;
        }
        g.write_key = r.key;
        g.write_id = r.uuid;
        g.write_granted = false;
        group_of[r.uuid] = key;
        table.acquire(
            {.session = group, .id = r.uuid, .key = r.key, .ttl = no_expiry, .wait = r.wait, .wait_deadline = deadline},
            now);
        return true;
    }

    // The first reader did not get the write key (refused, timed out, gave up): it never read.
    void first_reader_failed(const std::string& key, read_group& g, time_point now) {
        const session_id s = g.linker;
        release_write_key(g, now);
        if (!s) {
            if (g.readers == 0 && g.waiting.empty()) release_group(g, now);
            return;
        }
        if (auto sit = sessions.find(s); sit != sessions.end()) {
            if (auto m = sit->second.reads.find(key); m != sit->second.reads.end() && --m->second == 0)
                sit->second.reads.erase(m);
        }
        readers_leave(g, s, 1, now);
    }

    void fail_waiting(const std::string& key, read_group& g, errc code) {
        auto waiting = std::move(g.waiting);
        g.waiting.clear();
        for (auto& p : waiting) {
            sessions[p.s].pending_in.erase(key);
            sessions[p.s].virtual_ids.erase(p.uuid);
            if (std::string* o = out.frames_for(p.s)) write_lock_rejected(*o, p.uuid, key, code);
            forget_session_if_empty(p.s);
        }
    }

    void on_group_effect(const deferred& e, time_point now) {
        auto it = group_of.find(e.id);
        if (it == group_of.end()) return;
        const std::string key = it->second;
        auto git = reads.find(key);
        if (git == reads.end()) return;
        read_group& g = git->second;
        if (e.id == g.group_id) {
            switch (e.kind) {
                case effect_kind::granted: g.g = group_hold::held; break;
                case effect_kind::rejected:
                    group_of.erase(g.group_id);
                    g.group_id.clear();
                    g.g = group_hold::none;
                    fail_waiting(key, g, e.code);
                    break;
                case effect_kind::lock_lost:  // forced: the readers stand unprotected from lmx writers on R
                    group_of.erase(g.group_id);
                    g.group_id.clear();
                    g.g = group_hold::none;
                    break;
                default: break;
            }
            pump(key, now);
            return;
        }
        if (e.id != g.write_id) return;
        const session_id s = g.linker;
        switch (e.kind) {
            case effect_kind::granted:
                if (e.repeat) break;  // its grant is already on the way
                g.write_granted = true;
                if (s) {
                    if (std::string* o = out.frames_for(s))
                        write_lock_granted(*o, e.id, g.write_key, e.token, e.waiters, 0);
                    unlink(g);
                }
                pump(key, now);
                break;
            case effect_kind::queued:
                if (s)
                    if (std::string* o = out.frames_for(s))
                        write_lock_queued(*o, e.id, g.write_key, e.waiters, 0, e.position);
                break;
            case effect_kind::rejected:
                if (s)
                    if (std::string* o = out.frames_for(s)) write_lock_rejected(*o, e.id, g.write_key, e.code);
                group_of.erase(g.write_id);
                g.write_id.clear();
                first_reader_failed(key, g, now);
                pump(key, now);
                break;
            case effect_kind::lock_lost:  // forced by someone: the readers stand unprotected
                group_of.erase(g.write_id);
                g.write_id.clear();
                g.write_granted = false;
                break;
            default: break;
        }
    }

    void message(session_id s, req::rw_message_kind kind, std::string_view uuid, const std::string& key) {
        if (rw_keys.size() >= 65536) rw_keys.clear();  // a bound; forgetting one costs only concurrency
        rw_keys.insert(key);
        write_pref& wp = wprefs[key];
        session_rw& sr = sessions[s];
        using k = req::rw_message_kind;
        switch (kind) {
            case k::write_flag_check:
                // Writers first: a reader waits while a writer writes or waits to.
                if ((wp.flag && wp.flag_owner != s) || writer_parked(wp)) {
                    wp.parked.push_back({s, std::string(uuid), false});
                    sr.parked_in.insert(key);
                    return;
                }
                sr.announced.insert(key);
                answer(s, reader_ok, uuid, key, wp.readers, false);
                forget_wpref_if_idle(key);
                return;
            case k::write_flag_and_readers_check:
                if ((wp.flag && wp.flag_owner != s) || wp.readers > 0) {
                    wp.parked.push_back({s, std::string(uuid), true});
                    sr.parked_in.insert(key);
                    return;
                }
                set_flag(wp, s, key);
                answer(s, writer_ok, uuid, key, wp.readers, false);
                return;
            case k::increment_readers:
                ++wp.readers;
                ++sr.incs[key];
                answer(s, "increment-readers-success", uuid, key);
                return;
            case k::decrement_readers:
                if (auto it = sr.incs.find(key); it != sr.incs.end()) {
                    if (--it->second == 0) sr.incs.erase(it);
                    --wp.readers;
                }
                if (wp.readers == 0) release_parked(key, wp);
                answer(s, "decrement-readers-success", uuid, key);
                forget_wpref_if_idle(key);
                return;
            case k::clear_write_flag:
                clear_flag(wp, key);
                release_parked(key, wp);
                answer(s, "write-flag-false-and-broadcast-success", uuid, key);
                forget_wpref_if_idle(key);
                return;
        }
    }

    static bool writer_parked(const write_pref& wp) {
        return std::any_of(wp.parked.begin(), wp.parked.end(), [](const parked_check& p) { return p.writer; });
    }

    void set_flag(write_pref& wp, session_id s, const std::string& key) {
        wp.flag = true;
        wp.flag_owner = s;
        sessions[s].flags.insert(key);
    }

    void clear_flag(write_pref& wp, const std::string& key) {
        if (!wp.flag) return;
        if (auto it = sessions.find(wp.flag_owner); it != sessions.end()) it->second.flags.erase(key);
        wp.flag = false;
        wp.flag_owner = 0;
    }

    // In arrival order, until one must keep waiting: readers while a writer has the flag, a
    // writer while readers remain or another writer has it.
    void release_parked(const std::string& key, write_pref& wp) {
        while (!wp.parked.empty()) {
            parked_check& p = wp.parked.front();
            if (p.writer) {
                if (wp.flag || wp.readers > 0) break;
                set_flag(wp, p.s, key);
                answer(p.s, writer_ok, p.uuid, key, wp.readers, false);
            } else {
                if (wp.flag) break;
                sessions[p.s].announced.insert(key);
                answer(p.s, reader_ok, p.uuid, key, wp.readers, false);
            }
            const session_id s = p.s;
            wp.parked.pop_front();
            if (std::none_of(wp.parked.begin(), wp.parked.end(), [&](const parked_check& q) { return q.s == s; }))
                sessions[s].parked_in.erase(key);
        }
    }

    void forget_wpref_if_idle(const std::string& key) {
        auto it = wprefs.find(key);
        if (it != wprefs.end() && it->second.readers == 0 && !it->second.flag && it->second.parked.empty())
            wprefs.erase(it);
    }

    void close_session(session_id s, time_point now) {
        auto sit = sessions.find(s);
        if (sit == sessions.end()) return;
        session_rw sr = std::move(sit->second);
        sessions.erase(sit);
        std::unordered_set<std::string> touched_reads(sr.pending_in.begin(), sr.pending_in.end());
        for (auto& [key, n] : sr.reads) touched_reads.insert(key);
        for (const auto& key : touched_reads) {
            auto git = reads.find(key);
            if (git == reads.end()) continue;
            read_group& g = git->second;
            std::erase_if(g.waiting, [&](const pending_read& p) { return p.s == s; });
            if (auto it = sr.reads.find(key); it != sr.reads.end()) {
                readers_leave(g, s, it->second, now);  // a reader whose connection closes has ended its read
            } else if (g.linker == s) {
                first_reader_failed(key, g, now);
            } else if (g.readers == 0 && g.waiting.empty()) {
                release_group(g, now);
            }
            pump(key, now);
        }
        std::unordered_set<std::string> touched_wprefs(sr.parked_in.begin(), sr.parked_in.end());
        for (auto& [key, n] : sr.incs) touched_wprefs.insert(key);
        touched_wprefs.insert(sr.flags.begin(), sr.flags.end());
        for (const auto& key : touched_wprefs) {
            auto wit = wprefs.find(key);
            if (wit == wprefs.end()) continue;
            write_pref& wp = wit->second;
            std::erase_if(wp.parked, [&](const parked_check& p) { return p.s == s; });
            if (auto it = sr.incs.find(key); it != sr.incs.end()) wp.readers -= std::min(it->second, wp.readers);
            if (wp.flag && wp.flag_owner == s) {  // a writer that died writing
                wp.flag = false;
                wp.flag_owner = 0;
            }
            release_parked(key, wp);
            forget_wpref_if_idle(key);
        }
    }

    bool abandon(session_id s, std::string_view id, time_point now) {
        auto sit = sessions.find(s);
        if (sit == sessions.end()) return false;
        session_rw& sr = sit->second;
        if (!sr.link_for.empty()) {
            const std::string key = sr.link_for;
            auto git = reads.find(key);
            if (git != reads.end() && git->second.write_id == id) {
                first_reader_failed(key, git->second, now);
                pump(key, now);
                forget_session_if_empty(s);
                return true;
            }
        }
        if (sr.virtual_ids.erase(std::string(id)) == 0) return false;
        for (const auto& key : std::vector<std::string>(sr.pending_in.begin(), sr.pending_in.end())) {
            auto git = reads.find(key);
            if (git == reads.end()) continue;
            auto& w = git->second.waiting;
            auto at = std::find_if(w.begin(), w.end(), [&](const pending_read& p) { return p.s == s && p.uuid == id; });
            if (at == w.end()) continue;
            w.erase(at);
            note_not_pending(s, key, git->second);
            pump(key, now);
        }
        forget_session_if_empty(s);
        return true;
    }
};

rw_locks::rw_locks(lock_store& table, rw_output& out, session_id group_session)
    : impl_(std::make_unique<impl>(table, out, group_session)) {}
rw_locks::~rw_locks() = default;

bool rw_locks::lock(session_id s, req::lock& r, std::optional<time_point> wait_deadline, time_point now) {
    if (r.rw) {
        switch (*r.rw) {
            case rw_status::begin_read: impl_->begin_read(s, r, now); return true;
            case rw_status::end_read:
                impl_->end_read(s, r, now);
                impl_->forget_session_if_empty(s);
                return true;
            case rw_status::locking_write_key: return impl_->lock_write_key(s, r, wait_deadline, now);
            default: return false;  // begin_write and the rest: a plain exclusive lock
        }
    }
    if (impl_->sessions.empty() && impl_->rw_keys.empty()) return false;
    if (auto sit = impl_->sessions.find(s); sit != impl_->sessions.end() && sit->second.announced.erase(r.key)) {
        // A write-preferring reader: shared, and its max (10) does not change the key's.
        r.mode = lock_mode::shared;
        r.max.reset();
        impl_->forget_session_if_empty(s);
        return false;
    }
    // A writer's max of 1 would bound the readers of the key to one at a time.
    if (r.max && *r.max == 1 && impl_->rw_keys.contains(r.key)) r.max.reset();
    return false;
}

bool rw_locks::unlock(session_id s, const req::unlock& r, time_point now) {
    if (!r.rw) return false;
    switch (*r.rw) {
        case rw_status::begin_read:
        case rw_status::end_read: {
            // The lock it ends was answered here and is no table hold.
            if (r.lock_id) {
                if (auto it = impl_->sessions.find(s); it != impl_->sessions.end())
                    it->second.virtual_ids.erase(*r.lock_id);
                impl_->forget_session_if_empty(s);
            }
            if (std::string* o = impl_->out.frames_for(s)) write_unlock_ok(*o, r.uuid, r.key, 0);
            return true;
        }
        case rw_status::unlocking_write_key:
            if (r.lock_id) return false;
            // The readers' hold on the write key ends when the last reader leaves; a writer's is
            // never touched by a reader.
            if (std::string* o = impl_->out.frames_for(s)) write_unlock_ok(*o, r.uuid, r.key, 0);
            return true;
        case rw_status::end_write: {
            if (r.lock_id) return false;
            // A writer ends its own write: never another writer's hold that came after its lease.
            impl_->table.release_own({.session = s, .uuid = r.uuid, .style = answer_style::rw_end_write}, r.key, now);
            return true;
        }
        default: return false;
    }
}

void rw_locks::message(session_id s, req::rw_message_kind kind, std::string_view uuid, std::string_view key,
                       time_point) {
    impl_->message(s, kind, uuid, std::string(key));
    impl_->forget_session_if_empty(s);
}

bool rw_locks::abandon(session_id s, std::string_view id, time_point now) { return impl_->abandon(s, id, now); }
void rw_locks::close_session(session_id s, time_point now) { impl_->close_session(s, now); }

void rw_locks::defer(const effect& e) {
    if (e.kind == effect_kind::event || is_answer(e.kind)) return;
    impl_->effects.push_back({e.kind, std::string(e.id), e.code, e.token, e.waiters, e.position, e.repeat});
}

void rw_locks::settle(time_point now) {
    while (!impl_->effects.empty()) {
        auto batch = std::move(impl_->effects);
        impl_->effects.clear();
        for (const auto& e : batch) impl_->on_group_effect(e, now);
    }
}

std::uint32_t rw_locks::readers(std::string_view key, std::uint32_t table_readers) const noexcept {
    if (impl_->reads.empty()) return table_readers;
    auto it = impl_->reads.find(std::string(key));
    if (it == impl_->reads.end() || it->second.g != group_hold::held || table_readers == 0) return table_readers;
    return table_readers - 1 + it->second.readers;
}

bool rw_locks::tracks(session_id s) const noexcept { return impl_->sessions.contains(s); }

bool rw_locks::idle() const noexcept {
    return impl_->reads.empty() && impl_->wprefs.empty() && impl_->sessions.empty() && impl_->group_of.empty() &&
           impl_->effects.empty();
}

}  // namespace lmx::core
