#include <lmx/broker/broker.hpp>
#include <lmx/core/failpoint.hpp>
#include <lmx/core/protocol.hpp>
#include <lmx/core/scoped_value.hpp>
#include <lmx/transport/batched_writer.hpp>
#include <lmx/transport/listener.hpp>
#include <lmx/version.hpp>

#include "auth.hpp"
#include "fencing_store.hpp"
#include "http_pages.hpp"
#include "http_policy.hpp"
#include "etcd_store.hpp"
#include "lock_service.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sys/resource.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

namespace lmx {

namespace asio = boost::asio;
namespace req = core::req;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view authenticate_first = "this broker requires authentication first: a hello with a valid token";

// A connection: its I/O, limits and authentication; detail::client is what the lock service
// sees of it.
struct session : detail::client {
    std::unique_ptr<transport::connection> conn;
    std::string outbox;              // replies of this turn, and those waiting for the writer
    transport::batched_writer out;   // sends the outbox
    std::string peer;                // per-peer connection count key (connection::peer)
    std::size_t counted = 0;         // queued bytes counted in broker::impl::outbox_bytes
    bool gone = false;               // its bytes no longer count (ended, or done lingering)
    steady::time_point last_read{};  // when its last bytes arrived (--idle-timeout)
    // Armed while auth is on and no token was shown; once the session has ended, the deadline for
    // the client to read the replies still queued (broker::impl::linger_time).
    asio::steady_timer auth_deadline;
    bool closing = false;
    bool going_away = false;          // the broker is stopping: its writer says goodbye instead of closing
    bool writer_done = false;         // its writer has returned: nothing queued will be sent any more
    steady::time_point written_at{};  // while lingering: when a write last completed
    bool dirty = false;               // listed in broker::impl::dirty
    std::string token;                // the token it authenticated with, checked again on reload

    // Its role stays none (not yet authenticated) until authenticate_at_accept decides.
    explicit session(std::unique_ptr<transport::connection> c)
        : conn(std::move(c)), out(*conn, outbox), auth_deadline(conn->get_executor()) {}
};

// 128 random bits as hex: new at every start, so clients can tell a restarted broker.
std::string new_epoch() {
    std::random_device rd;
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < 4; ++i) {
        auto v = rd();
        for (int j = 0; j < 8; ++j, v >>= 4) out += hex[v & 15];
    }
    return out;
}

// A warning that a flood could repeat thousands of times a second (refused connections, clients
// cut off): logged at most once a second, with how many were held back meanwhile.
class throttled_log {
public:
    void operator()(const std::string& message) {
        const auto now = steady::now();
        if (logged_ && now - last_ < std::chrono::seconds(1)) {
            ++held_;
            return;
        }
        std::string text = message;
        if (held_) text += " (" + std::to_string(held_) + " more like it since the last such line)";
        log_line(log_level::warn, text);
        logged_ = true;
        last_ = now;
        held_ = 0;
    }

private:
    bool logged_ = false;
    steady::time_point last_{};
    std::uint64_t held_ = 0;
};

// Completion of a broker coroutine: an exception that escapes one is logged, never dropped.
auto log_failure(std::string what) {
    return [what = std::move(what)](std::exception_ptr ep) {
        if (!ep) return;
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            log_line(log_level::error, what + " failed: " + e.what());
        } catch (...) {
            log_line(log_level::error, what + " failed with an unknown exception");
        }
    };
}

std::string what_of(std::exception_ptr ep) {
    try {
        std::rethrow_exception(ep);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "unknown exception";
    }
}

}  // namespace

struct broker::impl : detail::service_host, std::enable_shared_from_this<broker::impl> {
    asio::any_io_executor ex;
    broker_options opt;
    detail::http_policy http_rules;  // Host and Origin checks (--allow-origin)
    detail::fencing_store store;
    std::unique_ptr<detail::lock_service> service;  // made at start()
    core::request_parser parser;
    std::vector<std::unique_ptr<transport::listener>> listeners;
    std::vector<std::string> bound;
    std::unordered_map<std::uint64_t, std::shared_ptr<session>> sessions;
    // Sessions that ended (the client closed its sending side) while replies were still being
    // written: their connections close when the writer is done, or at linger_time.
    std::unordered_map<std::uint64_t, std::shared_ptr<session>> lingering;
    static constexpr auto linger_time = std::chrono::seconds(10);
    std::unordered_map<std::string, std::size_t> peers;  // open connections per peer
    std::size_t outbox_bytes = 0;                        // replies queued for every client together
    throttled_log refusals;                              // connections refused at a limit
    throttled_log cutoffs;                               // clients disconnected for not reading
    std::vector<session*> dirty;                         // sessions with new output since the last flush
    asio::steady_timer deadline_timer;
    asio::steady_timer stop_timer;     // after stop(): closes the connections that did not close in time
    asio::steady_timer idle_tick;      // --idle-timeout's checks
    asio::steady_timer recovery_tick;  // retries of the fencing-state write
    steady::time_point armed = steady::time_point::max();
    steady::time_point started = steady::now();
    const std::string epoch = new_epoch();
    // Set while the fencing state cannot be persisted: the broker grants nothing then, and
    // /healthz answers 503 with this reason.
    std::string unhealthy;
    std::uint64_t store_failures = 0;
    bool recovering = false;
    std::uint64_t next_session = 1;
    bool running = false;
    bool stopped = false;
    std::optional<detail::token_set> tokens;
    std::vector<detail::unix_rule> unix_rules;
    throttled_log auth_refusals;  // connections refused for want of a valid token
    // Traffic since the start; the rest of the stats is read from the table and the sessions.
    std::uint64_t connections_total = 0;
    std::uint64_t messages_in = 0;
    std::uint64_t messages_out = 0;
    std::uint64_t connections_refused = 0;
    std::uint64_t auth_refused = 0;
    std::uint64_t clients_cut_off = 0;

