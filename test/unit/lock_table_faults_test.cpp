// The lock table under faults and hostile use: token reservations that fail (the table must stay
// whole and grant nothing it cannot fence), other connections ending a request (its owner must
// hear of it), queue positions that cost O(1), watch events that report what happened, and the
// fencing range. Each case here failed on the table before these rules were written down.

#include <lmx/core/lock_table.hpp>

#include "effect_record.hpp"

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace lmx::core;
using namespace std::chrono_literals;
using rec = lmx::test::effect_record;

const time_point t0 = time_point{} + 1h;

// Records every effect; reserves tokens in blocks while `healthy`, fails (returns 0) otherwise.
struct flaky_sink : effect_sink {
    std::vector<rec> all;
    bool healthy = true;
    bool throws = false;  // fail by throwing instead of returning a low ceiling
    fencing_token block = 2;
    int calls = 0;

    void on_effect(const effect& e) override { all.push_back(lmx::test::copy_effect(e)); }
    fencing_token reserve_tokens(fencing_token needed) override {
        ++calls;
        if (!healthy) {
            if (throws) throw std::runtime_error("disk full");
            return 0;
        }
        return needed + block;
    }
    std::vector<rec> take(effect_kind k) {
        std::vector<rec> out;
        for (auto& r : all)
            if (r.kind == k) out.push_back(r);
        return out;
    }
};

struct fixture {
    flaky_sink sink;
    lock_table table{sink, table_config{.fencing_seed = 100}};
    time_point now = t0;

