#include <lmx/core/lock_table.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <stdexcept>
#include <unordered_map>

namespace lmx::core {

fencing_token effect_sink::reserve_tokens(fencing_token) { return max_fencing_token; }

namespace {

using u32 = std::uint32_t;
using i64 = std::int64_t;
constexpr u32 npos = std::numeric_limits<u32>::max();
constexpr i64 no_deadline = std::numeric_limits<i64>::max();
constexpr std::uint64_t ttl_forever = std::numeric_limits<std::uint64_t>::max();

i64 rep(time_point t) noexcept { return t.time_since_epoch().count(); }
time_point from_rep(i64 r) noexcept { return time_point{time_point::duration{r}}; }

u32 hash_text(std::string_view s) noexcept {
    auto h = std::hash<std::string_view>{}(s);
    return static_cast<u32>(h ^ (h >> 32));
}

i64 add_ms(i64 base, std::uint64_t ms) noexcept {
    using namespace std::chrono;
    auto d = duration_cast<time_point::duration>(milliseconds{1}).count();
    if (ms >= static_cast<std::uint64_t>((no_deadline - base) / d)) return no_deadline - 1;
    return base + static_cast<i64>(ms) * d;
}

// Fixed-size chunks keep addresses stable, avoid the 2x slack and copy of a growing vector, and
// freed slots keep their strings' capacity, so reuse does not allocate.
template <class T>
class slab {
    static constexpr u32 shift = 10;
    static constexpr u32 chunk = 1u << shift;

public:
    u32 alloc() {
        if (!free_.empty()) {
            u32 i = free_.back();
            free_.pop_back();
            return i;
        }
        if (size_ == chunks_.size() * chunk) chunks_.push_back(std::make_unique<T[]>(chunk));
        return size_++;
    }
    void release(u32 i) { free_.push_back(i); }
    T& operator[](u32 i) noexcept { return chunks_[i >> shift][i & (chunk - 1)]; }
    const T& operator[](u32 i) const noexcept { return chunks_[i >> shift][i & (chunk - 1)]; }
    u32 size() const noexcept { return size_; }

private:
    std::vector<std::unique_ptr<T[]>> chunks_;
    std::vector<u32> free_;
    u32 size_ = 0;
};

// Open addressing (linear probing, backward-shift deletion) of 32-bit slab indices. The hash of
// each element lives in the element itself, so a slot costs four bytes.
class flat_index {
public:
    template <class Eq>
    u32 find(u32 h, Eq&& eq) const noexcept {
        if (slots_.empty()) return npos;
        for (u32 i = h & mask_;; i = (i + 1) & mask_) {
            u32 v = slots_[i];
            if (v == npos) return npos;
            if (eq(v)) return v;
        }
    }
    template <class HashOf>
    void insert(u32 h, u32 v, HashOf&& hash_of) {
        if ((count_ + 1) * 4 > slots_.size() * 3) grow(hash_of);
        u32 i = h & mask_;
        while (slots_[i] != npos) i = (i + 1) & mask_;
        slots_[i] = v;
        ++count_;
    }
    template <class HashOf>
    void erase(u32 h, u32 v, HashOf&& hash_of) noexcept {
        u32 i = h & mask_;
        while (slots_[i] != v) i = (i + 1) & mask_;
        for (u32 j = (i + 1) & mask_;; j = (j + 1) & mask_) {
            u32 w = slots_[j];
            if (w == npos) break;
            u32 home = hash_of(w) & mask_;
            // Move w back into the hole unless its home lies cyclically in (i, j].
            bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) {
                slots_[i] = w;
                i = j;
            }
        }
        slots_[i] = npos;
        --count_;
    }
    u32 size() const noexcept { return count_; }

private:
    template <class HashOf>
    void grow(HashOf&& hash_of) {
        std::vector<u32> old(std::max<std::size_t>(16, slots_.size() * 2), npos);
        old.swap(slots_);
        mask_ = static_cast<u32>(slots_.size() - 1);
        for (u32 v : old) {
            if (v == npos) continue;
            u32 i = hash_of(v) & mask_;
            while (slots_[i] != npos) i = (i + 1) & mask_;
            slots_[i] = v;
        }
    }
    std::vector<u32> slots_;
    u32 mask_ = 0;
    u32 count_ = 0;
};

enum class state : std::uint8_t { free, waiting, holding };

constexpr u32 max_limit = (1u << 29) - 1;

// 64 bytes: the flags share a word with `max`, and the hash is recomputed from the name when
// the index needs it (growth, deletion) instead of being stored.
struct key_rec {
    std::string name;
    fencing_token last_token = 0;  // the last token granted on this key
    u32 max : 29 = 1;
    u32 holders_shared : 1 = 0;  // the current holders' mode
    u32 max_explicit : 1 = 0;    // some request named a max (bounds shared holders too)
    u32 live : 1 = 0;
    u32 holders = 0;
    u32 waiters = 0;
    u32 hold_head = npos;  // holders, doubly linked through entry::kprev/knext
    u32 q_head = npos;     // FIFO queue, doubly linked through entry::kprev/knext
    u32 q_tail = npos;

    lock_mode holder_mode() const noexcept { return holders_shared ? lock_mode::shared : lock_mode::exclusive; }
};
static_assert(sizeof(key_rec) <= 64);

// One request on one key: waiting in the key's queue or holding it. A multi-key request is a
// ring of entries (one per key) linked by group_next; only its leader is in the id index, the
// session list and the deadline heap.
struct entry {
    std::string id;
    i64 deadline = no_deadline;  // waiting: wait deadline; holding: lease end (leaders only)
    std::uint64_t aux = 0;       // waiting: requested ttl in ms; holding: fencing token
    i64 since = 0;               // holding: grant time
    u32 key = npos;
    u32 session = npos;  // session slot; npos once a keep-on-exit hold outlived its session
    u32 kprev = npos, knext = npos;
    u32 sprev = npos, snext = npos;
    u32 group_next = npos;  // npos: single-key request
    u32 gen = 0;            // bumped whenever the deadline changes or the slot is freed
    u32 hash = 0;
    u32 seq = 0;  // waiting: increases along the key's queue (wrapping), for queue positions
    state st = state::free;
    lock_mode mode = lock_mode::exclusive;
    bool keep = false;
    bool leader = false;
    bool owned = false;  // in the (session, key) index of single-key holds
};

struct session_rec {
    session_id ext = 0;
    u32 head = npos;
    u32 count = 0;
};

struct heap_item {
    i64 deadline;
    u32 entry;
    u32 gen;
    bool operator>(const heap_item& o) const noexcept {
        return deadline != o.deadline ? deadline > o.deadline : entry > o.entry;
    }
};

}  // namespace

