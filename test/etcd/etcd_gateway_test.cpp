// The gateway's JSON shapes without an etcd: base64, int64s as strings, fields left out at zero,
// and answers that break the API's promises.

#include "gateway.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <random>

namespace etcd = lmx::etcd;
namespace gw = lmx::etcd::gateway;
namespace json = boost::json;

namespace {
json::object object(std::string_view text) { return json::parse(text).as_object(); }

bool is_bad_reply(const etcd::error& e) { return e.which() == etcd::error::kind::bad_reply; }
}  // namespace

BOOST_AUTO_TEST_SUITE(etcd_gateway_test)

BOOST_AUTO_TEST_CASE(base64_round_trips_any_bytes_and_refuses_what_is_not_base64) {
    BOOST_TEST(gw::base64_encode("") == "");
    BOOST_TEST(gw::base64_encode("f") == "Zg==");
    BOOST_TEST(gw::base64_encode("fo") == "Zm8=");
    BOOST_TEST(gw::base64_encode("foo") == "Zm9v");
    BOOST_TEST(gw::base64_encode(std::string("\0\xff\xfe", 3)) == "AP/+");
    std::mt19937 rng(7);
    for (std::size_t n = 0; n < 64; ++n) {
        std::string bytes(n, '\0');
        for (auto& b : bytes) b = static_cast<char>(rng());
        BOOST_TEST(gw::base64_decode(gw::base64_encode(bytes)).value_or("?") == bytes);
    }
    for (const auto* bad : {"Zg=", "Z===", "Zg=a", "Zm9v!A==", "=AAA", "Zg==Zg=="})
        BOOST_TEST(!gw::base64_decode(bad).has_value(), bad);
}

BOOST_AUTO_TEST_CASE(requests_carry_int64s_as_strings_and_leave_out_zeros) {
    BOOST_TEST(gw::put_body({"k", "v", 0}) == R"({"key":"aw==","value":"dg=="})");
    BOOST_TEST(gw::put_body({"k", "", 9007199254740993}) == R"({"key":"aw==","value":"","lease":"9007199254740993"})");
    BOOST_TEST(gw::range_body("a", {.range_end = "b", .revision = 5, .limit = 2, .count_only = true}) ==
               R"({"key":"YQ==","range_end":"Yg==","revision":"5","limit":"2","count_only":true})");
    BOOST_TEST(gw::txn_body({.compares = {{.key = "k", .number = 0}}, .success = {etcd::delete_op{"k"}}}) ==
               R"({"compare":[{"key":"aw==","target":"CREATE","result":"EQUAL","create_revision":"0"}],)"
               R"("success":[{"request_delete_range":{"key":"aw=="}}],"failure":[]})");
    BOOST_TEST(gw::watch_body("k", "", 0) == R"({"create_request":{"key":"aw=="}})");
}

BOOST_AUTO_TEST_CASE(answers_read_int64s_and_absent_fields_as_zero) {
    auto r = gw::read_range(object(
        R"({"header":{"revision":"9007199254740993"},"kvs":[{"key":"aw==","create_revision":"3","mod_revision":"4"}],"count":"1"})"));
    BOOST_TEST(r.revision == 9007199254740993);
    BOOST_REQUIRE_EQUAL(r.kvs.size(), 1u);
    BOOST_TEST(r.kvs[0].key == "k");
    BOOST_TEST(r.kvs[0].value == "");
    BOOST_TEST(r.kvs[0].version == 0);
    BOOST_TEST(!r.more);
    auto t = gw::read_txn(object(R"({"header":{"revision":"5"},"responses":[{"response_range":{"count":"2"}}]})"));
    BOOST_TEST(!t.succeeded);  // absent: false
    BOOST_TEST(t.responses.at(0).range.count == 2);
    auto w = gw::read_watch(object(R"({"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"aw=="}},)"
                                   R"({"type":"DELETE","kv":{"key":"aw==","mod_revision":"7"}}]}})"));
    BOOST_REQUIRE_EQUAL(w.events.size(), 2u);
    BOOST_TEST((w.events[0].what == etcd::watch_event::type::put));  // PUT is the zero value
    BOOST_TEST((w.events[1].what == etcd::watch_event::type::del));
}

