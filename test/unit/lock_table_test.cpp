// Unit tests of lmx::core::lock_table, written from PROTOCOL.md and the lock_table.hpp contract
// (not from the implementation). Time is a fixed base point advanced by hand; every effect is
// copied into a recording sink; check_invariants() runs after every table call made through the
// fixture.

#include <lmx/core/lock_table.hpp>

#include "effect_record.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmx::core {
// Printing for BOOST_TEST; `static` so that no other test file can clash with these.
static std::ostream& operator<<(std::ostream& o, effect_kind k) {
    const char* names[] = {"granted", "queued", "refused", "rejected", "lock_lost", "event"};
    return o << names[static_cast<int>(k)];
}
static std::ostream& operator<<(std::ostream& o, release_status s) {
    const char* names[] = {"released", "withdrawn", "already_released", "not_holder"};
    return o << names[static_cast<int>(s)];
}
static std::ostream& operator<<(std::ostream& o, errc c) { return o << "errc(" << static_cast<int>(c) << ")"; }
static std::ostream& operator<<(std::ostream& o, lock_mode m) {
    return o << (m == lock_mode::shared ? "shared" : "exclusive");
}
static std::ostream& operator<<(std::ostream& o, lost_reason r) {
    return o << (r == lost_reason::ttl ? "ttl" : "forced");
}
static std::ostream& operator<<(std::ostream& o, event_kind e) { return o << "event(" << static_cast<int>(e) << ")"; }
}  // namespace lmx::core

namespace {

using namespace lmx::core;
using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

const time_point t0 = time_point{} + 1h;

// A time as text relative to t0, so BOOST_TEST can print it ("none": no expiry).
std::string at(std::optional<time_point> t) {
    if (!t) return "none";
    return "t0+" + std::to_string((*t - t0) / 1ms) + "ms";
}

using rec = lmx::test::effect_record;

struct recording_sink : effect_sink {
    std::vector<rec> all;

    void on_effect(const effect& e) override { all.push_back(lmx::test::copy_effect(e)); }

    // The effects since the last take(), watch events left out.
    std::vector<rec> take() {
        std::vector<rec> out;
        for (auto& r : all)
            if (r.kind != effect_kind::event) out.push_back(std::move(r));
        all.clear();
        return out;
    }
    std::vector<rec> take_events() {
        std::vector<rec> out;
        for (auto& r : all)
            if (r.kind == effect_kind::event) out.push_back(std::move(r));
        all.clear();
        return out;
    }
};

// Reserves tokens in blocks of `block` and logs every call and every grant, in order.
struct reserving_sink : recording_sink {
    explicit reserving_sink(fencing_token b) : block(b) {}
    fencing_token block;
    std::vector<std::string> log;

    void on_effect(const effect& e) override {
        recording_sink::on_effect(e);
        if (e.kind != effect_kind::granted) return;
        if (e.multi) {
            for (const auto& kt : e.keys) log.push_back("grant " + std::to_string(kt.token));
        } else {
            log.push_back("grant " + std::to_string(e.token));
        }
    }
    fencing_token reserve_tokens(fencing_token needed) override {
        log.push_back("reserve " + std::to_string(needed));
        return needed + block - 1;
    }
};

acquire_request req(session_id s, std::string_view id, std::string_view key) {
    acquire_request r;
    r.session = s;
    r.id = id;
    r.key = key;
    return r;
}

acquire_request shared_req(session_id s, std::string_view id, std::string_view key) {
    acquire_request r = req(s, id, key);
    r.mode = lock_mode::shared;
    return r;
}

acquire_request max_req(session_id s, std::string_view id, std::string_view key, std::uint32_t max) {
    acquire_request r = req(s, id, key);
    r.max = max;
    return r;
}

acquire_request try_req(session_id s, std::string_view id, std::string_view key) {
    acquire_request r = req(s, id, key);
    r.wait = false;
    return r;
}

template <class Sink = recording_sink>
struct basic_fixture {
    Sink sink;
    lock_table table;
    time_point now = t0;

    template <class... SinkArgs>
    explicit basic_fixture(table_config cfg = {}, SinkArgs&&... args)
        : sink(std::forward<SinkArgs>(args)...), table(sink, cfg) {}

    effect_kind acquire(const acquire_request& r) {
        auto k = table.acquire(r, now);
        table.check_invariants();
        return k;
    }
    effect_kind acquire_many(session_id s, std::string_view id, std::vector<std::string_view> keys, bool wait = true,
                             std::optional<ms> ttl = std::nullopt, bool keep = false) {
        acquire_many_request r;
        r.session = s;
        r.id = id;
        r.keys = keys;
        r.wait = wait;
        r.ttl = ttl;
        r.keep_on_exit = keep;
        auto k = table.acquire_many(r, now);
        table.check_invariants();
        return k;
    }
    release_result release(std::string_view key, std::string_view id) {
        auto r = table.release(key, id, now);
        table.check_invariants();
        return r;
    }
    release_result force(std::string_view key, std::optional<std::string_view> id = std::nullopt) {
        auto r = table.force_release(key, id, now);
        table.check_invariants();
        return r;
    }
    release_many_result release_many(std::string_view id) {
        auto r = table.release_many(id, now);
        table.check_invariants();
        return r;
    }
    bool cancel(session_id s, std::string_view id) {
        bool r = table.cancel(s, id, now);
        table.check_invariants();
        return r;
    }
    void abandon(session_id s, std::string_view id) {
        table.abandon(s, id, now);
        table.check_invariants();
    }
    extend_result extend(std::string_view key, std::string_view id, std::optional<ms> ttl = std::nullopt) {
        auto r = table.extend(key, id, ttl, now);
        table.check_invariants();
        return r;
    }
    void close(session_id s) {
        table.close_session(s, now);
        table.check_invariants();
    }
    void expire_at(time_point t) {
        now = t;
        table.expire(now);
        table.check_invariants();
    }

    std::vector<rec> take() { return sink.take(); }

    // Holder ids of `key`, sorted.
    std::vector<std::string> holders(std::string_view key) const {
        std::vector<std::string> ids;
        for (const auto& h : table.info(key).holders) ids.push_back(h.id);
        std::sort(ids.begin(), ids.end());
        return ids;
    }
    std::uint32_t waiters(std::string_view key) const { return table.info(key).waiters; }
};

using fixture = basic_fixture<>;

using ids = std::vector<std::string>;

// The ids of the effects of one kind, in emission order.
ids ids_of(const std::vector<rec>& v, effect_kind k) {
    ids out;
    for (const auto& r : v)
        if (r.kind == k) out.push_back(r.id);
    return out;
}

const rec* find(const std::vector<rec>& v, effect_kind k, std::string_view id) {
    for (const auto& r : v)
        if (r.kind == k && r.id == id) return &r;
    return nullptr;
}

fencing_token token_of(const std::vector<rec>& v, std::string_view id) {
    const rec* r = find(v, effect_kind::granted, id);
    return r ? r->token : 0;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(lock_table_test)

// ---------------------------------------------------------------------------------------------
// Exclusive locks, FIFO, try-lock

BOOST_FIXTURE_TEST_CASE(exclusive_lock_grants_then_queues_then_hands_on_in_the_release_call, fixture) {
    BOOST_TEST(acquire(req(1, "a", "k")) == effect_kind::granted);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::granted);
    BOOST_TEST(e[0].session == 1u);
    BOOST_TEST(e[0].id == "a");
    BOOST_TEST(e[0].key == "k");
    BOOST_TEST(e[0].token == 1u);  // default seed 0: the first grant is 1
    BOOST_TEST(e[0].waiters == 0u);
    BOOST_TEST(!e[0].multi);

    BOOST_TEST(acquire(req(2, "b", "k")) == effect_kind::queued);
    e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::queued);
    BOOST_TEST(e[0].session == 2u);
    BOOST_TEST(e[0].id == "b");
    BOOST_TEST(e[0].position == 1u);
    BOOST_TEST(e[0].waiters == 1u);

    auto r = release("k", "a");
    BOOST_TEST(r.status == release_status::released);
    BOOST_TEST(r.released == 1u);
    BOOST_TEST(r.waiters == 0u);
    e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);  // the grant is pushed from inside release()
    BOOST_TEST(e[0].kind == effect_kind::granted);
    BOOST_TEST(e[0].session == 2u);
    BOOST_TEST(e[0].id == "b");
    BOOST_TEST(e[0].token == 2u);
    BOOST_TEST(holders("k") == ids{"b"});
}

BOOST_FIXTURE_TEST_CASE(waiters_are_granted_in_strict_arrival_order, fixture) {
    acquire(req(1, "h", "k"));
    for (const char* id : {"w1", "w2", "w3", "w4"}) BOOST_TEST(acquire(req(2, id, "k")) == effect_kind::queued);
    auto e = take();
    for (std::uint32_t i = 1; i < e.size(); ++i) BOOST_TEST(e[i].position == i);  // e[0] is h's grant
    BOOST_TEST(e.back().waiters == 4u);

    ids order;
    std::string cur = "h";
    for (int i = 0; i < 4; ++i) {
        release("k", cur);
        auto g = ids_of(take(), effect_kind::granted);
        BOOST_TEST_REQUIRE(g.size() == 1u);
        order.push_back(g[0]);
        cur = g[0];
    }
    BOOST_TEST(order == (ids{"w1", "w2", "w3", "w4"}));
}