struct lock_table::impl {
    effect_sink& sink;
    table_config config;
    bool events = false;

    slab<key_rec> keys;
    slab<entry> entries;
    flat_index key_index;
    flat_index id_index;
    flat_index own_index;  // single-key holds by (session slot, key), for an unlock without id
    std::vector<session_rec> sessions;
    std::vector<u32> free_sessions;
    std::unordered_map<session_id, u32> session_slots;
    std::vector<heap_item> heap;
    std::size_t live_deadlines = 0;

    fencing_token token = 0;
    fencing_token ceiling = 0;
    bool stalled = false;           // a token reservation failed: nothing is granted until resumed
    std::vector<u32> stalled_keys;  // keys whose queue head waits for tokens
    i64 last_wait = 0;              // queue time of the request granted last
    table_counters stats;

    // Scratch, reused across calls so the hot path does not allocate.
    std::vector<u32> pending;  // keys whose queue head may now be grantable
    std::vector<u32> touched;  // keys that may have become empty
    std::vector<key_token> key_tokens;
    std::vector<std::string_view> sorted_keys;
    std::vector<u32> group_keys;
    std::vector<u32> due;

    impl(effect_sink& s, table_config c)
        : sink(s), config(std::move(c)), token(config.fencing_seed), ceiling(config.fencing_seed) {
        sort_pins();
    }

    void sort_pins() {
        std::stable_sort(config.pins.begin(), config.pins.end(),
                         [](const key_pin& a, const key_pin& b) { return a.prefix.size() > b.prefix.size(); });
    }

    // The pinned max of `key`, if the operator pinned one (longest prefix first).
    std::optional<u32> pin_of(std::string_view key) const {
        for (const auto& p : config.pins)
            if (key.starts_with(p.prefix)) return p.max;
        return std::nullopt;
    }

    auto key_hash_of() {
        return [this](u32 k) { return hash_text(keys[k].name); };
    }
    auto id_hash_of() {
        return [this](u32 e) { return entries[e].hash; };
    }
    static u32 own_hash(u32 session_slot, u32 key) noexcept {
        std::uint64_t x = (std::uint64_t{session_slot} << 32 | key) * 0x9E3779B97F4A7C15ull;
        return static_cast<u32>(x >> 32);
    }
    auto own_hash_of() {
        return [this](u32 e) { return own_hash(entries[e].session, entries[e].key); };
    }
    u32 find_own(u32 session_slot, u32 key) const {
        return own_index.find(own_hash(session_slot, key),
                              [&](u32 e) { return entries[e].session == session_slot && entries[e].key == key; });
    }
    void index_own(u32 e) {
        entry& r = entries[e];
        if (r.owned || r.session == npos || r.group_next != npos) return;
        own_index.insert(own_hash(r.session, r.key), e, own_hash_of());
        r.owned = true;
    }
    void unindex_own(u32 e) {
        entry& r = entries[e];
        if (!r.owned) return;
        own_index.erase(own_hash(r.session, r.key), e, own_hash_of());
        r.owned = false;
    }
    u32 find_key(std::string_view name, u32 h) const {
        return key_index.find(h, [&](u32 k) { return keys[k].name == name; });
    }
    u32 find_id(std::string_view id, u32 h) const {
        return id_index.find(h, [&](u32 e) { return entries[e].hash == h && entries[e].id == id; });
    }
    u32 find_id(std::string_view id) const { return find_id(id, hash_text(id)); }

    u32 create_key(std::string_view name, u32 h, std::optional<u32> max) {
        u32 k = keys.alloc();
        key_rec& r = keys[k];
        r.name.assign(name);
        r.last_token = 0;
        r.max = max.value_or(1);
        r.max_explicit = max.has_value();
        r.holders = r.waiters = 0;
        r.hold_head = r.q_head = r.q_tail = npos;
        r.holders_shared = 0;
        r.live = true;
        key_index.insert(h, k, key_hash_of());
        ++stats.keys;
        return k;
    }

    u32 get_or_create_key(std::string_view name, std::optional<u32> max) {
        u32 h = hash_text(name);
        u32 k = find_key(name, h);
        if (k == npos) return create_key(name, h, max);
        key_rec& r = keys[k];
        if (max && (*max != r.max || !r.max_explicit)) {
            if (*max > r.max) pending.push_back(k);  // a larger max may admit waiters now
            r.max = *max;
            r.max_explicit = true;
        }
        return k;
    }

    session_id session_of(const entry& e) const { return e.session == npos ? 0 : sessions[e.session].ext; }

    // Whether one more request of session `s` on `names` would pass a bound: the session's holds
    // and waiting requests, or the keys in the table.
    bool over_limits(session_id s, std::span<const std::string_view> names) const {
        if (auto it = session_slots.find(s);
            it != session_slots.end() && sessions[it->second].count >= config.max_session_requests)
            return true;
        if (stats.keys + names.size() <= config.max_keys) return false;
        std::uint64_t fresh = 0;
        for (auto name : names)
            if (find_key(name, hash_text(name)) == npos) ++fresh;
        return stats.keys + fresh > config.max_keys;
    }

    u32 session_slot(session_id s) {
        auto [it, inserted] = session_slots.try_emplace(s, npos);
        if (inserted) {
            u32 slot;
            if (!free_sessions.empty()) {
                slot = free_sessions.back();
                free_sessions.pop_back();
            } else {
                slot = static_cast<u32>(sessions.size());
                sessions.emplace_back();
            }
            sessions[slot] = session_rec{s, npos, 0};
            it->second = slot;
        }
        return it->second;
    }

    u32 new_entry(std::string_view id, u32 h, u32 key, u32 session, lock_mode mode, bool keep) {
        u32 e = entries.alloc();
        entry& r = entries[e];
        r.id.assign(id);
        r.hash = h;
        r.key = key;
        r.session = session;
        r.mode = mode;
        r.keep = keep;
        r.deadline = no_deadline;
        r.aux = 0;
        r.since = 0;
        r.kprev = r.knext = r.sprev = r.snext = npos;
        r.group_next = npos;
        r.seq = 0;
        r.owned = false;
        r.leader = true;
        r.st = state::waiting;
        return e;
    }

    void link_owner(u32 e) {
        entry& r = entries[e];
        id_index.insert(r.hash, e, id_hash_of());
        session_rec& s = sessions[r.session];
        r.sprev = npos;
        r.snext = s.head;
        if (s.head != npos) entries[s.head].sprev = e;
        s.head = e;
        if (s.count++ == 0) ++stats.sessions;
    }

