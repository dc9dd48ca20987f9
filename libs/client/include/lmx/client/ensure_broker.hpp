#pragma once

// Starts a broker in the background when nothing answers at a client's URL: the "launch one if
// it is not running" step of scripts and tools that want a broker without managing one.
//
//   auto opt = lmx::client_options::from_env();
//   if (auto r = lmx::ensure_broker(opt); r.error) die(r.message);
//   lmx::client client(io.get_executor(), opt);   // a broker now answers at opt.url

#include <lmx/client/client.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace lmx {

struct ensure_broker_options {
    // The lmx executable, started as `PATH broker ...`. Empty: $LMX_BROKER_PATH, else `lmx`
    // found on $PATH.
    std::string broker_path;
    // Where the started broker keeps its log and durable state, one folder per URL. Empty:
    // $XDG_STATE_HOME/lmx, or ~/.local/state/lmx.
    std::string state_dir;
    // How long to wait for the started broker to answer.
    std::chrono::milliseconds start_timeout{10000};
    // More arguments for `lmx broker` (e.g. "--ttl", "10000").
    std::vector<std::string> broker_args;
};

struct ensure_broker_result {
    error_code error;      // unreachable (the broker did not come up), broker_incompatible, invalid_url...
    std::string message;   // one line saying what failed and where to look, when `error` is set
    bool started = false;  // this call started the broker (false: one was already answering)
    std::string log_path;  // the started broker's log file
};

// Blocks until a broker answers at `options.url`, starting one in its own session (detached,
// logging to <state dir>/<url>/broker.log, fencing state in the same folder) when none does.
// Callers racing for the same URL on one machine start exactly one broker: they take turns on a
// lock file in the state folder. A URL naming another machine is only probed, never started.
ensure_broker_result ensure_broker(const client_options& options, const ensure_broker_options& how = {});

}  // namespace lmx
