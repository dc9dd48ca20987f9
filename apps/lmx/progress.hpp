#pragma once

// "Waiting for KEY (3rd in line, 4 s)" on a terminal while an acquire waits more than a second.

#include "client_common.hpp"

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdio>
#include <memory>

namespace lmx::app {

class waiting_notice {
public:
    waiting_notice(boost::asio::any_io_executor ex, std::string key) : s_(std::make_shared<state>(ex, std::move(key))) {
        if (!stderr_is_tty()) return;
        s_->timer.expires_after(std::chrono::seconds(1));
        s_->timer.async_wait([s = s_](error_code ec) { tick(s, ec); });
    }
    ~waiting_notice() { done(); }
    waiting_notice(const waiting_notice&) = delete;
    waiting_notice& operator=(const waiting_notice&) = delete;

    // The acquire_options::on_queued callback: the place in line when the broker queued us.
    std::function<void(std::uint32_t)> on_queued() {
        return [s = s_](std::uint32_t position) { s->position = position; };
    }

    void done() {
        if (s_->finished) return;
        s_->finished = true;
        s_->timer.cancel();
        if (s_->shown) std::fputs("\r\033[K", stderr);
    }

private:
    struct state {
        state(boost::asio::any_io_executor ex, std::string k) : timer(ex), key(std::move(k)) {}
        boost::asio::steady_timer timer;
        std::string key;
        std::uint32_t position = 0;
        std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
        bool shown = false;
        bool finished = false;
    };

    static void tick(const std::shared_ptr<state>& s, error_code ec) {
        if (ec || s->finished) return;
        auto waited =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - s->start);
        std::string where = s->position ? ", queued at position " + std::to_string(s->position) : "";
        std::fprintf(stderr, "\r\033[Klmx: waiting for '%s'%s (%s)", s->key.c_str(), where.c_str(),
                     human_duration(waited).c_str());
        std::fflush(stderr);
        s->shown = true;
        s->timer.expires_after(std::chrono::seconds(1));
        s->timer.async_wait([s](error_code e) { tick(s, e); });
    }

    std::shared_ptr<state> s_;
};

}  // namespace lmx::app
