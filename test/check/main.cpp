#define BOOST_TEST_MODULE lmx_check_tests
#include <boost/test/unit_test.hpp>
