// Start-up and shutdown of the `lmx broker` process: taken ports and socket paths, stale socket
// files, signals, --help, --max-connections, and fencing tokens across restarts (--state-dir).

#include "protocol_helpers.hpp"
#include "raw_socket.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
using namespace lmx::test;

namespace {

// A TCP port held by a listening socket of this process.
struct taken_port {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::uint16_t port = 0;
    taken_port() {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 4) != 0 ||
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
            throw std::runtime_error("cannot hold a port");
        port = ntohs(addr.sin_port);
    }
    ~taken_port() { ::close(fd); }
};

std::uint64_t grant_token(wire_client& c, const std::string& key) {
    auto g = acquire(c, fresh_id("t"), key);
    BOOST_REQUIRE(flag(g, "acquired"));
    return number(g, "fencingToken");
}

// Takes a few locks on several keys; returns the largest token, checking they rise.
std::uint64_t take_tokens(broker_process& b, std::uint64_t floor) {
    wire_client c(b.tcp_url);
    std::uint64_t last = floor;
    for (int i = 0; i < 5; ++i) {
        auto t = grant_token(c, "restart-" + std::to_string(i % 2) + "-" + std::to_string(i));
        BOOST_TEST(t > last, "token " << t << " after " << last);
        last = t;
    }
    return last;
}

