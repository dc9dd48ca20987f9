#include "service_notify.hpp"

#include <lmx/broker/broker.hpp>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace lmx::app {

namespace {

std::uint64_t env_number(const char* name) {
    const char* text = std::getenv(name);
    std::uint64_t n = 0;
    if (!text) return 0;
    const char* end = text + std::strlen(text);
    const auto [ptr, ec] = std::from_chars(text, end, n);
    return ec == std::errc{} && ptr == end ? n : 0;
}

}  // namespace

void notify_service(std::string_view state) {
    static bool warned = false;
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    ::sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::size_t len = std::strlen(path);
    auto fail = [&](const std::string& why) {
        if (!warned)
            log_line(log_level::warn, "cannot notify the service manager at " + std::string(path) + ": " + why);
        warned = true;
    };
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path) return fail("not a socket path");
    std::memcpy(addr.sun_path, path, len);
    if (path[0] == '@') addr.sun_path[0] = '\0';
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(std::strerror(errno));
    const auto addr_len = static_cast<::socklen_t>(offsetof(::sockaddr_un, sun_path) + len);
    const ::ssize_t sent =
        ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const ::sockaddr*>(&addr), addr_len);
    const int err = errno;
    ::close(fd);
    if (sent < 0) fail(std::strerror(err));
}

std::chrono::microseconds service_watchdog_interval() {
    const std::uint64_t pid = env_number("WATCHDOG_PID");
    if (pid != 0 && pid != static_cast<std::uint64_t>(::getpid())) return {};
    return std::chrono::microseconds(env_number("WATCHDOG_USEC"));
}

}  // namespace lmx::app
