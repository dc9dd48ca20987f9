#pragma once

// A synchronous protocol speaker for tests: sends raw frames to a broker over any transport and
// reads its replies as JSON objects, with timeouts so that no test can hang.

#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace lmx::transport {
class connection;
}  // namespace lmx::transport

namespace lmx::test {

class wire_client {
public:
    explicit wire_client(const std::string& url, std::chrono::milliseconds timeout = std::chrono::seconds(5));
    ~wire_client();
    wire_client(const wire_client&) = delete;
    wire_client& operator=(const wire_client&) = delete;

    // Sends one JSON frame (a '\n' is added).
    void send(const boost::json::object& frame);
    void send(std::string_view frame);
    // Sends bytes as they are (stream sockets: no framing added; WebSocket: one message per line).
    void send_raw(std::string_view bytes);

    // The next frame from the broker; throws std::runtime_error on timeout or close.
    boost::json::object recv(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    std::optional<boost::json::object> try_recv(std::chrono::milliseconds timeout);
    // The next frame whose "uuid" is `uuid` (others are kept for later recv calls).
    boost::json::object recv_for(std::string_view uuid, std::chrono::milliseconds timeout = std::chrono::seconds(5));
    std::optional<boost::json::object> try_recv_for(std::string_view uuid, std::chrono::milliseconds timeout);
    // The next frame that `match` accepts (others are kept); nullopt on timeout or close.
    std::optional<boost::json::object> try_recv_if(const std::function<bool(const boost::json::object&)>& match,
                                                   std::chrono::milliseconds timeout);
    // Sends `frame` and returns the reply carrying its uuid.
    boost::json::object request(const boost::json::object& frame,
                                std::chrono::milliseconds timeout = std::chrono::seconds(5));

    // True once the broker closed the connection (waits up to `timeout` for it).
    bool closed_by_peer(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    void close();
    // Frames received but not yet taken.
    std::size_t pending() const noexcept { return inbox_.size(); }

private:
    void pump_until(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& done);

    boost::asio::io_context io_;
    std::unique_ptr<transport::connection> conn_;
    std::deque<std::string> inbox_;
    bool closed_ = false;
    boost::system::error_code error_;
};

}  // namespace lmx::test
