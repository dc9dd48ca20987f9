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
      // Hand out what came before; the error surfaces on the next call (scan_ stays put).
      if (out.size() > before) return {};
      return error::message_too_large;
    }
    if (len > 0) out.emplace_back(base + begin_, len);
    begin_ = scan_ = pos + 1;
  }
  // A partial line that can no longer end within the limit (+1 for a trailing '\r').
  if (out.size() == before && end_ - begin_ > max_ + 1) return error::message_too_large;
  return {};
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