    void unlink_session(u32 e) {
        entry& r = entries[e];
        if (r.session == npos) return;
        unindex_own(e);
        session_rec& s = sessions[r.session];
        if (r.sprev != npos)
            entries[r.sprev].snext = r.snext;
        else
            s.head = r.snext;
        if (r.snext != npos) entries[r.snext].sprev = r.sprev;
        r.sprev = r.snext = npos;
        r.session = npos;
        if (--s.count == 0) --stats.sessions;
    }

    void free_entry(u32 e) {
        entry& r = entries[e];
        if (r.leader) {
            id_index.erase(r.hash, e, id_hash_of());
            unlink_session(e);
            set_deadline(e, no_deadline);
        }
        r.st = state::free;
        r.leader = false;
        r.group_next = npos;
        ++r.gen;
        entries.release(e);
    }

    void set_deadline(u32 e, i64 d) {
        entry& r = entries[e];
        if (r.deadline != no_deadline) --live_deadlines;
        r.deadline = d;
        ++r.gen;
        if (d == no_deadline) return;
        ++live_deadlines;
        heap.push_back({d, e, r.gen});
        std::push_heap(heap.begin(), heap.end(), std::greater<>{});
        if (heap.size() > 1024 && heap.size() > 4 * live_deadlines) compact_heap();
    }

    bool heap_item_live(const heap_item& h) const {
        const entry& r = entries[h.entry];
        return r.st != state::free && r.gen == h.gen && r.deadline == h.deadline;
    }

    void compact_heap() {
        std::erase_if(heap, [&](const heap_item& h) { return !heap_item_live(h); });
        std::make_heap(heap.begin(), heap.end(), std::greater<>{});
    }

    void drop_stale_top() {
        while (!heap.empty() && !heap_item_live(heap.front())) {
            std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
            heap.pop_back();
        }
    }

    void enqueue(u32 e) {
        entry& r = entries[e];
        key_rec& k = keys[r.key];
        r.seq = k.q_tail != npos ? entries[k.q_tail].seq + 1 : 0;
        r.kprev = k.q_tail;
        r.knext = npos;
        if (k.q_tail != npos)
            entries[k.q_tail].knext = e;
        else
            k.q_head = e;
        k.q_tail = e;
        ++k.waiters;
        ++stats.waiters;
    }

    void dequeue(u32 e) {
        entry& r = entries[e];
        key_rec& k = keys[r.key];
        if (k.q_head == e) pending.push_back(r.key);
        if (r.kprev != npos)
            entries[r.kprev].knext = r.knext;
        else
            k.q_head = r.knext;
        if (r.knext != npos)
            entries[r.knext].kprev = r.kprev;
        else
            k.q_tail = r.kprev;
        r.kprev = r.knext = npos;
        --k.waiters;
        --stats.waiters;
        touched.push_back(r.key);
    }

    void add_holder(u32 e) {
        entry& r = entries[e];
        key_rec& k = keys[r.key];
        r.kprev = npos;
        r.knext = k.hold_head;
        if (k.hold_head != npos) entries[k.hold_head].kprev = e;
        k.hold_head = e;
        ++k.holders;
        k.holders_shared = r.mode == lock_mode::shared;
        ++stats.holders;
        if (r.leader) index_own(e);
    }

    void remove_holder(u32 e) {
        unindex_own(e);
        entry& r = entries[e];
        key_rec& k = keys[r.key];
        if (r.kprev != npos)
            entries[r.kprev].knext = r.knext;
        else
            k.hold_head = r.knext;
        if (r.knext != npos) entries[r.knext].kprev = r.kprev;
        r.kprev = r.knext = npos;
        --k.holders;
        --stats.holders;
        pending.push_back(r.key);
        touched.push_back(r.key);
    }

    static bool admissible(const key_rec& k, lock_mode m) noexcept {
        if (k.holders == 0) return true;
        if (k.holder_mode() != m) return false;
        if (m == lock_mode::shared && !k.max_explicit) return true;
        return k.holders < k.max;
    }

    std::uint32_t readers(const key_rec& k) const noexcept { return k.holders_shared ? k.holders : 0; }

    // Makes sure `n` more tokens may be handed out, asking the sink to reserve when they pass the
    // ceiling. Callers ask before they change anything, so a failure leaves the table as it was.
    bool have_tokens(std::uint64_t n) {
        if (stalled) return false;
        if (token + n <= ceiling) return true;
        return reserve(token + n);
    }

    bool reserve(fencing_token needed) {
        fencing_token got = 0;
        if (needed <= max_fencing_token) {
            try {
                got = sink.reserve_tokens(needed);
            } catch (...) {
                got = 0;
            }
        }
        if (got < needed) {
            stalled = true;
            return false;
        }
        ceiling = std::min(got, max_fencing_token);
        return true;
    }

    fencing_token next_token() {
        // have_tokens() ran first; anything else is a bug that must not hand out a token twice.
        if (token + 1 > ceiling) throw std::logic_error("fencing token handed out without a reservation");
        return ++token;
    }

    std::optional<time_point> expiry_of(u32 leader) const {
        i64 d = entries[leader].deadline;
        if (d == no_deadline) return std::nullopt;
        return from_rep(d);
    }

    void emit(effect& ef) { sink.on_effect(ef); }

    // Emitted just before the change it reports is applied: a waiting request that leaves is not
    // counted in `waiters`, and only holds carry a token.
    void emit_event(event_kind kind, const entry& r) {
        if (!events) return;
        const key_rec& k = keys[r.key];
        effect ef;
        ef.kind = effect_kind::event;
        ef.event = kind;
        ef.session = session_of(r);
        ef.id = r.id;
        ef.key = k.name;
        ef.token = r.st == state::holding ? r.aux : 0;
        if (r.st == state::holding) ef.since = from_rep(r.since);
        bool leaving = r.st == state::waiting && (kind == event_kind::cancelled || kind == event_kind::timeout);
        ef.waiters = k.waiters - (leaving ? 1 : 0);
        ef.readers = readers(k);
        emit(ef);
    }

    // Turns entry e (queued or new) into a hold. For a leader, ttl_ms gives the lease.
    void make_holder(u32 e, i64 now) {
        entry& r = entries[e];
        std::uint64_t ttl = r.aux;
        last_wait = 0;
        if (r.st == state::waiting && (r.kprev != npos || keys[r.key].q_head == e)) {
            dequeue(e);
            last_wait = now - r.since;  // while queued, `since` holds the enqueue time
        }
        r.st = state::holding;
        r.aux = next_token();
        keys[r.key].last_token = r.aux;
        r.since = now;
        add_holder(e);
        ++stats.grants;
        if (r.leader) set_deadline(e, ttl == ttl_forever ? no_deadline : add_ms(now, ttl));
    }