BOOST_FIXTURE_TEST_CASE(try_lock_is_refused_when_held_and_never_queued, fixture) {
    acquire(req(1, "a", "k"));
    take();
    BOOST_TEST(acquire(try_req(2, "t", "k")) == effect_kind::refused);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::refused);
    BOOST_TEST(e[0].id == "t");
    BOOST_TEST(e[0].session == 2u);
    BOOST_TEST(waiters("k") == 0u);
    BOOST_TEST(table.counters().refused == 1u);
    release("k", "a");
    BOOST_TEST(ids_of(take(), effect_kind::granted).empty());  // a refused try-lock is never granted later
    BOOST_TEST(acquire(try_req(2, "t2", "k")) == effect_kind::granted);
}

BOOST_FIXTURE_TEST_CASE(try_lock_never_jumps_a_non_empty_queue, fixture) {
    // max 2 with one exclusive holder: a slot is free, but a shared waiter is in line first.
    acquire(max_req(1, "x", "k", 2));
    BOOST_TEST(acquire(shared_req(2, "s", "k")) == effect_kind::queued);
    BOOST_TEST(acquire(try_req(3, "t", "k")) == effect_kind::refused);
    BOOST_TEST(acquire(req(3, "w", "k")) == effect_kind::queued);  // waits behind s: no barging
    BOOST_TEST(holders("k") == ids{"x"});
    BOOST_TEST(waiters("k") == 2u);
}

// ---------------------------------------------------------------------------------------------
// Counting semaphores and max

BOOST_FIXTURE_TEST_CASE(semaphore_allows_max_holders, fixture) {
    for (const char* id : {"a", "b", "c"}) BOOST_TEST(acquire(max_req(1, id, "k", 3)) == effect_kind::granted);
    BOOST_TEST(acquire(max_req(2, "d", "k", 3)) == effect_kind::queued);
    BOOST_TEST(table.info("k").max == 3u);
    BOOST_TEST(table.info("k").holders.size() == 3u);
    take();
    release("k", "b");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"d"});
    BOOST_TEST(holders("k") == (ids{"a", "c", "d"}));
}

BOOST_FIXTURE_TEST_CASE(max_zero_is_rejected_as_bad_request_and_changes_nothing, fixture) {
    BOOST_TEST(acquire(max_req(1, "z", "k", 0)) == effect_kind::rejected);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::rejected);
    BOOST_TEST(e[0].code == errc::bad_request);
    BOOST_TEST(e[0].id == "z");
    BOOST_TEST(!table.info("k").exists);
    BOOST_TEST(table.list_keys().empty());
    BOOST_TEST(table.counters().rejected == 1u);

    acquire(max_req(1, "a", "k", 2));
    BOOST_TEST(acquire(max_req(1, "z2", "k", 0)) == effect_kind::rejected);
    BOOST_TEST(table.info("k").max == 2u);  // the bad request did not touch the key
    BOOST_TEST(holders("k") == ids{"a"});
    BOOST_TEST(waiters("k") == 0u);
    BOOST_TEST(table.last_token() == 1u);
}

BOOST_FIXTURE_TEST_CASE(max_is_set_by_the_creator_updated_by_a_different_max_kept_when_unset, fixture) {
    acquire(max_req(1, "a", "k", 2));
    BOOST_TEST(table.info("k").max == 2u);
    acquire(req(1, "b", "k"));  // unset: keeps 2 (and fits)
    BOOST_TEST(table.info("k").max == 2u);
    BOOST_TEST(holders("k") == (ids{"a", "b"}));
    BOOST_TEST(acquire(max_req(1, "c", "k", 3)) == effect_kind::granted);  // raised: c fits at once
    BOOST_TEST(table.info("k").max == 3u);
    acquire(req(1, "d", "k"));
    BOOST_TEST(table.info("k").max == 3u);
    BOOST_TEST(waiters("k") == 1u);
}

BOOST_FIXTURE_TEST_CASE(new_key_without_max_is_a_mutex, fixture) {
    acquire(req(1, "a", "k"));
    BOOST_TEST(table.info("k").max == 1u);
    BOOST_TEST(acquire(req(2, "b", "k")) == effect_kind::queued);
}

BOOST_FIXTURE_TEST_CASE(lowered_max_keeps_holders_but_new_grants_respect_it, fixture) {
    for (const char* id : {"a", "b", "c"}) acquire(max_req(1, id, "k", 3));
    BOOST_TEST(acquire(max_req(2, "d", "k", 1)) == effect_kind::queued);
    BOOST_TEST(table.info("k").max == 1u);
    BOOST_TEST(holders("k") == (ids{"a", "b", "c"}));  // nobody is evicted
    take();
    release("k", "a");
    BOOST_TEST(take().empty());
    release("k", "b");
    BOOST_TEST(take().empty());  // 1 holder left, max 1: still full
    release("k", "c");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"d"});
}

BOOST_FIXTURE_TEST_CASE(raising_max_grants_waiters_at_once_before_the_raiser, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    acquire(req(3, "c", "k"));
    take();
    // max 3: a, b, c hold; d (who raised it) is behind b and c and finds the key full.
    BOOST_TEST(acquire(max_req(4, "d", "k", 3)) == effect_kind::queued);
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == (ids{"b", "c"}));
    BOOST_TEST_REQUIRE(e.size() == 3u);
    BOOST_TEST(e[2].kind == effect_kind::queued);  // the raiser's own answer comes after the grants
    BOOST_TEST(e[2].id == "d");
    BOOST_TEST(e[2].position == 1u);
    BOOST_TEST(holders("k") == (ids{"a", "b", "c"}));

    // Raising further lets the raiser's waiting predecessors in first, then itself.
    BOOST_TEST(acquire(max_req(5, "e", "k", 5)) == effect_kind::granted);
    e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == (ids{"d", "e"}));
    BOOST_TEST(token_of(e, "d") < token_of(e, "e"));
}

BOOST_FIXTURE_TEST_CASE(a_try_lock_that_raises_max_is_granted_when_the_raise_makes_room, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    take();
    // max 3: b (first in line) gets in at once, then there is room for t and nobody is waiting.
    acquire_request t = max_req(3, "t", "k", 3);
    t.wait = false;
    BOOST_TEST(acquire(t) == effect_kind::granted);
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == (ids{"b", "t"}));
    BOOST_TEST(ids_of(e, effect_kind::refused).empty());
    BOOST_TEST(holders("k") == (ids{"a", "b", "t"}));
}

BOOST_FIXTURE_TEST_CASE(a_request_granted_by_its_own_max_raise_gets_no_queued_notice, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    take();
    BOOST_TEST(acquire(max_req(3, "c", "k", 3)) == effect_kind::granted);
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::queued).empty());  // c never had to wait
    BOOST_TEST(table.counters().queued == 1u);           // only b
    const rec* g = find(e, effect_kind::granted, "c");
    BOOST_TEST_REQUIRE(g);
    BOOST_TEST(g->waiters == 0u);
}

// ---------------------------------------------------------------------------------------------
// Shared / exclusive

BOOST_FIXTURE_TEST_CASE(shared_holders_coexist_unbounded_without_explicit_max, fixture) {
    for (const char* id : {"s1", "s2", "s3", "s4", "s5"})
        BOOST_TEST(acquire(shared_req(1, id, "k")) == effect_kind::granted);
    auto e = take();
    BOOST_TEST(e.back().readers == 5u);
    BOOST_TEST(table.info("k").holder_mode == lock_mode::shared);
    BOOST_TEST(table.info("k").holders.size() == 5u);
    BOOST_TEST(acquire(req(2, "x", "k")) == effect_kind::queued);
}

BOOST_FIXTURE_TEST_CASE(shared_holders_are_bounded_by_an_explicit_max, fixture) {
    acquire_request r = shared_req(1, "s1", "k");
    r.max = 2;
    BOOST_TEST(acquire(r) == effect_kind::granted);
    BOOST_TEST(acquire(shared_req(1, "s2", "k")) == effect_kind::granted);
    BOOST_TEST(acquire(shared_req(1, "s3", "k")) == effect_kind::queued);
    take();
    release("k", "s1");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"s3"});
}

BOOST_FIXTURE_TEST_CASE(exclusive_never_with_shared_even_with_free_slots, fixture) {
    acquire_request r = shared_req(1, "s1", "k");
    r.max = 5;
    acquire(r);
    BOOST_TEST(acquire(req(2, "x", "k")) == effect_kind::queued);
    BOOST_TEST(acquire(try_req(2, "t", "k")) == effect_kind::refused);
    take();
    release("k", "s1");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"x"});
    BOOST_TEST(acquire(shared_req(3, "s2", "k")) == effect_kind::queued);  // and shared never with exclusive
    BOOST_TEST(table.info("k").holder_mode == lock_mode::exclusive);
}

BOOST_FIXTURE_TEST_CASE(s_s_x_s_alternation_is_strict_fifo_without_reader_barging, fixture) {
    BOOST_TEST(acquire(shared_req(1, "s1", "k")) == effect_kind::granted);
    BOOST_TEST(acquire(shared_req(2, "s2", "k")) == effect_kind::granted);
    BOOST_TEST(acquire(req(3, "x", "k")) == effect_kind::queued);
    BOOST_TEST(acquire(shared_req(4, "s3", "k")) == effect_kind::queued);  // would fit, but x is first
    take();
    release("k", "s1");
    BOOST_TEST(take().empty());  // x waits for both readers
    release("k", "s2");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"x"});
    release("k", "x");
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"s3"});
    BOOST_TEST(e[0].readers == 1u);
}

