// HTTP on the WebSocket listener: /healthz, /metrics (Prometheus text), /v1/stats, the embedded
// web files (/, /lmx.js, /lmx.d.ts), 404s, and the Origin check on the WebSocket upgrade.

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

using namespace lmx::test;

namespace {

// "name value" and "name{labels} value" lines of a Prometheus text page, keyed by what precedes the value.
std::map<std::string, double> scrape(const broker_process& b) {
    auto r = http_get(b.ws_url, "/metrics");
    BOOST_REQUIRE_EQUAL(r.status, 200);
    std::map<std::string, double> out;
    std::istringstream in(r.body);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        auto sp = line.rfind(' ');
        out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
    return out;
}

double delta(std::map<std::string, double>& after, std::map<std::string, double>& before, const std::string& name) {
    BOOST_TEST_REQUIRE(after.contains(name), name);
    return after[name] - before[name];
}

std::string bucket(const char* le) { return std::string("lmx_acquire_wait_seconds_bucket{le=\"") + le + "\"}"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_http_test)

BOOST_AUTO_TEST_CASE(healthz) {
    checked_broker b;
    auto r = http_get(b.ws_url, "/healthz");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.headers["content-type"].starts_with("application/json"));
    auto body = boost::json::parse(r.body).as_object();
    BOOST_TEST(text(body, "status") == "ok");
    BOOST_TEST(!text(body, "version").empty());
    auto head = http_request(b.ws_url, "HEAD", "/healthz");
    BOOST_TEST(head.status == 200);
    BOOST_TEST(head.body.empty());
}