    void grant_single(u32 e, i64 now) {
        make_holder(e, now);
        const entry& r = entries[e];
        const key_rec& k = keys[r.key];
        effect ef;
        ef.kind = effect_kind::granted;
        ef.session = session_of(r);
        ef.id = r.id;
        ef.key = k.name;
        ef.token = r.aux;
        ef.waiters = k.waiters;
        ef.readers = readers(k);
        ef.expires = expiry_of(e);
        ef.waited = time_point::duration{last_wait};
        emit(ef);
        emit_event(event_kind::granted, r);
    }

    // Members of a group ring starting at its leader are kept in key-name order.
    template <class F>
    void for_each_member(u32 leader, F&& f) {
        u32 e = leader;
        do {
            u32 next = entries[e].group_next;
            f(e);
            e = next;
        } while (e != leader && e != npos);
    }

    bool group_ready(u32 leader) {
        bool ready = true;
        for_each_member(leader, [&](u32 m) {
            const key_rec& k = keys[entries[m].key];
            if (entries[m].st == state::waiting && (k.q_head != m || !admissible(k, lock_mode::exclusive)))
                ready = false;
        });
        return ready;
    }

    void fill_group_keys(u32 leader, bool with_tokens) {
        key_tokens.clear();
        for_each_member(leader, [&](u32 m) {
            key_tokens.push_back({keys[entries[m].key].name, with_tokens ? entries[m].aux : 0});
        });
    }

    void grant_group(u32 leader, i64 now) {
        std::uint64_t ttl = entries[leader].aux;
        for_each_member(leader, [&](u32 m) {
            entries[m].aux = ttl;
            entries[m].leader = false;  // only the leader sets the lease
            make_holder(m, now);
        });
        entries[leader].leader = true;
        set_deadline(leader, ttl == ttl_forever ? no_deadline : add_ms(now, ttl));
        fill_group_keys(leader, true);
        const entry& r = entries[leader];
        effect ef;
        ef.kind = effect_kind::granted;
        ef.multi = true;
        ef.session = session_of(r);
        ef.id = r.id;
        ef.keys = key_tokens;
        ef.token = key_tokens.back().token;
        ef.expires = expiry_of(leader);
        ef.waited = time_point::duration{last_wait};
        emit(ef);
        if (events) for_each_member(leader, [&](u32 m) { emit_event(event_kind::granted, entries[m]); });
    }

    u32 leader_of(u32 e) const {
        while (!entries[e].leader) e = entries[e].group_next;
        return e;
    }

    u32 group_size(u32 leader) {
        u32 n = 0;
        for_each_member(leader, [&](u32) { ++n; });
        return n;
    }

    void grant_loop(u32 k, i64 now) {
        while (keys[k].live && keys[k].q_head != npos) {
            u32 e = keys[k].q_head;
            if (entries[e].group_next != npos) {
                u32 leader = leader_of(e);
                if (!group_ready(leader)) break;
                if (!have_tokens(group_size(leader))) {
                    note_stalled(k);
                    break;
                }
                grant_group(leader, now);
            } else {
                if (!admissible(keys[k], entries[e].mode)) break;
                if (!have_tokens(1)) {
                    note_stalled(k);
                    break;
                }
                grant_single(e, now);
            }
        }
    }

    void note_stalled(u32 k) {
        stalled_keys.push_back(k);
        if (stalled_keys.size() > 2 * stats.keys + 64) {  // a long stall with churn repeats keys
            std::sort(stalled_keys.begin(), stalled_keys.end());
            stalled_keys.erase(std::unique(stalled_keys.begin(), stalled_keys.end()), stalled_keys.end());
        }
    }

    bool resume_grants(i64 now) {
        if (!stalled) return true;
        stalled = false;
        if (!reserve(token + 1)) return false;
        pending.insert(pending.end(), stalled_keys.begin(), stalled_keys.end());
        stalled_keys.clear();
        finish(now);
        return !stalled;
    }

    // Hands freed slots to waiters, then drops keys that have nothing left.
    void drain_pending(i64 now) {
        while (!pending.empty()) {
            u32 k = pending.back();
            pending.pop_back();
            grant_loop(k, now);
        }
    }

    void finish(i64 now) {
        drain_pending(now);
        for (u32 k : touched) {
            key_rec& r = keys[k];
            if (!r.live || r.holders != 0 || r.waiters != 0) continue;
            key_index.erase(hash_text(r.name), k, key_hash_of());
            r.live = false;
            keys.release(k);
            --stats.keys;
        }
        touched.clear();
    }

    // Removes a waiting request (single or group) without telling its owner.
    void withdraw(u32 leader) {
        if (entries[leader].group_next == npos) {
            dequeue(leader);
            free_entry(leader);
            return;
        }
        u32 e = leader;
        do {
            u32 next = entries[e].group_next;
            if (entries[e].st == state::waiting) dequeue(e);
            if (e != leader) free_entry(e);
            e = next;
        } while (e != leader);
        free_entry(leader);
    }

    // Ends a hold (single or the whole group).
    void end_hold(u32 leader) {
        if (entries[leader].group_next == npos) {
            remove_holder(leader);
            free_entry(leader);
            ++stats.releases;
            return;
        }
        u32 e = leader;
        do {
            u32 next = entries[e].group_next;
            remove_holder(e);
            ++stats.releases;
            if (e != leader) free_entry(e);
            e = next;
        } while (e != leader);
        free_entry(leader);
    }

    // The effect telling a request's owner that it ended: lock_lost for a hold, rejected for a waiter.
    effect ending(u32 leader, effect_kind kind, std::string_view key_name) {
        const entry& r = entries[leader];
        effect ef;
        ef.kind = kind;
        ef.session = session_of(r);
        ef.id = r.id;
        ef.key = key_name;
        if (kind == effect_kind::lock_lost) ef.token = r.aux;
        if (r.group_next != npos) {
            ef.multi = true;
            fill_group_keys(leader, kind == effect_kind::lock_lost);
            ef.keys = key_tokens;
        }
        return ef;
    }

    void notify_lost(u32 leader, lost_reason why, std::string_view on_key) {
        effect ef = ending(leader, effect_kind::lock_lost, on_key);
        ef.reason = why;
        emit(ef);
    }

    void notify_rejected(u32 leader, errc code, std::string_view key_name) {
        effect ef = ending(leader, effect_kind::rejected, key_name);
        ef.code = code;
        emit(ef);
    }

