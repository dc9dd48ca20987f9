#include "ws_frames.hpp"

#include <algorithm>
#include <cstring>
#include <random>

namespace lmx::transport::detail::ws {

namespace {

void apply_mask(char* data, std::size_t n, std::uint32_t key, std::size_t offset = 0) noexcept {
    unsigned char k[4] = {static_cast<unsigned char>(key >> 24), static_cast<unsigned char>(key >> 16),
                          static_cast<unsigned char>(key >> 8), static_cast<unsigned char>(key)};
    for (std::size_t i = 0; i < n; ++i)
        data[i] = static_cast<char>(static_cast<unsigned char>(data[i]) ^ k[(i + offset) & 3]);
}

bool is_control(unsigned op) noexcept { return op >= 8; }

// Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
bool valid_utf8(std::string_view s) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p != end) {
        // ASCII, eight bytes at a time.
        while (end - p >= 8) {
            std::uint64_t word;
            std::memcpy(&word, p, 8);
            if (word & 0x8080808080808080ull) break;
            p += 8;
        }
        if (p == end) break;
        const unsigned c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        std::size_t n;
        unsigned lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            if (c == 0xe0) lo = 0xa0;  // overlong
            if (c == 0xed) hi = 0x9f;  // surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            if (c == 0xf0) lo = 0x90;  // overlong
            if (c == 0xf4) hi = 0x8f;  // past U+10FFFF
        } else {
            return false;
        }
        if (static_cast<std::size_t>(end - p) < n || p[1] < lo || p[1] > hi) return false;
        for (std::size_t i = 2; i < n; ++i)
            if ((p[i] & 0xc0) != 0x80) return false;
        p += n;
    }
    return true;
}
bool is_known(unsigned op) noexcept { return op <= 2 || (op >= 8 && op <= 10); }

}  // namespace

void append_frame(std::string& out, opcode op, std::string_view payload, bool masked, std::uint32_t mask_key) {
    const std::size_t n = payload.size();
    const unsigned char mask_bit = masked ? 0x80 : 0;
    out.push_back(static_cast<char>(0x80 | static_cast<unsigned>(op)));
    if (n < 126) {
        out.push_back(static_cast<char>(mask_bit | n));
    } else if (n <= 0xffff) {
        out.push_back(static_cast<char>(mask_bit | 126));
        out.push_back(static_cast<char>(n >> 8));
        out.push_back(static_cast<char>(n & 0xff));
    } else {
        out.push_back(static_cast<char>(mask_bit | 127));
        for (int shift = 56; shift >= 0; shift -= 8)
            out.push_back(static_cast<char>((std::uint64_t{n} >> shift) & 0xff));
    }
    if (!masked) {
        out.append(payload);
        return;
    }
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((mask_key >> shift) & 0xff));
    const std::size_t at = out.size();
    out.append(payload);
    apply_mask(out.data() + at, n, mask_key);
}

std::uint32_t random_mask_key() {
    thread_local std::mt19937 generator{std::random_device{}()};
    return static_cast<std::uint32_t>(generator());
}

std::size_t append_text_frames(std::string& out, std::string_view batch, bool masked, std::size_t limit,
                               std::vector<framed_line>* lines) {
    std::size_t pos = 0;
    while (pos < batch.size() && out.size() < limit) {
        auto end = batch.find('\n', pos);
        if (end == std::string_view::npos) end = batch.size();
        const std::uint32_t key = masked ? random_mask_key() : 0;
        if (end > pos) append_frame(out, opcode::text, batch.substr(pos, end - pos), masked, key);
        pos = std::min(end + 1, batch.size());
        if (lines) lines->push_back({out.size(), pos, key});
    }
    return pos;
}

frame_reader::frame_reader(bool peer_masks, std::size_t max_message_size)
    : peer_masks_(peer_masks), max_message_size_(max_message_size) {}

char* frame_reader::prepare(std::size_t n) {
    if (capacity_ < size_ + n) {
        const std::size_t grown = std::max(size_ + n, capacity_ * 2);
        auto bigger = std::make_unique_for_overwrite<char[]>(grown);
        if (size_ > 0) std::memcpy(bigger.get(), buffer_.get(), size_);
        buffer_ = std::move(bigger);
        capacity_ = grown;
    }
    return buffer_.get() + size_;
}

