// The client's protocol logic without I/O (libs/client/src/session.hpp), driven frame by frame
// and millisecond by millisecond: the crossings that are timing races against a real broker
// (a cancel against a grant, a release against an expiry, a renewal against a loss, a late grant
// against its confirmation) in every order, deterministically.

#include "session.hpp"

#include <lmx/core/protocol.hpp>

#include <boost/test/unit_test.hpp>

#include <sstream>

using namespace std::chrono_literals;
using lmx::errc;
using lmx::detail::client_session;
using lmx::detail::completion;
using lmx::detail::hold;
using lmx::detail::request_op;
using lmx::detail::step;
using steady = std::chrono::steady_clock;
namespace core = lmx::core;
namespace req = lmx::core::req;

namespace lmx {
std::ostream& operator<<(std::ostream& o, errc e) { return o << make_error_code(e).message(); }
}  // namespace lmx

namespace {

using kind = request_op::kind;
constexpr auto request_timeout = 1000ms;

struct session_fixture {
    std::shared_ptr<std::atomic<bool>> open = std::make_shared<std::atomic<bool>>(true);
    client_session s{"T", request_timeout, {}, open};
    steady::time_point t0 = steady::time_point{} + 1000h;

    session_fixture() {
        s.on_transport_up();
        s.on_handshake_done(t0);
    }

    steady::time_point at(std::chrono::milliseconds ms) const { return t0 + ms; }

    // The requests the session queued since the last call, decoded.
    std::vector<core::request> sent() {
        std::vector<core::request> out;
        std::istringstream in(s.outbox());
        for (std::string line; std::getline(in, line);) {
            auto r = core::parse_request(line);
            BOOST_REQUIRE_MESSAGE(r, "not a request: " << line);
            out.push_back(std::move(r.value()));
        }
        s.outbox().clear();
        return out;
    }

    template <class T>
    T sent_one() {
        auto all = sent();
        BOOST_REQUIRE_EQUAL(all.size(), 1u);
        BOOST_REQUIRE(std::holds_alternative<T>(all.front()));
        return std::get<T>(all.front());
    }

    step take() {
        step out;
        std::swap(out, s.output());
        return out;
    }

    void reply(std::string_view frame, steady::time_point when) {
        auto r = core::decode_reply(frame);
        BOOST_REQUIRE_MESSAGE(r, "not a reply: " << frame);
        s.on_reply(std::move(r.value()), when);
    }

    // A lock request for `key`; returns (caller, uuid).
    std::pair<std::uint64_t, std::string> acquire(const std::string& key, std::chrono::milliseconds ttl, bool renew,
                                                  steady::time_point when, std::chrono::milliseconds timeout = 10000ms,
                                                  bool keep = false) {
        auto o = s.open_request(kind::grant, timeout);
        o->key = key;
        o->ttl = ttl;
        o->renew = renew;
        o->keep = keep;
        const std::string uuid = o->uuid;
        const core::request rq = req::lock{.uuid = uuid, .key = key, .ttl = ttl, .keep_on_exit = keep};
        const auto caller = s.submit(std::move(o), rq, when);
        return {caller, uuid};
    }

    static std::string grant(const std::string& uuid, const std::string& key, int token = 7) {
        return R"({"type":"lock","uuid":")" + uuid + R"(","key":")" + key + R"(","acquired":true,"fencingToken":)" +
               std::to_string(token) + "}";
    }

    // A granted hold: acquired at `when`, answered 10 ms later.
    std::shared_ptr<hold> held(const std::string& key, std::chrono::milliseconds ttl, bool renew,
                               steady::time_point when, bool keep = false) {
        auto [caller, uuid] = acquire(key, ttl, renew, when, 10000ms, keep);
        sent();
        reply(grant(uuid, key), when + 10ms);
        auto st = take();
        BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
        BOOST_REQUIRE(!st.done[0].ec);
        BOOST_REQUIRE(st.done[0].h);
        return st.done[0].h;
    }
};

steady::time_point expiry(const hold& h) { return steady::time_point(steady::duration(h.expires.load())); }

}  // namespace

