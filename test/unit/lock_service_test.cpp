// The broker's lock service (libs/broker/src/lock_service.hpp) without sockets or clocks: requests
// go in with the time they arrive at, and the frames it writes to each client are read back as
// typed replies. Lease ends, wait timeouts and ages are asserted to the millisecond.

#include "lock_service.hpp"

#include <lmx/core/protocol.hpp>
#include <lmx/core/replies.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using lmx::core::time_point;
namespace core = lmx::core;
namespace detail = lmx::detail;
namespace rep = lmx::core::rep;

// The sessions part as the service sees it: one reply buffer per client, nothing written anywhere.
struct host final : detail::service_host {
    std::map<core::session_id, detail::client> clients;
    std::map<core::session_id, std::string> out;
    std::map<core::session_id, bool> closing;
    core::fencing_token reserved_up_to = 0;
    bool refuse_reservations = false;

    detail::client* find(core::session_id id) override {
        auto it = clients.find(id);
        return it == clients.end() || closing[id] ? nullptr : &it->second;
    }
    std::string& frames(detail::client& c) override { return out[c.id]; }
    core::fencing_token reserve_tokens(core::fencing_token needed) override {
        if (refuse_reservations) return 0;
        reserved_up_to = needed + 9;
        return reserved_up_to;
    }
    core::broker_stats stats() override { return {}; }
};

struct fixture {
    host h;
    detail::lock_service service;
    time_point t0 = time_point{} + 1000h;

    explicit fixture(detail::service_config config = {.table = {.default_ttl = 5000ms}, .epoch = "e1"})
        : service(h, std::move(config)) {}

    detail::client& connect(core::session_id id, detail::role role = detail::role::admin) {
        auto& c = h.clients[id];
        c.id = id;
        c.role = role;
        c.remote = "client " + std::to_string(id);
        return c;
    }

    // Serves one JSON request of client `id` at `at`.
    void send(core::session_id id, const std::string& json, time_point at) {
        auto& c = h.clients.at(id);
        auto parsed = core::parse_request(json);
        if (!parsed) return service.refuse(c, parsed.error());
        service.serve(c, parsed.value(), at);
    }

    // The frames written to client `id` since the last call, decoded.
    std::vector<core::typed_reply> replies(core::session_id id) {
        std::vector<core::typed_reply> all;
        std::string& buffer = h.out[id];
        std::size_t from = 0;
        for (auto end = buffer.find('\n'); end != std::string::npos; end = buffer.find('\n', from)) {
            auto decoded = core::decode_reply(std::string_view(buffer).substr(from, end - from));
            BOOST_REQUIRE_MESSAGE(decoded, "undecodable frame: " << buffer.substr(from, end - from));
            all.push_back(std::move(decoded.value()));
            from = end + 1;
        }
        BOOST_TEST(from == buffer.size(), "a frame without its newline");
        buffer.clear();
        return all;
    }

    template <class T>
    T only(core::session_id id) {
        auto all = replies(id);
        BOOST_REQUIRE_EQUAL(all.size(), 1u);
        BOOST_REQUIRE_MESSAGE(std::holds_alternative<T>(all[0]), "another reply type, index " << all[0].index());
        return std::get<T>(all[0]);
    }

    // The raw frames of client `id`, as JSON objects.
    std::vector<boost::json::object> objects(core::session_id id) {
        std::vector<boost::json::object> all;
        std::string& buffer = h.out[id];
        std::size_t from = 0;
        for (auto end = buffer.find('\n'); end != std::string::npos; end = buffer.find('\n', from)) {
            all.push_back(boost::json::parse(std::string_view(buffer).substr(from, end - from)).as_object());
            from = end + 1;
        }
        buffer.clear();
        return all;
    }
};

std::string lock(std::string_view uuid, std::string_view key, std::string_view extra = {}) {
    return R"({"type":"lock","uuid":")" + std::string(uuid) + R"(","key":")" + std::string(key) + "\"" +
           std::string(extra) + "}";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(lock_service_test)

