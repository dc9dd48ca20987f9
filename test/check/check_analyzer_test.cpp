// The history analysis of `lmx check`, fed small hand-made histories: a correct one passes, and
// each kind of violation it exists to find is found, with nothing else reported.

#include "history.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

namespace json = boost::json;
using lmx::check::analyzer;
using lmx::check::summary;

namespace {

// Builds a history; every record is 1 ms after the one before.
struct history {
    std::vector<std::string> lines;
    std::int64_t t = 1'000'000'000;

    history& rec(const std::string& src, int s, const char* ev, const json::object& m = {},
                 const std::string& how = {}) {
        t += 1'000'000;
        json::object r{{"t", t}, {"src", src}, {"s", s}, {"ev", ev}};
        if (!m.empty()) r["m"] = m;
        if (!how.empty()) r["how"] = how;
        lines.push_back(json::serialize(r));
        return *this;
    }
    history& send(const std::string& src, int s, const json::object& m) { return rec(src, s, "send", m); }
    history& recv(const std::string& src, int s, const json::object& m) { return rec(src, s, "recv", m); }
    history& watch(const json::object& m) { return rec("watch", 1, "recv", m); }
    history& close(const std::string& src, int s, const std::string& how) { return rec(src, s, "close", {}, how); }
    history& control(const char* ev) { return rec("check", 0, ev); }
    // A watched broker run and a client connection of it.
    history& epoch(const std::string& e) {
        watch({{"type", "hello"}, {"uuid", "wh"}, {"epoch", e}});
        return watch({{"type", "watch"}, {"uuid", "ww"}, {"watching", true}});
    }
    history& hello(const std::string& src, int s, const std::string& e) {
        send(src, s, {{"type", "hello"}, {"uuid", src + "-h" + std::to_string(s)}});
        return recv(src, s, {{"type", "hello"}, {"uuid", src + "-h" + std::to_string(s)}, {"epoch", e}});
    }
    history& ev(const char* event, const std::string& key, const std::string& id, std::uint64_t token = 0) {
        json::object m{{"type", "event"}, {"event", event}, {"key", key}, {"uuid", id}};
        if (token) m["fencingToken"] = token;
        return watch(m);
    }
    history& lock(const std::string& src, int s, const std::string& id, const std::string& key,
                  json::object extra = {}) {
        json::object m{{"type", "lock"}, {"uuid", id}, {"key", key}, {"ttl", 10000}};
        for (auto& [k, v] : extra) m[k] = v;
        return send(src, s, m);
    }
    history& granted(const std::string& src, int s, const std::string& id, const std::string& key,
                     std::uint64_t token) {
        return recv(src, s,
                    {{"type", "lock"}, {"uuid", id}, {"key", key}, {"acquired", true}, {"fencingToken", token}});
    }
    history& queued(const std::string& src, int s, const std::string& id, const std::string& key) {
        return recv(src, s, {{"type", "lock"}, {"uuid", id}, {"key", key}, {"acquired", false}, {"queued", true}});
    }
    history& unlock(const std::string& src, int s, const std::string& uid, const std::string& id,
                    const std::string& key) {
        return send(src, s, {{"type", "unlock"}, {"uuid", uid}, {"key", key}, {"_uuid", id}});
    }
    history& unlocked(const std::string& src, int s, const std::string& uid, const std::string& key,
                      bool warning = false) {
        json::object m{{"type", "unlock"}, {"uuid", uid}, {"key", key}, {"unlocked", true}};
        if (warning) m["warning"] = "lock was not held (already released or expired)";
        return recv(src, s, m);
    }

