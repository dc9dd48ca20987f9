#include "wire_client.hpp"

#include <lmx/transport/connection.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <stdexcept>

namespace lmx::test {

namespace asio = boost::asio;

wire_client::wire_client(const std::string& url, std::chrono::milliseconds timeout) {
    std::string why;
    auto ep = transport::parse_endpoint(url, &why);
    if (!ep) throw std::runtime_error("bad url " + url + ": " + why);
    bool done = false;
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
            auto [ec, c] = co_await transport::connect(io_.get_executor(), *ep, {.timeout = timeout});
            error_ = ec;
            conn_ = std::move(c);
            done = true;
        },
        asio::detached);
    pump_until(std::chrono::steady_clock::now() + timeout + std::chrono::seconds(1), [&] { return done; });
    if (!conn_) throw std::runtime_error("cannot connect to " + url + ": " + error_.message());
    // One reader for the connection's lifetime, feeding the inbox.
    asio::co_spawn(
        io_,
        [this]() -> asio::awaitable<void> {
            std::vector<std::string_view> batch;
            for (;;) {
                batch.clear();
                auto ec = co_await conn_->read(batch);
                for (auto m : batch) inbox_.emplace_back(m);
                if (ec) {
                    error_ = ec;
                    closed_ = true;
                    co_return;
                }
            }
        },
        asio::detached);
}

wire_client::~wire_client() {
    close();
    // Lets the reader see the close and finish before the connection goes away.
    io_.restart();
    io_.run_for(std::chrono::milliseconds(200));
}

void wire_client::pump_until(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& done) {
    while (!done()) {
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return;
        if (io_.stopped()) io_.restart();
        io_.run_one_for(deadline - now);
    }
}

void wire_client::send(const boost::json::object& frame) { send(boost::json::serialize(frame)); }

void wire_client::send(std::string_view frame) { send_raw(std::string(frame) + "\n"); }

void wire_client::send_raw(std::string_view bytes) {
    if (!conn_) throw std::runtime_error("send on a closed wire_client");
    bool done = false;
    boost::system::error_code result;
    std::string copy(bytes);
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
            result = co_await conn_->write(copy);
            done = true;
        },
        asio::detached);
    pump_until(std::chrono::steady_clock::now() + std::chrono::seconds(5), [&] { return done; });
    if (!done) throw std::runtime_error("write timed out");
    if (result) throw std::runtime_error("write failed: " + result.message());
}

std::optional<boost::json::object> wire_client::try_recv(std::chrono::milliseconds timeout) {
    pump_until(std::chrono::steady_clock::now() + timeout, [&] { return !inbox_.empty() || closed_; });
    if (inbox_.empty()) return std::nullopt;
    std::string text = std::move(inbox_.front());
    inbox_.pop_front();
    auto v = boost::json::parse(text);
    if (!v.is_object()) throw std::runtime_error("broker sent a non-object: " + text);
    return v.as_object();
}

boost::json::object wire_client::recv(std::chrono::milliseconds timeout) {
    auto m = try_recv(timeout);
    if (!m)
        throw std::runtime_error(closed_ ? "connection closed by the broker: " + error_.message()
                                         : "no reply within timeout");
    return *m;
}

std::optional<boost::json::object> wire_client::try_recv_if(
    const std::function<bool(const boost::json::object&)>& match, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t checked = 0;  // frames before this one were parsed and rejected already
    for (;;) {
        for (auto it = inbox_.begin() + static_cast<std::ptrdiff_t>(checked); it != inbox_.end(); ++it, ++checked) {
            auto v = boost::json::parse(*it);
            if (v.is_object() && match(v.as_object())) {
                inbox_.erase(it);
                return std::move(v.as_object());
            }
        }
        pump_until(deadline, [&] { return inbox_.size() > checked || closed_; });
        if (inbox_.size() == checked) return std::nullopt;
    }
}

std::optional<boost::json::object> wire_client::try_recv_for(std::string_view uuid, std::chrono::milliseconds timeout) {
    return try_recv_if(
        [&](const boost::json::object& o) {
            auto* u = o.if_contains("uuid");
            return u && u->is_string() && u->get_string() == uuid;
        },
        timeout);
}

boost::json::object wire_client::recv_for(std::string_view uuid, std::chrono::milliseconds timeout) {
    auto m = try_recv_for(uuid, timeout);
    if (!m)
        throw std::runtime_error("no reply for uuid " + std::string(uuid) +
                                 (closed_ ? " (connection closed)" : " within timeout"));
    return std::move(*m);
}

boost::json::object wire_client::request(const boost::json::object& frame, std::chrono::milliseconds timeout) {
    send(frame);
    return recv_for(frame.at("uuid").as_string(), timeout);
}

bool wire_client::closed_by_peer(std::chrono::milliseconds timeout) {
    pump_until(std::chrono::steady_clock::now() + timeout, [&] { return closed_; });
    return closed_;
}

void wire_client::close() {
    if (conn_) conn_->close();
}

}  // namespace lmx::test