    effect_kind lock(session_id s, std::string_view id, std::string_view key,
                     std::optional<std::chrono::milliseconds> ttl = {}, std::optional<std::uint32_t> max = {}) {
        auto k = table.acquire({.session = s, .id = id, .key = key, .ttl = ttl, .max = max}, now);
        table.check_invariants();
        return k;
    }
    std::vector<std::string> holders(std::string_view key) {
        std::vector<std::string> out;
        for (auto& h : table.info(key).holders) out.push_back(h.id);
        return out;
    }
    const rec* last(effect_kind k, std::string_view id) {
        for (auto it = sink.all.rbegin(); it != sink.all.rend(); ++it)
            if (it->kind == k && it->id == id) return &*it;
        return nullptr;
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(lock_table_faults_test)

BOOST_FIXTURE_TEST_CASE(failed_reservation_on_a_free_key_rejects_and_changes_nothing, fixture) {
    sink.block = 0;  // every grant asks
    BOOST_TEST((lock(1, "a", "k") == effect_kind::granted));
    sink.healthy = false;
    BOOST_TEST((lock(2, "b", "other") == effect_kind::rejected));
    BOOST_TEST((last(effect_kind::rejected, "b")->code == errc::unavailable));
    BOOST_TEST(table.grants_stalled());
    BOOST_TEST(!table.info("other").exists);  // the key it created for the request is gone again
    BOOST_TEST(table.counters().holders == 1u);
    // While stalled, requests are refused without asking storage again each time.
    int calls = sink.calls;
    BOOST_TEST((lock(3, "c", "k") == effect_kind::rejected));
    BOOST_TEST(sink.calls == calls);
}

BOOST_FIXTURE_TEST_CASE(failed_reservation_during_a_handoff_keeps_the_waiter_queued, fixture) {
    sink.block = 0;
    lock(1, "a", "k");
    lock(2, "b", "k");
    lock(3, "c", "k");
    sink.healthy = false;
    auto r = table.release("k", "a", now);
    table.check_invariants();
    BOOST_TEST((r.status == release_status::released));
    BOOST_TEST(holders("k").empty());
    BOOST_TEST(table.info("k").waiters == 2u);  // b is still first in line, not half-granted
    BOOST_TEST(!last(effect_kind::granted, "b"));

    // The owner of the would-be grant leaves while storage is down: c must not inherit a broken
    // holder list, and nothing is granted twice after recovery.
    table.close_session(2, now);
    table.check_invariants();
    BOOST_TEST(!table.resume_grants(now));  // storage still down
    sink.healthy = true;
    BOOST_TEST(table.resume_grants(now));
    table.check_invariants();
    BOOST_TEST(holders("k") == std::vector<std::string>{"c"});
    BOOST_TEST(last(effect_kind::granted, "c")->token > last(effect_kind::granted, "a")->token);
    BOOST_TEST(!table.grants_stalled());
}

BOOST_FIXTURE_TEST_CASE(a_throwing_reservation_fails_closed_too, fixture) {
    sink.block = 0;
    sink.throws = true;
    sink.healthy = false;
    BOOST_TEST((lock(1, "a", "k") == effect_kind::rejected));
    BOOST_TEST((last(effect_kind::rejected, "a")->code == errc::unavailable));
    BOOST_TEST(table.counters().keys == 0u);
}

BOOST_FIXTURE_TEST_CASE(failed_reservation_at_a_lease_end_leaves_deadlines_working, fixture) {
    sink.block = 0;
    lock(1, "a", "k", 100ms);
    table.acquire({.session = 2, .id = "b", .key = "k", .wait_deadline = t0 + 300ms}, now);
    sink.healthy = false;
    now = t0 + 100ms;
    table.expire(now);  // must not throw: the lease ends, the handoff waits
    table.check_invariants();
    BOOST_TEST(last(effect_kind::lock_lost, "a"));
    BOOST_TEST(holders("k").empty());
    BOOST_TEST(table.next_deadline().has_value());
    now = t0 + 300ms;
    table.expire(now);
    table.check_invariants();
    BOOST_TEST((last(effect_kind::rejected, "b")->code == errc::timeout));
    BOOST_TEST(table.counters().keys == 0u);
}

BOOST_FIXTURE_TEST_CASE(a_group_grant_reserves_all_its_tokens_first, fixture) {
    sink.block = 0;
    lock(1, "a", "y");
    std::vector<std::string_view> keys = {"x", "y", "z"};
    table.acquire_many({.session = 2, .id = "m", .keys = keys}, now);
    sink.healthy = false;
    table.release("y", "a", now);
    table.check_invariants();
    BOOST_TEST(!last(effect_kind::granted, "m"));
    BOOST_TEST(table.info("x").waiters == 1u);
    sink.healthy = true;
    BOOST_TEST(table.resume_grants(now));
    table.check_invariants();
    auto* g = last(effect_kind::granted, "m");
    BOOST_REQUIRE(g);
    BOOST_TEST(g->keys.size() == 3u);
}

BOOST_FIXTURE_TEST_CASE(tokens_never_pass_two_to_the_53, fixture) {
    lock_table near(sink, table_config{.fencing_seed = max_fencing_token - 1});
    BOOST_TEST((near.acquire({.session = 1, .id = "a", .key = "k"}, now) == effect_kind::granted));
    BOOST_TEST(last(effect_kind::granted, "a")->token == max_fencing_token);
    BOOST_TEST((near.acquire({.session = 1, .id = "b", .key = "k2"}, now) == effect_kind::rejected));
    BOOST_TEST((last(effect_kind::rejected, "b")->code == errc::unavailable));
    near.check_invariants();
    BOOST_TEST(near.last_token() == max_fencing_token);
}

BOOST_FIXTURE_TEST_CASE(release_many_by_another_session_tells_the_holder, fixture) {
    std::vector<std::string_view> keys = {"x", "y"};
    table.acquire_many({.session = 1, .id = "m", .keys = keys}, now);
    auto res = table.release_many("m", now, session_id{2});
    table.check_invariants();
    BOOST_TEST((res.code == errc::ok));
    auto lost = sink.take(effect_kind::lock_lost);
    BOOST_REQUIRE(lost.size() == 1u);
    BOOST_TEST(lost[0].session == 1u);
    BOOST_TEST(lost[0].multi);
    BOOST_TEST((lost[0].reason == lost_reason::forced));
    BOOST_TEST(lost[0].keys.size() == 2u);
}

BOOST_FIXTURE_TEST_CASE(release_many_by_the_owner_tells_nobody, fixture) {
    std::vector<std::string_view> keys = {"x", "y"};
    table.acquire_many({.session = 1, .id = "m", .keys = keys}, now);
    table.release_many("m", now, session_id{1});
    BOOST_TEST(sink.take(effect_kind::lock_lost).empty());
}

BOOST_FIXTURE_TEST_CASE(a_waiting_request_withdrawn_by_another_session_is_answered, fixture) {
    lock(1, "a", "k");
    lock(2, "b", "k");
    auto r = table.release("k", "b", now, session_id{3});
    table.check_invariants();
    BOOST_TEST((r.status == release_status::withdrawn));
    auto* rej = last(effect_kind::rejected, "b");
    BOOST_REQUIRE(rej);
    BOOST_TEST(rej->session == 2u);
    BOOST_TEST((rej->code == errc::cancelled));
    BOOST_TEST(rej->key == "k");

    // Its own unlock is answered by the unlock reply alone.
    lock(2, "c", "k");
    sink.all.clear();
    table.release("k", "c", now, session_id{2});
    BOOST_TEST(sink.take(effect_kind::rejected).empty());
}

BOOST_FIXTURE_TEST_CASE(a_waiting_multi_request_withdrawn_by_another_session_is_answered, fixture) {
    lock(1, "a", "y");
    std::vector<std::string_view> keys = {"x", "y"};
    table.acquire_many({.session = 2, .id = "m", .keys = keys}, now);
    auto res = table.release_many("m", now, session_id{3});
    table.check_invariants();
    BOOST_TEST((res.code == errc::ok));
    auto* rej = last(effect_kind::rejected, "m");
    BOOST_REQUIRE(rej);
    BOOST_TEST(rej->session == 2u);
    BOOST_TEST(rej->multi);
    BOOST_TEST((rej->code == errc::cancelled));
    BOOST_TEST(table.info("x").waiters == 0u);
}

BOOST_FIXTURE_TEST_CASE(unlock_without_id_releases_the_sessions_own_hold, fixture) {
    lock(1, "a", "k", std::nullopt, 3);
    lock(2, "b", "k", std::nullopt, 3);
    lock(2, "c", "k", std::nullopt, 3);
    auto r = table.release_own(2, "k", now);
    table.check_invariants();
    BOOST_TEST((r.status == release_status::released));
    auto h = holders("k");
    BOOST_TEST(h.size() == 2u);
    BOOST_TEST((std::find(h.begin(), h.end(), "a") != h.end()));
    BOOST_TEST((table.release_own(3, "k", now).status == release_status::already_released));
    BOOST_TEST((table.release_own(2, "k", now).status == release_status::released));
    BOOST_TEST(holders("k") == std::vector<std::string>{"a"});
    BOOST_TEST((table.release_own(2, "k", now).status == release_status::already_released));
    // A keep-on-exit hold outlives its session and is nobody's "own" hold any more.
    table.acquire({.session = 4, .id = "kept", .key = "q", .keep_on_exit = true}, now);
    table.close_session(4, now);
    table.check_invariants();
    BOOST_TEST((table.release_own(4, "q", now).status == release_status::already_released));
    BOOST_TEST(holders("q") == std::vector<std::string>{"kept"});
}

BOOST_FIXTURE_TEST_CASE(repeated_request_positions_are_bounded_and_exact_without_gaps, fixture) {
    lock(1, "h", "k");
    for (int i = 0; i < 5; ++i) lock(2, "w" + std::to_string(i), "k");
    auto position_of = [&](std::string id) {
        sink.all.clear();
        lock(2, id, "k");  // a retry: re-sends the queued notice
        auto q = sink.take(effect_kind::queued);
        BOOST_REQUIRE(q.size() == 1u);
        return q[0].position;
    };
    for (int i = 0; i < 5; ++i) BOOST_TEST(position_of("w" + std::to_string(i)) == static_cast<unsigned>(i + 1));
    // Leaving from the middle makes later positions an upper bound, never beyond the queue.
    table.cancel(2, "w1", now);
    table.cancel(2, "w3", now);
    BOOST_TEST(position_of("w0") == 1u);
    BOOST_TEST(position_of("w2") >= 2u);
    BOOST_TEST(position_of("w4") <= 3u);
    // The head leaving keeps positions exact.
    table.release("k", "h", now);
    BOOST_TEST(position_of("w2") == 1u);
}

BOOST_FIXTURE_TEST_CASE(timeout_and_cancel_events_carry_no_token_and_count_the_rest, fixture) {
    table.set_events(true);
    lock(1, "h", "k", std::nullopt);
    table.acquire({.session = 2, .id = "t", .key = "k", .ttl = 7777ms, .wait_deadline = t0 + 10ms}, now);
    table.acquire({.session = 2, .id = "n", .key = "k", .ttl = no_expiry}, now);
    table.acquire({.session = 2, .id = "c", .key = "k"}, now);
    sink.all.clear();
    now = t0 + 10ms;
    table.expire(now);
    table.cancel(2, "n", now);
    table.check_invariants();
    auto events = sink.take(effect_kind::event);
    BOOST_REQUIRE(events.size() == 2u);
    BOOST_TEST((events[0].event == event_kind::timeout));
    BOOST_TEST(events[0].token == 0u);
    BOOST_TEST(events[0].waiters == 2u);
    BOOST_TEST((events[1].event == event_kind::cancelled));
    BOOST_TEST(events[1].token == 0u);
    BOOST_TEST(events[1].waiters == 1u);
    // Events of holds still carry the hold's token.
    sink.all.clear();
    table.release("k", "h", now);
    events = sink.take(effect_kind::event);
    BOOST_REQUIRE(events.size() >= 2u);
    BOOST_TEST((events[0].event == event_kind::released));
    BOOST_TEST(events[0].token > 100u);
}

BOOST_FIXTURE_TEST_CASE(keys_are_listed_in_pages, fixture) {
    for (int i = 0; i < 25; ++i) lock(1, "id" + std::to_string(i), "key" + std::to_string(i));
    table.release("key3", "id3", now);
    std::vector<std::string> all;
    std::optional<std::uint64_t> cursor = 0;
    int pages = 0;
    while (cursor) {
        auto page = table.list_keys(*cursor, 10);
        BOOST_TEST(page.keys.size() <= 10u);
        all.insert(all.end(), page.keys.begin(), page.keys.end());
        cursor = page.next;
        ++pages;
    }
    BOOST_TEST(pages == 3);
    BOOST_TEST(all.size() == 24u);
    std::sort(all.begin(), all.end());
    auto everything = table.list_keys();
    std::sort(everything.begin(), everything.end());
    BOOST_TEST(all == everything);
}

BOOST_FIXTURE_TEST_CASE(lock_info_lists_a_bounded_number_of_holders, fixture) {
    for (int i = 0; i < 20; ++i)
        table.acquire({.session = 1, .id = "s" + std::to_string(i), .key = "k", .mode = lock_mode::shared}, now);
    auto info = table.info("k", 5);
    BOOST_TEST(info.holders.size() == 5u);
    BOOST_TEST(info.holder_count == 20u);
}

BOOST_AUTO_TEST_SUITE_END()