// A lease ends at its ttl to the millisecond: the holder is told and the waiter gets the key.
BOOST_AUTO_TEST_CASE(a_lease_ends_exactly_at_its_ttl_and_hands_the_key_on) {
    fixture f;
    f.connect(1);
    f.connect(2);
    f.send(1, lock("a", "k", R"(,"ttl":250)"), f.t0);
    const auto first = f.only<rep::granted>(1);
    f.send(2, lock("b", "k"), f.t0 + 10ms);
    BOOST_TEST(f.only<rep::queued>(2).position == 1u);
    BOOST_REQUIRE(f.service.next_deadline().has_value());
    BOOST_TEST((*f.service.next_deadline() == f.t0 + 250ms));

    f.service.expire(f.t0 + 249ms);
    BOOST_TEST(f.replies(1).empty());
    BOOST_TEST(f.replies(2).empty());

    f.service.expire(f.t0 + 250ms);
    const auto lost = f.only<rep::lock_lost>(1);
    BOOST_TEST(lost.uuid == "a");
    BOOST_TEST(lost.reason == "ttl");
    const auto second = f.only<rep::granted>(2);
    BOOST_TEST(second.uuid == "b");
    BOOST_TEST(second.token > first.token);
}

// Without a ttl in the request the configured default applies (--ttl).
BOOST_AUTO_TEST_CASE(the_default_ttl_applies_when_the_request_names_none) {
    fixture f({.table = {.default_ttl = 250ms}});
    f.connect(1);
    f.send(1, lock("a", "k"), f.t0);
    f.only<rep::granted>(1);
    f.send(1, lock("forever", "other", R"(,"ttl":null)"), f.t0);
    f.only<rep::granted>(1);
    f.service.expire(f.t0 + 249ms);
    BOOST_TEST(f.replies(1).empty());
    f.service.expire(f.t0 + 250ms);
    BOOST_TEST(f.only<rep::lock_lost>(1).uuid == "a");
    f.service.expire(f.t0 + 1000h);
    BOOST_TEST(f.replies(1).empty(), "a hold with ttl null never ends");
}

// A waiter gives up at its timeout to the millisecond, and the queue forgets it.
BOOST_AUTO_TEST_CASE(a_wait_ends_exactly_at_its_timeout) {
    fixture f;
    f.connect(1);
    f.connect(2);
    f.send(1, lock("a", "k", R"(,"ttl":null)"), f.t0);
    f.only<rep::granted>(1);
    f.send(2, lock("b", "k", R"(,"timeout":100)"), f.t0);
    f.only<rep::queued>(2);
    f.service.expire(f.t0 + 99ms);
    BOOST_TEST(f.replies(2).empty());
    f.service.expire(f.t0 + 100ms);
    const auto failed = f.only<rep::failed>(2);
    BOOST_TEST(failed.uuid == "b");
    BOOST_TEST(failed.code == "timeout");
    // The key's queue is empty again: the holder's release hands it to nobody.
    f.send(1, R"({"type":"unlock","uuid":"u","key":"k","_uuid":"a"})", f.t0 + 200ms);
    BOOST_TEST(f.only<rep::unlocked>(1).ok);
    BOOST_TEST(f.replies(2).empty());
}

// extend moves the lease end from the time it arrives, and says when the lease ends.
BOOST_AUTO_TEST_CASE(extend_counts_from_its_arrival) {
    fixture f;
    f.connect(1);
    f.send(1, lock("a", "k", R"(,"ttl":100)"), f.t0);
    f.only<rep::granted>(1);
    f.send(1, R"({"type":"extend","uuid":"x","key":"k","_uuid":"a","ttl":300})", f.t0 + 80ms);
    const auto ext = f.only<rep::extended>(1);
    BOOST_TEST(ext.ok);
    BOOST_REQUIRE(ext.expires_in.has_value());
    BOOST_TEST(ext.expires_in->count() == 300);
    f.service.expire(f.t0 + 379ms);
    BOOST_TEST(f.replies(1).empty());
    f.service.expire(f.t0 + 380ms);
    BOOST_TEST(f.only<rep::lock_lost>(1).uuid == "a");
    // Too late now: the answer says the hold is gone.
    f.send(1, R"({"type":"extend","uuid":"y","key":"k","_uuid":"a","ttl":300})", f.t0 + 400ms);
    BOOST_TEST(f.only<rep::failed>(1).code == "not_holder");
}

