// The client's options and errors: defaults, designated initializers, from_env precedence over
// the settings file, and a clear message for every errc.

#include "client_fixture.hpp"

#include <lmx/client/errc.hpp>
#include <lmx/client/settings.hpp>

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>

#include <cstdlib>
#include <fstream>
#include <set>
#include <system_error>
#include <vector>

using namespace lmx::test;
using lmx::errc;

namespace {

// Sets (or unsets, with nullptr) environment variables for one scope.
class scoped_env {
public:
    scoped_env(std::initializer_list<std::pair<const char*, const char*>> vars) {
        for (auto& [name, value] : vars) {
            const char* old = std::getenv(name);
            saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
            if (value)
                ::setenv(name, value, 1);
            else
                ::unsetenv(name);
        }
    }
    ~scoped_env() {
        for (auto& [name, value] : saved_) {
            if (value)
                ::setenv(name.c_str(), value->c_str(), 1);
            else
                ::unsetenv(name.c_str());
        }
    }
    scoped_env(const scoped_env&) = delete;
    scoped_env& operator=(const scoped_env&) = delete;

private:
    std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(client_options_test)

BOOST_AUTO_TEST_CASE(defaults) {
    lmx::client_options o;
    BOOST_TEST(o.url == "tcp://127.0.0.1:6970");
    BOOST_TEST(o.ttl.count() == 5000);
    BOOST_TEST(o.lock_request_timeout.count() == 3000);
    BOOST_TEST(o.max_retries == 3u);
    BOOST_TEST(!o.keep_locks_on_exit);
    BOOST_TEST(o.no_delay);
    BOOST_TEST(o.connect_timeout.count() > 0);

    // Designated initializers in declaration order, as the example writes them.
    lmx::acquire_options a{.ttl = 30s,
                           .max = 4,
                           .wait = false,
                           .timeout = 200ms,
                           .shared = true,
                           .keep_locks_on_exit = true,
                           .max_retries = 0u};
    BOOST_TEST(a.ttl->count() == 30000);
    BOOST_TEST(*a.max == 4u);
    lmx::acquire_options d;
    BOOST_TEST(!d.ttl);
    BOOST_TEST(!d.max);
    BOOST_TEST(d.wait);
    BOOST_TEST(!d.timeout);
    BOOST_TEST(!d.shared);
    BOOST_TEST(!d.keep_locks_on_exit);
    BOOST_TEST(!d.max_retries);
}

BOOST_AUTO_TEST_CASE(from_env_precedence) {
    temp_dir dir;
    scoped_env clean{{"XDG_CONFIG_HOME", dir.path().c_str()},
                     {"LMX_URL", nullptr},
                     {"LMX_UDS_PATH", nullptr},
                     {"LMX_HOST", nullptr},
                     {"LMX_PORT", nullptr}};
    lmx::client_options base;
    base.url = "tcp://base:1";
    base.ttl = 1234ms;
    BOOST_TEST(lmx::client_options::from_env(base).url == "tcp://base:1");
    BOOST_TEST(lmx::client_options::from_env(base).ttl.count() == 1234);  // only the url changes
    BOOST_TEST(lmx::client_options::from_env().url == "tcp://127.0.0.1:6970");

    // The settings file `lmx set` writes beats the base...
    BOOST_REQUIRE(lmx::save_settings({.url = {}, .uds_path = {}, .host = "filehost", .port = 7000}));
    BOOST_TEST(lmx::client_options::from_env(base).url == "tcp://filehost:7000");
    // ...the environment beats the file, host and port filling in from below...
    {
        scoped_env e{{"LMX_PORT", "7100"}};
        BOOST_TEST(lmx::client_options::from_env(base).url == "tcp://filehost:7100");
    }
    {
        scoped_env e{{"LMX_HOST", "envhost"}};
        BOOST_TEST(lmx::client_options::from_env(base).url == "tcp://envhost:7000");
    }
    // ...a socket path beats host and port, and a URL beats everything.
    {
        scoped_env e{{"LMX_UDS_PATH", "/run/lmx.sock"}, {"LMX_HOST", "envhost"}};
        BOOST_TEST(lmx::client_options::from_env(base).url == "unix:///run/lmx.sock");
    }
    {
        scoped_env e{{"LMX_URL", "ws://127.0.0.1:6971/"}, {"LMX_UDS_PATH", "/run/lmx.sock"}};
        BOOST_TEST(lmx::client_options::from_env(base).url == "ws://127.0.0.1:6971/");
    }
    std::ofstream(lmx::settings_path()) << "{\"url\":\"unix:///from/file.sock\"}\n";
    BOOST_TEST(lmx::client_options::from_env(base).url == "unix:///from/file.sock");
}

BOOST_DATA_TEST_CASE(from_env_reaches_a_broker, boost::unit_test::data::make(client_transports), kind) {
    broker_process b;
    temp_dir dir;
    scoped_env e{{"XDG_CONFIG_HOME", dir.path().c_str()}, {"LMX_URL", b.url(kind).c_str()}};
    run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
        lmx::client c(ex, lmx::client_options::from_env());
        BOOST_TEST(c.options().url == b.url(kind));
        auto rtt = co_await c.ping();
        BOOST_TEST(rtt.count() > 0);
    });
}

