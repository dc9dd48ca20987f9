// The lock table: the input is a table configuration and then a sequence of operations, one byte
// per choice (op, session, id, key, ttl, ...), so seeds are easy to write by hand. Small id, key
// and session alphabets make requests collide, repeat and contend.
//
// After every step: check_invariants() (a std::logic_error aborts), and, from the public API,
// counters that agree with list_keys()/info(), grants == releases + holders, last_token() equal
// to the highest token granted, and no token handed out beyond what the sink reserved. Per
// operation: acquire()'s result is the outcome it emitted; grants expire after now; a released,
// forced or closed-session hold is gone from info(); extend() succeeds exactly for a holder;
// after expire(now), next_deadline() is later than now.
//
// The table's API grows while this target exists (release_many with `by`, release_own, token
// reservations that may fail and resume_grants); `apply` is the one place that calls it, and
// uses what the header offers.

#include "fuzz_support.hpp"

#include <lmx/core/lock_table.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace lmx::core;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

// Narrow alphabets make requests collide and contend; wide ones (chosen per input) grow the
// table's indexes past their first size, with probe chains and deletions that wrap around.
struct alphabet {
    unsigned ids = 8;
    unsigned keys = 4;
    unsigned sessions = 3;
};

const std::array<std::string, 64>& id_names() {
    static const auto names = [] {
        std::array<std::string, 64> a;
        for (std::size_t i = 0; i < a.size(); ++i) a[i] = "r" + std::to_string(i);
        return a;
    }();
    return names;
}

const std::array<std::string, 16>& key_names() {
    static const auto names = [] {
        std::array<std::string, 16> a;
        for (std::size_t i = 0; i < a.size(); ++i) a[i] = std::string(1, static_cast<char>('a' + i));
        return a;
    }();
    return names;
}

// One byte per choice; past the end every choice is 0.
class op_input {
public:
    op_input(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}
    bool done() const noexcept { return p_ == end_; }
    unsigned byte() noexcept { return p_ != end_ ? *p_++ : 0u; }
    unsigned pick(unsigned n) noexcept { return byte() % n; }
    bool flag() noexcept { return (byte() & 1u) != 0; }

    std::string_view id() { return id_names()[pick(names.ids)]; }
    std::string_view key() { return key_names()[pick(names.keys)]; }
    session_id session() { return 1 + pick(names.sessions); }

    alphabet names{};

private:
    const std::uint8_t* p_;
    const std::uint8_t* end_;
};

// Copies nothing: it checks each effect while its views are alive and keeps a few numbers.
class checking_sink final : public effect_sink {
public:
    void on_effect(const effect& e) override {
        // Reading the views is what lets ASan see a dangling one.
        volatile std::size_t sink_hash = 0;
        for (char c : e.id) sink_hash = sink_hash + static_cast<unsigned char>(c);
        for (char c : e.key) sink_hash = sink_hash + static_cast<unsigned char>(c);
        for (const auto& k : e.keys)
            for (char c : k.key) sink_hash = sink_hash + static_cast<unsigned char>(c);

        if (e.kind == effect_kind::event) return;
        if (e.kind != effect_kind::lock_lost) LMX_FUZZ_CHECK(e.session != 0);
        if (e.multi && e.kind != effect_kind::rejected) LMX_FUZZ_CHECK(!e.keys.empty());
        if (e.kind == effect_kind::queued) LMX_FUZZ_CHECK(e.position >= 1 && e.position <= e.waiters);
        if (e.kind == effect_kind::granted && !e.repeat) {
            LMX_FUZZ_CHECK(!e.expires || *e.expires > now);
            const fencing_token floor = highest;
            auto fresh = [&](fencing_token t) {
                LMX_FUZZ_CHECK(t > floor);
                LMX_FUZZ_CHECK(t <= reserved);
                highest = std::max(highest, t);
            };
            if (e.multi) {
                for (const auto& k : e.keys) fresh(k.token);
            } else {
                fresh(e.token);
            }
        }
        if (e.session == expect_session && e.id == expect_id) seen |= 1u << static_cast<unsigned>(e.kind);
    }

    // noexcept: the table may make this hook non-throwing; a stricter override fits both.
    fencing_token reserve_tokens(fencing_token needed) noexcept override {
        if (fail_next) {
            fail_next = false;
            return needed - 1;
        }
        reserved = std::max(reserved, needed + chunk);
        return needed + chunk;
    }

    time_point now{};
    fencing_token highest = 0;   // highest token granted so far (starts at the seed)
    fencing_token reserved = 0;  // highest ceiling the sink agreed to
    fencing_token chunk = 0;     // tokens reserved beyond the asked-for ones
    bool fail_next = false;
    session_id expect_session = 0;
    std::string_view expect_id{};
    unsigned seen = 0;  // effect kinds emitted for (expect_session, expect_id)
};