BOOST_FIXTURE_TEST_CASE(consecutive_shared_waiters_are_granted_together_up_to_the_next_writer, fixture) {
    acquire(req(1, "x1", "k"));
    acquire(shared_req(2, "s1", "k"));
    acquire(shared_req(3, "s2", "k"));
    acquire(shared_req(4, "s3", "k"));
    acquire(req(5, "x2", "k"));
    acquire(shared_req(6, "s4", "k"));
    take();
    auto r = release("k", "x1");
    BOOST_TEST(r.waiters == 2u);
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == (ids{"s1", "s2", "s3"}));
    BOOST_TEST(token_of(e, "s1") < token_of(e, "s2"));
    BOOST_TEST(token_of(e, "s2") < token_of(e, "s3"));
    BOOST_TEST(holders("k") == (ids{"s1", "s2", "s3"}));
    BOOST_TEST(waiters("k") == 2u);
}

// ---------------------------------------------------------------------------------------------
// Release, force, withdraw

BOOST_FIXTURE_TEST_CASE(release_of_unknown_id_or_key_is_already_released, fixture) {
    BOOST_TEST(release("nokey", "a").status == release_status::already_released);
    acquire(req(1, "a", "k"));
    acquire(req(1, "b", "other"));
    take();
    BOOST_TEST(release("k", "nobody").status == release_status::already_released);
    BOOST_TEST(release("k", "b").status == release_status::already_released);  // b holds another key
    BOOST_TEST(holders("k") == ids{"a"});
    BOOST_TEST(holders("other") == ids{"b"});
    BOOST_TEST(take().empty());
}

BOOST_FIXTURE_TEST_CASE(releasing_a_waiting_id_withdraws_it, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    acquire(req(3, "c", "k"));
    take();
    auto r = release("k", "b");
    BOOST_TEST(r.status == release_status::withdrawn);
    BOOST_TEST(r.released == 0u);
    BOOST_TEST(r.waiters == 1u);
    BOOST_TEST(holders("k") == ids{"a"});
    BOOST_TEST(table.counters().cancelled == 1u);
    release("k", "a");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"c"});  // b is never granted
}

BOOST_FIXTURE_TEST_CASE(withdrawing_the_blocking_front_waiter_grants_those_behind_it, fixture) {
    // max 2, one exclusive holder: shared s cannot go, exclusive w behind it could but keeps FIFO.
    acquire(max_req(1, "x", "k", 2));
    acquire(shared_req(2, "s", "k"));
    acquire(req(3, "w", "k"));
    take();
    BOOST_TEST(cancel(2, "s"));
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"w"});  // granted within the cancel call
    BOOST_TEST(holders("k") == (ids{"w", "x"}));
}

BOOST_FIXTURE_TEST_CASE(force_release_without_id_ends_every_holder_and_hands_on, fixture) {
    for (const char* id : {"a", "b", "c"}) acquire(max_req(1, id, "k", 3));
    acquire(req(2, "w", "k"));
    take();
    auto r = force("k");
    BOOST_TEST(r.status == release_status::released);
    BOOST_TEST(r.released == 3u);
    auto e = take();
    auto lost = ids_of(e, effect_kind::lock_lost);
    std::sort(lost.begin(), lost.end());
    BOOST_TEST(lost == (ids{"a", "b", "c"}));
    for (const auto& x : e)
        if (x.kind == effect_kind::lock_lost) {
            BOOST_TEST(x.reason == lost_reason::forced);
            BOOST_TEST(x.session == 1u);
            BOOST_TEST(x.key == "k");
        }
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"w"});
    BOOST_TEST(table.counters().forced == 3u);
    BOOST_TEST(release("k", "a").status == release_status::already_released);  // late unlock is harmless
}

BOOST_FIXTURE_TEST_CASE(force_release_with_an_id_that_does_not_hold_changes_nothing, fixture) {
    acquire(max_req(1, "a", "k", 2));
    acquire(req(1, "b", "k"));
    acquire(shared_req(2, "w", "k"));
    take();
    auto r = force("k", std::string_view("nobody"));
    BOOST_TEST(r.status == release_status::not_holder);
    BOOST_TEST(r.released == 0u);
    BOOST_TEST(force("k", std::string_view("w")).status == release_status::not_holder);  // waiting is not holding
    BOOST_TEST(holders("k") == (ids{"a", "b"}));
    BOOST_TEST(waiters("k") == 1u);
    BOOST_TEST(take().empty());
    BOOST_TEST(table.counters().forced == 0u);
}

BOOST_FIXTURE_TEST_CASE(force_release_with_an_id_ends_only_that_hold, fixture) {
    acquire(max_req(1, "a", "k", 2));
    acquire(req(2, "b", "k"));
    acquire(req(3, "w", "k"));
    take();
    auto r = force("k", std::string_view("b"));
    BOOST_TEST(r.status == release_status::released);
    BOOST_TEST(r.released == 1u);
    auto e = take();
    const rec* lost = find(e, effect_kind::lock_lost, "b");
    BOOST_TEST_REQUIRE(lost);
    BOOST_TEST(lost->session == 2u);
    BOOST_TEST(lost->reason == lost_reason::forced);
    BOOST_TEST(!find(e, effect_kind::lock_lost, "a"));
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"w"});
    BOOST_TEST(holders("k") == (ids{"a", "w"}));
}

// ---------------------------------------------------------------------------------------------
// TTL leases and deadlines

BOOST_FIXTURE_TEST_CASE(default_ttl_is_5000ms_and_expiry_hands_on_in_the_same_call, fixture) {
    BOOST_TEST(table.config().default_ttl == 5000ms);
    acquire(req(1, "a", "k"));
    auto e = take();
    BOOST_TEST(at(e[0].expires) == "t0+5000ms");
    acquire(req(2, "b", "k"));
    take();
    BOOST_TEST(at(table.next_deadline()) == "t0+5000ms");

    expire_at(t0 + 4999ms);
    BOOST_TEST(take().empty());
    BOOST_TEST(holders("k") == ids{"a"});

    expire_at(t0 + 5000ms);  // due exactly at the deadline next_deadline() reported
    e = take();
    BOOST_TEST_REQUIRE(e.size() == 2u);
    BOOST_TEST(e[0].kind == effect_kind::lock_lost);
    BOOST_TEST(e[0].id == "a");
    BOOST_TEST(e[0].session == 1u);
    BOOST_TEST(e[0].reason == lost_reason::ttl);
    BOOST_TEST(e[1].kind == effect_kind::granted);
    BOOST_TEST(e[1].id == "b");
    BOOST_TEST(at(e[1].expires) == "t0+10000ms");  // the lease starts at the grant
    BOOST_TEST(table.counters().expirations == 1u);
    BOOST_TEST(at(table.next_deadline()) == "t0+10000ms");
}

BOOST_FIXTURE_TEST_CASE(configured_default_ttl_and_per_request_ttl, fixture) {
    table_config cfg;
    cfg.default_ttl = 200ms;
    recording_sink s;
    lock_table t(s, cfg);
    t.acquire(req(1, "a", "k"), t0);
    acquire_request r = req(1, "b", "k2");
    r.ttl = 50ms;
    t.acquire(r, t0);
    BOOST_TEST(at(t.info("k").holders.at(0).expires) == "t0+200ms");
    BOOST_TEST(at(t.info("k2").holders.at(0).expires) == "t0+50ms");
    BOOST_TEST(at(t.next_deadline()) == "t0+50ms");
}

BOOST_FIXTURE_TEST_CASE(no_expiry_hold_never_expires, fixture) {
    acquire_request r = req(1, "a", "k");
    r.ttl = no_expiry;
    acquire(r);
    auto e = take();
    BOOST_TEST(!e[0].expires.has_value());
    BOOST_TEST(!table.info("k").holders.at(0).expires.has_value());
    BOOST_TEST(!table.next_deadline().has_value());
    expire_at(t0 + 24h * 365 * 100);
    BOOST_TEST(take().empty());
    BOOST_TEST(holders("k") == ids{"a"});
}

BOOST_FIXTURE_TEST_CASE(a_huge_ttl_short_of_no_expiry_does_not_overflow, fixture) {
    acquire_request r = req(1, "a", "k");
    r.ttl = no_expiry - 1ms;  // UBSan checks the lease arithmetic
    BOOST_TEST(acquire(r) == effect_kind::granted);
    auto e = take();
    BOOST_TEST_REQUIRE(e.at(0).expires.has_value());
    BOOST_TEST((*e.at(0).expires > t0 + 24h * 365 * 100));
    expire_at(t0 + 24h * 365 * 100);
    BOOST_TEST(take().empty());
    BOOST_TEST(holders("k") == ids{"a"});
}

