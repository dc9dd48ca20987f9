// The client against a broker that requires authentication: the token from the options or a
// file, the errors a missing or wrong token and a forbidden request give, over every transport.

#include "client_fixture.hpp"

#include <boost/asio/as_tuple.hpp>

#include <sys/stat.h>

#include <fstream>

namespace lmx::test {
namespace {

constexpr auto tuple = asio::as_tuple(asio::use_awaitable);
const std::string client_token = "client-token-0123456789abcdef";
const std::string admin_token = "admin-token-0123456789abcdef";

struct auth_broker {
    temp_dir dir;
    std::string file = dir.path() + "/tokens";
    std::unique_ptr<broker_process> broker;

    auth_broker() {
        std::ofstream(file) << client_token << "\n" << admin_token << " admin\n";
        ::chmod(file.c_str(), 0600);
        broker = std::make_unique<broker_process>(broker_config{.extra_args = {"--auth-token-file", file}});
    }
};

client_options with_token(const std::string& url, const std::string& token) {
    auto o = options_for(url);
    o.token = token;
    return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(client_auth_test)

BOOST_AUTO_TEST_CASE(a_token_in_the_options_is_sent_in_the_hello) {
    auth_broker b;
    for (auto kind : client_transports) {
        BOOST_TEST_CONTEXT(kind) {
            run([&](auto ex) -> asio::awaitable<void> {
                lmx::client c(ex, with_token(b.broker->url(kind), client_token));
                auto guard = co_await c.acquire(fresh_key("auth"));
                BOOST_TEST(guard.owns_lock());
                co_await guard.release();
                c.close();
            });
        }
    }
}

BOOST_AUTO_TEST_CASE(no_token_or_a_wrong_one_fails_with_unauthenticated) {
    auth_broker b;
    for (auto kind : client_transports) {
        for (const std::string& token : {std::string(), std::string("wrong-token-0123456789abcdef")}) {
            BOOST_TEST_CONTEXT(kind << " token '" << token << "'") {
                run([&](auto ex) -> asio::awaitable<void> {
                    lmx::client c(ex, with_token(b.broker->url(kind), token));
                    auto [ec] = co_await c.connect(tuple);
                    BOOST_TEST(ec == errc::unauthenticated, ec.message());
                    BOOST_TEST((ec == std::errc::permission_denied));
                    auto [aec, guard] = co_await c.acquire(fresh_key("auth"), tuple);
                    BOOST_TEST(aec == errc::unauthenticated, aec.message());
                    c.close();
                });
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(a_token_file_is_read_at_every_connect) {
    auth_broker b;
    temp_dir dir;
    const std::string file = dir.path() + "/token";
    std::ofstream(file) << "# mine\n\n  " << client_token << "   trailing words are ignored\n";
    run([&](auto ex) -> asio::awaitable<void> {
        auto o = options_for(b.broker->tcp_url);
        o.token_file = file;
        lmx::client c(ex, o);
        auto guard = co_await c.acquire(fresh_key("file"));
        BOOST_TEST(guard.owns_lock());
        co_await guard.release();
        c.close();

        // A file that cannot be read: unauthenticated, without a word sent.
        o.token_file = dir.path() + "/missing";
        lmx::client missing(ex, o);
        auto [ec] = co_await missing.connect(tuple);
        BOOST_TEST(ec == errc::unauthenticated, ec.message());
        missing.close();
    });
}

BOOST_AUTO_TEST_CASE(force_release_of_every_holder_is_forbidden_to_a_client_token) {
    auth_broker b;
    run([&](auto ex) -> asio::awaitable<void> {
        lmx::client holder(ex, with_token(b.broker->tcp_url, client_token));
        lmx::client other(ex, with_token(b.broker->tcp_url, client_token));
        lmx::client admin(ex, with_token(b.broker->tcp_url, admin_token));
        const auto key = fresh_key("force");
        auto guard = co_await holder.acquire(key);
        auto [ec] = co_await other.force_release(key, tuple);
        BOOST_TEST(ec == errc::forbidden, ec.message());
        BOOST_TEST(!guard.lost());
        // Releasing by the hold's id stays open to any authenticated client.
        std::tie(ec) = co_await other.release(key, guard.id(), tuple);
        BOOST_TEST(!ec, ec.message());
        auto again = co_await holder.acquire(key);
        co_await admin.force_release(key);
        auto [why] = co_await again.async_wait_lost(tuple);
        BOOST_TEST(why == errc::forced, why.message());
        holder.close();
        other.close();
        admin.close();
    });
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace lmx::test
