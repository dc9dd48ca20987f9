// Authentication: --auth-token-file (tokens in the hello or the WebSocket upgrade, roles, SIGHUP
// reload), unix peers let in by uid, the deadline for a token, and the HTTP pages that need one.

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>

using namespace lmx::test;

namespace {

const std::string client_token = "client-token-0123456789abcdef";
const std::string admin_token = "admin-token-0123456789abcdef";

// A token file in its own directory, mode 0600, and a broker that reads it.
struct auth_fixture {
    temp_dir dir;
    std::string file = dir.path() + "/tokens";

    void write(const std::string& text) const {
        // Replaced by rename, as an operator's editor or deploy tool would.
        const std::string tmp = file + ".tmp";
        std::ofstream(tmp) << text;
        ::chmod(tmp.c_str(), 0600);
        BOOST_REQUIRE(std::rename(tmp.c_str(), file.c_str()) == 0);
    }

    auth_fixture() { write("# lmx tokens\n" + client_token + "\n\n" + admin_token + " admin   # the operator\n"); }

    broker_config config(std::vector<std::string> extra = {}) const {
        broker_config c;
        c.extra_args = {"--auth-token-file", file};
        c.extra_args.insert(c.extra_args.end(), extra.begin(), extra.end());
        return c;
    }
};

json::object hello(const std::string& token) {
    json::object h{{"type", "hello"}, {"uuid", fresh_id("h")}, {"client", "test"}, {"protocol", 1}};
    if (!token.empty()) h["token"] = token;
    return h;
}

// Sends `frame` and expects the broker to answer `unauthenticated` (with the frame's uuid, when
// `uuid` is given) and then close the connection.
void expect_refused(wire_client& c, const json::object& frame, const std::string& uuid) {
    c.send(frame);
    auto r = c.recv();
    BOOST_TEST(text(r, "type") == "error", dump(r));
    BOOST_TEST(text(r, "code") == "unauthenticated", dump(r));
    BOOST_TEST(text(r, "uuid") == uuid, dump(r));
    BOOST_TEST(c.closed_by_peer(), "the broker keeps an unauthenticated connection open");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_auth_test)

BOOST_AUTO_TEST_CASE(a_request_before_the_token_is_refused_and_the_connection_closed) {
    auth_fixture f;
    checked_broker b(f.config());
    for (auto kind : transports) {
        BOOST_TEST_CONTEXT(kind) {
            wire_client c(b.url(kind));
            const auto id = fresh_id("early");
            expect_refused(c, lock_msg(id, "k"), id);
        }
        // Nothing was locked by it.
        wire_client admin(b.url(kind));
        BOOST_TEST(text(admin.request(hello(admin_token)), "type") == "hello");
        BOOST_TEST(holders_of(admin, "k").empty());
    }
}

BOOST_AUTO_TEST_CASE(no_token_and_a_wrong_token_are_refused) {
    auth_fixture f;
    checked_broker b(f.config());
    for (auto kind : transports) {
        BOOST_TEST_CONTEXT(kind) {
            wire_client none(b.url(kind));
            auto h = hello("");
            expect_refused(none, h, text(h, "uuid"));
            wire_client wrong(b.url(kind));
            h = hello(client_token + "x");
            expect_refused(wrong, h, text(h, "uuid"));
            wire_client prefix(b.url(kind));
            h = hello(client_token.substr(0, client_token.size() - 1));
            expect_refused(prefix, h, text(h, "uuid"));
        }
    }
    // Refusals are logged, at most once a second, and counted (lmx_auth_refused_total).
    BOOST_TEST(b.log().find("refused connection from") != std::string::npos, b.log());
    wire_client admin(b.tcp_url);
    BOOST_TEST(text(admin.request(hello(admin_token)), "type") == "hello");
    BOOST_TEST(number(stats(admin), "authRefused") == 9u);
}

BOOST_AUTO_TEST_CASE(a_token_sent_after_another_request_is_too_late) {
    auth_fixture f;
    checked_broker b(f.config());
    wire_client c(b.tcp_url);
    const auto id = fresh_id("early");
    // Both frames in one write: the broker must not serve the hello that follows the refusal.
    c.send_raw(dump(lock_msg(id, "late")) + "\n" + dump(hello(client_token)) + "\n");
    auto r = c.recv();
    BOOST_TEST(text(r, "code") == "unauthenticated", dump(r));
    BOOST_TEST(text(r, "uuid") == id);
    BOOST_TEST(!c.try_recv(300ms).has_value(), "the hello after the refusal was answered");
    BOOST_TEST(c.closed_by_peer());
}

BOOST_AUTO_TEST_CASE(a_valid_token_admits_with_its_role) {
    auth_fixture f;
    checked_broker b(f.config());
    for (auto kind : transports) {
        BOOST_TEST_CONTEXT(kind) {
            wire_client c(b.url(kind));
            auto h = c.request(hello(client_token));
            BOOST_TEST(text(h, "type") == "hello", dump(h));
            BOOST_TEST(text(h, "role") == "client", dump(h));
            const auto id = fresh_id("l");
            auto g = acquire(c, id, "auth-key");
            BOOST_TEST(flag(g, "acquired"), dump(g));
            BOOST_TEST(flag(release(c, id, "auth-key"), "unlocked"));
            wire_client a(b.url(kind));
            BOOST_TEST(text(a.request(hello(admin_token)), "role") == "admin");
        }
    }
}

BOOST_AUTO_TEST_CASE(force_releasing_every_holder_needs_the_admin_role) {
    auth_fixture f;
    checked_broker b(f.config());
    wire_client holder(b.tcp_url), client(b.tcp_url), admin(b.tcp_url);
    holder.request(hello(client_token));
    client.request(hello(client_token));
    admin.request(hello(admin_token));
    const auto id = fresh_id("held");
    BOOST_TEST(flag(acquire(holder, id, "forced"), "acquired"));

    json::object force_all{{"type", "unlock"}, {"uuid", fresh_id("f")}, {"key", "forced"}, {"force", true}};
    auto r = client.request(force_all);
    BOOST_TEST(text(r, "code") == "forbidden", dump(r));
    BOOST_TEST(holders_of(admin, "forced") == std::vector<std::string>{id});
    BOOST_TEST(alive(client), "a forbidden request must not end the connection");

    // Any authenticated client may end a hold whose id it knows (the CLI's release --id).
    auto by_id = client.request(unlock_msg(id, "forced", {{"force", true}}));
    BOOST_TEST(flag(by_id, "unlocked"), dump(by_id));
    const auto id2 = fresh_id("held");
    BOOST_TEST(flag(acquire(holder, id2, "forced"), "acquired"));
    force_all["uuid"] = fresh_id("f");
    r = admin.request(force_all);
    BOOST_TEST(flag(r, "unlocked"), dump(r));
    BOOST_TEST(holders_of(admin, "forced").empty());
}

BOOST_AUTO_TEST_CASE(pinning_a_max_at_run_time_needs_the_admin_role) {
    auth_fixture f;
    checked_broker b(f.config());
    wire_client client(b.tcp_url), admin(b.tcp_url);
    client.request(hello(client_token));
    admin.request(hello(admin_token));
    json::object pin{{"type", "pin"}, {"uuid", fresh_id("p")}, {"prefix", "gpu/"}, {"max", 2}};
    auto r = client.request(pin);
    BOOST_TEST(text(r, "code") == "forbidden", dump(r));
    BOOST_TEST(flag(acquire(client, fresh_id("l"), "gpu/0", {{"max", 5}}), "acquired"));  // not pinned
    pin["uuid"] = fresh_id("p");
    r = admin.request(pin);
    BOOST_TEST(flag(r, "pinned"), dump(r));
    BOOST_TEST(number(r, "max") == 2u);
    auto refused = acquire(client, fresh_id("l"), "gpu/1", {{"max", 5}});
    BOOST_TEST(text(refused, "code") == "max_pinned", dump(refused));
    // Removed again: a request's own max applies.
    r = admin.request({{"type", "pin"}, {"uuid", fresh_id("p")}, {"prefix", "gpu/"}, {"max", nullptr}});
    BOOST_TEST(!flag(r, "pinned"), dump(r));
    BOOST_TEST(flag(acquire(client, fresh_id("l"), "gpu/1", {{"max", 5}}), "acquired"));
}

BOOST_AUTO_TEST_CASE(a_websocket_upgrade_may_carry_the_token) {
    auth_fixture f;
    checked_broker b(f.config());
    const auto lock_frame = [](const std::string& id) { return dump(lock_msg(id, "ws-upgrade")); };

    // A bearer header, as programs send it: no hello needed.
    {
        raw_websocket ws(b.ws_url, {}, 0, {{"Authorization", "Bearer " + client_token}});
        BOOST_REQUIRE_EQUAL(ws.status, 101);
        const auto id = fresh_id("b");
        BOOST_REQUIRE(ws.send_text(lock_frame(id)));
        auto m = ws.recv();
        BOOST_REQUIRE(m.has_value());
        auto r = boost::json::parse(m->payload).as_object();
        BOOST_TEST(flag(r, "acquired"), dump(r));
    }
    // The subprotocol browsers use (they cannot set headers); the broker selects "lmx".
    {
        raw_websocket ws(b.ws_url, {}, 0,
                         {{"Sec-WebSocket-Protocol", "lmx, lmx.token.YWRtaW4tdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg"}});
        BOOST_REQUIRE_EQUAL(ws.status, 101);
        BOOST_TEST(ws.response.headers["sec-websocket-protocol"] == "lmx");
        BOOST_REQUIRE(ws.send_text(dump(hello(""))));
        auto m = ws.recv();
        BOOST_REQUIRE(m.has_value());
        auto r = boost::json::parse(m->payload).as_object();
        BOOST_TEST(text(r, "role") == "admin", dump(r));  // the token is admin-token-0123456789abcdef
    }
    // A wrong bearer: the answer says why, then the connection ends.
    {
        raw_websocket ws(b.ws_url, {}, 0, {{"Authorization", "Bearer not-" + client_token}});
        BOOST_REQUIRE_EQUAL(ws.status, 101);
        auto m = ws.recv();
        BOOST_REQUIRE(m.has_value());
        auto r = boost::json::parse(m->payload).as_object();
        BOOST_TEST(text(r, "code") == "unauthenticated", dump(r));
        bool ended = false;
        for (int i = 0; i < 5 && !ended; ++i) {
            auto next = ws.recv(2s);
            ended = !next || next->op == 0 || next->op == raw_websocket::close_frame;
        }
        BOOST_TEST(ended);
    }
    // Never from the query string.
    {
        raw_websocket ws(b.ws_url + "?token=" + client_token);
        BOOST_REQUIRE_EQUAL(ws.status, 101);
        const auto id = fresh_id("q");
        BOOST_REQUIRE(ws.send_text(lock_frame(id)));
        auto m = ws.recv();
        BOOST_REQUIRE(m.has_value());
        BOOST_TEST(text(boost::json::parse(m->payload).as_object(), "code") == "unauthenticated");
    }
}

BOOST_AUTO_TEST_CASE(unix_peers_may_be_let_in_by_uid) {
    auth_fixture f;
    checked_broker b(f.config({"--unix-allow-uid", std::to_string(::getuid())}));
    // Like the npm live-mutex client: no hello, straight to work.
    wire_client local(b.unix_url);
    const auto id = fresh_id("uid");
    BOOST_TEST(flag(acquire(local, id, "by-uid"), "acquired"));
    // The rule is for the unix socket only.
    wire_client remote(b.tcp_url);
    const auto rid = fresh_id("tcp");
    expect_refused(remote, lock_msg(rid, "by-uid"), rid);
    // A client-role uid may not force-release everyone.
    auto r = local.request({{"type", "unlock"}, {"uuid", fresh_id("f")}, {"key", "by-uid"}, {"force", true}});
    BOOST_TEST(text(r, "code") == "forbidden", dump(r));
}

BOOST_AUTO_TEST_CASE(a_uid_that_is_not_allowed_is_refused) {
    auth_fixture f;
    // Some other uid (and gid): the test's own is not on the list.
    checked_broker b(f.config(
        {"--unix-allow-uid", std::to_string(::getuid() + 1), "--unix-allow-gid", std::to_string(::getgid() + 1)}));
    wire_client local(b.unix_url);
    const auto id = fresh_id("uid");
    expect_refused(local, lock_msg(id, "by-uid"), id);
}

// --unix-group: the socket file belongs to the group, so that with mode 0660 its members connect.
BOOST_AUTO_TEST_CASE(unix_group_owns_the_socket_file) {
    // A group other than our primary one that we may give files to: any, as root.
    gid_t other = 0;
    if (::geteuid() == 0) {
        other = ::getgid() == 65534 ? 0 : 65534;
    } else {
        gid_t groups[64];
        const int n = ::getgroups(64, groups);
        for (int i = 0; i < n && other == 0; ++i)
            if (groups[i] != ::getgid()) other = groups[i];
        if (other == 0) {
            BOOST_TEST_MESSAGE("skipped: not root and in no second group");
            return;
        }
    }
    checked_broker b(
        broker_config{.tcp = false, .websocket = false, .extra_args = {"--unix-group", std::to_string(other)}});
    struct stat st {};
    BOOST_REQUIRE(::stat(b.unix_url.substr(std::string("unix://").size()).c_str(), &st) == 0);
    BOOST_TEST(st.st_gid == other);
    BOOST_TEST((st.st_mode & 0777) == 0660u);
    auto r = run_lmx({"broker", "--listen", "unix:///tmp/lmx-no-such-group.sock", "--unix-group", "no-such-group-here"},
                     10s);
    BOOST_TEST(r.status == 2, r.output);
    BOOST_TEST(r.output.find("no group named 'no-such-group-here'") != std::string::npos, r.output);
}

BOOST_AUTO_TEST_CASE(a_connection_that_shows_no_token_in_time_is_closed) {
    auth_fixture f;
    checked_broker b(f.config({"--handshake-timeout", "300"}));
    wire_client c(b.tcp_url);
    auto r = c.try_recv(3s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(text(*r, "code") == "unauthenticated", dump(*r));
    BOOST_TEST(text(*r, "error").find("no token within 300 ms") != std::string::npos, dump(*r));
    BOOST_TEST(c.closed_by_peer());
}

BOOST_AUTO_TEST_CASE(sighup_reloads_the_tokens) {
    auth_fixture f;
    checked_broker b(f.config());
    wire_client kept(b.tcp_url), revoked(b.tcp_url);
    kept.request(hello(admin_token));
    revoked.request(hello(client_token));
    const std::string added = "added-token-0123456789abcdef";

    f.write(admin_token + " admin\n" + added + "\n");
    ::kill(b.pid(), SIGHUP);
    BOOST_REQUIRE(b.wait_for_log("reloaded " + f.file));
    // The revoked token's connection is told and closed; the kept one goes on; the new one works.
    auto r = revoked.recv();
    BOOST_TEST(text(r, "code") == "unauthenticated", dump(r));
    BOOST_TEST(revoked.closed_by_peer());
    BOOST_TEST(alive(kept));
    wire_client fresh(b.tcp_url);
    BOOST_TEST(text(fresh.request(hello(added)), "role") == "client");
    wire_client old(b.tcp_url);
    auto h = hello(client_token);
    expect_refused(old, h, text(h, "uuid"));

    // A broken file on reload changes nothing: the tokens read before stay in force.
    f.write(added + " superuser\n");
    ::kill(b.pid(), SIGHUP);
    BOOST_REQUIRE(b.wait_for_log("unknown role 'superuser'"));
    BOOST_TEST(b.log().find("the tokens read before stay in force") != std::string::npos);
    BOOST_TEST(alive(kept));
    BOOST_TEST(alive(fresh));
    wire_client again(b.tcp_url);
    BOOST_TEST(text(again.request(hello(admin_token)), "role") == "admin");
}

BOOST_AUTO_TEST_CASE(v1_stats_needs_a_token_and_metrics_only_when_asked) {
    auth_fixture f;
    {
        checked_broker b(f.config());
        auto denied = http_get(b.ws_url, "/v1/stats");
        BOOST_TEST(denied.status == 401);
        BOOST_TEST(denied.headers["www-authenticate"].starts_with("Bearer"));
        BOOST_TEST(
            http_request(b.ws_url, "GET", "/v1/stats", {{"Authorization", "Bearer wrong-0123456789abcdef"}}).status ==
            401);
        BOOST_TEST(http_request(b.ws_url, "GET", "/v1/stats", {{"Authorization", "Bearer " + client_token}}).status ==
                   200);
        BOOST_TEST(http_get(b.ws_url, "/metrics").status == 200);
        BOOST_TEST(http_get(b.ws_url, "/healthz").status == 200);
        BOOST_TEST(http_get(b.ws_url, "/").status == 200);  // the dashboard page loads; its data needs the token
    }
    {
        checked_broker b(f.config({"--auth-http"}));
        BOOST_TEST(http_get(b.ws_url, "/metrics").status == 401);
        BOOST_TEST(http_get(b.ws_url, "/healthz").status == 401);
        BOOST_TEST(http_request(b.ws_url, "GET", "/metrics", {{"Authorization", "Bearer " + admin_token}}).status ==
                   200);
    }
}

BOOST_AUTO_TEST_CASE(without_a_token_file_nothing_changes) {
    checked_broker b;
    wire_client c(b.tcp_url);
    auto h = c.request(hello("any-token-is-ignored-here"));
    BOOST_TEST(text(h, "type") == "hello");
    BOOST_TEST(!h.contains("role"));
    BOOST_TEST(http_get(b.ws_url, "/v1/stats").status == 200);
}

BOOST_AUTO_TEST_CASE(a_bad_token_file_stops_the_start_with_its_reason) {
    temp_dir dir;
    const std::string file = dir.path() + "/tokens";
    auto start = [&](const std::string& content) {
        std::ofstream(file) << content;
        ::chmod(file.c_str(), 0600);
        return run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--auth-token-file", file}, 10s);
    };
    auto r = start("short admin\n");
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output.find(file + ":1: a token must be at least 16 characters") != std::string::npos, r.output);
    r = start("# fine\n" + client_token + " root\n");
    BOOST_TEST(r.output.find(file + ":2: unknown role 'root'") != std::string::npos, r.output);
    r = run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--auth-token-file", dir.path() + "/missing"}, 10s);
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output.find("cannot read the token file") != std::string::npos, r.output);
    r = run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--unix-allow-uid", "no-such-user-here"}, 10s);
    BOOST_TEST(r.status == 2, r.output);
    BOOST_TEST(r.output.find("no user named 'no-such-user-here'") != std::string::npos, r.output);
}

BOOST_AUTO_TEST_CASE(a_token_file_others_can_read_is_warned_about) {
    auth_fixture f;
    ::chmod(f.file.c_str(), 0644);
    checked_broker b(f.config());
    BOOST_TEST(b.wait_for_log("can be read by other users (mode 0644)"), b.log());
}

// The request log (--log-level debug) names what each client asked, never the token it showed.
BOOST_FIXTURE_TEST_CASE(the_request_log_never_shows_a_token, auth_fixture) {
    checked_broker b(config({"--log-level", "debug"}));
    wire_client c(b.tcp_url);
    auto h = hello(client_token);
    const std::string id = text(h, "uuid");
    BOOST_TEST(text(c.request(h), "type") == "hello");
    BOOST_TEST(flag(acquire(c, fresh_id("t"), "logged-key"), "acquired"));
    BOOST_TEST(b.wait_for_log("key \"logged-key\""), b.log());
    BOOST_TEST(b.log().find("request hello id \"" + id + "\"") != std::string::npos, b.log());
    BOOST_TEST(b.log().find(client_token) == std::string::npos, b.log());
}

BOOST_AUTO_TEST_SUITE_END()