BOOST_FIXTURE_TEST_SUITE(client_session_test, session_fixture)

BOOST_AUTO_TEST_CASE(ids_round_trip_and_foreign_ids_are_not_ours) {
    for (int i = 0; i < 5000; ++i) {
        const auto id = s.next_id();
        BOOST_TEST(s.serial_of(id) == static_cast<std::uint64_t>(i + 1));
    }
    BOOST_TEST(s.serial_of("U.1") == 0u);
    BOOST_TEST(s.serial_of("T.") == 0u);
    BOOST_TEST(s.serial_of("T.10") == 0u);  // a most significant zero: no id of ours
    BOOST_TEST(s.serial_of("T.!") == 0u);
}

BOOST_AUTO_TEST_CASE(requests_wait_for_the_handshake_and_go_out_in_order) {
    client_session fresh{"F", request_timeout, {}, open};
    auto a = fresh.open_request(kind::call, 1000ms);
    const core::request ra = req::ping{a->uuid, std::nullopt};
    fresh.submit(std::move(a), ra, t0);
    BOOST_TEST(fresh.outbox().empty());
    BOOST_TEST(fresh.waiting() == 1u);
    fresh.on_transport_up();
    auto hello = fresh.open_request(kind::call, 1000ms);
    const std::string hello_id = hello->uuid;
    const core::request rh = req::hello{hello->uuid, "test", 1};
    fresh.submit(std::move(hello), rh, t0, true);  // the handshake goes out alone
    BOOST_TEST(fresh.outbox().find(hello_id) != std::string::npos);
    BOOST_TEST(fresh.waiting() == 1u);
    fresh.outbox().clear();
    fresh.on_handshake_done(t0 + 5ms);
    BOOST_TEST(fresh.waiting() == 0u);
    BOOST_TEST(fresh.in_flight() == 2u);
    BOOST_TEST(fresh.outbox().find(R"("type":"ping")") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_failed_connect_fails_what_waited_with_its_reason) {
    client_session fresh{"F", request_timeout, {}, open};
    auto a = fresh.open_request(kind::call, 1000ms);
    const core::request ra = req::ping{a->uuid, std::nullopt};
    const auto caller = fresh.submit(std::move(a), ra, t0);
    fresh.on_connect_failed(make_error_code(errc::refused), t0);
    auto st = std::move(fresh.output());
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == caller);
    BOOST_TEST(st.done[0].ec == errc::refused);
    BOOST_TEST(!st.done[0].from_reply);
}

BOOST_AUTO_TEST_CASE(a_grant_that_crosses_a_cancel_is_given_back) {
    auto [caller, uuid] = acquire("k", 5000ms, false, t0);
    sent();
    s.cancel(caller, at(20ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].ec == errc::cancelled);
    BOOST_TEST(!st.done[0].h);
    auto cancel = sent_one<req::cancel>();
    BOOST_TEST(cancel.target == uuid);

    // The broker granted before it read the cancel: the grant goes straight back.
    reply(grant(uuid, "k"), at(21ms));
    BOOST_TEST(take().empty());  // nobody hears of it
    auto unlock = sent_one<req::unlock>();
    BOOST_TEST(unlock.key == "k");
    BOOST_TEST(unlock.lock_id.value_or("") == uuid);

    // The cancel's own answer closes the crossing: nothing more is given back.
    reply(R"({"type":"cancel","uuid":")" + cancel.uuid + R"(","cancelled":false})", at(22ms));
    reply(grant(uuid, "k"), at(23ms));
    BOOST_TEST(sent().empty());
    BOOST_TEST(!s.has_holds());
}

