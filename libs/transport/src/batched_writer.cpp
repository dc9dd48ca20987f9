#include <lmx/transport/batched_writer.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <utility>

namespace lmx::transport {

namespace {

// A buffer that once held a burst gives its memory back once it is empty, so that what a byte
// bound counts (bytes queued) is what the process holds.
void trim(std::string& buffer) {
    if (buffer.empty() && buffer.capacity() > 256 * 1024) std::string().swap(buffer);
}

}  // namespace

batched_writer::batched_writer(connection& conn, std::string& outbox)
    : conn_(conn), outbox_(outbox), park_(conn.get_executor(), asio::steady_timer::time_point::max()) {}

void batched_writer::flush() {
    // Not idle: run() is writing, or about to, and takes the outbox itself.
    if (!idle_ || abandoned_ || outbox_.empty()) return;
    const std::size_t taken = conn_.write_now(outbox_);
    if (taken == outbox_.size()) {
        outbox_.clear();
        trim(outbox_);
        return;
    }
    outbox_.erase(0, taken);
    wake();
}

void batched_writer::finish() noexcept {
    finishing_ = true;
    wake();
}

void batched_writer::abandon() noexcept {
    abandoned_ = true;
    wake();
}

void batched_writer::wake() noexcept {
    if (!idle_) return;
    idle_ = false;
    park_.cancel();  // before run() first waits, a no-op: it looks at the outbox before waiting
}

asio::awaitable<boost::system::error_code> batched_writer::run(std::function<void()> written) {
    constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
    for (;;) {
        if (abandoned_) co_return asio::error::operation_aborted;
        if (outbox_.empty()) {
            if (finishing_) co_return boost::system::error_code{};
            idle_ = true;
            co_await park_.async_wait(use_tuple);
            continue;
        }
        idle_ = false;
        if (outbox_.size() > max_write) {
            // A backlog goes out in pieces of whole lines, so that `written` tells how a slow
            // reader is getting on.
            auto cut = outbox_.rfind('\n', max_write);
            if (cut == std::string::npos) cut = outbox_.find('\n', max_write);
            cut = cut == std::string::npos ? outbox_.size() : cut + 1;
            sending_.assign(outbox_, 0, cut);
            outbox_.erase(0, cut);
        } else {
            sending_.swap(outbox_);
        }
        const auto ec = co_await conn_.write(sending_);
        sending_.clear();
        trim(sending_);
        if (abandoned_) co_return asio::error::operation_aborted;
        if (ec) {
            outbox_.clear();
            trim(outbox_);
        }
        if (written) written();
        if (ec) co_return ec;
    }
}

}  // namespace lmx::transport