BOOST_FIXTURE_TEST_CASE(next_deadline_is_the_earliest_of_leases_and_wait_deadlines, fixture) {
    BOOST_TEST(!table.next_deadline().has_value());
    acquire_request a = req(1, "a", "k");
    a.ttl = 300ms;
    acquire(a);
    acquire_request b = req(2, "b", "k");
    b.wait_deadline = t0 + 100ms;
    acquire(b);
    acquire_request c = req(3, "c", "k2");
    c.ttl = 200ms;
    acquire(c);
    BOOST_TEST(at(table.next_deadline()) == "t0+100ms");
    BOOST_TEST(cancel(2, "b"));
    BOOST_TEST(at(table.next_deadline()) == "t0+200ms");  // b's deadline is gone
    release("k2", "c");
    BOOST_TEST(at(table.next_deadline()) == "t0+300ms");
    release("k", "a");
    BOOST_TEST(!table.next_deadline().has_value());
}

BOOST_FIXTURE_TEST_CASE(expire_at_next_deadline_always_makes_progress, fixture) {
    for (int i = 0; i < 5; ++i) {
        acquire_request r = req(1, "x", "k");
        std::string id = "r" + std::to_string(i);
        r.id = id;
        r.ttl = ms(10 * (i + 1));
        acquire(r);
    }
    int rounds = 0;
    while (auto d = table.next_deadline()) {
        BOOST_TEST_REQUIRE(++rounds <= 5);
        auto before = table.counters().expirations;
        expire_at(*d);
        BOOST_TEST(table.counters().expirations == before + 1);
    }
    BOOST_TEST(rounds == 5);
    BOOST_TEST(table.list_keys().empty());
}

BOOST_FIXTURE_TEST_CASE(a_late_expire_call_ends_everything_due, fixture) {
    acquire_request a = req(1, "a", "k1");
    a.ttl = 10ms;
    acquire(a);
    acquire_request b = req(1, "b", "k2");
    b.ttl = 20ms;
    acquire(b);
    take();
    expire_at(t0 + 1s);
    auto lost = ids_of(take(), effect_kind::lock_lost);
    std::sort(lost.begin(), lost.end());
    BOOST_TEST(lost == (ids{"a", "b"}));
    BOOST_TEST(table.list_keys().empty());
}

BOOST_FIXTURE_TEST_CASE(release_after_expiry_is_already_released_and_expire_after_release_is_a_no_op, fixture) {
    acquire_request a = req(1, "a", "k");
    a.ttl = 100ms;
    acquire(a);
    acquire_request b = req(2, "b", "k");
    b.ttl = 100ms;
    acquire(b);
    take();
    expire_at(t0 + 100ms);  // a expires, b is granted until t0+200ms
    take();
    auto r = release("k", "a");
    BOOST_TEST(r.status == release_status::already_released);
    BOOST_TEST(holders("k") == ids{"b"});  // the late unlock did not touch the new holder
    BOOST_TEST(take().empty());

    now = t0 + 150ms;
    BOOST_TEST(release("k", "b").status == release_status::released);
    take();
    expire_at(t0 + 200ms);  // b's old lease end: nothing left to expire
    BOOST_TEST(take().empty());
    BOOST_TEST(table.counters().expirations == 1u);
    BOOST_TEST(table.counters().releases == 2u);  // every hold that ended: a by ttl, b by unlock
}

BOOST_FIXTURE_TEST_CASE(extend_renews_the_lease_and_fails_once_the_hold_is_gone, fixture) {
    acquire_request a = req(1, "a", "k");
    a.ttl = 100ms;
    acquire(a);
    acquire(req(2, "w", "k"));
    take();
    now = t0 + 80ms;
    auto x = extend("k", "a", 100ms);
    BOOST_TEST(x.code == errc::ok);
    BOOST_TEST(at(x.expires) == "t0+180ms");
    BOOST_TEST(at(table.info("k").holders.at(0).expires) == "t0+180ms");
    BOOST_TEST(at(table.next_deadline()) == "t0+180ms");
    expire_at(t0 + 100ms);  // the old lease end no longer applies
    BOOST_TEST(take().empty());
    BOOST_TEST(holders("k") == ids{"a"});

    x = extend("k", "a");  // unset: the default ttl
    BOOST_TEST(at(x.expires) == "t0+5100ms");
    x = extend("k", "a", no_expiry);
    BOOST_TEST(x.code == errc::ok);
    BOOST_TEST(!x.expires.has_value());
    BOOST_TEST(!table.next_deadline().has_value());

    BOOST_TEST(extend("k", "w", 100ms).code == errc::not_holder);  // waiting is not holding
    x = extend("k", "a", 10ms);
    expire_at(now + 10ms);
    BOOST_TEST(ids_of(take(), effect_kind::lock_lost) == ids{"a"});
    BOOST_TEST(extend("k", "a", 100ms).code == errc::not_holder);
    BOOST_TEST(extend("nokey", "a", 100ms).code != errc::ok);
}

// ---------------------------------------------------------------------------------------------
// Wait timeouts, cancel, abandon

BOOST_FIXTURE_TEST_CASE(wait_timeout_rejects_with_timeout_and_never_grants_afterwards, fixture) {
    acquire(req(1, "a", "k"));
    acquire_request b = req(2, "b", "k");
    b.wait_deadline = t0 + 100ms;
    BOOST_TEST(acquire(b) == effect_kind::queued);
    take();
    expire_at(t0 + 99ms);
    BOOST_TEST(take().empty());
    expire_at(t0 + 100ms);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::rejected);
    BOOST_TEST(e[0].code == errc::timeout);
    BOOST_TEST(e[0].id == "b");
    BOOST_TEST(e[0].session == 2u);
    BOOST_TEST(waiters("k") == 0u);
    BOOST_TEST(table.counters().timeouts == 1u);
    release("k", "a");
    BOOST_TEST(take().empty());
    BOOST_TEST(table.list_keys().empty());
    BOOST_TEST(!cancel(2, "b"));
}

BOOST_FIXTURE_TEST_CASE(a_waiter_is_not_granted_at_its_own_deadline_even_when_a_lease_ends_then, fixture) {
    acquire_request a = req(1, "a", "k");
    a.ttl = 100ms;
    acquire(a);
    acquire_request b = req(2, "b", "k");
    b.wait_deadline = t0 + 100ms;  // gives up at the very instant a's lease ends
    acquire(b);
    acquire(req(3, "c", "k"));
    take();
    expire_at(t0 + 100ms);
    auto e = take();
    const rec* rej = find(e, effect_kind::rejected, "b");
    BOOST_TEST_REQUIRE(rej);
    BOOST_TEST(rej->code == errc::timeout);
    BOOST_TEST(!find(e, effect_kind::granted, "b"));
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"c"});
}

BOOST_FIXTURE_TEST_CASE(a_waiter_is_not_granted_at_its_own_deadline_when_the_one_before_it_times_out_then, fixture) {
    acquire(max_req(1, "x", "k", 2));
    acquire_request s = shared_req(2, "s", "k");  // blocked by x, blocks w
    s.wait_deadline = t0 + 50ms;
    acquire(s);
    acquire_request w = req(3, "w", "k");
    w.wait_deadline = t0 + 50ms;
    acquire(w);
    take();
    expire_at(t0 + 50ms);
    auto e = take();
    auto rejected = ids_of(e, effect_kind::rejected);
    std::sort(rejected.begin(), rejected.end());
    BOOST_TEST(rejected == (ids{"s", "w"}));
    BOOST_TEST(ids_of(e, effect_kind::granted).empty());
    BOOST_TEST(holders("k") == ids{"x"});
}

BOOST_FIXTURE_TEST_CASE(timeout_of_the_front_waiter_unblocks_the_queue, fixture) {
    acquire(max_req(1, "x", "k", 2));
    acquire_request s = shared_req(2, "s", "k");
    s.wait_deadline = t0 + 50ms;
    acquire(s);
    acquire(req(3, "w", "k"));
    take();
    expire_at(t0 + 50ms);
    auto e = take();
    BOOST_TEST(find(e, effect_kind::rejected, "s") != nullptr);
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"w"});
}

BOOST_FIXTURE_TEST_CASE(cancel_is_true_only_for_a_waiting_request_of_the_session, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    take();
    BOOST_TEST(!cancel(1, "a"));       // granted
    BOOST_TEST(!cancel(1, "nobody"));  // unknown
    BOOST_TEST(!cancel(3, "b"));       // another session's request
    BOOST_TEST(waiters("k") == 1u);
    BOOST_TEST(cancel(2, "b"));
    BOOST_TEST(waiters("k") == 0u);
    BOOST_TEST(!cancel(2, "b"));  // already gone
    BOOST_TEST(table.counters().cancelled == 1u);
    BOOST_TEST(holders("k") == ids{"a"});
    // A notice to the cancelled request, if any, is a rejection with code cancelled, never a grant.
    for (const auto& e : take()) {
        BOOST_TEST(e.kind == effect_kind::rejected);
        BOOST_TEST(e.code == errc::cancelled);
    }
    release("k", "a");
    BOOST_TEST(take().empty());
}

BOOST_FIXTURE_TEST_CASE(abandon_withdraws_a_waiter_or_releases_a_granted_hold, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    acquire(req(3, "c", "k"));
    take();
    abandon(2, "b");
    BOOST_TEST(waiters("k") == 1u);
    abandon(9, "a");  // not a's session: nothing
    BOOST_TEST(holders("k") == ids{"a"});
    abandon(1, "a");  // granted meanwhile: released and handed on
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"c"});
    BOOST_TEST(!find(e, effect_kind::granted, "b"));
    BOOST_TEST(table.counters().releases == 1u);
    BOOST_TEST(table.counters().cancelled == 1u);
    abandon(1, "a");  // idempotent
    BOOST_TEST(holders("k") == ids{"c"});
}