BOOST_AUTO_TEST_CASE(a_cancel_answered_first_leaves_nothing_to_give_back) {
    auto [caller, uuid] = acquire("k", 5000ms, false, t0);
    sent();
    s.cancel(caller, at(20ms));
    BOOST_TEST(take().done.at(0).ec == errc::cancelled);
    auto cancel = sent_one<req::cancel>();
    // The broker withdrew the waiter: its rejection and then the cancel's answer.
    reply(
        R"({"type":"lock","uuid":")" + uuid + R"(","key":"k","acquired":false,"error":"cancelled","code":"cancelled"})",
        at(21ms));
    reply(R"({"type":"cancel","uuid":")" + cancel.uuid + R"(","cancelled":true})", at(22ms));
    BOOST_TEST(take().empty());  // the caller already heard `cancelled`
    BOOST_TEST(sent().empty());
}

BOOST_AUTO_TEST_CASE(a_grant_that_arrives_before_the_cancel_wins) {
    auto [caller, uuid] = acquire("k", 5000ms, false, t0);
    sent();
    reply(grant(uuid, "k"), at(10ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(!st.done[0].ec);
    BOOST_TEST(st.done[0].from_reply);
    s.cancel(caller, at(11ms));  // too late: the caller has its guard
    BOOST_TEST(take().empty());
    BOOST_TEST(sent().empty());
    BOOST_TEST(!st.done[0].h->lost);
    BOOST_TEST(!st.done[0].h->ended.load());
}

BOOST_AUTO_TEST_CASE(a_local_timeout_withdraws_and_gives_back_a_late_grant) {
    auto [caller, uuid] = acquire("k", 5000ms, false, t0, 500ms);
    sent();
    BOOST_TEST((s.next_wake() == at(500ms)));
    s.on_time(at(499ms));
    BOOST_TEST(take().empty());
    s.on_time(at(500ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].ec == errc::timeout);
    BOOST_TEST(sent_one<req::cancel>().target == uuid);
    reply(grant(uuid, "k"), at(501ms));
    BOOST_TEST(sent_one<req::unlock>().lock_id.value_or("") == uuid);
    BOOST_TEST((s.next_wake() == steady::time_point::max()));
}

BOOST_AUTO_TEST_CASE(queued_notices_are_progress_not_the_answer) {
    auto o = s.open_request(kind::grant, 10000ms);
    o->key = "k";
    o->ttl = 1000ms;
    o->notify_queued = true;
    const std::string uuid = o->uuid;
    const core::request rq = req::lock{.uuid = uuid, .key = "k"};
    const auto caller = s.submit(std::move(o), rq, t0);
    reply(R"({"type":"lock","uuid":")" + uuid + R"(","key":"k","acquired":false,"queued":true,"position":3})", at(1ms));
    auto st = take();
    BOOST_TEST(st.done.empty());
    BOOST_REQUIRE_EQUAL(st.queued.size(), 1u);
    BOOST_TEST(st.queued[0].first == caller);
    BOOST_TEST(st.queued[0].second == 3u);
    BOOST_TEST(s.in_flight() == 1u);
}

BOOST_AUTO_TEST_CASE(a_lease_ends_at_send_time_plus_ttl_less_the_margin_and_is_given_back) {
    auto h = held("k", 1000ms, false, t0);
    // Counted from the send time (t0), not the grant (t0 + 10 ms); margin max(5%, 2 rtt) = 50 ms.
    BOOST_TEST((expiry(*h) == at(950ms)));
    s.on_time(at(949ms));
    BOOST_TEST(take().empty());
    BOOST_TEST(sent().empty());
    s.on_time(at(950ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].second == errc::lease_expired);
    BOOST_TEST(h->lost);
    BOOST_TEST(sent_one<req::unlock>().lock_id.value_or("") == h->id);  // the key is not left taken by nobody
    // The broker's own expiry arrives after: already over, heard once.
    reply(R"({"type":"lock-lost","uuid":")" + h->id + R"(","key":"k","reason":"expired"})", at(1001ms));
    BOOST_TEST(take().empty());
    BOOST_TEST(h->ended.load() == static_cast<int>(errc::lease_expired));
}

BOOST_AUTO_TEST_CASE(a_release_that_crosses_the_brokers_expiry_reports_the_loss) {
    auto h = held("k", 1000ms, false, t0);
    h->released = true;  // claimed by the guard's release
    const auto caller = s.release_hold(h, request_timeout, at(900ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].second == errc::released);
    auto unlock = sent_one<req::unlock>();
    // The broker expired the hold before it read the unlock: lock-lost first, then a warning.
    reply(R"({"type":"lock-lost","uuid":")" + h->id + R"(","key":"k","reason":"expired"})", at(901ms));
    BOOST_TEST(take().empty());  // the hold already ended here
    reply(R"({"type":"unlock","uuid":")" + unlock.uuid +
              R"(","key":"k","unlocked":true,"held":false,"warning":"the lock was not held"})",
          at(902ms));
    st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == caller);
    BOOST_TEST(st.done[0].ec == errc::lock_lost);
    BOOST_TEST(h->lost);
    // Its lease event comes up later and finds nothing to give back.
    s.on_time(at(2000ms));
    BOOST_TEST(sent().empty());
    BOOST_TEST(take().empty());
}