    void emit_member_events(u32 leader, event_kind kind) {
        if (!events) return;
        if (entries[leader].group_next == npos) return emit_event(kind, entries[leader]);
        for_each_member(leader, [&](u32 m) { emit_event(kind, entries[m]); });
    }

    effect_kind reject_now(session_id s, std::string_view id, std::string_view key, errc code, bool multi) {
        effect ef;
        ef.kind = effect_kind::rejected;
        ef.code = code;
        ef.session = s;
        ef.id = id;
        ef.key = key;
        ef.multi = multi;
        ++stats.rejected;
        emit(ef);
        return effect_kind::rejected;
    }

    // O(1): the distance from the queue head in enqueue order. Exact while nobody ahead left the
    // queue out of turn (cancel, timeout, disconnect); otherwise an upper bound. Never below 1,
    // never above the queue length.
    u32 queue_position(u32 e) const {
        const key_rec& k = keys[entries[e].key];
        u32 pos = entries[e].seq - entries[k.q_head].seq + 1;
        return std::clamp<u32>(pos, 1, k.waiters);
    }

    // The same request id again (a live-mutex retry): tell the current state, change nothing.
    effect_kind resend(u32 e, bool notice = true) {
        const entry& r = entries[e];
        const key_rec& k = keys[r.key];
        effect ef;
        ef.repeat = true;
        ef.notice = notice;
        ef.session = session_of(r);
        ef.id = r.id;
        ef.key = k.name;
        ef.waiters = k.waiters;
        ef.readers = readers(k);
        if (r.group_next != npos) {
            ef.multi = true;
            fill_group_keys(e, r.st == state::holding);
            ef.keys = key_tokens;
        }
        if (r.st == state::holding) {
            ef.kind = effect_kind::granted;
            ef.token = r.group_next != npos ? key_tokens.back().token : r.aux;
            ef.expires = expiry_of(e);
        } else {
            ef.kind = effect_kind::queued;
            u32 at = e;
            if (r.group_next != npos) {
                // Report the first key that holds the request back, as the first notice did.
                bool found = false;
                for_each_member(e, [&](u32 m) {
                    const key_rec& mk = keys[entries[m].key];
                    if (!found && (mk.q_head != m || !admissible(mk, lock_mode::exclusive))) {
                        at = m;
                        found = true;
                    }
                });
                const key_rec& ck = keys[entries[at].key];
                ef.key = ck.name;
                ef.waiters = ck.waiters;
                ef.readers = readers(ck);
            }
            ef.position = queue_position(at);
        }
        emit(ef);
        return ef.kind;
    }

    u32 member_on(u32 leader, u32 key) {
        u32 found = leader;
        for_each_member(leader, [&](u32 m) {
            if (entries[m].key == key) found = m;
        });
        return found;
    }

    static std::uint64_t ttl_ms(const std::optional<std::chrono::milliseconds>& ttl, std::chrono::milliseconds dflt) {
        auto t = ttl.value_or(dflt);
        if (t == no_expiry) return ttl_forever;
        if (t.count() <= 0) t = dflt;
        if (t == no_expiry) return ttl_forever;
        return static_cast<std::uint64_t>(t.count());
    }

    effect_kind acquire(const acquire_request& rq, time_point tnow) {
        i64 now = rep(tnow);
        if ((rq.max && (*rq.max == 0 || *rq.max > max_limit)) || rq.key.empty() || rq.id.empty())
            return reject_now(rq.session, rq.id, rq.key, errc::bad_request, false);
        u32 h = hash_text(rq.id);
        if (u32 dup = find_id(rq.id, h); dup != npos) {
            const entry& d = entries[dup];
            if (d.group_next == npos && session_of(d) == rq.session && keys[d.key].name == rq.key)
                return resend(dup, rq.queued_notice);
            return reject_now(rq.session, rq.id, rq.key, errc::duplicate_request, false);
        }
        if (stalled) return reject_now(rq.session, rq.id, rq.key, errc::unavailable, false);
        if (over_limits(rq.session, std::span(&rq.key, 1)))
            return reject_now(rq.session, rq.id, rq.key, errc::limit_reached, false);
        std::optional<u32> max = rq.max;
        if (auto pinned = pin_of(rq.key)) {
            if (max && *max != *pinned) return reject_now(rq.session, rq.id, rq.key, errc::max_pinned, false);
            max = pinned;
        }
        u32 k = get_or_create_key(rq.key, max);
        key_rec& kr = keys[k];
        drain_pending(now);  // a raised max admits earlier waiters before this request
        bool free_now = kr.waiters == 0 && admissible(kr, rq.mode);
        effect_kind result;
        if (stalled || (free_now && !have_tokens(1))) {
            touched.push_back(k);
            result = reject_now(rq.session, rq.id, rq.key, errc::unavailable, false);
        } else if (!free_now && !rq.wait) {
            ++stats.refused;
            effect ef;
            ef.kind = effect_kind::refused;
            ef.session = rq.session;
            ef.id = rq.id;
            ef.key = kr.name;
            ef.waiters = kr.waiters;
            ef.readers = readers(kr);
            emit(ef);
            result = effect_kind::refused;
        } else if (!free_now && stats.waiters >= config.max_waiters) {
            touched.push_back(k);
            result = reject_now(rq.session, rq.id, rq.key, errc::too_many_waiters, false);
        } else {
            u32 e = new_entry(rq.id, h, k, session_slot(rq.session), rq.mode, rq.keep_on_exit);
            entries[e].aux = ttl_ms(rq.ttl, config.default_ttl);
            link_owner(e);
            if (free_now) {
                grant_single(e, now);
                result = effect_kind::granted;
            } else {
                enqueue(e);
                entries[e].since = now;
                ++stats.queued;
                if (rq.wait_deadline) set_deadline(e, rep(*rq.wait_deadline));
                effect ef;
                ef.kind = effect_kind::queued;
                ef.session = rq.session;
                ef.id = rq.id;
                ef.key = kr.name;
                ef.waiters = kr.waiters;
                ef.readers = readers(kr);
                ef.position = kr.waiters;
                ef.notice = rq.queued_notice;
                emit(ef);
                emit_event(event_kind::queued, entries[e]);
                result = effect_kind::queued;
            }
        }
        finish(now);
        return result;
    }

