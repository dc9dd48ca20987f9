// The broker's lock service (libs/broker/src/lock_service.hpp) without sockets or clocks: requests
// go in with the time they arrive at, and the frames it writes to each client are read back as
// typed replies. Lease ends, wait timeouts and ages are asserted to the millisecond.

#include "lock_service.hpp"

#include <lmx/core/memory_store.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/core/replies.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <functional>
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

// A store that answers late, as one whose changes must first be committed to a shared log does:
// every call that changes state waits in a list until flush(), and then runs on the in-memory
// store with the time it was made at. Reads answer at once.
class late_store final : public core::lock_store {
public:
    late_store(core::effect_sink& sink, const core::table_config& config) : inner_(sink, config) {}

    // Runs the calls made so far, in order.
    void flush() {
        while (!calls_.empty()) {
            auto calls = std::move(calls_);
            calls_.clear();
            for (auto& call : calls) call();
        }
    }
    std::size_t pending() const { return calls_.size(); }

    void acquire(const core::acquire_request& r, time_point now) override {
        later([=, this, id = std::string(r.id), key = std::string(r.key)] {
            auto copy = r;
            copy.id = id;
            copy.key = key;
            inner_.acquire(copy, now);
        });
    }
    void acquire_many(const core::acquire_many_request& r, time_point now) override {
        later([=, this, id = std::string(r.id), keys = std::vector<std::string>(r.keys.begin(), r.keys.end())] {
            std::vector<std::string_view> views(keys.begin(), keys.end());
            auto copy = r;
            copy.id = id;
            copy.keys = views;
            inner_.acquire_many(copy, now);
        });
    }
    void release(const core::reply_to& to, std::string_view key, std::string_view id, time_point now) override {
        later(
            [=, this, t = owned(to), k = std::string(key), i = std::string(id)] { inner_.release(t.to(), k, i, now); });
    }
    void force_release(const core::reply_to& to, std::string_view key, std::optional<std::string_view> id,
                       time_point now) override {
        std::optional<std::string> i;
        if (id) i.emplace(*id);
        later([=, this, t = owned(to), k = std::string(key)] {
            std::optional<std::string_view> view;
            if (i) view = *i;
            inner_.force_release(t.to(), k, view, now);
        });
    }
    void release_many(const core::reply_to& to, std::string_view id, time_point now) override {
        later([=, this, t = owned(to), i = std::string(id)] { inner_.release_many(t.to(), i, now); });
    }
    void release_own(const core::reply_to& to, std::string_view key, time_point now) override {
        later([=, this, t = owned(to), k = std::string(key)] { inner_.release_own(t.to(), k, now); });
    }
    void cancel(const core::reply_to& to, std::string_view id, time_point now) override {
        later([=, this, t = owned(to), i = std::string(id)] { inner_.cancel(t.to(), i, now); });
    }
    void extend(const core::reply_to& to, std::string_view key, std::string_view id,
                std::optional<std::chrono::milliseconds> ttl, time_point now) override {
        later([=, this, t = owned(to), k = std::string(key), i = std::string(id)] {
            inner_.extend(t.to(), k, i, ttl, now);
        });
    }
    void abandon(core::session_id session, std::string_view id, time_point now) override {
        later([=, this, i = std::string(id)] { inner_.abandon(session, i, now); });
    }
    void close_session(core::session_id session, time_point now) override {
        later([=, this] { inner_.close_session(session, now); });
    }
    void expire(time_point now) override {
        later([=, this] { inner_.expire(now); });
    }
    std::uint32_t session_requests(core::session_id session) const noexcept override {
        return inner_.session_requests(session);
    }
    std::optional<time_point> next_deadline() override { return inner_.next_deadline(); }
    bool grants_stalled() const noexcept override { return inner_.grants_stalled(); }
    bool resume_grants(time_point now) override { return inner_.resume_grants(now); }
    void set_events(bool enabled) noexcept override { inner_.set_events(enabled); }
    void set_pin(std::string_view prefix, std::optional<std::uint32_t> max) override { inner_.set_pin(prefix, max); }
    core::key_page list_keys(std::uint64_t cursor, std::size_t limit) const override {
        return inner_.list_keys(cursor, limit);
    }
    core::key_info info(std::string_view key, std::size_t max_holders) const override {
        return inner_.info(key, max_holders);
    }
    core::table_counters counters() const noexcept override { return inner_.counters(); }
    std::vector<core::contended_key> top_contended(std::size_t n) const override { return inner_.top_contended(n); }
    core::fencing_token last_token() const noexcept override { return inner_.last_token(); }

private:
    struct owned_reply {
        core::session_id session;
        std::string uuid;
        core::answer_style style;
        core::reply_to to() const { return {.session = session, .uuid = uuid, .style = style}; }
    };
    static owned_reply owned(const core::reply_to& to) { return {to.session, std::string(to.uuid), to.style}; }
    void later(std::function<void()> call) { calls_.push_back(std::move(call)); }

    core::memory_store inner_;
    std::vector<std::function<void()>> calls_;
};

struct fixture {
    host h;
    late_store* late = nullptr;  // set when the fixture runs on a late_store
    detail::lock_service service;
    time_point t0 = time_point{} + 1000h;

    explicit fixture(detail::service_config config = {.table = {.default_ttl = 5000ms}, .epoch = "e1"})
        : service(h, std::move(config)) {}