BOOST_AUTO_TEST_CASE(a_release_before_expiry_succeeds_and_cancels_the_lease_event) {
    auto h = held("k", 1000ms, false, t0);
    h->released = true;
    const auto caller = s.release_hold(h, request_timeout, at(500ms));
    take();
    auto unlock = sent_one<req::unlock>();
    reply(R"({"type":"unlock","uuid":")" + unlock.uuid + R"(","key":"k","unlocked":true})", at(501ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == caller);
    BOOST_TEST(!st.done[0].ec);
    BOOST_TEST(!h->lost);
    s.on_time(at(950ms));
    BOOST_TEST(sent().empty());
}

// The guard reports a hold lost from its lease's end on; a release or extend that comes before the
// lease event has been handled must agree with it, not reach a broker that still counts the lease.
BOOST_AUTO_TEST_CASE(a_release_or_extend_after_the_lease_ran_out_reports_the_loss_before_its_lease_event) {
    for (const bool release : {true, false}) {
        BOOST_TEST_CONTEXT("release " << release) {
            auto h = held(release ? "r" : "e", 1000ms, false, t0);
            h->released = release;  // claimed by the guard's release
            // No on_time since the grant: the lease event (at 950 ms) has not come up.
            const auto caller = release ? s.release_hold(h, request_timeout, at(960ms))
                                        : s.extend_hold(h, 1000ms, request_timeout, at(950ms));
            auto st = take();
            BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
            BOOST_TEST(st.done[0].caller == caller);
            BOOST_TEST(st.done[0].ec == errc::lock_lost);
            BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
            BOOST_TEST(st.ended[0].second == errc::lease_expired);
            BOOST_TEST(h->lost);
            BOOST_TEST(sent_one<req::unlock>().lock_id.value_or("") == h->id);  // still given back
        }
    }
    s.on_time(at(2000ms));
    BOOST_TEST(sent().empty());
    BOOST_TEST(take().empty());
}

BOOST_AUTO_TEST_CASE(renewals_go_out_at_a_third_and_move_the_lease) {
    auto h = held("k", 3000ms, true, t0);
    BOOST_TEST((s.next_wake() == at(1000ms)));
    s.on_time(at(1000ms));
    auto ext = sent_one<req::extend>();
    BOOST_TEST(ext.lock_id == h->id);
    BOOST_TEST(ext.ttl.value_or(0ms) == 3000ms);
    reply(R"({"type":"extend","uuid":")" + ext.uuid + R"(","key":"k","extended":true})", at(1020ms));
    BOOST_TEST(take().empty());
    // From the renewal's send time: 1000 + 3000 - max(150, 2 x 20) = 3850.
    BOOST_TEST((expiry(*h) == at(3850ms)));
    s.on_time(at(2000ms));
    BOOST_TEST(sent_one<req::extend>().lock_id == h->id);
}

BOOST_AUTO_TEST_CASE(a_loss_that_crosses_a_renewal_is_final) {
    auto h = held("k", 3000ms, true, t0);
    s.on_time(at(1000ms));
    auto ext = sent_one<req::extend>();
    const auto before = h->expires.load();
    reply(R"({"type":"lock-lost","uuid":")" + h->id + R"(","key":"k","reason":"forced"})", at(1001ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].second == errc::forced);
    // The renewal's success was decided before the force: it must not bring the hold back.
    reply(R"({"type":"extend","uuid":")" + ext.uuid + R"(","key":"k","extended":true})", at(1002ms));
    BOOST_TEST(take().empty());
    BOOST_TEST(h->ended.load() == static_cast<int>(errc::forced));
    BOOST_TEST(h->expires.load() == before);
    s.on_time(at(5000ms));
    BOOST_TEST(sent().empty());
}

BOOST_AUTO_TEST_CASE(a_renewal_refused_as_not_held_ends_the_hold) {
    auto h = held("k", 3000ms, true, t0);
    s.on_time(at(1000ms));
    auto ext = sent_one<req::extend>();
    reply(R"({"type":"extend","uuid":")" + ext.uuid +
              R"(","key":"k","extended":false,"error":"not held","code":"not_holder"})",
          at(1001ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].second == errc::lease_expired);
    BOOST_TEST(h->lost);
}

