// broker::stats() of an embedded broker (lmx/broker/broker.hpp): answers before start() too.

#include <lmx/broker/broker.hpp>
#include <lmx/core/protocol.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <unistd.h>

BOOST_AUTO_TEST_SUITE(broker_stats_test)

BOOST_AUTO_TEST_CASE(stats_before_start_report_an_empty_broker) {
    boost::asio::io_context io;
    lmx::broker b(io.get_executor(), lmx::broker_options{});
    const auto st = b.stats();  // no lock table yet: must not touch it
    BOOST_TEST(st.connections == 0u);
    BOOST_TEST(st.connections_total == 0u);
    BOOST_TEST(st.keys == 0u);
    BOOST_TEST(st.holders == 0u);
    BOOST_TEST(st.grants == 0u);
    BOOST_TEST(st.messages_in == 0u);
    BOOST_TEST(st.top_contended.empty());
    BOOST_TEST(st.pid == static_cast<std::int64_t>(::getpid()));
}

BOOST_AUTO_TEST_SUITE_END()
