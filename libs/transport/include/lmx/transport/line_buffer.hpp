#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::transport {

// What is kept of a line that was skipped for its size: its first and last bytes (enough to find
// a request id near either end) and its length.
struct skipped_line {
    std::string head;
    std::string tail;
    std::size_t size = 0;
};

// NDJSON framing over one growing receive buffer, shared by every stream connection.
// Messages are handed out as views into the buffer (no copy, no per-message allocation).
// Usage per read: take(); if nothing came out, read_some into prepare() and commit().
class line_buffer {
public:
    explicit line_buffer(std::size_t max_message_size, std::size_t initial_capacity = 16 * 1024);

    // Appends every complete message buffered so far (without "\n" / "\r\n"; empty lines skipped).
    // Views stay valid until the next prepare(). A line longer than the limit is dropped as it
    // arrives, never buffered whole: once its newline is in, take() fails with
    // error::message_skipped (skipped() tells what it was) and the next call goes on after it.
    // Messages before it are handed out first.
    boost::system::error_code take(std::vector<std::string_view>& out);

    // The last line skipped for its size.
    const skipped_line& skipped() const noexcept { return skipped_; }

    // Bytes kept from each end of a skipped line.
    static constexpr std::size_t skipped_excerpt = 512;

    // Writable space for the next read; compacts the unconsumed tail to the front and grows
    // the buffer when full. Invalidates the views handed out by take().
    std::span<char> prepare();
    void commit(std::size_t n) noexcept { end_ += n; }

    std::size_t buffered() const noexcept { return end_ - begin_; }
    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t max_message_size() const noexcept { return max_; }

private:
    std::unique_ptr<char[]> data_;
    std::size_t capacity_ = 0;
    std::size_t initial_capacity_;
    std::size_t max_;
    std::size_t begin_ = 0;  // first byte not yet handed out
    std::size_t scan_ = 0;   // bytes before this hold no '\n' (no rescans of a long partial line)
    std::size_t end_ = 0;    // end of received data
    bool skipping_ = false;  // inside a line over the limit: its bytes are dropped up to its newline
    skipped_line skipped_;

    void start_skip(std::size_t length);
    void keep(const char* p, std::size_t n);  // more of the skipped line: counted, ends kept
};

}  // namespace lmx::transport
