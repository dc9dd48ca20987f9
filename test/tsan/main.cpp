#define BOOST_TEST_MODULE lmx_tsan_tests
#include <boost/test/unit_test.hpp>