// Waits until the broker counts no open connection (asked over HTTP, which opens none).
bool wait_idle(const broker_process& b) {
    auto deadline = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < deadline) {
        auto st = boost::json::parse(http_get(b.ws_url, "/v1/stats").body).as_object();
        if (number(st, "connections") == 0) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// Waits until the broker counts `n` open connections (20 s: a flood of replies to build first,
// under ASan).
bool wait_connections(wire_client& c, std::uint64_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (number(stats(c), "connections") != n && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    return number(stats(c), "connections") == n;
}

bool is_socket(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(broker_lifecycle_test)

BOOST_AUTO_TEST_CASE(port_already_in_use) {
    taken_port held;
    for (std::string url :
         {"tcp://127.0.0.1:" + std::to_string(held.port), "ws://127.0.0.1:" + std::to_string(held.port) + "/"}) {
        BOOST_TEST_CONTEXT(url) {
            auto r = run_lmx({"broker", "--listen", url});
            BOOST_TEST(r.status > 0);
            BOOST_TEST(r.status < 128, "not a crash");
            BOOST_TEST(r.output.find("already in use") != std::string::npos, r.output);
            BOOST_TEST(r.output.find(std::to_string(held.port)) != std::string::npos, r.output);
        }
    }
    // A second broker on a running broker's port fails, and leaves the running one alone.
    checked_broker b;
    auto r = run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--listen", b.tcp_url});
    BOOST_TEST(r.status > 0);
    BOOST_TEST(r.output.find("already in use") != std::string::npos, r.output);
    wire_client c(b.tcp_url);
    BOOST_TEST(alive(c));
}

BOOST_AUTO_TEST_CASE(socket_path_of_a_live_broker_is_refused) {
    checked_broker b;
    auto r = run_lmx({"broker", "--listen", b.unix_url});
    BOOST_TEST(r.status > 0);
    BOOST_TEST(r.status < 128);
    BOOST_TEST(r.output.find("already listening") != std::string::npos, r.output);
    // The live broker's socket file is still there and still its own.
    BOOST_TEST(is_socket(b.dir() + "/lmx.sock"));
    wire_client c(b.unix_url);
    BOOST_TEST(alive(c));
}

BOOST_AUTO_TEST_CASE(stale_socket_file_is_replaced) {
    temp_dir d;
    const std::string path = d.path() + "/stale.sock";
    {
        checked_broker b({.tcp = false, .websocket = false, .unix_path = path});
        wire_client c(b.unix_url);
        BOOST_REQUIRE(flag(acquire(c, fresh_id("k"), "k"), "acquired"));
        BOOST_TEST(b.stop(SIGKILL) == 128 + SIGKILL);
    }
    BOOST_REQUIRE(is_socket(path));  // left behind by the killed broker
    checked_broker b({.tcp = false, .websocket = false, .unix_path = path});
    wire_client c(b.unix_url);
    BOOST_TEST(alive(c));
    BOOST_TEST(flag(acquire(c, fresh_id("k"), "k"), "acquired"));

    // Something that is not a socket is never removed.
    const std::string file = d.path() + "/not-a-socket";
    std::ofstream(file) << "keep me\n";
    auto r = run_lmx({"broker", "--listen", "unix://" + file});
    BOOST_TEST(r.status > 0);
    BOOST_TEST(r.output.find("not a socket") != std::string::npos, r.output);
    BOOST_TEST(fs::is_regular_file(file));

    // Nor is a symlink, even one to a stale socket: the broker never follows or replaces it.
    const std::string link = d.path() + "/link.sock";
    fs::create_symlink(file, link);
    r = run_lmx({"broker", "--listen", "unix://" + link});
    BOOST_TEST(r.status > 0);
    BOOST_TEST(fs::is_symlink(link));
    BOOST_TEST(fs::is_regular_file(file));
    {
        checked_broker dead({.tcp = false, .websocket = false, .unix_path = d.path() + "/dead.sock"});
        BOOST_TEST(dead.stop(SIGKILL) == 128 + SIGKILL);
    }
    const std::string to_socket = d.path() + "/to-socket.sock";
    fs::create_symlink(d.path() + "/dead.sock", to_socket);
    r = run_lmx({"broker", "--listen", "unix://" + to_socket});
    BOOST_TEST(r.status > 0, r.output);
    BOOST_TEST(fs::is_symlink(to_socket));
    BOOST_TEST(is_socket(d.path() + "/dead.sock"));
}

BOOST_AUTO_TEST_CASE(socket_file_mode_defaults_to_0660) {
    checked_broker b;
    struct stat st {};
    BOOST_REQUIRE(::stat((b.dir() + "/lmx.sock").c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 0777) == 0660u);
}

// --log-format json: every log line is one JSON object (time, level, message), for collectors;
// a format it does not know is a usage error.
BOOST_AUTO_TEST_CASE(json_logs_are_one_object_a_line) {
    broker_config cfg;
    cfg.extra_args = {"--log-format", "json"};
    checked_broker b(cfg);
    BOOST_TEST(b.stop(SIGTERM, 5s) == 0, b.log());
    std::istringstream in(b.log());
    int lines = 0;
    bool listening = false, stopping = false;
    for (std::string line; std::getline(in, line);) {
        ++lines;
        boost::system::error_code ec;
        const auto v = boost::json::parse(line, ec);
        BOOST_TEST_REQUIRE((!ec && v.is_object()), line);
        const auto& o = v.as_object();
        BOOST_TEST(o.size() == 3u, line);
        const std::string time = text(o, "time"), level = text(o, "level"), message = text(o, "message");
        BOOST_TEST((time.size() == 24 && time[10] == 'T' && time.back() == 'Z'), line);
        BOOST_TEST((level == "error" || level == "warn" || level == "info" || level == "debug"), line);
        listening = listening || message.starts_with("listening on ");
        stopping = stopping || message.find("received SIGTERM") != std::string::npos;
    }
    BOOST_TEST(lines >= 3);
    BOOST_TEST(listening, b.log());
    BOOST_TEST(stopping, b.log());
    BOOST_TEST(run_lmx({"broker", "--log-format", "xml"}).status == 2);
    // A start-up error is a log line too, and bytes that are not UTF-8 in it (a host name here)
    // become U+FFFD, so that the line stays valid JSON.
    const auto bad = run_lmx({"broker", "--log-format", "json", "--listen", "tcp://\xff\xfe:1"});
    BOOST_TEST(bad.status == 1, bad.output);
    bool error_line = false;
    std::istringstream output(bad.output);
    for (std::string line; std::getline(output, line);) {
        boost::system::error_code ec;
        const auto v = boost::json::parse(line, ec);  // Boost.JSON refuses ill-formed UTF-8
        BOOST_TEST_REQUIRE((!ec && v.is_object()), line);
        if (text(v.as_object(), "level") == "error")
            error_line = text(v.as_object(), "message").find("\xEF\xBF\xBD\xEF\xBF\xBD:1") != std::string::npos;
    }
    BOOST_TEST(error_line, bad.output);
}

// --slow-wait and --slow-hold: a grant that waited longer, and a hold that lasted longer, are
// logged with key, lock id and client address; quick ones are not.
BOOST_AUTO_TEST_CASE(slow_waits_and_holds_are_logged_with_key_and_client) {
    broker_config cfg;
    cfg.extra_args = {"--slow-wait", "150", "--slow-hold", "300"};
    // `holder` holds slow-key for 400 ms while `waiter` waits for it.
    auto hold_while_one_waits = [](wire_client& holder, wire_client& waiter, const std::string& n) {
        BOOST_TEST(flag(acquire(holder, "hold-" + n, "slow-key"), "acquired"));
        waiter.send(lock_msg("wait-" + n, "slow-key"));
        BOOST_TEST(flag(waiter.recv_for("wait-" + n), "queued"));
        std::this_thread::sleep_for(400ms);
        BOOST_TEST(flag(release(holder, "hold-" + n, "slow-key"), "unlocked"));
        BOOST_TEST(flag(waiter.recv_for("wait-" + n), "acquired"));
    };
    checked_broker b(cfg);
    wire_client holder(b.unix_url), waiter(b.tcp_url), quick(b.tcp_url);
    BOOST_TEST(flag(acquire(quick, "quick-1", "quick-key"), "acquired"));
    BOOST_TEST(flag(release(quick, "quick-1", "quick-key"), "unlocked"));
    hold_while_one_waits(holder, waiter, "1");
    BOOST_TEST_REQUIRE(b.wait_for_log("slow wait"), b.log());
    BOOST_TEST_REQUIRE(b.wait_for_log("slow hold"), b.log());
    std::string wait_line, hold_line;
    std::istringstream in(b.log());
    for (std::string line; std::getline(in, line);) {
        if (line.find("slow wait") != std::string::npos) wait_line = line;
        if (line.find("slow hold") != std::string::npos) hold_line = line;
        BOOST_TEST(line.find("quick") == std::string::npos, line);
    }
    BOOST_TEST(wait_line.find("key \"slow-key\", lock id \"wait-1\", client 127.0.0.1:") != std::string::npos,
               wait_line);
    BOOST_TEST(hold_line.find("slow hold (released)") != std::string::npos, hold_line);
    BOOST_TEST(hold_line.find("key \"slow-key\", lock id \"hold-1\", client ") != std::string::npos, hold_line);
    BOOST_TEST(hold_line.find("127.0.0.1") == std::string::npos, "the hold was over the unix socket: " << hold_line);
    // A hold that ends with its connection names the client that had it; holds that end with
    // the broker's stop are not logged.
    {
        wire_client dropper(b.tcp_url);
        BOOST_TEST(flag(acquire(dropper, "drop-1", "drop-key"), "acquired"));
        BOOST_TEST(flag(acquire(holder, "kept-1", "kept-key"), "acquired"));
        std::this_thread::sleep_for(400ms);
    }
    BOOST_TEST_REQUIRE(b.wait_for_log("ended with its connection"), b.log());
    BOOST_TEST(b.log().find("slow hold (ended with its connection) ") != std::string::npos, b.log());
    BOOST_TEST(b.log().find("key \"drop-key\", lock id \"drop-1\", client 127.0.0.1:") != std::string::npos, b.log());
    BOOST_TEST(b.stop(SIGTERM, 5s) == 0);
    BOOST_TEST(b.log().find("kept-key") == std::string::npos, b.log());
    // Without the options nothing of the kind is logged (and no request log above debug).
    checked_broker quiet;
    wire_client a(quiet.tcp_url), c(quiet.tcp_url);
    hold_while_one_waits(a, c, "2");
    BOOST_TEST(alive(a));
    BOOST_TEST(quiet.log().find("slow") == std::string::npos, quiet.log());
    BOOST_TEST(quiet.log().find("request lock") == std::string::npos, quiet.log());
}

// A supervisor may send SIGTERM the moment the broker says it is ready; the broker.ready
// failpoint stalls it there, so a signal not yet caught at that point would kill it (143).
BOOST_AUTO_TEST_CASE(sigterm_right_after_ready_stops_gracefully) {
    broker_config cfg;
    cfg.env = {"LMX_FAILPOINTS=broker.ready=sleep(400)"};
    checked_broker b(cfg);
    int status = b.stop(SIGTERM, 5s);
    BOOST_TEST(status == 0, b.log());
    BOOST_TEST(b.log().find("received SIGTERM") != std::string::npos, b.log());
}

BOOST_DATA_TEST_CASE(signals_stop_gracefully, bdata::make({SIGTERM, SIGINT}), sig) {
    checked_broker b;
    const std::string sock = b.dir() + "/lmx.sock";
    std::vector<std::unique_ptr<wire_client>> cs;
    for (const char* kind : transports) {
        cs.push_back(std::make_unique<wire_client>(b.url(kind)));
        BOOST_REQUIRE(flag(acquire(*cs.back(), fresh_id("held"), std::string("held-") + kind), "acquired"));
    }
    // Connections that never finish a request must not hold up the exit either.
    raw_socket idle_http(b.ws_url), half_http(b.ws_url), idle_stream(b.tcp_url);
    BOOST_REQUIRE(half_http.send_all("GET /metrics HTTP/1.1\r\nHost: x\r\n"));
    BOOST_REQUIRE(idle_stream.send_all(R"({"type":"lock","uuid":"half")"));
    BOOST_REQUIRE(is_socket(sock));
    auto t0 = std::chrono::steady_clock::now();
    int status = b.stop(sig, 5s);
    BOOST_TEST(status == 0, b.log());
    BOOST_TEST(since(t0) < 2000);
    BOOST_TEST(!fs::exists(sock));
    BOOST_TEST(!fs::exists(b.dir() + "/urls"));
    BOOST_TEST(b.log().find(sig == SIGINT ? "received SIGINT" : "received SIGTERM") != std::string::npos, b.log());
    for (auto& c : cs) BOOST_TEST(c->closed_by_peer(2s));
    for (auto* r : {&idle_http, &half_http, &idle_stream}) BOOST_TEST(r->closed_by_peer(2s));
    BOOST_TEST(!b.running());
}

// A stop looks like a stop, not a crash: every lmx client hears `shutting_down` (an error
// without an id) before its connection ends, WebSocket clients then get close 1001, and
// live-mutex clients, which cannot read the notice, only see the close.
BOOST_AUTO_TEST_CASE(a_stopping_broker_says_so_before_it_closes) {
    checked_broker b;
    std::vector<std::unique_ptr<wire_client>> cs;
    for (const char* kind : transports) {
        cs.push_back(std::make_unique<wire_client>(b.url(kind)));
        BOOST_REQUIRE(flag(acquire(*cs.back(), fresh_id("held"), std::string("stop-") + kind), "acquired"));
    }
    wire_client live_mutex(b.tcp_url);
    live_mutex.send(R"({"type":"version","value":"0.2.25"})");
    BOOST_REQUIRE(alive(live_mutex));  // served in order: the version is known by now
    raw_websocket ws(b.ws_url);
    BOOST_REQUIRE_EQUAL(ws.status, 101);
    BOOST_REQUIRE(ws.send(raw_websocket::text, R"({"type":"ping","uuid":"p1"})"));
    auto pong = ws.recv(5s);
    BOOST_REQUIRE(pong && pong->payload.find("\"p1\"") != std::string::npos);

    BOOST_TEST(b.stop(SIGTERM, 5s) == 0, b.log());
    for (auto& c : cs) {
        auto notice = c->try_recv(2s);
        BOOST_TEST_REQUIRE(notice.has_value(), "no notice before the close");
        BOOST_TEST(text(*notice, "type") == "error");
        BOOST_TEST(text(*notice, "code") == "shutting_down");
        BOOST_TEST(!notice->contains("uuid"));
        BOOST_TEST(c->closed_by_peer(2s));
    }
    BOOST_TEST(!live_mutex.try_recv(1s).has_value(), "a live-mutex client got a notice it cannot read");
    BOOST_TEST(live_mutex.closed_by_peer(2s));

    auto notice = ws.recv(2s);
    BOOST_TEST_REQUIRE((notice && notice->op == raw_websocket::text), "no notice frame");
    BOOST_TEST(notice->payload.find("\"shutting_down\"") != std::string::npos, notice->payload);
    auto close = ws.recv(2s);
    BOOST_TEST_REQUIRE((close && close->op == raw_websocket::close_frame), "no close frame");
    BOOST_TEST_REQUIRE(close->payload.size() >= 2u);
    const int code =
        (static_cast<unsigned char>(close->payload[0]) << 8) | static_cast<unsigned char>(close->payload[1]);
    BOOST_TEST(code == 1001);
    BOOST_TEST(close->payload.substr(2) == "broker shutting down");
}

// A client that answers the goodbye at once lets the broker exit at once; one that never does
// holds the exit up by the grace time only.
BOOST_AUTO_TEST_CASE(a_stop_waits_a_bounded_time_for_clients_to_close) {
    checked_broker b;
    raw_socket silent(b.tcp_url);
    BOOST_REQUIRE(silent.send_all("{\"type\":\"ping\",\"uuid\":\"p\"}\n"));
    BOOST_REQUIRE(silent.recv_some(5s));
    auto t0 = std::chrono::steady_clock::now();
    BOOST_TEST(b.stop(SIGTERM, 5s) == 0, b.log());
    const auto took = since(t0);
    BOOST_TEST(took >= 900, "exited after " << took << " ms, before the grace time");
    BOOST_TEST(took < 3000, "exited after " << took << " ms");
    const auto rest = silent.recv_until_closed(2s);
    BOOST_TEST(rest.find("shutting_down") != std::string::npos, rest);
    BOOST_TEST(b.log().find("1 clients did not close their connections within a second") != std::string::npos, b.log());
}

// A client that closes its sending side after its last request and never reads the replies
// queued for it: its connection is closed at the linger time (10 s) instead of kept for good,
// and a stop does not wait for it beyond the grace time.
BOOST_DATA_TEST_CASE(a_client_that_never_reads_after_its_last_request_is_closed, bdata::make({false, true}), stopping) {
    checked_broker b({.extra_args = {"--max-outbox", "67108864"}});
    wire_client holder(b.tcp_url);
    const std::string pad(60, 'x');
    for (int i = 0; i < 200; ++i)
        holder.send(lock_msg("h" + std::to_string(i), "linger-" + std::to_string(i) + pad, {{"ttl", nullptr}}));
    for (int i = 0; i < 200; ++i) BOOST_REQUIRE(flag(holder.recv_for("h" + std::to_string(i)), "acquired"));
    auto open_fds = [&] {
        return std::distance(fs::directory_iterator("/proc/" + std::to_string(b.pid()) + "/fd"),
                             fs::directory_iterator{});
    };
    const auto fds_before = open_fds();
    raw_socket quiet(b.tcp_url, 4096);
    BOOST_TEST_REQUIRE(wait_connections(holder, 2));  // accepted
    std::string burst;  // about 12 MB of replies: more than the sockets hold, less than --max-outbox
    for (int i = 0; i < 800; ++i) burst += R"({"type":"ls","uuid":"ls-)" + std::to_string(i) + "\"}\n";
    BOOST_REQUIRE(quiet.send_all(burst));
    BOOST_REQUIRE(::shutdown(quiet.fd(), SHUT_WR) == 0);
    // The broker ends the session at the end of the requests; the connection stays while its
    // replies are being written.
    BOOST_TEST_REQUIRE(wait_connections(holder, 1));
    BOOST_TEST(open_fds() == fds_before + 1, "the connection was closed before its replies could be read");
    const auto t0 = std::chrono::steady_clock::now();
    if (stopping) {
        BOOST_TEST(b.stop(SIGTERM, 5s) == 0, b.log());
        BOOST_TEST(since(t0) < 3000);
        BOOST_TEST(b.log().find("did not close their connections within a second") != std::string::npos, b.log());
    } else {
        while (open_fds() > fds_before && since(t0) < 15000) std::this_thread::sleep_for(100ms);
        BOOST_TEST(open_fds() == fds_before, "the connection of a client that does not read stays open");
        BOOST_TEST(since(t0) >= 8000, "closed after " << since(t0) << " ms, before the linger time");
        BOOST_TEST(alive(holder));
    }
}

// The other side of the linger: a client that closes its sending side after its last request
// and then reads (printf | nc) gets every reply, though most were still queued when its
// connection ended, and though it reads them slowly: at about 0.5 MB/s for some 18 s, past the
// 10 s a client that reads nothing is given (and past what one write of its backlog would take).
BOOST_AUTO_TEST_CASE(a_client_that_closes_its_sending_side_and_reads_slowly_gets_every_reply) {
    checked_broker b({.extra_args = {"--max-outbox", "67108864"}});
    wire_client holder(b.tcp_url);
    for (int i = 0; i < 200; ++i)
        holder.send(
            lock_msg("h" + std::to_string(i), "half-" + std::to_string(i) + std::string(60, 'x'), {{"ttl", nullptr}}));
    for (int i = 0; i < 200; ++i) BOOST_REQUIRE(flag(holder.recv_for("h" + std::to_string(i)), "acquired"));
    raw_socket reader(b.tcp_url, 4096);
    BOOST_TEST_REQUIRE(wait_connections(holder, 2));
    std::string burst;  // about 9 MB of replies, to requests the broker reads at once
    for (int i = 0; i < 600; ++i) burst += R"({"type":"ls","uuid":"ls-)" + std::to_string(i) + "\"}\n";
    BOOST_REQUIRE(reader.send_all(burst));
    BOOST_REQUIRE(::shutdown(reader.fd(), SHUT_WR) == 0);
    BOOST_TEST_REQUIRE(wait_connections(holder, 1));  // ended, and its replies still queued
    std::string all;
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
        auto part = reader.recv_some(15s);
        BOOST_TEST_REQUIRE(part.has_value(), "nothing came for 15 s");
        if (part->empty()) break;
        all += *part;
        // About 0.5 MB/s: 2 microseconds a byte.
        std::this_thread::sleep_for(std::chrono::microseconds(part->size() * 2));
    }
    BOOST_TEST(since(t0) > 10000, "read in " << since(t0) << " ms: not slower than the linger time");
    std::istringstream in(all);
    int replies = 0;
    for (std::string line; std::getline(in, line);) {
        const auto v = boost::json::parse(line).as_object();
        BOOST_TEST(text(v, "uuid") == "ls-" + std::to_string(replies));
        BOOST_TEST(v.at("ls_result").as_array().size() == 200u);
        ++replies;
    }
    BOOST_TEST(replies == 600);
}

