#define BOOST_TEST_MODULE lmx_unit_tests
#include <boost/test/unit_test.hpp>
