// The broker's HTTP pages as text: numbers in /metrics and /v1/stats without float noise, and
// whole numbers as digits, whatever their size.

#include "http_pages.hpp"

#include <boost/test/unit_test.hpp>

#include <string>

namespace {

bool has_line(const std::string& page, const std::string& line) {
    return page.find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http_pages_test)

BOOST_AUTO_TEST_CASE(metrics_carry_no_float_noise_and_whole_numbers_as_digits) {
    lmx::core::broker_stats st;
    st.uptime_ms = 40187;
    st.connections_total = 1'000'000;
    lmx::core::table_counters c;
    c.grants = 100'000;
    c.releases = 123'456'789'012;
    const lmx::detail::wait_histogram waits;
    const auto page = lmx::detail::metrics_page(st, c, waits, 1'796'669'127'958'081, {}).body;
    BOOST_TEST(has_line(page, "lmx_uptime_seconds 40.187"), page);      // not 40.186999999999998
    BOOST_TEST(has_line(page, "lmx_connections_total 1000000"), page);  // not 1e+06
    BOOST_TEST(has_line(page, "lmx_grants_total 100000"), page);
    BOOST_TEST(has_line(page, "lmx_releases_total 123456789012"), page);
    BOOST_TEST(has_line(page, "lmx_fencing_token_last 1796669127958081"), page);
}

BOOST_AUTO_TEST_CASE(v1_stats_writes_the_uptime_as_the_wire_does) {
    lmx::core::broker_stats st;
    st.uptime_ms = 40187;
    const auto body = lmx::detail::stats_page(st).body;
    BOOST_TEST(body.find("\"uptime\":40.187,") != std::string::npos, body);  // not 4.0187E1
    BOOST_TEST(body.front() == '{');
    BOOST_TEST(body.ends_with("}\n"), body);
}

BOOST_AUTO_TEST_SUITE_END()
