#include <lmx/transport/error.hpp>
#include <lmx/transport/line_buffer.hpp>

#include <algorithm>
#include <cstring>
#include <limits>

namespace lmx::transport {
namespace {

// A message of max bytes may still need "\r\n" behind it.
constexpr std::size_t framing_slack = 2;
// Idle connections give back buffers grown by one large message.
constexpr std::size_t shrink_above = 64 * 1024;

}  // namespace

line_buffer::line_buffer(std::size_t max_message_size, std::size_t initial_capacity)
    : initial_capacity_(std::max<std::size_t>(initial_capacity, 1)),
      max_(std::min(max_message_size, std::numeric_limits<std::size_t>::max() / 4)) {
    initial_capacity_ = std::min(initial_capacity_, max_ + framing_slack);
}

boost::system::error_code line_buffer::take(std::vector<std::string_view>& out) {
    const std::size_t before = out.size();
    const char* base = data_.get();
    if (skipping_) {
        // Only the rest of an over-long line is buffered here: drop it up to its newline.
        const auto* nl = static_cast<const char*>(std::memchr(base + begin_, '\n', end_ - begin_));
        const std::size_t stop = nl ? static_cast<std::size_t>(nl - base) : end_;
        keep(base + begin_, stop - begin_);
        if (!nl) {
            begin_ = scan_ = end_;
            return {};
        }
        begin_ = scan_ = stop + 1;
        skipping_ = false;
        return error::message_skipped;
    }
    while (scan_ < end_) {
        const auto* nl = static_cast<const char*>(std::memchr(base + scan_, '\n', end_ - scan_));
        if (!nl) {
            scan_ = end_;
            break;
        }
        const auto pos = static_cast<std::size_t>(nl - base);
        std::size_t len = pos - begin_;
        if (len > 0 && base[pos - 1] == '\r') --len;
        if (len > max_) {
            // Hand out what came before; the skip is reported on the next call (scan_ stays put).
            if (out.size() > before) return {};
            start_skip(pos - begin_);
            begin_ = scan_ = pos + 1;
            skipping_ = false;
            return error::message_skipped;
        }
        if (len > 0) out.emplace_back(base + begin_, len);
        begin_ = scan_ = pos + 1;
    }
    // A partial line that can no longer end within the limit (+1 for a trailing '\r'): dropped
    // from here on, so that the buffer never holds more than the limit.
    if (out.size() == before && end_ - begin_ > max_ + 1) {
        start_skip(end_ - begin_);
        begin_ = scan_ = end_;
    }
    return {};
}

void line_buffer::start_skip(std::size_t length) {
    skipping_ = true;
    skipped_.head.clear();
    skipped_.tail.clear();
    skipped_.size = 0;
    keep(data_.get() + begin_, length);
}

void line_buffer::keep(const char* p, std::size_t n) {
    skipped_.size += n;
    if (skipped_.head.size() < skipped_excerpt)
        skipped_.head.append(p, std::min(n, skipped_excerpt - skipped_.head.size()));
    if (n >= skipped_excerpt) {
        skipped_.tail.assign(p + n - skipped_excerpt, skipped_excerpt);
        return;
    }
    skipped_.tail.append(p, n);
    if (skipped_.tail.size() > skipped_excerpt) skipped_.tail.erase(0, skipped_.tail.size() - skipped_excerpt);
}

std::span<char> line_buffer::prepare() {
    if (begin_ == end_) {
        begin_ = scan_ = end_ = 0;
        if (capacity_ > shrink_above && capacity_ > initial_capacity_) {
            data_.reset();
            capacity_ = 0;
        }
    } else if (begin_ > 0) {
        std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
        end_ -= begin_;
        scan_ -= begin_;
        begin_ = 0;
    }
    if (!data_) {
        data_ = std::make_unique_for_overwrite<char[]>(initial_capacity_);
        capacity_ = initial_capacity_;
    } else if (end_ == capacity_) {
        // Only a partial line fills the buffer here (take() drained the rest), so it must grow
        // up to the largest possible framed message; beyond that take() reports the error.
        const std::size_t limit = max_ + framing_slack;
        const std::size_t grown = std::min(std::max(capacity_ * 2, capacity_ + 1), std::max(limit, capacity_ + 1));
        auto bigger = std::make_unique_for_overwrite<char[]>(grown);
        std::memcpy(bigger.get(), data_.get(), end_);
        data_ = std::move(bigger);
        capacity_ = grown;
    }
    return {data_.get() + end_, capacity_ - end_};
}

}  // namespace lmx::transport