// The replies still queued for clients that closed their sending side count towards
// --max-outbox-total: two such clients, each under the bound but over it together, see the larger
// one disconnected.
BOOST_AUTO_TEST_CASE(replies_queued_for_a_lingering_client_count_towards_the_total_bound) {
    checked_broker b({.extra_args = {"--max-outbox", "67108864", "--max-outbox-total", "10485760"}});
    wire_client holder(b.tcp_url);
    const std::string pad(60, 'x');
    for (int i = 0; i < 200; ++i)
        holder.send(lock_msg("h" + std::to_string(i), "linger-" + std::to_string(i) + pad, {{"ttl", nullptr}}));
    for (int i = 0; i < 200; ++i) BOOST_REQUIRE(flag(holder.recv_for("h" + std::to_string(i)), "acquired"));
    // About 9.9 MB of replies each: under the bound of 10 MiB whatever the sockets take, over it
    // together as long as the sockets take less than 4 MB of each.
    std::string burst;
    for (int i = 0; i < 680; ++i) burst += R"({"type":"ls","uuid":"ls-)" + std::to_string(i) + "\"}\n";
    auto wait_for_count = [&](std::string_view figure, std::uint64_t n) {
        auto deadline = std::chrono::steady_clock::now() + 20s;  // 12 MB of replies to build, under ASan
        while (number(stats(holder), figure) != n && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(20ms);
        return number(stats(holder), figure) == n;
    };
    raw_socket first(b.tcp_url, 4096), second(b.tcp_url, 4096);
    BOOST_TEST_REQUIRE(wait_for_count("connections", 3));  // both accepted
    BOOST_REQUIRE(first.send_all(burst));
    BOOST_REQUIRE(::shutdown(first.fd(), SHUT_WR) == 0);
    BOOST_TEST_REQUIRE(wait_for_count("connections", 2));  // the first lingers
    BOOST_TEST(number(stats(holder), "clientsCutOff") == 0u, "one client's replies alone are under the bound");
    // Either may be the larger: when it is this one, it is cut off while it still sends.
    (void)second.send_all(burst);
    ::shutdown(second.fd(), SHUT_WR);
    BOOST_TEST(wait_for_count("clientsCutOff", 1), dump(stats(holder)));
    BOOST_TEST(b.wait_for_log("--max-outbox-total"), b.log());
}

