#pragma once

#include <lmx/transport/connection.hpp>

#include <boost/asio/steady_timer.hpp>

#include <cstddef>
#include <functional>
#include <string>

namespace lmx::transport {

// The sending half of a connection, for broker sessions and clients alike. The owner appends
// messages (each ending in '\n') to its outbox during a turn and calls flush() at the end of the
// turn: what the kernel takes at once goes out there and then (connection::write_now, no hop
// through a coroutine), and run(), the writer, sends the rest in one write, then whatever was
// appended during that write in the next, and so on. Every call from the connection's executor.
class batched_writer {
public:
    // `conn` and `outbox` outlive the writer.
    batched_writer(connection& conn, std::string& outbox);
    batched_writer(const batched_writer&) = delete;
    batched_writer& operator=(const batched_writer&) = delete;

    // Sends what the outbox holds: at once what the kernel takes, the rest through run(). While a
    // write is under way nothing is sent here; run() takes the outbox when that write ends.
    void flush();

    // Bytes waiting: the outbox and the write under way.
    std::size_t queued() const noexcept { return outbox_.size() + sending_.size(); }

    // run() sends what is queued, then returns; the connection stays open.
    void finish() noexcept;
    // run() returns as soon as it resumes, and touches the outbox no more (it may belong to the
    // next connection's writer by then).
    void abandon() noexcept;

    // The writer: returns after finish() once everything queued is sent, after abandon()
    // (asio::error::operation_aborted), or with the error of a failed write (the outbox is emptied
    // then: nothing after a lost message may go out). `written` runs after every write; a write
    // takes at most max_write bytes (whole lines), so that it runs as a slow reader makes progress.
    asio::awaitable<boost::system::error_code> run(std::function<void()> written = {});

    static constexpr std::size_t max_write = 256 * 1024;

private:
    void wake() noexcept;

    connection& conn_;
    std::string& outbox_;
    std::string sending_;      // the write under way
    asio::steady_timer park_;  // never expires: run() waits on it with nothing to send
    bool idle_ = true;         // no write under way or about to start: flush() may send
    bool finishing_ = false;
    bool abandoned_ = false;
};

}  // namespace lmx::transport