// ---------------------------------------------------------------------------------------------
// Sessions and keepLocksOnExit

BOOST_FIXTURE_TEST_CASE(close_session_removes_waiters_releases_holds_and_keeps_keep_on_exit, fixture) {
    acquire(req(1, "a", "k1"));  // plain hold: released
    acquire_request kept = req(1, "kept", "k2");
    kept.keep_on_exit = true;
    acquire(kept);  // survives
    acquire(req(2, "other", "k3"));
    acquire(req(1, "w1", "k3"));  // waiter of session 1: removed
    acquire(req(2, "w2", "k1"));  // session 2 waits for a
    acquire_request kw = req(1, "kw", "k3");
    kw.keep_on_exit = true;  // keep_on_exit does not keep a waiter
    acquire(kw);
    acquire(req(2, "w3", "k3"));
    take();

    close(1);
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"w2"});
    for (const auto& x : e) BOOST_TEST((x.session != 2u || x.kind == effect_kind::granted));  // session 2 untouched
    BOOST_TEST(holders("k1") == ids{"w2"});
    BOOST_TEST(holders("k2") == ids{"kept"});
    BOOST_TEST(table.info("k2").holders.at(0).session == 0u);  // re-owned by nobody
    BOOST_TEST(table.info("k2").holders.at(0).keep_on_exit);
    BOOST_TEST(holders("k3") == ids{"other"});
    BOOST_TEST(waiters("k3") == 1u);  // only w3 is left
    BOOST_TEST(table.counters().sessions == 1u);
    release("k3", "other");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"w3"});
    close(1);  // closing again is harmless
    BOOST_TEST(holders("k2") == ids{"kept"});
}

BOOST_FIXTURE_TEST_CASE(kept_hold_expires_by_ttl_with_lock_lost_to_session_zero, fixture) {
    acquire_request kept = req(1, "kept", "k");
    kept.keep_on_exit = true;
    kept.ttl = 100ms;
    acquire(kept);
    acquire(req(2, "w", "k"));
    close(1);
    take();
    BOOST_TEST(holders("k") == ids{"kept"});
    expire_at(t0 + 100ms);
    auto e = take();
    const rec* lost = find(e, effect_kind::lock_lost, "kept");
    BOOST_TEST_REQUIRE(lost);
    BOOST_TEST(lost->session == 0u);
    BOOST_TEST(lost->reason == lost_reason::ttl);
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"w"});
}

BOOST_FIXTURE_TEST_CASE(kept_hold_is_released_by_id_from_another_session, fixture) {
    acquire_request kept = req(1, "kept", "k");
    kept.keep_on_exit = true;
    acquire(kept);
    acquire(req(2, "w", "k"));
    close(1);
    take();
    BOOST_TEST(release("k", "kept").status == release_status::released);
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"w"});
}

BOOST_FIXTURE_TEST_CASE(release_by_id_from_another_session_tells_the_holder, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(1, "own", "own"));
    take();
    BOOST_TEST(table.release("k", "a", now, session_id{2}).status == release_status::released);
    auto fx = take();
    BOOST_TEST_REQUIRE(fx.size() == 1u);
    BOOST_TEST((fx[0].kind == effect_kind::lock_lost));
    BOOST_TEST(fx[0].session == 1u);
    BOOST_TEST(fx[0].id == "a");
    BOOST_TEST((fx[0].reason == lost_reason::forced));
    // The holder's own unlock is not news to it.
    BOOST_TEST(table.release("own", "own", now, session_id{1}).status == release_status::released);
    BOOST_TEST(take().empty());
    table.check_invariants();
}

BOOST_FIXTURE_TEST_CASE(kept_hold_can_be_forced, fixture) {
    acquire_request kept = req(1, "kept", "k");
    kept.keep_on_exit = true;
    acquire(kept);
    close(1);
    take();
    BOOST_TEST(force("k", std::string_view("kept")).status == release_status::released);
    BOOST_TEST(table.list_keys().empty());
    BOOST_TEST(table.counters().forced == 1u);
}

// ---------------------------------------------------------------------------------------------
// Duplicate request ids (live-mutex retries)

BOOST_FIXTURE_TEST_CASE(duplicate_id_while_queued_resends_queued_and_adds_nothing, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    acquire(req(3, "c", "k"));
    take();
    auto before = table.counters();
    BOOST_TEST(acquire(req(2, "b", "k")) == effect_kind::queued);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::queued);
    BOOST_TEST(e[0].id == "b");
    BOOST_TEST(e[0].session == 2u);
    BOOST_TEST(e[0].position == 1u);
    BOOST_TEST(e[0].waiters == 2u);
    BOOST_TEST(waiters("k") == 2u);
    BOOST_TEST(table.counters().queued == before.queued);
    release("k", "a");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"b"});
    release("k", "b");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"c"});  // exactly one entry for b
}

BOOST_FIXTURE_TEST_CASE(duplicate_id_while_held_resends_the_grant_with_the_same_token, fixture) {
    acquire(req(1, "a", "k"));
    auto first = take();
    auto before = table.counters();
    BOOST_TEST(acquire(req(1, "a", "k")) == effect_kind::granted);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::granted);
    BOOST_TEST(e[0].token == first[0].token);
    BOOST_TEST(at(e[0].expires) == at(first[0].expires));
    BOOST_TEST(table.last_token() == first[0].token);  // no new token
    BOOST_TEST(table.counters().grants == before.grants);
    BOOST_TEST(table.info("k").holders.size() == 1u);
    BOOST_TEST(release("k", "a").status == release_status::released);  // one release ends it
    BOOST_TEST(table.list_keys().empty());
}

BOOST_FIXTURE_TEST_CASE(duplicate_id_from_another_session_or_key_is_rejected, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(1, "q", "k"));
    take();
    BOOST_TEST(acquire(req(2, "a", "k")) == effect_kind::rejected);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].code == errc::duplicate_request);
    BOOST_TEST(e[0].session == 2u);
    BOOST_TEST(acquire(req(1, "a", "k2")) == effect_kind::rejected);
    BOOST_TEST(take().at(0).code == errc::duplicate_request);
    BOOST_TEST(acquire(req(2, "q", "k")) == effect_kind::rejected);
    BOOST_TEST(acquire_many(1, "a", {"k", "k2"}) == effect_kind::rejected);
    BOOST_TEST(!table.info("k2").exists);
    BOOST_TEST(holders("k") == ids{"a"});
    BOOST_TEST(waiters("k") == 1u);
    BOOST_TEST(table.counters().rejected == 3u + 1u);
}

BOOST_FIXTURE_TEST_CASE(an_id_can_be_used_again_once_its_request_ended, fixture) {
    acquire(req(1, "a", "k"));
    release("k", "a");
    take();
    BOOST_TEST(acquire(req(2, "a", "k2")) == effect_kind::granted);
    BOOST_TEST(take().at(0).token == 2u);
}

// ---------------------------------------------------------------------------------------------
// acquire-many / release-many

BOOST_FIXTURE_TEST_CASE(acquire_many_grants_all_keys_sorted_deduplicated_each_with_its_own_token, fixture) {
    BOOST_TEST(acquire_many(1, "m", {"c", "a", "b", "a"}) == effect_kind::granted);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].multi);
    BOOST_TEST(e[0].id == "m");
    BOOST_TEST(e[0].session == 1u);
    BOOST_TEST_REQUIRE(e[0].keys.size() == 3u);
    BOOST_TEST(e[0].keys[0].first == "a");
    BOOST_TEST(e[0].keys[1].first == "b");
    BOOST_TEST(e[0].keys[2].first == "c");
    BOOST_TEST(e[0].keys[0].second == 1u);
    BOOST_TEST(e[0].keys[1].second == 2u);
    BOOST_TEST(e[0].keys[2].second == 3u);
    BOOST_TEST(table.last_token() == 3u);
    for (const char* k : {"a", "b", "c"}) {
        BOOST_TEST(holders(k) == ids{"m"});
        BOOST_TEST(table.info(k).last_token == table.info(k).holders.at(0).token);
    }
    auto r = release_many("m");
    BOOST_TEST(r.code == errc::ok);
    BOOST_TEST(r.keys == (std::vector<std::string>{"a", "b", "c"}));
    BOOST_TEST(table.list_keys().empty());
    BOOST_TEST(release_many("m").code != errc::ok);  // gone (or at least nothing to release)
}

BOOST_FIXTURE_TEST_CASE(acquire_many_is_all_or_nothing, fixture) {
    acquire(req(1, "h", "b"));
    take();
    BOOST_TEST(acquire_many(2, "m", {"a", "b"}) == effect_kind::queued);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::queued);
    BOOST_TEST(e[0].multi);
    BOOST_TEST(e[0].key == "b");       // the contended key
    BOOST_TEST(holders("a").empty());  // holds nothing while it waits
    BOOST_TEST(holders("b") == ids{"h"});
    release("b", "h");
    e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::granted);
    BOOST_TEST(e[0].id == "m");
    BOOST_TEST(holders("a") == ids{"m"});
    BOOST_TEST(holders("b") == ids{"m"});
}

