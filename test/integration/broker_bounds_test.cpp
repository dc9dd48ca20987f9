// Answers that are lists stay bounded: ls comes in pages (--max-list), lock-info lists at most
// --max-list holders with the full count beside them.

#include "protocol_helpers.hpp"

#include <boost/test/unit_test.hpp>

#include <set>

using namespace lmx::test;

BOOST_AUTO_TEST_SUITE(broker_bounds_test)

BOOST_AUTO_TEST_CASE(ls_answers_in_pages) {
    checked_broker b({.tcp = false, .websocket = false, .extra_args = {"--max-list", "5"}});
    wire_client c(b.unix_url);
    std::set<std::string> want;
    for (int i = 0; i < 12; ++i) {
        auto key = "page-" + std::to_string(i);
        BOOST_REQUIRE(flag(acquire(c, fresh_id("pg"), key), "acquired"));
        want.insert(key);
    }
    std::set<std::string> got;
    json::object page = c.request({{"type", "ls"}, {"uuid", fresh_id("ls")}});
    int pages = 1;
    for (;;) {
        auto keys = page.at("ls_result").as_array();
        BOOST_TEST(keys.size() <= 5u);
        for (auto& k : keys) got.insert(std::string(k.as_string()));
        if (!has(page, "cursor")) break;
        page = c.request({{"type", "ls"}, {"uuid", fresh_id("ls")}, {"cursor", page.at("cursor")}});
        BOOST_REQUIRE(++pages < 10);
    }
    BOOST_TEST(pages == 3);
    BOOST_TEST((got == want));
    // A smaller page on request; a larger one is capped.
    auto small = c.request({{"type", "ls"}, {"uuid", fresh_id("ls")}, {"limit", 2}});
    BOOST_TEST(small.at("ls_result").as_array().size() == 2u);
    auto big = c.request({{"type", "ls"}, {"uuid", fresh_id("ls")}, {"limit", 1000}});
    BOOST_TEST(big.at("ls_result").as_array().size() == 5u);
    auto bad = c.request({{"type", "ls"}, {"uuid", fresh_id("ls")}, {"cursor", -1}});
    BOOST_TEST(text(bad, "code") == "bad_request", dump(bad));
}

BOOST_AUTO_TEST_CASE(lock_info_lists_a_bounded_number_of_holders) {
    checked_broker b({.tcp = false, .websocket = false, .extra_args = {"--max-list", "5"}});
    wire_client c(b.unix_url);
    for (int i = 0; i < 8; ++i)
        BOOST_REQUIRE(flag(acquire(c, fresh_id("sh"), "shared-key", {{"mode", "shared"}}), "acquired"));
    auto info = lock_info(c, "shared-key");
    BOOST_TEST(info.at("lockholderUUIDs").as_array().size() == 5u);
    BOOST_TEST(number(info, "holderCount") == 8u);
    BOOST_TEST(flag(info, "isLocked"));
}

BOOST_AUTO_TEST_SUITE_END()