// lock-info reports each holder's age and remaining lease from the request's arrival time.
BOOST_AUTO_TEST_CASE(lock_info_ages_and_leases_are_exact) {
    fixture f;
    f.connect(1);
    f.send(1, lock("a", "pool", R"(,"max":2,"ttl":60000)"), f.t0);
    f.only<rep::granted>(1);
    f.send(1, lock("s", "pool", R"(,"max":2,"ttl":null)"), f.t0 + 50ms);
    f.only<rep::granted>(1);
    f.send(1, R"({"type":"lock-info-request","uuid":"i","key":"pool"})", f.t0 + 80ms);
    const auto frames = f.objects(1);
    BOOST_REQUIRE_EQUAL(frames.size(), 1u);
    std::map<std::string, boost::json::object> by_id;
    for (const auto& h : frames[0].at("holders").as_array())
        by_id[std::string(h.at("uuid").as_string())] = h.as_object();
    BOOST_REQUIRE_EQUAL(by_id.size(), 2u);
    BOOST_TEST(by_id["a"].at("heldMs").to_number<std::int64_t>() == 80);
    BOOST_TEST(by_id["a"].at("expiresInMs").to_number<std::int64_t>() == 59920);
    BOOST_TEST(by_id["s"].at("heldMs").to_number<std::int64_t>() == 30);
    BOOST_TEST(by_id["s"].at("expiresInMs").is_null());
}

// A request that asked for no queued notice gets its grant alone.
BOOST_AUTO_TEST_CASE(no_queued_notice_when_the_request_asks_for_none) {
    fixture f;
    f.connect(1);
    f.connect(2);
    f.send(1, lock("a", "k"), f.t0);
    f.only<rep::granted>(1);
    f.send(2, lock("b", "k", R"(,"queuedNotice":false)"), f.t0);
    BOOST_TEST(f.replies(2).empty());
    f.send(1, R"({"type":"unlock","uuid":"u","key":"k","_uuid":"a"})", f.t0 + 1ms);
    f.only<rep::unlocked>(1);
    BOOST_TEST(f.only<rep::granted>(2).uuid == "b");
}

// live-mutex's client only warns about lock-lost for ids it does not know: it gets none.
BOOST_AUTO_TEST_CASE(live_mutex_clients_get_no_lock_lost) {
    fixture f;
    f.connect(1);
    f.connect(2);
    f.send(1, R"({"type":"version","value":"0.2.25"})", f.t0);
    BOOST_TEST(f.replies(1).empty());
    BOOST_TEST(f.h.clients[1].live_mutex);
    f.send(1, lock("a", "k", R"(,"ttl":100)"), f.t0);
    f.send(2, lock("b", "j", R"(,"ttl":100)"), f.t0);
    f.only<rep::granted>(1);
    f.only<rep::granted>(2);
    f.service.expire(f.t0 + 100ms);
    BOOST_TEST(f.replies(1).empty());
    BOOST_TEST(f.only<rep::lock_lost>(2).uuid == "b");
}

// Releasing every holder of a key at once is the admin's; naming the lock id is anyone's.
BOOST_AUTO_TEST_CASE(force_without_an_id_needs_the_admin_role) {
    fixture f;
    f.connect(1, detail::role::client);
    f.connect(2, detail::role::client);
    f.connect(3, detail::role::admin);
    f.send(1, lock("a", "k"), f.t0);
    f.only<rep::granted>(1);
    f.send(2, R"({"type":"unlock","uuid":"u","key":"k","force":true})", f.t0);
    const auto refused = f.only<rep::failed>(2);
    BOOST_TEST(refused.code == "forbidden");
    BOOST_TEST(f.replies(1).empty(), "the hold is untouched");
    f.send(3, R"({"type":"unlock","uuid":"v","key":"k","force":true})", f.t0);
    BOOST_TEST(f.only<rep::unlocked>(3).ok);
    BOOST_TEST(f.only<rep::lock_lost>(1).reason == "forced");
    // Pinning a key's max is the admin's too.
    f.send(2, R"({"type":"pin","uuid":"p","prefix":"k","max":3})", f.t0);
    BOOST_TEST(f.only<rep::failed>(2).code == "forbidden");
}

// A closed connection's waits end and its holds go to the next in line, except keep-on-exit ones.
BOOST_AUTO_TEST_CASE(closing_a_client_hands_on_its_holds_but_keeps_kept_ones) {
    fixture f;
    auto& one = f.connect(1);
    f.connect(2);
    f.send(1, lock("a", "k"), f.t0);
    f.send(1, lock("kept", "j", R"(,"keepLocksOnExit":true,"ttl":null)"), f.t0);
    f.replies(1);
    f.send(2, lock("b", "k"), f.t0);
    f.send(2, lock("c", "j"), f.t0);
    BOOST_TEST(f.replies(2).size() == 2u);
    BOOST_TEST(!f.service.idle(one));
    f.h.closing[1] = true;
    f.service.close(one, f.t0 + 1ms);
    const auto got = f.only<rep::granted>(2);
    BOOST_TEST(got.uuid == "b");
    BOOST_TEST(f.replies(1).empty(), "nothing is written to a closed client");
    BOOST_TEST(f.service.store().info("j").holders.size() == 1u);
}