struct state {
    checking_sink& sink;
    time_point now;
};

// The holds on `key` of request `id`, or of session `s`.
std::size_t holds_of(const lock_table& table, std::string_view key, std::string_view id) {
    const auto holders = table.info(key).holders;
    return static_cast<std::size_t>(
        std::count_if(holders.begin(), holders.end(), [&](const auto& h) { return h.id == id; }));
}
std::size_t holds_of(const lock_table& table, std::string_view key, session_id s) {
    const auto holders = table.info(key).holders;
    return static_cast<std::size_t>(
        std::count_if(holders.begin(), holders.end(), [&](const auto& h) { return h.session == s; }));
}

std::optional<milliseconds> ttl(op_input& in) {
    switch (in.pick(8)) {
        case 0: return std::nullopt;
        case 1: return no_expiry;
        case 2: return 0ms;
        case 3: return milliseconds{std::int64_t{1} << 40};
        default: return milliseconds{1 + in.pick(60)};
    }
}

std::optional<std::uint32_t> max_of(op_input& in) {
    switch (in.pick(8)) {
        case 0:
        case 1:
        case 2: return std::nullopt;
        case 6: return 0u;        // refused as bad input
        case 7: return 1u << 29;  // over the table's limit
        default: return in.pick(3) + 1;
    }
}

std::optional<time_point> deadline(op_input& in, time_point now) {
    if (in.pick(3) == 0) return std::nullopt;
    return now + milliseconds{1 + in.pick(60)};
}

void check_state(const lock_table& table, const checking_sink& sink, fencing_token seed) {
    table.check_invariants();
    const table_counters c = table.counters();
    LMX_FUZZ_CHECK(c.grants == c.releases + c.holders);
    LMX_FUZZ_CHECK(table.last_token() == std::max(seed, sink.highest));
    std::uint64_t holders = 0, waiters = 0;
    const auto names = table.list_keys();
    LMX_FUZZ_CHECK(names.size() == c.keys);
    for (const auto& name : names) {
        const key_info info = table.info(name);
        LMX_FUZZ_CHECK(info.exists);
        LMX_FUZZ_CHECK(!info.holders.empty() || info.waiters > 0);
        LMX_FUZZ_CHECK(info.last_token <= table.last_token());
        for (const auto& h : info.holders) {
            LMX_FUZZ_CHECK(h.mode == info.holder_mode);
            LMX_FUZZ_CHECK(h.session != 0 || h.keep_on_exit);
            LMX_FUZZ_CHECK(h.token <= info.last_token);
        }
        holders += info.holders.size();
        waiters += info.waiters;
    }
    LMX_FUZZ_CHECK(holders == c.holders);
    LMX_FUZZ_CHECK(waiters == c.waiters);
    const auto top = table.top_contended(2);
    LMX_FUZZ_CHECK(top.size() <= 2);
    for (const auto& k : top) LMX_FUZZ_CHECK(k.waiters > 0);
}

