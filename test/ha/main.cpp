#define BOOST_TEST_MODULE lmx_ha_tests
#include <boost/test/unit_test.hpp>
