// `lmx check` as a user runs it: a long run against its own broker with client kills and broker
// restarts must find nothing; the same checker must fail a broker that hands one lock to two
// holders (the grant.double failpoint); and recorded histories can be checked on their own.

#include "broker_process.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace json = boost::json;
using namespace lmx::test;
using namespace std::chrono_literals;

namespace {

// The JSON summary line of a run's output.
json::object summary_of(const run_result& r) {
    std::istringstream in(r.output);
    for (std::string line; std::getline(in, line);)
        if (line.starts_with("{")) return json::parse(line).as_object();
    throw std::runtime_error("no JSON summary in: " + r.output);
}

std::uint64_t num(const json::object& o, const char* name) { return o.at(name).to_number<std::uint64_t>(); }

struct scoped_env {
    scoped_env(const char* n, const char* v) : name(n) { ::setenv(n, v, 1); }
    ~scoped_env() { ::unsetenv(name); }
    const char* name;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(check_run_test)

BOOST_AUTO_TEST_CASE(a_long_run_with_kills_and_restarts_finds_nothing) {
    temp_dir dir;
    auto r = run_lmx({"check", "--ops", "110000", "--clients", "4", "--json", "-q", "--dir", dir.path()}, 600s);
    BOOST_TEST_INFO("output: " << r.output.substr(0, 4000));
    BOOST_TEST(r.status == 0);
    auto s = summary_of(r);
    BOOST_TEST(num(s, "violationCount") == 0u);
    BOOST_TEST(num(s, "operations") >= 100000u);
    BOOST_TEST(num(s, "brokerKills") >= 1u);
    BOOST_TEST(num(s, "clientKills") >= 1u);
    BOOST_TEST(num(s, "lockLost") > 0u);
    BOOST_TEST(num(s, "streamEvents") > 0u);
    // The history is there for anyone to check again, and says the same.
    auto again = run_lmx({"check", "--analyze", dir.path() + "/history.jsonl", "--json"}, 300s);
    BOOST_TEST(again.status == 0, again.output.substr(0, 2000));
    BOOST_TEST(num(summary_of(again), "operations") == num(s, "operations"));
}

BOOST_AUTO_TEST_CASE(a_broker_that_grants_one_lock_twice_fails_the_check) {
    scoped_env fp("LMX_FAILPOINTS", "grant.double=150*off->1*error->off");
    // Bounded by time, not by a count of operations: once a broker has granted one lock twice,
    // the clients' random work may stall on the confusion it causes and never reach a count.
    auto r = run_lmx(
        {"check", "--duration", "12s", "--clients", "3", "--no-broker-restarts", "--no-client-kills", "--json", "-q"},
        300s);
    BOOST_TEST_INFO("output: " << r.output.substr(0, 4000));
    BOOST_TEST(r.status == 1);
    auto s = summary_of(r);
    BOOST_TEST(num(s, "violationCount") >= 1u);
    BOOST_TEST(s.at("violationsByKind").as_object().contains("phantom-grant"));
    BOOST_TEST(r.output.find("history:") != std::string::npos);  // kept for the post-mortem
}

BOOST_AUTO_TEST_CASE(recorded_histories_are_checked_on_their_own) {
    temp_dir dir;
    const std::string bad = dir.path() + "/bad.jsonl";
    std::ofstream(bad)
        << R"({"t":1,"src":"a","s":1,"ev":"send","m":{"type":"lock","uuid":"a-1","key":"k","ttl":10000}})"
           "\n"
        << R"({"t":2,"src":"a","s":1,"ev":"recv","m":{"type":"lock","uuid":"a-1","key":"k","acquired":true}})"
           "\n"
        << R"({"t":3,"src":"b","s":1,"ev":"send","m":{"type":"lock","uuid":"b-1","key":"k","ttl":10000}})"
           "\n"
        << R"({"t":4,"src":"b","s":1,"ev":"recv","m":{"type":"lock","uuid":"b-1","key":"k","acquired":true}})"
           "\n";
    auto r = run_lmx({"check", "--analyze", bad, "--peer", "live-mutex"});
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output.find("client-overlap") != std::string::npos, r.output);
    auto missing = run_lmx({"check", "--analyze", dir.path() + "/nope.jsonl"});
    BOOST_TEST(missing.status == 2, missing.output);
}

BOOST_AUTO_TEST_CASE(help_lists_the_options) {
    auto r = run_lmx({"check", "--help"});
    BOOST_TEST(r.status == 0);
    for (const char* o : {"--url", "--clients", "--ops", "--duration", "--keys", "--seed", "--no-client-kills",
                          "--no-broker-restarts", "--history", "--analyze", "--peer", "--json", "--broker"})
        BOOST_TEST(r.output.find(o) != std::string::npos, o);
    BOOST_TEST(r.output.find("--worker-id") == std::string::npos);
    auto bad = run_lmx({"check", "--duration", "soon"});
    BOOST_TEST(bad.status == 2, bad.output);
}

BOOST_AUTO_TEST_SUITE_END()
