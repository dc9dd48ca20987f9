#pragma once

// Private to libs/core: the frame writer shared by the request encoder (request_codec.cpp) and
// the reply writers (reply_writer.cpp).

#include <lmx/core/protocol.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <concepts>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace lmx::core::wire {

inline constexpr char hex_digits[] = "0123456789abcdef";

// Builds one frame in place at the end of `out`: it writes through a raw cursor into space it
// sized beforehand, so a frame costs a handful of bounds checks instead of dozens of appends.
// A separator is written unless the value opens an object or array.
class frame {
public:
    frame(std::string& out, std::string_view type) : out_(out), base_(out.size()) {
        grow(256);
        literal("{\"type\":");
        quoted(type);
    }
    ~frame() {
        if (!done_) out_.resize(base_);  // an exception left half a frame: take it back
    }
    frame(const frame&) = delete;
    frame& operator=(const frame&) = delete;

    frame& str(std::string_view name, std::string_view v) {
        field(name);
        quoted(v);
        return *this;
    }
    frame& str_if(std::string_view name, std::string_view v) { return v.empty() ? *this : str(name, v); }
    template <std::integral Int>
    frame& num(std::string_view name, Int v) {
        field(name);
        number(v);
        return *this;
    }
    // A member whose name comes from the wire (fencingTokens: {key: token}), so it is escaped.
    frame& num_member(std::string_view member, std::uint64_t v) {
        separate();
        quoted(member);
        put(':');
        number(v);
        return *this;
    }
    frame& boolean(std::string_view name, bool v) {
        field(name);
        if (v)
            literal("true");
        else
            literal("false");
        return *this;
    }
    frame& null(std::string_view name) {
        field(name);
        literal("null");
        return *this;
    }
    frame& failure(errc code, std::string_view message) {
        str("error", message.empty() ? default_message(code) : message);
        return str("code", to_string(code));
    }
    frame& open_object(std::string_view name) {
        field(name);
        put('{');
        return *this;
    }
    frame& open_array(std::string_view name) {
        field(name);
        put('[');
        return *this;
    }
    frame& open_object_element() {
        separate();
        put('{');
        return *this;
    }
    frame& str_element(std::string_view v) {
        separate();
        quoted(v);
        return *this;
    }
    frame& close_object() {
        put('}');
        return *this;
    }
    frame& close_array() {
        put(']');
        return *this;
    }
    template <class Range>
    frame& str_array(std::string_view name, const Range& values) {
        open_array(name);
        for (const auto& v : values) str_element(v);
        return close_array();
    }
    // Appends raw JSON text (a number's digits, say) to the value being written.
    frame& raw(std::string_view text) {
        reserve(text.size());
        copy(text.data(), text.size());
        return *this;
    }
    void end() {
        literal("}\n");
        out_.resize(static_cast<std::size_t>(cursor_ - out_.data()));
        done_ = true;
    }

private:
    void grow(std::size_t n) {
        std::size_t used = cursor_ ? static_cast<std::size_t>(cursor_ - out_.data()) : out_.size();
        out_.resize(used + std::max<std::size_t>(n, 256));
        cursor_ = out_.data() + used;
        end_ = out_.data() + out_.size();
    }
    void reserve(std::size_t n) {
        if (static_cast<std::size_t>(end_ - cursor_) < n) grow(n);
    }
    void copy(const char* p, std::size_t n) {
        std::memcpy(cursor_, p, n);
        cursor_ += n;
    }
    void put(char c) {
        reserve(1);
        *cursor_++ = c;
    }
    template <std::size_t N>
    void literal(const char (&s)[N]) {
        reserve(N - 1);
        copy(s, N - 1);
    }
    void separate() {
        reserve(1);
        char last = cursor_[-1];
        if (last != '{' && last != '[') *cursor_++ = ',';
    }
    void field(std::string_view name) {
        separate();
        reserve(name.size() + 3);
        *cursor_++ = '"';
        copy(name.data(), name.size());
        *cursor_++ = '"';
        *cursor_++ = ':';
    }
    template <std::integral Int>
    void number(Int v) {
        reserve(24);
        cursor_ = std::to_chars(cursor_, cursor_ + 24, v).ptr;
    }
    // JSON string escaping: quote, backslash and control characters; UTF-8 passes through.
    void quoted(std::string_view s) {
        reserve(s.size() * 6 + 2);
        *cursor_++ = '"';
        std::size_t run = 0;  // start of the pending stretch that needs no escaping
        for (std::size_t i = 0; i < s.size(); ++i) {
            auto c = static_cast<unsigned char>(s[i]);
            if (c >= 0x20 && c != '"' && c != '\\') continue;
            copy(s.data() + run, i - run);
            run = i + 1;
            *cursor_++ = '\\';
            switch (c) {
                case '"': *cursor_++ = '"'; break;
                case '\\': *cursor_++ = '\\'; break;
                case '\n': *cursor_++ = 'n'; break;
                case '\r': *cursor_++ = 'r'; break;
                case '\t': *cursor_++ = 't'; break;
                case '\b': *cursor_++ = 'b'; break;
                case '\f': *cursor_++ = 'f'; break;
                default: {
                    const char esc[] = {'u', '0', '0', hex_digits[c >> 4], hex_digits[c & 0xf]};
                    copy(esc, sizeof esc);
                }
            }
        }
        copy(s.data() + run, s.size() - run);
        *cursor_++ = '"';
    }

    std::string& out_;
    std::size_t base_;
    char* cursor_ = nullptr;
    char* end_ = nullptr;
    bool done_ = false;
};

// `name: null` for no_expiry, the count of milliseconds otherwise; nothing when unset.
inline void append_optional_ms(frame& fr, std::string_view name,
                               const std::optional<std::chrono::milliseconds>& value) {
    if (!value) return;
    if (*value == no_expiry)
        fr.null(name);
    else
        fr.num(name, value->count());
}

}  // namespace lmx::core::wire
