// live-mutex's read/write-lock protocol (lmx::core::rw_locks) over a real lock table, without
// sockets: the frames each session would get are recorded, and the table's holders are checked
// for the guarantee (no RW writer holds the write key while an RW reader reads, and the reverse).

#include <lmx/core/memory_store.hpp>
#include <lmx/core/rw_locks.hpp>
#include <lmx/core/store_answers.hpp>

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace lmx::core;
using namespace std::chrono_literals;
namespace json = boost::json;

constexpr session_id group = 1'000'000;

// Plays the broker's part: table effects of ordinary sessions become frames, the group
// session's go to rw_locks, and rw_locks settles after every step.
struct fixture : effect_sink, rw_output {
    memory_store store{*this};
    lock_table& table = store.table();
    rw_locks rw{store, *this, group};
    std::map<session_id, std::string> out;
    std::map<session_id, std::deque<json::object>> inbox;
    time_point now = time_point{} + 1h;

    std::string* frames_for(session_id s) override { return &out[s]; }
    void on_effect(const effect& e) override {
        if (e.kind == effect_kind::event) return;
        if (is_answer(e.kind)) {
            if (!e.uuid.empty()) write_answer(out[e.session], e);
            return;
        }
        if (e.session == group) return rw.defer(e);
        std::string& o = out[e.session];
        switch (e.kind) {
            case effect_kind::granted:
                write_lock_granted(o, e.id, e.key, e.token, e.waiters, rw.readers(e.key, e.readers));
                break;
            case effect_kind::queued:
                write_lock_queued(o, e.id, e.key, e.waiters, rw.readers(e.key, e.readers), e.position);
                break;
            case effect_kind::rejected: write_lock_rejected(o, e.id, e.key, e.code); break;
            case effect_kind::lock_lost: write_lock_lost(o, e.key, e.id, e.reason); break;
            default: break;
        }
    }

    // Frames written for `s` since the last call, decoded.
    std::deque<json::object>& frames(session_id s) {
        std::string& o = out[s];
        std::size_t start = 0;
        for (std::size_t nl; (nl = o.find('\n', start)) != std::string::npos; start = nl + 1)
            inbox[s].push_back(json::parse(std::string_view(o).substr(start, nl - start)).as_object());
        o.erase(0, start);
        return inbox[s];
    }
    // The next frame for `s` about request `uuid`, taken out; empty when none came.
    json::object take(session_id s, const std::string& uuid) {
        auto& q = frames(s);
        for (auto it = q.begin(); it != q.end(); ++it)
            if (auto* u = it->if_contains("uuid"); u && u->is_string() && u->get_string() == uuid) {
                json::object o = std::move(*it);
                q.erase(it);
                return o;
            }
        return {};
    }
    void settle() {
        rw.settle(now);
        table.check_invariants();
    }

    void lock(session_id s, std::string id, std::string key, std::optional<rw_status> st,
              std::optional<std::uint32_t> max = {}, std::optional<std::chrono::milliseconds> ttl = {}) {
        req::lock r{.uuid = id, .key = key, .ttl = ttl, .max = max, .rw = st};
        if (!rw.lock(s, r, std::nullopt, now))
            table.acquire({.session = s, .id = r.uuid, .key = r.key, .ttl = r.ttl, .max = r.max, .mode = r.mode}, now);
        settle();
    }
    void unlock(session_id s, std::string uuid, std::string key, std::optional<std::string> id, bool force,
                std::optional<rw_status> st) {
        req::unlock r{.uuid = uuid, .key = key, .lock_id = id, .force = force, .rw = st};
        if (!rw.unlock(s, r, now)) {
            if (id && force)
                table.force_release(key, *id, now);
            else if (id)
                table.release(key, *id, now, s);
            else if (force)
                table.force_release(key, std::nullopt, now);
            else
                table.release_own(s, key, now);
            write_unlock_ok(out[s], uuid, key, 0);
        }
        settle();
    }
    void message(session_id s, req::rw_message_kind k, std::string uuid, std::string key) {
        rw.message(s, k, uuid, key, now);
        settle();
    }
    void close(session_id s) {
        table.close_session(s, now);
        rw.close_session(s, now);
        settle();
    }
    void advance(std::chrono::milliseconds d) {
        now += d;
        table.expire(now);
        settle();
    }