BOOST_AUTO_TEST_CASE(an_unanswered_renewal_is_retried_and_the_lease_still_ends_on_time) {
    auto h = held("k", 3000ms, true, t0);
    s.on_time(at(1000ms));
    sent_one<req::extend>();
    // The broker is frozen: the renewal's own deadline (request_timeout) passes.
    s.on_time(at(2000ms));
    BOOST_TEST(take().empty());  // nobody waits on a renewal
    s.on_time(at(2299ms));
    BOOST_TEST(sent().empty());
    s.on_time(at(2300ms));  // tried again after ttl / 10
    sent_one<req::extend>();
    BOOST_TEST(!h->ended.load());
    s.on_time(at(2849ms));
    BOOST_TEST(take().empty());
    s.on_time(at(2850ms));  // 3000 - 5%: the hold ends whether or not the broker answers
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].second == errc::lease_expired);
}

BOOST_AUTO_TEST_CASE(a_renewal_without_a_connection_is_retried_after_it) {
    auto h = held("k", 3000ms, true, t0);
    h->keep = true;  // survives the disconnect
    s.on_disconnect(make_error_code(errc::connection_lost), at(900ms));
    BOOST_TEST(take().empty());
    s.on_time(at(1000ms));
    BOOST_TEST(s.outbox().empty());
    BOOST_TEST(s.waiting() == 1u);  // the renewal waits for the connection
    s.on_transport_up();
    s.on_handshake_done(at(1100ms));
    BOOST_TEST(sent_one<req::extend>().lock_id == h->id);
}

BOOST_AUTO_TEST_CASE(a_late_grant_is_confirmed_before_it_is_handed_out) {
    auto [caller, uuid] = acquire("k", 3000ms, false, t0);
    sent();
    reply(grant(uuid, "k"), at(1500ms));  // after a long wait in line: more than ttl / 3
    BOOST_TEST(take().empty());
    auto ext = sent_one<req::extend>();
    BOOST_TEST(ext.lock_id == uuid);
    s.cancel(caller, at(1501ms));  // being confirmed: no longer cancellable
    BOOST_TEST(take().empty());
    reply(R"({"type":"extend","uuid":")" + ext.uuid + R"(","key":"k","extended":true})", at(1510ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == caller);
    BOOST_REQUIRE(st.done[0].h);
    BOOST_TEST((expiry(*st.done[0].h) == at(1500ms + 3000ms - 150ms)));
}

BOOST_AUTO_TEST_CASE(a_late_grant_that_cannot_be_confirmed_is_not_handed_out) {
    auto [caller, uuid] = acquire("k", 3000ms, false, t0);
    sent();
    reply(grant(uuid, "k"), at(1500ms));
    auto ext = sent_one<req::extend>();
    reply(R"({"type":"extend","uuid":")" + ext.uuid +
              R"(","key":"k","extended":false,"error":"gone","code":"not_holder"})",
          at(1510ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].ec == errc::lease_expired);
    BOOST_TEST(!st.done[0].h);
    BOOST_TEST(st.done[0].message == "gone");
    BOOST_TEST(!s.has_holds());
}