    effect_kind acquire_many(const acquire_many_request& rq, time_point tnow) {
        i64 now = rep(tnow);
        sorted_keys.assign(rq.keys.begin(), rq.keys.end());
        std::sort(sorted_keys.begin(), sorted_keys.end());
        sorted_keys.erase(std::unique(sorted_keys.begin(), sorted_keys.end()), sorted_keys.end());
        bool empty_key =
            std::any_of(sorted_keys.begin(), sorted_keys.end(), [](std::string_view s) { return s.empty(); });
        if (sorted_keys.empty() || empty_key || rq.id.empty())
            return reject_now(rq.session, rq.id, {}, errc::bad_request, true);
        u32 h = hash_text(rq.id);
        if (u32 dup = find_id(rq.id, h); dup != npos) {
            const entry& d = entries[dup];
            bool same = d.group_next != npos && session_of(d) == rq.session;
            if (same) {
                fill_group_keys(dup, false);
                same = key_tokens.size() == sorted_keys.size() &&
                       std::equal(key_tokens.begin(), key_tokens.end(), sorted_keys.begin(),
                                  [](const key_token& a, std::string_view b) { return a.key == b; });
            }
            if (same) return resend(dup);
            return reject_now(rq.session, rq.id, {}, errc::duplicate_request, true);
        }
        if (stalled) return reject_now(rq.session, rq.id, {}, errc::unavailable, true);
        if (over_limits(rq.session, sorted_keys)) return reject_now(rq.session, rq.id, {}, errc::limit_reached, true);
        group_keys.clear();
        u32 contended = npos;
        for (auto name : sorted_keys) {
            u32 k = get_or_create_key(name, pin_of(name));
            group_keys.push_back(k);
            const key_rec& kr = keys[k];
            if (contended == npos && !(kr.waiters == 0 && admissible(kr, lock_mode::exclusive))) contended = k;
        }
        effect_kind result;
        if (contended == npos && !have_tokens(group_keys.size())) {
            for (u32 k : group_keys) touched.push_back(k);
            result = reject_now(rq.session, rq.id, {}, errc::unavailable, true);
            finish(now);
            return result;
        }
        if (contended != npos && (!rq.wait || stats.waiters + group_keys.size() > config.max_waiters)) {
            for (u32 k : group_keys) touched.push_back(k);
            if (!rq.wait) {
                ++stats.refused;
                key_tokens.clear();
                for (auto name : sorted_keys) key_tokens.push_back({name, 0});
                effect ef;
                ef.kind = effect_kind::refused;
                ef.multi = true;
                ef.session = rq.session;
                ef.id = rq.id;
                ef.key = keys[contended].name;
                ef.keys = key_tokens;
                ef.waiters = keys[contended].waiters;
                emit(ef);
                result = effect_kind::refused;
            } else {
                result = reject_now(rq.session, rq.id, keys[contended].name, errc::too_many_waiters, true);
            }
            finish(now);
            return result;
        }
        u32 sess = session_slot(rq.session);
        u32 leader = npos, prev = npos;
        for (u32 k : group_keys) {
            u32 e = new_entry(rq.id, h, k, sess, lock_mode::exclusive, rq.keep_on_exit);
            entries[e].leader = leader == npos;
            if (leader == npos)
                leader = e;
            else
                entries[prev].group_next = e;
            prev = e;
        }
        entries[prev].group_next = leader;
        entries[leader].aux = ttl_ms(rq.ttl, config.default_ttl);
        link_owner(leader);
        if (contended == npos) {
            grant_group(leader, now);
            result = effect_kind::granted;
        } else {
            for_each_member(leader, [&](u32 m) {
                enqueue(m);
                entries[m].since = now;
            });
            ++stats.queued;
            if (rq.wait_deadline) set_deadline(leader, rep(*rq.wait_deadline));
            fill_group_keys(leader, false);
            effect ef;
            ef.kind = effect_kind::queued;
            ef.multi = true;
            ef.session = rq.session;
            ef.id = rq.id;
            ef.key = keys[contended].name;
            ef.keys = key_tokens;
            ef.waiters = keys[contended].waiters;
            ef.position = queue_position(member_on(leader, contended));
            emit(ef);
            if (events) for_each_member(leader, [&](u32 m) { emit_event(event_kind::queued, entries[m]); });
            result = effect_kind::queued;
        }
        finish(now);
        return result;
    }

    release_result release(std::string_view key, std::string_view id, time_point tnow, std::optional<session_id> by) {
        i64 now = rep(tnow);
        u32 e = find_id(id);
        // A multi-key lock ends only as a whole (release-many).
        if (e != npos && entries[e].group_next != npos) return {release_status::not_holder, waiters_on(key), 0};
        if (e == npos || keys[entries[e].key].name != key)
            return {release_status::already_released, waiters_on(key), 0};
        release_result out{release_status::released, 0, 1};
        const bool foreign = by && *by != session_of(entries[e]) && entries[e].session != npos;
        if (entries[e].st == state::waiting) {
            if (foreign) notify_rejected(e, errc::cancelled, key);
            emit_event(event_kind::cancelled, entries[e]);
            withdraw(e);
            ++stats.cancelled;
            out = {release_status::withdrawn, 0, 0};
        } else {
            if (foreign) notify_lost(e, lost_reason::forced, key);
            emit_event(event_kind::released, entries[e]);
            end_hold(e);
        }
        finish(now);
        out.waiters = waiters_on(key);
        return out;
    }

    u32 waiters_on(std::string_view key) const {
        u32 k = find_key(key, hash_text(key));
        return k == npos ? 0 : keys[k].waiters;
    }

    release_result force_release(std::string_view key, std::optional<std::string_view> id, time_point tnow) {
        i64 now = rep(tnow);
        u32 k = find_key(key, hash_text(key));
        if (id) {
            u32 e = find_id(*id);
            bool holds = false;
            if (e != npos && entries[e].st == state::holding) {
                for_each_member(e, [&](u32 m) { holds = holds || keys[entries[m].key].name == key; });
            }
            if (!holds) return {release_status::not_holder, k == npos ? 0 : keys[k].waiters, 0};
            force_end(e, key);
            finish(now);
            return {release_status::released, waiters_on(key), 1};
        }
        if (k == npos || keys[k].holders == 0)
            return {release_status::already_released, k == npos ? 0 : keys[k].waiters, 0};
        u32 count = 0;
        // Ending a group hold removes its entry from this key's holder list too, so re-read the head.
        while (keys[k].hold_head != npos) {
            force_end(leader_of(keys[k].hold_head), key);
            ++count;
        }
        finish(now);
        return {release_status::released, waiters_on(key), count};
    }

    void force_end(u32 leader, std::string_view key) {
        notify_lost(leader, lost_reason::forced, key);
        emit_member_events(leader, event_kind::forced);
        ++stats.forced;
        end_hold(leader);
    }

