#pragma once

// WebSocket frames (RFC 6455, section 5) once the handshake is done: the frames of a whole batch
// of messages built into one buffer, so that a batch is one socket write, and every complete
// message in the received bytes read out at once. No I/O. Private to libs/transport.
//
// No extension is negotiated, so the RSV bits are always zero. A text message that is not
// well-formed UTF-8 fails the connection (RFC 6455 8.1); binary messages may carry any bytes.

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lmx::transport::detail::ws {

enum class opcode : std::uint8_t { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 };

// Appends one unfragmented frame. A client masks its frames with `mask_key` (RFC 6455 5.3);
// a server does not (`masked` false).
void append_frame(std::string& out, opcode op, std::string_view payload, bool masked = false,
                  std::uint32_t mask_key = 0);

// Where append_text_frames() put one line of the batch: its frame ends at `wire_end` in `out`,
// the line at `batch_end` in the batch (after its '\n'), and `key` masked it. An empty line gets
// an entry too, with no frame.
struct framed_line {
    std::size_t wire_end;
    std::size_t batch_end;
    std::uint32_t key;
};

// Appends a text frame for every '\n'-terminated line of `batch` (empty lines are skipped), each
// with a new random masking key when `masked`. Stops after the line that brings `out` to `limit`
// bytes or more; returns how much of `batch` it framed. `lines`, when given, gets an entry per line.
std::size_t append_text_frames(std::string& out, std::string_view batch, bool masked,
                               std::size_t limit = std::string::npos, std::vector<framed_line>* lines = nullptr);

// An unpredictable masking key (RFC 6455 10.3).
std::uint32_t random_mask_key();

// A control frame that asks for an answer.
struct control_frame {
    opcode op = opcode::ping;  // ping or close
    std::string payload;       // ping: echoed in the pong; close: the status code and reason
};

enum class read_status : std::uint8_t {
    more,       // nothing is wrong; the messages found (if any) are out, read more bytes for the rest
    closed,     // a close frame came: answer it and stop reading
    bad_frame,  // a frame RFC 6455 forbids: the connection is done
    too_large,  // a message over the limit: the connection is done
};

class frame_reader {
public:
    // `peer_masks`: true on the server (a client's frames must be masked), false on the client
    // (a server's must not be).
    frame_reader(bool peer_masks, std::size_t max_message_size);

    // Where up to `n` more received bytes go; commit() says how many arrived.
    char* prepare(std::size_t n);
    void commit(std::size_t n) noexcept { size_ += n; }
    // Bytes received before this reader existed (after the handshake response).
    void append(std::string_view bytes);

    // Ends the life of the messages handed out by the last parse(): their bytes are dropped.
    void release() noexcept;

    // Reads every complete frame received so far: each complete data message is appended to
    // `messages`, each ping or close to `controls` (a close ends the parse with
    // read_status::closed). The views stay valid until the next release(), prepare() or append().
    read_status parse(std::vector<std::string_view>& messages, std::vector<control_frame>& controls);

private:
    bool peer_masks_;
    std::size_t max_message_size_;
    // Received bytes: [0, consumed_) parsed, [consumed_, size_) not yet. Allocated without being
    // written, so that an idle connection keeps only the pages its reads touched.
    std::unique_ptr<char[]> buffer_;
    std::size_t capacity_ = 0;
    std::size_t size_ = 0;                   // bytes of buffer_ in use
    std::size_t consumed_ = 0;               // parsed
    std::string fragments_;                  // the message being received in fragments
    bool in_message_ = false;                // a fragmented message has started
    bool text_ = false;                      // ... and it is a text message
    std::list<std::string> whole_;           // fragmented messages completed since the last release()
    read_status ended_ = read_status::more;  // closed, bad_frame or too_large once one was met
};

}  // namespace lmx::transport::detail::ws
