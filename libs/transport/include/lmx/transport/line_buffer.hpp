#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace lmx::transport {

// NDJSON framing over one growing receive buffer, shared by every stream connection.
// Messages are handed out as views into the buffer (no copy, no per-message allocation).
// Usage per read: take(); if nothing came out, read_some into prepare() and commit().
class line_buffer {
public:
  explicit line_buffer(std::size_t max_message_size, std::size_t initial_capacity = 16 * 1024);

  // Appends every complete message buffered so far (without "\n" / "\r\n"; empty lines skipped).
  // Views stay valid until the next prepare(). error::message_too_large once the next message
  // cannot fit; messages before it are still handed out first.
  boost::system::error_code take(std::vector<std::string_view>& out);

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
};

}  // namespace lmx::transport