BOOST_AUTO_TEST_CASE(metrics_reflect_activity) {
    checked_broker b;
    auto page = http_get(b.ws_url, "/metrics");
    BOOST_TEST(page.status == 200);
    BOOST_TEST(page.headers["content-type"].starts_with("text/plain"));
    BOOST_TEST(page.body.find("# TYPE lmx_acquire_wait_seconds histogram") != std::string::npos);
    BOOST_TEST(page.body.find("# TYPE lmx_grants_total counter") != std::string::npos);
    auto m0 = scrape(b);
    for (const char* name :
         {"lmx_up", "lmx_uptime_seconds", "lmx_connections", "lmx_connections_total", "lmx_keys", "lmx_holders",
          "lmx_waiters", "lmx_grants_total", "lmx_releases_total", "lmx_expirations_total", "lmx_timeouts_total",
          "lmx_messages_in_total", "lmx_messages_out_total", "lmx_acquire_wait_seconds_sum",
          "lmx_acquire_wait_seconds_count"})
        BOOST_TEST(m0.contains(name), name);
    for (const char* le : {"0.0001", "0.1", "0.5", "+Inf"}) BOOST_TEST(m0.contains(bucket(le)), le);
    BOOST_TEST(m0["lmx_up"] == 1.0);

    {
        // One grant at once, one after ~150 ms in the queue.
        wire_client c1(b.tcp_url), c2(b.url("unix"));
        auto id1 = fresh_id("m"), id2 = fresh_id("m");
        BOOST_REQUIRE(flag(acquire(c1, id1, "metrics"), "acquired"));
        BOOST_REQUIRE(flag(acquire(c2, id2, "metrics"), "queued"));
        std::this_thread::sleep_for(150ms);
        BOOST_REQUIRE(flag(release(c1, id1, "metrics"), "unlocked"));
        BOOST_REQUIRE(flag(c2.recv_for(id2), "acquired"));
        auto rej = acquire(c1, fresh_id("m"), "metrics", {{"timeout", 20}});
        BOOST_REQUIRE(flag(rej, "queued"));
        BOOST_REQUIRE(text(c1.recv_for(text(rej, "uuid")), "code") == "timeout");

        auto m1 = scrape(b);
        BOOST_TEST(delta(m1, m0, "lmx_connections") == 2.0);
        BOOST_TEST(delta(m1, m0, "lmx_connections_total") == 2.0);
        BOOST_TEST(delta(m1, m0, "lmx_grants_total") == 2.0);
        BOOST_TEST(delta(m1, m0, "lmx_releases_total") == 1.0);
        BOOST_TEST(delta(m1, m0, "lmx_timeouts_total") == 1.0);
        BOOST_TEST(m1["lmx_holders"] == 1.0);
        BOOST_TEST(m1["lmx_keys"] == 1.0);
        BOOST_TEST(m1["lmx_waiters"] == 0.0);
        BOOST_TEST(delta(m1, m0, "lmx_messages_in_total") == 4.0);
        BOOST_TEST(delta(m1, m0, "lmx_acquire_wait_seconds_count") == 2.0);
        BOOST_TEST(delta(m1, m0, bucket("0.0001")) == 1.0);  // the immediate grant
        BOOST_TEST(delta(m1, m0, bucket("0.1")) == 1.0);     // buckets are cumulative
        BOOST_TEST(delta(m1, m0, bucket("0.5")) == 2.0);     // the one that waited ~150 ms
        BOOST_TEST(delta(m1, m0, bucket("+Inf")) == 2.0);
        BOOST_TEST(delta(m1, m0, "lmx_acquire_wait_seconds_sum") >= 0.14);
    }
    // The connections are gone once the broker has seen them close.
    auto deadline = std::chrono::steady_clock::now() + 3s;
    while (scrape(b)["lmx_connections"] != m0["lmx_connections"] && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    auto m2 = scrape(b);
    BOOST_TEST(m2["lmx_connections"] == m0["lmx_connections"]);
    BOOST_TEST(m2["lmx_holders"] == 0.0);
}

BOOST_AUTO_TEST_CASE(v1_stats_has_the_figures_of_system_stats) {
    checked_broker b;
    wire_client c1(b.tcp_url), c2(b.tcp_url);
    BOOST_REQUIRE(flag(acquire(c1, fresh_id("s"), "s1"), "acquired"));
    BOOST_REQUIRE(flag(acquire(c1, fresh_id("s"), "s2"), "acquired"));
    BOOST_REQUIRE(flag(acquire(c2, fresh_id("s"), "s1"), "queued"));
    auto wire = stats(c2);
    auto r = http_get(b.ws_url, "/v1/stats");
    BOOST_TEST(r.status == 200);
    BOOST_TEST(r.headers["content-type"].starts_with("application/json"));
    auto http = boost::json::parse(r.body).as_object();
    for (const char* f : {"connections", "connectedClients", "keys", "totalLocks", "holders", "waiters",
                          "pendingRequests", "grants", "releases", "expirations", "timeouts", "messagesIn", "pid"})
        BOOST_TEST(number(http, f) == number(wire, f), f);
    // The stats reply itself may or may not be counted in its own figure.
    BOOST_TEST(number(http, "messagesOut") - number(wire, "messagesOut") <= 1u);
    BOOST_TEST(number(http, "uptimeMs") >= number(wire, "uptimeMs"));
    BOOST_TEST(http.at("topContendedKeys") == wire.at("topContendedKeys"));
    BOOST_TEST(number(http, "holders") == 2u);
}

// The commit and build type, the same in `lmx --version`, /healthz and the lmx_build_info metric:
// a commit of this repository when it is built from a git checkout.
BOOST_AUTO_TEST_CASE(the_build_is_named_alike_in_version_healthz_and_metrics) {
    checked_broker b;
    const auto health = boost::json::parse(http_get(b.ws_url, "/healthz").body).as_object();
    const std::string commit = text(health, "commit"), type = text(health, "build_type");
    BOOST_TEST_INFO("commit " << commit << ", build type " << type);
    // git's short hash (with -dirty), "unknown", or what LMX_BUILD_COMMIT named.
    BOOST_TEST((!commit.empty() && commit.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyz"
                                                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ._+-") == std::string::npos));
    BOOST_TEST(!type.empty());
    const auto version = run_lmx({"--version"});
    BOOST_TEST(version.output.find("commit " + commit + ", " + type + " build") != std::string::npos, version.output);
    const auto page = http_get(b.ws_url, "/metrics").body;
    BOOST_TEST(page.find("\nlmx_build_info{version=\"" + text(health, "version") + "\",protocol=\"1\",commit=\"" +
                         commit + "\",build_type=\"" + type + "\"} 1\n") != std::string::npos,
               page);
    // Built from this checkout: git knows the commit.
    const auto source = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
    const bool from_git =
        commit.size() >= 12 && commit.substr(0, 12).find_first_not_of("0123456789abcdef") == std::string::npos;
    if (from_git && std::getenv("LMX_BUILD_COMMIT") == nullptr && std::filesystem::exists(source / ".git")) {
        const std::string hash = commit.substr(0, 12);
        const std::string command = "git -C '" + source.string() + "' cat-file -e " + hash + "^{commit} 2>/dev/null";
        BOOST_TEST(std::system(command.c_str()) == 0, command);
    }
}

// Numbers are written in the fewest digits that read back as them: no float noise such as
// 40.186999999999998 in /metrics or 4.0187E1 in /v1/stats.
BOOST_AUTO_TEST_CASE(numbers_carry_no_float_noise) {
    checked_broker b;
    std::this_thread::sleep_for(30ms);  // an uptime that is not a whole second
    std::istringstream in(http_get(b.ws_url, "/metrics").body);
    int samples = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        const std::string value = line.substr(line.rfind(' ') + 1);
        if (value == "+Inf") continue;
        double v = 0;
        std::from_chars(value.data(), value.data() + value.size(), v);
        if (v == static_cast<double>(static_cast<long long>(v))) {  // a whole number: its digits
            BOOST_TEST(value == std::to_string(static_cast<long long>(v)), line);
        } else {  // else the fewest digits that read back as it
            char shortest[64];
            const auto r = std::to_chars(shortest, shortest + sizeof shortest, v);
            BOOST_TEST(value == std::string(shortest, r.ptr), line);
        }
        ++samples;
    }
    BOOST_TEST(samples > 20);
    const auto stats = http_get(b.ws_url, "/v1/stats").body;
    const auto at = stats.find("\"uptime\":");
    BOOST_REQUIRE(at != std::string::npos);
    const std::string uptime = stats.substr(at + 9, stats.find(',', at) - at - 9);  // seconds, to the millisecond
    BOOST_TEST((uptime.size() >= 5 && uptime[uptime.size() - 4] == '.' &&
                uptime.find_first_not_of("0123456789.") == std::string::npos),
               uptime);
    BOOST_TEST(stats.find('E') == std::string::npos, stats);
}

BOOST_AUTO_TEST_CASE(embedded_web_files) {
    checked_broker b;
    struct page {
        const char* path;
        const char* type;
        const char* marker;
    };
    for (auto p : {page{"/", "text/html; charset=utf-8", "<!doctype html>"},
                   page{"/lmx.js", "text/javascript; charset=utf-8", "export async function connect("},
                   page{"/lmx.d.ts", "application/typescript; charset=utf-8", "export declare function connect("}}) {
        auto r = http_get(b.ws_url, p.path);
        BOOST_TEST(r.status == 200, p.path);
        BOOST_TEST(r.headers["content-type"] == p.type, p.path);
        BOOST_TEST(r.headers["x-content-type-options"] == "nosniff", p.path);
        BOOST_TEST(r.headers["cache-control"] == "no-cache", p.path);
        BOOST_TEST(r.body.find(p.marker) != std::string::npos, p.path);
        auto head = http_request(b.ws_url, "HEAD", p.path);
        BOOST_TEST(head.status == 200, p.path);
        BOOST_TEST(head.body.empty(), p.path);
        BOOST_TEST(head.headers["content-length"] == std::to_string(r.body.size()), p.path);
    }
    // The module may be imported by pages of any origin; the dashboard is confined by its CSP.
    BOOST_TEST(http_get(b.ws_url, "/lmx.js").headers["access-control-allow-origin"] == "*");
    auto dash = http_get(b.ws_url, "/?filter=orders");
    BOOST_TEST(dash.status == 200);
    BOOST_TEST(dash.headers["content-security-policy"].find("default-src 'none'") != std::string::npos);
    BOOST_TEST(!dash.headers.contains("access-control-allow-origin"));
    BOOST_TEST(http_get(b.ws_url, "/lmx.jsx").status == 404);
}

BOOST_AUTO_TEST_CASE(unknown_paths_and_methods) {
    checked_broker b;
    for (const char* path : {"/nope", "/metricsx", "/v1/stats/extra", "/healthz/"})
        BOOST_TEST(http_get(b.ws_url, path).status == 404, path);
    BOOST_TEST(http_request(b.ws_url, "POST", "/metrics", {{"Content-Length", "0"}}).status == 405);
    // Query strings are ignored.
    BOOST_TEST(http_get(b.ws_url, "/healthz?verbose=1").status == 200);
    // The broker is unharmed by any of it.
    wire_client c(b.ws_url);
    BOOST_TEST(alive(c));
}

BOOST_AUTO_TEST_CASE(websocket_upgrade_checks_origin) {
    {
        checked_broker b;
        raw_websocket foreign(b.ws_url, "http://evil.example");
        BOOST_TEST(foreign.status == 403);
        BOOST_TEST(foreign.socket().closed_by_peer(3s));
        BOOST_TEST(b.wait_for_log("refused WebSocket from origin http://evil.example"), b.log());
        // Clients that send no Origin (not browsers) and pages served by the broker itself are fine.
        raw_websocket none(b.ws_url);
        BOOST_TEST(none.status == 101);
        raw_websocket own(b.ws_url, "http://" + host_port_of(b.ws_url));
        BOOST_TEST(own.status == 101);
        BOOST_REQUIRE(own.send_text(R"({"type":"ping","uuid":"o1"})"));
        auto pong = own.recv(3s);
        BOOST_REQUIRE(pong.has_value());
        BOOST_TEST(text(boost::json::parse(pong->payload).as_object(), "type") == "pong");
    }
    {
        checked_broker b({.extra_args = {"--allow-origin", "http://evil.example"}});
        BOOST_TEST(raw_websocket(b.ws_url, "http://evil.example").status == 101);
        BOOST_TEST(raw_websocket(b.ws_url, "http://other.example").status == 403);
    }
    {
        checked_broker b({.extra_args = {"--allow-origin", "*"}});
        BOOST_TEST(raw_websocket(b.ws_url, "http://other.example").status == 101);
    }
}

BOOST_AUTO_TEST_CASE(browser_requests_must_name_a_literal_host) {
    {
        checked_broker b;
        const std::string host_port = host_port_of(b.ws_url);
        const std::string port = host_port.substr(host_port.rfind(':') + 1);
        const std::string rebound = "rebound.example:" + port;
        // A page of a DNS name that resolves to the broker (DNS rebinding): same-origin requests carry
        // Sec-Fetch-Site, cross-origin ones an Origin too.
        for (const char* path : {"/v1/stats", "/metrics", "/healthz", "/"}) {
            auto same = http_request(b.ws_url, "GET", path, {{"Host", rebound}, {"Sec-Fetch-Site", "same-origin"}});
            BOOST_TEST(same.status == 403, path);
            BOOST_TEST(same.body.find("\"keys\"") == std::string::npos, path);
            BOOST_TEST(
                http_request(b.ws_url, "GET", path, {{"Host", rebound}, {"Origin", "http://" + rebound}}).status == 403,
                path);
        }
        BOOST_TEST(b.wait_for_log("refused HTTP request from a browser for host " + rebound), b.log());
        // Programs (no Origin, no Sec-Fetch-Site) may use any name, e.g. a metrics scraper.
        BOOST_TEST(http_request(b.ws_url, "GET", "/metrics", {{"Host", rebound}}).status == 200);
        // Browsers that name the broker by an IP literal or localhost are fine.
        BOOST_TEST(http_request(b.ws_url, "GET", "/v1/stats", {{"Sec-Fetch-Site", "same-origin"}}).status == 200);
        const std::string local = "localhost:" + port;
        BOOST_TEST(
            http_request(b.ws_url, "GET", "/v1/stats", {{"Host", local}, {"Origin", "http://" + local}}).status == 200);
        BOOST_TEST(http_request(b.ws_url, "GET", "/lmx.js",
                                {{"Origin", "http://elsewhere.example"}, {"Sec-Fetch-Site", "cross-site"}})
                       .status == 200);
    }
    {
        // --allow-origin admits a name, as the broker's own origin or as the page's.
        checked_broker b(
            {.extra_args = {"--allow-origin", "http://app.example", "--allow-origin", "http://broker.example:1"}});
        BOOST_TEST(
            http_request(b.ws_url, "GET", "/lmx.js", {{"Host", "broker.lan:1"}, {"Origin", "http://app.example"}})
                .status == 200);
        BOOST_TEST(http_request(b.ws_url, "GET", "/", {{"Host", "broker.example:1"}, {"Sec-Fetch-Site", "same-origin"}})
                       .status == 200);
        BOOST_TEST(
            http_request(b.ws_url, "GET", "/", {{"Host", "broker.lan:1"}, {"Sec-Fetch-Site", "same-origin"}}).status ==
            403);
    }
}

BOOST_AUTO_TEST_SUITE_END()