// Type=notify: READY=1 once the listeners are bound (and what they are), RELOADING=1 and
// READY=1 around a SIGHUP reload, STOPPING=1 at SIGTERM, WATCHDOG=1 at half WATCHDOG_USEC.
BOOST_AUTO_TEST_CASE(the_service_manager_hears_ready_reloading_and_stopping) {
    temp_dir dir;
    const std::string path = dir.path() + "/notify";
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    BOOST_TEST_REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    BOOST_TEST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    auto next = [&](std::chrono::milliseconds wait) -> std::string {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return {};
        char buf[4096];
        const auto n = ::recv(fd, buf, sizeof buf, 0);
        return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    };
    // The first message that is not a keep-alive.
    auto next_state = [&](std::chrono::milliseconds wait) {
        for (;;) {
            auto m = next(wait);
            if (m != "WATCHDOG=1") return m;
        }
    };
    broker_config cfg;
    cfg.env = {"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=200000"};
    checked_broker b(cfg);
    const auto ready = next_state(5s);
    BOOST_TEST(ready.find("READY=1\n") == 0, ready);
    BOOST_TEST(ready.find("STATUS=listening on ") != std::string::npos, ready);
    BOOST_TEST(ready.find(b.tcp_url) != std::string::npos, ready);
    BOOST_TEST(ready.find("MAINPID=" + std::to_string(b.pid())) != std::string::npos, ready);
    // Ready means serving.
    wire_client c(b.tcp_url);
    BOOST_TEST(flag(acquire(c, fresh_id("n"), "notify"), "acquired"));
    // Keep-alives come while the loop turns: several within a second at 200 ms.
    int keep_alives = 0;
    for (auto until = std::chrono::steady_clock::now() + 1s; std::chrono::steady_clock::now() < until;)
        if (next(100ms) == "WATCHDOG=1") ++keep_alives;
    BOOST_TEST(keep_alives >= 3, keep_alives << " keep-alives in a second");
    BOOST_TEST_REQUIRE(::kill(b.pid(), SIGHUP) == 0);
    const auto reloading = next_state(5s);
    BOOST_TEST(reloading.find("RELOADING=1\nMONOTONIC_USEC=") == 0, reloading);
    BOOST_TEST(next_state(5s) == "READY=1");
    c.close();
    BOOST_TEST(b.stop(SIGTERM, 5s) == 0, b.log());
    BOOST_TEST(next_state(2s) == "STOPPING=1");
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(help_lists_every_option) {
    auto r = run_lmx({"broker", "--help"});
    BOOST_TEST(r.status == 0);
    for (const char* option : {"--listen",
                               "--ttl",
                               "--max-message-size",
                               "--max-key-length",
                               "--max-keys",
                               "--max-connections",
                               "--max-connections-per-peer",
                               "--max-waiters",
                               "--max-locks-per-connection",
                               "--max-total-keys",
                               "--max-outbox",
                               "--max-outbox-total",
                               "--max-handshakes",
                               "--handshake-timeout",
                               "--tcp-keepalive",
                               "--idle-timeout",
                               "--busy-poll",
                               "--key-max",
                               "--max-list",
                               "--unix-mode",
                               "--state-dir",
                               "--fencing-block",
                               "--allow-origin",
                               "--log-level",
                               "--urls-file"})
        BOOST_TEST(r.output.find(option) != std::string::npos, option);
    // Defaults are documented with the options.
    for (const char* text_ : {"tcp://127.0.0.1:6970", "ws://127.0.0.1:6971", "5000", "0660"})
        BOOST_TEST(r.output.find(text_) != std::string::npos, text_);
    auto alias = run_lmx({"start", "--help"});
    BOOST_TEST(alias.status == 0);
    BOOST_TEST(alias.output.find("--max-outbox") != std::string::npos);
    auto version = run_lmx({"--version"});
    BOOST_TEST(version.status == 0);
    BOOST_TEST(version.output.find("lmx ") != std::string::npos, version.output);
    auto bad = run_lmx({"broker", "--no-such-option"});
    BOOST_TEST(bad.status == 2, bad.output);
}

// CPU time of a process so far, in clock ticks (utime + stime of /proc/<pid>/stat).
long cpu_ticks(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
    std::string field;
    long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
        if (i == 14) utime = std::stol(field);
        if (i == 15) stime = std::stol(field);
    }
    return utime + stime;
}

