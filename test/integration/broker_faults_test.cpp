// A real broker under faults: a fencing state that cannot be written (failpoint and a real
// file-system fault), a deadline loop that throws, a session whose frame or write fails, state
// files that are out of range or planted, and requests ended by other connections, whose owners
// must hear of it. Failpoints are switched on through LMX_FAILPOINTS (test builds only).

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <set>
#include <fstream>
#include <thread>

using namespace lmx::test;
namespace fs = std::filesystem;

namespace {

json::object healthz(const broker_process& b, int& status) {
    auto r = http_get(b.ws_url, "/healthz");
    status = r.status;
    return json::parse(r.body).as_object();
}

double metric(const broker_process& b, const std::string& name) {
    auto r = http_get(b.ws_url, "/metrics");
    auto at = r.body.find("\n" + name + " ");
    if (at == std::string::npos) throw std::runtime_error("no metric " + name);
    return std::stod(r.body.substr(at + name.size() + 2));
}

// Waits until /healthz answers `want` (200 or 503).
bool wait_health(const broker_process& b, int want, std::chrono::milliseconds wait = 8s) {
    auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        healthz(b, status);
        if (status == want) return true;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

broker_config with_state(const temp_dir& state, std::vector<std::string> env = {}) {
    return {.tcp = false, .extra_args = {"--fencing-block", "1"}, .state_dir = state.path(), .env = std::move(env)};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_faults_test)

// Issue: a failed fencing write threw out of the grant and left the table half-changed, the
// requesting connection hung and /healthz said ok.
BOOST_AUTO_TEST_CASE(a_failed_fencing_write_stops_grants_and_recovers) {
    temp_dir state;
    // Writes: the start, the first grant; then the handoff and two retries fail; the third retry works.
    checked_broker b(with_state(state, {"LMX_FAILPOINTS=fencing.store=2*off->3*error->off"}));
    wire_client a(b.unix_url), w(b.unix_url);
    auto g = acquire(a, "fa-1", "k");
    BOOST_REQUIRE(flag(g, "acquired"));
    auto q = acquire(w, "fw-1", "k");
    BOOST_REQUIRE(flag(q, "queued"));

    auto u = release(a, "fa-1", "k");
    BOOST_TEST(flag(u, "unlocked"), dump(u));
    BOOST_TEST(alive(a));  // the connection that triggered the failure is served
    BOOST_TEST(alive(w));
    auto refused = acquire(a, "fa-2", "other");
    BOOST_TEST(!flag(refused, "acquired"));
    BOOST_TEST(text(refused, "code") == "unavailable", dump(refused));
    int status = 0;
    auto h = healthz(b, status);
    BOOST_TEST(status == 503);
    BOOST_TEST(text(h, "status") == "unhealthy");
    BOOST_TEST(text(h, "reason").find("fencing") != std::string::npos, dump(h));
    BOOST_TEST(metric(b, "lmx_healthy") == 0);
    BOOST_TEST(metric(b, "lmx_fencing_store_failures_total") >= 1);
    BOOST_TEST(b.wait_for_log("cannot persist the fencing state"));
    BOOST_TEST(holders_of(a, "k").empty());  // nobody was half-granted

    // Once a write succeeds again, the waiter gets the lock that waited for it.
    auto grant = w.try_recv_for("fw-1", 8s);
    BOOST_REQUIRE(grant.has_value());
    BOOST_TEST(flag(*grant, "acquired"), dump(*grant));
    BOOST_TEST(number(*grant, "fencingToken") > number(g, "fencingToken"));
    BOOST_TEST(wait_health(b, 200));
    BOOST_TEST(metric(b, "lmx_healthy") == 1);
    BOOST_TEST(flag(acquire(a, "fa-3", "other"), "acquired"));
    BOOST_TEST(b.wait_for_log("fencing state written again"));
}

BOOST_AUTO_TEST_CASE(a_fencing_file_that_cannot_be_replaced_fails_closed) {
    temp_dir state;
    checked_broker b(with_state(state));
    wire_client a(b.unix_url);
    BOOST_REQUIRE(flag(acquire(a, "dir-1", "k1"), "acquired"));
    fs::create_directory(state.path() + "/fencing.tmp");  // the next write cannot create its temp file
    auto r = acquire(a, "dir-2", "k2");
    BOOST_TEST(text(r, "code") == "unavailable", dump(r));
    BOOST_TEST(wait_health(b, 503));
    fs::remove(state.path() + "/fencing.tmp");
    BOOST_TEST(wait_health(b, 200));
    BOOST_TEST(flag(acquire(a, "dir-3", "k2"), "acquired"));
}

BOOST_AUTO_TEST_CASE(the_deadline_loop_survives_an_exception) {
    checked_broker b({.tcp = false, .env = {"LMX_FAILPOINTS=deadline.tick=1*error->off"}});
    wire_client c(b.unix_url);
    BOOST_REQUIRE(flag(acquire(c, "dl-1", "k", {{"ttl", 100}}), "acquired"));
    auto lost = next_of_type(c, "lock-lost", 3s);
    BOOST_REQUIRE(lost.has_value());
    BOOST_TEST(text(*lost, "uuid") == "dl-1");
    BOOST_TEST(b.wait_for_log("expiring leases failed"));
    // Later deadlines still fire.
    BOOST_REQUIRE(flag(acquire(c, "dl-2", "k", {{"ttl", 100}}), "acquired"));
    lost = next_of_type(c, "lock-lost", 3s);
    BOOST_REQUIRE(lost.has_value());
    BOOST_TEST(text(*lost, "uuid") == "dl-2");
}

BOOST_AUTO_TEST_CASE(an_error_serving_a_frame_closes_only_that_session) {
    // Frames 1 and 2 are served; frame 3 (b's ping) fails.
    checked_broker b({.tcp = false, .env = {"LMX_FAILPOINTS=session.frame=2*off->1*error->off"}});
    wire_client a(b.unix_url), victim(b.unix_url);
    BOOST_REQUIRE(flag(acquire(a, "sf-a", "ka"), "acquired"));
    BOOST_REQUIRE(flag(acquire(victim, "sf-b", "kb"), "acquired"));
    victim.send(json::object{{"type", "ping"}, {"uuid", "sf-ping"}});
    BOOST_TEST(victim.closed_by_peer());
    BOOST_TEST(b.wait_for_log("internal error serving client"));
    BOOST_TEST(alive(a));
    BOOST_TEST(holders_of(a, "ka") == std::vector<std::string>{"sf-a"});
    BOOST_TEST(flag(acquire(a, "sf-a2", "kb"), "acquired"));  // the closed session's hold was released
}

BOOST_AUTO_TEST_CASE(a_failed_write_drops_only_that_client) {
    checked_broker b({.tcp = false, .env = {"LMX_FAILPOINTS=session.write=1*off->1*error->off"}});
    wire_client a(b.unix_url);
    BOOST_REQUIRE(flag(acquire(a, "sw-a", "ka"), "acquired"));
    wire_client victim(b.unix_url);
    victim.send(lock_msg("sw-b", "kb"));
    BOOST_TEST(victim.closed_by_peer());
    BOOST_TEST(alive(a));
    BOOST_TEST(flag(acquire(a, "sw-a2", "kb"), "acquired"));
}

BOOST_AUTO_TEST_CASE(fencing_state_beyond_two_to_the_53_is_refused) {
    temp_dir state;
    std::ofstream(state.path() + "/fencing") << 9007199254740992ull << "\n";  // 2^53
    auto r = run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--state-dir", state.path()});
    BOOST_TEST(r.status > 0);
    BOOST_TEST(r.output.find("beyond the token range") != std::string::npos, r.output);
    // A state file that cannot be read is not a first start either.
    temp_dir unreadable;
    fs::create_directory(unreadable.path() + "/fencing");
    r = run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--state-dir", unreadable.path()});
    BOOST_TEST(r.status > 0);
    BOOST_TEST(r.output.find("cannot read fencing state") != std::string::npos, r.output);
}

BOOST_AUTO_TEST_CASE(the_last_tokens_below_two_to_the_53_are_used_then_grants_stop) {
    temp_dir state;
    std::ofstream(state.path() + "/fencing") << 9007199254740990ull << "\n";  // 2^53 - 2
    checked_broker b({.tcp = false, .state_dir = state.path()});
    wire_client c(b.unix_url);
    auto g = acquire(c, "end-1", "k1");
    BOOST_REQUIRE(flag(g, "acquired"));
    BOOST_TEST(number(g, "fencingToken") == 9007199254740991ull);
    auto r = acquire(c, "end-2", "k2");
    BOOST_TEST(text(r, "code") == "unavailable", dump(r));
    BOOST_TEST(wait_health(b, 503));
}

BOOST_AUTO_TEST_CASE(a_planted_symlink_is_never_followed) {
    temp_dir state, elsewhere;
    const std::string victim = elsewhere.path() + "/precious";
    std::ofstream(victim) << "keep me\n";
    fs::create_symlink(victim, state.path() + "/fencing.tmp");
    {
        checked_broker b(with_state(state));
        wire_client c(b.unix_url);
        BOOST_TEST(flag(acquire(c, "sym-1", "k"), "acquired"));
    }
    std::ifstream in(victim);
    std::string line;
    std::getline(in, line);
    BOOST_TEST(line == "keep me");
    BOOST_TEST(!fs::is_symlink(state.path() + "/fencing"));
}

// Issue: release-many with someone else's lock id ended their hold without a lock-lost.
BOOST_AUTO_TEST_CASE(release_many_by_another_connection_tells_the_holder) {
    checked_broker b({.tcp = false});
    wire_client owner(b.unix_url), other(b.unix_url);
    auto g = owner.request({{"type", "acquire-many"}, {"uuid", "rm-1"}, {"keys", json::array{"x", "y"}}});
    BOOST_REQUIRE(flag(g, "acquired"));
    auto r = other.request({{"type", "release-many"}, {"uuid", "rm-2"}, {"lockUuid", "rm-1"}});
    BOOST_TEST(flag(r, "released"), dump(r));
    std::set<std::string> lost_keys;
    for (int i = 0; i < 2; ++i) {
        auto lost = next_of_type(owner, "lock-lost", 3s);
        BOOST_REQUIRE(lost.has_value());
        BOOST_TEST(text(*lost, "uuid") == "rm-1");
        BOOST_TEST(text(*lost, "reason") == "forced");
        lost_keys.insert(text(*lost, "key"));
    }
    BOOST_TEST((lost_keys == std::set<std::string>{"x", "y"}));
}

// Issue: a waiting request withdrawn by another connection was never answered.
BOOST_AUTO_TEST_CASE(a_waiting_request_withdrawn_by_another_connection_is_answered) {
    checked_broker b({.tcp = false});
    wire_client holder(b.unix_url), waiter(b.unix_url), other(b.unix_url);
    BOOST_REQUIRE(flag(acquire(holder, "wd-h", "k"), "acquired"));
    BOOST_REQUIRE(flag(acquire(waiter, "wd-w", "k"), "queued"));
    auto u = release(other, "wd-w", "k");
    BOOST_TEST(flag(u, "unlocked"), dump(u));
    auto answer = waiter.try_recv_for("wd-w", 3s);
    BOOST_REQUIRE(answer.has_value());
    BOOST_TEST(text(*answer, "type") == "lock");
    BOOST_TEST(!flag(*answer, "acquired"));
    BOOST_TEST(text(*answer, "code") == "cancelled", dump(*answer));

    // A waiting multi request withdrawn with release-many.
    auto q = waiter.request({{"type", "acquire-many"}, {"uuid", "wd-m"}, {"keys", json::array{"k", "z"}}});
    BOOST_REQUIRE(flag(q, "queued"));
    auto r = other.request({{"type", "release-many"}, {"uuid", "wd-r"}, {"lockUuid", "wd-m"}});
    BOOST_TEST(flag(r, "released"), dump(r));
    answer = waiter.try_recv_for("wd-m", 3s);
    BOOST_REQUIRE(answer.has_value());
    BOOST_TEST(text(*answer, "type") == "acquire-many");
    BOOST_TEST(text(*answer, "code") == "cancelled", dump(*answer));
}

BOOST_AUTO_TEST_CASE(live_mutex_connections_get_rejections_but_no_lock_lost) {
    checked_broker b({.tcp = false});
    wire_client holder(b.unix_url), waiter(b.unix_url), other(b.unix_url);
    holder.send(R"({"type":"version","value":"0.2.25"})");
    waiter.send(R"({"type":"version","value":"0.2.25"})");
    BOOST_REQUIRE(flag(acquire(holder, "lm-h", "k"), "acquired"));
    BOOST_REQUIRE(flag(acquire(waiter, "lm-w", "k"), "queued"));
    release(other, "lm-w", "k");
    auto answer = waiter.try_recv_for("lm-w", 3s);
    BOOST_REQUIRE(answer.has_value());
    BOOST_TEST(text(*answer, "code") == "cancelled");
    release(other, "lm-h", "k");
    BOOST_TEST(!next_of_type(holder, "lock-lost", 300ms).has_value());
}

// Issue: timeout and cancelled events carried the waiter's ttl as fencingToken and counted the
// request that had just left.
BOOST_AUTO_TEST_CASE(watch_events_of_leaving_waiters_report_the_queue_after_them) {
    checked_broker b({.tcp = false});
    wire_client watcher(b.unix_url), holder(b.unix_url), waiter(b.unix_url);
    BOOST_REQUIRE(flag(watcher.request({{"type", "watch"}, {"uuid", "ev-w"}}), "watching"));
    BOOST_REQUIRE(flag(acquire(holder, "ev-h", "k"), "acquired"));
    BOOST_REQUIRE(flag(acquire(waiter, "ev-t", "k", {{"ttl", 7777}, {"timeout", 100}}), "queued"));
    BOOST_REQUIRE(flag(acquire(waiter, "ev-n", "k", {{"ttl", nullptr}}), "queued"));
    auto ev_of = [&](std::string_view kind) {
        return watcher.try_recv_if([&](const json::object& o) { return text(o, "event") == kind; }, 3s);
    };
    auto timeout = ev_of("timeout");
    BOOST_REQUIRE(timeout.has_value());
    BOOST_TEST(text(*timeout, "uuid") == "ev-t");
    BOOST_TEST(!has(*timeout, "fencingToken"), dump(*timeout));
    BOOST_TEST(number(*timeout, "lockRequestCount") == 1u);
    BOOST_REQUIRE(flag(waiter.request({{"type", "cancel"}, {"uuid", "ev-c"}, {"target", "ev-n"}}), "cancelled"));
    auto cancelled = ev_of("cancelled");
    BOOST_REQUIRE(cancelled.has_value());
    BOOST_TEST(!has(*cancelled, "fencingToken"), dump(*cancelled));
    BOOST_TEST(number(*cancelled, "lockRequestCount") == 0u);
}

BOOST_AUTO_TEST_CASE(hello_names_an_epoch_that_changes_with_every_start) {
    temp_dir sock_dir;
    const std::string path = sock_dir.path() + "/lmx.sock";
    auto epoch_of = [](const std::string& url) {
        wire_client c(url);
        auto h = c.request({{"type", "hello"}, {"uuid", fresh_id("hello")}, {"protocol", 1}});
        return text(h, "epoch");
    };
    std::string first, again, second;
    {
        checked_broker b({.tcp = false, .websocket = false, .unix_path = path});
        first = epoch_of(b.unix_url);
        again = epoch_of(b.unix_url);
    }
    {
        checked_broker b({.tcp = false, .websocket = false, .unix_path = path});
        second = epoch_of(b.unix_url);
    }
    BOOST_TEST(first.size() == 32u);
    BOOST_TEST(first == again);
    BOOST_TEST(first != second);
}

BOOST_AUTO_TEST_SUITE_END()
