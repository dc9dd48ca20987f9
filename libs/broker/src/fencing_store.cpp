#include "fencing_store.hpp"

#include <chrono>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace lmx::detail {

namespace {
std::uint64_t wall_clock_micros() {
    using namespace std::chrono;
    return static_cast<std::uint64_t>(duration_cast<microseconds>(system_clock::now().time_since_epoch()).count());
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }
}  // namespace

std::uint64_t fencing_store::load() {
    std::uint64_t clock_seed = wall_clock_micros();
    if (dir_.empty()) return clock_seed;
    if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) fail("cannot create state directory " + dir_);
    std::ifstream in(path());
    if (!in) return clock_seed;  // first start with this state directory
    std::string text;
    std::getline(in, text);
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size())
        throw std::runtime_error("corrupt fencing state in " + path() + " (expected one integer); refusing to start");
    // Never below the wall clock either, so deleting nothing but moving clocks forward stays safe.
    return std::max(value, clock_seed);
}

void fencing_store::store(std::uint64_t ceiling) {
    if (dir_.empty()) return;
    std::string tmp = path() + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fail("cannot write " + tmp);
    std::string text = std::to_string(ceiling) + "\n";
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) fail("cannot write " + tmp);
    if (::rename(tmp.c_str(), path().c_str()) != 0) fail("cannot replace " + path());
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

}  // namespace lmx::detail