    release_many_result release_many(std::string_view id, time_point tnow, std::optional<session_id> by) {
        i64 now = rep(tnow);
        u32 e = find_id(id);
        if (e == npos || entries[e].group_next == npos) return {errc::not_found, {}};
        release_many_result out;
        fill_group_keys(e, false);
        for (auto& kt : key_tokens) out.keys.emplace_back(kt.key);
        const bool foreign = by && *by != session_of(entries[e]) && entries[e].session != npos;
        if (entries[e].st == state::waiting) {
            if (foreign) notify_rejected(e, errc::cancelled, {});
            emit_member_events(e, event_kind::cancelled);
            withdraw(e);
            ++stats.cancelled;
        } else {
            if (foreign) notify_lost(e, lost_reason::forced, {});
            emit_member_events(e, event_kind::released);
            end_hold(e);
        }
        finish(now);
        return out;
    }

    release_result release_own(session_id s, std::string_view key, time_point tnow) {
        u32 k = find_key(key, hash_text(key));
        auto slot = session_slots.find(s);
        if (k == npos || slot == session_slots.end())
            return {release_status::already_released, k == npos ? 0 : keys[k].waiters, 0};
        u32 e = find_own(slot->second, k);
        if (e == npos) return {release_status::already_released, keys[k].waiters, 0};
        emit_event(event_kind::released, entries[e]);
        end_hold(e);
        finish(rep(tnow));
        return {release_status::released, waiters_on(key), 1};
    }

    bool cancel(session_id s, std::string_view id, time_point tnow) {
        u32 e = find_id(id);
        if (e == npos || session_of(entries[e]) != s || entries[e].st != state::waiting) return false;
        emit_member_events(e, event_kind::cancelled);
        withdraw(e);
        ++stats.cancelled;
        finish(rep(tnow));
        return true;
    }

    void abandon(session_id s, std::string_view id, time_point tnow) {
        u32 e = find_id(id);
        if (e == npos || session_of(entries[e]) != s) return;
        if (entries[e].st == state::waiting) {
            emit_member_events(e, event_kind::cancelled);
            withdraw(e);
            ++stats.cancelled;
        } else {
            emit_member_events(e, event_kind::released);
            end_hold(e);
        }
        finish(rep(tnow));
    }

    extend_result extend(std::string_view key, std::string_view id, std::optional<std::chrono::milliseconds> ttl,
                         time_point tnow) {
        u32 e = find_id(id);
        bool holds = false;
        if (e != npos && entries[e].st == state::holding)
            for_each_member(e, [&](u32 m) { holds = holds || keys[entries[m].key].name == key; });
        if (!holds) return {errc::not_holder, std::nullopt};
        std::uint64_t ms = ttl_ms(ttl, config.default_ttl);
        set_deadline(e, ms == ttl_forever ? no_deadline : add_ms(rep(tnow), ms));
        return {errc::ok, expiry_of(e)};
    }

    void close_session(session_id s, time_point tnow) {
        auto it = session_slots.find(s);
        if (it == session_slots.end()) return;
        u32 slot = it->second;
        // Waiters first, so that the holds released below are never handed to this session.
        for (u32 e = sessions[slot].head; e != npos;) {
            u32 next = entries[e].snext;
            if (entries[e].st == state::waiting) {
                emit_member_events(e, event_kind::cancelled);
                withdraw(e);
                ++stats.cancelled;
            }
            e = next;
        }
        for (u32 e = sessions[slot].head; e != npos;) {
            u32 next = entries[e].snext;
            if (entries[e].keep) {
                unlink_session(e);
                for_each_member(e, [&](u32 m) { entries[m].session = npos; });
            } else {
                emit_member_events(e, event_kind::released);
                end_hold(e);
            }
            e = next;
        }
        session_slots.erase(it);
        free_sessions.push_back(slot);
        finish(rep(tnow));
    }

    void expire(time_point tnow) {
        i64 now = rep(tnow);
        for (;;) {
            due.clear();
            while (!heap.empty() && heap.front().deadline <= now) {
                heap_item top = heap.front();
                std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
                heap.pop_back();
                if (heap_item_live(top)) due.push_back(top.entry);
            }
            if (due.empty()) break;
            // Every waiter whose deadline has come leaves before any slot is handed on, so a
            // lease ending at the same moment never goes to a request that has timed out.
            for (u32 e : due) {
                entry& r = entries[e];
                if (r.st != state::waiting) continue;
                ++stats.timeouts;
                notify_rejected(e, errc::timeout, keys[r.key].name);
                emit_member_events(e, event_kind::timeout);
                withdraw(e);
            }
            for (u32 e : due) {
                entry& r = entries[e];
                if (r.st != state::holding) continue;
                ++stats.expirations;
                notify_lost(e, lost_reason::ttl, keys[r.key].name);
                emit_member_events(e, event_kind::expired);
                end_hold(e);
            }
            finish(now);
        }
    }

    std::optional<time_point> next_deadline() {
        drop_stale_top();
        if (heap.empty()) return std::nullopt;
        return from_rep(heap.front().deadline);
    }

    key_info info(std::string_view name, std::size_t max_holders) const {
        key_info out;
        out.key.assign(name);
        u32 k = find_key(name, hash_text(name));
        if (k == npos) return out;
        const key_rec& kr = keys[k];
        out.exists = true;
        out.max = kr.max;
        out.holder_mode = kr.holder_mode();
        out.last_token = kr.last_token;
        out.waiters = kr.waiters;
        out.holder_count = kr.holders;
        for (u32 e = kr.hold_head; e != npos && out.holders.size() < max_holders; e = entries[e].knext) {
            const entry& r = entries[e];
            u32 leader = e;
            while (!entries[leader].leader) leader = entries[leader].group_next;
            i64 d = entries[leader].deadline;
            out.holders.push_back(holder_info{r.id, session_of(r), r.mode, r.aux,
                                              d == no_deadline ? std::nullopt : std::optional(from_rep(d)),
                                              from_rep(r.since), r.keep});
        }
        return out;
    }