    impl(asio::any_io_executor e, broker_options o)
        : ex(e),
          opt(std::move(o)),
          http_rules(opt.allow_origins),
          store(opt.state_dir),
          parser(core::codec_limits{.max_message_size = opt.max_message_size,
                                    .max_key_length = opt.max_key_length,
                                    .max_keys = opt.max_keys}),
          deadline_timer(e, steady::time_point::max()),
          stop_timer(e, steady::time_point::max()),
          idle_tick(e),
          recovery_tick(e) {}

    detail::client* find(core::session_id id) override {
        auto it = sessions.find(id);
        return it == sessions.end() || it->second->closing ? nullptr : it->second.get();
    }

    std::string& frames(detail::client& c) override { return *begin_frame(static_cast<session&>(c)); }

    std::string* begin_frame(session& s) {
        // Not "outbox was empty": behind a stuck write the outbox stays non-empty, and it must still
        // be checked against max_outbox at every flush.
        if (!s.dirty) {
            s.dirty = true;
            dirty.push_back(&s);
        }
        ++messages_out;
        return &s.outbox;
    }

    // A failed write stops every grant (the table asks before it changes anything) until a
    // write succeeds again: better no lock than a token that may be handed out twice.
    core::fencing_token reserve_tokens(core::fencing_token needed) override {
        if (!store.enabled()) return core::max_fencing_token;
        const std::uint64_t block = std::clamp<std::uint64_t>(opt.fencing_block, 1, core::max_fencing_token);
        const core::fencing_token ceiling = std::min(core::max_fencing_token, needed + (block - 1));
        try {
            store.store(ceiling);
        } catch (const std::exception& e) {
            storage_failed(e.what());
            return 0;
        }
        return ceiling;
    }

    void storage_failed(const std::string& why) {
        ++store_failures;
        if (unhealthy.empty())
            log_line(log_level::error,
                     "cannot persist the fencing state (" + why + "); granting no locks until it can be written");
        unhealthy = "cannot persist the fencing state: " + why;
        if (recovering || stopped) return;
        recovering = true;
        asio::co_spawn(ex, recovery_loop(shared_from_this()), log_failure("fencing state recovery"));
    }

    // Retries the reservation once a second; on success the grants that waited go out.
    asio::awaitable<void> recovery_loop(std::shared_ptr<impl>) {
        while (!stopped) {
            recovery_tick.expires_after(1s);
            co_await recovery_tick.async_wait(use_tuple);
            if (stopped) break;
            if (service->resume_grants(steady::now())) {
                log_line(log_level::info, "fencing state written again; granting locks");
                unhealthy.clear();
                flush();
                break;
            }
        }
        recovering = false;
    }

    // Replies go out here, at the end of each read batch: straight to the kernel when no write
    // is in flight (no hop through the writer coroutine), the writer taking whatever is left.
    void flush() {
        for (session* s : dirty) {
            s->dirty = false;
            cut_off_if_not_reading(*s);
            if (s->outbox.empty()) continue;
            if (LMX_FAILPOINT("session.write").error()) {
                drop_on_write_error(*s);
                continue;
            }
            s->out.flush();
            count(*s);
        }
        dirty.clear();
        if (outbox_bytes > opt.max_outbox_total) shed_outboxes();
        rearm();
    }

    void count(session& s) {
        if (s.gone) return;
        const std::size_t now = s.out.queued();
        outbox_bytes += now;
        outbox_bytes -= s.counted;
        s.counted = now;
    }

    // The replies queued for all clients together are bounded too: over the bound, the clients
    // with the most queued are disconnected, largest first, until it holds again. Those still
    // reading the replies to their last requests (lingering) count, and may be disconnected, too.
    void shed_outboxes() {
        while (outbox_bytes > opt.max_outbox_total) {
            session* worst = nullptr;
            for (auto* group : {&sessions, &lingering})
                for (auto& [id, s] : *group)
                    if ((group == &lingering || !s->closing) && !s->gone && s->counted > 0 &&
                        (!worst || s->counted > worst->counted))
                        worst = s.get();
            if (!worst) break;
            cutoffs("client " + worst->remote + " has " + std::to_string(worst->counted) +
                    " bytes of replies queued while " + std::to_string(outbox_bytes) +
                    " are queued for all clients (--max-outbox-total " + std::to_string(opt.max_outbox_total) +
                    "); disconnecting it");
            ++clients_cut_off;
            cut_off(*worst);
            // Its write is aborted: what it had under way must not get another client cut off.
            stop_counting(*worst);
        }
    }