    summary run(bool stream = true) {
        analyzer a({.broker_stream = stream});
        for (auto& l : lines) a.add(l);
        return a.finish();
    }
};

// Two clients take turns on one key: granted, released, handed on, all watched.
history correct_handoff() {
    history h;
    h.epoch("e1").hello("a", 1, "e1").hello("b", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("granted", "k", "a-1", 10).granted("a", 1, "a-1", "k", 10);
    h.lock("b", 1, "b-1", "k").ev("queued", "k", "b-1").queued("b", 1, "b-1", "k");
    h.unlock("a", 1, "a-2", "a-1", "k").ev("released", "k", "a-1", 10).ev("granted", "k", "b-1", 11);
    h.unlocked("a", 1, "a-2", "k").granted("b", 1, "b-1", "k", 11);
    h.unlock("b", 1, "b-2", "b-1", "k").ev("released", "k", "b-1", 11).unlocked("b", 1, "b-2", "k");
    h.close("a", 1, "clean").close("b", 1, "clean");
    return h;
}

std::uint64_t count(const summary& s, const std::string& kind) {
    auto it = s.violations_by_kind.find(kind);
    return it == s.violations_by_kind.end() ? 0 : it->second;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(check_analyzer_test)

BOOST_AUTO_TEST_CASE(a_correct_history_passes) {
    auto s = correct_handoff().run();
    BOOST_TEST(s.violation_count == 0u, lmx::check::format_summary(s));
    BOOST_TEST(s.grants == 2u);
    BOOST_TEST(s.epochs == 1u);
}

BOOST_AUTO_TEST_CASE(two_holders_of_a_mutex_in_the_stream) {
    history h;
    h.epoch("e1").hello("a", 1, "e1").hello("b", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("granted", "k", "a-1", 10).granted("a", 1, "a-1", "k", 10);
    h.lock("b", 1, "b-1", "k").ev("granted", "k", "b-1", 11).granted("b", 1, "b-1", "k", 11);
    auto s = h.run();
    BOOST_TEST(count(s, "over-max") == 1u, lmx::check::format_summary(s));
    BOOST_TEST(count(s, "client-overlap") == 1u);  // the clients' own view says the same
}

BOOST_AUTO_TEST_CASE(a_semaphore_within_its_max_passes_and_above_fails) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    for (int i = 1; i <= 3; ++i) {
        std::string id = "a-" + std::to_string(i);
        h.lock("a", 1, id, "k", {{"max", 2}}).ev("granted", "k", id, 10 + i).granted("a", 1, id, "k", 10 + i);
    }
    auto s = h.run();
    BOOST_TEST(count(s, "over-max") == 1u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(shared_and_exclusive_together) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.lock("a", 1, "a-1", "k", {{"max", 3}, {"mode", "shared"}})
        .ev("granted", "k", "a-1", 10)
        .granted("a", 1, "a-1", "k", 10);
    h.lock("a", 1, "a-2", "k", {{"max", 3}}).ev("granted", "k", "a-2", 11).granted("a", 1, "a-2", "k", 11);
    auto s = h.run();
    BOOST_TEST(count(s, "shared-with-exclusive") == 1u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(a_grant_the_stream_never_made) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("queued", "k", "a-1").granted("a", 1, "a-1", "k", 99);
    h.lock("a", 1, "a-2", "other").ev("granted", "other", "a-2", 100);  // the stream goes on
    auto s = h.run();
    BOOST_TEST(count(s, "phantom-grant") == 1u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(a_grant_sent_just_before_the_broker_died_is_not_a_phantom) {
    // A grant and its stream event leave in one flush, the client's first; a kill in between
    // leaves the grant alone, with no more of the stream after it.
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("queued", "k", "a-1").granted("a", 1, "a-1", "k", 99);
    h.control("broker-kill").close("a", 1, "lost");
    auto s = h.run();
    BOOST_TEST(s.violation_count == 0u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(a_waiter_served_out_of_turn) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("granted", "k", "a-1", 10).granted("a", 1, "a-1", "k", 10);
    h.lock("a", 1, "a-2", "k").ev("queued", "k", "a-2").lock("a", 1, "a-3", "k").ev("queued", "k", "a-3");
    h.unlock("a", 1, "a-4", "a-1", "k").ev("released", "k", "a-1", 10).ev("granted", "k", "a-3", 11);
    auto s = h.run();
    BOOST_TEST(count(s, "fifo") == 1u, lmx::check::format_summary(s));
}

// Over etcd the keys of one acquire-many share its token: that is one grant, not a token going
// back; the same token for another request is.
BOOST_AUTO_TEST_CASE(the_keys_of_one_acquire_many_may_share_a_token) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.send("a", 1, {{"type", "acquire-many"}, {"uuid", "a-1"}, {"keys", json::array{"k1", "k2"}}});
    h.ev("granted", "k1", "a-1", 20).ev("granted", "k2", "a-1", 20);
    h.recv("a", 1,
           {{"type", "acquire-many"},
            {"uuid", "a-1"},
            {"acquired", true},
            {"lockUuid", "a-1"},
            {"fencingTokens", {{"k1", 20}, {"k2", 20}}}});
    auto s = h.run();
    BOOST_TEST(count(s, "token-order") == 0u, lmx::check::format_summary(s));
    h.lock("a", 1, "a-2", "k3").ev("granted", "k3", "a-2", 20).granted("a", 1, "a-2", "k3", 20);
    s = h.run();
    BOOST_TEST(count(s, "token-order") == 1u, lmx::check::format_summary(s));
}

// A broker over etcd (hello lists "shared-store") grants the requests its queue admits together
// in the order their claims are written: a later one first is fine when all of them fit within
// the key's max. Beyond the max, or from a broker without a shared store, it is a FIFO breach.
BOOST_AUTO_TEST_CASE(admitted_together_may_be_granted_in_any_order_over_a_shared_store) {
    const auto run = [](bool shared_store, int max) {
        history h;
        json::object hello{{"type", "hello"}, {"uuid", "wh"}, {"epoch", "e1"}};
        if (shared_store) hello["features"] = json::array{"shared-store"};
        h.watch(hello).watch({{"type", "watch"}, {"uuid", "ww"}, {"watching", true}});
        h.hello("a", 1, "e1");
        h.lock("a", 1, "a-1", "k", {{"max", max}}).ev("queued", "k", "a-1");
        h.lock("a", 1, "a-2", "k", {{"max", max}}).ev("queued", "k", "a-2");
        h.ev("granted", "k", "a-2", 10).granted("a", 1, "a-2", "k", 10);
        h.ev("granted", "k", "a-1", 11).granted("a", 1, "a-1", "k", 11);
        return h.run();
    };
    auto s = run(true, 2);
    BOOST_TEST(count(s, "fifo") == 0u, lmx::check::format_summary(s));
    s = run(false, 2);
    BOOST_TEST(count(s, "fifo") == 1u, lmx::check::format_summary(s));
    s = run(true, 1);
    BOOST_TEST(count(s, "fifo") >= 1u, lmx::check::format_summary(s));
}

// Over a shared store a broker run's requests live on in etcd after it dies, and the next run's
// stream tells of them: of their ends (never having told of their start), and of a request sent
// after a grant whose event the dying run never streamed. Neither is a violation then; in memory
// (no "shared-store"), an end of a request the stream never had is.
BOOST_AUTO_TEST_CASE(a_run_over_a_shared_store_tells_of_requests_of_the_run_before) {
    const auto run = [](bool shared_store) {
        history h;
        const auto epoch = [&](const std::string& e) {
            json::object hello{{"type", "hello"}, {"uuid", "wh"}, {"epoch", e}};
            if (shared_store) hello["features"] = json::array{"shared-store"};
            h.watch(hello).watch({{"type", "watch"}, {"uuid", "ww"}, {"watching", true}});
        };
        epoch("e1");
        h.hello("a", 1, "e1").hello("b", 1, "e1");
        h.lock("b", 1, "b-1", "other").ev("queued", "other", "b-1");
        // Granted just before the run died: its event never made it to the stream.
        h.lock("a", 1, "a-1", "k").granted("a", 1, "a-1", "k", 10);
        h.lock("a", 1, "a-2", "k2");  // sent after that grant arrived
        h.control("broker-kill").close("a", 1, "lost").close("b", 1, "lost");
        epoch("e2");
        h.ev("queued", "k2", "a-2").ev("cancelled", "k2", "a-2");  // its session lease ran out
        h.ev("cancelled", "other", "b-1").ev("released", "k", "a-1", 10);
        // A client of another broker serving beside this one (never this stream's run): an end
        // of its request that the stream never started is still one.
        h.hello("c", 1, "e9").lock("c", 1, "c-1", "k3").ev("cancelled", "k3", "c-1");
        return h.run();
    };
    auto s = run(true);
    BOOST_TEST(count(s, "end-of-nothing") == 1u, lmx::check::format_summary(s));
    BOOST_TEST(s.violation_count == 1u, lmx::check::format_summary(s));
    s = run(false);
    BOOST_TEST(count(s, "end-of-nothing") == 3u, lmx::check::format_summary(s));
    BOOST_TEST(count(s, "phantom-grant") == 0u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(tokens_going_back_across_a_restart) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("granted", "k", "a-1", 50).granted("a", 1, "a-1", "k", 50);
    h.control("broker-kill").close("a", 1, "lost");
    h.epoch("e2").hello("a", 2, "e2");
    h.lock("a", 2, "a-2", "k").ev("granted", "k", "a-2", 40).granted("a", 2, "a-2", "k", 40);
    auto s = h.run();
    BOOST_TEST(count(s, "token-order") >= 1u, lmx::check::format_summary(s));
    BOOST_TEST(s.epochs == 2u);
}

BOOST_AUTO_TEST_CASE(a_hold_ended_without_telling_its_owner) {
    history h;
    h.epoch("e1").hello("a", 1, "e1").hello("b", 1, "e1");
    h.send("a", 1, {{"type", "acquire-many"}, {"uuid", "a-1"}, {"keys", json::array{"x", "y"}}, {"ttl", 10000}});
    h.ev("granted", "x", "a-1", 10).ev("granted", "y", "a-1", 11);
    h.recv("a", 1,
           {{"type", "acquire-many"}, {"uuid", "a-1"}, {"acquired", true}, {"fencingTokens", {{"x", 10}, {"y", 11}}}});
    // Another connection releases it; the owner hears nothing, and finds out at its own release.
    h.send("b", 1, {{"type", "release-many"}, {"uuid", "b-1"}, {"lockUuid", "a-1"}});
    h.ev("released", "x", "a-1", 10).ev("released", "y", "a-1", 11);
    h.recv("b", 1, {{"type", "release-many"}, {"uuid", "b-1"}, {"released", true}});
    h.send("a", 1, {{"type", "release-many"}, {"uuid", "a-2"}, {"lockUuid", "a-1"}});
    h.recv("a", 1,
           {{"type", "release-many"},
            {"uuid", "a-2"},
            {"released", false},
            {"error", "no such lock"},
            {"code", "not_found"}});
    auto s = h.run();
    BOOST_TEST(count(s, "silent-end") == 1u, lmx::check::format_summary(s));

    // The same with the notice: fine.
    history ok;
    ok.epoch("e1").hello("a", 1, "e1");
    ok.lock("a", 1, "a-1", "k").ev("granted", "k", "a-1", 10).granted("a", 1, "a-1", "k", 10);
    ok.ev("expired", "k", "a-1", 10)
        .recv("a", 1, {{"type", "lock-lost"}, {"uuid", "a-1"}, {"key", "k"}, {"reason", "ttl"}});
    ok.unlock("a", 1, "a-2", "a-1", "k").unlocked("a", 1, "a-2", "k", true);
    auto s2 = ok.run();
    BOOST_TEST(s2.violation_count == 0u, lmx::check::format_summary(s2));
}

BOOST_AUTO_TEST_CASE(a_waiter_withdrawn_by_another_connection_must_be_answered) {
    history h;
    h.epoch("e1").hello("a", 1, "e1").hello("b", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("granted", "k", "a-1", 10).granted("a", 1, "a-1", "k", 10);
    h.lock("b", 1, "b-1", "k").ev("queued", "k", "b-1").queued("b", 1, "b-1", "k");
    h.unlock("a", 1, "a-2", "b-1", "k").ev("cancelled", "k", "b-1").unlocked("a", 1, "a-2", "k");
    h.close("b", 1, "clean");  // b drained and closed: its request never got an answer
    auto s = h.run();
    BOOST_TEST(count(s, "lost-answer") == 1u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(an_answer_after_a_confirmed_cancel) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("queued", "k", "a-1").queued("a", 1, "a-1", "k");
    h.send("a", 1, {{"type", "cancel"}, {"uuid", "a-2"}, {"target", "a-1"}}).ev("cancelled", "k", "a-1");
    h.recv("a", 1, {{"type", "cancel"}, {"uuid", "a-2"}, {"cancelled", true}});
    h.recv("a", 1,
           {{"type", "lock"}, {"uuid", "a-1"}, {"key", "k"}, {"acquired", false}, {"error", "x"}, {"code", "timeout"}});
    auto s = h.run();
    BOOST_TEST(count(s, "double-answer") == 1u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(a_retry_after_the_answer_starts_the_request_again) {
    // Granted, forced away, then the retry (same uuid) queues anew and is cancelled: no double answer.
    history h;
    h.epoch("e1").hello("a", 1, "e1").hello("b", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("granted", "k", "a-1", 10).granted("a", 1, "a-1", "k", 10);
    h.lock("a", 1, "a-1", "k");  // the retry, sent before the grant arrived
    h.send("b", 1, {{"type", "unlock"}, {"uuid", "b-1"}, {"key", "k"}, {"force", true}});
    h.ev("forced", "k", "a-1", 10)
        .recv("a", 1, {{"type", "lock-lost"}, {"uuid", "a-1"}, {"key", "k"}, {"reason", "forced"}});
    h.lock("b", 1, "b-2", "k").ev("granted", "k", "b-2", 11).granted("b", 1, "b-2", "k", 11);
    h.ev("queued", "k", "a-1").queued("a", 1, "a-1", "k");
    h.send("a", 1, {{"type", "cancel"}, {"uuid", "a-2"}, {"target", "a-1"}}).ev("cancelled", "k", "a-1");
    h.recv("a", 1, {{"type", "cancel"}, {"uuid", "a-2"}, {"cancelled", true}});
    auto s = h.run();
    BOOST_TEST(s.violation_count == 0u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(an_unanswered_request_of_a_cut_connection_is_not_a_violation) {
    history h;
    h.epoch("e1").hello("a", 1, "e1");
    h.lock("a", 1, "a-1", "k").ev("queued", "k", "a-1");
    h.close("a", 1, "abort");
    auto s = h.run();
    BOOST_TEST(s.violation_count == 0u, lmx::check::format_summary(s));
    BOOST_TEST(s.sessions_cut == 1u);
}

BOOST_AUTO_TEST_CASE(client_leases_overlapping_without_a_stream) {
    // Another broker (no watch stream, no tokens): only the clients' view is checked.
    history h;
    h.lock("a", 1, "a-1", "k").recv("a", 1, {{"type", "lock"}, {"uuid", "a-1"}, {"key", "k"}, {"acquired", true}});
    h.lock("b", 1, "b-1", "k").recv("b", 1, {{"type", "lock"}, {"uuid", "b-1"}, {"key", "k"}, {"acquired", true}});
    auto s = h.run(false);
    BOOST_TEST(count(s, "client-overlap") == 1u, lmx::check::format_summary(s));
    // Handed over after the first release was sent: fine.
    history ok;
    ok.lock("a", 1, "a-1", "k").recv("a", 1, {{"type", "lock"}, {"uuid", "a-1"}, {"key", "k"}, {"acquired", true}});
    ok.lock("b", 1, "b-1", "k");
    ok.unlock("a", 1, "a-2", "a-1", "k")
        .recv("b", 1, {{"type", "lock"}, {"uuid", "b-1"}, {"key", "k"}, {"acquired", true}});
    auto s2 = ok.run(false);
    BOOST_TEST(s2.violation_count == 0u, lmx::check::format_summary(s2));
}

BOOST_AUTO_TEST_CASE(a_lease_that_ran_out_lets_the_next_holder_in) {
    history h;
    h.epoch("e1").hello("a", 1, "e1").hello("b", 1, "e1");
    h.lock("a", 1, "a-1", "k", {{"ttl", 5}}).ev("granted", "k", "a-1", 10).granted("a", 1, "a-1", "k", 10);
    h.lock("b", 1, "b-1", "k").ev("queued", "k", "b-1");
    h.t += 10'000'000;  // past a's lease
    h.ev("expired", "k", "a-1", 10).ev("granted", "k", "b-1", 11).granted("b", 1, "b-1", "k", 11);
    h.recv("a", 1, {{"type", "lock-lost"}, {"uuid", "a-1"}, {"key", "k"}, {"reason", "ttl"}});
    auto s = h.run();
    BOOST_TEST(s.violation_count == 0u, lmx::check::format_summary(s));
}

BOOST_AUTO_TEST_CASE(a_line_cut_by_a_kill_is_skipped) {
    auto h = correct_handoff();
    h.lines.push_back(R"({"t":99999999999,"src":"a","s":1,"ev":"se)");
    auto s = h.run();
    BOOST_TEST(s.violation_count == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