BOOST_AUTO_TEST_CASE(every_errc_has_its_own_message) {
    std::vector<errc> all;
    for (int v = static_cast<int>(errc::timeout); v <= static_cast<int>(errc::tls_failed); ++v)
        all.push_back(static_cast<errc>(v));
    std::set<std::string> messages;
    for (auto e : all) {
        lmx::error_code ec = e;
        BOOST_TEST(ec.category().name() == std::string("lmx"));
        BOOST_TEST(!ec.message().empty());
        BOOST_TEST(ec.message().find("unknown") == std::string::npos, ec.message());
        messages.insert(ec.message());
        BOOST_TEST(ec == e);
        BOOST_TEST(static_cast<bool>(ec));
    }
    BOOST_TEST(messages.size() == all.size());
    BOOST_TEST(lmx::errc_from_wire("timeout") == errc::timeout);
    BOOST_TEST(lmx::errc_from_wire("not_holder") == errc::not_holder);
    BOOST_TEST(lmx::errc_from_wire("too_many_waiters") == errc::too_many_waiters);
    BOOST_TEST(lmx::errc_from_wire("limit_reached") == errc::limit_reached);
    BOOST_TEST(lmx::errc_from_wire("max_pinned") == errc::max_pinned);
    BOOST_TEST(lmx::errc_from_wire("unauthenticated") == errc::unauthenticated);
    BOOST_TEST(lmx::errc_from_wire("forbidden") == errc::forbidden);
    BOOST_TEST(lmx::errc_from_wire("key_too_long") == errc::bad_request);
    BOOST_TEST(lmx::errc_from_wire("something new") == errc::bad_request);
}

// Where a standard condition fits, an lmx code compares equal to it, in Boost's and in the
// standard library's error_code, so that generic code can test for "timed out" or "cancelled".
BOOST_AUTO_TEST_CASE(errc_matches_standard_conditions) {
    namespace se = boost::system::errc;
    const std::pair<errc, se::errc_t> pairs[] = {
        {errc::timeout, se::timed_out},
        {errc::cancelled, se::operation_canceled},
        {errc::refused, se::connection_refused},
        {errc::connection_lost, se::not_connected},
        {errc::would_block, se::resource_unavailable_try_again},
        {errc::bad_request, se::invalid_argument},
        {errc::wrong_endpoint, se::protocol_error},
        {errc::origin_refused, se::permission_denied},
        {errc::limit_reached, se::resource_unavailable_try_again},
        {errc::max_pinned, se::operation_not_permitted},
        {errc::unauthenticated, se::permission_denied},
        {errc::forbidden, se::operation_not_permitted},
        {errc::tls_failed, se::permission_denied},
    };
    for (auto [ours, theirs] : pairs) {
        lmx::error_code ec = ours;
        BOOST_TEST((ec == se::make_error_condition(theirs)), ec.message());
        const std::error_code std_ec = ec;  // Boost.System converts to the standard's error_code
        BOOST_TEST((std_ec == static_cast<std::errc>(theirs)), ec.message());
    }
    // And only where it fits.
    BOOST_TEST((lmx::error_code(errc::timeout) != se::make_error_condition(se::operation_canceled)));
    BOOST_TEST((lmx::error_code(errc::not_held) != se::make_error_condition(se::timed_out)));
    BOOST_TEST((lmx::error_code(errc::lease_expired) != se::make_error_condition(se::timed_out)));
}

BOOST_AUTO_TEST_SUITE_END()