    // The session's queued bytes no longer count in outbox_bytes.
    void stop_counting(session& s) {
        outbox_bytes -= s.counted;
        s.counted = 0;
        s.gone = true;
    }

    void cut_off(session& s) {
        std::string().swap(s.outbox);
        s.closing = true;
        s.conn->close();
        count(s);
    }

    void drop_on_write_error(session& s) {
        log_line(log_level::warn, "cannot write to client " + s.remote + " (failpoint session.write); disconnecting");
        cut_off(s);
    }

    // A client that does not read its replies cannot make the broker buffer them without bound.
    void cut_off_if_not_reading(session& s) {
        if (s.closing || s.outbox.size() <= opt.max_outbox) return;
        cutoffs("client " + s.remote + " does not read its replies (" + std::to_string(s.outbox.size()) +
                " bytes queued); disconnecting");
        ++clients_cut_off;
        cut_off(s);
    }

    void rearm() {
        if (!service) return;  // not started, or its start failed
        auto next = service->next_deadline();
        if (next && *next < armed) {
            armed = *next;
            deadline_timer.expires_at(armed);
        }
    }

    // Never ends before the broker stops: an exception in one turn is logged, and the next turn
    // runs all the same, so no lease or wait timeout is ever left without its timer.
    asio::awaitable<void> deadline_loop(std::shared_ptr<impl> /*keeps the broker alive*/) {
        while (!stopped) {
            auto [ec] = co_await deadline_timer.async_wait(use_tuple);
            if (stopped) break;
            if (ec == asio::error::operation_aborted && deadline_timer.expiry() > steady::now()) continue;
            armed = steady::time_point::max();
            deadline_timer.expires_at(armed);
            auto fp = LMX_FAILPOINT("deadline.tick");
            if (fp.sleep()) {
                asio::steady_timer stall(ex, fp.delay);
                co_await stall.async_wait(use_tuple);
                if (stopped) break;
            }
            try {
                if (fp.error()) throw std::runtime_error("failpoint deadline.tick");
                service->expire(steady::now());
            } catch (const std::exception& e) {
                log_line(log_level::error, std::string("expiring leases failed: ") + e.what() + "; retrying");
                // Due deadlines stay due, so the next turn comes at once.
                armed = steady::now();
                deadline_timer.expires_at(armed);
            }
            flush();
        }
    }

    // With --idle-timeout, a connection that has sent nothing for that long and holds, waits for
    // and watches nothing is closed. Checked four times per timeout.
    asio::awaitable<void> idle_loop(std::shared_ptr<impl> /*keeps the broker alive*/) {
        const auto every = std::max<steady::duration>(opt.idle_timeout / 4, std::chrono::milliseconds(50));
        while (!stopped) {
            idle_tick.expires_after(every);
            co_await idle_tick.async_wait(use_tuple);
            if (stopped) break;
            const auto now = steady::now();
            for (auto& [id, s] : sessions) {
                if (s->closing || now - s->last_read < opt.idle_timeout || !service->idle(*s)) continue;
                if (log_enabled(log_level::debug))
                    log_line(log_level::debug, "closing idle connection from " + s->remote + " (--idle-timeout)");
                s->closing = true;
                s->conn->close();
            }
        }
    }

    void accept(std::unique_ptr<transport::connection> conn) {
        if (stopped) return conn->close();
        if (sessions.size() + lingering.size() >= opt.max_connections) {
            ++connections_refused;
            refusals("refusing connection from " + conn->remote_address() + ": " + std::to_string(opt.max_connections) +
                     " connections open (--max-connections), " + std::to_string(lingering.size()) +
                     " of them ended but still reading their last replies");
            return conn->close();
        }
        std::string peer = conn->peer();
        std::size_t& from_peer = peers[peer];
        if (from_peer >= opt.max_connections_per_peer) {
            ++connections_refused;
            refusals("refusing connection from " + conn->remote_address() + ": " + std::to_string(from_peer) +
                     " connections open from " + peer + " (--max-connections-per-peer)");
            return conn->close();
        }
        ++from_peer;
        auto s = std::make_shared<session>(std::move(conn));
        s->id = next_session++;
        s->peer = std::move(peer);
        s->remote = s->conn->remote_address();
        s->last_read = steady::now();
        sessions.emplace(s->id, s);
        ++connections_total;
        announce_connections();
        if (log_enabled(log_level::debug))
            log_line(log_level::debug, "session " + std::to_string(s->id) + " from " + s->remote);
        asio::co_spawn(ex, reader(shared_from_this(), s), log_failure("session reader for " + s->remote));
        asio::co_spawn(ex, writer(shared_from_this(), s), log_failure("session writer for " + s->remote));
        authenticate_at_accept(*s);
        if (s->role == detail::role::none && !s->closing)
            asio::co_spawn(ex, close_unless_authenticated(shared_from_this(), s),
                           log_failure("authentication deadline for " + s->remote));
    }

    bool auth_on() const { return tokens.has_value() || !unix_rules.empty(); }

