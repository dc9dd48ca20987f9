#define BOOST_TEST_MODULE lmx_etcd_tests
#include <boost/test/unit_test.hpp>
