#pragma once

#include <chrono>
#include <string_view>

namespace lmx::app {

// Tells a supervisor how the broker stands, the sd_notify protocol of systemd's Type=notify
// services: one datagram of NAME=value lines to the Unix socket named by NOTIFY_SOCKET (a path,
// or '@' for the abstract namespace). Does nothing when NOTIFY_SOCKET is unset; a failed send is
// logged once and otherwise ignored, since the broker serves all the same.
void notify_service(std::string_view state);

// WATCHDOG_USEC, when the supervisor asks for keep-alives (WatchdogSec=) and they are meant for
// this process (WATCHDOG_PID unset or ours); zero otherwise.
std::chrono::microseconds service_watchdog_interval();

}  // namespace lmx::app