    // What a connection shows before it sends anything: a unix peer's uid and gid, a WebSocket
    // upgrade's token. A token that is shown and wrong ends the connection.
    void authenticate_at_accept(session& s) {
        if (!auth_on()) {
            s.role = detail::role::admin;
            return;
        }
        if (auto cred = s.conn->credentials()) s.role = detail::unix_peer_role(unix_rules, cred->uid, cred->gid);
        if (s.conn->upgrade_token_malformed()) return deny(s, "", "the token in the WebSocket upgrade is malformed");
        if (const auto& token = s.conn->upgrade_token(); !token.empty() && s.role == detail::role::none) {
            s.role = tokens ? tokens->find(token) : detail::role::none;
            if (s.role == detail::role::none) return deny(s, "", "the token in the WebSocket upgrade is not valid");
            s.token = token;
        }
    }

    // Before it is authenticated, a connection may send only a hello with a valid token.
    bool authenticate(session& s, core::request& rq) {
        if (auto* hello = std::get_if<req::hello>(&rq)) {
            if (hello->token.empty())
                return deny(s, hello->uuid, "this broker requires a token: send it in the hello"), false;
            s.role = tokens ? tokens->find(hello->token) : detail::role::none;
            if (s.role == detail::role::none) return deny(s, hello->uuid, "the token is not valid"), false;
            s.token = std::move(hello->token);
            s.auth_deadline.cancel();
            return true;
        }
        deny(s, core::uuid_of(rq), authenticate_first);
        return false;
    }

    // Answers `unauthenticated` and closes the connection once the answer is written.
    void deny(session& s, std::string_view uuid, std::string_view why) {
        if (s.closing) return;
        ++auth_refused;
        auth_refusals("refused connection from " + s.remote + ": " + std::string(why));
        core::write_error(s.outbox, uuid, core::errc::unauthenticated, why);
        ++messages_out;
        count(s);
        s.closing = true;
        // Straight to the writer, which closes the connection once the answer is out.
        s.out.finish();
    }

    asio::awaitable<void> close_unless_authenticated(std::shared_ptr<impl> /*keeps the broker alive*/,
                                                     std::shared_ptr<session> s) {
        if (s->gone || s->closing || s->role != detail::role::none) co_return;
        s->auth_deadline.expires_after(opt.handshake_timeout);
        co_await s->auth_deadline.async_wait(use_tuple);
        if (s->gone || s->closing || s->role != detail::role::none) co_return;
        deny(*s, "", "no token within " + std::to_string(opt.handshake_timeout.count()) + " ms");
    }

    std::string load_tokens() {
        if (opt.auth_token_file.empty()) return {};
        std::string error, warning;
        auto loaded = detail::token_set::load(opt.auth_token_file, error, warning);
        if (!loaded) return error;
        if (!warning.empty()) log_line(log_level::warn, warning);
        if (loaded->size() == 0) log_line(log_level::warn, "the token file " + opt.auth_token_file + " lists no token");
        tokens = std::move(loaded);
        return {};
    }

    std::string reload() {
        if (opt.auth_token_file.empty()) return {};
        if (auto error = load_tokens(); !error.empty()) {
            log_line(log_level::error, "reload: " + error + "; the tokens read before stay in force");
            return error;
        }
        std::size_t revoked = 0;
        for (auto& [id, s] : sessions) {
            if (s->token.empty() || s->closing) continue;
            s->role = tokens->find(s->token);
            if (s->role != detail::role::none) continue;
            ++revoked;
            deny(*s, "", "its token was revoked");
        }
        log_line(log_level::info,
                 "reloaded " + opt.auth_token_file + ": " + std::to_string(tokens->size()) + " tokens" +
                     (revoked ? ", " + std::to_string(revoked) + " connections closed whose token is gone" : ""));
        flush();
        return {};
    }

    asio::awaitable<void> reader(std::shared_ptr<impl> /*keeps the broker alive*/, std::shared_ptr<session> s) {
        std::vector<std::string_view> batch;
        for (;;) {
            batch.clear();
            auto ec = co_await s->conn->read(batch);
            s->last_read = steady::now();
            {
                // One clock reading serves the whole batch: it arrived at once and is served at once.
                const core::scoped_value clock_set(batch_clock, steady::now());
                for (auto frame : batch) {
                    if (s->closing) break;
                    try {
                        if (LMX_FAILPOINT("session.frame").error()) throw std::runtime_error("failpoint session.frame");
                        handle(*s, frame);
                    } catch (...) {
                        // Only this session ends; the table changes nothing before it knows it can
                        // finish a step, and every other session goes on.
                        log_line(log_level::error, "internal error serving client " + s->remote + ": " +
                                                       what_of(std::current_exception()) + "; closing its connection");
                        s->closing = true;
                        s->outbox.clear();
                        s->conn->close();
                        break;
                    }
                    // Checked per frame too: one read batch of small requests (ls) can ask for megabytes.
                    cut_off_if_not_reading(*s);
                }
            }
            if (ec == transport::error::message_skipped && !s->closing) {
                // NDJSON: the line was dropped as it came in and the connection goes on.
                if (s->role == detail::role::none)
                    deny(*s, "", authenticate_first);
                else
                    answer_skipped_line(*s);
                flush();
                continue;
            }
            if (ec) {
                if (ec == transport::error::message_too_large && !s->closing) {
                    log_line(log_level::warn, "client " + s->remote + " sent a message over " +
                                                  std::to_string(opt.max_message_size) + " bytes; disconnecting");
                    core::write_error(*begin_frame(*s), "", core::errc::message_too_large,
                                      "message exceeds " + std::to_string(opt.max_message_size) + " bytes");
                } else if (ec == transport::error::bad_frame) {
                    log_line(log_level::warn, "client " + s->remote + " broke the WebSocket framing; disconnecting");
                }
                break;
            }
            flush();
        }
        end_session(*s);
        flush();
        if (stopped) s->conn->close();
    }

