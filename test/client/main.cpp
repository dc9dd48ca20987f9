#define BOOST_TEST_MODULE lmx_client_tests
#include <boost/test/unit_test.hpp>