    // On a late_store, with the default configuration.
    struct answering_late {};
    explicit fixture(answering_late)
        : service(h, {.table = {.default_ttl = 5000ms}, .epoch = "e1"},
                  [this](core::effect_sink& sink, const core::table_config& config) {
                      auto store = std::make_unique<late_store>(sink, config);
                      late = store.get();
                      return store;
                  }) {}

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

// Requests of every kind that changes state, from three clients, with the times they arrive at.
struct timed_request {
    core::session_id client;
    std::string json;
    std::chrono::milliseconds at;
};
std::vector<timed_request> busy_script() {
    return {
        {1, lock("a", "k", R"(,"ttl":1000)"), 0ms},
        {2, lock("b", "k"), 1ms},
        {3, lock("c", "k", R"(,"timeout":500)"), 2ms},
        {3, R"({"type":"cancel","uuid":"c1","target":"c"})", 3ms},
        {3, R"({"type":"cancel","uuid":"c2","target":"c"})", 4ms},
        {1, R"({"type":"extend","uuid":"x1","key":"k","_uuid":"a","ttl":2000})", 5ms},
        {2, R"({"type":"extend","uuid":"x2","key":"k","_uuid":"b","ttl":2000})", 6ms},
        {1, R"({"type":"acquire-many","uuid":"m","keys":["p","q"]})", 7ms},
        {2, R"({"type":"acquire-many","uuid":"n","keys":["q","r"],"wait":false})", 8ms},
        {1, R"({"type":"unlock","uuid":"u1","key":"k","_uuid":"a"})", 9ms},
        {1, R"({"type":"unlock","uuid":"u2","key":"k","_uuid":"a"})", 10ms},
        {3, R"({"type":"unlock","uuid":"u3","key":"k","_uuid":"b","force":true})", 11ms},
        {1, R"({"type":"release-many","uuid":"rm1","lockUuid":"m"})", 12ms},
        {1, R"({"type":"release-many","uuid":"rm2","lockUuid":"m"})", 13ms},
        {2, lock("d", "k", R"(,"ttl":50)"), 14ms},
        {2, R"({"type":"unlock","uuid":"u4","key":"k"})", 15ms},
        {3, R"({"type":"unlock","uuid":"u5","key":"k"})", 16ms},
    };
}

std::map<core::session_id, std::string> run_script(fixture& f, bool flush_each) {
    for (core::session_id id : {1, 2, 3}) f.connect(id, id == 3 ? detail::role::admin : detail::role::client);
    for (const auto& r : busy_script()) {
        f.send(r.client, r.json, f.t0 + r.at);
        if (f.late && flush_each) f.late->flush();
    }
    if (f.late) f.late->flush();
    return f.h.out;
}

// The lock service takes every answer from the store's effects, never from a call's return: a
// store that answers later gives each client the very same frames, in the same order.
BOOST_AUTO_TEST_CASE(a_store_that_answers_later_gives_the_same_replies) {
    fixture now_answering;
    const auto expected = run_script(now_answering, false);
    // The script reaches every answer: released, not held, extended and not, released-many and
    // not, cancelled and not, forced by another client.
    const auto has = [&](core::session_id id, std::string_view frame) {
        return expected.at(id).find(frame) != std::string::npos;
    };
    BOOST_TEST(has(1, R"("uuid":"u1","key":"k","unlocked":true)"));
    BOOST_TEST(has(1, R"("uuid":"u2","key":"k","unlocked":true,"lockRequestCount":0,"warning")"));
    BOOST_TEST(has(1, R"("uuid":"x1","key":"k","extended":true,"expiresInMs":2000)"));
    BOOST_TEST(has(2, R"("uuid":"x2","key":"k","extended":false)"));
    BOOST_TEST(has(1, R"("uuid":"rm1","lockUuid":"m","keys":["p","q"],"released":true)"));
    BOOST_TEST(has(1, R"("uuid":"rm2","released":false)"));
    BOOST_TEST(has(3, R"("uuid":"c1","cancelled":true)"));
    BOOST_TEST(has(3, R"("uuid":"c2","cancelled":false)"));
    BOOST_TEST(has(2, R"("type":"lock-lost","key":"k","uuid":"b","reason":"forced")"));
    BOOST_TEST(
        has(3, R"("uuid":"u5","key":"k","unlocked":true,"lockRequestCount":0,"warning":"no holder to release")"));

    fixture step_by_step{fixture::answering_late{}};
    const auto step = run_script(step_by_step, true);
    fixture all_at_once{fixture::answering_late{}};
    const auto once = run_script(all_at_once, false);
    for (core::session_id id : {1, 2, 3}) {
        BOOST_TEST(step.at(id) == expected.at(id), "client " << id);
        BOOST_TEST(once.at(id) == expected.at(id), "client " << id);
    }
}

// Until the store answers, the client hears nothing; an answer for a client that has gone
// meanwhile is dropped.
BOOST_AUTO_TEST_CASE(answers_wait_for_the_store_and_skip_clients_that_left) {
    fixture f{fixture::answering_late{}};
    f.connect(1);
    f.connect(2);
    f.send(1, lock("a", "k"), f.t0);
    f.send(2, lock("b", "k"), f.t0);
    BOOST_TEST(f.late->pending() == 2u);
    BOOST_TEST(f.replies(1).empty());
    f.late->flush();
    BOOST_TEST(f.only<rep::granted>(1).uuid == "a");
    BOOST_TEST(f.only<rep::queued>(2).uuid == "b");

    f.send(1, R"({"type":"unlock","uuid":"u","key":"k","_uuid":"a"})", f.t0 + 1ms);
    f.send(2, R"({"type":"cancel","uuid":"c","target":"b"})", f.t0 + 1ms);
    BOOST_TEST(f.replies(1).empty());
    BOOST_TEST(f.h.out[2].empty(), f.h.out[2]);
    f.h.closing[2] = true;
    f.late->flush();
    BOOST_TEST(f.only<rep::unlocked>(1).uuid == "u");
    BOOST_TEST(f.h.out[2].empty());
}

BOOST_AUTO_TEST_SUITE_END()