// Decodes one operation and applies it: the only place that calls the table.
template <class Table>
void apply(Table& table, state& st, op_input& in) {
    checking_sink& sink = st.sink;
    sink.now = st.now;
    auto expect = [&](session_id s, std::string_view id) {
        sink.expect_session = s;
        sink.expect_id = id;
        sink.seen = 0;
    };
    auto emitted = [&](effect_kind k) { return (sink.seen >> static_cast<unsigned>(k) & 1u) != 0; };
    auto by = [&]() -> std::optional<session_id> {
        if (in.flag()) return std::nullopt;
        return in.session();
    };

    switch (in.pick(16)) {
        case 0: {
            acquire_request r;
            r.session = in.session();
            r.id = in.id();
            r.key = in.key();
            r.ttl = ttl(in);
            r.max = max_of(in);
            r.wait = !in.flag();
            r.wait_deadline = deadline(in, st.now);
            r.mode = in.flag() ? lock_mode::shared : lock_mode::exclusive;
            r.keep_on_exit = in.flag();
            expect(r.session, r.id);
            const effect_kind k = table.acquire(r, st.now);
            LMX_FUZZ_CHECK(k != effect_kind::lock_lost && k != effect_kind::event);
            LMX_FUZZ_CHECK(emitted(k));
            break;
        }
        case 1: {
            std::array<std::string_view, 3> names{};
            const std::size_t n = 1 + in.pick(names.size());
            for (std::size_t i = 0; i < n; ++i) names[i] = in.key();
            acquire_many_request r;
            r.session = in.session();
            r.id = in.id();
            r.keys = std::span<const std::string_view>(names.data(), n);
            r.ttl = ttl(in);
            r.wait = !in.flag();
            r.wait_deadline = deadline(in, st.now);
            r.keep_on_exit = in.flag();
            expect(r.session, r.id);
            const effect_kind k = table.acquire_many(r, st.now);
            LMX_FUZZ_CHECK(k != effect_kind::lock_lost && k != effect_kind::event);
            LMX_FUZZ_CHECK(emitted(k));
            break;
        }
        case 2: {
            const auto key = in.key();
            const auto id = in.id();
            const auto r = table.release(key, id, st.now, by());
            if (r.status == release_status::released) {
                LMX_FUZZ_CHECK(r.released == 1);
                LMX_FUZZ_CHECK(holds_of(table, key, id) == 0);
            }
            break;
        }
        case 3: {
            const auto key = in.key();
            std::optional<std::string_view> id;
            if (in.flag()) id = in.id();
            std::vector<std::string> before;
            for (const auto& h : table.info(key).holders)
                if (!id || h.id == *id) before.push_back(h.id);
            const auto r = table.force_release(key, id, st.now);
            if (r.status == release_status::released) {
                LMX_FUZZ_CHECK(r.released == (id ? 1 : before.size()));
                for (const auto& gone : before) LMX_FUZZ_CHECK(holds_of(table, key, gone) == 0);
            } else {
                LMX_FUZZ_CHECK(r.released == 0);
            }
            break;
        }
        case 4: {
            const auto id = in.id();
            const auto asking = by();
            table.release_many(id, st.now, asking);
            break;
        }
        case 5: {
            const auto s = in.session();
            table.cancel(s, in.id(), st.now);
            break;
        }
        case 6: {
            const auto s = in.session();
            table.abandon(s, in.id(), st.now);
            break;
        }
        case 7: {
            const auto key = in.key();
            const auto id = in.id();
            const bool held = holds_of(table, key, id) > 0;
            const auto r = table.extend(key, id, ttl(in), st.now);
            LMX_FUZZ_CHECK((r.code == errc::ok) == held);
            if (r.code == errc::ok) LMX_FUZZ_CHECK(!r.expires || *r.expires > st.now);
            break;
        }
        case 8: {
            const auto s = in.session();
            table.close_session(s, st.now);
            for (const auto& key : table.list_keys()) LMX_FUZZ_CHECK(holds_of(table, key, s) == 0);
            break;
        }
        case 9:
        case 15: {
            if (in.flag()) {
                st.now += milliseconds{in.pick(64)};
            } else if (const auto next = table.next_deadline(); next && *next > st.now && *next - st.now <= 1h) {
                // Exactly at a deadline: ties between leases and wait timeouts. Not to a far one: a
                // lease of 2^40 ms ends near the end of time_point, where the clock arithmetic of
                // this harness (and of any caller) would overflow.
                st.now = *next;
            }
            table.expire(st.now);
            const auto next = table.next_deadline();
            LMX_FUZZ_CHECK(!next || *next > st.now);
            break;
        }
        case 10: st.now += milliseconds{in.pick(64)}; break;
        case 11: table.set_events(in.flag()); break;
        case 12: {
            const auto s = in.session();
            const auto key = in.key();
            const std::size_t before = holds_of(table, key, s);
            const auto r = table.release_own(s, key, st.now);
            // Not "one hold fewer": the freed slot may admit several waiters of the session.
            if (r.status == release_status::released) LMX_FUZZ_CHECK(before > 0);
            break;
        }
        case 13: {
            const bool resumed = table.resume_grants(st.now);
            LMX_FUZZ_CHECK(resumed == !table.grants_stalled());
            break;
        }
        case 14: {
            sink.fail_next = true;  // the next reservation fails: the table must stall, not break
            break;
        }
    }
    sink.expect_session = 0;
    sink.expect_id = {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    op_input in(data, size);
    table_config config;
    constexpr std::array<milliseconds, 4> default_ttls{1ms, 7ms, 40ms, 5000ms};
    config.default_ttl = default_ttls[in.pick(default_ttls.size())];
    config.max_waiters = in.flag() ? 1'000'000 : 1 + in.pick(4);
    constexpr std::array<fencing_token, 3> seeds{0, 1000, (fencing_token{1} << 53) - 4};
    config.fencing_seed = seeds[in.pick(seeds.size())];

    checking_sink sink;
    sink.chunk = in.pick(8);
    if (in.flag()) in.names = {64, 16, 8};
    sink.highest = config.fencing_seed;
    sink.reserved = config.fencing_seed;
    state st{sink, time_point{} + 1h};
    lock_table table(sink, config);

    // Long inputs would spend the time budget on one case; 512 operations reach any state the
    // small alphabets allow.
    for (int step = 0; step < 512 && !in.done(); ++step) {
        apply(table, st, in);
        check_state(table, sink, config.fencing_seed);
    }
    return 0;
}