BOOST_FIXTURE_TEST_CASE(acquire_many_queued_notice_gives_the_place_on_the_contended_key, fixture) {
    acquire(req(1, "h", "b"));
    acquire(req(2, "w1", "b"));
    acquire(req(3, "w2", "b"));
    take();
    BOOST_TEST(acquire_many(4, "m", {"a", "b"}) == effect_kind::queued);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].key == "b");
    BOOST_TEST(e[0].waiters == 3u);
    BOOST_TEST(e[0].position == 3u);  // behind w1 and w2 on b (it is first on a, which is free)
    BOOST_TEST(acquire_many(4, "m", {"a", "b"}) == effect_kind::queued);  // a retry says the same
    e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].key == "b");
    BOOST_TEST(e[0].position == 3u);
}

BOOST_FIXTURE_TEST_CASE(forcing_one_key_of_a_multi_lock_ends_the_whole_lock, fixture) {
    // All or nothing: a multi-key lock that lost one key is lost on every key.
    acquire_many(1, "m", {"a", "b"});
    acquire(req(2, "wb", "b"));
    take();
    auto r = force("a", std::string_view("m"));
    BOOST_TEST(r.status == release_status::released);
    auto e = take();
    std::vector<std::string> lost_keys;
    for (const auto& x : e) {
        if (x.kind != effect_kind::lock_lost) continue;
        BOOST_TEST(x.reason == lost_reason::forced);
        BOOST_TEST(x.session == 1u);
        if (x.multi && !x.keys.empty())
            for (const auto& kt : x.keys) lost_keys.push_back(kt.first);
        else
            lost_keys.push_back(x.key);
    }
    std::sort(lost_keys.begin(), lost_keys.end());
    BOOST_TEST(lost_keys == (std::vector<std::string>{"a", "b"}));
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"wb"});
    BOOST_TEST(table.counters().forced == 1u);
}

BOOST_FIXTURE_TEST_CASE(acquire_many_try_lock_is_refused_and_holds_nothing, fixture) {
    acquire(req(1, "h", "b"));
    take();
    BOOST_TEST(acquire_many(2, "m", {"a", "b"}, false) == effect_kind::refused);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].kind == effect_kind::refused);
    BOOST_TEST(holders("a").empty());
    BOOST_TEST(waiters("a") == 0u);
    BOOST_TEST(waiters("b") == 0u);
    BOOST_TEST(acquire_many(2, "m2", {"a", "c"}, false) == effect_kind::granted);
}

BOOST_FIXTURE_TEST_CASE(acquire_many_try_lock_never_jumps_a_queue, fixture) {
    acquire(max_req(1, "x", "a", 2));
    acquire(shared_req(2, "s", "a"));  // waits: a has a free slot but s is shared
    take();
    BOOST_TEST(acquire_many(3, "m", {"a", "b"}, false) == effect_kind::refused);
}

BOOST_FIXTURE_TEST_CASE(acquire_many_waits_behind_earlier_single_waiters, fixture) {
    acquire(req(1, "h", "a"));
    acquire(req(2, "w", "a"));
    BOOST_TEST(acquire_many(3, "m", {"a", "b"}) == effect_kind::queued);
    take();
    release("a", "h");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"w"});
    release("a", "w");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"m"});
}

BOOST_FIXTURE_TEST_CASE(a_waiting_multi_request_keeps_its_place_on_every_key, fixture) {
    // m waits for b; a later single request on the free key a must not jump ahead of m.
    acquire(req(1, "h", "b"));
    acquire_many(2, "m", {"a", "b"});
    BOOST_TEST(waiters("a") == 1u);
    BOOST_TEST(waiters("b") == 1u);
    BOOST_TEST(acquire(req(3, "s", "a")) == effect_kind::queued);
    BOOST_TEST(acquire(try_req(3, "t", "a")) == effect_kind::refused);
    take();
    release("b", "h");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"m"});
    release_many("m");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"s"});
}

BOOST_FIXTURE_TEST_CASE(acquire_many_is_deadlock_free_in_both_key_orders, fixture) {
    acquire(req(1, "A", "k1"));
    acquire(req(2, "B", "k2"));
    BOOST_TEST(acquire_many(3, "C", {"k1", "k2"}) == effect_kind::queued);
    BOOST_TEST(acquire_many(4, "D", {"k2", "k1"}) == effect_kind::queued);
    acquire(req(5, "E", "k2"));
    take();
    release("k1", "A");
    BOOST_TEST(take().empty());  // C still needs k2
    release("k2", "B");
    auto e = take();
    BOOST_TEST(ids_of(e, effect_kind::granted) == ids{"C"});
    BOOST_TEST(release_many("C").keys == (std::vector<std::string>{"k1", "k2"}));
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"D"});
    release_many("D");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"E"});
    release("k2", "E");
    BOOST_TEST(table.list_keys().empty());
    BOOST_TEST(table.counters().waiters == 0u);
}

BOOST_FIXTURE_TEST_CASE(acquire_many_overlapping_with_single_locks_and_semaphores, fixture) {
    acquire(max_req(1, "s1", "sem", 2));
    BOOST_TEST(acquire_many(2, "m", {"sem", "mx"}) == effect_kind::granted);  // takes the 2nd slot
    BOOST_TEST(acquire(req(3, "x", "mx")) == effect_kind::queued);
    BOOST_TEST(acquire(req(3, "y", "sem")) == effect_kind::queued);
    take();
    release("sem", "s1");
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"y"});
    auto r = release_many("m");
    BOOST_TEST(r.keys == (std::vector<std::string>{"mx", "sem"}));
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"x"});
    // A multi request never shares a key with shared holders.
    acquire(shared_req(4, "r", "rk"));
    BOOST_TEST(acquire_many(4, "m2", {"rk"}, false) == effect_kind::refused);
}

BOOST_FIXTURE_TEST_CASE(acquire_many_with_no_keys_is_a_bad_request, fixture) {
    BOOST_TEST(acquire_many(1, "m", {}) == effect_kind::rejected);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].code == errc::bad_request);
}

BOOST_FIXTURE_TEST_CASE(duplicate_acquire_many_resends_its_state, fixture) {
    acquire(req(1, "h", "b"));
    acquire_many(2, "m", {"a", "b"});
    take();
    BOOST_TEST(acquire_many(2, "m", {"b", "a"}) == effect_kind::queued);
    BOOST_TEST(waiters("a") == 1u);
    BOOST_TEST(acquire_many(3, "m", {"a", "b"}) == effect_kind::rejected);
    take();
    release("b", "h");
    auto first = take();
    BOOST_TEST(acquire_many(2, "m", {"a", "b"}) == effect_kind::granted);
    auto e = take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST((e[0].keys == first.at(0).keys));  // same tokens
    BOOST_TEST(table.counters().grants == 2u + 1u);
}

BOOST_FIXTURE_TEST_CASE(multi_hold_expires_on_every_key, fixture) {
    acquire_many(1, "m", {"a", "b"}, true, 100ms);
    acquire(req(2, "wa", "a"));
    acquire(req(3, "wb", "b"));
    take();
    expire_at(t0 + 100ms);
    auto e = take();
    std::vector<std::string> lost_keys;
    for (const auto& x : e) {
        if (x.kind != effect_kind::lock_lost) continue;
        BOOST_TEST(x.id == "m");
        BOOST_TEST(x.reason == lost_reason::ttl);
        if (x.multi && !x.keys.empty())
            for (const auto& kt : x.keys) lost_keys.push_back(kt.first);
        else
            lost_keys.push_back(x.key);
    }
    std::sort(lost_keys.begin(), lost_keys.end());
    BOOST_TEST(lost_keys == (std::vector<std::string>{"a", "b"}));
    auto g = ids_of(e, effect_kind::granted);
    std::sort(g.begin(), g.end());
    BOOST_TEST(g == (ids{"wa", "wb"}));
}

BOOST_FIXTURE_TEST_CASE(close_session_releases_multi_holds_and_withdraws_multi_waiters, fixture) {
    acquire_many(1, "m", {"a", "b"});
    acquire_many(1, "m2", {"b", "c"});
    acquire(req(2, "w", "c"));
    take();
    BOOST_TEST(waiters("c") == 2u);
    close(1);
    BOOST_TEST(ids_of(take(), effect_kind::granted) == ids{"w"});
    BOOST_TEST(table.list_keys() == std::vector<std::string>{"c"});
}

// ---------------------------------------------------------------------------------------------
// Fencing tokens

BOOST_AUTO_TEST_CASE(fencing_tokens_start_above_the_seed_and_increase_on_every_grant) {
    table_config cfg;
    cfg.fencing_seed = 1'000'000;
    basic_fixture<> f(cfg);
    BOOST_TEST(f.table.last_token() == 1'000'000u);
    f.acquire(req(1, "a", "k1"));
    f.acquire(req(1, "b", "k2"));
    f.acquire(req(1, "c", "k1"));
    f.acquire_many(1, "m", {"k3", "k4"});
    f.release("k1", "a");
    auto e = f.take();
    BOOST_TEST(token_of(e, "a") == 1'000'001u);
    BOOST_TEST(token_of(e, "b") == 1'000'002u);
    const rec* m = find(e, effect_kind::granted, "m");
    BOOST_TEST_REQUIRE(m);
    BOOST_TEST(m->keys.at(0).second == 1'000'003u);
    BOOST_TEST(m->keys.at(1).second == 1'000'004u);
    BOOST_TEST(token_of(e, "c") == 1'000'005u);
    BOOST_TEST(f.table.last_token() == 1'000'005u);
    BOOST_TEST(f.table.info("k1").last_token == 1'000'005u);
    BOOST_TEST(f.table.info("k1").holders.at(0).token == 1'000'005u);
    BOOST_TEST(f.table.info("k2").last_token == 1'000'002u);
}