    // An error for a line over the size limit, with the request's uuid when one can be found at
    // either end of what was kept of it.
    void answer_skipped_line(session& s) {
        const auto* line = s.conn->skipped();
        std::string_view uuid;
        std::size_t size = 0;
        if (line) {
            size = line->size;
            uuid = uuid_in(line->head);
            if (uuid.empty()) uuid = uuid_in(line->tail);
        }
        log_line(log_level::debug, "client " + s.remote + " sent a line of " + std::to_string(size) + " bytes, over " +
                                       std::to_string(opt.max_message_size) + "; skipped");
        core::write_error(*begin_frame(s), uuid, core::errc::message_too_large,
                          "message of " + std::to_string(size) + " bytes exceeds " +
                              std::to_string(opt.max_message_size) + " bytes; skipped");
        cut_off_if_not_reading(s);
    }

    // The value of a "uuid" member in an excerpt of a JSON object; empty when there is none that
    // is plainly a request id (no escapes, within the id length limit).
    std::string_view uuid_in(std::string_view text) const {
        constexpr std::string_view name = "\"uuid\"";
        for (auto at = text.find(name); at != std::string_view::npos; at = text.find(name, at + 1)) {
            auto i = at + name.size();
            auto skip_space = [&] {
                while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r')) ++i;
            };
            skip_space();
            if (i >= text.size() || text[i] != ':') continue;
            ++i;
            skip_space();
            if (i >= text.size() || text[i] != '"') continue;
            const auto begin = ++i;
            const auto end = text.find('"', begin);
            if (end == std::string_view::npos) continue;
            const auto id = text.substr(begin, end - begin);
            const bool plain =
                !id.empty() && id.size() <= parser.limits().max_id_length &&
                std::all_of(id.begin(), id.end(), [](char c) {
                    return c != '\\' && static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
                });
            if (plain) return id;
        }
        return {};
    }

    // Sends what flush() could not; after finish() (closing), closes the connection once the
    // last reply is out. A stopping broker's writer says goodbye after the last reply (WebSocket
    // close 1001, FIN) and leaves the close to the reader, when the client has answered with its
    // own, or to stop_timer.
    asio::awaitable<void> writer(std::shared_ptr<impl> /*keeps the broker alive*/, std::shared_ptr<session> s) {
        const auto ec = co_await s->out.run([this, raw = s.get()] {
            count(*raw);
            if (raw->closing) raw->written_at = steady::now();
        });
        s->writer_done = true;
        if (!ec && s->going_away && !stop_timer_expired()) {
            co_await s->conn->goodbye(1001, "broker shutting down");
            co_return;
        }
        s->conn->close();
        end_linger(*s);
    }

    // A session that ended while its replies were still being written (the client closed its
    // sending side): its connection stays until the writer is done, and counts against the
    // connection, per-peer and queued-bytes bounds until then. A client that reads nothing for
    // linger_time is disconnected.
    void linger(const std::shared_ptr<session>& s) {
        lingering.emplace(s->id, s);
        s->written_at = steady::now();
        await_linger_deadline(s);
    }

    void await_linger_deadline(const std::shared_ptr<session>& s) {
        s->auth_deadline.expires_at(s->written_at + linger_time);
        s->auth_deadline.async_wait([weak = weak_from_this(), s](const boost::system::error_code& ec) {
            auto self = weak.lock();
            if (ec || !self || !self->lingering.contains(s->id)) return;
            if (steady::now() - s->written_at < linger_time) return self->await_linger_deadline(s);
            self->cutoffs("client " + s->remote + " read none of its replies for " +
                          std::to_string(linger_time.count()) + " s after its connection ended; disconnecting");
            ++self->clients_cut_off;
            s->conn->close();
            self->end_linger(*s);
        });
    }

    void end_linger(session& s) {
        if (lingering.erase(s.id) == 0) return;
        s.auth_deadline.cancel();
        if (!s.gone) stop_counting(s);
        release_peer(s);
        stopped_when_all_closed();
    }

    void release_peer(session& s) {
        if (auto it = peers.find(s.peer); it != peers.end() && --it->second == 0) peers.erase(it);
    }

    // After stop(): once no connection is left, the stop timer need not wait.
    void stopped_when_all_closed() {
        if (stopped && sessions.empty() && lingering.empty()) stop_timer.cancel();
    }

    bool stop_timer_expired() const { return stopped && stop_timer.expiry() <= steady::now(); }

