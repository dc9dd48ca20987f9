#include "fencing_store.hpp"

#include <lmx/core/failpoint.hpp>
#include <lmx/core/types.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace lmx::detail {

namespace {
std::uint64_t wall_clock_micros() {
    using namespace std::chrono;
    return static_cast<std::uint64_t>(duration_cast<microseconds>(system_clock::now().time_since_epoch()).count());
}

[[noreturn]] void fail(const std::string& what, int err) { throw std::runtime_error(what + ": " + std::strerror(err)); }
[[noreturn]] void fail(const std::string& what) { fail(what, errno); }

// Reads the whole (small) state file; false when it does not exist. Any other error throws: an
// unreadable file must not pass for a first start, which would reset the token floor.
bool read_state(const std::string& path, std::string& text) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return false;
        fail("cannot read fencing state " + path);
    }
    char buf[64];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int err = errno;
            ::close(fd);
            fail("cannot read fencing state " + path, err);
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > 64) break;  // one integer and a newline; anything longer is corrupt
    }
    ::close(fd);
    return true;
}
// The state directory decides what the fencing floor is: whoever can write into it can reset
// the floor or plant a file. It must be a directory of the broker's own user that nobody else
// may write to (a symlink to one is fine: systemd's DynamicUser makes those).
void check_state_dir(const std::string& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) fail("cannot use state directory " + dir);
    if (!S_ISDIR(st.st_mode)) throw std::runtime_error("state directory " + dir + " is not a directory");
    if (st.st_uid != ::geteuid())
        throw std::runtime_error("state directory " + dir + " is owned by uid " + std::to_string(st.st_uid) +
                                 ", not by the broker's uid " + std::to_string(::geteuid()) +
                                 "; refusing to trust its fencing state");
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw std::runtime_error("state directory " + dir + " has mode " + mode +
                                 ": others may write to it; make it 0700 (chmod 0700 " + dir + ")");
    }
}
}  // namespace

std::uint64_t fencing_store::load() {
    std::uint64_t clock_seed = wall_clock_micros();
    if (clock_seed > core::max_fencing_token)
        throw std::runtime_error("the wall clock is beyond the fencing token range");
    if (dir_.empty()) return clock_seed;
    if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) fail("cannot create state directory " + dir_);
    check_state_dir(dir_);
    std::string text;
    if (!read_state(path(), text)) return clock_seed;  // first start with this state directory
    if (!text.empty() && text.back() == '\n') text.pop_back();
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size())
        throw std::runtime_error("corrupt fencing state in " + path() + " (expected one integer); refusing to start");
    if (value > core::max_fencing_token)
        throw std::runtime_error("fencing state " + std::to_string(value) + " in " + path() +
                                 " is beyond the token range (2^53 - 1); refusing to start");
    // Never below the wall clock either, so deleting nothing but moving clocks forward stays safe.
    return std::max(value, clock_seed);
}

void fencing_store::store(std::uint64_t ceiling) {
    if (dir_.empty()) return;
    if (ceiling > core::max_fencing_token) throw std::runtime_error("fencing reservation beyond 2^53 - 1");
    auto fp = LMX_FAILPOINT("fencing.store");
    if (fp.sleep()) std::this_thread::sleep_for(fp.delay);
    if (fp.error()) fail("cannot write " + path() + ".tmp (failpoint fencing.store)", EIO);
    std::string tmp = path() + ".tmp";
    // A fresh file, never one planted in its place: O_EXCL refuses an existing name, O_NOFOLLOW a
    // symlink. A temp file left by a crash is removed first (unlink removes a symlink, not its target).
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) fail("cannot remove stale " + tmp);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) fail("cannot write " + tmp);
    std::string text = std::to_string(ceiling) + "\n";
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    int err = errno;
    ::close(fd);
    if (!ok) fail("cannot write " + tmp, err);
    if (::rename(tmp.c_str(), path().c_str()) != 0) fail("cannot replace " + path());
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) fail("cannot open state directory " + dir_);
    bool synced = ::fsync(dfd) == 0;
    err = errno;
    ::close(dfd);
    if (!synced) fail("cannot sync state directory " + dir_, err);
}

}  // namespace lmx::detail