// Watchers get the events of the keys they watch; watchers of every key also the connection count.
BOOST_AUTO_TEST_CASE(watchers_get_their_keys_and_the_connection_count) {
    fixture f;
    f.connect(1);
    f.connect(2);
    f.connect(3);
    f.send(1, R"({"type":"watch","uuid":"w1"})", f.t0);
    f.send(2, R"({"type":"watch","uuid":"w2","keys":["k"]})", f.t0);
    f.replies(1);
    f.replies(2);
    f.send(3, lock("a", "k"), f.t0);
    f.send(3, lock("b", "other"), f.t0);
    f.replies(3);
    const auto all = f.replies(1);
    const auto some = f.replies(2);
    BOOST_TEST(all.size() == 2u);
    BOOST_REQUIRE_EQUAL(some.size(), 1u);
    BOOST_TEST(std::get<rep::event>(some[0]).key == "k");
    BOOST_TEST(std::get<rep::event>(some[0]).name == "granted");

    BOOST_TEST(f.service.announce_connections(3));
    BOOST_TEST(f.replies(1).size() == 1u);
    BOOST_TEST(f.replies(2).empty());
    f.send(1, R"({"type":"unwatch","uuid":"u1"})", f.t0);
    f.replies(1);
    BOOST_TEST(!f.service.announce_connections(2), "no watcher of every key is left");
    BOOST_TEST(f.replies(1).empty());
}

// A frame that does not parse is answered in the shape its type expects, with its uuid.
BOOST_AUTO_TEST_CASE(unreadable_requests_are_answered_in_their_own_shape) {
    fixture f;
    f.connect(1);
    f.send(1, R"({"type":"lock","uuid":"a","key":""})", f.t0);
    auto bad_lock = f.only<rep::failed>(1);
    BOOST_TEST(bad_lock.uuid == "a");
    BOOST_TEST(bad_lock.type == "lock");
    f.send(1, R"({"type":"unlock","uuid":"b","key":7})", f.t0);
    auto bad_unlock = f.only<rep::failed>(1);
    BOOST_TEST(bad_unlock.uuid == "b");
    BOOST_TEST(bad_unlock.type == "unlock");
    f.send(1, R"({"type":"frobnicate","uuid":"c"})", f.t0);
    auto unknown = f.only<rep::failed>(1);
    BOOST_TEST(unknown.uuid == "c");
    BOOST_TEST(unknown.code == "unknown_type");
}

// hello names the client's role only when the broker requires authentication.
BOOST_AUTO_TEST_CASE(hello_names_the_role_only_with_authentication_on) {
    for (const bool auth : {false, true}) {
        fixture f({.epoch = "e9", .auth_on = auth});
        f.connect(4, detail::role::client);
        f.send(4, R"({"type":"hello","uuid":"h","protocol":1})", f.t0);
        const auto frames = f.objects(4);
        BOOST_REQUIRE_EQUAL(frames.size(), 1u);
        BOOST_TEST(frames[0].at("epoch").as_string() == "e9");
        BOOST_TEST(frames[0].at("session").as_string() == "4");
        if (auth)
            BOOST_TEST(frames[0].at("role").as_string() == "client");
        else
            BOOST_TEST(!frames[0].contains("role"));
    }
}

// While the fencing reservation fails nothing is granted; once it succeeds the waiters get theirs.
BOOST_AUTO_TEST_CASE(grants_wait_for_the_fencing_reservation) {
    fixture f;
    f.connect(1);
    f.connect(2);
    f.h.refuse_reservations = true;
    f.send(1, lock("a", "k"), f.t0);
    BOOST_TEST(f.only<rep::failed>(1).code == "unavailable");
    BOOST_TEST(f.service.store().grants_stalled());
    BOOST_TEST(!f.service.resume_grants(f.t0 + 1s));
    f.h.refuse_reservations = false;
    BOOST_TEST(f.service.resume_grants(f.t0 + 2s));
    f.send(2, lock("b", "k"), f.t0 + 2s);
    const auto granted = f.only<rep::granted>(2);
    BOOST_TEST(granted.token <= f.h.reserved_up_to);
}

BOOST_AUTO_TEST_SUITE_END()