    void end_session(session& s) {
        const auto found = sessions.find(s.id);
        if (found == sessions.end()) return;
        const std::shared_ptr<session> self = found->second;
        s.closing = true;
        s.auth_deadline.cancel();
        service->close(s, steady::now());
        // A client that closed its sending side may still read what was queued for it (printf |
        // nc): the writer sends it (see linger()).
        const bool lingers = !stopped && !s.writer_done && s.out.queued() > 0;
        if (lingers) linger(self);
        sessions.erase(s.id);
        if (!lingers) {
            release_peer(s);
            stop_counting(s);
        }
        s.out.finish();
        announce_connections();
        if (log_enabled(log_level::debug)) log_line(log_level::debug, "session " + std::to_string(s.id) + " closed");
        stopped_when_all_closed();
    }

    // Watchers of every key (dashboards) learn the connection count as it changes.
    void announce_connections() {
        if (service->announce_connections(sessions.size())) flush();
    }

    void handle(session& s, std::string_view frame) {
        ++messages_in;
        auto parsed = parser.parse(frame);
        if (s.role == detail::role::none) {
            if (!parsed) return deny(s, parsed.error().uuid, authenticate_first);
            if (!authenticate(s, parsed.value())) return;
        }
        if (!parsed) {
            const auto& err = parsed.error();
            if (log_enabled(log_level::debug)) log_line(log_level::debug, "client " + s.remote + ": " + err.message);
            return service->refuse(s, err);
        }
        service->serve(s, parsed.value(), now());
    }

    steady::time_point batch_clock{};  // set while a read batch is served
    steady::time_point now() const { return batch_clock != steady::time_point{} ? batch_clock : steady::now(); }