void frame_reader::append(std::string_view bytes) {
    if (bytes.empty()) return;
    std::memcpy(prepare(bytes.size()), bytes.data(), bytes.size());
    commit(bytes.size());
}

void frame_reader::release() noexcept {
    whole_.clear();
    if (consumed_ == 0) return;
    std::memmove(buffer_.get(), buffer_.get() + consumed_, size_ - consumed_);
    size_ -= consumed_;
    consumed_ = 0;
    // A buffer that grew for a large message gives its memory back once it is drained.
    if (size_ == 0 && capacity_ > 256 * 1024) {
        buffer_.reset();
        capacity_ = 0;
    }
}

read_status frame_reader::parse(std::vector<std::string_view>& messages, std::vector<control_frame>& controls) {
    if (ended_ != read_status::more) return ended_;
    auto fail = [&](read_status why) {
        ended_ = why;
        return why;
    };
    for (;;) {
        const auto* p = reinterpret_cast<const unsigned char*>(buffer_.get() + consumed_);
        const std::size_t avail = size_ - consumed_;
        if (avail < 2) return read_status::more;
        const bool fin = p[0] & 0x80;
        const unsigned op = p[0] & 0x0f;
        const bool masked = p[1] & 0x80;
        if ((p[0] & 0x70) != 0 || !is_known(op) || masked != peer_masks_) return fail(read_status::bad_frame);
        std::uint64_t length = p[1] & 0x7f;
        std::size_t header = 2;
        if (length == 126) {
            if (avail < 4) return read_status::more;
            length = std::uint64_t{p[2]} << 8 | p[3];
            header = 4;
            if (length < 126) return fail(read_status::bad_frame);  // not the shortest form
        } else if (length == 127) {
            if (avail < 10) return read_status::more;
            length = 0;
            for (int i = 2; i < 10; ++i) length = length << 8 | p[i];
            header = 10;
            if (length <= 0xffff || (length >> 63) != 0) return fail(read_status::bad_frame);
        }
        if (is_control(op) && (!fin || length > 125)) return fail(read_status::bad_frame);
        if (op == static_cast<unsigned>(opcode::continuation) ? !in_message_ : (!is_control(op) && in_message_))
            return fail(read_status::bad_frame);
        // The limit is known from the header: a message over it is refused before its bytes come.
        if (!is_control(op) && (op == 0 ? fragments_.size() : 0) + length > max_message_size_)
            return fail(read_status::too_large);
        std::uint32_t key = 0;
        if (masked) {
            if (avail < header + 4) return read_status::more;
            key = std::uint32_t{p[header]} << 24 | std::uint32_t{p[header + 1]} << 16 |
                  std::uint32_t{p[header + 2]} << 8 | p[header + 3];
            header += 4;
        }
        if (avail - header < length) return read_status::more;
        char* payload = buffer_.get() + consumed_ + header;
        const auto n = static_cast<std::size_t>(length);
        if (masked) apply_mask(payload, n, key);
        consumed_ += header + n;
        const std::string_view data(payload, n);
        switch (static_cast<opcode>(op)) {
            case opcode::text:
            case opcode::binary:
                if (fin) {
                    if (op == 1 && !valid_utf8(data)) return fail(read_status::bad_frame);
                    if (n > 0) messages.push_back(data);  // like an empty NDJSON line
                } else {
                    in_message_ = true;
                    text_ = op == 1;
                    fragments_.assign(data);
                }
                break;
            case opcode::continuation:
                fragments_.append(data);
                if (fin) {
                    in_message_ = false;
                    if (text_ && !valid_utf8(fragments_)) return fail(read_status::bad_frame);
                    if (!fragments_.empty()) {
                        whole_.push_back(std::move(fragments_));
                        messages.push_back(whole_.back());
                    }
                    fragments_.clear();
                }
                break;
            case opcode::ping: controls.push_back({opcode::ping, std::string(data)}); break;
            case opcode::pong: break;
            case opcode::close:
                if (n == 1) return fail(read_status::bad_frame);
                controls.push_back({opcode::close, std::string(data)});
                return fail(read_status::closed);  // nothing after a close is read
        }
    }
}

}  // namespace lmx::transport::detail::ws