    // The read-preferring client's beginRead, step by step as upstream's client does it; returns
    // the begin_read answer's readersCount (0 when it did not come).
    bool acquired(const json::object& o) const {
        auto* a = o.if_contains("acquired");
        return a && a->is_bool() && a->get_bool();
    }
    std::uint64_t readers_count(const json::object& o) const { return o.at("readersCount").to_number<std::uint64_t>(); }

    // Holders of `key` by id.
    std::vector<std::string> holders(const std::string& key) {
        std::vector<std::string> ids;
        for (auto& h : table.info(key).holders) ids.push_back(h.id);
        std::sort(ids.begin(), ids.end());
        return ids;
    }
    bool writer_holds(const std::string& w, const std::string& id) {
        auto h = holders(w);
        return std::find(h.begin(), h.end(), id) != h.end();
    }
};

// A reader of the read-preferring client: begin_read, and for the first reader the write key.
void begin_read(fixture& f, session_id s, const std::string& n) { f.lock(s, n + "-r", "R", rw_status::begin_read, 10); }

}  // namespace

BOOST_AUTO_TEST_SUITE(rw_locks_test)

BOOST_FIXTURE_TEST_CASE(readers_share_and_the_first_takes_the_write_key, fixture) {
    begin_read(*this, 1, "a");
    auto a = take(1, "a-r");
    BOOST_REQUIRE(acquired(a));
    BOOST_TEST(readers_count(a) == 1u);
    lock(1, "a-w", "W", rw_status::locking_write_key);
    BOOST_TEST(acquired(take(1, "a-w")));
    unlock(1, "a-u", "R", std::string("a-r"), false, rw_status::begin_read);
    BOOST_TEST(take(1, "a-u").at("unlocked").as_bool());

    begin_read(*this, 2, "b");
    auto b = take(2, "b-r");
    BOOST_REQUIRE(acquired(b));
    BOOST_TEST(readers_count(b) == 2u);  // not first: it does not lock the write key
    unlock(2, "b-u", "R", std::string("b-r"), false, rw_status::begin_read);

    // A writer waits for both readers.
    lock(3, "x", "W", rw_status::begin_write, 1);
    BOOST_TEST(!acquired(take(3, "x")));
    BOOST_TEST(!writer_holds("W", "x"));

    // The first reader leaves first: the answer counts two readers before it left, so its client
    // keeps the write key; the writer still waits (live-mutex's broker lets it in here).
    lock(1, "a-e", "R", rw_status::end_read, 1);
    BOOST_TEST(readers_count(take(1, "a-e")) == 2u);
    unlock(1, "a-eu", "R", std::string("a-e"), false, rw_status::end_read);
    BOOST_TEST(!writer_holds("W", "x"));

    // The last reader: 1, and the write key goes to the writer.
    lock(2, "b-e", "R", rw_status::end_read, 1);
    BOOST_TEST(readers_count(take(2, "b-e")) == 1u);
    unlock(2, "b-eu", "R", std::string("b-e"), false, rw_status::end_read);
    unlock(2, "b-w", "W", std::nullopt, true, rw_status::unlocking_write_key);
    BOOST_TEST(writer_holds("W", "x"));
    BOOST_TEST(acquired(take(3, "x")));

    unlock(3, "x-e", "W", std::nullopt, true, rw_status::end_write);
    BOOST_TEST(holders("W").empty());
    BOOST_TEST(rw.idle());
    BOOST_TEST(table.counters().keys == 0u);
}