    detail::health_state health() const {
        std::string reason = unhealthy;
        if (reason.empty() && service && service->store().grants_stalled()) {
            reason = service->store().stall_reason();
            if (reason.empty()) reason = "the fencing token range (2^53 - 1) is used up";
        }
        return {.uptime_ms = static_cast<std::uint64_t>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started).count()),
                .connections = sessions.size(),
                .reason = std::move(reason),
                .store_failures = store_failures};
    }

    core::broker_stats stats() override {
        core::broker_stats st;
        st.uptime_ms = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started).count());
        st.connections = sessions.size();
        st.connections_total = connections_total;
        st.messages_in = messages_in;
        st.messages_out = messages_out;
        st.connections_refused = connections_refused;
        st.auth_refused = auth_refused;
        st.clients_cut_off = clients_cut_off;
        st.pid = ::getpid();
        if (service) service->add_figures(st, steady::now());
        return st;
    }

    // An HTTP request to a ws:// or wss:// listener that upgrades on `websocket_paths`.
    transport::http_response http(const transport::http_request_view& rq,
                                  const std::vector<std::string>& websocket_paths) {
        if (!http_rules.browser_may_read(rq)) {
            log_line(log_level::warn, "refused HTTP request from a browser for host " + std::string(rq.host) +
                                          " (allow it with --allow-origin)");
            return {403, "text/plain; charset=utf-8", "host not allowed\n", {}};
        }
        std::string_view path = rq.target.substr(0, rq.target.find('?'));
        const bool needs_token = path == "/v1/stats" || (opt.auth_http && (path == "/metrics" || path == "/healthz"));
        if (needs_token && auth_on() &&
            (!tokens || tokens->find(detail::bearer_token(rq.authorization)) == detail::role::none))
            return {401,
                    "text/plain; charset=utf-8",
                    "a valid token is required: Authorization: Bearer TOKEN\n",
                    {{"WWW-Authenticate", "Bearer realm=\"lmx\""}}};
        if (path == "/healthz") return detail::healthz_page(health());
        if (path == "/metrics")
            return detail::metrics_page(stats(), service->store().counters(), service->waits(),
                                        service->store().last_token(), health());
        if (path == "/v1/stats") return detail::stats_page(stats());
        if (path == "/v1/origin") return http_rules.origin_page(rq, websocket_paths);
        if (auto page = detail::web_page(path)) return std::move(*page);
        return {404, "text/plain; charset=utf-8", "not found\n", {}};
    }

    bool accept_websocket(const transport::http_request_view& rq) {
        if (http_rules.websocket_origin_ok(rq)) return true;
        log_line(log_level::warn,
                 "refused WebSocket from origin " + std::string(rq.origin) + " (allow it with --allow-origin)");
        return false;
    }

    std::string start() {
        if (running) return "broker already started";
#if defined(LMX_FAILPOINTS_ENABLED)
        if (const char* fp = std::getenv("LMX_FAILPOINTS"); fp && *fp)
            log_line(log_level::warn, std::string("failpoints active (a test build): ") + fp);
#endif
        core::fencing_token seed;
        try {
            seed = store.load();
            if (store.enabled()) store.store(seed);
        } catch (const std::exception& e) {
            return e.what();
        }
        if (auto error = load_tokens(); !error.empty()) return error;
        for (const auto& u : opt.unix_allow)
            unix_rules.push_back(
                {.group = u.group, .id = u.id, .grants = u.admin ? detail::role::admin : detail::role::client});
        if (auth_on())
            log_line(log_level::info,
                     "authentication on: " +
                         (tokens ? std::to_string(tokens->size()) + " tokens" : std::string("no token file")) + ", " +
                         std::to_string(unix_rules.size()) + " unix peer rules");
        const auto limits = resolve_limits(opt);
        opt.max_connections = limits.max_connections;
        opt.max_outbox_total = limits.max_outbox_total;
        if (!limits.note.empty()) log_line(log_level::warn, limits.note);
        log_line(log_level::info, "limits: " + std::to_string(opt.max_connections) + " connections (" +
                                      std::to_string(opt.max_connections_per_peer) + " per peer), " +
                                      std::to_string(opt.max_connection_locks) + " holds and waiters per connection, " +
                                      std::to_string(opt.max_total_keys) + " keys, " +
                                      std::to_string(opt.max_outbox_total >> 20) + " MiB of queued replies in all");
        auto make_store = detail::lock_service::in_memory();
        if (!opt.store.empty()) {
            std::string why;
            auto endpoints = detail::parse_store_url(opt.store, !opt.store_ca.empty(), &why);
            if (endpoints.empty()) return close_all("bad --store " + opt.store + ": " + why);
            std::weak_ptr<impl> weak = shared_from_this();
            detail::etcd_store_options eo{.endpoints = std::move(endpoints),
                                          .prefix = opt.store_prefix,
                                          .session_ttl = opt.session_ttl,
                                          .ca_file = opt.store_ca,
                                          .cert_file = opt.store_cert,
                                          .key_file = opt.store_key,
                                          .broker_id = epoch};
            make_store = [this, weak, eo](core::effect_sink& sink, const core::table_config& config) {
                return detail::make_etcd_store(ex, sink, config, eo, [weak] {
                    if (auto self = weak.lock(); self && self->service && !self->stopped) {
                        self->service->settle(steady::now());
                        self->flush();
                    }
                });
            };
            log_line(log_level::info, "lock state in etcd at " + opt.store + " under " + opt.store_prefix +
                                          " (session ttl " + std::to_string(opt.session_ttl.count()) + " s)");
        }
        try {
            service = std::make_unique<detail::lock_service>(
                *this,
                detail::service_config{.table = {.default_ttl = opt.default_ttl,
                                                 .max_waiters = opt.max_waiters,
                                                 .max_session_requests = opt.max_connection_locks,
                                                 .max_keys = opt.max_total_keys,
                                                 .pins = pins(),
                                                 .fencing_seed = seed},
                                       .max_list = opt.max_list,
                                       .limits = parser.limits(),
                                       .epoch = epoch,
                                       .auth_on = auth_on(),
                                       .slow_wait = opt.slow_wait,
                                       .slow_hold = opt.slow_hold},
                make_store);
        } catch (const std::exception& e) {
            return close_all(std::string("cannot use the store: ") + e.what());
        }
        for (auto& url : opt.listen) {
            std::string why;
            auto ep = transport::parse_endpoint(url, &why);
            if (!ep) return close_all("bad --listen " + url + ": " + why);
            transport::listen_options lo;
            lo.max_message_size = opt.max_message_size;
            lo.unix_mode = opt.unix_mode;
            lo.keepalive = opt.tcp_keepalive;
            lo.max_handshakes = opt.max_handshakes;
            lo.handshake_timeout = opt.handshake_timeout;
            lo.tls = {.cert_file = opt.tls_cert, .key_file = opt.tls_key, .client_ca_file = opt.tls_client_ca};
            std::weak_ptr<impl> weak = shared_from_this();
            lo.on_error = [weak](const std::string& what) {
                if (auto self = weak.lock()) self->refusals(what);
            };
            if (ep->scheme == transport::endpoint::kind::websocket) {
                // The listener upgrades on its default paths and on the endpoint's own.
                auto paths = lo.websocket_paths;
                std::string own = ep->path.substr(0, ep->path.find('?'));
                if (own.empty()) own = "/";
                if (std::find(paths.begin(), paths.end(), own) == paths.end()) paths.push_back(std::move(own));
                lo.http = [weak, paths](const transport::http_request_view& rq) {
                    auto self = weak.lock();
                    return self ? self->http(rq, paths) : transport::http_response{503, "text/plain", "stopping\n", {}};
                };
                lo.accept_websocket = [weak](const transport::http_request_view& rq) {
                    auto self = weak.lock();
                    return self && self->accept_websocket(rq);
                };
            }
            boost::system::error_code ec;
            auto l = transport::listener::open(ex, *ep, std::move(lo), ec, why);
            if (ec || !l) {
                if (ep->tls && (opt.tls_cert.empty() || opt.tls_key.empty()))
                    return close_all("cannot listen on " + url + ": TLS listeners need --tls-cert and --tls-key");
                // The transport's sentence names the endpoint already.
                return close_all(why.empty() ? "cannot listen on " + url + ": " + ec.message() : why);
            }
            if (ep->scheme == transport::endpoint::kind::unix_socket && opt.unix_group >= 0 &&
                ::chown(ep->path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(opt.unix_group)) != 0) {
                const std::string error = std::strerror(errno);
                listeners.push_back(std::move(l));  // closed (and its file removed) by close_all
                return close_all("cannot give " + ep->path + " to group " + std::to_string(opt.unix_group) + ": " +
                                 error);
            }
            bound.push_back(transport::to_string(l->local_endpoint()));
            listeners.push_back(std::move(l));
        }
        const bool any_tls =
            std::any_of(listeners.begin(), listeners.end(), [](const auto& l) { return l->local_endpoint().tls; });
        if (!any_tls && (!opt.tls_cert.empty() || !opt.tls_client_ca.empty()))
            log_line(log_level::warn, "--tls-cert/--tls-client-ca given, but no tls:// or wss:// listener uses them");
        running = true;
        auto self = shared_from_this();
        for (auto& l : listeners) {
            asio::co_spawn(
                ex,
                [self, lp = l.get()]() -> asio::awaitable<void> {
                    // Weak: the ws listener keeps this callback in state that impl owns (through
                    // `listeners`), and a strong pointer there is a cycle that leaks the broker.
                    std::weak_ptr<impl> weak = self;
                    // Named first: g++ 12 destroys a lambda temporary inside a co_await expression twice.
                    std::function<void(std::unique_ptr<transport::connection>)> on_connection =
                        [weak](std::unique_ptr<transport::connection> c) {
                            if (auto me = weak.lock())
                                me->accept(std::move(c));
                            else
                                c->close();
                        };
                    co_await lp->run(std::move(on_connection));
                },
                log_failure("listener on " + transport::to_string(l->local_endpoint())));
        }
        asio::co_spawn(ex, deadline_loop(self), log_failure("deadline loop"));
        if (opt.idle_timeout.count() > 0) asio::co_spawn(ex, idle_loop(self), log_failure("idle connection check"));
        return {};
    }

    std::vector<core::key_pin> pins() const {
        std::vector<core::key_pin> out;
        for (const auto& [prefix, max] : opt.key_max) out.push_back({prefix, max});
        return out;
    }

    std::string close_all(std::string why) {
        for (auto& l : listeners) l->close();
        listeners.clear();
        bound.clear();
        return why;
    }

    void stop() {
        if (stopped) return;
        stopped = true;
        for (auto& l : listeners) l->close();
        // Every client is told before its connection ends, so that it can tell a stop from a
        // crash: a `shutting_down` error without an id, then the transport's goodbye. live-mutex
        // clients get no notice (their client warns of messages without an id). Requests that
        // come meanwhile are not served. A client that does not close its end within the grace
        // time is closed.
        constexpr auto grace = std::chrono::seconds(1);
        auto all = sessions;
        for (auto& [id, s] : all) {
            s->closing = true;
            s->going_away = true;
            if (!s->live_mutex && !s->gone) {
                core::write_error(*begin_frame(*s), "", core::errc::shutting_down);
                count(*s);
            }
            s->out.finish();
        }
        flush();
        idle_tick.cancel();
        recovery_tick.cancel();
        if (!sessions.empty() || !lingering.empty()) {
            stop_timer.expires_after(grace);
            stop_timer.async_wait([this, keep = shared_from_this()](const boost::system::error_code&) {
                stop_timer.expires_at(steady::time_point::min());
                if (const auto n = sessions.size() + lingering.size(); n > 0)
                    log_line(log_level::info, std::to_string(n) +
                                                  " clients did not close their connections within a second "
                                                  "of the stop; closing them");
                for (auto* group : {&sessions, &lingering}) {
                    auto left = *group;
                    for (auto& [id, s] : left) s->conn->close();
                }
            });
        }
        deadline_timer.cancel();
        if (service) service->stop_store();
    }
};