// --busy-poll serves as the plain loop does, stops on SIGTERM, and once the requests stop it
// sleeps: an idle broker costs no CPU, however long the window.
BOOST_AUTO_TEST_CASE(busy_poll_serves_and_sleeps_when_idle) {
    checked_broker b({.tcp = false, .websocket = false, .extra_args = {"--busy-poll", "10000"}});
    wire_client c(b.unix_url);
    for (int i = 0; i < 500; ++i) {
        const auto id = "bp-" + std::to_string(i);
        BOOST_REQUIRE(flag(acquire(c, id, "busy"), "acquired"));
        BOOST_REQUIRE(flag(release(c, id, "busy"), "unlocked"));
    }
    std::this_thread::sleep_for(100ms);  // past the window: asleep in epoll_wait
    const long before = cpu_ticks(b.pid());
    std::this_thread::sleep_for(1s);
    const long spent = cpu_ticks(b.pid()) - before;
    const long per_second = ::sysconf(_SC_CLK_TCK);
    BOOST_TEST(spent * 10 < per_second, spent << " ticks of CPU in one idle second (" << per_second << " per second)");
    BOOST_TEST(alive(c));
    auto bad = run_lmx({"broker", "--busy-poll", "20000"});
    BOOST_TEST(bad.status == 2, bad.output);
    BOOST_TEST(bad.output.find("--busy-poll") != std::string::npos, bad.output);
}