BOOST_AUTO_TEST_CASE(a_late_grant_whose_confirmation_times_out_is_given_back) {
    auto [caller, uuid] = acquire("k", 3000ms, false, t0);
    sent();
    reply(grant(uuid, "k"), at(1500ms));
    sent_one<req::extend>();
    s.on_time(at(2500ms));  // the confirmation's request_timeout
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].ec == errc::timeout);
    BOOST_TEST(!st.done[0].h);
    BOOST_TEST(sent_one<req::unlock>().lock_id.value_or("") == uuid);
}

BOOST_AUTO_TEST_CASE(a_lost_connection_fails_requests_and_ends_holds_not_kept) {
    auto kept = held("a", 60000ms, false, t0, true);
    auto plain = held("b", 60000ms, false, t0);
    auto [caller, uuid] = acquire("c", 60000ms, false, at(20ms));
    s.on_disconnect(make_error_code(errc::connection_lost), at(30ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == caller);
    BOOST_TEST(st.done[0].ec == errc::connection_lost);
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].first == plain);
    BOOST_TEST(st.ended[0].second == errc::connection_lost);
    BOOST_TEST(!kept->ended.load());
    BOOST_TEST(s.outbox().empty());
    // Reconnected to another run of the broker: the kept hold is gone too.
    s.lose_kept_holds();
    st = take();
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].first == kept);
}

BOOST_AUTO_TEST_CASE(close_ends_everything_and_refuses_what_comes_after) {
    auto h = held("a", lmx::no_expiry, false, t0, true);
    auto [caller, uuid] = acquire("b", 1000ms, false, at(1ms));
    s.close(at(2ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].ec == errc::closed);
    BOOST_REQUIRE_EQUAL(st.ended.size(), 1u);
    BOOST_TEST(st.ended[0].second == errc::closed);
    BOOST_TEST((s.next_wake() == steady::time_point::max()));
    auto [late, id] = acquire("c", 1000ms, false, at(3ms));
    st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == late);
    BOOST_TEST(st.done[0].ec == errc::closed);
}

BOOST_AUTO_TEST_CASE(the_brokers_words_and_codes_reach_the_caller) {
    auto [caller, uuid] = acquire("k", 1000ms, false, t0);
    sent();
    reply(
        R"({"type":"lock","uuid":")" + uuid +
            R"(","key":"k","acquired":false,"error":"field timeout must be a positive integer","code":"bad_request"})",
        at(1ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].ec == errc::bad_request);
    BOOST_TEST(st.done[0].message == "field timeout must be a positive integer");
}

BOOST_AUTO_TEST_CASE(an_unlock_by_an_id_that_held_nothing_is_not_held) {
    auto o = s.open_request(kind::unlock, request_timeout);
    o->key = "k";
    const std::string uuid = o->uuid;
    const core::request rq = req::unlock{uuid, "k", std::string("someone"), false};
    const auto caller = s.submit(std::move(o), rq, t0);
    reply(R"({"type":"unlock","uuid":")" + uuid + R"(","key":"k","unlocked":true,"held":false,"warning":"not held"})",
          at(1ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == caller);
    BOOST_TEST(st.done[0].ec == errc::not_held);
}

BOOST_AUTO_TEST_CASE(extend_of_an_ended_hold_fails_at_once) {
    auto h = held("k", 1000ms, false, t0);
    s.on_time(at(950ms));  // the lease ran out here
    take();
    sent();
    const auto caller = s.extend_hold(h, 1000ms, request_timeout, at(960ms));
    auto st = take();
    BOOST_REQUIRE_EQUAL(st.done.size(), 1u);
    BOOST_TEST(st.done[0].caller == caller);
    BOOST_TEST(st.done[0].ec == errc::lock_lost);
    BOOST_TEST(!st.done[0].from_reply);
    BOOST_TEST(sent().empty());
}

BOOST_AUTO_TEST_SUITE_END()