BOOST_FIXTURE_TEST_CASE(info_last_token_is_the_last_token_granted_on_the_key, fixture) {
    acquire(max_req(1, "a", "k", 2));  // token 1
    acquire(req(2, "b", "k"));         // token 2
    release("k", "b");
    BOOST_TEST(table.info("k").last_token == 2u);  // not the highest token still held (1)
    acquire(req(3, "c", "other"));                 // token 3, another key
    BOOST_TEST(table.info("k").last_token == 2u);
}

BOOST_AUTO_TEST_CASE(tokens_never_go_back_when_a_key_is_forgotten) {
    basic_fixture<> f;
    f.acquire(req(1, "a", "k"));
    f.release("k", "a");
    BOOST_TEST(f.table.list_keys().empty());
    f.acquire(req(1, "b", "k"));
    BOOST_TEST(f.take().back().token == 2u);
}

BOOST_AUTO_TEST_CASE(reserve_tokens_is_called_before_passing_each_reservation) {
    table_config cfg;
    cfg.fencing_seed = 100;
    basic_fixture<reserving_sink> f(cfg, fencing_token{3});  // blocks of 3 tokens
    f.acquire(req(1, "a", "k1"));
    f.acquire(req(1, "b", "k2"));
    f.acquire_many(1, "m", {"k3", "k4", "k5"});  // crosses a block boundary in the middle
    f.acquire(req(1, "c", "k6"));
    f.acquire(req(1, "d", "k7"));
    f.acquire(req(1, "d", "k7"));  // a re-sent grant takes no token
    f.acquire(req(1, "e", "k8"));
    // A step reserves every token it hands out before it changes anything: 101 (ceiling 103),
    // 105 for the multi grant's three tokens 103..105 (ceiling 107), 108. Each is logged before
    // the grant carrying that token, and tokens are 101..108 (107 twice: the re-sent grant).
    const std::vector<std::string>& got = f.sink.log;
    std::vector<std::string> reserves, grants;
    for (const auto& l : got) (l.rfind("reserve", 0) == 0 ? reserves : grants).push_back(l);
    BOOST_TEST(reserves == (std::vector<std::string>{"reserve 101", "reserve 105", "reserve 108"}));
    BOOST_TEST(grants == (std::vector<std::string>{"grant 101", "grant 102", "grant 103", "grant 104", "grant 105",
                                                   "grant 106", "grant 107", "grant 107", "grant 108"}));
    for (fencing_token n : {101u, 105u, 108u}) {
        auto r = std::find(got.begin(), got.end(), "reserve " + std::to_string(n));
        auto g = std::find(got.begin(), got.end(), "grant " + std::to_string(n));
        BOOST_CHECK_MESSAGE(r < g, "reserve " << n << " must come before grant " << n);
    }
}

// ---------------------------------------------------------------------------------------------
// Watch events

BOOST_FIXTURE_TEST_CASE(watch_events_only_when_enabled, fixture) {
    acquire(req(1, "a", "k"));
    acquire(req(2, "b", "k"));
    release("k", "a");
    BOOST_TEST(sink.take_events().empty());

    table.set_events(true);
    acquire(req(3, "c", "k"));  // queued behind b
    auto ev = sink.take_events();
    BOOST_TEST_REQUIRE(ev.size() >= 1u);
    BOOST_TEST(ev.at(0).event == event_kind::queued);
    BOOST_TEST(ev.at(0).key == "k");
    BOOST_TEST(ev.at(0).id == "c");
    release("k", "b");
    ev = sink.take_events();
    bool released = false, granted = false;
    for (const auto& x : ev) {
        released |= x.event == event_kind::released && x.id == "b";
        granted |= x.event == event_kind::granted && x.id == "c";
    }
    BOOST_TEST(released);
    BOOST_TEST(granted);
    acquire_request d = req(4, "d", "k");
    d.wait_deadline = now + 10ms;
    acquire(d);
    sink.take_events();
    expire_at(now + 10ms);
    ev = sink.take_events();
    BOOST_TEST_REQUIRE(ev.size() >= 1u);
    BOOST_TEST(ev.at(0).event == event_kind::timeout);
    force("k");
    ev = sink.take_events();
    BOOST_TEST_REQUIRE(ev.size() >= 1u);
    BOOST_TEST(ev.at(0).event == event_kind::forced);

    table.set_events(false);
    acquire(req(1, "e", "k"));
    release("k", "e");
    BOOST_TEST(sink.take_events().empty());
}

// ---------------------------------------------------------------------------------------------
// Introspection and limits

BOOST_FIXTURE_TEST_CASE(list_keys_lists_keys_with_holders_or_waiters_and_forgets_empty_ones, fixture) {
    acquire(req(1, "a", "k1"));
    acquire(req(1, "b", "k2"));
    acquire(req(2, "c", "k2"));
    auto keys = table.list_keys();
    std::sort(keys.begin(), keys.end());
    BOOST_TEST(keys == (std::vector<std::string>{"k1", "k2"}));
    release("k1", "a");
    BOOST_TEST(table.list_keys() == std::vector<std::string>{"k2"});
    BOOST_TEST(!table.info("k1").exists);
    BOOST_TEST(table.counters().keys == 1u);
    release("k2", "b");
    release("k2", "c");
    BOOST_TEST(table.list_keys().empty());
    BOOST_TEST(table.counters().keys == 0u);
}