BOOST_AUTO_TEST_CASE(max_connections_refuses_the_third) {
    checked_broker b({.extra_args = {"--max-connections", "2"}});
    for (const char* kind : transports) {
        BOOST_TEST_CONTEXT(kind) {
            BOOST_REQUIRE(wait_idle(b));
            auto c1 = std::make_unique<wire_client>(b.url(kind));
            wire_client c2(b.url(kind));
            BOOST_TEST(alive(*c1));
            BOOST_TEST(alive(c2));
            {
                wire_client c3(b.url(kind));
                BOOST_TEST(c3.closed_by_peer(3s));
                BOOST_TEST(!alive(c3));
            }
            // A slot freed is a slot usable again.
            c1.reset();
            auto deadline = std::chrono::steady_clock::now() + 3s;
            bool served = false;
            while (!served && std::chrono::steady_clock::now() < deadline) {
                wire_client c4(b.url(kind));
                served = alive(c4);
            }
            BOOST_TEST(served);
            BOOST_TEST(alive(c2));
        }
    }
    BOOST_TEST(b.log().find("--max-connections") != std::string::npos, b.log());
    // Counted for operators (lmx_connections_refused_total in /metrics): at least the third of
    // each transport; the loop above may have met a slot not yet freed.
    const auto st = boost::json::parse(http_get(b.ws_url, "/v1/stats").body).as_object();
    BOOST_TEST(number(st, "connectionsRefused") >= 3u, dump(st));
    BOOST_TEST(http_get(b.ws_url, "/metrics").body.find("\nlmx_connections_refused_total ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(fencing_tokens_never_go_backwards_across_restarts) {
    temp_dir state;
    // A high-water mark far above the wall clock in microseconds: only what is persisted under the
    // state directory can keep the tokens rising across these restarts.
    const std::uint64_t seed = 5'000'000'000'000'000;
    std::ofstream(state.path() + "/fencing") << seed << "\n";

    std::uint64_t high = seed;
    {
        checked_broker b({.websocket = false, .state_dir = state.path()});
        high = take_tokens(b, high);
        BOOST_TEST(b.stop(SIGTERM) == 0);
    }
    {
        checked_broker b({.websocket = false, .state_dir = state.path()});
        high = take_tokens(b, high);
        // A crash persists nothing at exit: the reservation written before the grants must do.
        BOOST_TEST(b.stop(SIGKILL) == 128 + SIGKILL);
    }
    {
        checked_broker b({.websocket = false, .state_dir = state.path()});
        high = take_tokens(b, high);
    }
    BOOST_TEST(high < (std::uint64_t{1} << 53));

    // A state file that is not a number stops the broker from starting rather than guessing.
    temp_dir corrupt;
    std::ofstream(corrupt.path() + "/fencing") << "garbage\n";
    auto r = run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--state-dir", corrupt.path()});
    BOOST_TEST(r.status > 0);
    BOOST_TEST(r.output.find("corrupt") != std::string::npos, r.output);
}

// Whoever can write into the state directory can reset the fencing floor: such a directory, or
// one of another user, is refused with what to do; a state file that cannot be read is no first
// start.
BOOST_AUTO_TEST_CASE(an_unsafe_state_directory_is_refused) {
    auto start = [](const std::string& dir) {
        return run_lmx({"broker", "--listen", "tcp://127.0.0.1:0", "--state-dir", dir}, 5s);
    };
    temp_dir shared;
    BOOST_REQUIRE(::chmod(shared.path().c_str(), 0777) == 0);
    auto r = start(shared.path());
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output.find("has mode 0777") != std::string::npos, r.output);
    BOOST_TEST(r.output.find("chmod 0700") != std::string::npos, r.output);
    BOOST_TEST(!fs::exists(shared.path() + "/fencing.tmp"));

    temp_dir group;
    BOOST_REQUIRE(::chmod(group.path().c_str(), 0770) == 0);
    r = start(group.path());
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output.find("has mode 0770") != std::string::npos, r.output);

    temp_dir foreign;
    BOOST_REQUIRE(::chown(foreign.path().c_str(), 65534, 65534) == 0);  // the tests run as root
    r = start(foreign.path());
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output.find("owned by uid 65534") != std::string::npos, r.output);

    temp_dir unreadable;
    fs::create_directory(unreadable.path() + "/fencing");  // not a file: reading it fails
    r = start(unreadable.path());
    BOOST_TEST(r.status == 1, r.output);
    BOOST_TEST(r.output.find("cannot read fencing state") != std::string::npos, r.output);

    // A state directory created by the broker is 0700 and its own.
    temp_dir parent;
    checked_broker b({.websocket = false, .state_dir = parent.path() + "/state"});
    struct stat st {};
    BOOST_REQUIRE(::stat((parent.path() + "/state").c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 07777) == 0700u);
    BOOST_TEST(st.st_uid == ::geteuid());
}

BOOST_AUTO_TEST_SUITE_END()