BOOST_AUTO_TEST_CASE(answers_that_break_the_api_are_bad_replies_and_errors_carry_etcds_words) {
    BOOST_CHECK_EXCEPTION(gw::read_range(object(R"({"kvs":[{"key":"!!"}]})")), etcd::error, is_bad_reply);
    BOOST_CHECK_EXCEPTION(gw::read_range(object(R"({"count":"12x"})")), etcd::error, is_bad_reply);
    BOOST_CHECK_EXCEPTION(gw::read_range(object(R"({"kvs":{}})")), etcd::error, is_bad_reply);
    BOOST_CHECK_EXCEPTION(gw::read_txn(object(R"({"responses":[{"response_what":{}}]})")), etcd::error, is_bad_reply);
    BOOST_CHECK_EXCEPTION(gw::read_watch(object(R"({"result":{"events":[{"type":"MOVE"}]}})")), etcd::error,
                          is_bad_reply);
    BOOST_CHECK_EXCEPTION(gw::read_watch(object(R"({"nothing":1})")), etcd::error, is_bad_reply);
    auto e = gw::read_error(json::parse(R"({"error":"etcdserver: x","message":"etcdserver: x","code":9})"), 400);
    BOOST_TEST((e.which() == etcd::error::kind::refused));
    BOOST_TEST(e.code() == 9);
    BOOST_TEST(std::string(e.what()) == "etcd: etcdserver: x");
    // Inside a stream, and an answer with no JSON at all.
    BOOST_TEST(gw::read_error(json::parse(R"({"error":{"message":"m","code":14}})"), 200).code() == 14);
    BOOST_TEST(std::string(gw::read_error(json::value(), 502).what()) == "etcd answered HTTP 502");
}

// A txn inside a txn goes out as request_txn and comes back as response_txn.
BOOST_AUTO_TEST_CASE(nested_txns_are_written_and_read) {
    auto inner = std::make_shared<etcd::txn_request>(
        etcd::txn_request{.compares = {{.key = "k", .number = 0}}, .success = {etcd::put_op{"k", "v"}}});
    const etcd::txn_request outer{.success = {etcd::txn_op{inner}}};
    BOOST_TEST(
        gw::txn_body(outer) ==
        R"({"compare":[],"success":[{"request_txn":{"compare":[{"key":"aw==","target":"CREATE","result":"EQUAL",)"
        R"("create_revision":"0"}],"success":[{"request_put":{"key":"aw==","value":"dg=="}}],"failure":[]}}],)"
        R"("failure":[]})");
    auto t = gw::read_txn(object(R"({"header":{"revision":"8"},"succeeded":true,"responses":[)"
                                 R"({"response_txn":{"succeeded":true,"responses":[{"response_put":{}}]}},)"
                                 R"({"response_txn":{"responses":[{"response_range":{"count":"1"}}]}}]})"));
    BOOST_REQUIRE_EQUAL(t.responses.size(), 2u);
    BOOST_TEST((t.responses[0].what == etcd::op_result::kind::txn));
    BOOST_TEST(t.responses[0].succeeded);
    BOOST_TEST((t.responses[0].responses.at(0).what == etcd::op_result::kind::put));
    BOOST_TEST(!t.responses[1].succeeded);
    BOOST_TEST(t.responses[1].responses.at(0).range.count == 1);
}

BOOST_AUTO_TEST_CASE(prefix_end_covers_exactly_the_keys_under_a_prefix) {
    BOOST_TEST(etcd::prefix_end("/a/") == "/a0");
    BOOST_TEST(etcd::prefix_end(std::string("a\xff", 2)) == "b");
    BOOST_TEST(etcd::prefix_end(std::string("\xff\xff", 2)) == std::string(1, '\0'));
    BOOST_TEST(etcd::prefix_end("") == std::string(1, '\0'));
}

BOOST_AUTO_TEST_SUITE_END()