BOOST_FIXTURE_TEST_CASE(info_reports_holders_waiters_max_and_last_token, fixture) {
    BOOST_TEST(!table.info("k").exists);
    BOOST_TEST(table.info("k").holders.empty());
    acquire_request a = max_req(1, "a", "k", 2);
    a.keep_on_exit = true;
    a.ttl = 300ms;
    acquire(a);
    now = t0 + 10ms;
    acquire(req(2, "b", "k"));
    acquire(req(3, "c", "k"));
    auto i = table.info("k");
    BOOST_TEST(i.exists);
    BOOST_TEST(i.key == "k");
    BOOST_TEST(i.max == 2u);
    BOOST_TEST(i.waiters == 1u);
    BOOST_TEST(i.last_token == 2u);
    BOOST_TEST(i.holder_mode == lock_mode::exclusive);
    BOOST_TEST_REQUIRE(i.holders.size() == 2u);
    std::sort(i.holders.begin(), i.holders.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
    BOOST_TEST(i.holders[0].id == "a");
    BOOST_TEST(i.holders[0].session == 1u);
    BOOST_TEST(i.holders[0].mode == lock_mode::exclusive);
    BOOST_TEST(i.holders[0].token == 1u);
    BOOST_TEST(at(i.holders[0].expires) == "t0+300ms");
    BOOST_TEST(at(i.holders[0].since) == "t0+0ms");
    BOOST_TEST(i.holders[0].keep_on_exit);
    BOOST_TEST(i.holders[1].id == "b");
    BOOST_TEST(at(i.holders[1].since) == "t0+10ms");
    BOOST_TEST(!i.holders[1].keep_on_exit);
}

BOOST_FIXTURE_TEST_CASE(counters_track_every_outcome, fixture) {
    acquire(req(1, "a", "k"));         // grant
    acquire(req(2, "b", "k"));         // queued
    acquire(try_req(3, "t", "k"));     // refused
    acquire(max_req(3, "z", "k", 0));  // rejected
    acquire_request c = req(3, "c", "k");
    c.wait_deadline = now + 10ms;
    acquire(c);                  // queued, then timeout
    acquire(req(4, "d", "k"));   // queued, then cancelled
    acquire(req(4, "e", "k2"));  // grant, then forced
    auto n = table.counters();
    BOOST_TEST(n.grants == 2u);
    BOOST_TEST(n.queued == 3u);
    BOOST_TEST(n.refused == 1u);
    BOOST_TEST(n.rejected == 1u);
    BOOST_TEST(n.keys == 2u);
    BOOST_TEST(n.holders == 2u);
    BOOST_TEST(n.waiters == 3u);
    BOOST_TEST(n.sessions == 4u);

    expire_at(now + 10ms);
    cancel(4, "d");
    force("k2");
    release("k", "a");  // hands on to b
    acquire_request f = req(5, "f", "k3");
    f.ttl = 5ms;
    acquire(f);
    expire_at(now + 5ms);
    n = table.counters();
    BOOST_TEST(n.timeouts == 1u);
    BOOST_TEST(n.cancelled == 1u);
    BOOST_TEST(n.forced == 1u);
    BOOST_TEST(n.releases == 3u);  // holds ended for any reason: e forced, a released, f expired
    BOOST_TEST(n.expirations == 1u);
    BOOST_TEST(n.grants == 4u);
    BOOST_TEST(n.grants == n.releases + n.holders);
    BOOST_TEST(n.keys == 1u);
    BOOST_TEST(n.holders == 1u);
    BOOST_TEST(n.waiters == 0u);
    BOOST_TEST(n.sessions == 1u);  // only session 2 (b) has anything left
}

BOOST_FIXTURE_TEST_CASE(top_contended_orders_keys_by_waiters_descending, fixture) {
    int n = 0;
    auto fill = [&](const char* key, int waiting) {
        for (int i = 0; i <= waiting; ++i) {
            std::string id = "r" + std::to_string(n++);
            acquire(req(1, id, key));
        }
    };
    fill("one", 1);
    fill("three", 3);
    fill("none", 0);
    fill("two", 2);
    auto top = table.top_contended(2);
    BOOST_TEST_REQUIRE(top.size() == 2u);
    BOOST_TEST(top[0].key == "three");
    BOOST_TEST(top[0].waiters == 3u);
    BOOST_TEST(top[0].holders == 1u);
    BOOST_TEST(top[1].key == "two");
    BOOST_TEST(top[1].waiters == 2u);
    auto all = table.top_contended(10);
    BOOST_TEST(all.size() >= 3u);
    for (std::size_t i = 1; i < all.size(); ++i) BOOST_TEST(all[i - 1].waiters >= all[i].waiters);
    BOOST_TEST(table.top_contended(0).empty());
}

// queuedNotice:false travels inside the request: its own queued effects, the first and a re-sent
// one, say notice = false; every other request's effects keep their notice.
BOOST_AUTO_TEST_CASE(a_request_without_queued_notice_marks_only_its_own_queued_effects) {
    basic_fixture<> f;
    const auto queued_of = [](const std::vector<rec>& effects, std::string_view id) {
        std::vector<rec> out;
        for (const auto& e : effects)
            if (e.kind == effect_kind::queued && e.id == id) out.push_back(e);
        return out;
    };
    f.acquire(req(1, "a", "k"));
    auto quiet = req(2, "b", "k");
    quiet.queued_notice = false;
    BOOST_TEST(f.acquire(quiet) == effect_kind::queued);
    auto q = queued_of(f.take(), "b");
    BOOST_TEST_REQUIRE(q.size() == 1u);
    BOOST_TEST(!q[0].notice);
    BOOST_TEST(f.acquire(quiet) == effect_kind::queued);  // a retry re-sends the state
    q = queued_of(f.take(), "b");
    BOOST_TEST_REQUIRE(q.size() == 1u);
    BOOST_TEST(!q[0].notice);
    BOOST_TEST(f.acquire(req(3, "c", "k")) == effect_kind::queued);
    q = queued_of(f.take(), "c");
    BOOST_TEST_REQUIRE(q.size() == 1u);
    BOOST_TEST(q[0].notice);
    auto loud_retry = quiet;
    loud_retry.queued_notice = true;
    BOOST_TEST(f.acquire(loud_retry) == effect_kind::queued);
    q = queued_of(f.take(), "b");
    BOOST_TEST_REQUIRE(q.size() == 1u);
    BOOST_TEST(q[0].notice);
    auto many = f.acquire_many(4, "m", {"k", "k2"});
    BOOST_TEST((many == effect_kind::queued));
    q = queued_of(f.take(), "m");
    BOOST_TEST_REQUIRE(q.size() == 1u);
    BOOST_TEST(q[0].notice);
}

BOOST_AUTO_TEST_CASE(the_waiter_limit_rejects_with_too_many_waiters) {
    table_config cfg;
    cfg.max_waiters = 2;
    basic_fixture<> f(cfg);
    f.acquire(req(1, "a", "k"));
    BOOST_TEST(f.acquire(req(1, "b", "k")) == effect_kind::queued);
    BOOST_TEST(f.acquire(req(1, "c", "k2")) == effect_kind::granted);  // no wait: no limit
    BOOST_TEST(f.acquire(req(1, "d", "k2")) == effect_kind::queued);
    f.take();
    BOOST_TEST(f.acquire(req(1, "e", "k")) == effect_kind::rejected);
    auto e = f.take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].code == errc::too_many_waiters);
    BOOST_TEST(f.table.counters().rejected == 1u);
    BOOST_TEST(f.acquire(try_req(1, "t", "k")) == effect_kind::refused);  // try-locks still answered
    f.release("k", "b");
    BOOST_TEST(f.acquire(req(1, "g", "k")) == effect_kind::queued);
}

// The operator's pinned max: requests naming another are refused, those naming none get it, the
// longest prefix wins, and the pin outlives the key going idle. Other keys keep live-mutex's rule
// (a request's max applies).
BOOST_AUTO_TEST_CASE(a_pinned_max_holds_whatever_requests_ask) {
    table_config cfg;
    cfg.pins = {{"jobs/", 2}, {"jobs/solo/", 1}};
    basic_fixture<> f(cfg);
    BOOST_TEST(f.acquire(req(1, "a", "jobs/x")) == effect_kind::granted);
    BOOST_TEST(f.acquire(req(2, "b", "jobs/x")) == effect_kind::granted);  // max 2 without asking
    BOOST_TEST(f.acquire(req(3, "c", "jobs/x")) == effect_kind::queued);
    f.take();
    BOOST_TEST(f.acquire(max_req(4, "d", "jobs/x", 5)) == effect_kind::rejected);
    auto e = f.take();
    BOOST_TEST_REQUIRE(e.size() == 1u);
    BOOST_TEST(e[0].code == errc::max_pinned);
    BOOST_TEST(f.table.info("jobs/x").max == 2u);                                // the refused request changed nothing
    BOOST_TEST(f.acquire(max_req(4, "e", "jobs/x", 2)) == effect_kind::queued);  // naming the pin is fine
    BOOST_TEST(f.acquire(max_req(5, "s", "jobs/solo/y", 2)) == effect_kind::rejected);  // the longer prefix
    BOOST_TEST(f.acquire(req(5, "t", "jobs/solo/y")) == effect_kind::granted);
    BOOST_TEST(f.acquire(req(6, "u", "jobs/solo/y")) == effect_kind::queued);
    // acquire-many takes pinned keys at their pin too.
    BOOST_TEST(f.acquire_many(7, "m1", {"jobs/z", "free"}) == effect_kind::granted);
    BOOST_TEST(f.acquire_many(8, "m2", {"jobs/z"}) == effect_kind::granted);
    BOOST_TEST(f.table.info("jobs/z").max == 2u);
    // Idle and forgotten, the key comes back pinned.
    f.release("jobs/solo/y", "t");
    f.release("jobs/solo/y", "u");
    BOOST_TEST(f.acquire(max_req(9, "v", "jobs/solo/y", 3)) == effect_kind::rejected);
    // Unpinned keys: a request's max applies, as in live-mutex.
    BOOST_TEST(f.acquire(max_req(9, "w", "free2", 3)) == effect_kind::granted);
    BOOST_TEST(f.table.info("free2").max == 3u);
}

// Pins set at run time (an admin's pin request) work like configured ones, replace a pin of the
// same prefix, and can be removed again.
BOOST_AUTO_TEST_CASE(pins_change_at_run_time) {
    basic_fixture<> f;
    BOOST_TEST(f.acquire(max_req(1, "a", "gpu/0", 3)) == effect_kind::granted);  // unpinned: 3
    f.table.set_pin("gpu/", 1);
    BOOST_TEST(f.acquire(max_req(2, "b", "gpu/0", 3)) == effect_kind::rejected);
    BOOST_TEST(f.take().back().code == errc::max_pinned);
    BOOST_TEST(f.acquire(req(2, "c", "gpu/0")) == effect_kind::queued);  // the pin's max 1 now applies
    f.table.set_pin("gpu/", 2);                                          // replaces
    BOOST_TEST(f.acquire(max_req(3, "d", "gpu/1", 1)) == effect_kind::rejected);
    BOOST_TEST(f.acquire(max_req(3, "e", "gpu/1", 2)) == effect_kind::granted);
    f.table.set_pin("gpu/", std::nullopt);  // removed: a request's max applies again
    BOOST_TEST(f.acquire(max_req(4, "g", "gpu/2", 5)) == effect_kind::granted);
    BOOST_TEST(f.table.info("gpu/2").max == 5u);
    BOOST_TEST(f.table.config().pins.empty());
}

BOOST_AUTO_TEST_CASE(holds_per_session_and_keys_in_total_are_bounded) {
    table_config cfg;
    cfg.max_session_requests = 2;
    cfg.max_keys = 3;
    basic_fixture<> f(cfg);
    BOOST_TEST(f.acquire(req(1, "a", "k1")) == effect_kind::granted);
    BOOST_TEST(f.acquire(req(2, "b", "k1")) == effect_kind::queued);
    BOOST_TEST(f.acquire(req(1, "c", "k2")) == effect_kind::granted);
    f.take();
    BOOST_TEST(f.acquire(req(1, "d", "k3")) == effect_kind::rejected);  // session 1 has two
    BOOST_TEST(f.take().at(0).code == errc::limit_reached);
    BOOST_TEST(f.acquire(req(2, "e", "k3")) == effect_kind::granted);  // the third key
    f.take();
    BOOST_TEST(f.acquire(req(3, "f", "k4")) == effect_kind::rejected);  // a fourth key
    BOOST_TEST(f.take().at(0).code == errc::limit_reached);
    BOOST_TEST(f.acquire(req(3, "g", "k2")) == effect_kind::queued);  // an existing key is fine
    BOOST_TEST(f.acquire_many(4, "m", {"k1", "k5"}) == effect_kind::rejected);
    f.release("k2", "c");  // session 1 has room again; k2 stays (g waits for it)
    BOOST_TEST(f.acquire(req(1, "h", "k1")) == effect_kind::queued);
}

BOOST_AUTO_TEST_SUITE_END()