    void check_invariants() const {
        auto fail = [](const char* what) { throw std::logic_error(what); };
        std::uint64_t holders = 0, waiters = 0, nkeys = 0;
        for (u32 k = 0; k < keys.size(); ++k) {
            const key_rec& kr = keys[k];
            if (!kr.live) continue;
            ++nkeys;
            if (find_key(kr.name, hash_text(kr.name)) != k) fail("key not indexed");
            if (kr.holders == 0 && kr.waiters == 0) fail("empty key kept");
            u32 n = 0;
            for (u32 e = kr.hold_head; e != npos; e = entries[e].knext) {
                const entry& r = entries[e];
                if (r.st != state::holding || r.key != k) fail("holder list corrupt");
                if (r.mode != kr.holder_mode()) fail("shared and exclusive holders together");
                ++n;
            }
            if (n != kr.holders) fail("holder count mismatch");
            n = 0;
            u32 prev = npos;
            for (u32 e = kr.q_head; e != npos; e = entries[e].knext) {
                const entry& r = entries[e];
                if (r.st != state::waiting || r.key != k || r.kprev != prev) fail("queue corrupt");
                prev = e;
                ++n;
            }
            if (prev != kr.q_tail || n != kr.waiters) fail("queue count mismatch");
            // A waiter at the head that could be granted must have been granted (unless the
            // table stopped granting for want of tokens).
            if (!stalled && kr.q_head != npos && entries[kr.q_head].group_next == npos &&
                admissible(kr, entries[kr.q_head].mode))
                fail("grantable head left waiting");
            holders += kr.holders;
            waiters += kr.waiters;
        }
        if (nkeys != stats.keys || nkeys != key_index.size()) fail("key count mismatch");
        if (holders != stats.holders || waiters != stats.waiters) fail("holder/waiter totals mismatch");
        std::uint64_t leaders = 0;
        for (u32 e = 0; e < entries.size(); ++e) {
            const entry& r = entries[e];
            if (r.st == state::free || !r.leader) continue;
            ++leaders;
            if (find_id(r.id, r.hash) != e) fail("request id not indexed");
            if (r.st == state::holding && r.aux > token) fail("token from the future");
            bool own = r.st == state::holding && r.group_next == npos && r.session != npos;
            if (own != r.owned) fail("own-hold index flag wrong");
            if (own && find_own(r.session, r.key) == npos) fail("own hold not indexed");
        }
        if (leaders != id_index.size()) fail("id index size mismatch");
        if (token > ceiling || token > max_fencing_token) fail("token beyond the reservation");
        std::uint64_t active = 0;
        for (auto& [ext, slot] : session_slots) {
            const session_rec& s = sessions[slot];
            if (s.ext != ext) fail("session slot mismatch");
            u32 n = 0;
            for (u32 e = s.head; e != npos; e = entries[e].snext) {
                if (entries[e].session != slot || !entries[e].leader) fail("session list corrupt");
                ++n;
            }
            if (n != s.count) fail("session count mismatch");
            if (n) ++active;
        }
        if (active != stats.sessions) fail("active session count mismatch");
    }
};

lock_table::lock_table(effect_sink& sink, table_config config) : impl_(std::make_unique<impl>(sink, config)) {}
lock_table::~lock_table() = default;

effect_kind lock_table::acquire(const acquire_request& r, time_point now) { return impl_->acquire(r, now); }
effect_kind lock_table::acquire_many(const acquire_many_request& r, time_point now) {
    return impl_->acquire_many(r, now);
}
release_result lock_table::release(std::string_view key, std::string_view id, time_point now,
                                   std::optional<session_id> by) {
    return impl_->release(key, id, now, by);
}
release_result lock_table::force_release(std::string_view key, std::optional<std::string_view> id, time_point now) {
    return impl_->force_release(key, id, now);
}
release_many_result lock_table::release_many(std::string_view id, time_point now, std::optional<session_id> by) {
    return impl_->release_many(id, now, by);
}
release_result lock_table::release_own(session_id s, std::string_view key, time_point now) {
    return impl_->release_own(s, key, now);
}
bool lock_table::grants_stalled() const noexcept { return impl_->stalled; }
bool lock_table::resume_grants(time_point now) { return impl_->resume_grants(rep(now)); }
bool lock_table::cancel(session_id s, std::string_view id, time_point now) { return impl_->cancel(s, id, now); }
void lock_table::abandon(session_id s, std::string_view id, time_point now) { impl_->abandon(s, id, now); }
extend_result lock_table::extend(std::string_view key, std::string_view id,
                                 std::optional<std::chrono::milliseconds> ttl, time_point now) {
    return impl_->extend(key, id, ttl, now);
}
void lock_table::close_session(session_id s, time_point now) { impl_->close_session(s, now); }
void lock_table::expire(time_point now) { impl_->expire(now); }
std::optional<time_point> lock_table::next_deadline() { return impl_->next_deadline(); }
void lock_table::set_events(bool enabled) noexcept { impl_->events = enabled; }

void lock_table::set_pin(std::string_view prefix, std::optional<std::uint32_t> max) {
    auto& pins = impl_->config.pins;
    std::erase_if(pins, [&](const key_pin& p) { return p.prefix == prefix; });
    if (max) pins.push_back({std::string(prefix), *max});
    impl_->sort_pins();
}
const table_config& lock_table::config() const noexcept { return impl_->config; }

std::uint32_t lock_table::session_requests(session_id session) const noexcept {
    auto it = impl_->session_slots.find(session);
    return it == impl_->session_slots.end() ? 0 : impl_->sessions[it->second].count;
}

std::vector<std::string> lock_table::list_keys() const {
    std::vector<std::string> out;
    out.reserve(impl_->stats.keys);
    for (u32 k = 0; k < impl_->keys.size(); ++k)
        if (impl_->keys[k].live) out.push_back(impl_->keys[k].name);
    return out;
}
key_info lock_table::info(std::string_view key, std::size_t max_holders) const { return impl_->info(key, max_holders); }
key_page lock_table::list_keys(std::uint64_t cursor, std::size_t limit) const {
    key_page out;
    const u32 end = impl_->keys.size();
    u32 k = static_cast<u32>(std::min<std::uint64_t>(cursor, end));
    for (; k < end && out.keys.size() < limit; ++k)
        if (impl_->keys[k].live) out.keys.push_back(impl_->keys[k].name);
    if (k < end) out.next = k;
    return out;
}
table_counters lock_table::counters() const noexcept { return impl_->stats; }
std::vector<contended_key> lock_table::top_contended(std::size_t n) const {
    std::vector<contended_key> out;
    for (u32 k = 0; k < impl_->keys.size(); ++k) {
        const key_rec& kr = impl_->keys[k];
        if (kr.live && kr.waiters > 0) out.push_back({kr.name, kr.waiters, kr.holders});
    }
    auto by_waiters = [](const contended_key& a, const contended_key& b) {
        return a.waiters != b.waiters ? a.waiters > b.waiters : a.key < b.key;
    };
    if (out.size() > n) {
        std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), by_waiters);
        out.resize(n);
    } else {
        std::sort(out.begin(), out.end(), by_waiters);
    }
    return out;
}
fencing_token lock_table::last_token() const noexcept { return impl_->token; }
void lock_table::check_invariants() const { impl_->check_invariants(); }

}  // namespace lmx::core
