#define BOOST_TEST_MODULE lmx_integration_tests
#include <boost/test/unit_test.hpp>
