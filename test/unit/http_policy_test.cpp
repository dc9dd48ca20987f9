// Unit tests of the broker's Host and Origin rules (libs/broker/src/http_policy.hpp): which
// browsers may read the HTTP pages and open a WebSocket, without a broker or a socket.

#include "http_policy.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>
#include <vector>

using lmx::detail::http_policy;
using lmx::transport::http_request_view;

namespace {

// A request as a browser sends it (Origin and Sec-Fetch-Site), or as a program does (neither).
http_request_view request(std::string_view host, std::string_view origin, std::string_view fetch_site = {}) {
    http_request_view rq{};
    rq.method = "GET";
    rq.target = "/metrics";
    rq.host = host;
    rq.origin = origin;
    rq.sec_fetch_site = fetch_site;
    return rq;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http_policy_test)

BOOST_AUTO_TEST_CASE(literal_hosts_are_addresses_and_localhost) {
    for (std::string_view h : {"127.0.0.1:6971", "10.1.2.3", "[::1]:6971", "[fe80::1]", "localhost:6971", "localhost"})
        BOOST_TEST(http_policy::literal_host(h), h);
    for (std::string_view h :
         {"broker.example:6971", "evil.example", "", ":6971", "localhost.evil:80", "127.0.0.1.nip.io"})
        BOOST_TEST(!http_policy::literal_host(h), h);
}

BOOST_AUTO_TEST_CASE(programs_read_every_page) {
    const http_policy policy({});
    BOOST_TEST(policy.browser_may_read(request("broker.example:6971", "")));
    BOOST_TEST(policy.websocket_origin_ok(request("broker.example:6971", "")));
}

BOOST_AUTO_TEST_CASE(a_browser_reads_only_by_address_unless_allowed) {
    const http_policy none({});
    BOOST_TEST(none.browser_may_read(request("127.0.0.1:6971", "http://127.0.0.1:6971", "same-origin")));
    // DNS rebinding: a page of rebind.example whose name now points at the broker.
    BOOST_TEST(!none.browser_may_read(request("rebind.example:6971", "http://rebind.example:6971", "same-origin")));
    // A navigation carries Sec-Fetch-Site without Origin: still a browser.
    BOOST_TEST(!none.browser_may_read(request("rebind.example:6971", "", "none")));

    const http_policy by_name({"https://broker.example:6971"});
    BOOST_TEST(by_name.browser_may_read(request("broker.example:6971", "", "none")));
    BOOST_TEST(!by_name.browser_may_read(request("other.example:6971", "", "none")));
    const http_policy by_page({"https://dash.example"});
    BOOST_TEST(by_page.browser_may_read(request("broker.example:6971", "https://dash.example", "cross-site")));
    BOOST_TEST(http_policy({"*"}).browser_may_read(request("anything.example", "https://x.example", "cross-site")));
}

BOOST_AUTO_TEST_CASE(websocket_origins) {
    const http_policy none({});
    BOOST_TEST(none.websocket_origin_ok(request("127.0.0.1:6971", "http://127.0.0.1:6971")));
    BOOST_TEST(none.websocket_origin_ok(request("[::1]:6971", "https://[::1]:6971")));
    BOOST_TEST(!none.websocket_origin_ok(request("127.0.0.1:6971", "http://127.0.0.1:9999")));
    BOOST_TEST(!none.websocket_origin_ok(request("127.0.0.1:6971", "https://evil.example")));
    // Same origin by a name is not enough: the name may have been rebound to us.
    BOOST_TEST(!none.websocket_origin_ok(request("rebind.example:6971", "http://rebind.example:6971")));

    const http_policy some({"https://app.example"});
    BOOST_TEST(some.websocket_origin_ok(request("broker.example:6971", "https://app.example")));
    BOOST_TEST(!some.websocket_origin_ok(request("broker.example:6971", "https://app.example.evil")));
    BOOST_TEST(http_policy({"*"}).websocket_origin_ok(request("broker.example:6971", "https://evil.example")));
}

BOOST_AUTO_TEST_CASE(the_origin_page_says_why) {
    const http_policy none({});
    const std::vector<std::string> paths{"/", "/ws", "/locks"};
    auto refused = none.origin_page(request("127.0.0.1:6971", "https://app.example"), paths);
    BOOST_TEST(refused.status == 200u);
    const auto body = boost::json::parse(refused.body).as_object();
    BOOST_TEST(body.at("allowed").as_bool() == false);
    BOOST_TEST(std::string(body.at("origin").as_string()) == "https://app.example");
    BOOST_TEST(std::string(body.at("hint").as_string()).find("--allow-origin https://app.example") !=
               std::string::npos);
    bool any_origin = false;
    for (const auto& [name, value] : refused.headers)
        any_origin = any_origin || (name == "Access-Control-Allow-Origin" && value == "*");
    BOOST_TEST(any_origin);

    const auto ok =
        boost::json::parse(
            http_policy({"https://app.example"}).origin_page(request("h", "https://app.example"), paths).body)
            .as_object();
    BOOST_TEST(ok.at("allowed").as_bool() == true);
    BOOST_TEST(!ok.contains("hint"));
    // The listener's WebSocket paths, so that a page can tell a wrong path from a broker that was
    // not listening yet when its upgrade was tried.
    BOOST_TEST(boost::json::serialize(ok.at("websocketPaths")) == R"(["/","/ws","/locks"])");
}

BOOST_AUTO_TEST_SUITE_END()