resolved_limits resolve_limits(const broker_options& o) {
    resolved_limits r;
    // Connections: each is a descriptor, and the listeners, the state file and the log need a
    // few more. The soft limit is raised to the hard one first, as servers do.
    std::size_t fds = 1024;
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rlimit raised = rl;
            raised.rlim_cur = rl.rlim_max;
            if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
        }
        fds = rl.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 20 : static_cast<std::size_t>(rl.rlim_cur);
    }
    const std::size_t room = fds > 128 ? fds - 64 : fds / 2;
    r.max_connections = o.max_connections == 0 ? room : o.max_connections;
    if (o.max_connections > room) {
        r.max_connections = room;
        r.note = "--max-connections " + std::to_string(o.max_connections) +
                 " is more than the file-descriptor limit (" + std::to_string(fds) + ") allows; serving at most " +
                 std::to_string(room) + " connections (raise the limit, e.g. LimitNOFILE= or ulimit -n)";
    }
    r.max_outbox_total = o.max_outbox_total;
    if (r.max_outbox_total == 0) {
        const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
        const std::size_t ram = pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page)
                                                      : std::size_t{4} << 30;
        r.max_outbox_total = std::min<std::size_t>(std::size_t{1} << 30, ram / 4);
    }
    return r;
}

broker::broker(asio::any_io_executor ex, broker_options options)
    : impl_(std::make_shared<impl>(ex, std::move(options))) {}

broker::~broker() { impl_->stop(); }

std::string broker::start() { return impl_->start(); }
void broker::stop() { impl_->stop(); }
std::string broker::reload() { return impl_->reload(); }
std::vector<std::string> broker::urls() const { return impl_->bound; }
core::broker_stats broker::stats() const { return impl_->stats(); }

}  // namespace lmx