BOOST_FIXTURE_TEST_CASE(readers_wait_for_a_writer, fixture) {
    lock(3, "x", "W", rw_status::begin_write, 1);
    BOOST_REQUIRE(acquired(take(3, "x")));
    begin_read(*this, 1, "a");
    BOOST_TEST(readers_count(take(1, "a-r")) == 1u);
    lock(1, "a-w", "W", rw_status::locking_write_key);
    BOOST_TEST(!acquired(take(1, "a-w")));  // queued behind the writer
    // A second reader is not let in while the first waits for the write key.
    begin_read(*this, 2, "b");
    BOOST_TEST(take(2, "b-r").empty());
    // The writer ends: the readers' lock of W is granted, then the second reader comes in.
    unlock(3, "x-e", "W", std::nullopt, true, rw_status::end_write);
    BOOST_TEST(acquired(take(1, "a-w")));
    auto b = take(2, "b-r");
    BOOST_REQUIRE(acquired(b));
    BOOST_TEST(readers_count(b) == 2u);
    BOOST_TEST(holders("W").size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(the_first_readers_disconnect_keeps_the_write_key_for_the_others, fixture) {
    begin_read(*this, 1, "a");
    take(1, "a-r");
    lock(1, "a-w", "W", rw_status::locking_write_key, std::nullopt, 50ms);  // a short client ttl
    BOOST_REQUIRE(acquired(take(1, "a-w")));
    begin_read(*this, 2, "b");
    BOOST_TEST(readers_count(take(2, "b-r")) == 2u);
    lock(3, "x", "W", rw_status::begin_write, 1);
    close(1);        // the reader that took the write key dies
    advance(100ms);  // and the ttl its client asked for passes
    BOOST_TEST(!writer_holds("W", "x"));
    BOOST_TEST(take(3, "x").empty() == false);  // the queued notice, not a grant
    lock(2, "b-e", "R", rw_status::end_read, 1);
    BOOST_TEST(readers_count(take(2, "b-e")) == 1u);
    BOOST_TEST(writer_holds("W", "x"));
}

BOOST_FIXTURE_TEST_CASE(a_reader_that_never_gets_the_write_key_never_counts, fixture) {
    lock(3, "x", "W", rw_status::begin_write, 1);
    begin_read(*this, 1, "a");
    take(1, "a-r");
    lock(1, "a-w", "W", rw_status::locking_write_key);
    begin_read(*this, 2, "b");
    // a's client gives up on the write key: a never read; b becomes the first reader.
    BOOST_TEST(rw.abandon(1, "a-w", now));
    settle();
    auto b = take(2, "b-r");
    BOOST_REQUIRE(acquired(b));
    BOOST_TEST(readers_count(b) == 1u);
}

BOOST_FIXTURE_TEST_CASE(a_late_end_write_never_ends_the_next_writers_hold, fixture) {
    lock(3, "x", "W", rw_status::begin_write, 1, 50ms);
    lock(4, "y", "W", rw_status::begin_write, 1);
    advance(60ms);  // x's lease ends; y holds W
    BOOST_TEST(writer_holds("W", "y"));
    unlock(3, "x-e", "W", std::nullopt, true, rw_status::end_write);  // x finishes late
    BOOST_TEST(writer_holds("W", "y"));
    auto u = take(3, "x-e");
    BOOST_TEST(u.contains("warning"));
}

BOOST_FIXTURE_TEST_CASE(lmx_exclusive_and_rw_readers_exclude_each_other_on_the_read_key, fixture) {
    begin_read(*this, 1, "a");
    take(1, "a-r");
    lock(1, "a-w", "W", rw_status::locking_write_key);
    lock(5, "lmx-x", "R", std::nullopt);  // an lmx exclusive lock of R waits for the readers
    BOOST_TEST(!writer_holds("R", "lmx-x"));
    lock(6, "lmx-y", "R", std::nullopt);
    lock(1, "a-e", "R", rw_status::end_read, 1);
    take(1, "a-e");
    BOOST_TEST(writer_holds("R", "lmx-x"));
    // And a reader waits for the lmx exclusive holder.
    begin_read(*this, 2, "b");
    BOOST_TEST(take(2, "b-r").empty());
    table.release("R", "lmx-x", now, session_id{5});
    settle();
    table.release("R", "lmx-y", now, session_id{6});
    settle();
    BOOST_TEST(acquired(take(2, "b-r")));
}

BOOST_FIXTURE_TEST_CASE(write_preferring_readers_share_and_writers_exclude, fixture) {
    using k = req::rw_message_kind;
    // Two readers: check, lock (max 10), increment.
    for (session_id s : {1, 2}) {
        std::string n = "r" + std::to_string(s);
        message(s, k::write_flag_check, n + "-c", "K");
        BOOST_TEST(take(s, n + "-c").at("type").as_string() == "register-write-flag-success");
        lock(s, n + "-l", "K", std::nullopt, 10);
        BOOST_TEST(acquired(take(s, n + "-l")));
        message(s, k::increment_readers, n + "-i", "K");
        BOOST_TEST(take(s, n + "-i").at("type").as_string() == "increment-readers-success");
    }
    BOOST_TEST(holders("K").size() == 2u);
    // A writer's max-1 lock waits for the readers; a reader arriving now waits for the writer.
    lock(3, "w-l", "K", std::nullopt, 1);
    BOOST_TEST(!acquired(take(3, "w-l")));
    message(4, k::write_flag_check, "r4-c", "K");
    lock(4, "r4-l", "K", std::nullopt, 10);
    for (session_id s : {1, 2}) {
        std::string n = "r" + std::to_string(s);
        message(s, k::decrement_readers, n + "-d", "K");
        unlock(s, n + "-u", "K", n + "-l", false, std::nullopt);
    }
    BOOST_TEST(holders("K") == std::vector<std::string>{"w-l"});
    BOOST_TEST(acquired(take(3, "w-l")));
    message(3, k::write_flag_and_readers_check, "w-c", "K");
    BOOST_TEST(take(3, "w-c").at("type").as_string() == "register-write-flag-and-readers-check-success");
    unlock(3, "w-u", "K", std::string("w-l"), false, std::nullopt);
    message(3, k::clear_write_flag, "w-f", "K");
    BOOST_TEST(take(3, "w-f").at("type").as_string() == "write-flag-false-and-broadcast-success");
}

BOOST_FIXTURE_TEST_CASE(a_reader_waits_while_a_writer_has_the_flag_and_a_dead_writer_frees_it, fixture) {
    using k = req::rw_message_kind;
    lock(3, "w-l", "K", std::nullopt, 1);
    message(3, k::write_flag_and_readers_check, "w-c", "K");
    BOOST_TEST(!take(3, "w-c").empty());
    message(1, k::write_flag_check, "r1-c", "K");
    BOOST_TEST(take(1, "r1-c").empty());  // parked: no answer until the flag clears
    close(3);                             // the writer dies with the flag set
    auto c = take(1, "r1-c");
    BOOST_REQUIRE(!c.empty());
    BOOST_TEST(c.at("type").as_string() == "register-write-flag-success");
    BOOST_TEST(rw.readers("K", 0) == 0u);
}

BOOST_FIXTURE_TEST_CASE(a_reader_that_dies_is_no_longer_counted, fixture) {
    using k = req::rw_message_kind;
    message(1, k::write_flag_check, "r1-c", "K");
    lock(1, "r1-l", "K", std::nullopt, 10);
    message(1, k::increment_readers, "r1-i", "K");
    close(1);
    lock(3, "w-l", "K", std::nullopt, 1);
    BOOST_TEST(acquired(take(3, "w-l")));
    message(3, k::write_flag_and_readers_check, "w-c", "K");
    BOOST_TEST(take(3, "w-c").at("type").as_string() == "register-write-flag-and-readers-check-success");
    message(3, k::clear_write_flag, "w-f", "K");
    unlock(3, "w-u", "K", std::string("w-l"), false, std::nullopt);
    BOOST_TEST(rw.idle());
}

// Found by the rw_locks fuzz target: the readers' hold granted by the table in the same step as
// the only waiting reader's connection closed was left behind for good.
BOOST_FIXTURE_TEST_CASE(a_group_hold_granted_as_its_reader_leaves_is_not_left_behind, fixture) {
    lock(4, "u8", "R", std::nullopt);  // a plain exclusive hold of R
    begin_read(*this, 4, "b");         // the same connection's reader waits for it
    table.close_session(4, now);       // frees R: the readers' hold is granted...
    rw.close_session(4, now);          // ...before the RW layer has seen it
    settle();
    BOOST_TEST(rw.idle());
    BOOST_TEST(table.counters().keys == 0u);
}

// Found by the rw_locks fuzz target: a reader that gave up while waiting for the readers' hold
// left that request queued, to be granted later for no reader at all.
BOOST_FIXTURE_TEST_CASE(a_reader_giving_up_while_waiting_leaves_no_request_behind, fixture) {
    lock(4, "x", "R", std::nullopt);  // a plain exclusive hold of R: the readers' hold must wait
    begin_read(*this, 2, "b");
    BOOST_TEST(rw.abandon(2, "b-r", now));
    settle();
    table.release("R", "x", now, session_id{4});
    settle();
    BOOST_TEST(rw.idle());
    BOOST_TEST(table.counters().keys == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
